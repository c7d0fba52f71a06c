"""Stage: check-images. The smoke tests again, the way users run the tools: in
containers of other images (busybox, Debian, scratch, ...), with the distributions'
images mounted by `--volumes-from` the seed's way.

check-images:<dist> (after load) creates one volume container per image it needs
(`docker create --volume <prefix> <image> no-such-cmd`): the distribution's own
image, and for every distribution it uses that one's runtime image (the toolchain's
run-time part, not the compiler), so a pass also proves the runtime image is enough.
Then, for each base image listed under checks.images in config.yaml, one container
runs every smoke command through the distribution chain's bash, with the hostile
LD_LIBRARY_PATH and PATH of check:<dist>, the volumes read-only (`--volumes-from NAME:ro`)
and a fresh /tmp (scratch has none). All of it in every engine load: uses (one or several:
tasks/stages/load.py). Results: cache/checks/<dist>.images.json (per engine: its name,
kind, version and API version, then per base image each command's status) and .images.log.

A foreign platform the distribution is built for has its own task,
check-images:<dist>@arm64: the same in base images of that platform
(checks.platform_images: {linux/arm64: [...]}), with that platform's exports mounted
(<repository>:<version>-arm64, as load:<image> names them) and every container created
with --platform linux/arm64 (qemu-user-static through binfmt_misc runs its programs,
as for check:<dist>@arm64). Results: cache/checks/<dist>@arm64.images.json and .log.
"""
import json
import shlex
import shutil
import time

from tasks.core.log import echo
from tasks.core import files
from tasks.core import canonical
from tasks.core.errors import UserError
from tasks.model.project import project
from tasks.core import code
from tasks.stages.check import CHECK_MODULES
from tasks.verify.smoke import expand, smoke_environment, smoke_tests
from tasks.stages.load import engine_clients, engine_names, engine_ref
from tasks.model.stamp import REASONS, Stamp

# Printed by the in-container runner around each command's exit status.
MARK = "@@dappdeps-smoke"


def mounted_images(cfg, dist_name):
    """[(distribution, image name)]: the distribution's own image, and the runtime
    image of each distribution it uses."""
    out = []
    for name in cfg.closure(dist_name):
        dist = cfg.distributions[name]
        out.append((dist, name if name == dist_name else dist.runtime_image))
    return out


def _ref(cfg, dist, image):
    """The engine's name of the image's export for this view's platform."""
    return engine_ref(cfg, dist, image)


def base_images(cfg):
    """The base images of this view's platform: checks.images for the build machine's,
    checks.platform_images.<platform> for a foreign one."""
    if cfg.tag():
        return list(cfg.data["checks"]["platform_images"].get(cfg.platform, []))
    return list(cfg.data["checks"]["images"])


def _bases_field(cfg):
    return f"checks.platform_images.{cfg.platform}" if cfg.tag() else "checks.images"


def _platform(cfg):
    """create options of a foreign platform's containers (--platform linux/arm64)."""
    return {"platform": cfg.platform} if cfg.tag() else {}


def _volume_name(cfg, dist, image):
    return f"dappdeps-check-{image}-{dist.version}{cfg.tag() and '-' + cfg.target().arch}"


def runner_script(cfg, dist_name):
    """One bash script: each smoke command in its own subshell, statuses marked."""
    env = smoke_environment(cfg, dist_name)
    lines = []
    for i, (_comp, command) in enumerate(smoke_tests(cfg, dist_name)):
        lines.append(f"( cd /tmp && {expand(command, env)}\n) >/tmp/.smoke.out 2>&1; s=$?")
        lines.append(f'echo "{MARK} {i} $s"; [ "$s" = 0 ] || tail -n 20 /tmp/.smoke.out')
    return "\n".join(lines) + "\n"


def _bash(cfg, dist_name):
    """The chain's bash, or None (then each command runs as its own argv, as in check:)."""
    for dist, _image in mounted_images(cfg, dist_name):
        entries = canonical.load(cfg.assembled_manifest(dist.name))["entries"]
        if any(e["path"] == "bin/bash" for e in entries):
            return f"{dist.prefix}/bin/bash"
    return None


def _image_ids(client, refs):
    ids = {}
    for ref in refs:
        try:
            ids[ref] = client.images.get(ref).id
        except Exception:                 # noqa: BLE001 - absent: the action says so
            ids[ref] = None
    return ids


def stamp(cfg, dist_name, clients):
    """Inputs: for each engine (by name) its kind, version and API version and the image
    ids it has (mounted and base images); the smoke commands; the code that runs them."""
    from tasks.ship.engine import info
    mounted = [_ref(cfg, d, i) for d, i in mounted_images(cfg, dist_name)]
    bases = base_images(cfg)
    engines = {t.name: {"engine": info(c), "host": t.address, "mounted": _image_ids(c, mounted),
                        "bases": _image_ids(c, bases)} for t, c in clients}
    return Stamp(cfg.cache / "checks" / f"{cfg.label(dist_name)}.images.stamp.json",
                 {"engines": engines, "smoke": smoke_tests(cfg, dist_name),
                  "check": code.digest(*CHECK_MODULES, "tasks.stages.check_images",
                                       "tasks.ship.engine")})


def is_current(cfg, dist_name):
    def check(task, values):
        if not base_images(cfg):
            return True
        try:
            clients = engine_clients(cfg)
        except Exception:                 # noqa: BLE001 - the action says what is wrong
            return False
        if any(c is None for _t, c in clients):
            return False
        current = stamp(cfg, dist_name, clients)
        if current.is_current():
            return True
        REASONS[f"check-images:{cfg.label(dist_name)}"] = current.why()
        return False
    check.__name__ = f"images_checked_{cfg.label(dist_name)}"
    return check


def check_in_images(cfg, dist_name):
    """The check-images:<dist> action: the smoke tests in every base image, in every engine."""
    from doit.exceptions import TaskFailed

    from tasks.ship.engine import info
    label = cfg.label(dist_name)
    bases = base_images(cfg)
    if not bases:
        echo(f"check-images:{label}: no base images listed under {_bases_field(cfg)} in "
              f"{cfg.path}; nothing to run.")
        return True
    try:
        clients = engine_clients(cfg)
    except UserError as exc:
        return TaskFailed(exc.render())
    silent = [t for t, c in clients if c is None]
    if silent:
        return TaskFailed(f"check-images:{label} needs a container engine (DOCKER_HOST, "
                          "engines or engine.host in config.yaml); "
                          + "; ".join(f"{t.name} at {t.address or 'no default socket'} does "
                                      "not answer" for t in silent) + ".")
    out = cfg.cache / "checks"
    out.mkdir(parents=True, exist_ok=True)
    log = out / f"{label}.images.log"
    tests = smoke_tests(cfg, dist_name)
    env = smoke_environment(cfg, dist_name)
    engines = []
    with open(log, "w") as fh:
        fh.write(f"# check-images:{label} {time.strftime('%Y-%m-%d %H:%M:%S')}\n"
                 f"# mounted: {', '.join(_ref(cfg, d, i) for d, i in mounted_images(cfg, dist_name))}\n")
        for target, client in clients:
            found = info(client)
            fh.write(f"# engine {target.name}: {found['kind']} {found['version']} "
                     f"(API {found['api_version']}) at {target.address}\n")
            try:
                results = _check_in_engine(cfg, dist_name, client, fh)
            except UserError as exc:
                return TaskFailed(f"check-images:{label}: in engine {target.name}: "
                                  + exc.render())
            engines.append((target, found, results))
    report = {"distribution": dist_name, **({"platform": cfg.platform} if cfg.tag() else {}),
              "mounted": [_ref(cfg, d, i) for d, i in mounted_images(cfg, dist_name)],
              "environment": {k: env[k] for k in ("PATH", "LD_LIBRARY_PATH")},
              "engines": [{"name": t.name, "host": t.address, **found,
                           "images": {ref: [{"component": c, "command": cmd, "status": s}
                                            for (c, cmd), s in zip(tests, statuses)]
                                      for ref, statuses in results.items()}}
                          for t, found, results in engines]}
    files.write_atomic(out / f"{label}.images.json", json.dumps(report, indent=2) + "\n")
    failed = 0
    for target, found, results in engines:
        where = f"[{target.name}: {found['kind']} {found['version']}, API {found['api_version']}]"
        for ref, statuses in results.items():
            bad = [(t, s) for t, s in zip(tests, statuses) if s != 0]
            failed += len(bad)
            echo(f"check-images:{label}: {where} in {ref}: {len(tests) - len(bad)}/"
                  f"{len(tests)} smoke tests passed")
            for (comp, command), status in bad:
                why = "did not run" if status is None else f"exit {status}"
                echo(f"  FAILED in {ref} ({why}, engine {target.name}): {command}   [{comp}]")
    if failed:
        return TaskFailed(f"check-images:{label}: {failed} smoke test(s) failed; "
                          f"details in {log}")
    stamp(cfg, dist_name, clients).write()
    return True


def _check_in_engine(cfg, dist_name, client, fh):
    """{base image: [exit status of each smoke command]} in one engine."""
    import docker.errors

    from tasks.ship.engine import remove_container, create_volume_container, run
    bases = base_images(cfg)
    tests = smoke_tests(cfg, dist_name)
    env = smoke_environment(cfg, dist_name)
    results = {}
    # the commands' /tmp, unique to this run and thread (files written as root in there)
    work = cfg.cache / "work" / "check-images" / f"{cfg.label(dist_name)}.{files.unique_suffix()}"
    try:
        bash = _bash(cfg, dist_name)
        for ref in bases:
            if not _image_ids(client, [ref])[ref]:
                raise UserError(f"the engine has no image '{ref}'.", cfg.path, _bases_field(cfg),
                                "Pull or build it first (docs/images.md shows how to make "
                                "busybox, scratch and Debian test images offline).")
        volumes = []
        for dist, image in mounted_images(cfg, dist_name):
            name = _volume_name(cfg, dist, image)
            create_volume_container(client, _ref(cfg, dist, image), dist.prefix, name,
                                    **_platform(cfg))
            volumes.append(name)
        binds = {}
        if (cfg.recipes_dir / "checks").is_dir():
            binds[str(cfg.recipes_dir / "checks")] = {"bind": "/dappdeps/check", "mode": "ro"}
        script = runner_script(cfg, dist_name)
        for ref in bases:
            start = time.time()
            # /tmp outlives each command (one compiles, the next runs it), as in
            # check:<dist>; a fresh folder per image (scratch has no /tmp at all).
            tmp = work / "tmp"
            if tmp.exists():
                shutil.rmtree(tmp)
            tmp.mkdir(parents=True)
            tmp.chmod(0o1777)
            # the tools read-only, as users mount them (--volumes-from NAME:ro)
            # the user's image is not trusted: its entrypoint does not run first, and
            # nothing in it gains privileges through setuid files
            options = dict(volumes_from=[f"{v}:ro" for v in volumes], environment=env,
                           working_dir="/tmp", entrypoint=[""],
                           security_opt=["no-new-privileges"],
                           volumes={**binds, str(tmp): {"bind": "/tmp", "mode": "rw"}},
                           **_platform(cfg))
            if bash:
                code, text = run(client, ref, [bash, "-c", script], **options)
                fh.write(f"## {ref} (exit {code}, {time.time() - start:.1f} s)\n{text}\n")
                results[ref] = _statuses(text, tests)
                continue
            results[ref] = []
            for _comp, command in tests:
                try:
                    code, text = run(client, ref, shlex.split(expand(command, env)), **options)
                except docker.errors.APIError as exc:   # e.g. the program is missing
                    code, text = 127, str(exc)
                fh.write(f"## {ref}: {command} (exit {code})\n{text}\n")
                results[ref].append(code)
    finally:
        for dist, image in mounted_images(cfg, dist_name):
            remove_container(client, _volume_name(cfg, dist, image))
        # the commands' /tmp (files written as root by the containers)
        shutil.rmtree(work, ignore_errors=True)
    return results


def _statuses(text, tests):
    """Exit status of each smoke command from the runner's marks (None: never ran)."""
    found = {}
    for line in text.splitlines():
        if line.startswith(MARK + " "):
            parts = line.split()
            if len(parts) == 3 and parts[1].isdigit() and parts[2].isdigit():
                found[int(parts[1])] = int(parts[2])
    return [found.get(i) for i in range(len(tests))]


def views(cfg, dist):
    """The configuration view of each platform the distribution is built for."""
    return [cfg.for_platform(p) for p in dist.platforms]


def defaults(cfg, dist):
    return [f"check-images:{view.label(dist.name)}" for view in views(cfg, dist)
            if base_images(view)]


def tasks():
    names = engine_names(project)
    for dist in project.distributions.values():
        loads = [f"load:{image}" for _d, image in mounted_images(project, dist.name)]
        for view in views(project, dist):
            label = view.label(dist.name)
            yield {
                "name": label,
                "doc": f"smoke-test {dist.name} in the {_bases_field(view)} containers "
                       f"({', '.join(shlex.quote(i) for i in base_images(view)) or 'none set'})"
                       + (f" of {names}" if names else "")
                       + (f", --platform {view.platform}" if view.tag() else ""),
                "actions": [(check_in_images, [view, dist.name])],
                "uptodate": [is_current(view, dist.name)],
                "task_dep": [f"check:{label}"] + loads,
                "verbosity": 2,
            }
