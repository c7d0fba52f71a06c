"""Stage: repro. One task per distribution (repro:<dist>), on demand: build every component
of the distribution a second time, in its own cache tree cache/repro/<dist>/, under other
conditions (another cache folder, a later wall-clock time, umask 027, another number of
jobs, the build environment in reverse order, no build cache), then compare both outputs
file by file (tasks/verify/repro.py). Differences are named with a hint at their cause;
the summary goes to cache/reports/repro-<dist>.json (the nightly report shows it) and
the task fails when anything differs. docs/reproducibility.md.
"""
import dataclasses
import os
import shutil
import signal
import stat
import subprocess
import sys
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

from tasks.build import sandbox
from tasks.build.manifest import OPAQUE, is_opaque
from tasks.core import canonical, files
from tasks.core.log import echo, printable, say
from tasks.model.config import Config
from tasks.model.project import project
from tasks.ship.image import image_paths, read_result
from tasks.sources.download import downloads_dir
from tasks.verify import repro

REPO = Path(__file__).resolve().parents[2]
UMASK = 0o027
SHOWN = 8                           # differing files named in the failure message


def second_config(cfg, dist_name):
    """The configuration of the second build: the same, with its cache in cache/repro/<dist>
    (read field by field: `project` is a stand-in that loads the real one on first use)."""
    values = {f.name: getattr(cfg, f.name) for f in dataclasses.fields(Config)}
    return Config(**dict(values, cache=cfg.cache / "repro" / dist_name))


def log_path(cfg, dist_name):
    return cfg.cache / "logs" / "repro" / f"{dist_name}.log"


def conditions(cfg, second):
    jobs = 1 if cfg.jobs != 1 else 2
    return {"cache": [str(cfg.cache), str(second.cache)], "jobs": [cfg.jobs, jobs],
            "umask": [current_umask(), f"{UMASK:03o}"],
            "environment order": ["as declared", "reversed (DAPPDEPS_REPRO_VARIANT=1)"],
            "build cache": ["as configured", "off"],
            "wall clock": "the second build runs later; the clock is not faked"}


def current_umask():
    """This process's umask, read without setting it (os.umask would, for every thread)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return line.split()[1][-3:]
    except OSError:
        pass
    return "unknown"


# ---- the second cache tree, seeded ----------------------------------------------------------
def seed(cfg, second, dist_name):
    """What the second build must not redo: the downloads, the build root and the outputs
    of every other distribution it uses, as hard links (copies across file systems)."""
    pairs = [(downloads_dir(cfg), downloads_dir(second))]
    root = getattr(cfg, "buildroot_dir", None)
    if root is not None and Path(root).is_relative_to(cfg.cache):
        # the default place, inside the cache: the second build looks in its own cache
        # (buildroot.dir elsewhere is shared by both builds as it is)
        pairs.append((root, second.cache / Path(root).relative_to(cfg.cache)))
    for other in cfg.closure(dist_name)[1:]:
        for comp in cfg.distributions[other].components:
            pairs.append((cfg.stage_of(other, comp), second.stage_of(other, comp)))
        pairs += [(cfg.assembled_manifest(other), second.assembled_manifest(other)),
                  (cfg.assembled_stamp(other), second.assembled_stamp(other))]
    count = 0
    for src, dst in pairs:
        if os.path.lexists(src):
            count += link_tree(src, dst)
    return count


def link_tree(src, dst):
    """dst as a copy of src made of hard links: folders made anew (mode, overlayfs' opaque
    mark), symlinks copied, files and whiteouts linked; across file systems copied (hard
    links inside src stay links). Returns the number of paths."""
    src, dst = Path(src), Path(dst)
    dst.parent.mkdir(parents=True, exist_ok=True)
    if not src.is_dir() or src.is_symlink():
        _link_one(src, dst, {})
        return 1
    inodes, count, folders = {}, 0, []
    for dirpath, dirnames, filenames in os.walk(src):
        rel = Path(dirpath).relative_to(src)
        here = dst / rel
        here.mkdir(exist_ok=True)
        folders.append((Path(dirpath), here))
        for name in list(dirnames):
            if os.path.islink(os.path.join(dirpath, name)):
                dirnames.remove(name)
                filenames.append(name)
        for name in filenames:
            _link_one(Path(dirpath) / name, here / name, inodes)
            count += 1
    for old, new in reversed(folders):      # modes last: a read-only folder was filled first
        if is_opaque(old):
            os.setxattr(new, OPAQUE, b"y", follow_symlinks=False)
        os.chmod(new, stat.S_IMODE(os.lstat(old).st_mode))
    return count + len(folders)


def _link_one(src, dst, inodes):
    st = os.lstat(src)
    if stat.S_ISLNK(st.st_mode):
        os.symlink(os.readlink(src), dst)
        return
    try:
        os.link(src, dst)
        return
    except OSError:
        pass                                # another file system: copy
    key = (st.st_dev, st.st_ino)
    if key in inodes:
        os.link(inodes[key], dst)
    elif stat.S_ISCHR(st.st_mode):
        os.mknod(dst, st.st_mode, st.st_rdev)
    else:
        shutil.copy2(src, dst, follow_symlinks=False)
    inodes.setdefault(key, dst)


# ---- the second build: a child doit ---------------------------------------------------------
def child_tasks(cfg, dist_name):
    dist = cfg.distributions[dist_name]
    return ([f"build:{dist_name}/{c}" for c in dist.components] + [f"assemble:{dist_name}"]
            + [f"image:{name}" for name in dist.images])


def child_environment(cfg, second):
    env = dict(os.environ)
    env.update(DAPPDEPS_CONFIG=str(cfg.path), DAPPDEPS_CACHE_DIR=str(second.cache),
               DAPPDEPS_BUILDCACHE="off", DAPPDEPS_OFFLINE="1",
               DAPPDEPS_JOBS=str(1 if cfg.jobs != 1 else 2), DAPPDEPS_REPRO_VARIANT="1")
    return dict(reversed(env.items()))


def _child_setup():
    """In the child doit: it gets SIGTERM (and stops its sandboxes) when this process dies."""
    import ctypes
    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)     # PR_SET_PDEATHSIG


def run_second(cfg, second, dist_name, log):
    """Run the second build; its output goes to `log`, each task it starts is said.
    Returns doit's exit status (a stop of this run stops it too)."""
    argv = [sys.executable, "-m", "doit", "-f", str(REPO / "dodo.py"), "--continue",
            *child_tasks(cfg, dist_name)]
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "wb") as out:
        out.write(f"# repro:{dist_name}: {' '.join(argv)}\n".encode())
        out.flush()
        proc = subprocess.Popen(argv, cwd=REPO, env=child_environment(cfg, second),
                                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, umask=UMASK, preexec_fn=_child_setup)
        reader = threading.Thread(target=_relay, args=(proc.stdout, out, dist_name), daemon=True)
        reader.start()
        try:
            while proc.poll() is None:
                if sandbox.stopping():
                    proc.send_signal(signal.SIGTERM)
                    proc.wait()
                    break
                time.sleep(0.2)
        except BaseException:
            proc.send_signal(signal.SIGTERM)
            proc.wait()
            raise
        finally:
            reader.join(10)
    return proc.returncode


def _relay(stream, out, dist_name):
    for line in stream:
        out.write(line)
        out.flush()
        text = line.decode(errors="replace").rstrip("\n")
        if text.startswith(".  "):
            say(f"repro:{dist_name}: second build: {text[3:]}")


# ---- the comparison and its summary ---------------------------------------------------------
def compare(cfg, second, dist_name, started):
    """{component: compare_component() result} and the image digests of both builds."""
    dist = cfg.distributions[dist_name]
    results = {}
    for comp in dist.components:
        first_dir, second_dir = cfg.stage_of(dist_name, comp), second.stage_of(dist_name, comp)
        times = repro.build_times(first_dir) + repro.build_times(second_dir) + (started, time.time())
        context = repro.Context.of((cfg.cache, second.cache), *times)
        results[comp] = repro.compare_component(first_dir, second_dir, context)
    images = []
    for name in dist.images:
        digests = [(read_result(image_paths(c.cache, name, dist.version)["json"]) or {}).get("digest")
                   for c in (cfg, second)]
        images.append({"name": name, "first": digests[0], "second": digests[1],
                       "same": bool(digests[0]) and digests[0] == digests[1]})
    return results, images


def measure(cfg, dist_name):
    """The repro:<dist> action."""
    from doit.exceptions import TaskFailed
    second = second_config(cfg, dist_name)
    log = log_path(cfg, dist_name)
    started = time.time()
    files.force_rmtree(second.cache)
    second.cache.mkdir(parents=True)
    second.cache.chmod(0o700)
    count = seed(cfg, second, dist_name)
    say(f"repro:{dist_name}: second build in {second.cache} ({count} paths seeded: downloads, "
        f"build root, used distributions); log: {log}")
    status = run_second(cfg, second, dist_name, log)
    if sandbox.stopping():
        return TaskFailed(f"repro:{dist_name}: stopped by a signal; nothing compared")
    results, images = compare(cfg, second, dist_name, started)
    total = repro.totals(results)
    ok = status == 0 and total["differing"] == 0 and not total["failed"] \
        and all(im["same"] for im in images)
    doc = {"format": 1, "distribution": dist_name,
           "when": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
           "seconds": round(time.time() - started, 1), "ok": ok, "second_build_status": status,
           "conditions": conditions(cfg, second), "log": str(log), "totals": total,
           "components": [dict(results[c], name=c) for c in results], "images": images}
    path = repro.summary_path(cfg.cache, dist_name)
    files.write_atomic(path, canonical.dumps(doc))
    for line in repro.table(results):
        echo(f"repro:{dist_name}: {line}")
    for im in images:
        echo(f"repro:{dist_name}: image {im['name']}: "
             + (f"same digest {im['first']}" if im["same"] else f"{im['first']} vs {im['second']}"))
    if ok:
        echo(f"repro:{dist_name}: reproducible: every file bit-identical; summary {path}")
        return True
    return TaskFailed(failure(dist_name, status, results, images, path, log))


def failure(dist_name, status, results, images, path, log):
    differing = [(comp, d) for comp, r in results.items() for d in r["differing"]]
    lines = [f"repro:{dist_name}: not reproducible: {len(differing)} files differ"
             + (f"; the second build failed (doit exit status {status}, log {log})" if status else "")]
    lines += [f"  {comp}: {r['error']}" for comp, r in results.items() if r.get("error")]
    for comp, d in differing[:SHOWN]:
        lines.append(printable(f"  {comp}: {d['path']}: {d['hint']}"
                               + (f" ({d['detail']})" if d["detail"] else "")))
    if len(differing) > SHOWN:
        lines.append(f"  ... and {len(differing) - SHOWN} more")
    lines += [f"  image {im['name']}: digest {im['first']} vs {im['second']}"
              for im in images if not im["same"]]
    lines.append(f"Every difference with its hint: {path}")
    return "\n".join(lines)


def tasks():
    for dist in project.distributions.values():
        yield {
            "name": dist.name,
            "doc": f"build {dist.name} a second time under other conditions and compare",
            "actions": [(measure, [project, dist.name])],
            "task_dep": [f"image:{name}" for name in dist.images],
            "uptodate": [False],
            "verbosity": 2,
        }
