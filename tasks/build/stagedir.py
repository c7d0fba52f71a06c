"""The life of a component's stage folder, cache/stage/<dist>/<component>/:

  tree/           what it installed, relative to the prefix
  manifest.json   one entry per path (tasks/build/manifest.py)
  build.json      how long it took, with how many jobs
  stat.json       size and mtime of every file when it was published (build/verify.py)
  key.json        its key (tasks/build/key.py), written LAST

A new output (built here or pulled from the build cache) is made complete in a
scratch folder next to the stage and swapped in by renames; the key is written
after that. A run killed at any point leaves the previous complete output or no
key, and both make the next run redo exactly this component. Scratch names carry
the process and thread, so two runs (or threads) never share one.
"""
import os
import time
from contextlib import contextmanager

from tasks.build import manifest, verify
from tasks.core import canonical, files
from tasks.core.log import say


def scratch(comp, what):
    """A fresh folder next to the stage for `what` (new, pull, ...), unique to this
    process and thread."""
    path = comp.stage_dir.with_name(f".{comp.name}.{what}-{files.unique_suffix()}")
    files.force_rmtree(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


@contextmanager
def locked(comp):
    """Hold the component's lock: two doit runs on one cache (a nightly and a developer,
    say) never build one component at once; the second waits. Yields True when it had
    to wait (the other run may have made the output meanwhile)."""
    with files.flocked(lock_path(comp), wait=False) as free:
        if free is not None:
            yield False
            return
    say(f"{comp.task}: another run is building it; waiting")
    with files.flocked(lock_path(comp)):
        yield True


def lock_path(comp):
    return comp.stage_dir.with_name(f".{comp.name}.lock")


def publish(comp, upper, entries, started, fetched):
    """Make the captured `upper` folder the component's output; returns the manifest
    digest (the caller writes the key)."""
    new = scratch(comp, "new")
    new.mkdir()
    os.rename(upper, new / "tree")
    r = comp.recipe
    text = canonical.dumps({
        "format": manifest.FORMAT, "component": comp.name, "distribution": comp.dist.name,
        "version": r.version, "prefix": comp.dist.prefix, "license": r.license,
        "replaces": list(r.replaces),
        "sources": [{"file": a.file, "sha256": a.sha256, "urls": list(a.urls)}
                    for a in fetched.values()],
        "entries": entries,
    })
    files.write_atomic(new / "manifest.json", text)
    files.write_atomic(new / "build.json", canonical.dumps({
        "seconds": round(time.time() - started, 1), "jobs": comp.cfg.jobs,
        "started": int(started), "finished": int(time.time())}))
    replace(comp, new)
    return canonical.digest_of(text)


def replace(comp, new):
    """Swap the complete output folder `new` in as the component's stage (renames)."""
    stage_dir = comp.stage_dir
    # what the tree looks like now: a later edit of it shows (build/verify.py)
    files.write_atomic(new / verify.STAT_FILE, canonical.dumps(verify.stat_record(new / "tree")))
    files.syncfs(new)
    old = scratch(comp, "old")
    if stage_dir.exists():
        os.rename(stage_dir, old)
    os.rename(new, stage_dir)
    files.fsync_dir(stage_dir.parent)
    files.force_rmtree(old)


def remove(comp):
    """`doit clean build:...`: forget the output (key first, so nothing counts as done)."""
    (comp.stamp_path).unlink(missing_ok=True)
    for path in (comp.stage_dir, comp.work_dir):
        files.force_rmtree(path)
