"""The build engine: run one component's build in its sandbox and capture its output.

Kill-safety: everything happens in cache/work/<dist>/<component>/ (wiped at the
start of every build). Only after the build succeeded is the captured output
moved into cache/stage/<dist>/<component>/ by renames, and the key written last;
a build killed at any point leaves either the previous complete output or no
key at all, and both make the next run rebuild exactly this component.
"""
import fcntl
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

from tasks.core import files
from tasks.core import canonical
from tasks.core.log import duration, say
from doit.exceptions import TaskFailed

from tasks.ship import buildcache
from tasks.build import manifest
from tasks.build import sandbox
from tasks.sources.download import cached
from tasks.core.errors import UserError

LOG_TAIL = 40


def build_component(comp):
    # Two doit runs on one cache (a nightly and a developer, say) must not build
    # the same component into the same work folder: the second waits, then
    # finds it up to date.
    lock_path = comp.work_dir.with_name(f".{comp.name}.lock")
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, "w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            say(f"{comp.task}: another run is building it; waiting")
            fcntl.flock(lock, fcntl.LOCK_EX)
            if comp.stamp().is_current():
                say(f"{comp.task}: built by the other run")
                return True
        return _build_locked(comp)


def _build_locked(comp):
    stamp = comp.stamp()
    from tasks.model.stamp import REASONS
    reason = REASONS.pop(comp.task, None) or stamp.why()
    if buildcache.pull(comp, stamp):
        return True
    say(f"{comp.task}: building ({reason}); log: {comp.log_path}")
    started = time.time()
    try:
        fetched = prepare_work(comp)
        stamp = comp.stamp(fetched)
        status = run_sandboxed(comp)
        if status != 0:
            return _failure(comp, status)
        entries = manifest.scan_tree(comp.work_dir / "upper")
        check_overwrites(comp, entries)
        digest = publish(comp, entries, started, fetched)
    except UserError as exc:
        files.append(comp.log_path, exc.render())
        return TaskFailed(f"{comp.task}: {exc.render()}\nlog: {comp.log_path}")
    stamp.write(manifest=digest, seconds=round(time.time() - started, 1))
    shutil.rmtree(comp.work_dir, ignore_errors=True)
    say(f"{comp.task}: done in {duration(time.time() - started)}, "
        f"{sum(1 for e in entries if e['type'] == 'file')} files")
    buildcache.push(comp, stamp)
    return True


def prepare_work(comp, work=None, log_path=None):
    """Fresh work folder: sources unpacked, patches and script in place.

    work/log_path default to the build's own; the upstream tests (stage_tests.py)
    redo the same build in another folder so they never touch the build's."""
    work = work or comp.work_dir
    log_path = log_path or comp.log_path
    if work.exists():
        files.force_rmtree(work)
    for sub in ("src", "build", "upper", "ovwork", "merged", "meta", "patches"):
        (work / sub).mkdir(parents=True)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    log_path.write_text(f"# {comp.task} {comp.recipe.version} started "
                        f"{time.strftime('%Y-%m-%d %H:%M:%S')}\n")
    fetched = {}
    for src in comp.recipe.sources:
        hit = cached(src, comp.cfg)
        if hit is None:
            raise UserError(f"source {src.id} is not in the download cache.",
                            comp.recipe.path, "sources", f"Run `doit fetch` first.")
        fetched[src.id] = hit.alternative
        (work / "meta" / f"{src.id}.alternative").write_text(hit.alternative.file)
        dest = work / "src" / src.dest if src.dest else work / "src"
        if src.extract:
            unpack(hit.path, dest, hit.alternative.inner, work)
        else:
            dest.mkdir(parents=True, exist_ok=True)
            shutil.copy2(hit.path, dest / hit.alternative.file)
    for i, patch in enumerate(comp.recipe.patches):
        shutil.copy2(patch, work / "patches" / f"{i:03d}-{patch.name}")
    (work / "build.sh").write_text(comp.script())
    return fetched


def unpack(archive, dest, inner, work):
    """Unpack a tarball into dest, dropping its single top-level folder."""
    tmp = work / f".unpack-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    _tar(archive, tmp)
    if inner:
        found = [p for p in tmp.rglob(inner) if p.is_file()]
        if not found:
            raise UserError(f"{Path(archive).name} holds no file named {inner}.", field="inner")
        nested = work / f".inner-{os.getpid()}"
        nested.mkdir()
        _tar(found[0], nested)
        shutil.rmtree(tmp)
        tmp = nested
    top = list(tmp.iterdir())
    root = top[0] if len(top) == 1 and top[0].is_dir() else tmp
    dest.parent.mkdir(parents=True, exist_ok=True)
    if dest.exists() and not any(dest.iterdir()):
        dest.rmdir()
    if dest.exists():
        for item in root.iterdir():
            os.rename(item, dest / item.name)
    else:
        os.rename(root, dest)
    shutil.rmtree(tmp, ignore_errors=True)


def _tar(archive, into):
    proc = subprocess.run(["tar", "-xf", str(archive), "-C", str(into), "--no-same-owner"],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        raise UserError(f"cannot unpack {archive}: {proc.stderr.strip()[-400:]}")


def run_sandboxed(comp, work=None, log_path=None, script="build.sh", lowers=None):
    """Run work/<script> in the component's sandbox (by default: its build).

    lowers: the components whose outputs $PREFIX shows under the upper folder, in
    order (default: the component's dependencies, as a build sees them)."""
    work = work or comp.work_dir
    cfg = comp.cfg
    stage = cfg.cache / "stage"
    below = comp.local_deps if lowers is None else lowers
    own = sandbox.Overlay(work / "merged",
                          [stage / comp.dist.name / d / "tree" for d in reversed(below)],
                          upper=work / "upper", work=work / "ovwork")
    overlays = [(own, comp.dist.prefix, True)]
    for used in comp.used_dists:
        dist = cfg.distributions[used]
        lowers = [stage / used / c / "tree" for c in reversed(dist.components)]
        overlays.append((sandbox.Overlay(work / "used" / used, lowers), dist.prefix, False))
    argv = sandbox.command(
        overlays=overlays,
        mounts=[(work / "src", sandbox.SRC, True), (work / "build", sandbox.BUILD, True)],
        binds=[(work / "build.sh", "/dappdeps/build.sh"), (work / "meta", "/dappdeps/meta"),
               (work / "patches", "/dappdeps/patches")],
        env=comp.environment(), argv=["/bin/bash", f"/dappdeps/{script}"],
        network=comp.recipe["network"], scratch=work, base=cfg.cache)
    return sandbox.run(argv, log_path or comp.log_path)


def check_overwrites(comp, entries):
    """A path of a dependency may only be rewritten by a component that replaces it."""
    owners = {}
    for dep in comp.local_deps:
        path = comp.cfg.cache / "stage" / comp.dist.name / dep / "manifest.json"
        for entry in canonical.load(path)["entries"]:
            if entry["type"] != "dir":
                owners[entry["path"]] = dep
    for entry in entries:
        owner = owners.get(entry["path"])
        if entry["type"] != "dir" and owner and owner not in comp.recipe.replaces:
            verb = "deleted" if entry["type"] == "whiteout" else "installed again"
            raise UserError(
                f"the same path {entry['path']} is {verb} by '{comp.name}' but belongs to its "
                f"dependency '{owner}'.", comp.recipe.path, "replaces",
                f"If '{comp.name}' is meant to reinstall it, add '{owner}' to replaces.")


def publish(comp, entries, started, fetched):
    """Move the captured output into the stage by renames; returns the manifest digest."""
    stage_dir = comp.stage_dir
    new = stage_dir.with_name(f".{comp.name}.new")
    old = stage_dir.with_name(f".{comp.name}.old")
    for leftover in (new, old):
        if leftover.exists():
            files.force_rmtree(leftover)
    new.mkdir(parents=True)
    os.rename(comp.work_dir / "upper", new / "tree")
    r = comp.recipe
    doc = {
        "format": manifest.FORMAT, "component": comp.name, "distribution": comp.dist.name,
        "version": r.version, "prefix": comp.dist.prefix, "license": r.license,
        "replaces": list(r.replaces),
        "sources": [{"file": a.file, "sha256": a.sha256, "urls": list(a.urls)} for a in fetched.values()],
        "entries": entries,
    }
    text = canonical.dumps(doc)
    files.write_atomic(new / "manifest.json", text)
    files.write_atomic(new / "build.json", canonical.dumps({
        "seconds": round(time.time() - started, 1), "jobs": comp.cfg.jobs,
        "started": int(started), "finished": int(time.time())}))
    replace_stage(comp, new)
    return canonical.digest_of(text)


def replace_stage(comp, new):
    """Swap the complete output folder `new` in as the component's stage (renames; the
    key is written afterwards by the caller). Also used for outputs pulled from the
    build cache (buildcache.py)."""
    stage_dir = comp.stage_dir
    old = stage_dir.with_name(f".{comp.name}.old")
    if old.exists():
        files.force_rmtree(old)
    if stage_dir.exists():
        os.rename(stage_dir, old)
    os.rename(new, stage_dir)
    if old.exists():
        files.force_rmtree(old)


def _failure(comp, status):
    tail = files.tail(comp.log_path, LOG_TAIL)
    hint = ""
    outside = [line for line in tail if _outside_write(line, comp.dist.prefix)]
    if outside:
        hint = ("\nThe build wrote (or tried to) outside its sandbox: only $PREFIX "
                f"({comp.dist.prefix}), $SRCDIR, $BUILDDIR and /tmp are writable; /etc, $HOME, "
                "the host and other prefixes are not. First such line:\n  " + outside[0].strip())
    message = (f"{comp.task}: build failed (exit status {status}). Last {len(tail)} lines of "
               f"{comp.log_path}:\n" + "".join("  | " + line for line in tail) + hint +
               f"\nFull log: {comp.log_path}\nWork folder kept for inspection: {comp.work_dir}")
    say(message)
    return TaskFailed(message.splitlines()[0] + hint)


_DENIED = re.compile(r"(?:^|[\s'\"`])(/[^\s:'\"]+)'?: (Read-only file system|No such file or directory|Directory nonexistent)")


def _outside_write(line, prefix):
    match = _DENIED.search(line)
    if not match:
        return False
    path = match.group(1)
    if match.group(2) == "Read-only file system":
        return True
    writable = (prefix + "/", sandbox.SRC + "/", sandbox.BUILD + "/", "/tmp/")
    return not path.startswith(writable) and not path.startswith(("/usr/", "/bin/", "/lib"))