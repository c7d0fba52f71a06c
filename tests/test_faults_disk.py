"""A full disk (issue 18): the cache on a small tmpfs (mounted here, as root). A build, the
engine's own writes and an image export that meet ENOSPC give one paragraph naming the
folder and the space; nothing counts as done; after freeing space the rerun is right."""
import base64
import os
import re
import subprocess

import pytest

from conftest import run_doit
from test_faults import script_project, writes


@pytest.fixture
def small_disk(tmp_path):
    mount = tmp_path / "small"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mount)],
                          capture_output=True, text=True)
    assert done.returncode == 0, f"cannot mount a tmpfs (the tests run as root): {done.stderr}"
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def fill(folder, leave=0):
    """Take all free space of folder's filesystem but `leave` bytes; returns the filler."""
    filler = folder / "filler"
    with open(filler, "wb") as fh:
        chunk = b"\0" * 65536
        try:
            while True:
                free = os.statvfs(folder).f_bavail * os.statvfs(folder).f_frsize
                if free <= leave:
                    break
                fh.write(chunk[:max(4096, min(len(chunk), free - leave))])
                fh.flush()
        except OSError:
            pass
    return filler


def key(cache, comp, dist="demo"):
    return cache / "stage" / dist / comp / "key.json"


def assert_clear(run, folder):
    assert run.returncode != 0
    assert "Traceback" not in run.text, run.text[-3000:]
    assert "the disk is full" in run.text, run.text[-3000:]
    assert str(folder) in run.text and "free of" in run.text


def test_full_disk_clear_error_nothing_done_rerun_right(tmp_path, small_disk):
    big = "mkdir -p $PREFIX/share\nhead -c 3000000 /dev/zero > $PREFIX/share/big\n"
    proj = script_project(tmp_path / "p", {"a": writes("a"), "big": big},
                          cache_dir=str(small_disk))
    config = proj.root / "config.yaml"
    # 1. the build itself fills the disk (a write inside its sandbox)
    run = run_doit(config, "--continue", "assemble:demo")
    assert_clear(run, small_disk)
    assert "build:demo/big" in run.text
    assert re.search(r"this step needed at least [\d.]+ MB", run.text), run.text[-3000:]
    assert key(small_disk, "a").is_file() and not key(small_disk, "big").exists()
    assert not (small_disk / "work" / "demo" / "big").exists()     # it only filled the disk
    # 2. the engine's own writes meet a full disk (the first: its work folder and log)
    proj.write_recipe(dict(proj.recipes["a"], script=writes("a", "second")))
    filler = fill(small_disk)
    run = run_doit(config, "--continue", "verify:demo", "build:demo/a")
    assert_clear(run, small_disk)
    assert "build:demo/a" in run.text
    # doit's own database write (verify:demo succeeded: a record to save) fails too
    assert run.returncode == 2, run.text[-3000:]
    assert re.search(r"^doit: could not write its database \S+/doit\.sqlite3: OperationalError: "
                     r"database or disk is full\..* Exit 2\.$", run.err, re.M), run.err[-3000:]
    assert "TaskFailed - taskid:build:demo/a" in run.out      # the failure is still listed
    filler.unlink()
    # 3. space freed (and the big one made small): the rerun builds exactly what is missing
    proj.write_recipe(dict(proj.recipes["big"], script=writes("big")))
    run = run_doit(config, "image:demo", check=True)
    assert run.ran() == ["build:demo/a", "build:demo/big"]
    assert (small_disk / "stage/demo/a/tree/share/a").read_text() == "second\n"
    assert run_doit(config, "verify", check=True).returncode == 0
    # 4. an image export that meets a full disk
    proj.write_recipe(dict(proj.recipes["big"], script=big.replace("3000000", "300000")))
    run_doit(config, "build:demo/big", check=True)
    filler = fill(small_disk, leave=64 * 1024)
    run = run_doit(config, "image:demo")
    assert_clear(run, small_disk / "images")
    assert "exporting demo-1.0.tar" in run.text
    assert re.search(r"this step needed at least [\d.]+ KB", run.text), run.text[-3000:]
    assert [p.name for p in (small_disk / "images").iterdir() if ".tmp" in p.name or "strip" in p.name] == []
    filler.unlink()
    run = run_doit(config, "image:demo", check=True)
    assert run.ran("image:") == ["image:demo"]
    # 5. unpacking a source meets a full disk
    proj.add_package("u", "1.0", {"data": base64.b64encode(os.urandom(450_000)).decode()},
                     build="script", script=writes("u"))
    proj.add_distribution("unp", ["u"])
    proj.write_config(cache_dir=str(small_disk))
    run_doit(config, "fetch:u-1.0.tar.gz", check=True)
    filler = fill(small_disk, leave=200 * 1024)
    run = run_doit(config, "build:unp/u")
    assert_clear(run, small_disk)
    assert "build:unp/u" in run.text
    assert not key(small_disk, "u", "unp").exists() and not (small_disk / "work" / "unp" / "u").exists()
    filler.unlink()
    assert run_doit(config, "build:unp/u", check=True).ran() == ["build:unp/u"]
