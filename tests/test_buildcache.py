"""The shared build cache against a real registry (Debian's docker-registry, i.e. CNCF
distribution 2.8, on 127.0.0.1): push, pull, verification, failure policy, auth."""
import base64
import hashlib
import io
import json
import re
import socket
import subprocess
import sys
import tarfile
import time

import pytest
import yaml

from conftest import REPO, doit_env, run_doit
from fixtures import LIBGREET, FixtureProject, demo_project, wait_for
from registryfixture import RegistryServer, available, free_port

from tasks.core import canonical
from tasks.ship import buildcache
from tasks.ship import registry
from tasks.ship.layer import unpack_layer, write_layer

def needs_registry(test):
    """A missing registry is a failure, not a skip: ./setup installs it."""
    def run(*args, **kwargs):
        assert available(), ("docker-registry is not installed: run ./setup (it installs "
                             "docker-registry and apache2-utils)")
        return test(*args, **kwargs)
    import functools
    return functools.wraps(test)(run)

REPO_PREFIX = "test/cache"


@pytest.fixture
def reg(tmp_path):
    with RegistryServer(tmp_path / "registry") as server:
        yield server


@pytest.fixture
def auth_reg(tmp_path):
    with RegistryServer(tmp_path / "auth-registry", users={"ci": "s3cret-pw"}) as server:
        yield server


def with_cache(proj, url, cache_dir="cache", name="config.yaml", **settings):
    """Write a config using the build cache at url; returns its path."""
    path = proj.write_config(buildcache={"url": url, "repository": REPO_PREFIX, **settings})
    if cache_dir == "cache" and name == "config.yaml":
        return path
    data = yaml.safe_load(path.read_text())
    data["cache_dir"] = cache_dir
    other = proj.root / name
    other.write_text(yaml.safe_dump(data, sort_keys=False))
    return other


def second_builder(proj, url, cache_dir="cache2", **settings):
    """The same project (recipes) with another, empty cache folder."""
    return with_cache(proj, url, cache_dir=cache_dir, name=f"config-{cache_dir}.yaml", **settings)


def lines(run, what):
    return sorted(re.findall(rf"^(build:\S+): {what}", run.err, re.M))


def built(run):
    return lines(run, r"building \(")


def pulled(run):
    return lines(run, "pulled from ")


def pushed(run):
    return lines(run, "pushed to ")


def warnings(run):
    return [line for line in run.err.splitlines() if line.startswith("warning:")]


def stage_snapshot(cache, dist="demo"):
    """{component: (manifest.json, build.json, {path: sha256 of file / link target})}."""
    out = {}
    for comp in sorted(p for p in (cache / "stage" / dist).iterdir() if p.is_dir()):
        tree = {}
        for path in sorted((comp / "tree").rglob("*")):
            rel = str(path.relative_to(comp / "tree"))
            if path.is_symlink():
                tree[rel] = "-> " + str(path.readlink())
            elif path.is_file():
                tree[rel] = hashlib.sha256(path.read_bytes()).hexdigest()
            else:
                tree[rel] = "dir"
        out[comp.name] = ((comp / "manifest.json").read_text(),
                          (comp / "build.json").read_text(), tree)
    return out


def stored_manifest(reg, repository, tag):
    """The manifest a tag points to, read from the registry's storage folder."""
    link = (reg.storage / "docker/registry/v2/repositories" / repository /
            "_manifests/tags" / tag / "current/link").read_text().strip()
    return link, json.loads(reg.blob_path(link).read_bytes())


def key_of(cache, comp, dist="demo"):
    return json.loads((cache / "stage" / dist / comp / "key.json").read_text())["key"]


# ---- the main story ---------------------------------------------------------------
@needs_registry
def test_second_builder_pulls_everything_and_compiles_nothing(tmp_path, reg):
    proj = demo_project(tmp_path / "proj")
    first = run_doit(with_cache(proj, reg.url), check=True)
    assert built(first) == ["build:demo/hello", "build:demo/libgreet"]
    assert pushed(first) == ["build:demo/hello", "build:demo/libgreet"]
    assert pulled(first) == [] and warnings(first) == []
    key = key_of(proj.cache, "hello")
    assert reg.tags(f"{REPO_PREFIX}/demo-hello") == [key]
    _, doc = stored_manifest(reg, f"{REPO_PREFIX}/demo-hello", key)
    assert doc["annotations"]["io.dappdeps.key"] == key
    assert doc["layers"][0]["mediaType"] == buildcache.MEDIA_LAYER

    second = run_doit(second_builder(proj, reg.url), check=True)
    # compiled nothing: every build task ran, and each one pulled instead of building
    assert second.ran() == ["build:demo/hello", "build:demo/libgreet"]
    assert pulled(second) == ["build:demo/hello", "build:demo/libgreet"]
    assert built(second) == [] and pushed(second) == [] and warnings(second) == []
    assert not (tmp_path / "proj/cache2/work/demo/hello").exists()
    log = (tmp_path / "proj/cache2/logs/demo/hello.log").read_text()
    assert "pulled from" in log and "not compiled here" in log
    cache2 = tmp_path / "proj/cache2"
    assert stage_snapshot(cache2) == stage_snapshot(proj.cache)
    for comp in ("hello", "libgreet"):
        assert key_of(cache2, comp) == key_of(proj.cache, comp)
    assert ((cache2 / "stage/demo.manifest.json").read_text() ==
            (proj.cache / "stage/demo.manifest.json").read_text())
    out = subprocess.run([cache2 / "stage/demo/hello/tree/bin/hello"], capture_output=True,
                         text=True)
    assert out.stdout == "hello: GREETING\n"
    # a pulled output counts as built: the next run does nothing
    again = run_doit(second_builder(proj, reg.url), check=True)
    assert again.ran() == [] and pulled(again) == []


@needs_registry
@pytest.mark.parametrize("what", ["layer", "config", "manifest"])
def test_tampered_blob_is_refused_and_built_locally(tmp_path, reg, what):
    proj = demo_project(tmp_path / "proj")
    run_doit(with_cache(proj, reg.url), check=True)
    repository = f"{REPO_PREFIX}/demo-hello"
    digest, doc = stored_manifest(reg, repository, key_of(proj.cache, "hello"))
    target = {"layer": doc["layers"][0]["digest"], "config": doc["config"]["digest"],
              "manifest": digest}[what]
    blob = reg.blob_path(target)
    data = bytearray(blob.read_bytes())
    if what == "manifest":      # still valid JSON, so the registry serves it as it is
        assert data.count(b'"1.0"') == 1
        data = data.replace(b'"1.0"', b'"1.1"')
    else:
        data[len(data) // 2] ^= 0x01              # one bit, same size
    blob.write_bytes(bytes(data))

    second = run_doit(second_builder(proj, reg.url, mode="read-only"))
    assert second.returncode == 0, second.text[-3000:]
    assert pulled(second) == ["build:demo/libgreet"]
    assert built(second) == ["build:demo/hello"]
    [warning] = warnings(second)
    assert "rejected" in warning and reg.url in warning and repository in warning
    assert "does not match" in warning or "sha256" in warning
    cache2 = tmp_path / "proj/cache2"
    out = subprocess.run([cache2 / "stage/demo/hello/tree/bin/hello"], capture_output=True,
                         text=True)
    assert out.stdout == "hello: GREETING\n"
    assert json.loads((cache2 / "stage/demo/hello/key.json").read_text()).get("pulled") is None


# ---- failure policy ---------------------------------------------------------------
def test_dead_registry_warns_once_and_builds(tmp_path):
    proj = demo_project(tmp_path / "proj")
    url = f"http://127.0.0.1:{free_port()}"          # nothing listens there
    started = time.time()
    run = run_doit(with_cache(proj, url))
    assert run.returncode == 0, run.text[-3000:]
    assert built(run) == ["build:demo/hello", "build:demo/libgreet"]
    [warning] = warnings(run)
    assert url in warning and "cannot connect" in warning and "DAPPDEPS_BUILDCACHE=off" in warning
    assert time.time() - started < 60


def test_registry_that_never_answers_times_out(tmp_path):
    proj = demo_project(tmp_path / "proj")
    with socket.socket() as sock:                   # accepts connections, never answers
        sock.bind(("127.0.0.1", 0))
        sock.listen(16)
        url = f"http://127.0.0.1:{sock.getsockname()[1]}"
        started = time.time()
        run = run_doit(with_cache(proj, url, read_timeout=1, connect_timeout=1))
    assert run.returncode == 0, run.text[-3000:]
    assert built(run) == ["build:demo/hello", "build:demo/libgreet"]
    [warning] = warnings(run)
    assert url in warning and "no answer within" in warning
    assert time.time() - started < 60


@needs_registry
def test_registry_stopped_mid_run_does_not_fail_the_build(tmp_path, reg):
    proj = FixtureProject(tmp_path / "proj")
    proj.add_package("libgreet", "1.0", LIBGREET)
    # `slow` waits, inside its sandbox, until the test has stopped the registry
    proj.add_package("slow", "1.0", {"Makefile": "all:\ninstall:\n"}, depends=["libgreet"],
                     build="script",
                     script="touch $SRCDIR/started\nfor i in $(seq 600); do "
                            "[ -e $SRCDIR/go ] && break; sleep 0.1; done\n"
                            "mkdir -p $PREFIX/share && echo slow > $PREFIX/share/slow\n")
    proj.add_package("after", "1.0", {"Makefile": "all:\ninstall:\n\tmkdir -p $(PREFIX)/share "
                                      "&& echo after > $(PREFIX)/share/after\n"},
                     depends=["slow"])
    proj.add_distribution("demo", ["libgreet", "slow", "after"])
    config = with_cache(proj, reg.url)
    proc = subprocess.Popen([sys.executable, "-m", "doit", "-f", str(REPO / "dodo.py"),
                             "assemble:demo"], env=doit_env(config), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    started = proj.cache / "work/demo/slow/src/started"
    assert wait_for(started.exists, timeout=120), proc.communicate()
    reg.stop()
    (started.parent / "go").write_text("")
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err[-3000:]
    run = type("Run", (), {"err": err})
    assert pushed(run) == ["build:demo/libgreet"]
    assert built(run) == ["build:demo/after", "build:demo/libgreet", "build:demo/slow"]
    [warning] = warnings(run)
    assert warning.startswith("warning: build:demo/slow:") and reg.url in warning
    assert (proj.cache / "stage/demo/after/key.json").exists()


# ---- modes and credentials -----------------------------------------------------------
@needs_registry
def test_read_only_never_pushes_but_pulls(tmp_path, reg):
    proj = demo_project(tmp_path / "proj")
    ro = run_doit(with_cache(proj, reg.url, mode="read-only"), check=True)
    assert built(ro) == ["build:demo/hello", "build:demo/libgreet"] and pushed(ro) == []
    assert not (reg.storage / "docker/registry/v2/repositories").exists()
    rw = run_doit(second_builder(proj, reg.url, cache_dir="cache-rw"), check=True)
    assert pushed(rw) == ["build:demo/hello", "build:demo/libgreet"]
    ro2 = run_doit(second_builder(proj, reg.url, cache_dir="cache-ro", mode="read-only"),
                   check=True)
    assert pulled(ro2) == ["build:demo/hello", "build:demo/libgreet"] and built(ro2) == []


@needs_registry
def test_cache_push_seeds_the_registry_with_outputs_built_before(tmp_path, reg):
    proj = demo_project(tmp_path / "proj")
    ro = run_doit(with_cache(proj, reg.url, mode="read-only"), check=True)
    assert built(ro) == ["build:demo/hello", "build:demo/libgreet"] and pushed(ro) == []
    config = with_cache(proj, reg.url)
    seed = run_doit(config, "cache-push:demo", check=True)
    assert built(seed) == [] and pushed(seed) == ["build:demo/hello", "build:demo/libgreet"]
    assert "cache-push:demo: 2 pushed, 0 already in the registry" in seed.out
    again = run_doit(config, "cache-push:demo", check=True)
    assert pushed(again) == [] and "0 pushed, 2 already in the registry" in again.out
    other = run_doit(second_builder(proj, reg.url), check=True)
    assert pulled(other) == ["build:demo/hello", "build:demo/libgreet"] and built(other) == []
    # read-only cannot seed; the error names the field
    refused = run_doit(with_cache(proj, reg.url, mode="read-only"), "cache-push:demo")
    assert refused.returncode != 0 and "buildcache" in refused.text


@needs_registry
def test_off_by_environment(tmp_path, reg, monkeypatch):
    proj = demo_project(tmp_path / "proj")
    monkeypatch.setenv("DAPPDEPS_BUILDCACHE", "off")
    run = run_doit(with_cache(proj, reg.url), check=True)
    assert built(run) == ["build:demo/hello", "build:demo/libgreet"]
    assert pushed(run) == [] and warnings(run) == []


@needs_registry
def test_authentication(tmp_path, auth_reg, monkeypatch):
    proj = demo_project(tmp_path / "proj")
    settings = {"username_env": "TEST_REG_USER", "password_env": "TEST_REG_PASSWORD",
                "docker_config": False}
    # no credentials at all
    anon = run_doit(with_cache(proj, auth_reg.url, **settings))
    assert anon.returncode == 0 and built(anon) == ["build:demo/hello", "build:demo/libgreet"]
    [warning] = warnings(anon)
    assert auth_reg.url in warning and "credentials" in warning
    # a wrong password: refused, warned once, built locally, nothing stored
    monkeypatch.setenv("TEST_REG_USER", "ci")
    monkeypatch.setenv("TEST_REG_PASSWORD", "wrong")
    wrong = run_doit(second_builder(proj, auth_reg.url, cache_dir="cache-wrong", **settings))
    assert wrong.returncode == 0, wrong.text[-3000:]
    assert built(wrong) == ["build:demo/hello", "build:demo/libgreet"] and pushed(wrong) == []
    [warning] = warnings(wrong)
    assert "401" in warning and "'ci'" in warning
    assert auth_reg.tags(f"{REPO_PREFIX}/demo-hello") == []
    # the right password from the environment: pushed
    monkeypatch.setenv("TEST_REG_PASSWORD", "s3cret-pw")
    right = run_doit(second_builder(proj, auth_reg.url, cache_dir="cache-right", **settings),
                     check=True)
    assert pushed(right) == ["build:demo/hello", "build:demo/libgreet"] and warnings(right) == []
    # the Docker config file (docker login's auths entry): pulled
    monkeypatch.delenv("TEST_REG_USER")
    monkeypatch.delenv("TEST_REG_PASSWORD")
    docker_dir = tmp_path / "docker"
    docker_dir.mkdir()
    auth = base64.b64encode(b"ci:s3cret-pw").decode()
    (docker_dir / "config.json").write_text(json.dumps(
        {"auths": {auth_reg.url.split("//")[1]: {"auth": auth}}}))
    monkeypatch.setenv("DOCKER_CONFIG", str(docker_dir))
    dc = run_doit(second_builder(proj, auth_reg.url, cache_dir="cache-dc",
                                 **dict(settings, docker_config=True)), check=True)
    assert pulled(dc) == ["build:demo/hello", "build:demo/libgreet"] and built(dc) == []


# ---- final images -----------------------------------------------------------------
@needs_registry
def test_push_image_tagged_by_version(tmp_path, reg):
    proj = demo_project(tmp_path / "proj")
    config = proj.write_config(image_registry={"url": reg.url, "repository": "test/images"})
    run = run_doit(config, "push:demo", check=True)
    result = json.loads((proj.cache / "images/demo-1.0.json").read_text())
    assert f"{reg.url}/test/images/demo:1.0@{result['digest']}" in run.out
    client = registry.Registry(reg.url)
    body, digest = client.get_manifest("test/images/demo", "1.0")
    assert digest == result["digest"]
    doc = json.loads(body)
    config_blob = json.loads(client.blob_bytes("test/images/demo", doc["config"]))
    assert config_blob["config"]["Volumes"] == {"/.dapp/test/demo/1.0": {}}
    layer = client.blob_to_file("test/images/demo", doc["layers"][0], tmp_path / "layer.tar")
    with tarfile.open(layer) as tar:
        assert ".dapp/test/demo/1.0/bin/hello" in tar.getnames()
    again = run_doit(config, "push:demo", check=True)
    assert again.ran("push:") == []


def test_push_without_registry_names_the_field(tmp_path):
    proj = demo_project(tmp_path / "proj")
    run = run_doit(proj.root / "config.yaml", "push:demo")
    assert run.returncode != 0
    assert "image_registry.url" in run.text and "Traceback" not in run.text


# ---- configuration ------------------------------------------------------------------
@pytest.mark.parametrize("settings, field", [
    ({"url": "127.0.0.1:5000"}, "buildcache.url"),
    ({"url": "http://r", "mode": "sometimes"}, "buildcache.mode"),
    ({"url": "http://r", "repository": "Not/Valid"}, "buildcache.repository"),
    ({"url": "http://r", "read_timeout": 0}, "buildcache.read_timeout"),
    ({"url": "http://r", "colour": "blue"}, "buildcache.colour"),
])
def test_config_errors_name_the_field(tmp_path, settings, field):
    proj = demo_project(tmp_path / "proj")
    run = run_doit(proj.write_config(buildcache=settings), "list")
    assert run.returncode != 0
    assert f"field '{field}'" in run.err and "Traceback" not in run.err


# ---- the artifact format (no registry needed) --------------------------------------
def _fake_stage(root):
    (root / "tree/bin").mkdir(parents=True)
    (root / "tree/bin/tool").write_text("#!/bin/sh\n")
    (root / "tree/bin/tool").chmod(0o755)
    (root / "tree/bin/alias").symlink_to("tool")
    from tasks.build import manifest
    doc = {"component": "c", "entries": manifest.scan_tree(root / "tree")}
    (root / "manifest.json").write_text(canonical.dumps(doc))
    (root / "build.json").write_text("{}\n")


def test_layer_is_deterministic_and_round_trips(tmp_path):
    _fake_stage(tmp_path / "stage")
    a = write_layer(tmp_path / "stage", tmp_path / "a.tar.gz", 1700000000)
    b = write_layer(tmp_path / "stage", tmp_path / "b.tar.gz", 1700000000)
    assert a == b and (tmp_path / "a.tar.gz").read_bytes() == (tmp_path / "b.tar.gz").read_bytes()
    unpack_layer(tmp_path / "a.tar.gz", tmp_path / "out")
    assert (tmp_path / "out/tree/bin/alias").readlink().as_posix() == "tool"
    assert (tmp_path / "out/tree/bin/tool").stat().st_mode & 0o777 == 0o755
    assert a[0] == "sha256:" + hashlib.sha256((tmp_path / "a.tar.gz").read_bytes()).hexdigest()


def _evil_layer(path, members):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, kind, extra in members:
            info = tarfile.TarInfo(name)
            info.type = kind
            if kind == tarfile.SYMTYPE:
                info.linkname = extra
                tar.addfile(info)
            elif kind == tarfile.REGTYPE:
                info.size = len(extra)
                tar.addfile(info, io.BytesIO(extra))
            else:
                tar.addfile(info)
    import gzip
    path.write_bytes(gzip.compress(buf.getvalue()))


@pytest.mark.parametrize("members", [
    [("tree", tarfile.DIRTYPE, None), ("tree/../../escape", tarfile.REGTYPE, b"x")],
    [("/etc/escape", tarfile.REGTYPE, b"x")],
    [("tree", tarfile.DIRTYPE, None), ("tree/link", tarfile.SYMTYPE, "/tmp"),
     ("tree/link/escape", tarfile.REGTYPE, b"x")],
    [("tree", tarfile.DIRTYPE, None), ("tree/fifo", tarfile.FIFOTYPE, None)],
    [("other.json", tarfile.REGTYPE, b"{}")],
])
def test_unpack_refuses_members_outside_an_output(tmp_path, members):
    _evil_layer(tmp_path / "evil.tar.gz", members)
    with pytest.raises(registry.Corrupt):
        unpack_layer(tmp_path / "evil.tar.gz", tmp_path / "out")
    assert not (tmp_path / "escape").exists()
