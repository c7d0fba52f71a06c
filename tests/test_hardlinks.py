"""Hard links arrive as hard links (issue 14, point 4): a build's `ln` shows in its
manifest ("link": the first path of the inode), its stage tree keeps one inode, the
image layer holds hard link members (and a regular file when the first path is gone),
a build-cache layer carries them and refuses hard links that point anywhere else."""
import gzip
import hashlib
import io
import json
import os
import shutil
import subprocess
import tarfile
from types import SimpleNamespace

import pytest

from conftest import run_doit
from fixtures import FixtureProject
from tasks.build import manifest, verify
from tasks.model.component import Component
from tasks.model.config import load_config
from tasks.ship import registry
from tasks.ship.layer import unpack_layer, verify_output, write_layer
from tasks.ship.tarwriter import FileSink, TarStream

LINKS = """mkdir -p $PREFIX/bin $PREFIX/share/doc
printf 'int main(void) { return 0; }\\n' > $BUILDDIR/prog.c
cc -g -O0 -o $PREFIX/bin/prog $BUILDDIR/prog.c
ln $PREFIX/bin/prog $PREFIX/bin/prog-alias
echo doc > $PREFIX/share/doc/a.txt
ln $PREFIX/share/doc/a.txt $PREFIX/share/doc/b.txt
ln $PREFIX/share/doc/a.txt $PREFIX/share/doc/c.txt
echo old > $PREFIX/share/doc/x.txt
ln $PREFIX/share/doc/x.txt $PREFIX/share/doc/y.txt
"""
# a later component deletes the first path of one group and rewrites that of another
TRIM = """rm $PREFIX/share/doc/a.txt
echo new > $PREFIX/share/doc/x.txt
"""
PREFIX = ".dapp/test/hl/1.0"


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    proj = FixtureProject(tmp_path_factory.mktemp("hardlinks") / "proj")
    proj.add_package("links", "1.0", {"README": "x\n"}, build="script", script=LINKS)
    proj.add_package("trim", "1.0", {"README": "x\n"}, build="script", script=TRIM,
                     depends=["links"], replaces=["links"])
    proj.add_distribution("hl", ["links", "trim"])
    config = proj.write_config()
    run_doit(config, "image:hl", check=True)
    return proj, config


def config_of(config):
    os.environ["DAPPDEPS_CONFIG"] = str(config)
    try:
        return load_config(config.parent)
    finally:
        del os.environ["DAPPDEPS_CONFIG"]


def inode(path):
    st = os.lstat(path)
    return st.st_dev, st.st_ino


def entries_of(path):
    return {e["path"]: e for e in json.loads(path.read_text())["entries"]}


# ---- capture -----------------------------------------------------------------------
def test_a_builds_hard_links_are_in_its_manifest_and_stage(built):
    proj, _config = built
    stage = proj.cache / "stage/hl/links"
    entries = entries_of(stage / "manifest.json")
    for first, others in (("bin/prog", ["bin/prog-alias"]),
                          ("share/doc/a.txt", ["share/doc/b.txt", "share/doc/c.txt"]),
                          ("share/doc/x.txt", ["share/doc/y.txt"])):
        assert entries[first]["type"] == "file" and "link" not in entries[first]
        for other in others:
            assert entries[other]["link"] == first
            assert {k: entries[other][k] for k in ("type", "mode", "size", "sha256")} == \
                   {k: entries[first][k] for k in ("type", "mode", "size", "sha256")}
            assert inode(stage / "tree" / other) == inode(stage / "tree" / first)
    # the trimming component: a whiteout and a new file, no link
    trim = entries_of(proj.cache / "stage/hl/trim/manifest.json")
    assert trim["share/doc/a.txt"]["type"] == "whiteout"
    assert "link" not in trim["share/doc/x.txt"]
    # the assembled tree: b.txt and c.txt still say where they come from
    merged = entries_of(proj.cache / "stage/hl.manifest.json")
    assert "share/doc/a.txt" not in merged
    assert merged["share/doc/c.txt"]["link"] == "share/doc/a.txt"
    assert merged["share/doc/x.txt"]["component"] == "trim"


def test_scan_groups_only_paths_inside_the_tree(tmp_path):
    tree = tmp_path / "tree"
    (tree / "d").mkdir(parents=True)
    (tree / "z").write_text("one inode, three paths\n")
    os.link(tree / "z", tree / "d/m")
    os.link(tree / "z", tree / "a")
    (tree / "solo").write_text("its other name is outside the tree\n")
    os.link(tree / "solo", tmp_path / "outside")
    entries = {e["path"]: e for e in manifest.scan_tree(tree)}
    assert "link" not in entries["a"]
    assert entries["d/m"]["link"] == "a" and entries["z"]["link"] == "a"
    assert "link" not in entries["solo"]
    assert manifest.scan_tree(tree) == list(entries.values())      # deterministic


def test_quick_check_sees_a_hard_link_made_a_copy(built, tmp_path):
    proj, _config = built
    stage = tmp_path / "links"
    subprocess.run(["cp", "-a", str(proj.cache / "stage/hl/links"), str(stage)], check=True)
    comp = SimpleNamespace(stage_dir=stage, tree=stage / "tree",
                           manifest_path=stage / "manifest.json")
    assert verify.problems(comp) == []              # cp -a keeps the links
    alias = stage / "tree/bin/prog-alias"
    shutil.copy2(alias, tmp_path / "copy")          # same bytes, mode and mtime
    os.replace(tmp_path / "copy", alias)
    assert verify.problems(comp) == ["bin/prog-alias: no longer a hard link of bin/prog"]


# ---- the image ---------------------------------------------------------------------
def test_image_holds_hard_links_and_extracts_to_one_inode(built, tmp_path):
    proj, _config = built
    result = json.loads((proj.cache / "images/hl-1.0.json").read_text())
    with tarfile.open(proj.cache / "images/hl-1.0.tar") as outer:
        blob = outer.extractfile("blobs/sha256/" + result["layer"].split(":")[1]).read()
    with tarfile.open(fileobj=io.BytesIO(blob)) as layer:
        members = {m.name: m for m in layer.getmembers()}
        alias = members[f"{PREFIX}/bin/prog-alias"]
        assert alias.type == tarfile.LNKTYPE and alias.linkname == f"{PREFIX}/bin/prog"
        assert alias.size == 0
        assert members[f"{PREFIX}/bin/prog"].isreg()
        # a.txt was deleted by trim: b.txt is the file, c.txt links to it
        assert f"{PREFIX}/share/doc/a.txt" not in members
        assert members[f"{PREFIX}/share/doc/b.txt"].isreg()
        c = members[f"{PREFIX}/share/doc/c.txt"]
        assert c.islnk() and c.linkname == f"{PREFIX}/share/doc/b.txt"
        # x.txt is trim's now: y.txt keeps links' bytes, as a file of its own
        assert members[f"{PREFIX}/share/doc/y.txt"].isreg()
        layer.extractall(tmp_path / "root", filter="tar")
    root = tmp_path / "root" / PREFIX
    assert inode(root / "bin/prog") == inode(root / "bin/prog-alias")
    assert inode(root / "share/doc/b.txt") == inode(root / "share/doc/c.txt")
    assert (root / "share/doc/c.txt").read_text() == "doc\n"
    assert (root / "share/doc/x.txt").read_text() == "new\n"
    assert (root / "share/doc/y.txt").read_text() == "old\n"
    # stripped once, and both names ship the stripped bytes
    assert result["stripped"]["files"] == 1
    staged = proj.cache / "stage/hl/links/tree/bin/prog"
    assert (root / "bin/prog-alias").stat().st_size < staged.stat().st_size
    assert result["files"] == 6             # prog, prog-alias, b.txt, c.txt, x.txt, y.txt


def test_long_hard_link_names_round_trip_through_tarfile(tmp_path):
    target = "tree/" + "/".join(["a-long-folder-name-%02d" % i for i in range(8)]) + "/file"
    (tmp_path / "f").write_bytes(b"x")
    buf = io.BytesIO()
    stream = TarStream(FileSink(buf), 1700000000)
    stream.file(target, 0o644, 1, tmp_path / "f")
    stream.hardlink(target + "-again", target, 0o644)
    stream.finish()
    with tarfile.open(fileobj=io.BytesIO(buf.getvalue())) as tar:
        first, second = tar.getmembers()
    assert first.name == target and first.isreg()
    assert second.name == target + "-again" and second.islnk() and second.linkname == target


# ---- the build-cache layer ---------------------------------------------------------
def test_layer_round_trip_keeps_hard_links(built, tmp_path):
    proj, config = built
    layer = tmp_path / "layer.tar.gz"
    write_layer(proj.cache / "stage/hl/links", layer, 1700000000)
    with tarfile.open(layer) as tar:
        alias = tar.getmember("tree/bin/prog-alias")
        assert alias.islnk() and alias.linkname == "tree/bin/prog" and alias.size == 0
    out = tmp_path / "out"
    unpack_layer(layer, out)
    digest = hashlib.sha256((out / "manifest.json").read_bytes()).hexdigest()
    comp = Component(config_of(config), "hl", "links")
    verify_output(out, comp, digest)
    assert inode(out / "tree/bin/prog") == inode(out / "tree/bin/prog-alias")
    assert inode(out / "tree/share/doc/a.txt") == inode(out / "tree/share/doc/c.txt")
    # two files where the manifest says one inode: refused
    alias = out / "tree/bin/prog-alias"
    shutil.copy2(alias, tmp_path / "copy")
    os.replace(tmp_path / "copy", alias)
    with pytest.raises(registry.Corrupt, match="bin/prog-alias"):
        verify_output(out, comp, digest)


def _layer(path, members):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, kind, extra in members:
            info = tarfile.TarInfo(name)
            info.type = kind
            if kind == tarfile.REGTYPE:
                info.size = len(extra)
                tar.addfile(info, io.BytesIO(extra))
            else:
                info.linkname = extra or ""
                tar.addfile(info)
    path.write_bytes(gzip.compress(buf.getvalue()))


TREE = [("manifest.json", tarfile.REGTYPE, b"{}"), ("tree", tarfile.DIRTYPE, None),
        ("tree/bin", tarfile.DIRTYPE, None)]


@pytest.mark.parametrize("link", [
    "/etc/passwd",                   # absolute: outside the tree
    "../../secret",                  # relative, outside the tree
    "tree/../../secret",
    "tree/bin/later",                # a member not yet unpacked
    "tree/bin",                      # a folder
    "manifest.json",                 # not part of the tree
    "tree/bin/alias",                # itself
])
def test_unpack_refuses_hard_links_that_point_elsewhere(tmp_path, link):
    secret = tmp_path / "secret"
    secret.write_text("host file\n")
    _layer(tmp_path / "evil.tar.gz", TREE + [
        ("tree/bin/alias", tarfile.LNKTYPE, link),
        ("tree/bin/later", tarfile.REGTYPE, b"later\n")])
    with pytest.raises(registry.Corrupt, match="hard link"):
        unpack_layer(tmp_path / "evil.tar.gz", tmp_path / "a" / "b")
    assert os.stat(secret).st_nlink == 1 and os.stat("/etc/passwd").st_nlink == 1
    assert not (tmp_path / "a/b/tree/bin/alias").exists()


def test_unpack_refuses_a_hard_link_over_an_unpacked_file(tmp_path):
    _layer(tmp_path / "evil.tar.gz", TREE + [
        ("tree/bin/tool", tarfile.REGTYPE, b"tool\n"),
        ("tree/bin/other", tarfile.REGTYPE, b"other\n"),
        ("tree/bin/other", tarfile.LNKTYPE, "tree/bin/tool")])
    with pytest.raises(registry.Corrupt):
        unpack_layer(tmp_path / "evil.tar.gz", tmp_path / "out")
