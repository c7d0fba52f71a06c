"""debian: locations: private apt state, real fetch from Debian's source archive."""
import shutil
from types import SimpleNamespace

import pytest

from tasks.debian import deb_src_from_deb822, deb_src_from_list
from tasks.download import fetch_source
from tasks.recipes import Alternative, Source

# GNU hello 2.10: Debian's orig is byte-identical to the GNU release.
HELLO_SHA256 = "31e066137a962676e89f69d1b65382de95a7ef7d914b8cb956f41ea72e0f516b"


def test_deb_sources_are_turned_into_deb_src():
    deb822 = ("Types: deb\nURIs: http://mirror.example/debian\nSuites: bookworm\nComponents: main\n\n"
              "Types: deb-src\nURIs: http://x\nSuites: y\nComponents: main\n\n"
              "Types: deb\nEnabled: no\nURIs: http://off\nSuites: z\nComponents: main\n")
    out = deb_src_from_deb822(deb822)
    assert out.count("Types: deb-src") == 1 and "mirror.example" in out and "http://off" not in out
    assert deb_src_from_list("# c\ndeb http://m/debian bookworm main\ndeb-src http://m x y\n") == \
        "deb-src http://m/debian bookworm main\n"


@pytest.mark.skipif(shutil.which("apt-get") is None, reason="needs a Debian/Ubuntu host")
def test_real_fetch_of_hello_from_debians_source_archive(tmp_path):
    cfg = SimpleNamespace(cache=tmp_path / "cache", mirrors=(), download={
        "connect_timeout": 10.0, "read_timeout": 60.0, "retries": 2, "backoff": 1.0,
        "offline": False, "apt_refresh_hours": 24.0})
    src = Source((Alternative("hello-2.10.tar.gz", HELLO_SHA256, ("http://127.0.0.1:1/unreachable",)),
                  Alternative("hello_2.10.orig.tar.gz", HELLO_SHA256, ("debian:hello",))))
    result = fetch_source(src, cfg, progress=False)
    assert result.alternative.file == "hello_2.10.orig.tar.gz"
    assert result.how.startswith("debian:hello (http")
    assert (tmp_path / "cache/apt/sources.list.d").is_dir()
    # The host's apt configuration is untouched: our deb-src lives in cache/apt.
    assert not any("dappdeps" in p.name for p in __import__("pathlib").Path("/etc/apt/sources.list.d").iterdir())


def test_missing_file_lists_what_the_package_has(tmp_path):
    cfg = SimpleNamespace(cache=tmp_path / "cache", mirrors=(), download={
        "connect_timeout": 10.0, "read_timeout": 60.0, "retries": 0, "backoff": 1.0,
        "offline": False, "apt_refresh_hours": 24.0})
    src = Source((Alternative("hello_9.9.orig.tar.gz", HELLO_SHA256, ("debian:hello",)),))
    with pytest.raises(Exception) as info:
        fetch_source(src, cfg, progress=False)
    assert "hello_2.10.orig.tar.gz" in info.value.render()
