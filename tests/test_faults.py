"""Faults around the engine (issue 18), on small script components (real bwrap, real doit):
two runs at once, signals with `-n 2`, leftovers of killed runs, an edited stage tree.
The full-disk tests are in test_faults_disk.py. docs/engine.md "Fault model" lists what
survives what, next to these tests."""
import fcntl
import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import threading
import time

import pytest

from conftest import REPO, doit_env, run_doit
from fixtures import FixtureProject, wait_for

NIGHTLY = REPO / "bin" / "nightly"
NO_ENGINE = "unix:///nonexistent/dappdeps-test-engine.sock"


def script_project(root, scripts, depends=None, **config):
    """One distribution `demo` of script components: {name: shell script}."""
    proj = FixtureProject(root)
    proj.add_package("src", "1.0", {"README": "a source\n"})
    source = proj.recipes["src"]["sources"]
    for name, script in scripts.items():
        proj.write_recipe({"name": name, "version": "1.0", "description": f"component {name}",
                           "license": "MIT", "sources": source, "build": "script",
                           "depends": (depends or {}).get(name, []), "script": script})
    proj.add_distribution("demo", list(scripts))
    proj.write_config(**config)
    return proj


def writes(name, text=None, sleep=0):
    return (f"touch $SRCDIR/started\nsleep {sleep}\nmkdir -p $PREFIX/share\n"
            f"echo {text or name} > $PREFIX/share/{name}\n")


def key(proj, comp):
    return proj.cache / "stage" / "demo" / comp / "key.json"


def start_doit(config, *args, nightly=False):
    env = doit_env(config)
    env["DOCKER_HOST"] = NO_ENGINE
    env["PYTHON"] = sys.executable
    argv = [str(NIGHTLY)] if nightly else [sys.executable, "-m", "doit", "-f", str(REPO / "dodo.py")]
    return subprocess.Popen(argv + list(args), env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


class Watched:
    """A doit (or nightly) run whose stdout and stderr are read while it runs."""

    def __init__(self, config, *args, nightly=False):
        self.proc = start_doit(config, *args, nightly=nightly)
        self.out, self.err = [], []
        self.readers = [threading.Thread(target=self._read, args=(stream, into), daemon=True)
                        for stream, into in ((self.proc.stdout, self.out), (self.proc.stderr, self.err))]
        for reader in self.readers:
            reader.start()

    @staticmethod
    def _read(stream, into):
        for line in stream:
            into.append(line)

    def said(self, text):
        return sum(text in line for line in list(self.err))

    def wait_said(self, text, count=1, timeout=120):
        assert wait_for(lambda: self.said(text) >= count or self.proc.poll() is not None,
                        timeout=timeout) and self.said(text) >= count, "".join(self.out + self.err)[-3000:]

    def finish(self, timeout=180):
        try:
            self.proc.wait(timeout=timeout)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()
        for reader in self.readers:
            reader.join(timeout=10)
        return "".join(self.out), "".join(self.err)


def hold(path):
    """Take the flock two runs use on `path` (as another run would); close() releases it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fh = open(path, "a")
    fcntl.flock(fh, fcntl.LOCK_EX)
    return fh


def alive(pattern):
    return subprocess.run(["pgrep", "-f", pattern], capture_output=True).returncode == 0


def dead_pid():
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


# ---- two runs at once ---------------------------------------------------------------------
def test_two_runs_at_once_build_nothing_twice(tmp_path):
    names = ["a", "b", "c", "d"]
    proj = script_project(tmp_path, {n: writes(n, sleep=0.5) for n in names},
                          depends={"d": ["a"]})
    config = proj.root / "config.yaml"
    assert run_doit(config, "fetch", check=True).returncode == 0
    targets = ["-n", "2", "legal:demo", "check:demo"]
    # both runs meet at `a` and at legal:demo: the locks are held here until both wait there
    held = [hold(proj.cache / "stage" / "demo" / ".a.lock"),
            hold(proj.cache / "locks" / "legal:demo.lock")]
    try:
        runs = [Watched(config, *targets) for _ in range(2)]
        for run in runs:
            run.wait_said("build:demo/a: another run is building it; waiting")
        held.pop(0).close()
        for run in runs:
            run.wait_said("legal:demo: another run is doing it; waiting")
    finally:
        for fh in held:
            fh.close()
    outs = [run.finish(180) for run in runs]
    text = "".join(o + e for o, e in outs)
    for run, (out, err) in zip(runs, outs):
        assert run.proc.returncode == 0, (out + err)[-3000:]
    # one run built `a` and made legal:demo, the other waited and says so
    assert len(re.findall(r"^build:demo/a: built by the other run$", text, re.M)) == 1, text[-4000:]
    assert len(re.findall(r"^legal:demo: done by the other run$", text, re.M)) == 1, text[-4000:]
    # messages of parallel tasks are whole lines: a task's message only starts a line
    for line in text.splitlines():
        starts = [m.start() for m in re.finditer(r"(?:build|assemble|check|image|legal):demo\S*: ", line)]
        assert starts in ([], [0]), line
    assert "Traceback" not in text
    for name in names:                      # each built once, by one of the two runs
        assert len(re.findall(rf"build:demo/{name}: building \(", text)) == 1, text[-4000:]
        assert key(proj, name).is_file()
    # legal:, check: and image: ran once each too: the second run waited, then skipped
    for said in ("image:demo: dappdeps/demo:1.0", "legal:demo: 4 components", "check:demo: ELF audit"):
        assert len(re.findall(rf"^{said}", text, re.M)) == 1, text[-4000:]
    assert (proj.cache / "images" / "demo-1.0.legal" / "manifest.csv").is_file()
    left = [p.name for p in (proj.cache / "images").iterdir() if p.name.startswith(".")]
    left += [p.name for p in (proj.cache / "stage" / "demo").iterdir()
             if p.name.startswith(".") and not p.name.endswith(".lock")]
    assert left == []
    assert not any((proj.cache / "work" / "check").glob("*-*"))


LOCKED_TASKS = """
import json, sys
from tasks import stages
from tasks.model.pipeline import STAGES
found = {}
for holder in stages.creators().values():
    made = holder.create_doit_tasks()
    made = [made] if isinstance(made, dict) else list(made)
    stage = next(s for s in STAGES if s.name == holder.create_doit_tasks.basename)
    for task in made:
        name = f"{stage.name}:{task['name']}" if task.get("name") else stage.name
        actions = task["actions"]
        fn, args = actions[0][:2] if len(actions) == 1 else (None, [])
        found[name] = [stage.locked, fn is stages.run_guarded and args[:2] == [name, True]]
json.dump(found, sys.stdout)
"""


def test_every_task_of_a_locked_stage_runs_under_its_lock(tmp_path):
    """load:, push:, cache-push: and check-images: need an engine or a registry to run; that
    they take the lock as legal: does above is read from the task definitions."""
    proj = script_project(tmp_path, {"a": writes("a")})
    env = doit_env(proj.root / "config.yaml")
    done = subprocess.run([sys.executable, "-c", LOCKED_TASKS], env=env, cwd=REPO,
                          capture_output=True, text=True, check=True)
    found = json.loads(done.stdout)
    locked = {name for name, (stage_locked, _) in found.items() if stage_locked}
    assert locked == {"buildroot", "repro:demo", "assemble:demo", "check:demo", "image:demo",
                      "legal:demo", "load:demo", "push:demo", "cache-push:demo",
                      "check-images:demo"}
    assert {name for name, (_, guarded) in found.items() if guarded} == locked


# ---- signals --------------------------------------------------------------------------------
def _signal_project(tmp_path, extra=None, depends=None):
    scripts = {"fast": writes("fast"),
               "slow1": "touch $SRCDIR/started\nsleep 31.1\nmkdir -p $PREFIX/share\n",
               "slow2": "touch $SRCDIR/started\nsleep 31.2\nmkdir -p $PREFIX/share\n",
               "after": writes("after"), **(extra or {})}
    proj = script_project(tmp_path, scripts, depends={"after": ["slow1"], **(depends or {})})
    run_doit(proj.root / "config.yaml", "fetch", "build:demo/fast", check=True)
    return proj


def _wait_started(proj, proc, *names):
    for name in names:
        assert wait_for((proj.cache / f"work/demo/{name}/src/started").exists, timeout=120), \
            proc.finish(5) if isinstance(proc, Watched) else proc.communicate(timeout=5)


def _stop_both_slow(proj, proc, sig):
    _wait_started(proj, proc, "slow1", "slow2")
    time.sleep(0.3)
    sent = time.monotonic()
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=60)
    took = time.monotonic() - sent
    # no build process is left, in either worker thread
    assert not alive("sleep 31.1") and not alive("sleep 31.2")
    return out, err, took


# `late` waits for the test's go, then writes many files: its sandbox has ended and the
# builder is publishing them (scan, manifest, stat.json) when the signal comes
LATE = ("touch $SRCDIR/started\nwhile [ ! -e $SRCDIR/go ]; do sleep 0.02; done\n"
        "mkdir -p $PREFIX/share/late && cd $PREFIX/share/late && seq 5000 | xargs touch\n")


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT, signal.SIGHUP])
def test_signal_stops_every_build_of_plain_doit(tmp_path, sig):
    proj = _signal_project(tmp_path, {"quick": writes("quick"), "queued": writes("queued"),
                                      "late": LATE})
    config = proj.root / "config.yaml"
    stage = proj.cache / "stage" / "demo"
    # `queued` waits for its lock (held here, as by another run) and gets it after the signal
    other_run = hold(stage / ".queued.lock")
    try:
        run = Watched(config, "-n", "5", "--continue", "assemble:demo")
        assert wait_for(key(proj, "quick").is_file, timeout=120), run.finish(5)
        _wait_started(proj, run, "slow1", "slow2", "late")
        run.wait_said("build:demo/queued: another run is building it; waiting")
        (proj.cache / "work/demo/late/src/go").touch()
        assert wait_for(lambda: any(stage.glob(".late.new-*")), timeout=60, step=0.005), run.finish(5)
        sent = time.monotonic()
        run.proc.send_signal(sig)
        time.sleep(0.3)
    finally:
        other_run.close()
    out, err = run.finish(60)
    took = time.monotonic() - sent
    assert not alive("sleep 31.1") and not alive("sleep 31.2")   # every worker's sandbox died
    assert run.proc.returncode == 128 + sig, (out + err)[-3000:]
    assert "Traceback" not in out + err
    # one line says it, and it is the last one
    name = signal.Signals(sig).name
    assert [line for line in err.splitlines() if "stopped by" in line] == [err.splitlines()[-1]]
    assert re.fullmatch(rf"doit: stopped by {name}: every running build was killed\. Every task "
                        rf"that finished is kept \(its stamp is on disk\); the next run continues "
                        rf"from there\. Exit {128 + sig}\.", err.splitlines()[-1]), err[-2000:]
    assert took < 10
    assert key(proj, "fast").is_file() and key(proj, "quick").is_file()
    for name in ("slow1", "slow2", "after", "queued", "late"):
        assert not key(proj, name).exists(), name
    # late's sandbox had ended: its output was published after the signal, without a key
    assert (stage / "late" / "tree" / "share" / "late" / "5000").is_file()
    # queued got its lock after the signal: no sandbox started for it
    assert not (proj.cache / "work/demo/queued/src/started").exists()
    # doit saved its database: quick, which finished in this run, is in it
    with sqlite3.connect(proj.cache / "doit.sqlite3") as db:
        saved = {row[0] for row in db.execute("select task_id from doit")}
    assert "build:demo/quick" in saved
    # the next run builds what was left, and only that
    for name in ("slow1", "slow2", "late"):
        proj.write_recipe(dict(proj.recipes[name], script=writes(name)))
    again = run_doit(config, "-n", "2", "assemble:demo", check=True)
    assert again.ran() == ["build:demo/after", "build:demo/late", "build:demo/queued",
                           "build:demo/slow1", "build:demo/slow2"]


def test_sigterm_nightly_report_matches_disk(tmp_path):
    proj = _signal_project(tmp_path)
    proj.write_recipe(dict(proj.recipes["fast"], name="s", description="component s",
                           script=writes("s")))
    proj.add_distribution("side", ["s"])
    config = proj.write_config()
    run_doit(config, "build:side/s", check=True)
    # assemble:side waits for its lock (held here, as by another run) when the signal comes,
    # and gets it after: its action finishes after doit stopped listening
    other_run = hold(proj.cache / "locks" / "assemble:side.lock")
    try:
        run = Watched(config, "-n", "3", "assemble:demo", "assemble:side", nightly=True)
        _wait_started(proj, run, "slow1", "slow2")
        run.wait_said("assemble:side: another run is doing it; waiting")
        sent = time.monotonic()
        run.proc.send_signal(signal.SIGTERM)
        time.sleep(1.0)
    finally:
        other_run.close()
    out, err = run.finish(60)
    took = time.monotonic() - sent
    assert not alive("sleep 31.1") and not alive("sleep 31.2")
    assert run.proc.returncode == 143, (out + err)[-3000:]
    assert "Traceback" not in out + err
    assert 1.0 <= took < 15         # the runner waited for assemble:side to end (stages.settle)
    report = json.loads((proj.cache / "reports" / "latest" / "report.json").read_text())
    assert report["result"] == "interrupted" and report["exit_code"] == 143
    status = {t["name"]: t["status"] for t in report["tasks"] if t["stage"] in ("build", "assemble")}
    assert status == {"build:demo/fast": "up-to-date", "build:demo/slow1": "interrupted",
                      "build:demo/slow2": "interrupted", "build:demo/after": "not-run",
                      "assemble:demo": "not-run", "build:side/s": "up-to-date",
                      "assemble:side": "ran"}, status
    # the report says what is on disk
    assert key(proj, "fast").is_file() and (proj.cache / "stage/side/s/key.json").is_file()
    for name in ("slow1", "slow2", "after"):
        assert not key(proj, name).exists(), name
    assert (proj.cache / "stage" / "side.manifest.json").is_file()
    assert not (proj.cache / "stage" / "demo.manifest.json").exists()


# ---- leftovers ------------------------------------------------------------------------------
def test_leftovers_of_killed_runs_are_swept_and_reclaimed(tmp_path):
    proj = script_project(tmp_path, {"a": writes("a"), "b": writes("b")})
    config = proj.root / "config.yaml"
    run_doit(config, "image:demo", check=True)
    stage = proj.cache / "stage" / "demo"
    images = proj.cache / "images"
    # a kill right after a's key.json: its work folder stays (made older than the key)
    work = proj.cache / "work" / "demo" / "a"
    (work / "build" / "obj").mkdir(parents=True)
    (work / "build" / "obj" / "big.o").write_bytes(b"\0" * 300_000)
    (work / "build.sh").write_text("true\n")
    then = key(proj, "a").stat().st_mtime - 60
    os.utime(work / "build.sh", (then, then))
    # b's last build failed after its key: its work folder is kept for inspection
    failed = proj.cache / "work" / "demo" / "b"
    (failed / "build").mkdir(parents=True)
    (failed / "build.sh").write_text("false\n")
    pid = dead_pid()
    dead = [images / f".demo-1.0.tar.tmp{pid}-123", stage / "a" / f".key.json.tmp{pid}-7",
            images / f".demo-1.0.legal.new-{pid}-9", images / f".demo-1.0.legal.old-{pid}-8",
            stage / f".a.new-{pid}-5", stage / f".a.old-{pid}-3", stage / f".a.pull-{pid}-6",
            stage / f".a.push-{pid}-1.tar.gz", proj.cache / "work" / "check" / f".demo-{pid}-2",
            images / f".demo-1.0.tar.strip-{pid}-4", images / ".strip-abc123"]
    live = [images / f".demo-1.0.tar.tmp{os.getpid()}-1", stage / f".b.new-{os.getpid()}-2"]
    for path in dead + live:
        path.parent.mkdir(parents=True, exist_ok=True)
        if any(part in path.name for part in ("new", "old", "pull", "strip", "demo-")) \
                and not path.name.endswith(".tar.gz"):
            path.mkdir()
            (path / "f").write_bytes(b"x" * 1000)
        else:
            path.write_bytes(b"x" * 5000)
    # a run whose sweep finds another run sweeping (cache/locks/sweep.lock) leaves it to that one
    with hold(proj.cache / "locks" / "sweep.lock"):
        run = run_doit(config, "image:demo", check=True)
    assert "cleanup" not in run.err and all(os.path.lexists(p) for p in dead) and work.exists()
    # the next run, even with nothing to build, sweeps what killed runs left
    run = run_doit(config, "image:demo", check=True)
    assert run.ran() == []
    assert not work.exists()
    assert [p for p in dead if os.path.lexists(p)] == []
    assert len(re.findall(r"^cleanup: removed 12 leftover\(s\) of killed runs", run.err, re.M)) == 1, run.err
    assert all(p.exists() for p in live)            # a live process's scratch is left alone
    assert failed.exists()
    # `doit reclaim` takes the rest: failed work folders, upstream tests' work folders,
    # superseded images; not a work folder whose lock another run holds
    (images / "demo-0.9.tar").write_bytes(b"y" * 20_000)
    upstream = proj.cache / "work" / "demo" / "a.test"
    (upstream / "build").mkdir(parents=True)
    with hold(stage / ".b.lock"):
        out = run_doit(config, "reclaim", check=True)
    assert f"reclaim: kept {failed}: another run is using it" in out.err
    assert failed.exists()
    assert "work/demo/a.test (work folder of an upstream test" in out.out
    assert "images/demo-0.9.tar (image demo at another version than 1.0, 20.0 KB)" in out.out
    assert re.search(r"reclaim: 2 removed, [\d.]+ KB reclaimed", out.out), out.out
    out = run_doit(config, "reclaim", check=True)
    assert "work/demo/b (work folder of a failed or interrupted build" in out.out
    assert re.search(r"reclaim: 1 removed, 6 bytes reclaimed", out.out), out.out
    assert not failed.exists() and not upstream.exists() and (images / "demo-1.0.tar").is_file()
    for path in live:
        subprocess.run(["rm", "-rf", str(path)], check=True)


def test_sweep_runs_once_per_run(tmp_path):
    from types import SimpleNamespace

    from tasks.build import leftovers
    cfg = SimpleNamespace(cache=tmp_path / "cache")
    first = cfg.cache / "stage" / "demo" / f".a.new-{dead_pid()}-1"
    first.mkdir(parents=True)
    said = []
    assert [p for p, _w, _s in leftovers.sweep(cfg, said.append)] == [first]
    second = first.with_name(f".a.old-{dead_pid()}-1")
    second.mkdir()
    assert leftovers.sweep(cfg, said.append) == [] and second.exists()
    assert len(said) == 1


# ---- an edited stage tree -------------------------------------------------------------------
def _repair(proj, config, text):
    command = re.search(r"Repair: `([^`]+)`", text).group(1)
    for part in command.split("&&"):
        words = part.split()
        assert words[0] == "doit"
        run_doit(config, *words[1:], check=True)
    return command


@pytest.mark.parametrize("edit", ["same-size", "append", "delete", "add"])
def test_edited_stage_tree_is_detected_and_repaired(tmp_path, edit):
    proj = script_project(tmp_path, {"a": writes("a", "original"), "b": writes("b")})
    config = proj.root / "config.yaml"
    run_doit(config, "image:demo", check=True)
    tree = proj.cache / "stage" / "demo" / "a" / "tree"
    target = tree / "share" / "a"
    before = target.stat()
    if edit == "same-size":                 # content changed, size and mtime kept
        target.write_text("ORIGINAL\n")
        os.utime(target, ns=(before.st_atime_ns, before.st_mtime_ns))
    elif edit == "append":
        with open(target, "a") as fh:
            fh.write("more\n")
    elif edit == "delete":
        target.unlink()
    else:
        (tree / "share" / "extra").write_text("x\n")
    found = run_doit(config, "verify")
    assert found.returncode != 0
    assert "build:demo/a: its output" in found.text and "Repair: `doit clean build:demo/a" in found.text
    assert "Traceback" not in found.text
    if edit != "same-size":
        # the quick check (sizes, types, modes, mtimes) refuses to export it
        run_doit(config, "clean", "image:demo", check=True)
        export = run_doit(config, "image:demo")
        assert export.returncode != 0 and "does not match its manifest" in export.text
        assert not (proj.cache / "images" / "demo-1.0.tar").exists()
    command = _repair(proj, config, found.text)
    assert command == "doit clean build:demo/a && doit build:demo/a"
    assert run_doit(config, "verify").returncode == 0
    assert target.read_text() == "original\n"
    assert not (tree / "share" / "extra").exists()
    assert run_doit(config, "image:demo", check=True).returncode == 0


def test_quick_check_before_assemble_and_cache_push_and_without_stat_json(tmp_path):
    proj = script_project(tmp_path, {"a": writes("a", "original"), "b": writes("b")})
    config = proj.root / "config.yaml"
    run_doit(config, "assemble:demo", check=True)
    target = proj.cache / "stage" / "demo" / "a" / "tree" / "share" / "a"
    assembled = proj.cache / "stage" / "demo.manifest.json"

    def forget_assembly():                  # assemble:demo runs again (no clean action)
        assembled.unlink(missing_ok=True)
        (proj.cache / "stage" / "demo.assembled.json").unlink()
    with open(target, "a") as fh:
        fh.write("more\n")
    # cache-push: refuses before it asks the registry (nothing listens at that port)
    proj.write_config(buildcache={"url": "http://127.0.0.1:9", "repository": "dappdeps-test"})
    push = run_doit(config, "cache-push:demo")
    assert push.returncode != 0 and "Traceback" not in push.text
    assert "build:demo/a: its output" in push.text and "does not match its manifest" in push.text
    assert "share/a: 14 bytes, the manifest says 9" in push.text
    assert "does not answer" not in push.text
    proj.write_config()
    # assemble: names the edited output instead of laying it into the tree
    forget_assembly()
    run = run_doit(config, "assemble:demo")
    assert run.returncode != 0 and "does not match its manifest" in run.text, run.text
    assert "Repair: `doit clean build:demo/a && doit build:demo/a`" in run.text
    assert not assembled.exists()
    run_doit(config, "clean", "build:demo/a", check=True)
    run_doit(config, "assemble:demo", check=True)
    # a touched file (same size, new mtime): the quick check sees it through stat.json ...
    os.utime(target, ns=(target.stat().st_atime_ns, target.stat().st_mtime_ns + 10**9))
    forget_assembly()
    run = run_doit(config, "assemble:demo")
    assert run.returncode != 0 and "share/a: modified after the build (mtime changed)" in run.text
    # ... and an output published before stat.json existed gets the check without mtimes
    (proj.cache / "stage" / "demo" / "a" / "stat.json").unlink()
    run_doit(config, "assemble:demo", check=True)
    assert assembled.is_file()
    with open(target, "a") as fh:            # sizes are still checked
        fh.write("more\n")
    forget_assembly()
    run = run_doit(config, "assemble:demo")
    assert run.returncode != 0 and "share/a: 14 bytes, the manifest says 9" in run.text
