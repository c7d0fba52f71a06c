"""Stage: images. One image:<name> task per image of each distribution (export to
cache/images/<name>-<version>.tar, no daemon needed) and one load:<name> task that loads
it into a Docker-API engine when one answers (and pushes it when config.yaml asks).

config.yaml, all optional (engine: is a mapping of strings):
  engine:
    host: unix:///run/podman/podman.sock   # used when DOCKER_HOST is unset
    push: "true"                           # load:<name> also pushes
    registry: registry.example.org:5000    # push as <registry>/<repository>:<version>
    source: https://example.org/dappdeps   # label org.opencontainers.image.source
"""
import hashlib

from tasks.ship.image import EXPORTER_VERSION, image_paths, read_result, strip_version
from tasks.model.project import project
from tasks.model.stamp import Stamp, uptodate_check


def _images():
    for dist in project.distributions.values():
        for name, spec in dist.images.items():
            yield dist, name, spec


def _engine_settings(cfg):
    return dict(cfg.data.get("engine") or {})


def _manifest_path(cfg, dist):
    return cfg.cache / "stage" / f"{dist.name}.manifest.json"


def _labels(cfg, dist):
    settings = _engine_settings(cfg)
    labels = {}
    if settings.get("source"):
        labels["org.opencontainers.image.source"] = settings["source"]
    if dist.description:
        labels["org.opencontainers.image.description"] = dist.description
    return labels


def image_stamp(cfg, dist, name, spec):
    """Inputs of image:<name>: the assembled manifest's digest and the image settings."""
    try:
        digest = hashlib.sha256(_manifest_path(cfg, dist).read_bytes()).hexdigest()
    except OSError:
        digest = None
    return Stamp(image_paths(cfg.cache, name, dist.version)["stamp"], {
        "manifest": digest,
        "repository": spec["repository"],
        "tag": dist.version,
        "include": list(spec["include"]),
        "exclude": list(spec["exclude"]),
        "epoch": cfg.source_date_epoch,
        "labels": _labels(cfg, dist),
        "exporter": EXPORTER_VERSION,
        # another binutils may strip differently: its version is an input too
        "strip": strip_version() if spec.get("strip", True) else False,
    })


def export(cfg, dist_name, name):
    """The image:<name> action."""
    from doit.exceptions import TaskFailed

    from tasks.core.errors import UserError
    from tasks.ship.image import export_image
    dist = cfg.distributions[dist_name]
    spec = dist.images[name]
    paths = image_paths(cfg.cache, name, dist.version)
    stamp = image_stamp(cfg, dist, name, spec)
    stamp.remove()
    try:
        result = export_image(_manifest_path(cfg, dist), cfg.cache / "stage" / dist.name,
                              paths["tar"], spec["repository"], dist.version,
                              include=spec["include"], exclude=spec["exclude"],
                              source_date_epoch=cfg.source_date_epoch,
                              labels=_labels(cfg, dist), title=name,
                              strip=spec.get("strip", True))
    except UserError as exc:
        return TaskFailed(exc.render())
    stamp.write(digest=result["digest"], id=result["id"])
    stripped = result["stripped"]
    print(f"image:{name}: {result['ref']} {result['files']} files, "
          f"{result['size'] / 1e6:.1f} MB, digest {result['digest']} -> {paths['tar']}"
          + (f"; stripped {stripped['files']} ELF files, {stripped['bytes_saved'] / 1e6:.1f} MB "
             "saved" if spec.get("strip", True) else "; not stripped")
          # each one was warned about on stderr by the export
          + (f", {len(stripped['failed'])} shipped unstripped" if stripped["failed"] else ""))
    if result["dangling_links"]:
        print(f"image:{name}: note: symlinks to paths outside the image: "
              f"{', '.join(result['dangling_links'][:5])}")
    return True


def _clean(cfg, dist_name, name):
    dist = cfg.distributions[dist_name]
    for path in image_paths(cfg.cache, name, dist.version).values():
        path.unlink(missing_ok=True)


def task_image():
    """Export each distribution image to cache/images/<name>-<version>.tar (docker + OCI)."""
    for dist, name, spec in _images():
        paths = image_paths(project.cache, name, dist.version)
        yield {
            "name": name,
            "doc": f"{spec['repository']}:{dist.version} ({dist.prefix})",
            "actions": [(export, [project, dist.name, name])],
            "uptodate": [uptodate_check(f"image:{name}",
                                        lambda d=dist, n=name, s=spec: image_stamp(project, d, n, s))],
            "task_dep": [f"assemble:{dist.name}"],
            "targets": [str(paths["tar"]), str(paths["json"])],
            "clean": [(_clean, [project, dist.name, name])],
            "verbosity": 2,
        }


# ---- loading into an engine --------------------------------------------------------
_CLIENT = {}


def engine_client(cfg):
    """The engine's client, connected once per run; None when no engine answers."""
    if "client" not in _CLIENT:
        from tasks.ship.engine import connect
        _CLIENT["client"] = connect(configured=_engine_settings(cfg).get("host", ""))
    return _CLIENT["client"]


def _push_wanted(cfg):
    return _engine_settings(cfg).get("push", "").strip().lower() in ("1", "true", "yes", "on")


def _push_stamp(cfg, dist, name, result):
    return Stamp(image_paths(cfg.cache, name, dist.version)["stamp"].with_suffix(".pushed"),
                 {"digest": (result or {}).get("digest"),
                  "registry": _engine_settings(cfg).get("registry", "")})


def load_is_current(cfg, dist_name, name):
    def check(task, values):
        from tasks.ship.engine import has_image
        from tasks.model.stamp import REASONS
        dist = cfg.distributions[dist_name]
        result = read_result(image_paths(cfg.cache, name, dist.version)["json"])
        client = engine_client(cfg)
        if result is None or client is None:
            return False
        try:
            if not has_image(client, result["ref"], result["id"], result["digest"]):
                REASONS[f"load:{name}"] = "the engine does not have this image id yet"
                return False
        except Exception:                 # noqa: BLE001 - the action will report it
            return False
        if _push_wanted(cfg) and not _push_stamp(cfg, dist, name, result).is_current():
            REASONS[f"load:{name}"] = "not pushed yet"
            return False
        return True
    check.__name__ = f"engine_has_{name}"
    return check


def load_action(cfg, dist_name, name):
    """The load:<name> action: load + tag (and push); a notice when there is no engine."""
    from doit.exceptions import TaskFailed

    from tasks.ship.engine import describe, engine_address, load, push
    from tasks.core.errors import UserError
    dist = cfg.distributions[dist_name]
    paths = image_paths(cfg.cache, name, dist.version)
    result = read_result(paths["json"])
    if result is None or not paths["tar"].is_file():
        return TaskFailed(f"error: {paths['tar']} is missing: run the image:{name} task.")
    client = engine_client(cfg)
    if client is None:
        where = engine_address(_engine_settings(cfg).get("host", ""))
        why = (f"{where} does not answer" if where else
               "DOCKER_HOST is unset and no default socket exists")
        print(f"load:{name}: no container engine ({why}); the image stays in {paths['tar']} "
              f"(`docker load -i` or `podman load -i` it).")
        return True
    try:
        status = load(client, paths["tar"], result["ref"], result["id"], result["digest"])
        print(f"load:{name}: {result['ref']} {status} in {describe(client)} ({result['id'][:19]})")
        if _push_wanted(cfg):
            stamp = _push_stamp(cfg, dist, name, result)
            if not stamp.is_current():
                pushed = push(client, result["ref"], _engine_settings(cfg).get("registry", ""))
                stamp.write(pushed=pushed)
                print(f"load:{name}: pushed {pushed}")
    except UserError as exc:
        return TaskFailed(exc.render())
    except Exception as exc:              # noqa: BLE001 - engine/API failures, one line
        return TaskFailed(f"error: load:{name}: the container engine failed: {exc}")
    return True


def task_load():
    """Load each exported image into the Docker-API engine (if any), tag <repository>:<version>."""
    for dist, name, spec in _images():
        yield {
            "name": name,
            "doc": f"docker load + tag {spec['repository']}:{dist.version}",
            "actions": [(load_action, [project, dist.name, name])],
            "uptodate": [load_is_current(project, dist.name, name)],
            "task_dep": [f"image:{name}"],
            "verbosity": 2,
        }


def summary(cfg):
    """{image name: result dict} of the images exported so far (for reports and docs)."""
    out = {}
    for dist in cfg.distributions.values():
        for name in dist.images:
            result = read_result(image_paths(cfg.cache, name, dist.version)["json"])
            if result:
                out[name] = result
    return out
