"""Downloads: a source file lands in cache/downloads/ only once its sha256 matched.

Order for one source: the verified cache, then for each alternative in turn every
config mirror (`<mirror>/<file>`) and the alternative's own locations. A candidate is
written to cache/downloads/.partial/<file>.part (an interrupted transfer is resumed with
HTTP Range where the server allows it), verified, and only then renamed into place, so
whatever sits in downloads/ is known good and a bad transfer never replaces a good file.

cache/downloads/.verified/<file>.json records (sha256, size, mtime_ns) of a verified
file, which keeps the up-to-date check that runs on every `doit` down to a stat().
"""
import fcntl
import json
import os
import re
import shutil
import sys
import threading
import time
import urllib.parse
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import requests
import urllib3

from tasks.core import files
from tasks.core.errors import FetchError
from tasks.core.log import say

CHUNK = 1 << 16


@dataclass(frozen=True)
class FetchResult:
    alternative: object      # the recipes.Alternative obtained
    path: Path               # cfg.cache/downloads/<alternative.file>
    how: str                 # "cache", or the URL the file came from


# ---------------------------------------------------------------- paths and records

def downloads_dir(cfg):
    return Path(cfg.cache) / "downloads"


def in_downloads(cfg, file, sub="", suffix="", write=False):
    """downloads/[sub/]<file><suffix>, refused unless it is a plain name and, for a write
    (write=True: a resolve, not on the cheap read path), its folder stays in downloads/.
    Recipes' file names are checked when loading (plain names); this is the second line."""
    base = downloads_dir(cfg)
    if not file or file in (".", "..") or "/" in file or "\0" in file or file.startswith("."):
        raise FetchError(f"refusing the file name {file!r}: not a plain file name")
    folder = base / sub if sub else base
    path = folder / f"{file}{suffix}"
    if write and folder.exists() and folder.resolve() != (base.resolve() / sub if sub else base.resolve()):
        raise FetchError(f"refusing to use {folder}: it leads outside {base} (a link?)")
    return path


def _record_path(cfg, file, write=False):
    return in_downloads(cfg, file, ".verified", ".json", write)


def partial_path(cfg, file):
    return in_downloads(cfg, file, ".partial", ".part", write=True)


def sha256_of(path):
    return files.sha256_file(path)


def _write_record(cfg, path, sha256):
    st = path.stat()
    files.write_atomic(_record_path(cfg, path.name, write=True),
                  json.dumps({"sha256": sha256, "size": st.st_size, "mtime_ns": st.st_mtime_ns}))


def _forget(cfg, file):
    in_downloads(cfg, file, write=True).unlink(missing_ok=True)
    _record_path(cfg, file, write=True).unlink(missing_ok=True)


def is_verified(cfg, alt):
    """True if downloads/<alt.file> holds alt's content; removes it if it provably does not."""
    path = in_downloads(cfg, alt.file)
    try:
        st = os.stat(path)
    except OSError:
        return False
    try:
        with open(_record_path(cfg, alt.file)) as fh:
            record = json.load(fh)
    except (OSError, ValueError):
        record = {}
    if record.get("sha256") == alt.sha256 and record.get("size") == st.st_size:
        if record.get("mtime_ns") == st.st_mtime_ns:
            return True
    elif record.get("sha256") == alt.sha256:
        # Same pin, different size: the content changed, no need to hash to know that.
        _forget(cfg, alt.file)
        return False
    # Touched, copied in by hand, or pinned to another sha256 since: hash once, and
    # on success record the new mtime so the next run is a stat() again.
    try:
        actual = sha256_of(path)
    except OSError:
        return False         # unreadable (a folder, no permission): not ours to delete
    if actual == alt.sha256:
        _write_record(cfg, path, alt.sha256)
        return True
    _forget(cfg, alt.file)
    return False


def cached(source, cfg):
    """The verified cached file of the first alternative that has one, else None. Cheap."""
    for alt in source.alternatives:
        if is_verified(cfg, alt):
            return FetchResult(alt, in_downloads(cfg, alt.file), "cache")
    return None


_HASHED = {}                   # path -> (size, mtime_ns) whose content was hashed this run
_HASHED_LOCK = threading.Lock()


def checked(source, cfg):
    """Like cached(), for a file about to be used: its content is hashed once per run
    (the record only trusts size and mtime). A file that no longer matches its pin (bit
    rot, an edit that kept size and mtime) is discarded and fetched again, saying so."""
    hit = cached(source, cfg)
    if hit is None:
        return None
    st = os.stat(hit.path)
    signature = (st.st_size, st.st_mtime_ns)
    with _HASHED_LOCK:
        if _HASHED.get(str(hit.path)) == signature:
            return hit
    actual = sha256_of(hit.path)
    if actual != hit.alternative.sha256:
        say(f"warning: {hit.path}: its content no longer matches the pinned sha256 (now "
            f"{actual[:16]}…, pinned {hit.alternative.sha256[:16]}…) although its size and "
            "mtime did not change (bit rot, or an edit in place); discarded, fetching it again.")
        _forget(cfg, hit.alternative.file)
        hit = fetch_source(source, cfg, progress=False)
        st = os.stat(hit.path)
        signature = (st.st_size, st.st_mtime_ns)
    with _HASHED_LOCK:
        _HASHED[str(hit.path)] = signature
    return hit


# ---------------------------------------------------------------- fetch

def locations(alt, cfg):
    """Where alt is looked for, in order: each mirror, then the alternative's own URLs."""
    out = []
    for mirror in cfg.mirrors:
        if mirror.startswith("file://"):
            out.append(f"{mirror.rstrip('/')}/{alt.file}")
        else:
            out.append(f"{mirror.rstrip('/')}/{urllib.parse.quote(alt.file, safe='+')}")
    out.extend(alt.urls)
    return out


def fetch_source(source, cfg, progress=None):
    """Return a verified copy of one of source's alternatives, downloading it if needed.

    progress: None shows a bar on stderr when stderr is a terminal; True/False force it.
    Raises FetchError listing every place tried and why each failed.
    """
    hit = cached(source, cfg)
    if hit:
        return hit
    offline = bool(cfg.download.get("offline"))
    tried = [(str(downloads_dir(cfg) / alt.file), "not in the cache") for alt in source.alternatives]
    for alt in source.alternatives:
        for location in locations(alt, cfg):
            if offline and not location.startswith("file://"):
                tried.append((location, "not contacted (offline)"))
                continue
            url = location
            try:
                with _file_lock(cfg, alt.file):
                    # A parallel task may have fetched the same file while we waited.
                    if is_verified(cfg, alt):
                        return FetchResult(alt, in_downloads(cfg, alt.file), "cache")
                    if not location.startswith("debian:"):
                        return FetchResult(alt, download(url, alt, cfg, progress), url)
                    from tasks.sources.debian import resolve
                    urls, unlisted = resolve(location[len("debian:"):], alt, cfg)
                    if unlisted:
                        tried.append((location, " ".join(unlisted.split()) + " (trying Debian's pool)"))
                    for url in urls:
                        try:
                            return FetchResult(alt, download(url, alt, cfg, progress), url)
                        except FetchError as exc:
                            tried.append((f"{location} ({url})", " ".join(exc.message.split())))
            except FetchError as exc:
                where = location if url == location else f"{location} ({url})"
                tried.append((where, " ".join(exc.message.split())))
            except OSError as exc:       # the cache itself is unwritable, full, ...
                tried.append((location, f"{exc.strerror}: {exc.filename}"))
    raise _give_up(source, tried, offline)


def _give_up(source, tried, offline):
    lines = "\n".join(f"  - {where}: {why}" for where, why in tried)
    if offline:
        return FetchError(
            f"cannot get {source.id}: offline mode looks only at the cache and file:// "
            f"locations, and none has it. Places looked:\n{lines}\n"
            "To do: set download.offline: false in config.yaml (and unset DAPPDEPS_OFFLINE) "
            "to download it, or add a file:// mirror that holds it.")
    return FetchError(
        f"cannot get {source.id}: every location failed. Places tried:\n{lines}\n"
        "To do: check the network (and proxy settings), add a mirror that has the file "
        "(config.yaml `mirrors`, e.g. file:///srv/sources), or fix the recipe's URLs/sha256.")


@contextmanager
def _file_lock(cfg, file):
    """One writer per file: parallel fetch tasks sharing a file would share its .part."""
    lock = partial_path(cfg, file).with_suffix(".lock")
    lock.parent.mkdir(parents=True, exist_ok=True)
    with open(lock, "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        yield


def download(url, alt, cfg, progress=None):
    """Fetch url into the partial file, verify it, move it into downloads/; FetchError if not."""
    part = partial_path(cfg, alt.file)
    part.parent.mkdir(parents=True, exist_ok=True)
    if url.startswith("file://"):
        _copy_file_url(url, part)
        reused = False
    elif url.startswith(("http://", "https://")):
        reused = _http_download(url, part, cfg.download, progress, alt.file)
    else:
        raise FetchError(f"unsupported location {url} (use http://, https://, file:// or debian:)")
    actual = sha256_of(part)
    if actual != alt.sha256 and reused:
        # The bytes kept from an earlier, interrupted transfer may be what is wrong:
        # give this location one clean try before blaming it.
        part.unlink(missing_ok=True)
        _http_download(url, part, cfg.download, progress, alt.file)
        actual = sha256_of(part)
    if actual != alt.sha256:
        part.unlink(missing_ok=True)
        raise FetchError(f"sha256 mismatch for {alt.file} from {url}: expected {alt.sha256}, "
                         f"got {actual}; the download was discarded (the recipe's pin or the "
                         f"server's file is wrong)")
    dest = in_downloads(cfg, alt.file, write=True)
    os.replace(part, dest)
    _write_record(cfg, dest, alt.sha256)
    return dest


def _copy_file_url(url, part):
    parsed = urllib.parse.urlparse(url)
    if parsed.netloc not in ("", "localhost"):
        raise FetchError(f"file:// URL with a host ({parsed.netloc}); use file:///absolute/path")
    src = Path(urllib.parse.unquote(parsed.path))
    try:
        shutil.copyfile(src, part)
    except FileNotFoundError:
        raise FetchError(f"no such file {src}") from None
    except OSError as exc:
        raise FetchError(f"cannot copy {src}: {exc.strerror}") from None


# ---------------------------------------------------------------- HTTP

class _Permanent(Exception):
    """Retrying the same URL will not help (404, 403, a bad URL, a full disk)."""


class _Transient(Exception):
    """Worth another try after a pause (timeouts, dropped connections, 5xx)."""


# Only these are the network's fault; anything else is a bug and should show as one.
_NETWORK_ERRORS = (requests.RequestException, urllib3.exceptions.HTTPError, ConnectionError,
                   TimeoutError)
_BAD_URL = (requests.exceptions.InvalidURL, requests.exceptions.MissingSchema,
            requests.exceptions.InvalidSchema)


def _http_download(url, part, settings, progress, name):
    """Retry with exponential backoff; returns True if bytes of an earlier transfer were kept."""
    timeout = (float(settings.get("connect_timeout", 10.0)), float(settings.get("read_timeout", 60.0)))
    attempts = int(settings.get("retries", 3)) + 1
    delay = float(settings.get("backoff", 1.0))
    reused = False
    why = "no attempt"
    for attempt in range(attempts):
        if attempt:
            time.sleep(delay)
            delay *= 2
        try:
            reused = _http_once(url, part, timeout, progress, name) or reused
            return reused
        except _Permanent as exc:
            raise FetchError(str(exc)) from None
        except _Transient as exc:
            why = str(exc)
        except _BAD_URL as exc:
            raise FetchError(f"bad URL: {exc}") from None
        except requests.exceptions.ConnectTimeout:
            why = f"connect timed out after {timeout[0]:g} s"
        except (requests.exceptions.ReadTimeout, urllib3.exceptions.ReadTimeoutError, TimeoutError):
            why = f"no data for {timeout[1]:g} s (read timeout)"
        except _NETWORK_ERRORS as exc:
            why = f"connection failed: {_short(exc)}"
    tries = f"{attempts} attempt{'s' if attempts != 1 else ''}"
    raise FetchError(f"{why} (gave up after {tries})")


def _http_once(url, part, timeout, progress, name):
    have = part.stat().st_size if part.exists() else 0
    # identity: a server that adds Content-Encoding: gzip to a .tar.gz must not get it
    # unpacked on the way (the sha256 is of the file as stored).
    headers = {"Accept-Encoding": "identity"}
    if have:
        headers["Range"] = f"bytes={have}-"
    with requests.get(url, stream=True, timeout=timeout, headers=headers) as resp:
        status = resp.status_code
        if status == 416 and have:
            # Our partial is as long as the file, or longer: start over cleanly.
            part.unlink(missing_ok=True)
            raise _Transient("server refused to resume (HTTP 416); starting over")
        if status in (404, 410):
            raise _Permanent(f"not found (HTTP {status})")
        if status in (408, 429) or status >= 500:
            raise _Transient(f"HTTP {status} {resp.reason}")
        if status >= 400:
            raise _Permanent(f"HTTP {status} {resp.reason}")
        if status == 206:
            start, total = _content_range(resp.headers.get("Content-Range", ""))
            if start != have:
                part.unlink(missing_ok=True)
                raise _Transient(f"server resumed at byte {start}, not {have}; starting over")
            mode, kept = "ab", have
        elif status == 200:
            mode, kept = "wb", 0
            total = _int(resp.headers.get("Content-Length"))
        else:
            raise _Permanent(f"unexpected HTTP {status} {resp.reason}")
        bar = _progress_bar(progress, name, total, kept)
        try:
            _copy_body(resp, part, mode, bar)
        finally:
            if bar is not None:
                bar.close()
    size = part.stat().st_size
    if total is not None and size != total:
        raise _Transient(f"connection closed after {size} of {total} bytes")
    return kept > 0


def _copy_body(resp, part, mode, bar):
    raw = resp.raw
    if hasattr(raw, "read1"):
        # Whatever has arrived, at once: a timeout then loses nothing already received,
        # so the resume starts exactly where the data stopped.
        read = lambda: raw.read1(CHUNK, decode_content=False)  # noqa: E731
    else:                                    # urllib3 < 2.1
        read = lambda: raw.read(CHUNK, decode_content=False)   # noqa: E731
    with open(part, mode) as fh:
        while True:
            chunk = read()                   # network errors propagate from here ...
            if not chunk:
                break
            try:                             # ... disk errors from here, and are final
                fh.write(chunk)
            except OSError as exc:
                raise _Permanent(f"cannot write {part}: {exc.strerror}") from None
            if bar is not None:
                bar.update(len(chunk))
        fh.flush()
        os.fsync(fh.fileno())


def _content_range(value):
    # "bytes 100-199/200" -> (100, 200); an unknown total ("*") -> (100, None)
    try:
        span, _, total = value.split(" ", 1)[1].partition("/")
        return int(span.split("-")[0]), _int(total)
    except (IndexError, ValueError):
        return None, None


def _int(value):
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _progress_bar(progress, name, total, initial):
    show = sys.stderr.isatty() if progress is None else bool(progress)
    if not show:
        return None
    from tqdm import tqdm
    return tqdm(total=total, initial=initial, unit="B", unit_scale=True, unit_divisor=1024,
                desc=name, file=sys.stderr, leave=False, dynamic_ncols=True)


def _short(exc):
    # requests nests the OS's reason deep inside pool/retry wrappers; that reason
    # ("[Errno 111] Connection refused") is the useful part.
    text = " ".join(str(exc).split())
    errno = re.findall(r"\[Errno -?\d+\] [^'\")]+", text)
    if errno:
        return errno[-1].strip()
    return text if len(text) <= 200 else text[:197] + "..."
