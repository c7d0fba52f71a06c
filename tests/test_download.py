"""tasks/sources/download.py against a real HTTP server on 127.0.0.1 (tests/httpfixture.py)."""
import gzip
import hashlib
import os
import threading
import time
from types import SimpleNamespace

import pytest

import tasks.sources.download as dl
from httpfixture import HttpFixture
from tasks.sources.download import cached, download, fetch_source
from tasks.core.errors import FetchError
from tasks.model.recipes import Alternative, Source

DATA = os.urandom(400_000)
SHA = hashlib.sha256(DATA).hexdigest()
FILE = "pkg-1.0.tar.gz"


@pytest.fixture
def server():
    with HttpFixture(slow_seconds=4.0) as srv:
        yield srv


def config(tmp_path, mirrors=(), offline=False, retries=1, read_timeout=1.0):
    return SimpleNamespace(cache=tmp_path / "cache", mirrors=tuple(mirrors), download={
        "connect_timeout": 1.0, "read_timeout": read_timeout, "retries": retries,
        "backoff": 0.05, "offline": offline, "apt_refresh_hours": 24.0})


def source(*urls, file=FILE, sha=SHA, more=()):
    return Source((Alternative(file, sha, tuple(urls)),) + tuple(more))


def done_files(tmp_path):
    """What counts as downloaded: regular files in downloads/ and their records."""
    root = tmp_path / "cache" / "downloads"
    files = sorted(p.name for p in root.iterdir() if p.is_file()) if root.is_dir() else []
    records = sorted(p.name for p in (root / ".verified").iterdir()) if (root / ".verified").is_dir() else []
    return files, records


def partials(tmp_path):
    return sorted(p.name for p in (tmp_path / "cache/downloads/.partial").glob("*.part"))


def test_success_records_it_and_the_next_call_is_a_cache_hit(server, tmp_path, capsys):
    url = server.add(FILE, DATA)
    cfg = config(tmp_path)
    result = fetch_source(source(url), cfg)
    assert result.how == url and result.path == tmp_path / "cache/downloads" / FILE
    assert result.path.read_bytes() == DATA
    assert done_files(tmp_path) == ([FILE], [f"{FILE}.json"]) and partials(tmp_path) == []
    assert capsys.readouterr().err == ""          # not a terminal: no progress bar
    again = fetch_source(source(url), cfg)
    assert again.how == "cache" and len(server.requests) == 1


def test_progress_bar_when_asked(server, tmp_path, capsys):
    url = server.add(FILE, DATA)
    fetch_source(source(url), config(tmp_path), progress=True)
    assert FILE in capsys.readouterr().err


def test_404_goes_on_to_the_next_mirror_without_retrying(server, tmp_path):
    server.add("a/" + FILE, DATA, "404")
    server.add("b/" + FILE, DATA)
    cfg = config(tmp_path, mirrors=[f"{server.url}/a", f"{server.url}/b/"], retries=3)
    result = fetch_source(source(f"{server.url}/never-asked"), cfg)
    assert result.how == f"{server.url}/b/{FILE}"
    assert [r.path for r in server.requests] == [f"a/{FILE}", f"b/{FILE}"]


def test_mirrors_before_own_urls_and_alternatives_in_order(server, tmp_path):
    other = b"a repacked tarball" * 1000
    alt = Alternative("pkg_1.0.orig.tar.gz", hashlib.sha256(other).hexdigest(),
                      (f"{server.url}/debianish/pkg_1.0.orig.tar.gz",))
    server.add("debianish/pkg_1.0.orig.tar.gz", other)
    cfg = config(tmp_path, mirrors=[f"{server.url}/mirror"])
    src = source(f"{server.url}/upstream/{FILE}", more=[alt])
    result = fetch_source(src, cfg)
    assert result.alternative is alt and result.path.read_bytes() == other
    assert [r.path for r in server.requests] == [
        f"mirror/{FILE}", f"upstream/{FILE}", "mirror/pkg_1.0.orig.tar.gz",
        "debianish/pkg_1.0.orig.tar.gz"]
    assert cached(src, cfg).alternative is alt


def test_dropped_connection_is_resumed_with_range(server, tmp_path):
    url = server.add(FILE, DATA, "drop", times=1)
    result = fetch_source(source(url), config(tmp_path))
    assert result.path.read_bytes() == DATA
    first, second = server.requests_for(FILE)
    assert first.range is None and second.status == 206
    assert second.range == f"bytes={len(DATA) // 2}-"


def test_server_without_range_support_restarts_from_zero(server, tmp_path):
    url = server.add(FILE, DATA, "drop", times=1, ranges=False)
    result = fetch_source(source(url), config(tmp_path))
    assert result.path.read_bytes() == DATA
    first, second = server.requests_for(FILE)
    assert second.range is not None and second.status == 200   # asked, was refused, restarted


def test_transfer_interrupted_in_an_earlier_run_is_resumed(server, tmp_path):
    url = server.add(FILE, DATA)
    part = tmp_path / "cache/downloads/.partial" / f"{FILE}.part"
    part.parent.mkdir(parents=True)
    part.write_bytes(DATA[:100_000])
    assert fetch_source(source(url), config(tmp_path)).path.read_bytes() == DATA
    assert server.ranges(FILE) == ["bytes=100000-"] and partials(tmp_path) == []


def test_stale_partial_with_wrong_bytes_gets_one_clean_retry(server, tmp_path):
    url = server.add(FILE, DATA)
    part = tmp_path / "cache/downloads/.partial" / f"{FILE}.part"
    part.parent.mkdir(parents=True)
    part.write_bytes(b"\0" * 1000)
    assert fetch_source(source(url), config(tmp_path)).path.read_bytes() == DATA
    assert server.ranges(FILE) == ["bytes=1000-", None]


def test_stall_midway_times_out_and_resumes(server, tmp_path):
    url = server.add(FILE, DATA, "stall", times=1)
    start = time.monotonic()
    result = fetch_source(source(url), config(tmp_path, read_timeout=0.5))
    assert result.path.read_bytes() == DATA and time.monotonic() - start < 3
    assert server.ranges(FILE)[1] == f"bytes={len(DATA) // 2}-"


def test_slow_server_times_out_then_next_location(server, tmp_path):
    slow = server.add("slow/" + FILE, DATA, "slow")
    fine = server.add("fine/" + FILE, DATA)
    start = time.monotonic()
    result = fetch_source(source(slow, fine), config(tmp_path, retries=1, read_timeout=0.3))
    assert result.how == fine and time.monotonic() - start < 3
    assert len(server.requests_for("slow/" + FILE)) == 2          # retried once, then moved on


def test_server_errors_are_retried_with_backoff(server, tmp_path):
    url = server.add(FILE, DATA, "500", times=2)
    cfg = config(tmp_path, retries=2)
    start = time.monotonic()
    assert fetch_source(source(url), cfg).path.read_bytes() == DATA
    assert len(server.requests_for(FILE)) == 3
    assert time.monotonic() - start >= 0.05 + 0.1                 # backoff doubles


def test_content_encoding_gzip_is_stored_as_is(server, tmp_path):
    tarball = gzip.compress(DATA, mtime=0)
    url = server.add(FILE, tarball, "gzip")
    result = fetch_source(source(url, sha=hashlib.sha256(tarball).hexdigest()), config(tmp_path))
    assert result.path.read_bytes() == tarball


def test_corrupt_download_is_rejected_and_names_both_sha256s_and_the_url(server, tmp_path):
    url = server.add(FILE, DATA, "corrupt")
    cfg = config(tmp_path)
    with pytest.raises(FetchError) as info:
        fetch_source(source(url), cfg)
    text = info.value.render()
    actual = hashlib.sha256(bytes([DATA[0] ^ 0xFF]) + DATA[1:]).hexdigest()
    assert "sha256 mismatch" in text and SHA in text and actual in text and url in text
    assert done_files(tmp_path) == ([], []) and partials(tmp_path) == []


def test_corrupt_download_never_replaces_a_good_file(server, tmp_path):
    good = server.add("good/" + FILE, DATA)
    bad = server.add("bad/" + FILE, DATA, "corrupt")
    cfg = config(tmp_path)
    src = source(good)
    path = fetch_source(src, cfg).path
    before = path.stat()
    with pytest.raises(FetchError, match="sha256 mismatch"):
        download(bad, src.primary, cfg)
    assert path.read_bytes() == DATA and path.stat().st_mtime_ns == before.st_mtime_ns
    assert cached(src, cfg).how == "cache" and partials(tmp_path) == []


def test_everything_fails_lists_each_place_and_what_to_do(server, tmp_path):
    server.add("corrupt/" + FILE, DATA, "corrupt")
    cfg = config(tmp_path, mirrors=["http://127.0.0.1:1/refused", (tmp_path / "nomirror").as_uri()],
                 retries=0)
    src = source(f"{server.url}/missing/{FILE}", f"{server.url}/corrupt/{FILE}")
    with pytest.raises(FetchError) as info:
        fetch_source(src, cfg)
    text = info.value.render()
    lines = [l for l in text.splitlines() if l.startswith("  - ")]
    assert len(lines) == 5, text
    assert "not in the cache" in lines[0]
    assert "127.0.0.1:1/refused" in lines[1] and "Connection refused" in lines[1]
    assert "nomirror" in lines[2] and "no such file" in lines[2]
    assert "HTTP 404" in lines[3] and "sha256 mismatch" in lines[4]
    assert "add a mirror" in text and "check the network" in text
    assert "Traceback" not in text


def test_offline_uses_cache_and_file_mirrors_and_contacts_nobody(server, tmp_path):
    url = server.add(FILE, DATA)
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    src = source(url, "debian:pkg")
    with pytest.raises(FetchError) as info:
        fetch_source(src, config(tmp_path, offline=True, mirrors=[mirror.as_uri()]))
    text = info.value.render()
    assert str(tmp_path / "cache/downloads" / FILE) in text
    assert f"{mirror.as_uri()}/{FILE}: no such file" in text
    assert f"{url}: not contacted (offline)" in text and "debian:pkg: not contacted" in text
    assert "download.offline: false" in text
    (mirror / FILE).write_bytes(DATA)
    result = fetch_source(src, config(tmp_path, offline=True, mirrors=[mirror.as_uri()]))
    assert result.how == f"{mirror.as_uri()}/{FILE}" and result.path.read_bytes() == DATA
    assert fetch_source(src, config(tmp_path, offline=True)).how == "cache"
    assert server.requests == []


def test_file_url_is_verified_too(tmp_path):
    local = tmp_path / "local.tar.gz"
    local.write_bytes(DATA[:-1])
    with pytest.raises(FetchError, match="sha256 mismatch"):
        fetch_source(source(local.as_uri(), file="local.tar.gz"), config(tmp_path))
    assert done_files(tmp_path) == ([], [])


def test_cached_detects_corruption_and_a_touch_costs_one_hash(server, tmp_path, monkeypatch):
    url = server.add(FILE, DATA)
    cfg = config(tmp_path)
    src = source(url)
    path = fetch_source(src, cfg).path
    hashed = []
    real = dl.sha256_of
    monkeypatch.setattr(dl, "sha256_of", lambda p: hashed.append(p) or real(p))
    assert cached(src, cfg) and hashed == []
    later = path.stat().st_mtime_ns + 5 * 10**9
    os.utime(path, ns=(later, later))
    assert cached(src, cfg) and len(hashed) == 1
    assert cached(src, cfg) and cached(src, cfg) and len(hashed) == 1
    with open(path, "r+b") as fh:                      # same size, different bytes
        fh.write(b"X")
    os.utime(path, ns=(later + 10**9, later + 10**9))
    assert cached(src, cfg) is None and len(hashed) == 2
    assert done_files(tmp_path) == ([], [])            # removed, so the next fetch repairs it
    assert fetch_source(src, cfg).path.read_bytes() == DATA


def test_cached_drops_a_file_whose_size_changed_without_hashing(server, tmp_path, monkeypatch):
    cfg = config(tmp_path)
    src = source(server.add(FILE, DATA))
    path = fetch_source(src, cfg).path
    monkeypatch.setattr(dl, "sha256_of", lambda p: pytest.fail("hashed"))
    with open(path, "ab") as fh:
        fh.write(b"more")
    assert cached(src, cfg) is None and not path.exists()


def test_cached_is_cheap(server, tmp_path):
    cfg = config(tmp_path)
    src = source(server.add(FILE, DATA))
    fetch_source(src, cfg)
    start = time.perf_counter()
    for _ in range(2000):
        assert cached(src, cfg)
    assert time.perf_counter() - start < 0.8      # ~0.15 s here; room for a busy CI machine


def test_parallel_fetches_of_one_file_download_it_once(server, tmp_path):
    url = server.add(FILE, DATA)
    cfg = config(tmp_path)
    results = []
    threads = [threading.Thread(target=lambda: results.append(fetch_source(source(url), cfg)))
               for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 4 and all(r.path.read_bytes() == DATA for r in results)
    assert len(server.requests_for(FILE)) == 1


# ---------------------------------------------------------------- containment (issue 13)

@pytest.mark.parametrize("name", ["../escaped.tar.gz", "/tmp/escaped.tar.gz", "..", ".verified", ""])
def test_the_cache_never_writes_outside_downloads(tmp_path, name):
    """Recipes' file names are checked when loading; the downloader refuses them again."""
    src = tmp_path / "served.tar.gz"
    src.write_bytes(DATA)
    with pytest.raises(FetchError):
        fetch_source(source(f"file://{src}", file=name), config(tmp_path))
    assert not (tmp_path / "cache" / "escaped.tar.gz").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cache", "served.tar.gz"] or \
        sorted(p.name for p in tmp_path.iterdir()) == ["served.tar.gz"]


def test_a_partial_folder_that_is_a_link_is_refused(tmp_path):
    src = tmp_path / "served.tar.gz"
    src.write_bytes(DATA)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (tmp_path / "cache" / "downloads").mkdir(parents=True)
    os.symlink(elsewhere, tmp_path / "cache" / "downloads" / ".partial")
    with pytest.raises(FetchError) as info:
        fetch_source(source(f"file://{src}"), config(tmp_path))
    assert "leads outside" in info.value.message
    assert list(elsewhere.iterdir()) == []
