"""Stage: build. One task per component (build:<dist>/<component>) and one per
distribution (assemble:<dist>) that lays its components' outputs over each other."""
from tasks.core import files
from tasks.core import canonical
from tasks.build import manifest
from tasks.model.component import Component
from tasks.model.project import project
from tasks.model.stamp import Stamp, uptodate_check


def components():
    for dist in project.distributions.values():
        for name in dist.components:
            yield Component(project, dist.name, name)


def _build(comp):
    from tasks.build.builder import build_component
    return build_component(comp)


def _clean(comp):
    for path in (comp.stage_dir, comp.work_dir):
        if path.exists():
            files.force_rmtree(path)


def task_build():
    """Compile each component in its sandbox; output in cache/stage/<dist>/<component>."""
    for comp in components():
        r = comp.recipe
        deps = [f"build:{comp.dist.name}/{d}" for d in r.depends if d in comp.dist.components]
        deps += [f"assemble:{u}" for u in comp.dist.uses]
        deps += [f"fetch:{s.id}" for s in r.sources]
        yield {
            "name": f"{comp.dist.name}/{comp.name}",
            "doc": f"{r.name} {r.version}: {r.description}",
            "actions": [(_build, [comp])],
            "uptodate": [uptodate_check(comp.task, comp.stamp)],
            "task_dep": ["check-host"] + deps,
            "clean": [(_clean, [comp])],
        }


def assembled_path(cfg, dist_name):
    return cfg.cache / "stage" / f"{dist_name}.manifest.json"


def assemble_stamp(cfg, dist_name):
    dist = cfg.distributions[dist_name]
    parts = {}
    for name in dist.components:
        comp = Component(cfg, dist_name, name)
        try:
            parts[name] = canonical.load(comp.stamp_path).get("manifest")
        except (OSError, ValueError):
            parts[name] = None
    return Stamp(cfg.cache / "stage" / f"{dist_name}.assembled.json",
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
    from tasks.core.errors import UserError
    from doit.exceptions import TaskFailed
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
    print(f"assemble:{dist_name}: {len(dist.components)} components, {count} files, "
          f"{size / 1e6:.1f} MB")
    return True


def task_assemble():
    """Lay a distribution's component outputs over each other into its manifest."""
    for dist in project.distributions.values():
        yield {
            "name": dist.name,
            "doc": f"{dist.name} {dist.version} at {dist.prefix}",
            "actions": [(assemble, [project, dist.name])],
            "uptodate": [uptodate_check(f"assemble:{dist.name}",
                                        lambda d=dist.name: assemble_stamp(project, d))],
            "task_dep": [f"build:{dist.name}/{c}" for c in dist.components],
            "verbosity": 2,
        }
