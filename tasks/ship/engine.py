"""Container engines through the Docker API (docker SDK): Docker, or Podman's service.

connect()                     the engine of DOCKER_HOST, else the first default socket that
                              exists (/var/run/docker.sock, /run/podman/podman.sock, ...);
                              None when there is none (the image tarballs are then the result)
load(client, tar, ref, id)    `docker load` of an exported image + tag; skipped when the engine
                              already has that image id under that name
push(client, ref, registry)   optional upload (config.yaml: engine.push: "true", engine.registry)
create_volume_container()     the seed's `docker create --volume P IMG no-such-cmd`, made to work
                              with both engines: Docker fills an image's VOLUME when the container
                              is created, Podman only when it is first started, so the container
                              is started once (the start fails on the missing command, on purpose)
                              when its volume is still empty after create, then checked.
targets(settings, engines)    which engines load:/check-images: use (docs/images.md "Which
                              engines"): DOCKER_HOST when set, else config.yaml's `engines:`
                              list, else `engine.host`, else the first default socket
connect_to(target)            a client of one target; info(client) its kind, version, API
"""
import io
import os
import tarfile
from collections import namedtuple
from pathlib import Path

from tasks.core.errors import UserError
from tasks.ship.image import host_platform, platform_suffix

DEFAULT_SOCKETS = (
    "/var/run/docker.sock",
    "/run/docker.sock",
    "/run/podman/podman.sock",
    "/var/run/podman/podman.sock",
)
NO_SUCH_CMD = "no-such-cmd"


def _user_sockets():
    runtime = os.environ.get("XDG_RUNTIME_DIR") or f"/run/user/{os.getuid()}"
    return (f"{runtime}/docker.sock", f"{runtime}/podman/podman.sock")


def engine_address(configured=""):
    """DOCKER_HOST, or the configured address (config.yaml engine.host), or
    unix://<first existing default socket>, or None."""
    if os.environ.get("DOCKER_HOST"):
        return os.environ["DOCKER_HOST"]
    if configured:
        return configured
    for path in DEFAULT_SOCKETS + _user_sockets():
        try:
            if Path(path).is_socket():
                return f"unix://{path}"
        except OSError:
            continue
    return None


# One engine to use: its name (from config.yaml `engines:`, else "default"), its address
# (None: nothing found) and where that address came from (for messages).
Target = namedtuple("Target", "name address origin")
DEFAULT_NAME = "default"


def targets(settings=None, engines=()):
    """The engines to load into and check in, in order.

    DOCKER_HOST set: that one engine (it wins over config.yaml, as for the docker CLI).
    Else each entry of config.yaml `engines: [{name, host}]`, else `engine.host`, else
    the first existing default socket (one engine named "default"; address None when
    there is none)."""
    if os.environ.get("DOCKER_HOST"):
        return [Target(DEFAULT_NAME, os.environ["DOCKER_HOST"], "DOCKER_HOST")]
    if engines:
        names = [e["name"] for e in engines]
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise UserError(f"the engine name '{twice[0]}' is listed twice.", field="engines",
                            hint="Each engine needs its own name (records are kept by name).")
        return [Target(e["name"], e["host"], f"engines: {e['name']}") for e in engines]
    host = (settings or {}).get("host", "")
    if host:
        return [Target(DEFAULT_NAME, host, "engine.host")]
    return [Target(DEFAULT_NAME, engine_address(), "default socket")]


def connect_to(target, required=False, timeout=120):
    """A client of one Target, or None (or UserError if required)."""
    if target.address is None:
        return connect(required=required, timeout=timeout)
    return _connect(target.address, target.origin == "DOCKER_HOST", required, timeout)


def connect(required=False, timeout=120, configured=""):
    """A docker.DockerClient that answered a ping, or None (or UserError if required)."""
    address = engine_address(configured)
    return _connect(address, bool(os.environ.get("DOCKER_HOST")), required, timeout)


def _connect(address, from_env, required, timeout):
    if address is None:
        if required:
            raise UserError("no container engine: DOCKER_HOST is unset and no default socket "
                            f"exists ({', '.join(DEFAULT_SOCKETS)}).",
                            hint="Start one, e.g. `bash .ci/podman.sh` (Podman's Docker API).")
        return None
    try:
        import docker
    except ImportError:
        if required:
            raise UserError("the docker Python package is missing.",
                            hint="pip install -r requirements.txt") from None
        return None
    try:
        if from_env:
            client = docker.from_env(timeout=timeout)    # honours DOCKER_TLS_VERIFY & co
        else:
            client = docker.DockerClient(base_url=address, timeout=timeout)
        client.ping()
        return client
    except Exception as exc:                              # noqa: BLE001 - any failure = no engine
        if required:
            raise UserError(f"the container engine at {address} does not answer ({exc}).",
                            hint="Is the daemon (or `podman system service`) running?") from None
        return None


def engine_kind(client):
    """'podman' or 'docker' (what fills volumes when)."""
    try:
        version = client.version()
    except Exception:                                     # noqa: BLE001
        return "docker"
    names = " ".join(c.get("Name", "") for c in version.get("Components") or [])
    return "podman" if "podman" in names.lower() else "docker"


def info(client):
    """{"kind": "docker"|"podman", "version": ..., "api_version": ...} of an engine."""
    try:
        version = client.version()
    except Exception:                                     # noqa: BLE001
        version = {}
    return {"kind": engine_kind(client), "version": version.get("Version", "?"),
            "api_version": version.get("ApiVersion", "?")}


def describe(client):
    """'docker 20.10.24+dfsg1 (API 1.41)'."""
    found = info(client)
    return f"{found['kind']} {found['version']} (API {found['api_version']})"


def api_at_least(client, wanted):
    """True when the engine's Docker API version is at least wanted ("1.48")."""
    def parts(text):
        try:
            return tuple(int(p) for p in str(text).split("."))
        except ValueError:
            return (0,)
    return parts(info(client)["api_version"]) >= parts(wanted)


# `--mount type=image`: Podman's API takes it (4.x without subpath); Docker since API 1.48
# (Engine 28). dockerd 20.10 (API 1.41) answers `mount type unknown`.
IMAGE_MOUNT_API = "1.48"


def supports_image_mount(client):
    return engine_kind(client) == "podman" or api_at_least(client, IMAGE_MOUNT_API)


# ---- images ------------------------------------------------------------------------
def _inspect(client, ref):
    import docker.errors
    try:
        return client.api.inspect_image(ref)
    except docker.errors.ImageNotFound:
        return None
    except docker.errors.APIError as exc:
        if getattr(exc, "status_code", None) == 404:
            return None
        raise


def has_image(client, ref, image_id, digest=None):
    """True when ref names the image with that id (config digest; Docker's containerd
    store reports the manifest digest instead, also accepted)."""
    info = _inspect(client, ref)
    if not info:
        return False
    ids = {image_id, image_id.split(":", 1)[-1]}
    if digest:
        ids |= {digest, digest.split(":", 1)[-1]}
    if info.get("Id") in ids:
        return True
    return bool(digest) and any(d.endswith("@" + digest) for d in info.get("RepoDigests") or [])


def split_ref(ref):
    """'reg:5000/a/b:tag' -> ('reg:5000/a/b', 'tag')."""
    name, _, tag = ref.rpartition(":")
    if not name or "/" in tag:
        return ref, "latest"
    return name, tag


def load(client, tar_path, ref, image_id, digest=None):
    """Load an image tarball (streamed from disk) and tag it ref.

    Returns "up to date" when the engine already had it, else "loaded"."""
    if has_image(client, ref, image_id, digest):
        return "up to date"
    import docker.errors
    with open(tar_path, "rb") as fh:
        try:
            # api.load_image streams the file (requests sends file objects in blocks)
            for line in client.api.load_image(fh) or ():
                if isinstance(line, dict) and (line.get("error") or line.get("errorDetail")):
                    raise UserError(f"the engine refused to load {tar_path}: "
                                    f"{line.get('error') or line.get('errorDetail')}.")
        except docker.errors.APIError as exc:
            raise UserError(f"the engine refused to load {tar_path}: {exc.explanation or exc}."
                            ) from None
    info = _inspect(client, image_id) or _inspect(client, ref)
    if info is None:
        raise UserError(f"loaded {tar_path}, but the engine has no image {image_id} afterwards.")
    repository, tag = split_ref(ref)
    client.api.tag(info["Id"], repository, tag)
    if not has_image(client, ref, image_id, digest):
        raise UserError(f"loaded {tar_path}, but {ref} is not image {image_id} (it is "
                        f"{(_inspect(client, ref) or {}).get('Id')}).")
    return "loaded"


def load_platforms(client, exports, ref, host=None):
    """Load each platform's tarball of a multi-platform image. An engine's name points at
    one image, so the host's platform (or else the first) gets ref, every other platform
    <ref>-<arch> (dappdeps/base:0.1.0-arm64). The host's is loaded last: loading a
    tarball also names the image after its RepoTags, which are ref in every platform's.
    exports: [(platform, tar, result)]. Returns {platform: "loaded"/"up to date"}."""
    platforms = [p for p, _tar, _result in exports]
    main = (host or host_platform()) if (host or host_platform()) in platforms else platforms[0]
    status = {}
    for plat, tar, result in sorted(exports, key=lambda e: e[0] == main):
        name = ref if plat == main else ref + platform_suffix(plat)
        status[plat] = load(client, tar, name, result["id"], result["digest"])
    return status


def push(client, ref, registry=""):
    """Push ref (retagged under registry/ when given); returns the pushed name."""
    repository, tag = split_ref(ref)
    target = f"{registry.rstrip('/')}/{repository}" if registry else repository
    if target != repository:
        client.api.tag(ref, target, tag)
    errors = []
    for line in client.api.push(target, tag=tag, stream=True, decode=True):
        if isinstance(line, dict) and (line.get("error") or line.get("errorDetail")):
            errors.append(line.get("error") or str(line.get("errorDetail")))
    if errors:
        raise UserError(f"pushing {target}:{tag} failed: {errors[-1]}",
                        hint="Check engine.registry in config.yaml and the engine's login.")
    return f"{target}:{tag}"


# ---- the seed's volume container ---------------------------------------------------
def remove_container(client, name):
    import docker.errors
    try:
        client.api.remove_container(name, force=True, v=True)
    except docker.errors.NotFound:
        pass
    except docker.errors.APIError as exc:
        if getattr(exc, "status_code", None) != 404:
            raise


class _ChunkReader(io.RawIOBase):
    """A file object over the SDK's chunk generator (reads only what is asked)."""

    def __init__(self, chunks):
        self.chunks = iter(chunks)
        self.buf = b""

    def readable(self):
        return True

    def readinto(self, target):
        while not self.buf:
            try:
                self.buf = next(self.chunks)
            except StopIteration:
                return 0
        n = min(len(target), len(self.buf))
        target[:n] = self.buf[:n]
        self.buf = self.buf[n:]
        return n


def volume_has_content(client, container, prefix):
    """True when the container's view of prefix holds at least one entry.

    Reads the first two members of GET /containers/<id>/archive?path=prefix (the folder
    and its first child) and drops the rest of the stream: cheap for any volume size."""
    import docker.errors
    try:
        chunks, _stat = client.api.get_archive(container, prefix.rstrip("/"), chunk_size=65536)
    except docker.errors.NotFound:
        return False
    except docker.errors.APIError as exc:
        if getattr(exc, "status_code", None) == 404:
            return False
        raise
    try:
        with tarfile.open(fileobj=io.BufferedReader(_ChunkReader(chunks), 65536),
                          mode="r|") as tar:
            count = 0
            for _member in tar:
                count += 1
                if count >= 2:
                    return True
            return False
    finally:
        close = getattr(chunks, "close", None)
        if close:
            close()


def create_volume_container(client, image, prefix, name, replace=True, platform=None):
    """`docker create --name NAME --volume PREFIX IMAGE no-such-cmd`, filled on any engine.

    Docker copies the image's PREFIX into the new anonymous volume at create time; Podman
    does it when the container first starts. So: create; if the volume is still empty,
    start the container once (it fails on the missing command, which is ignored), and
    verify the volume now holds the image's files. Returns the container (never running).
    platform: that of a foreign image ("linux/arm64": `--platform linux/arm64`).
    """
    import docker.errors
    if replace:
        remove_container(client, name)
    container = client.containers.create(image, command=[NO_SUCH_CMD], name=name,
                                         volumes=[prefix], network_mode="none",
                                         **({"platform": platform} if platform else {}))
    if volume_has_content(client, container.id, prefix):
        return container
    try:
        container.start()
    except docker.errors.APIError:
        pass                        # expected: no-such-cmd does not exist in the image
    try:
        container.wait(timeout=60)
    except Exception:               # noqa: BLE001 - never started, nothing to wait for
        pass
    if not volume_has_content(client, container.id, prefix):
        raise UserError(f"the volume {prefix} of container {name} stays empty after create and "
                        f"a first start: does image {image} hold {prefix}?")
    return container


def run(client, image, command, volumes_from=(), name=None, remove=True, **kwargs):
    """Run a command to completion; returns (exit code, output text). No network."""
    container = client.containers.create(image, command=command, name=name,
                                         volumes_from=list(volumes_from),
                                         network_mode="none", **kwargs)
    try:
        container.start()
        status = container.wait(timeout=300)
        output = container.logs(stdout=True, stderr=True).decode(errors="replace")
        return status.get("StatusCode", -1), output
    finally:
        if remove:
            container.remove(force=True, v=True)   # its own anonymous volumes only


# ---- where each image was loaded (read by the nightly report) ----------------------
def loaded_path(result_json):
    """cache/images/<image>-<version>.engines.json next to the export's .json."""
    result_json = Path(result_json)
    return result_json.with_name(result_json.name[:-len(".json")] + ".engines.json")


def read_loaded(result_json):
    """{engine name: {kind, version, api_version, host, ref, id, status, at}} or {}."""
    import json
    try:
        data = json.loads(loaded_path(result_json).read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def record_loaded(result_json, target, found, ref, image_id, status):
    """Remember that engine `target` (found = info(client)) holds ref = image_id."""
    import json
    import time

    from tasks.core.files import write_atomic
    data = read_loaded(result_json)
    data[target.name] = {**found, "host": target.address, "ref": ref, "id": image_id,
                         "status": status, "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    write_atomic(loaded_path(result_json), json.dumps(data, indent=2, sort_keys=True) + "\n")
