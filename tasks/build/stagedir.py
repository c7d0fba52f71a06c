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

Two locks per component, next to its folder: `.<comp>.lock` (locked(): one build of it
at a time) and `.<comp>.output.lock`, held shared by every build that mounts the output
(using()) and exclusive while it is swapped in or removed (replacing()), so an output
never changes under a build that uses it: the replacement waits.
"""
import os
import threading
import time
from contextlib import ExitStack, contextmanager

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


def output_lock(cfg, dist_name, name):
    """cache/stage/<dist>/.<component>.output.lock (see the module's doc)."""
    return cfg.stage_of(dist_name, name).with_name(f".{name}.output.lock")


_LOCAL = threading.local()


def _held():
    """The output locks this thread holds: {path: "shared" | "exclusive"}. flock belongs
    to the open file, so a thread asking again through a new one would wait for itself."""
    if not hasattr(_LOCAL, "held"):
        _LOCAL.held = {}
    return _LOCAL.held


@contextmanager
def using(cfg, outputs, task):
    """Hold the outputs [(distribution, component)] a build mounts, shared, in sorted
    order: other builds may use them too, nobody replaces or removes them meanwhile.
    What this thread already holds is not taken again."""
    held = _held()
    with ExitStack() as stack:
        for dist_name, name in sorted(set(outputs)):
            path = output_lock(cfg, dist_name, name)
            if path in held:
                continue
            said = f"{task}: waiting while its input {dist_name}/{name} is replaced"
            stack.enter_context(files.flocked(path, shared=True,
                                              on_wait=lambda said=said: say(said)))
            held[path] = "shared"
            stack.callback(held.pop, path, None)
        yield


@contextmanager
def replacing(comp):
    """Hold the component's output exclusively (to swap it in or remove it): waits for
    the builds, of this run or another, that use it. Taken again by the same thread it
    is a no-op (build() holds it around publish and key, replace() takes it inside)."""
    path = output_lock(comp.cfg, comp.dist.name, comp.name)
    held = _held()
    state = held.get(path)
    if state == "exclusive":
        yield
        return
    if state == "shared":       # it would wait for itself forever
        raise RuntimeError(f"{comp.task}: this thread uses the output it is replacing")
    with files.flocked(path, on_wait=lambda: say(f"{comp.task}: waiting for builds that use it")):
        held[path] = "exclusive"
        try:
            yield
        finally:
            del held[path]


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
        "debian_patches": comp.applied_debian_patches(fetched),
        "entries": entries,
    })
    files.write_atomic(new / "manifest.json", text)
    files.write_atomic(new / "build.json", canonical.dumps({
        "seconds": round(time.time() - started, 1), "jobs": comp.cfg.jobs,
        "started": int(started), "finished": int(time.time())}))
    replace(comp, new)
    return canonical.digest_of(text)


def replace(comp, new):
    """Swap the complete output folder `new` in as the component's stage (renames), once
    no build uses the old one (replacing())."""
    stage_dir = comp.stage_dir
    # what the tree looks like now: a later edit of it shows (build/verify.py)
    files.write_atomic(new / verify.STAT_FILE, canonical.dumps(verify.stat_record(new / "tree")))
    files.syncfs(new)
    old = scratch(comp, "old")
    with replacing(comp):
        if stage_dir.exists():
            os.rename(stage_dir, old)
        os.rename(new, stage_dir)
        files.fsync_dir(stage_dir.parent)
    files.force_rmtree(old)


def remove(comp):
    """`doit clean build:...`: forget the output (key first, so nothing counts as done),
    once no build uses it."""
    with replacing(comp):
        (comp.stamp_path).unlink(missing_ok=True)
        for path in (comp.stage_dir, comp.work_dir):
            files.force_rmtree(path)
