"""Stage: verify. One task per distribution (verify:<dist>), on demand (`doit verify`):
every built component's output against its manifest, content hashes included
(tasks/build/verify.py). A mismatch names the paths and the command that repairs it.
The quick check (types, modes, sizes, mtimes) runs anyway before assemble, image and
cache-push use a tree."""
import time

from tasks.build import verify
from tasks.core.files import human
from tasks.core.log import echo
from tasks.model.component import Component
from tasks.model.project import project


def verify_action(cfg, dist_name):
    from doit.exceptions import TaskFailed
    started = time.time()
    bad, checked, skipped, size = [], 0, [], 0
    for name in cfg.distributions[dist_name].components:
        comp = Component(cfg, dist_name, name)
        if not comp.stamp_path.is_file():
            skipped.append(name)
            continue
        found = verify.problems(comp, full=True)
        checked += 1
        if found:
            bad.append((comp, found))
        else:
            size += sum(e.get("size", 0) for e in _entries(comp))
    note = f"; not built (skipped): {', '.join(skipped)}" if skipped else ""
    if bad:
        return TaskFailed(f"verify:{dist_name}: {len(bad)} of {checked} components differ from "
                          f"their manifests{note}\n" + verify.failure(bad))
    echo(f"verify:{dist_name}: {checked} components match their manifests "
         f"({human(size)} hashed in {time.time() - started:.1f} s){note}")
    return True


def _entries(comp):
    from tasks.core import canonical
    try:
        return canonical.load(comp.manifest_path)["entries"]
    except (OSError, ValueError, KeyError):
        return []


def tasks():
    for dist in project.distributions.values():
        yield {
            "name": dist.name,
            "doc": f"hash {dist.name}'s component outputs against their manifests",
            "actions": [(verify_action, [project, dist.name])],
            "uptodate": [False],
            "verbosity": 2,
        }
