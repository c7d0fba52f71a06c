"""Registry credentials: environment variables named in config.yaml, else the Docker
config file (auths, credHelpers, credsStore), else anonymous."""
import base64
import json
import os
import subprocess
import urllib.parse
from pathlib import Path

from tasks.ship.registry import AuthFailed, host_of


def docker_config_path():
    base = os.environ.get("DOCKER_CONFIG") or str(Path.home() / ".docker")
    return Path(base) / "config.json"


def _normal_host(key):
    key = key.strip()
    if "://" in key:
        key = urllib.parse.urlsplit(key).netloc
    return key.split("/", 1)[0]


def docker_credentials(host, path=None):
    """(username, password) for host from the Docker config file (auths, credHelpers,
    credsStore), or None. Errors in that file are reported as RegistryError."""
    path = Path(path) if path else docker_config_path()
    if not path.is_file():
        return None
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise AuthFailed(f"cannot read the Docker config file {path}: {exc}") from None
    helper = (doc.get("credHelpers") or {}).get(host)
    for key, entry in (doc.get("auths") or {}).items():
        if _normal_host(key) != host or not isinstance(entry, dict):
            continue
        if entry.get("auth"):
            try:
                user, _, password = base64.b64decode(entry["auth"]).decode().partition(":")
            except (ValueError, UnicodeDecodeError):
                raise AuthFailed(f"{path}: auths.{key}.auth is not base64 of user:password"
                                 ) from None
            return user, password
        if entry.get("username") and entry.get("password"):
            return entry["username"], entry["password"]
    helper = helper or doc.get("credsStore")
    if helper:
        return _credential_helper(helper, host)
    return None


def _credential_helper(helper, host):
    """docker-credential-<helper> get (the Docker credential helper protocol)."""
    try:
        proc = subprocess.run([f"docker-credential-{helper}", "get"], input=host,
                              capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise AuthFailed(f"credential helper docker-credential-{helper} failed: {exc}") from None
    if proc.returncode != 0:
        return None           # "credentials not found in native keychain"
    try:
        doc = json.loads(proc.stdout)
        return doc["Username"], doc["Secret"]
    except (ValueError, KeyError):
        raise AuthFailed(f"docker-credential-{helper} get: unexpected answer") from None


def resolve_credentials(url, username_env="", password_env="", use_docker_config=True):
    """(username, password, where) from the environment variables named, else from the
    Docker config file, else (None, None, 'anonymous')."""
    user = os.environ.get(username_env) if username_env else None
    password = os.environ.get(password_env) if password_env else None
    if user and password:
        return user, password, f"${username_env}/${password_env}"
    if use_docker_config:
        found = docker_credentials(host_of(url))
        if found:
            return found[0], found[1], str(docker_config_path())
    return None, None, "anonymous"
