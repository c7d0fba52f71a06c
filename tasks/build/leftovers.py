"""Leftovers of killed runs, and space that `doit reclaim` may take back.

Every scratch name two runs or two threads could share carries `<pid>-<thread>`
(core/files.unique_suffix): stagedir's .<comp>.new-/.old-/.pull- folders, write_atomic's
.<name>.tmp<pid>-<thread> files, an export's .<image>.tar.tmp<pid>-<thread> and
.<image>.tar.strip-<pid>-<thread>, legal's .<image>.legal.new-/old-, check's scratch
folder, a push's layer. A name whose process is gone is a leftover: nothing will finish
it. A component's work folder is a leftover when its key.json is newer than the work
(killed between the key and the clean-up); a failed build's work folder is kept for
inspection until `doit reclaim`.

sweep() runs once per doit run (the build stage's first up-to-date check), under a lock
that a concurrent run's sweep skips; it costs a few directory listings.
"""
import os
import re
from pathlib import Path

from tasks.core import files
from tasks.model.platforms import PLATFORMS

# .<name>.tmp<pid>[-<thread>]           write_atomic, image and layer temporaries
# .<name>-<pid>-<thread>[.tar.gz]       scratch folders (stagedir, legal, strip, check, push)
_TMP = re.compile(r"^\..+\.tmp(\d+)(?:-\d+)?$")
_SCRATCH = re.compile(r"^\..+-(\d+)-\d+(?:\.tar\.gz)?$")
# names of earlier versions without a pid: nothing writes them any more
_LEGACY = re.compile(r"^\.(?:strip-.+|.+\.legal\.(?:new|old))$")
_SKIP = {"tree", "downloads", "work", "reports", "locks", "logs"}
_DEPTH = 3          # cache/stage/<dist>/<component>/<file>


def _dead_scratch(name):
    match = _TMP.match(name) or _SCRATCH.match(name)
    if match:
        pid = int(match.group(1))
        return pid != os.getpid() and not files.pid_alive(pid)
    return bool(_LEGACY.match(name))


def _scan(folder, depth, found):
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return
    for entry in entries:
        if entry.name.startswith("."):
            if _dead_scratch(entry.name):
                found.append((Path(entry.path), "leftover of a killed run", None))
        elif depth < _DEPTH and entry.name not in _SKIP and entry.is_dir(follow_symlinks=False):
            _scan(entry.path, depth + 1, found)


def _work_folders(cfg):
    """(work folder, its component's lock, key.json) of every cache/work/<dist>/<comp>."""
    work = cfg.cache / "work"
    try:
        dists = [d for d in work.iterdir()
                 if d.is_dir() and d.name not in ("check", "check-images")]
    except OSError:
        return
    for dist in dists:
        for folder in dist.iterdir():
            if not folder.is_dir() or folder.name.startswith("."):
                continue
            if folder.name.endswith(".test"):       # an upstream test's (stages/test.py)
                yield folder, folder.with_name(f".{folder.name}.lock"), None
                continue
            stage = cfg.cache / "stage" / dist.name / folder.name
            lock = stage.with_name(f".{folder.name}.lock")
            yield folder, lock, stage / "key.json"


def _finished(folder, key):
    """The work folder of a build whose key was written after it started."""
    try:
        started = (folder / "build.sh").stat().st_mtime
    except OSError:
        started = folder.stat().st_mtime
    try:
        return key.stat().st_mtime >= started
    except OSError:
        return False


def find(cfg, failed=False):
    """[(path, why)] of leftovers; failed=True adds the work folders of failed or
    interrupted builds and of upstream tests, and the check stages' scratch folders."""
    found = []
    _scan(cfg.cache, 0, found)
    # check's scratch, cache/work/check/.<dist>-<pid>-<thread> (the scan skips work/)
    _scan(cfg.cache / "work" / "check", _DEPTH, found)
    for folder, lock, key in _work_folders(cfg):
        if key is not None and _finished(folder, key):
            found.append((folder, "work folder of a finished build", lock))
        elif failed:
            found.append((folder, "work folder of a failed or interrupted build" if key
                          else "work folder of an upstream test", lock))
    if failed:
        base = cfg.cache / "work" / "check"
        for folder in (sorted(base.iterdir()) if base.is_dir() else []):
            if not folder.name.startswith("."):     # an earlier version's fixed name
                found.append((folder, "scratch of a check run",
                              cfg.cache / "locks" / f"check:{folder.name}.lock"))
    return found


def superseded_images(cfg):
    """Files in cache/images of a configured image at another version than the current.
    A foreign platform's export of the current version (<name>-<version>-arm64.tar, the
    image stage's name for it) is current too."""
    folder = cfg.cache / "images"
    current = {}
    for dist in cfg.distributions.values():
        for name in dist.images:
            current[name] = [f"{name}-{dist.version}{suffix}." for suffix in
                             [""] + [f"-{PLATFORMS[p].arch}" for p in dist.platforms
                                     if p != cfg.native_platform]]
    found = []
    try:
        entries = sorted(folder.iterdir())
    except OSError:
        return found
    for path in entries:
        for name, kept in current.items():
            if path.name.startswith(f"{name}-") and not path.name.startswith(tuple(kept)):
                rest = path.name[len(name) + 1:]
                if rest[:1].isdigit():
                    found.append((path, f"image {name} at another version than "
                                        f"{kept[0][len(name) + 1:-1]}", None))
                break
    return found


def remove(items, say=None):
    """Remove [(path, why, lock or None)]; a path whose lock another run holds is left
    alone. Returns [(path, why, bytes)] of what was removed."""
    removed = []
    for path, why, lock in items:
        if lock is None:
            removed += _remove_one(path, why)
            continue
        with files.flocked(lock, wait=False) as free:
            if free is None:
                if say:
                    say(f"kept {path}: another run is using it")
                continue
            removed += _remove_one(path, why)
    return removed


def _remove_one(path, why):
    if not os.path.lexists(path):
        return []
    size = files.tree_size(path) if path.is_dir() and not path.is_symlink() else path.lstat().st_size
    try:
        files.force_rmtree(path)
    except OSError:
        return []
    return [(path, why, size)]


_SWEPT = set()


def sweep(cfg, say):
    """Once per process and cache: remove the leftovers of killed runs (not the work
    folders of failed builds). A concurrent run's sweep skips it."""
    if cfg.cache in _SWEPT:
        return []
    _SWEPT.add(cfg.cache)
    with files.flocked(cfg.cache / "locks" / "sweep.lock", wait=False) as free:
        if free is None:
            return []
        removed = remove(find(cfg))
    if removed:
        total = sum(size for _p, _w, size in removed)
        names = ", ".join(str(p.relative_to(cfg.cache)) for p, _w, _s in removed[:4])
        more = f" and {len(removed) - 4} more" if len(removed) > 4 else ""
        say(f"cleanup: removed {len(removed)} leftover(s) of killed runs, "
            f"{files.human(total)}: {names}{more}")
    return removed
