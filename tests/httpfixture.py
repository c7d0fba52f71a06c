"""A real HTTP/1.1 server on 127.0.0.1 (random port) for tests, misbehaving on request.

    with HttpFixture(directory=tmp_path / "served") as srv:   # directory is optional
        srv.add("pkg-1.0.tar.gz", data)                # served at srv.url + "/pkg-1.0.tar.gz"
        srv.add("big.tar.gz", data, "drop", times=1)   # the first request misbehaves
        srv.add("old.tar.gz", data, ranges=False)      # a server without Range support
        ... srv.requests ... srv.ranges("big.tar.gz") ...

Files come from `add()` (bytes in memory) or, for other paths, from `directory`, so a
test can write generated tarballs to disk and have them served with the same Range
support (unless ranges=False: then a Range header is ignored, 200 + the whole file).
Behaviours (per path, for the next `times` requests, or always if times=None):
  "404"          not found
  "500"          internal server error
  "drop"         send headers and half the body, then close the connection
  "slow"         wait `slow_seconds` before answering at all
  "stall"        send half the body, then wait `slow_seconds` before the rest
  "corrupt"      one byte flipped
  "gzip"         add `Content-Encoding: gzip` (for .gz files, as some servers do)
"""
import http.server
import threading
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path

BEHAVIOURS = {"404", "500", "drop", "slow", "stall", "corrupt", "gzip"}


@dataclass
class Request:
    method: str
    path: str                      # without the leading "/", unquoted
    range: str = None              # the Range header as sent
    status: int = None             # what the fixture answered
    headers: dict = field(default_factory=dict)


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    fixture = None

    def handle_error(self, request, client_address):
        # Clients that time out and hang up on purpose are the point of these tests.
        pass


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def do_HEAD(self):
        self._serve(body=False)

    def do_GET(self):
        self._serve(body=True)

    def _serve(self, body):
        fx = self.server.fixture
        path = urllib.parse.unquote(urllib.parse.urlsplit(self.path).path).lstrip("/")
        req = Request(self.command, path, self.headers.get("Range"), headers=dict(self.headers))
        with fx._lock:
            fx.requests.append(req)
            behaviour = fx._take(path)
        data = fx._data(path)
        if behaviour == "slow":
            fx._stop.wait(fx.slow_seconds)
        if data is None or behaviour in ("404", "500"):
            req.status = 500 if behaviour == "500" else 404
            self.send_response(req.status)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        if behaviour == "corrupt":
            data = bytes([data[0] ^ 0xFF]) + data[1:]
        start = _range_start(req.range, len(data))
        ranges = path not in fx.no_ranges
        if not ranges:
            start = None
        if start is not None and start >= len(data) > 0:
            req.status = 416
            self.send_response(416)
            self.send_header("Content-Range", f"bytes */{len(data)}")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        payload = data[start or 0:]
        req.status = 206 if start else 200
        self.send_response(req.status)
        if start:
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        if ranges:
            self.send_header("Accept-Ranges", "bytes")
        if behaviour == "gzip":
            self.send_header("Content-Encoding", "gzip")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        if not body:
            return
        if behaviour in ("drop", "stall"):
            self.wfile.write(payload[: len(payload) // 2])
            self.wfile.flush()
            if behaviour == "stall":
                fx._stop.wait(fx.slow_seconds)
            else:
                self.close_connection = True
                return
            payload = payload[len(payload) // 2:]
        self.wfile.write(payload)


def _range_start(header, size):
    # Only the single open-ended form the downloader sends: "bytes=N-".
    if not header or not header.startswith("bytes="):
        return None
    first = header[6:].split(",")[0].split("-")[0].strip()
    return int(first) if first.isdigit() else None


class HttpFixture:
    def __init__(self, directory=None, slow_seconds=5.0):
        self.directory = Path(directory) if directory else None
        self.slow_seconds = slow_seconds
        self.files = {}
        self.behaviours = {}           # path -> [behaviour, remaining times or None]
        self.no_ranges = set()
        self.requests = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self.httpd = _Server(("127.0.0.1", 0), _Handler)
        self.httpd.fixture = self
        self._thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05},
                                        daemon=True)
        self._thread.start()

    @property
    def url(self):
        return f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def add(self, path, data, behaviour=None, times=None, ranges=True):
        """Serve bytes at /<path>; optionally misbehave on it (see module doc)."""
        self.files[path.lstrip("/")] = bytes(data)
        if not ranges:
            self.no_ranges.add(path.lstrip("/"))
        if behaviour:
            self.behave(path, behaviour, times)
        return f"{self.url}/{path.lstrip('/')}"

    def behave(self, path, behaviour, times=None):
        """Set (or with behaviour=None clear) how /<path> is answered."""
        path = path.lstrip("/")
        if behaviour is None:
            self.behaviours.pop(path, None)
            return
        if behaviour not in BEHAVIOURS:
            raise ValueError(f"unknown behaviour {behaviour!r}; one of {sorted(BEHAVIOURS)}")
        self.behaviours[path] = [behaviour, times]

    def _take(self, path):
        entry = self.behaviours.get(path)
        if not entry:
            return None
        behaviour, times = entry
        if times is not None:
            if times <= 0:
                return None
            entry[1] = times - 1
        return behaviour

    def _data(self, path):
        if path in self.files:
            return self.files[path]
        if self.directory is not None:
            target = (self.directory / path).resolve()
            if self.directory.resolve() in target.parents and target.is_file():
                return target.read_bytes()
        return None

    def requests_for(self, path):
        return [r for r in self.requests if r.path == path.lstrip("/")]

    def ranges(self, path):
        """The Range headers sent for /<path>, in order (None for plain requests)."""
        return [r.range for r in self.requests_for(path)]

    def close(self):
        self._stop.set()               # wake handlers sleeping in "slow"/"stall"
        self.httpd.shutdown()
        self.httpd.server_close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def serve_directory(path):
    """Serve a folder over HTTP for the rest of the test session; returns the base URL."""
    return HttpFixture(directory=path).url
