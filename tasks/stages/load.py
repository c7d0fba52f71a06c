"""Stage: load. One load:<name> task per image: loads the exported tarball into each
configured Docker-API engine that answers (and pushes it through the first one when
config.yaml asks).

config.yaml, all optional:
  engine:                                  # a mapping of strings
    host: unix:///run/podman/podman.sock   # the one engine, when engines: is empty
    push: "true"                           # load:<name> also pushes
    registry: registry.example.org:5000    # push as <registry>/<repository>:<version>
    source: https://example.org/dappdeps   # label org.opencontainers.image.source
  engines:                                 # several engines at once (load:<name> loads
    - {name: podman, host: unix:///run/podman/podman.sock}          # into each, in order)
    - {name: docker, host: unix:///run/dappdeps-docker/docker.sock}
DOCKER_HOST, when set, wins over both: that one engine for this run (ship/engine.targets).
Each load is remembered in cache/images/<image>-<version>.engines.json (engine kind,
version and API version), which the nightly report shows.

An image of several platforms (stages/image.py) is loaded per platform
(engine.load_platforms): an engine's name points at one image, so the build machine's
export is <repository>:<version> as before and each foreign one
<repository>:<version>-arm64; each export's load is recorded next to it
(<image>-<version>-arm64.engines.json). engine.push pushes the build machine's only:
push:<name> pushes the index.
"""
from tasks.core.log import echo
from tasks.model.project import project
from tasks.model.stamp import Stamp
from tasks.ship.image import image_paths, platform_suffix, read_result
from tasks.stages.image import engine_settings, export_platform, exports, images
_CLIENTS = {}


def engine_targets(cfg):
    """The engines to use (tasks.ship.engine.targets), in order."""
    from tasks.ship.engine import targets
    return targets(engine_settings(cfg), cfg.data.get("engines") or [])


def engine_clients(cfg):
    """[(target, client or None)], connected once per run; None: that engine does not answer."""
    if "clients" not in _CLIENTS:
        from tasks.ship.engine import connect_to
        _CLIENTS["clients"] = [(t, connect_to(t)) for t in engine_targets(cfg)]
    return _CLIENTS["clients"]


def engine_names(cfg):
    """'podman, docker' for task docs; '' for the single default engine."""
    try:
        found = engine_targets(cfg)
    except Exception:                     # noqa: BLE001 - the action says what is wrong
        return ""
    return "" if len(found) == 1 and not cfg.data.get("engines") else \
        ", ".join(t.name for t in found)


def _push_wanted(cfg):
    return engine_settings(cfg).get("push", "").strip().lower() in ("1", "true", "yes", "on")


def _push_stamp(cfg, dist, name, result):
    return Stamp(image_paths(cfg.cache, name, dist.version)["stamp"].with_suffix(".pushed"),
                 {"digest": (result or {}).get("digest"),
                  "registry": engine_settings(cfg).get("registry", "")})


def engine_ref(view, dist, name):
    """The name the engine gives an image's export for the view's platform:
    <repository>:<version>, and <repository>:<version>-arm64 for a foreign one."""
    ref = f"{dist.images[name]['repository']}:{dist.version}"
    return ref + platform_suffix(export_platform(view, dist))


def loads(cfg, dist, name):
    """[(platform, export's paths, its result or None, engine name)] of an image."""
    return [(platform, paths, read_result(paths["json"]), engine_ref(view, dist, name))
            for platform, view, paths in exports(cfg, dist, name)]


def load_is_current(cfg, dist_name, name):
    def check(task, values):
        from tasks.ship.engine import has_image, read_loaded
        from tasks.model.stamp import REASONS
        dist = cfg.distributions[dist_name]
        found = loads(cfg, dist, name)
        if any(result is None for _p, _paths, result, _ref in found):
            return False
        result = found[[p for p, *_ in found].index(cfg.native_platform)][2]
        try:
            for target, client in engine_clients(cfg):
                if client is None:
                    return False
                for _platform, paths, export, ref in found:
                    loaded = read_loaded(paths["json"])
                    if not has_image(client, ref, export["id"], export["digest"]):
                        REASONS[f"load:{name}"] = f"the engine {target.name} does not have this image id yet"
                        return False
                    if (loaded.get(target.name) or {}).get("id") != export["id"] or \
                            loaded[target.name].get("host") != target.address:
                        REASONS[f"load:{name}"] = f"no record of the load into {target.name} yet"
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
    """The load:<name> action: load + tag into each engine (and push through the first);
    a notice for an engine that does not answer."""
    from doit.exceptions import TaskFailed

    from tasks.core.errors import UserError
    from tasks.ship.engine import describe, info, load, load_platforms, push, record_loaded
    dist = cfg.distributions[dist_name]
    found = loads(cfg, dist, name)
    for _platform, paths, result, _ref in found:
        if result is None or not paths["tar"].is_file():
            return TaskFailed(f"error: {paths['tar']} is missing: run the image:{name} task.")
    paths, result = [(paths, result) for p, paths, result, _ref in found
                     if p == cfg.native_platform][0]
    try:
        clients = engine_clients(cfg)
    except UserError as exc:
        return TaskFailed(exc.render())
    several = len(clients) > 1
    failures, pushed_by = [], None
    for target, client in clients:
        tag = f"load:{name}: " + (f"[{target.name}] " if several else "")
        if client is None:
            why = (f"{target.address} ({target.origin}) does not answer" if target.address else
                   "DOCKER_HOST is unset and no default socket exists")
            echo(f"{tag}no container engine ({why}); the image stays in {paths['tar']} "
                  f"(`docker load -i` or `podman load -i` it).")
            continue
        try:
            found_info = info(client)
            if len(found) == 1:
                status = {cfg.native_platform: load(client, paths["tar"], result["ref"],
                                                    result["id"], result["digest"])}
            else:
                status = load_platforms(client, [(p, pp["tar"], r) for p, pp, r, _ref in found],
                                        result["ref"], host=cfg.native_platform)
            for platform, pp, export, ref in found:
                record_loaded(pp["json"], target, found_info, ref, export["id"], status[platform])
                echo(f"{tag}{ref} {status[platform]} in {describe(client)} ({export['id'][:19]})"
                     + (f" [{platform}]" if len(found) > 1 else ""))
            if _push_wanted(cfg) and pushed_by is None:
                pushed_by = target.name
                stamp = _push_stamp(cfg, dist, name, result)
                if not stamp.is_current():
                    pushed = push(client, result["ref"], engine_settings(cfg).get("registry", ""))
                    stamp.write(pushed=pushed)
                    echo(f"{tag}pushed {pushed}"
                         + (f" ({cfg.native_platform} only: push:{name} pushes the index of "
                            "every platform)" if len(found) > 1 else ""))
        except UserError as exc:
            failures.append(f"{tag}{exc.render()}")
        except Exception as exc:          # noqa: BLE001 - engine/API failures, one line
            failures.append(f"error: {tag}the container engine failed: {exc}")
    if failures:
        return TaskFailed("\n".join(failures))
    return True


def defaults(cfg, dist):
    return [f"load:{name}" for name in dist.images]


def tasks():
    names = engine_names(project)
    for dist, name, spec in images():
        yield {
            "name": name,
            "doc": f"docker load + tag {spec['repository']}:{dist.version}"
                   + (f" into {names}" if names else ""),
            "actions": [(load_action, [project, dist.name, name])],
            "uptodate": [load_is_current(project, dist.name, name)],
            "task_dep": [f"image:{name}"],
            "verbosity": 2,
        }
