"""The build root (tasks/build/buildroot.py, docs/buildroot.md): builds see its /usr and
/etc, never the host's; its identity is in every key; the build cache carries it to a
second machine, and a tampered one is refused."""
import json
import os
import shutil
import socket
from types import SimpleNamespace

import pytest

from conftest import run_doit
from fixtures import TEST_BUILDROOT, TEST_BUILDROOT_DIR, FixtureProject
from registryfixture import RegistryServer, available
from tasks.build import manifest as mf
from tasks.core import canonical

HOST_ONLY = "/usr/bin/podman"        # installed on the host by ./setup, not in the root


def probe_project(tmp_path):
    proj = FixtureProject(tmp_path)
    proj.add_package("probe", "1.0", {"Makefile": "all:\n\ttrue\n"}, build="script", script=(
        "mkdir -p $PREFIX/share\n"
        "{ command -v gcc; command -v make; test -e " + HOST_ONLY + " && echo host-usr;"
        "  cat /etc/hostname; ls /etc/apt/sources.list.d 2>/dev/null; cat /etc/apt/sources.list;"
        "  cat /etc/passwd; umask; } > $PREFIX/share/seen\n"))
    proj.add_distribution("p", ["probe"])
    proj.write_config()
    return proj


def test_a_build_sees_the_build_root_and_nothing_of_the_hosts(tmp_path):
    assert os.path.exists(HOST_ONLY), "the probe needs a file only the host has"
    proj = probe_project(tmp_path)
    old = os.umask(0o027)           # the caller's umask does not reach the build
    try:
        run_doit(proj.root / "config.yaml", "build:p/probe", check=True)
    finally:
        os.umask(old)
    seen = (proj.cache / "stage/p/probe/tree/share/seen").read_text().splitlines()
    # the root's tools; not the host's /usr, hostname or apt sources
    assert seen[:3] == ["/usr/bin/gcc", "/usr/bin/make", "dappdeps"]
    assert "host-usr" not in seen and socket.gethostname() not in seen
    assert "root:x:0:0:root:/dappdeps/home:/bin/bash" in seen     # generated, over the root's
    assert seen[-1] == "0022"
    entry = json.loads((proj.cache / "stage/p/probe/manifest.json").read_text())["entries"][-1]
    assert entry["path"] == "share/seen" and entry["mode"] == 0o644


def test_the_build_root_identity_is_in_every_key(tmp_path, test_buildroot):
    proj = probe_project(tmp_path)
    run_doit(proj.root / "config.yaml", "build:p/probe", check=True)
    key = json.loads((proj.cache / "stage/p/probe/key.json").read_text())
    ident = json.loads((test_buildroot.parent / "identity.json").read_text())
    assert key["inputs"]["buildroot"] == ident["digest"]
    assert any(p.startswith("gcc=") for p in ident["packages"])
    # another build root (another package list) gives another key: the build runs again
    cfg = proj.write_config(buildroot=dict(TEST_BUILDROOT, dir=str(tmp_path / "roots"),
                                           packages=TEST_BUILDROOT["packages"] + ["gawk"]))
    again = run_doit(cfg, "build:p/probe", check=True)
    assert again.ran() == ["build:p/probe"]
    assert "buildroot changed" in again.text


def _cfg(folder, **over):
    return SimpleNamespace(data={"buildroot": dict(TEST_BUILDROOT, mirror="", dir=str(folder)),
                                 "buildcache": over}, path=folder / "config.yaml",
                           buildroot_dir=folder, source_date_epoch=1700000000, cache=folder)


@pytest.mark.skipif(not available(), reason="docker-registry is installed by ./setup")
def test_a_second_machine_pulls_the_identical_root_and_a_tampered_one_is_refused(tmp_path):
    from tasks.build import buildroot
    from tasks.ship import buildcache
    settings = {"url": "", "repository": "t/cache", "username_env": "NO_USER",
                "password_env": "NO_PASSWORD", "docker_config": False, "connect_timeout": 3,
                "read_timeout": 60, "mode": "read-write", "gzip_level": 1}
    with RegistryServer(tmp_path / "registry") as reg:
        settings["url"] = reg.url
        first = _cfg(TEST_BUILDROOT_DIR, **settings)
        assert buildroot.identity(first) is not None
        assert buildcache.push_buildroot(first)
        second = _cfg(tmp_path / "machine2", **settings)
        assert buildcache.pull_buildroot(second)
        assert buildroot.identity(second) == buildroot.identity(first)
        assert buildroot.installed_packages(buildroot.tree(second)) == \
            buildroot.identity(first)["packages"]
        assert not buildcache.push_buildroot(first)        # already there: not again
    # a registry that serves a root whose packages do not give the identity it names
    with RegistryServer(tmp_path / "registry2") as bad:
        settings["url"] = bad.url
        first = _cfg(TEST_BUILDROOT_DIR, **settings)
        third = _cfg(tmp_path / "machine3", **settings)
        status = buildroot.tree(first) / "var/lib/dpkg/status"
        manifest = buildroot.folder(first) / "manifest.json"
        saved, kept = status.read_bytes(), manifest.read_bytes()
        try:
            status.write_bytes(saved.replace(b"Package: make\n", b"Package: mak3\n"))
            doc = canonical.load(manifest)
            doc["entries"] = mf.scan_tree(buildroot.tree(first))
            manifest.write_text(canonical.dumps(doc))
            assert buildcache.push_buildroot(first)    # names the genuine identity
        finally:
            status.write_bytes(saved)
            manifest.write_bytes(kept)
        assert bad.tags("t/cache/buildroot") == [buildroot.spec_digest(first)]
        assert not buildcache.pull_buildroot(third)
        assert buildroot.identity(third) is None
        assert not any(p.name.startswith(".") for p in (tmp_path / "machine3").glob("*"))
        shutil.rmtree(tmp_path / "machine2")
