"""Stage: load. One load:<name> task per image: loads the exported tarball into a
Docker-API engine when one answers (and pushes it through the engine when config.yaml
asks).

config.yaml, all optional (engine: is a mapping of strings):
  engine:
    host: unix:///run/podman/podman.sock   # used when DOCKER_HOST is unset
    push: "true"                           # load:<name> also pushes
    registry: registry.example.org:5000    # push as <registry>/<repository>:<version>
    source: https://example.org/dappdeps   # label org.opencontainers.image.source
"""
from tasks.model.project import project
from tasks.model.stamp import Stamp
from tasks.ship.image import image_paths, read_result
from tasks.stages.image import engine_settings, images
_CLIENT = {}


def engine_client(cfg):
    """The engine's client, connected once per run; None when no engine answers."""
    if "client" not in _CLIENT:
        from tasks.ship.engine import connect
        _CLIENT["client"] = connect(configured=engine_settings(cfg).get("host", ""))
    return _CLIENT["client"]


def _push_wanted(cfg):
    return engine_settings(cfg).get("push", "").strip().lower() in ("1", "true", "yes", "on")


def _push_stamp(cfg, dist, name, result):
    return Stamp(image_paths(cfg.cache, name, dist.version)["stamp"].with_suffix(".pushed"),
                 {"digest": (result or {}).get("digest"),
                  "registry": engine_settings(cfg).get("registry", "")})


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
        where = engine_address(engine_settings(cfg).get("host", ""))
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
                pushed = push(client, result["ref"], engine_settings(cfg).get("registry", ""))
                stamp.write(pushed=pushed)
                print(f"load:{name}: pushed {pushed}")
    except UserError as exc:
        return TaskFailed(exc.render())
    except Exception as exc:              # noqa: BLE001 - engine/API failures, one line
        return TaskFailed(f"error: load:{name}: the container engine failed: {exc}")
    return True


def defaults(cfg, dist):
    return [f"load:{name}" for name in dist.images]


def tasks():
    for dist, name, spec in images():
        yield {
            "name": name,
            "doc": f"docker load + tag {spec['repository']}:{dist.version}",
            "actions": [(load_action, [project, dist.name, name])],
            "uptodate": [load_is_current(project, dist.name, name)],
            "task_dep": [f"image:{name}"],
            "verbosity": 2,
        }
