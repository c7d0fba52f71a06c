"""A distribution's tree: its components' outputs laid over each other, path by path,
written as cache/stage/<dist>.manifest.json (what images, checks and the SBOM read)."""
from doit.exceptions import TaskFailed

from tasks.build import manifest
from tasks.core import canonical, files
from tasks.core.errors import UserError
from tasks.core.log import echo
from tasks.model.component import Component
from tasks.model.stamp import Stamp


def assembled_path(cfg, dist_name):
    return cfg.assembled_manifest(dist_name)


def assemble_stamp(cfg, dist_name):
    dist = cfg.distributions[dist_name]
    parts = {}
    for name in dist.components:
        comp = Component(cfg, dist_name, name)
        try:
            parts[name] = canonical.load(comp.stamp_path).get("manifest")
        except (OSError, ValueError):
            parts[name] = None
    return Stamp(cfg.assembled_stamp(dist_name),
                 {"components": parts, "prefix": dist.prefix, "version": dist.version})


def assemble(cfg, dist_name):
    """Write cache/stage/<dist>.manifest.json: the distribution's tree, path by path."""
    dist = cfg.distributions[dist_name]
    layers, comps = [], []
    for name in dist.components:
        comp = Component(cfg, dist_name, name)
        doc = canonical.load(comp.manifest_path)
        layers.append((name, doc["entries"], set(comp.recipe.replaces)))
        comps.append({"name": name, "version": doc["version"], "license": doc["license"],
                      "description": comp.recipe.description, "sources": doc["sources"]})
    try:
        entries = manifest.merge(dist_name, layers)
    except UserError as exc:
        return TaskFailed(exc.render())
    text = canonical.dumps({"format": manifest.FORMAT, "distribution": dist_name,
                           "version": dist.version, "prefix": dist.prefix,
                           "components": comps, "entries": entries})
    files.write_atomic(assembled_path(cfg, dist_name), text)
    assemble_stamp(cfg, dist_name).write(manifest=canonical.digest_of(text))
    count = sum(1 for e in entries if e["type"] == "file")
    size = sum(e.get("size", 0) for e in entries)
    echo(f"assemble:{dist_name}: {len(dist.components)} components, {count} files, "
          f"{size / 1e6:.1f} MB")
    return True
