"""A real HTTP server on 127.0.0.1 for download tests, with misbehaviours on demand.

Routes: /files/<name> serves files; behaviours per name set in `server.behave`:
  "404"        not found
  "drop"       sends half the body, then closes the connection
  "drop-norange" the same, and ignores Range requests (always 200 + full body)
  "slow"       sleeps before answering (longer than the client's read timeout)
  "corrupt"    serves the bytes with one byte flipped
Requests are recorded in `server.log` as (path, range header).
"""
import http.server
import threading
import time


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def do_GET(self):
        srv = self.server
        name = self.path.rsplit("/", 1)[-1]
        rng = self.headers.get("Range")
        srv.log.append((self.path, rng))
        behaviour = srv.behave.get(name, "")
        data = srv.files.get(name)
        if data is None or behaviour == "404":
            self.send_response(404)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        if behaviour == "slow":
            time.sleep(srv.slow_seconds)
        if behaviour == "corrupt":
            data = bytes([data[0] ^ 0xFF]) + data[1:]
        start = 0
        if rng and behaviour != "drop-norange" and rng.startswith("bytes="):
            start = int(rng[6:].split("-")[0])
        if start:
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            self.send_response(200)
        body = data[start:]
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Accept-Ranges", "bytes")
        self.end_headers()
        if behaviour in ("drop", "drop-norange") and srv.drops.get(name, 0) > 0:
            srv.drops[name] -= 1
            self.wfile.write(body[: len(body) // 2])
            self.wfile.flush()
            self.close_connection = True
            return
        self.wfile.write(body)


class HttpFixture:
    def __init__(self):
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self.httpd.daemon_threads = True
        self.httpd.files = {}
        self.httpd.behave = {}
        self.httpd.drops = {}
        self.httpd.log = []
        self.httpd.slow_seconds = 3
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self):
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/files"

    def add(self, name, data, behaviour="", drops=1):
        self.httpd.files[name] = data
        if behaviour:
            self.httpd.behave[name] = behaviour
            self.httpd.drops[name] = drops

    @property
    def log(self):
        return self.httpd.log

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


class _QuietDirHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


def serve_directory(path):
    """Serve a folder over HTTP on 127.0.0.1 (daemon thread); returns the base URL."""
    import functools
    handler = functools.partial(_QuietDirHandler, directory=str(path))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    httpd.daemon_threads = True
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    return f"http://127.0.0.1:{httpd.server_address[1]}"
