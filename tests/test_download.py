"""Downloads against a real HTTP server on 127.0.0.1 (tests/httpfixture.py)."""
import hashlib
import os
import time
from types import SimpleNamespace

import pytest

from httpfixture import HttpFixture
from tasks.download import cached, fetch_source
from tasks.errors import FetchError
from tasks.recipes import Alternative, Source

DATA = os.urandom(300_000)
SHA = hashlib.sha256(DATA).hexdigest()


@pytest.fixture
def server():
    srv = HttpFixture()
    yield srv
    srv.close()


def config(tmp_path, mirrors=(), offline=False, retries=1):
    return SimpleNamespace(cache=tmp_path / "cache", mirrors=tuple(mirrors), download={
        "connect_timeout": 1.0, "read_timeout": 1.0, "retries": retries, "backoff": 0.05,
        "offline": offline, "apt_refresh_hours": 24.0})


def source(*urls, file="pkg-1.0.tar.gz", sha=SHA, alternatives=()):
    return Source((Alternative(file, sha, tuple(urls)),) + tuple(alternatives))


def downloads(tmp_path):
    root = tmp_path / "cache" / "downloads"
    return sorted(p.name for p in root.iterdir() if p.is_file()) if root.exists() else []


def test_success_then_cache_hit(server, tmp_path):
    server.add("pkg-1.0.tar.gz", DATA)
    cfg = config(tmp_path)
    src = source(f"{server.url}/pkg-1.0.tar.gz")
    result = fetch_source(src, cfg, progress=False)
    assert result.path.read_bytes() == DATA and result.how.startswith("http://127.0.0.1")
    requests_before = len(server.log)
    assert fetch_source(src, cfg).how == "cache"
    assert len(server.log) == requests_before


def test_404_then_next_mirror(server, tmp_path):
    server.add("pkg-1.0.tar.gz", DATA)
    cfg = config(tmp_path, mirrors=["http://127.0.0.1:1/nothing-listens-here"])
    src = source(f"{server.url}/nope", f"{server.url}/pkg-1.0.tar.gz")
    result = fetch_source(src, cfg, progress=False)
    assert result.how == f"{server.url}/pkg-1.0.tar.gz"
    assert any(path.endswith("/nope") for path, _ in server.log)


def test_dropped_connection_is_resumed_with_range(server, tmp_path):
    server.add("pkg-1.0.tar.gz", DATA, "drop")
    result = fetch_source(source(f"{server.url}/pkg-1.0.tar.gz"), config(tmp_path), progress=False)
    assert result.path.read_bytes() == DATA
    ranges = [rng for _, rng in server.log if rng]
    assert ranges and ranges[0].startswith("bytes=") and int(ranges[0][6:-1]) > 0


def test_dropped_connection_without_range_support_restarts(server, tmp_path):
    server.add("pkg-1.0.tar.gz", DATA, "drop-norange")
    result = fetch_source(source(f"{server.url}/pkg-1.0.tar.gz"), config(tmp_path), progress=False)
    assert result.path.read_bytes() == DATA
    assert len(server.log) == 2


def test_slow_server_times_out_then_next_location(server, tmp_path):
    server.add("slow.tar.gz", DATA, "slow")
    server.add("pkg-1.0.tar.gz", DATA)
    start = time.time()
    result = fetch_source(source(f"{server.url}/slow.tar.gz", f"{server.url}/pkg-1.0.tar.gz"),
                          config(tmp_path, retries=0), progress=False)
    assert result.how.endswith("/pkg-1.0.tar.gz")
    assert time.time() - start < 3


def test_corrupted_file_is_rejected_and_never_replaces_a_good_one(server, tmp_path):
    server.add("pkg-1.0.tar.gz", DATA, "corrupt")
    cfg = config(tmp_path)
    with pytest.raises(FetchError) as info:
        fetch_source(source(f"{server.url}/pkg-1.0.tar.gz"), cfg, progress=False)
    text = info.value.render()
    assert SHA in text and "sha256 mismatch" in text and f"{server.url}/pkg-1.0.tar.gz" in text
    assert downloads(tmp_path) == []
    assert not list((tmp_path / "cache/downloads/.partial").iterdir())
    # A good cached copy stays: the corrupt server is not even asked.
    server.httpd.behave.pop("pkg-1.0.tar.gz")
    fetch_source(source(f"{server.url}/pkg-1.0.tar.gz"), cfg, progress=False)
    server.httpd.behave["pkg-1.0.tar.gz"] = "corrupt"
    assert fetch_source(source(f"{server.url}/pkg-1.0.tar.gz"), cfg).how == "cache"
    assert (tmp_path / "cache/downloads/pkg-1.0.tar.gz").read_bytes() == DATA


def test_alternatives_are_tried_in_order(server, tmp_path):
    other = b"debian's repack" * 100
    server.add("pkg_1.0.orig.tar.gz", other)
    alt = Alternative("pkg_1.0.orig.tar.gz", hashlib.sha256(other).hexdigest(),
                      (f"{server.url}/pkg_1.0.orig.tar.gz",))
    result = fetch_source(source(f"{server.url}/absent", alternatives=[alt]), config(tmp_path), progress=False)
    assert result.alternative is alt and cached(source(f"{server.url}/absent", alternatives=[alt]),
                                                config(tmp_path)).alternative is alt


def test_offline_mode(server, tmp_path):
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    (mirror / "pkg-1.0.tar.gz").write_bytes(DATA)
    server.add("pkg-1.0.tar.gz", DATA)
    src = source(f"{server.url}/pkg-1.0.tar.gz")
    with pytest.raises(FetchError) as info:
        fetch_source(src, config(tmp_path, offline=True), progress=False)
    assert "offline" in info.value.render() and "cache/downloads/pkg-1.0.tar.gz" in info.value.render()
    assert server.log == []
    result = fetch_source(src, config(tmp_path, mirrors=[mirror.as_uri()], offline=True), progress=False)
    assert result.how.startswith("file://") and server.log == []


def test_cached_detects_corruption_and_rehashes_a_touch_once(server, tmp_path, monkeypatch):
    server.add("pkg-1.0.tar.gz", DATA)
    cfg = config(tmp_path)
    src = source(f"{server.url}/pkg-1.0.tar.gz")
    path = fetch_source(src, cfg, progress=False).path
    import tasks.download as dl
    hashed = []
    real = dl.sha256_file
    monkeypatch.setattr(dl, "sha256_file", lambda p: hashed.append(p) or real(p))
    assert cached(src, cfg) and hashed == []
    os.utime(path, ns=(time.time_ns(), time.time_ns() + 10**9))
    assert cached(src, cfg) and len(hashed) == 1
    assert cached(src, cfg) and len(hashed) == 1
    with open(path, "r+b") as fh:
        fh.write(b"X")
    assert cached(src, cfg) is None and not path.exists()
    assert fetch_source(src, cfg, progress=False).path.read_bytes() == DATA
