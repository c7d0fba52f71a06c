"""Stage: image. One image:<name> task per image of each distribution: export to
cache/images/<name>-<version>.tar (docker-archive + OCI layout), no daemon needed.
load:<name> (stages/load.py) puts it into an engine.

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
        # the code that writes the bytes of the image
        "exporter": code.digest("tasks.ship.image", "tasks.ship.tarwriter", "tasks.ship.select",
                                "tasks.ship.strip", "tasks.build.manifest"),
        "setuid": sorted(dist.setuid),
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
    message = verify.failure(verify.distribution(cfg, dist.name))
    if message:                 # an edited output is named, never shipped
        return TaskFailed(message)
    stamp.remove()
    refusal = _setuid_refusal(cfg, dist)
    if refusal:                 # setuid files only on a loader proven not vulnerable
        return TaskFailed(f"image:{name}: {refusal}")
    try:
        result = export_image(_manifest_path(cfg, dist), cfg.stage_of(dist.name),
                              paths["tar"], spec["repository"], dist.version,
                              include=spec["include"], exclude=spec["exclude"],
                              source_date_epoch=cfg.source_date_epoch,
                              labels=_labels(cfg, dist), title=name,
                              strip=spec.get("strip", True), setuid=dist.setuid)
    except UserError as exc:
        return TaskFailed(exc.render())
    stamp.write(digest=result["digest"], id=result["id"])
    stripped = result["stripped"]
    echo(f"image:{name}: {result['ref']} {result['files']} files, "
         f"{result['size'] / 1e6:.1f} MB, digest {result['digest']} -> {paths['tar']}"
         + (f"; stripped {stripped['files']} ELF files, {stripped['bytes_saved'] / 1e6:.1f} MB "
            "saved" if spec.get("strip", True) else "; not stripped")
         # each one was warned about on stderr by the export
         + (f", {len(stripped['failed'])} shipped unstripped" if stripped["failed"] else ""))
    if result["dangling_links"]:
        echo(f"image:{name}: note: symlinks to paths outside the image: "
             f"{', '.join(result['dangling_links'][:5])}")
    return True


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
    for path in image_paths(cfg.cache, name, dist.version).values():
        path.unlink(missing_ok=True)


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
        paths = image_paths(project.cache, name, dist.version)
        yield {
            "name": name,
            "doc": f"{spec['repository']}:{dist.version} ({dist.prefix})",
            "actions": [(export, [project, dist.name, name])],
            "uptodate": [uptodate_check(f"image:{name}",
                                        lambda d=dist, n=name, s=spec: image_stamp(project, d, n, s))],
            # the loader probe of a distribution with setuid files reads its toolchain's
            "task_dep": [f"assemble:{dist.name}"]
                        + ([f"assemble:{dist.toolchain}"] if dist.setuid and dist.toolchain else []),
            "targets": [str(paths["tar"]), str(paths["json"])],
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
