"""Bit rot in cache/downloads (docs/engine.md, fault model): a source whose bytes no
longer match its pin, with size and mtime kept, is noticed before it is used, discarded,
fetched again (saying so), and the build uses the good file."""
import json
import os

from conftest import run_doit
from fixtures import FixtureProject


def flip_a_byte_keeping_size_and_mtime(path):
    st = os.stat(path)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x40
    path.write_bytes(bytes(data))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert os.stat(path).st_size == st.st_size and os.stat(path).st_mtime_ns == st.st_mtime_ns


def test_rotten_download_is_refetched_before_use(tmp_path):
    proj = FixtureProject(tmp_path / "proj")
    sha = proj.add_package("rot", "1.0", {"README": "the source\n"}, build="script",
                           script="mkdir -p $PREFIX/share\ncp README $PREFIX/share/rot\n")
    proj.add_distribution("demo", ["rot"])
    config = proj.write_config()
    run_doit(config, "build:demo/rot", check=True)
    download = proj.cache / "downloads" / "rot-1.0.tar.gz"
    flip_a_byte_keeping_size_and_mtime(download)
    (proj.cache / "stage/demo/rot/key.json").unlink()       # make it build again
    run = run_doit(config, "build:demo/rot", check=True)
    assert "no longer matches the pinned sha256" in run.err and "fetching it again" in run.err
    assert download.is_file()
    import hashlib
    assert hashlib.sha256(download.read_bytes()).hexdigest() == sha
    key = json.loads((proj.cache / "stage/demo/rot/key.json").read_text())
    assert key["inputs"]["sources"][0]["sha256"] == sha
    assert (proj.cache / "stage/demo/rot/tree/share/rot").read_text() == "the source\n"
