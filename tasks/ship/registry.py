"""A small client for the OCI distribution API (registries: CNCF distribution, Harbor,
GHCR, ...), on `requests`. Used by the build cache (buildcache.py) and push:<image>.

What it does: GET/HEAD manifests, GET blobs (streamed to a file, sha256 and size checked
against the descriptor), blob uploads (POST + monolithic PUT, skipped when the blob is
there), PUT manifests; authentication by HTTP Basic or by bearer tokens (the registry's
`WWW-Authenticate: Bearer realm=...` challenge, as Harbor and GHCR do).
Why not oras-py: see docs/buildcache.md ("Client").

Errors are typed so that callers can apply a policy:
  Unavailable   connection refused, timeout, 5xx, or an answer that is not the API
  AuthFailed    401/403 after offering the credentials we have
  Rejected      the registry refused a request (other 4xx)
  Corrupt       content that does not match its digest, size or expected form
"""
import base64
import ipaddress
import hashlib
import re
import threading
import urllib.parse
from pathlib import Path

import requests

from tasks.core.log import say
from tasks.model.schema import DIGEST_RE

MEDIA_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MEDIA_INDEX = "application/vnd.oci.image.index.v1+json"
MEDIA_DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
CHUNK = 1 << 20


class RegistryError(Exception):
    pass


class Unavailable(RegistryError):
    pass


class AuthFailed(RegistryError):
    pass


class Rejected(RegistryError):
    pass


class Corrupt(RegistryError):
    pass


def repository_name(*parts):
    """Join parts into a valid repository name (lowercase; other characters -> '-')."""
    cleaned = []
    for part in parts:
        for seg in str(part).lower().split("/"):
            seg = re.sub(r"[^a-z0-9._-]+", "-", seg)
            seg = re.sub(r"[._-]{2,}", "-", seg).strip("._-")
            if seg:
                cleaned.append(seg)
    return "/".join(cleaned)


def host_of(url):
    """'https://reg.example:5000/x' -> 'reg.example:5000'."""
    return urllib.parse.urlsplit(url).netloc


# ---- the client --------------------------------------------------------------------
def _parse_challenge(header):
    """'Bearer realm="x",service="y",scope="z"' -> ('bearer', {...})."""
    scheme, _, rest = (header or "").strip().partition(" ")
    params = dict(re.findall(r'(\w+)="([^"]*)"', rest))
    return scheme.lower(), params


def origin(url):
    """(scheme, host, port) of a URL: where credentials may go is decided on this."""
    parts = urllib.parse.urlsplit(url)
    port = parts.port or {"https": 443, "http": 80}.get(parts.scheme)
    return parts.scheme, (parts.hostname or "").lower(), port


def is_loopback(host):
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def may_carry_credentials(url):
    """Credentials travel only over https, or over plain http to this machine."""
    scheme, host, _port = origin(url)
    return scheme == "https" or (scheme == "http" and is_loopback(host))


class Registry:
    """One registry. Credentials (Basic, or the bearer tokens bought with them) are sent
    only to the registry's own origin (scheme, host, port), only over https or to
    loopback; a token realm or an upload Location elsewhere gets none."""

    def __init__(self, url, username=None, password=None, connect_timeout=3.0,
                 read_timeout=30.0):
        self.url = url.rstrip("/")
        parts = urllib.parse.urlsplit(self.url)
        if parts.username or parts.password or "@" in parts.netloc:
            raise AuthFailed(f"{_redact(self.url)}: credentials in a registry URL are refused "
                             "(they end up in logs); use the username_env/password_env "
                             "variables or `docker login`")
        if username is not None and not may_carry_credentials(self.url):
            raise AuthFailed(f"{self.url}: refusing to send credentials over plain http to a "
                             "host that is not this machine; use https")
        self.origin = origin(self.url)
        self.username = username
        self.password = password
        self.timeout = (connect_timeout, read_timeout)
        self._local = threading.local()
        self._lock = threading.Lock()
        self._tokens = {}             # scope -> bearer token
        self._basic = False           # the registry asked for Basic once: send it always

    def __str__(self):
        return self.url

    @property
    def session(self):
        if not hasattr(self._local, "session"):
            self._local.session = requests.Session()
        return self._local.session

    # ---- transport -----------------------------------------------------------
    def _auth_header(self, scope, url):
        if origin(url) != self.origin:
            return {}
        with self._lock:
            token = self._tokens.get(scope)
            basic = self._basic
        if token:
            return {"Authorization": f"Bearer {token}"}
        if basic and self.username is not None:
            raw = f"{self.username}:{self.password}".encode()
            return {"Authorization": "Basic " + base64.b64encode(raw).decode()}
        return {}

    def _send(self, method, url, scope, headers=None, data=None, stream=False):
        try:
            return self.session.request(method, url, headers={**(headers or {}),
                                                              **self._auth_header(scope, url)},
                                        data=data, stream=stream, timeout=self.timeout,
                                        allow_redirects=True)
        except requests.Timeout as exc:
            raise Unavailable(f"{url}: no answer within {self.timeout[0]:g}/"
                              f"{self.timeout[1]:g} s ({type(exc).__name__})") from None
        except requests.ConnectionError as exc:
            raise Unavailable(f"{url}: cannot connect ({_short(exc)})") from None
        except requests.RequestException as exc:
            raise Unavailable(f"{url}: {_short(exc)}") from None

    def request(self, method, path, scope="", headers=None, data=None, stream=False,
                ok=(200,), missing=()):
        """One API call; answers 401 challenges once. Returns the response, or None for
        a status in `missing` (e.g. 404). `data` may be bytes or a callable returning a
        fresh body (file objects are consumed by the first attempt)."""
        url = path if path.startswith(("http://", "https://")) else self.url + path
        body = data() if callable(data) else data
        resp = self._send(method, url, scope, headers, body, stream)
        if resp.status_code == 401:
            self._authenticate(resp, scope, url)
            resp.close()
            body = data() if callable(data) else data
            resp = self._send(method, url, scope, headers, body, stream)
        if resp.status_code in ok:
            return resp
        status = resp.status_code
        detail = _errors(resp)
        resp.close()
        if status in missing:
            return None
        if status in (401, 403):
            who = f"user {self.username!r}" if self.username else "anonymous access"
            raise AuthFailed(f"{method} {url}: {status} {detail} ({who} is not allowed)")
        if status >= 500 or status in (408, 429):
            raise Unavailable(f"{method} {url}: {status} {detail}")
        raise Rejected(f"{method} {url}: {status} {detail}")

    def _authenticate(self, resp, scope, url):
        scheme, params = _parse_challenge(resp.headers.get("WWW-Authenticate"))
        if scheme == "basic":
            if self.username is None:
                raise AuthFailed(f"{url}: the registry wants a user name and password, "
                                 "none configured")
            with self._lock:
                self._basic = True
            return
        if scheme != "bearer" or not params.get("realm"):
            raise AuthFailed(f"{url}: 401 with an authentication scheme this client does "
                             f"not speak ({resp.headers.get('WWW-Authenticate')!r})")
        query = {"service": params.get("service", "")}
        if params.get("scope") or scope:
            query["scope"] = params.get("scope") or scope
        realm = params["realm"]
        if not realm.startswith(("https://", "http://")):
            raise AuthFailed(f"{url}: token realm {realm[:80]!r} is not an http(s) URL")
        auth = None
        if self.username is not None:
            if origin(realm) != self.origin or not may_carry_credentials(realm):
                # A realm elsewhere could be anyone's: ask it anonymously (a public
                # repository still works), never with our password.
                say_once(f"warning: {self.url}: token realm {realm} is not the registry's "
                         "own origin; credentials are not sent there")
            else:
                auth = (self.username, self.password)
        try:
            answer = self.session.get(realm, params=query, auth=auth,
                                      timeout=self.timeout)
        except requests.RequestException as exc:
            raise Unavailable(f"token service {params['realm']}: {_short(exc)}") from None
        if answer.status_code in (401, 403):
            raise AuthFailed(f"token service {params['realm']}: {answer.status_code} for "
                             f"{'user ' + repr(self.username) if auth else 'anonymous access'}")
        if answer.status_code != 200:
            raise Unavailable(f"token service {params['realm']}: {answer.status_code}")
        try:
            doc = answer.json()
            token = doc.get("token") or doc["access_token"]
        except (ValueError, KeyError):
            raise Unavailable(f"token service {params['realm']}: no token in its answer"
                              ) from None
        with self._lock:
            self._tokens[scope] = token

    # ---- API -----------------------------------------------------------------
    def ping(self):
        """GET /v2/ (authenticated): raises when the registry is not usable."""
        self.request("GET", "/v2/", scope="registry:catalog:*").close()

    def get_manifest(self, repo, ref, accept=(MEDIA_MANIFEST,)):
        """(bytes, digest) of a manifest, or None when there is no such tag/digest.
        The body's sha256 must equal the registry's Docker-Content-Digest (and the
        digest asked for, when ref is a digest)."""
        resp = self.request("GET", f"/v2/{repo}/manifests/{ref}", scope=f"repository:{repo}:pull",
                            headers={"Accept": ", ".join(accept)}, missing=(404,))
        if resp is None:
            return None
        body = resp.content
        digest = "sha256:" + hashlib.sha256(body).hexdigest()
        said = resp.headers.get("Docker-Content-Digest")
        if said and said != digest:
            raise Corrupt(f"manifest {repo}:{ref} has sha256 {digest}, but the registry "
                          f"names it {said}")
        if ref.startswith("sha256:") and ref != digest:
            raise Corrupt(f"manifest {repo}@{ref} has sha256 {digest}")
        return body, digest

    def manifest_digest(self, repo, ref, accept=(MEDIA_MANIFEST,)):
        """The digest of a tag per HEAD, or None."""
        resp = self.request("HEAD", f"/v2/{repo}/manifests/{ref}", scope=f"repository:{repo}:pull",
                            headers={"Accept": ", ".join(accept)}, missing=(404,))
        if resp is None:
            return None
        resp.close()
        return resp.headers.get("Docker-Content-Digest")

    def blob_bytes(self, repo, descriptor, limit=16 << 20):
        """A small blob's bytes, checked against its descriptor."""
        size = _descriptor_size(descriptor, limit)
        resp = self._get_blob(repo, descriptor)
        with resp:
            body = resp.content
        if len(body) != size or "sha256:" + hashlib.sha256(body).hexdigest() != descriptor["digest"]:
            raise Corrupt(f"blob {repo}@{descriptor['digest']}: content does not match its "
                          f"digest (got {len(body)} bytes, sha256 "
                          f"{hashlib.sha256(body).hexdigest()[:16]}...)")
        return body

    def blob_to_file(self, repo, descriptor, path):
        """Stream a blob into path; sha256 and size must match the descriptor, else the
        file is removed and Corrupt raised."""
        size = _descriptor_size(descriptor, None)
        resp = self._get_blob(repo, descriptor)
        sha = hashlib.sha256()
        got = 0
        path = Path(path)
        try:
            with resp, open(path, "wb") as fh:
                for chunk in resp.iter_content(CHUNK):
                    got += len(chunk)
                    if got > size:
                        break
                    sha.update(chunk)
                    fh.write(chunk)
        except requests.RequestException as exc:
            path.unlink(missing_ok=True)
            raise Unavailable(f"blob {repo}@{descriptor['digest']}: {_short(exc)}") from None
        if got != size or "sha256:" + sha.hexdigest() != descriptor["digest"]:
            path.unlink(missing_ok=True)
            raise Corrupt(f"blob {repo}@{descriptor['digest']}: content does not match its "
                          f"digest ({'more than ' if got > size else ''}{got} bytes of "
                          f"{size}, sha256 {sha.hexdigest()[:16]}...)")
        return path

    def _get_blob(self, repo, descriptor):
        digest = descriptor.get("digest", "")
        if not DIGEST_RE.match(digest):
            raise Corrupt(f"descriptor digest {digest!r} is not a sha256 digest")
        resp = self.request("GET", f"/v2/{repo}/blobs/{digest}", scope=f"repository:{repo}:pull",
                            stream=True, missing=(404,))
        if resp is None:
            raise Corrupt(f"blob {repo}@{digest} is missing (the manifest names it)")
        return resp

    def has_blob(self, repo, digest):
        resp = self.request("HEAD", f"/v2/{repo}/blobs/{digest}",
                            scope=f"repository:{repo}:pull,push", missing=(404,))
        if resp is None:
            return False
        resp.close()
        return True

    def upload_blob(self, repo, digest, size, opener):
        """Upload a blob unless the registry has it. opener() returns bytes or a fresh
        binary file object (streamed). Returns True when it was uploaded."""
        if self.has_blob(repo, digest):
            return False
        scope = f"repository:{repo}:pull,push"
        resp = self.request("POST", f"/v2/{repo}/blobs/uploads/", scope=scope, ok=(202,))
        resp.close()
        location = resp.headers.get("Location")
        if not location:
            raise Rejected(f"POST /v2/{repo}/blobs/uploads/: no Location in the answer")
        location = urllib.parse.urljoin(self.url + "/", location)
        sep = "&" if "?" in location else "?"
        target = f"{location}{sep}digest={urllib.parse.quote(digest)}"
        opened = []

        def body():
            for fh in opened:
                close = getattr(fh, "close", None)
                if close:
                    close()
            fh = opener()
            opened.append(fh)
            return fh
        try:
            self.request("PUT", target, scope=scope, data=body, ok=(201,),
                         headers={"Content-Type": "application/octet-stream",
                                  "Content-Length": str(size)}).close()
        finally:
            for fh in opened:
                close = getattr(fh, "close", None)
                if close:
                    close()
        return True

    def put_manifest(self, repo, ref, body, media_type=MEDIA_MANIFEST):
        """PUT a manifest under a tag; returns its digest (checked against the answer)."""
        digest = "sha256:" + hashlib.sha256(body).hexdigest()
        resp = self.request("PUT", f"/v2/{repo}/manifests/{ref}",
                            scope=f"repository:{repo}:pull,push", data=body, ok=(201, 200),
                            headers={"Content-Type": media_type})
        resp.close()
        said = resp.headers.get("Docker-Content-Digest")
        if said and said != digest:
            raise Corrupt(f"the registry stored manifest {repo}:{ref} as {said}, not {digest}")
        return digest


def _descriptor_size(descriptor, limit):
    size = descriptor.get("size")
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise Corrupt(f"descriptor {descriptor.get('digest')} has no valid size")
    if limit is not None and size > limit:
        raise Corrupt(f"descriptor {descriptor.get('digest')} is {size} bytes, more than "
                      f"the {limit} expected")
    return size


def _errors(resp):
    try:
        errs = resp.json().get("errors") or []
        return "; ".join(f"{e.get('code')}: {e.get('message')}" for e in errs)[:300] or resp.reason
    except (ValueError, AttributeError):
        return resp.reason or ""


def _short(exc):
    text = str(exc)
    for marker in ("Connection refused", "Name or service not known", "timed out",
                   "Connection reset", "Remote end closed"):
        if marker in text:
            return marker
    return text[:200]


_SAID = set()


def say_once(message):
    if message not in _SAID:
        _SAID.add(message)
        say(message)


def _redact(url):
    parts = urllib.parse.urlsplit(url)
    host = parts.netloc.rsplit("@", 1)[-1]
    return urllib.parse.urlunsplit((parts.scheme, "***@" + host, parts.path, "", ""))
