"""Stage: image. One image:<name> task per image of each distribution: export to
cache/images/<name>-<version>.tar (docker-archive + OCI layout), no daemon needed.
load:<name> (stages/load.py) puts it into an engine.

A distribution built for several platforms (config `platforms:`) is exported once per
platform by the same task: the build machine's as before platforms existed (same names,
same bytes), each foreign one from its own stage (cache/stage/<dist>@arm64) to
<name>-<version>-arm64.tar; then one OCI image index over them,
<name>-<version>.index.json (tasks/ship/imageindex.py), in the order of `platforms:`.

config.yaml, all optional (engine: is a mapping of strings):
  engine:
    host: unix:///run/podman/podman.sock   # used when DOCKER_HOST is unset
    push: "true"                           # load:<name> also pushes
    registry: registry.example.org:5000    # push as <registry>/<repository>:<version>
    source: https://example.org/dappdeps   # label org.opencontainers.image.source
"""
import hashlib

from tasks.build import verify
from tasks.core import code
from tasks.core.log import echo
from tasks.ship.image import image_paths, read_result
from tasks.ship.imageindex import index_paths
from tasks.ship.strip import strip_version
from tasks.model.project import project
from tasks.model.stamp import Stamp, uptodate_check


def _manifest_path(cfg, dist):
    return cfg.assembled_manifest(dist.name)


def _labels(cfg, dist):
    settings = engine_settings(cfg)
    labels = {}
    if settings.get("source"):
        labels["org.opencontainers.image.source"] = settings["source"]
    if dist.description:
        labels["org.opencontainers.image.description"] = dist.description
    return labels


def exports(cfg, dist, name):
    """[(platform, view, paths)] of an image, in the order of the distribution's
    `platforms:`: view is the configuration of that platform (Config.for_platform), paths
    its export's files. The build machine's platform keeps the names of before platforms
    existed (<name>-<version>.tar), a foreign one has its own (<name>-<version>-arm64.tar)."""
    out = []
    # a Config made without platforms (no config.yaml): the build machine's
    for platform in dist.platforms or (cfg.native_platform,):
        view = cfg.for_platform(platform)
        out.append((platform, view, image_paths(cfg.cache, name, dist.version,
                                                export_platform(view, dist))))
    return out


def export_platform(view, dist):
    """The platform export_image() is given: None for the build machine's own (the bytes
    of before platforms existed), else the view's ("linux/arm64")."""
    return view.platform if view.tag(dist.name) else None


def strip_tool(view, dist):
    """None: the host's strip, for the build machine's platform. Another platform's image
    is stripped by the host's <triplet>-strip (Debian's binutils-aarch64-linux-gnu, which
    ./setup installs) for that platform's ELF machine: a host tool, like the host's strip.
    Never a program of the cross toolchain's stage: that is a build output, and an export
    runs as root outside the sandbox."""
    if export_platform(view, dist) is None:
        return None
    import shutil

    from tasks.core.errors import UserError
    target = view.target()
    name = f"{target.triplet}-strip"
    tool = shutil.which(name)
    if tool is None:
        raise UserError(f"the {view.platform} image of {dist.name} is stripped by {name}, "
                        "which the host does not have.",
                        hint=f"apt-get install binutils-{target.triplet} (./setup does), or "
                             "set strip: false for the image.")
    return tool, (target.elf_class, target.little_endian, target.elf_machine)


def multi_platform(dist):
    """True when the image is an index over several platforms' exports."""
    return len(dist.platforms) > 1


def _digest_of(path):
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError:
        return None


def image_stamp(cfg, dist, name, spec):
    """Inputs of image:<name>: the assembled manifest's digest and the image settings
    (and each platform's manifest digest, for an image of several platforms)."""
    digest = _digest_of(_manifest_path(cfg, dist))
    platforms = {}
    if multi_platform(dist):
        platforms = {"platforms": {p: _digest_of(_manifest_path(view, dist))
                                   for p, view, _paths in exports(cfg, dist, name)},
                     "strip_tools": {p: _strip_version(view, dist, spec)
                                     for p, view, _paths in exports(cfg, dist, name)}}
    return Stamp(image_paths(cfg.cache, name, dist.version)["stamp"], {
        **platforms,
        "manifest": digest,
        "repository": spec["repository"],
        "tag": dist.version,
        "include": list(spec["include"]),
        "exclude": list(spec["exclude"]),
        "epoch": cfg.source_date_epoch,
        "labels": _labels(cfg, dist),
        # the code that writes the bytes of the image
        "exporter": code.digest("tasks.ship.image", "tasks.ship.tarwriter", "tasks.ship.select",
                                "tasks.ship.strip", "tasks.build.manifest"),
        "setuid": sorted(dist.setuid),
        # another binutils may strip differently: its version is an input too
        "strip": strip_version() if spec.get("strip", True) else False,
    })


def _strip_version(view, dist, spec):
    """The version of the strip an export of `view`'s platform runs (None: it is not built
    yet, so the export cannot be up to date)."""
    if not spec.get("strip", True):
        return False
    from tasks.core.errors import UserError
    try:
        tool = strip_tool(view, dist)
    except UserError:
        return None
    return strip_version(tool[0] if tool else None)


def export(cfg, dist_name, name):
    """The image:<name> action: each platform's export, then (several platforms) the index."""
    from doit.exceptions import TaskFailed

    from tasks.core.errors import UserError
    from tasks.ship.image import export_image
    from tasks.ship.imageindex import write_index
    dist = cfg.distributions[dist_name]
    spec = dist.images[name]
    stamp = image_stamp(cfg, dist, name, spec)
    todo = exports(cfg, dist, name)
    for _platform, view, _paths in todo:
        message = verify.failure(verify.distribution(view, dist.name))
        if message:             # an edited output is named, never shipped
            return TaskFailed(message)
    stamp.remove()
    for _platform, view, _paths in todo:
        refusal = _setuid_refusal(view, dist)
        if refusal:             # setuid files only on a loader proven not vulnerable
            return TaskFailed(f"image:{name}: {refusal}")
    results, native = {}, None
    try:
        for platform, view, paths in todo:
            result = export_image(_manifest_path(view, dist), view.stage_of(dist.name),
                                  paths["tar"], spec["repository"], dist.version,
                                  include=spec["include"], exclude=spec["exclude"],
                                  source_date_epoch=cfg.source_date_epoch,
                                  labels=_labels(cfg, dist), title=name,
                                  strip=spec.get("strip", True), setuid=dist.setuid,
                                  platform=export_platform(view, dist),
                                  strip_tool=(strip_tool(view, dist)
                                              if spec.get("strip", True) else None))
            results[platform] = result
            native = native or (result if export_platform(view, dist) is None else None)
            _said(name + ("" if len(todo) == 1 else f" [{platform}]"), spec, paths, result)
        index = None
        if multi_platform(dist):
            where = index_paths(cfg.cache, name, dist.version)["index"]
            index = write_index([paths["tar"] for _p, _v, paths in todo], where)
            echo(f"image:{name}: index {index['digest']} of {', '.join(index['platforms'])} "
                 f"-> {where}")
    except UserError as exc:
        return TaskFailed(exc.render())
    extra = {} if index is None else {
        "index": index["digest"], "exports": {p: r["digest"] for p, r in results.items()}}
    stamp.write(digest=native["digest"], id=native["id"], **extra)
    return True


def _said(label, spec, paths, result):
    stripped = result["stripped"]
    echo(f"image:{label}: {result['ref']} {result['files']} files, "
         f"{result['size'] / 1e6:.1f} MB, digest {result['digest']} -> {paths['tar']}"
         + (f"; stripped {stripped['files']} ELF files, {stripped['bytes_saved'] / 1e6:.1f} MB "
            "saved" if spec.get("strip", True) else "; not stripped")
         # each one was warned about on stderr by the export
         + (f", {len(stripped['failed'])} shipped unstripped" if stripped["failed"] else ""))
    if result["dangling_links"]:
        echo(f"image:{label}: note: symlinks to paths outside the image: "
             f"{', '.join(result['dangling_links'][:5])}")


def _setuid_refusal(cfg, dist):
    from tasks.core import files
    from tasks.verify import loader
    if not dist.setuid:
        return None
    scratch = cfg.cache / "work" / "image" / f".{dist.name}-probe-{files.unique_suffix()}"
    scratch.mkdir(parents=True, exist_ok=True)
    try:
        return loader.setuid_refusal(cfg, dist.name, scratch)
    finally:
        files.force_rmtree(scratch)


def _clean(cfg, dist_name, name):
    dist = cfg.distributions[dist_name]
    for path in _outputs(cfg, dist, name):
        path.unlink(missing_ok=True)


def _outputs(cfg, dist, name):
    """Every file image:<name> writes (each platform's, the index)."""
    found = [path for _p, _v, paths in exports(cfg, dist, name) for path in paths.values()]
    if multi_platform(dist):
        found += list(index_paths(cfg.cache, name, dist.version).values())
    return list(dict.fromkeys(found))


def images():
    for dist in project.distributions.values():
        for name, spec in dist.images.items():
            yield dist, name, spec


def engine_settings(cfg):
    return dict(cfg.data.get("engine") or {})


def defaults(cfg, dist):
    return [f"image:{name}" for name in dist.images]


def tasks():
    for dist, name, spec in images():
        todo = exports(project, dist, name)
        targets = [str(paths[k]) for _p, _v, paths in todo for k in ("tar", "json")]
        if multi_platform(dist):
            targets.append(str(index_paths(project.cache, name, dist.version)["index"]))
        toolchains = [f"assemble:{view.label(dist.toolchain)}" for _p, view, _paths in todo] \
            if dist.setuid and dist.toolchain else []
        yield {
            "name": name,
            "doc": f"{spec['repository']}:{dist.version} ({dist.prefix})"
                   + (f" for {', '.join(dist.platforms)}" if multi_platform(dist) else ""),
            "actions": [(export, [project, dist.name, name])],
            "uptodate": [uptodate_check(f"image:{name}",
                                        lambda d=dist, n=name, s=spec: image_stamp(project, d, n, s))],
            # the loader probe of a distribution with setuid files reads its toolchain's
            "task_dep": [f"assemble:{view.label(dist.name)}" for _p, view, _paths in todo]
                        + toolchains,
            "targets": targets,
            "clean": [(_clean, [project, dist.name, name])],
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
