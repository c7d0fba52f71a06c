"""Stage: legal. One task per image (legal:<image>), after image:<image>: the image's
CycloneDX SBOM and its legal folder (license texts, manifest.csv, README) next to its
tarball; what they hold is described in tasks/ship/legal_info.py.

The folder is written aside and swapped in whole; the stamp, written last, records the
inputs (the image's digest, the distribution manifest, what the recipes say about
licenses), so an interrupted run redoes the task.

An image of several platforms (stages/image.py) gets them per platform: the build
machine's export under the names of before, each foreign export's next to its tarball
(<image>-<version>-arm64.cdx.json, .legal/, .legal.stamp), from that platform's tree
and digest.
"""
import json
import os
import shutil

from tasks.core import code
from tasks.core.canonical import digest_of
from tasks.core.errors import UserError
from tasks.core.files import force_rmtree, sha256_file, unique_suffix, write_atomic
from tasks.core.log import echo
from tasks.model.project import project
from tasks.model.stamp import REASONS, Stamp
from tasks.ship.image import platform_suffix, read_result
from tasks.ship.legal_info import image_components, legal_paths, write_legal_folder
from tasks.ship.sbom import SBOM_SPEC, build_sbom, validate_sbom
from tasks.stages.image import export_platform, exports, multi_platform

# Bump when the files written here change for the same inputs.


def _images(cfg):
    for dist in cfg.distributions.values():
        for name, spec in dist.images.items():
            yield dist, name, spec


def platform_legal(cfg, dist, name):
    """[(view, legal paths, image paths)] of each platform's export of an image."""
    out = []
    for _platform, view, image in exports(cfg, dist, name):
        platform = export_platform(view, dist)
        # a foreign export's files: the version's names with the export's suffix, as
        # image_paths() names its tarball (<name>-<version>-arm64.*)
        out.append((view, legal_paths(cfg.cache, name,
                                      dist.version + platform_suffix(platform)), image))
    return out


def write_legal(cfg, dist_name, name):
    """The legal:<name> action: SBOM + license folder of each export of one image."""
    dist = cfg.distributions[dist_name]
    todo = platform_legal(cfg, dist, name)
    for view, paths, image in todo:
        label = name if len(todo) == 1 or not view.tag(dist.name) \
            else f"{name} [{view.platform}]"
        result = _write_one(view, dist, name, label, paths, image)
        if result is not True:
            return result
    return True


def _write_one(cfg, dist, name, label, paths, image_files):
    from doit.exceptions import TaskFailed

    spec = dist.images[name]
    stamp = legal_stamp(cfg, dist, name, spec, paths, image_files)
    stamp.remove()
    try:
        doc = json.loads(cfg.assembled_manifest(dist.name).read_text())
    except (OSError, ValueError) as exc:
        return TaskFailed(f"legal:{label}: cannot read the distribution's manifest ({exc}); "
                          f"run assemble:{cfg.label(dist.name)} first.")
    result = read_result(image_files["json"]) or {}
    comps = image_components(doc, spec)
    image = {"name": name, "repository": spec["repository"], "version": dist.version,
             "distribution": dist.name, "prefix": dist.prefix, "digest": result.get("digest"),
             "id": result.get("id"), "sbom": str(paths["sbom"])}
    if multi_platform(dist):    # which of the index's images this SBOM describes
        image["platform"] = cfg.platform or cfg.native_platform
    folder = paths["folder"]
    # unique to this process and thread; a killed run's are swept by the next
    # (build/leftovers.py), and two runs take the task's lock (stages.guarded)
    new = folder.with_name(f".{folder.name}.new-{unique_suffix()}")
    old = folder.with_name(f".{folder.name}.old-{unique_suffix()}")
    for leftover in (new, old):
        force_rmtree(leftover)
    try:
        license_dirs, missing = write_legal_folder(cfg, image, comps, new)
    except UserError as exc:
        shutil.rmtree(new, ignore_errors=True)
        return TaskFailed(f"legal:{label}: {exc.render()}")

    try:
        text = build_sbom(image, comps, cfg.recipes, cfg.source_date_epoch, license_dirs)
    except ImportError as exc:
        shutil.rmtree(new, ignore_errors=True)
        return TaskFailed(f"legal:{label}: the CycloneDX library is missing ({exc}); "
                          "pip install -r requirements.txt")
    error = validate_sbom(text)
    if error is not None:
        shutil.rmtree(new, ignore_errors=True)
        return TaskFailed(f"legal:{label}: the SBOM does not validate against CycloneDX "
                          f"{SBOM_SPEC}: {error}")
    write_atomic(paths["sbom"], text)
    if folder.exists():
        os.rename(folder, old)
    os.rename(new, folder)
    force_rmtree(old)
    stamp.write(sbom=digest_of(text))
    texts = sum(len(v) for v in license_dirs.values())
    echo(f"legal:{label}: {len(comps)} components, {texts} license texts -> {folder}; "
         f"SBOM {paths['sbom']}")
    if missing:
        echo(f"legal:{label}: note: no license_files listed for {', '.join(missing)}")
    return True


def legal_stamp(cfg, dist, name, spec, paths, image_files):
    """Inputs of one export's legal files: the export's digest, the distribution manifest
    of its platform, and what the recipes say about licenses (not part of the image's
    bytes)."""
    try:
        manifest_digest = sha256_file(cfg.assembled_manifest(dist.name))
    except OSError:
        manifest_digest = None
    result = read_result(image_files["json"]) or {}
    recipes = {}
    for comp in dist.components:
        r = cfg.recipes[comp]
        recipes[comp] = {"license": r.license, "license_files": list(r.license_files),
                         "homepage": r.data.get("homepage", ""), "depends": list(r.depends),
                         "purl": r.data.get("purl", "")}
    return Stamp(paths["stamp"], {
        "image": result.get("digest"), "manifest": manifest_digest,
        "include": list(spec["include"]), "exclude": list(spec["exclude"]),
        "recipes": recipes, "epoch": cfg.source_date_epoch, "legal": code.digest("tasks.ship.sbom", "tasks.ship.licenses", "tasks.ship.legal_info")})


def _legal_current(cfg, dist_name, name):
    def check(task, values):
        dist = cfg.distributions[dist_name]
        for view, paths, image in platform_legal(cfg, dist, name):
            stamp = legal_stamp(view, dist, name, dist.images[name], paths, image)
            if not stamp.is_current():
                REASONS[f"legal:{name}"] = stamp.why()
                return False
            if not paths["sbom"].is_file() or not paths["folder"].is_dir():
                REASONS[f"legal:{name}"] = "its SBOM or license folder is missing"
                return False
        return True
    check.__name__ = f"legal_of_{name}"
    return check


def _clean(cfg, dist_name, name):
    dist = cfg.distributions[dist_name]
    for _view, paths, _image in platform_legal(cfg, dist, name):
        paths["sbom"].unlink(missing_ok=True)
        paths["stamp"].unlink(missing_ok=True)
        shutil.rmtree(paths["folder"], ignore_errors=True)


def defaults(cfg, dist):
    return [f"legal:{name}" for name in dist.images]


def tasks():
    """CycloneDX SBOM and license texts of each image, next to its tarball (legal-info)."""
    for dist, name, spec in _images(project):
        todo = platform_legal(project, dist, name)
        yield {
            "name": name,
            "doc": f"SBOM + license texts of {spec['repository']}:{dist.version}",
            "actions": [(write_legal, [project, dist.name, name])],
            "uptodate": [_legal_current(project, dist.name, name)],
            "task_dep": [f"image:{name}"],
            "targets": [str(paths["sbom"]) for _view, paths, _image in todo],
            "clean": [(_clean, [project, dist.name, name])],
            "verbosity": 2,
        }


