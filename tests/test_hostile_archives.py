"""Malicious source archives (issue 13, points 3 and 4): tasks/sources/unpack.py refuses or
drops what would leave the work folder, never writes through a link, keeps no device
nodes and no setuid bits. Each case checks that nothing outside the test's folders
changed."""
import io
import os
import stat
import tarfile

import pytest

from tasks.core.errors import UserError
from tasks.sources.unpack import prepare_dest, unpack


def member(name, kind="file", data=b"x\n", mode=0o644, target="", uid=0):
    info = tarfile.TarInfo(name)
    info.mode, info.mtime, info.uid = mode, 1700000000, uid
    if kind == "file":
        info.size = len(data)
        return info, io.BytesIO(data)
    info.type = {"dir": tarfile.DIRTYPE, "sym": tarfile.SYMTYPE, "hard": tarfile.LNKTYPE,
                 "chr": tarfile.CHRTYPE, "blk": tarfile.BLKTYPE, "fifo": tarfile.FIFOTYPE}[kind]
    info.linkname = target
    if kind in ("chr", "blk"):
        info.devmajor, info.devminor = 1, 3
    return info, None


def tarball(path, members, mode="w:gz"):
    with tarfile.open(path, mode) as tar:
        for info, data in members:
            tar.addfile(info, data)
    return path


@pytest.fixture
def box(tmp_path):
    """work/ with src/ as prepare_work makes it, and outside/ that must never change."""
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret").write_text("do not touch\n")
    work = tmp_path / "work"
    (work / "src").mkdir(parents=True)

    class Box:
        pass
    b = Box()
    b.tmp, b.work, b.src, b.outside = tmp_path / "arcs", work, work / "src", outside
    b.tmp.mkdir()
    b.before = snapshot(tmp_path, exclude=("work", "arcs"))
    yield b
    assert snapshot(tmp_path, exclude=("work", "arcs")) == b.before, "something was written outside work/"
    assert (outside / "secret").read_text() == "do not touch\n"
    leftovers = [p.name for p in work.iterdir() if p.name.startswith((".unpack-", ".inner-"))]
    assert leftovers == []


def snapshot(root, exclude=()):
    out = {}
    for folder, dirs, files in os.walk(root):
        dirs[:] = [d for d in dirs if os.path.relpath(os.path.join(folder, d), root) not in exclude]
        for name in dirs + files:
            path = os.path.join(folder, name)
            st = os.lstat(path)
            out[os.path.relpath(path, root)] = (st.st_mode, st.st_size, st.st_mtime_ns)
    return out


def refused(box, archive, *pieces, dest=None, inner=None):
    with pytest.raises(UserError) as info:
        unpack(archive, dest or box.src, inner, box.work)
    text = info.value.render()
    for piece in pieces:
        assert piece in text, f"{piece!r} not in {text}"
    assert "\n" not in text
    return text


def test_a_plain_archive_unpacks_without_its_top_folder(box):
    arc = tarball(box.tmp / "ok.tar.gz", [
        member("pkg-1.0", "dir", mode=0o755), member("pkg-1.0/configure", data=b"#!/bin/sh\n", mode=0o755),
        member("pkg-1.0/doc", "dir", mode=0o755), member("pkg-1.0/doc/README"),
        member("pkg-1.0/README", "sym", target="doc/README"),
        member("pkg-1.0/COPY", "hard", target="pkg-1.0/doc/README")])
    unpack(arc, box.src, None, box.work)
    assert (box.src / "configure").stat().st_mode & 0o777 == 0o755
    assert os.readlink(box.src / "README") == "doc/README"
    assert (box.src / "COPY").read_text() == "x\n"
    assert os.stat(box.src / "COPY").st_ino == os.stat(box.src / "doc" / "README").st_ino


@pytest.mark.parametrize("name", ["/ABS/pwned", "pkg/../../../outside/pwned", "../../outside/pwned",
                                  "./../outside/pwned"])
def test_members_leaving_the_tree_are_refused(box, name):
    name = name.replace("/ABS", str(box.outside))
    arc = tarball(box.tmp / "bad.tar.gz", [member("pkg/a"), member(name)])
    text = refused(box, arc, "bad.tar.gz", "sources", "refused")
    assert ("absolute" in text) if name.startswith("/") else ("'..'" in text)
    assert not (box.outside / "pwned").exists() and not any(box.src.iterdir())


@pytest.mark.parametrize("target", ["ABS", "ABS/secret", "../../outside", "../../../../../../../../etc",
                                    "../..", "x/../../.."])
def test_symlinks_leaving_the_tree_are_refused(box, target):
    target = target.replace("ABS", str(box.outside))
    arc = tarball(box.tmp / "link.tar.gz", [member("pkg", "dir"), member("pkg/evil", "sym", target=target)])
    refused(box, arc, "pkg/evil", "link")


def test_a_file_written_through_a_symlink_is_refused(box):
    # an in-tree link, then a member below it: tarfile would follow it; we never do
    arc = tarball(box.tmp / "through.tar.gz", [
        member("pkg", "dir"), member("pkg/real", "dir"), member("pkg/via", "sym", target="real"),
        member("pkg/via/file")])
    refused(box, arc, "pkg/via/file", "through the link")


def test_a_member_replacing_a_symlink_is_refused(box):
    arc = tarball(box.tmp / "replace.tar.gz", [
        member("pkg", "dir"), member("pkg/f"), member("pkg/l", "sym", target="f"), member("pkg/l", data=b"y")])
    refused(box, arc, "pkg/l", "link unpacked before it")


def test_a_link_chain_that_escapes_only_physically_is_refused(box):
    # s -> . ; t -> s/../.. is inside when read as text, outside once s is followed
    arc = tarball(box.tmp / "chain.tar.gz", [
        member("pkg", "dir"), member("pkg/s", "sym", target="."), member("pkg/t", "sym", target="s/../..")])
    refused(box, arc, "pkg/t", "outside")


def test_a_link_that_escapes_through_a_later_link_is_refused(box):
    # a -> x/../.. is inside while x does not exist; x -> . arrives afterwards
    arc = tarball(box.tmp / "late.tar.gz", [
        member("pkg", "dir"), member("pkg/a", "sym", target="x/../.."), member("pkg/x", "sym", target=".")])
    refused(box, arc, "pkg/a", "outside")


def test_a_link_loop_is_refused(box):
    arc = tarball(box.tmp / "loop.tar.gz", [
        member("pkg", "dir"), member("pkg/a", "sym", target="b"), member("pkg/b", "sym", target="a"),
        member("pkg/c", "sym", target="a/x")])
    refused(box, arc, "link")


@pytest.mark.parametrize("target", ["../../outside/secret", "ABS/secret", "pkg/missing"])
def test_hard_links_outside_the_tree_are_refused(box, target):
    target = target.replace("ABS", str(box.outside))
    arc = tarball(box.tmp / "hard.tar.gz", [member("pkg", "dir"), member("pkg/h", "hard", target=target)])
    refused(box, arc, "pkg/h", "hard link")
    assert os.stat(box.outside / "secret").st_nlink == 1


def test_a_hard_link_to_a_symlink_is_refused(box):
    arc = tarball(box.tmp / "hardsym.tar.gz", [
        member("pkg", "dir"), member("pkg/f"), member("pkg/s", "sym", target="f"),
        member("pkg/h", "hard", target="pkg/s")])
    refused(box, arc, "pkg/h", "not a regular file")


def test_devices_and_fifos_are_dropped(box):
    arc = tarball(box.tmp / "dev.tar.gz", [
        member("pkg", "dir"), member("pkg/ok"), member("pkg/null", "chr"), member("pkg/disk", "blk"),
        member("pkg/pipe", "fifo")])
    unpack(arc, box.src, None, box.work)
    assert sorted(p.name for p in box.src.iterdir()) == ["ok"]


def test_setuid_setgid_sticky_and_owners_are_not_kept(box):
    arc = tarball(box.tmp / "suid.tar.gz", [
        member("pkg", "dir", mode=0o1777), member("pkg/su", data=b"#!/bin/sh\n", mode=0o4755, uid=1234),
        member("pkg/sg", mode=0o2775), member("pkg/ww", mode=0o666)])
    unpack(arc, box.src, None, box.work)
    modes = {p.name: stat.S_IMODE(os.lstat(p).st_mode) for p in box.src.iterdir()}
    assert modes == {"su": 0o755, "sg": 0o755, "ww": 0o644}
    assert not stat.S_IMODE(os.stat(box.src).st_mode) & 0o7000
    assert os.stat(box.src / "su").st_uid == os.getuid()


def test_a_symlink_from_one_source_is_not_a_way_out_for_the_next(box):
    # The first source leaves src/sub as a link (here: one pointing outside, as an
    # older unpacker would have kept); the second has dest: sub.
    os.symlink(box.outside, box.src / "sub")
    arc = tarball(box.tmp / "second.tar.gz", [member("gmp", "dir"), member("gmp/pwned")])
    refused(box, arc, "sub", "link", dest=box.src / "sub")
    refused(box, arc, "sub", "link", dest=box.src / "sub" / "deeper")
    assert not (box.outside / "pwned").exists()


def test_an_in_tree_symlink_is_not_a_dest_either(box):
    first = tarball(box.tmp / "first.tar.gz", [
        member("pkg", "dir"), member("pkg/real", "dir"), member("pkg/sub", "sym", target="real")])
    unpack(first, box.src, None, box.work)
    second = tarball(box.tmp / "second.tar.gz", [member("gmp", "dir"), member("gmp/x")])
    refused(box, second, "sub", "link", dest=box.src / "sub")
    assert list((box.src / "real").iterdir()) == []


def test_prepare_dest_refuses_links_and_places_outside_work(box):
    os.symlink(box.outside, box.src / "copyhere")
    with pytest.raises(UserError):
        prepare_dest(box.src / "copyhere", box.work)
    with pytest.raises(UserError):
        prepare_dest(box.outside, box.work)
    assert prepare_dest(box.src / "a" / "b", box.work).is_dir()


def test_inner_tarball_is_unpacked_with_the_same_rules(box):
    inner = tarball(box.tmp / "inner.tar.xz", [member("gcc-12", "dir"), member("gcc-12/ok")], "w:xz")
    good = tarball(box.tmp / "orig.tar.gz", [member("orig", "dir"),
                                             member("orig/gcc-12.tar.xz", data=inner.read_bytes())])
    unpack(good, box.src, "gcc-12.tar.xz", box.work)
    assert (box.src / "ok").is_file()
    bad_inner = tarball(box.tmp / "bad.tar.xz", [member("../../outside/pwned")], "w:xz")
    bad = tarball(box.tmp / "orig2.tar.gz", [member("orig", "dir"),
                                             member("orig/gcc-12.tar.xz", data=bad_inner.read_bytes())])
    refused(box, bad, "'..'", dest=box.src / "other", inner="gcc-12.tar.xz")
    assert not (box.src / "other").exists()


def test_a_file_that_is_no_archive_is_a_clear_error(box):
    junk = box.tmp / "junk.tar.gz"
    junk.write_bytes(b"<html>not found</html>")
    refused(box, junk, "cannot unpack junk.tar.gz")


def test_bz2_and_xz_archives_unpack(box):
    for mode, name in (("w:bz2", "a.tar.bz2"), ("w:xz", "b.tar.xz")):
        arc = tarball(box.tmp / name, [member("top", "dir"), member(f"top/{name}.txt")], mode)
        unpack(arc, box.src / name.split(".")[0], None, box.work)
    assert (box.src / "a" / "a.tar.bz2.txt").is_file() and (box.src / "b" / "b.tar.xz.txt").is_file()
