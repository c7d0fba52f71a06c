"""A distribution's tree: its components' outputs laid over each other, path by path,
written as cache/stage/<dist>.manifest.json (what images, checks and the SBOM read)."""
from doit.exceptions import TaskFailed

from tasks.build import manifest
from tasks.build.key import obtained
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
            parts[name] = canonical.load(comp.stamp_path).get("content")
        except (OSError, ValueError):
            parts[name] = None
    return Stamp(cfg.assembled_stamp(dist_name),
                 {"components": parts, "prefix": dist.prefix, "version": dist.version,
                  "metadata": canonical.digest_of(canonical.dumps(_metadata(cfg, dist_name)))})


def _metadata(cfg, dist_name):
    """What the recipes say about each component now (version, license, description,
    the sources with their URLs, the Debian patches with the CVEs they fix): read at
    assembly, so editing a description or adding a mirror URL re-assembles (SBOM, legal)
    but rebuilds nothing."""
    out = []
    for name in cfg.distributions[dist_name].components:
        comp = Component(cfg, dist_name, name)
        r = comp.recipe
        alts = obtained(comp)
        out.append({"name": name, "version": r.version, "license": r.license,
                    "description": r.description,
                    "sources": [{"file": a.file, "sha256": a.sha256, "urls": list(a.urls)}
                                for a in alts.values()],
                    "debian_patches": comp.applied_debian_patches(alts)})
    return out


def assemble(cfg, dist_name):
    """Write cache/stage/<dist>.manifest.json: the distribution's tree, path by path."""
    dist = cfg.distributions[dist_name]
    layers = []
    for name in dist.components:
        comp = Component(cfg, dist_name, name)
        doc = canonical.load(comp.manifest_path)
        layers.append((name, doc["entries"], set(comp.recipe.replaces)))
    comps = _metadata(cfg, dist_name)
    try:
        entries = manifest.merge(dist_name, layers)
    except UserError as exc:
        return TaskFailed(exc.render())
    text = canonical.dumps({"format": manifest.FORMAT, "distribution": dist_name,
                           "version": dist.version, "prefix": dist.prefix,
                           "components": comps, "entries": entries})
    files.write_atomic(assembled_path(cfg, dist_name), text)
    # manifest: the whole file (with metadata: images, the SBOM); content: the tree only
    # (what checks of this and of the distributions using it depend on)
    assemble_stamp(cfg, dist_name).write(manifest=canonical.digest_of(text),
                                         content=manifest.content_digest(entries))
    count = sum(1 for e in entries if e["type"] == "file")
    size = sum(e.get("size", 0) for e in entries)
    echo(f"assemble:{dist_name}: {len(dist.components)} components, {count} files, "
          f"{size / 1e6:.1f} MB")
    return True
