"""What a build leaves on the host, and what the engine trusts of an output (found in a
security review, docs/security.md): no setuid file or world-writable folder outlives a
build step, even a failed one; the cache is the owner's only; an opaque folder (a
dependency's folder deleted and made anew) is a deletion like any other; a pulled
layer's tree is a plain folder; smoke tests have a time limit; a build's output cannot
drive the terminal."""
import io
import json
import os
import stat
import subprocess
import tarfile

import pytest

from conftest import run_doit
from fixtures import FixtureProject
from tasks.ship import registry
from tasks.ship.layer import unpack_layer


def project(tmp_path, recipes, dist_extra=None, **config):
    proj = FixtureProject(tmp_path / "proj")
    for name, recipe in recipes.items():
        proj.add_package(name, "1.0", {"README": "x\n"}, build="script", **recipe)
    proj.add_distribution("hard", list(recipes), **(dist_extra or {}))
    return proj, proj.write_config(**config)


def privileged_or_writable(root):
    bad = []
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            st = os.lstat(os.path.join(dirpath, name))
            if not stat.S_ISLNK(st.st_mode) and st.st_mode & (stat.S_ISUID | stat.S_ISGID | 0o022):
                bad.append(os.path.join(dirpath, name))
    return bad


def test_a_failed_build_leaves_no_setuid_file_and_the_cache_is_private(tmp_path):
    proj, config = project(tmp_path, {"rootsh": {"script": (
        "mkdir -p $PREFIX/bin\n"
        "for d in $PREFIX/bin $BUILDDIR $SRCDIR; do cp /bin/true $d/rootsh; chmod 4755 $d/rootsh; done\n"
        "mkdir -p $BUILDDIR/open && chmod 0777 $BUILDDIR/open\n"
        "exit 1\n")}})
    run = run_doit(config, "build:hard/rootsh")
    assert run.returncode != 0
    work = proj.cache / "work/hard/rootsh"
    assert (work / "build/rootsh").exists(), "the failed build's folder is kept for inspection"
    assert privileged_or_writable(work) == []
    assert stat.S_IMODE(os.stat(proj.cache).st_mode) == 0o700


def test_world_writable_folders_are_not_captured(tmp_path):
    proj, config = project(tmp_path, {"open": {"script": (
        "mkdir -p $PREFIX/lib && chmod 0777 $PREFIX/lib && echo x > $PREFIX/lib/libx.so\n"
        "chmod 0666 $PREFIX/lib/libx.so\n")}})
    run_doit(config, "build:hard/open", check=True)
    tree = proj.cache / "stage/hard/open/tree"
    assert stat.S_IMODE(os.stat(tree / "lib").st_mode) == 0o755
    assert stat.S_IMODE(os.stat(tree / "lib/libx.so").st_mode) == 0o644


OPAQUE = {
    "a": {"script": "mkdir -p $PREFIX/bin && echo a > $PREFIX/bin/afile\n"},
    "b": {"depends": ["a"],
          "script": "rm -rf $PREFIX/bin && mkdir -p $PREFIX/bin && echo b > $PREFIX/bin/bfile\n"},
}


def test_an_opaque_folder_deleting_a_dependencys_files_needs_replaces(tmp_path):
    proj, config = project(tmp_path, OPAQUE)
    run = run_doit(config, "build:hard/b")
    assert run.returncode != 0
    assert "bin/afile" in run.text and "deleted by 'b'" in run.text and "replaces" in run.text
    assert not (proj.cache / "stage/hard/b/key.json").exists()


def test_an_opaque_folder_stays_deleted_in_the_assembled_tree_and_the_image(tmp_path):
    recipes = dict(OPAQUE, b=dict(OPAQUE["b"], replaces=["a"]))
    proj, config = project(tmp_path, recipes)
    run_doit(config, "image:hard", check=True)
    result = json.loads((proj.cache / "images/hard-1.0.json").read_text())
    with tarfile.open(proj.cache / "images/hard-1.0.tar") as outer:
        blob = outer.extractfile("blobs/sha256/" + result["layer"].split(":")[1]).read()
    with tarfile.open(fileobj=io.BytesIO(blob)) as layer:
        names = {m.name.rsplit("/", 2)[-2] + "/" + m.name.rsplit("/", 1)[-1]
                 for m in layer.getmembers() if m.isfile()}
    assert "bin/bfile" in names and "bin/afile" not in names
    entries = json.loads((proj.cache / "stage/hard/b/manifest.json").read_text())["entries"]
    assert {"path": "bin", "type": "dir", "mode": 0o755, "opaque": True} in entries
    paths = {e["path"] for e in json.loads(
        (proj.cache / "stage/hard.manifest.json").read_text())["entries"]}
    assert "bin/bfile" in paths and "bin/afile" not in paths


def test_a_layer_whose_tree_is_a_link_is_refused(tmp_path):
    layer = tmp_path / "layer.tar.gz"
    with tarfile.open(layer, "w:gz") as tar:
        for name, data in (("manifest.json", b"{}"), ("build.json", b"{}")):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        link = tarfile.TarInfo("tree")
        link.type, link.linkname = tarfile.SYMTYPE, str(tmp_path)
        tar.addfile(link)
    with pytest.raises(registry.Corrupt, match="not a folder"):
        unpack_layer(layer, tmp_path / "out")


def test_a_hung_smoke_test_is_stopped(tmp_path):
    proj, config = project(tmp_path, {"slow": {
        "script": "mkdir -p $PREFIX/bin && cp /bin/busybox $PREFIX/bin/\n",   # static
        "smoke": ["$PREFIX/bin/busybox sleep 3137"], "smoke_timeout": 2}})
    run = run_doit(config, "check:hard", timeout=120)
    assert run.returncode != 0
    log = (proj.cache / "checks/hard.log").read_text()
    assert "stopped after 2 s" in log and "smoke_timeout" in log
    left = subprocess.run(["pgrep", "-f", "sleep 3137"], capture_output=True, text=True)
    assert left.stdout.strip() == ""


def test_a_builds_output_cannot_drive_the_terminal(tmp_path):
    proj, config = project(tmp_path, {"noisy": {"script": (
        "printf '\\033]52;c;cHduZWQ=\\007\\033[2JFAKE: build ok\\n'\nexit 1\n")}})
    run = run_doit(config, "build:hard/noisy")
    assert run.returncode != 0
    assert "FAKE: build ok" in run.text
    assert "\x1b" not in run.text and "\x07" not in run.text
