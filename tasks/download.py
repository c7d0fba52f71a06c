"""Downloads: every source file reaches cache/downloads/ only after its sha256 matched.

Order for one source: the cache (already verified) -> each alternative, in order:
config mirrors (`<mirror>/<file>`), then the alternative's own locations. A candidate
is streamed to cache/downloads/.partial/<file>.part (resumed with HTTP Range where
the server allows), verified, then renamed into place; a mismatch never replaces a
good file. A small record (.verified/<file>.json: sha256, size, mtime_ns) lets the
up-to-date check skip hashing big tarballs on every run.
"""
import hashlib
import json
import os
import shutil
import sys
import time
import urllib.parse
from dataclasses import dataclass
from pathlib import Path

import requests

from .errors import FetchError
from .manifest import sha256_file, write_atomic

# Small enough that a dropped connection loses little (urllib3 drops a short last read).
CHUNK = 1 << 16


@dataclass
class FetchResult:
    alternative: object
    path: Path
    how: str


def downloads_dir(cfg):
    return Path(cfg.cache) / "downloads"


def _record_path(cfg, file):
    return downloads_dir(cfg) / ".verified" / f"{file}.json"


def _write_record(cfg, path, sha256):
    st = path.stat()
    write_atomic(_record_path(cfg, path.name),
                 json.dumps({"sha256": sha256, "size": st.st_size, "mtime_ns": st.st_mtime_ns}))


def _check_cached(cfg, alt):
    path = downloads_dir(cfg) / alt.file
    try:
        st = path.stat()
    except OSError:
        return False
    try:
        record = json.loads(_record_path(cfg, alt.file).read_text())
    except (OSError, ValueError):
        record = None
    if record and record.get("sha256") == alt.sha256 and record.get("size") == st.st_size:
        if record.get("mtime_ns") == st.st_mtime_ns:
            return True
    # Touched, replaced or never recorded: hash once, then trust (mtime, size) again.
    if sha256_file(path) == alt.sha256:
        _write_record(cfg, path, alt.sha256)
        return True
    path.unlink(missing_ok=True)
    _record_path(cfg, alt.file).unlink(missing_ok=True)
    return False


def cached(source, cfg):
    """A verified file of one of the source's alternatives, or None. Cheap."""
    for alt in source.alternatives:
        if _check_cached(cfg, alt):
            return FetchResult(alt, downloads_dir(cfg) / alt.file, "cache")
    return None


def candidates(source, cfg):
    """(alternative, location) in the order they are tried."""
    offline = cfg.download["offline"]
    for alt in source.alternatives:
        for mirror in cfg.mirrors:
            url = f"{mirror.rstrip('/')}/{urllib.parse.quote(alt.file)}"
            if not offline or url.startswith("file://"):
                yield alt, url
        for url in alt.urls:
            if not offline or url.startswith("file://"):
                yield alt, url


def fetch_source(source, cfg, progress=None):
    hit = cached(source, cfg)
    if hit:
        return hit
    tried = []
    for alt, location in candidates(source, cfg):
        try:
            url = location
            if location.startswith("debian:"):
                from .debian import Apt
                url = Apt(cfg.cache, cfg.download["apt_refresh_hours"]).locate(location[7:], alt.file)
            path = fetch_file(url, alt, cfg, progress)
            return FetchResult(alt, path, url if url == location else f"{location} ({url})")
        except FetchError as exc:
            tried.append(f"{location}: {exc.message}")
    lines = "\n".join(f"  - {t}" for t in tried) or "  (no location)"
    if cfg.download["offline"]:
        where = "offline mode: only the cache and file:// locations were looked at"
        hint = "Put the file in a file:// mirror, or set download.offline: false."
    else:
        where = "every location failed"
        hint = "Add a mirror (config.yaml `mirrors`), check the network, or fix the recipe's URLs."
    looked = [str(downloads_dir(cfg) / a.file) for a in source.alternatives]
    raise FetchError(f"cannot get {source.id} ({where}). Looked in the cache ({', '.join(looked)}) "
                     f"and tried:\n{lines}\n", hint=hint)


def fetch_file(url, alt, cfg, progress=None):
    """Download one candidate, verify it, move it into place; FetchError if not."""
    dest_dir = downloads_dir(cfg)
    partial = dest_dir / ".partial" / f"{alt.file}.{alt.sha256[:12]}.part"
    partial.parent.mkdir(parents=True, exist_ok=True)
    if url.startswith("file://"):
        src = Path(urllib.parse.unquote(urllib.parse.urlparse(url).path))
        if not src.is_file():
            raise FetchError(f"no such file {src}")
        shutil.copyfile(src, partial)
    else:
        _http_get(url, partial, cfg, progress)
    actual = sha256_file(partial)
    if actual != alt.sha256:
        partial.unlink(missing_ok=True)
        raise FetchError(f"sha256 mismatch for {alt.file} from {url}: expected {alt.sha256}, "
                         f"got {actual}; the download was discarded")
    dest = dest_dir / alt.file
    os.replace(partial, dest)
    _write_record(cfg, dest, alt.sha256)
    return dest


def _http_get(url, partial, cfg, progress):
    settings = cfg.download
    timeout = (settings["connect_timeout"], settings["read_timeout"])
    attempts = settings["retries"] + 1
    delay = settings["backoff"]
    last = None
    for attempt in range(attempts):
        try:
            _stream(url, partial, timeout, progress, alt_name(partial))
            return
        except requests.HTTPError as exc:
            status = exc.response.status_code
            if status in (404, 410, 403, 401):
                raise FetchError(f"HTTP {status}") from None
            last = f"HTTP {status}"
        except requests.Timeout:
            last = f"timed out (connect {timeout[0]} s / read {timeout[1]} s)"
        except (requests.ConnectionError, requests.exceptions.ChunkedEncodingError) as exc:
            last = f"connection failed: {_short(exc)}"
        except OSError as exc:
            raise FetchError(f"cannot write {partial}: {exc.strerror}") from None
        if attempt + 1 < attempts:
            time.sleep(delay)
            delay *= 2
    raise FetchError(f"{last} (after {attempts} attempt{'s' if attempts > 1 else ''})")


def _stream(url, partial, timeout, progress, name):
    have = partial.stat().st_size if partial.exists() else 0
    headers = {"Range": f"bytes={have}-"} if have else {}
    with requests.get(url, stream=True, timeout=timeout, headers=headers) as resp:
        if resp.status_code == 416:          # we already have it all (or a stale partial)
            partial.unlink(missing_ok=True)
            return _stream(url, partial, timeout, progress, name)
        resp.raise_for_status()
        resumed = have and resp.status_code == 206
        mode = "ab" if resumed else "wb"
        total = resp.headers.get("Content-Length")
        total = int(total) + (have if resumed else 0) if total else None
        bar = _progress_bar(progress, name, total, have if resumed else 0)
        try:
            with open(partial, mode) as fh:
                for chunk in resp.iter_content(CHUNK):
                    fh.write(chunk)
                    if bar:
                        bar.update(len(chunk))
        finally:
            if bar:
                bar.close()
        if total is not None and partial.stat().st_size < total:
            raise requests.ConnectionError(f"connection closed after {partial.stat().st_size} of {total} bytes")


def alt_name(partial):
    # <file>.<sha256 prefix>.part -> <file>
    return partial.name.rsplit(".", 2)[0]


def _progress_bar(progress, name, total, initial):
    show = sys.stderr.isatty() if progress is None else progress
    if not show:
        return None
    from tqdm import tqdm
    return tqdm(total=total, initial=initial, unit="B", unit_scale=True, unit_divisor=1024,
                desc=name, file=sys.stderr, leave=False)


def _short(exc):
    text = str(exc)
    return text if len(text) < 160 else text[:157] + "..."
