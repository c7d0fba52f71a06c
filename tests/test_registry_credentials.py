"""Registry credentials go only to the registry's own origin, over https or loopback
(docs/security.md). Two real HTTP servers on 127.0.0.1: the "registry" and, on a second
port, a "foreign" host posing as its token realm or upload location."""
import base64
import http.server
import threading

import pytest

from tasks.ship import registry

USER, PASSWORD = "alice", "s3cret-pw"


class Recorder(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, answer):
        self.seen = []            # (method, path, Authorization header or None)
        self.answer = answer      # (handler, method) -> (status, headers, body)
        super().__init__(("127.0.0.1", 0), _Handler)
        threading.Thread(target=self.serve_forever, daemon=True).start()

    @property
    def url(self):
        return f"http://127.0.0.1:{self.server_address[1]}"


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def _any(self):
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)
        self.server.seen.append((self.command, self.path, self.headers.get("Authorization")))
        status, headers, body = self.server.answer(self, self.command)
        self.send_response(status)
        for key, value in headers.items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_HEAD = do_POST = do_PUT = _any


@pytest.fixture
def servers():
    made = []

    def make(answer):
        srv = Recorder(answer)
        made.append(srv)
        return srv
    yield make
    for srv in made:
        srv.shutdown()
        srv.server_close()


def _ok(handler, method):
    return 200, {"Content-Type": "application/json"}, b'{"token": "t0ken"}'


def test_foreign_token_realm_never_gets_the_password(servers):
    foreign = servers(_ok)

    def reg_answer(handler, method):
        if handler.headers.get("Authorization") == "Bearer t0ken":
            return 200, {}, b"{}"
        return 401, {"WWW-Authenticate": f'Bearer realm="{foreign.url}/token",service="x"'}, b""
    reg = servers(reg_answer)
    client = registry.Registry(reg.url, USER, PASSWORD)
    client.ping()
    assert foreign.seen, "the realm was asked for a token"
    assert all(auth is None for _m, _p, auth in foreign.seen), foreign.seen
    # and the token it handed out goes back only to the registry itself
    assert any(auth == "Bearer t0ken" for _m, _p, auth in reg.seen)


def test_own_realm_gets_basic_credentials(servers):
    def reg_answer(handler, method):
        if handler.path.startswith("/token"):
            expected = "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
            assert handler.headers.get("Authorization") == expected
            return _ok(handler, method)
        if handler.headers.get("Authorization") == "Bearer t0ken":
            return 200, {}, b"{}"
        port = handler.server.server_address[1]
        return 401, {"WWW-Authenticate": f'Bearer realm="http://127.0.0.1:{port}/token"'}, b""
    reg = servers(reg_answer)
    registry.Registry(reg.url, USER, PASSWORD).ping()
    assert any(p.startswith("/token") and a for _m, p, a in reg.seen)


def test_foreign_upload_location_gets_no_authorization(servers):
    foreign = servers(lambda h, m: (201, {}, b""))

    def reg_answer(handler, method):
        if handler.headers.get("Authorization") is None:
            return 401, {"WWW-Authenticate": 'Basic realm="r"'}, b""
        if method == "HEAD":
            return 404, {}, b""
        if method == "POST":
            return 202, {"Location": f"{foreign.url}/upload/1"}, b""
        return 500, {}, b""
    reg = servers(reg_answer)
    client = registry.Registry(reg.url, USER, PASSWORD)
    client.upload_blob("demo/x", "sha256:" + "0" * 64, 3, lambda: b"abc")
    assert [m for m, _p, _a in foreign.seen] == ["PUT"]
    assert all(auth is None for _m, _p, auth in foreign.seen), foreign.seen


def test_credentials_refused_over_plain_http_to_another_host():
    with pytest.raises(registry.AuthFailed, match="plain http"):
        registry.Registry("http://registry.example.invalid:5000", USER, PASSWORD)
    # anonymous access over http stays possible (a public mirror), and https is fine
    registry.Registry("http://registry.example.invalid:5000")
    registry.Registry("https://registry.example.invalid", USER, PASSWORD)


@pytest.mark.parametrize("url", ["http://alice:pw@127.0.0.1:5000", "https://token@reg.example"])
def test_credentials_in_urls_are_refused_and_not_echoed(url):
    with pytest.raises(registry.AuthFailed) as info:
        registry.Registry(url)
    assert "pw" not in str(info.value) and "token@" not in str(info.value)
