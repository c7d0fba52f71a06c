"""Faults around the engine (issue 18), on small script components (real bwrap, real doit):
two runs at once, signals with `-n 2`, leftovers of killed runs, an edited stage tree.
The full-disk tests are in test_faults_disk.py. docs/engine.md "Fault model" lists what
survives what, next to these tests."""
import json
import os
import re
import signal
import subprocess
import sys
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
    runs = [start_doit(config, *targets) for _ in range(2)]
    outs = [p.communicate(timeout=180) for p in runs]
    text = "".join(o + e for o, e in outs)
    for proc, (out, err) in zip(runs, outs):
        assert proc.returncode == 0, (out + err)[-3000:]
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


# ---- signals --------------------------------------------------------------------------------
def _signal_project(tmp_path):
    scripts = {"fast": writes("fast"),
               "slow1": "touch $SRCDIR/started\nsleep 31.1\nmkdir -p $PREFIX/share\n",
               "slow2": "touch $SRCDIR/started\nsleep 31.2\nmkdir -p $PREFIX/share\n",
               "after": writes("after")}
    proj = script_project(tmp_path, scripts, depends={"after": ["slow1"]})
    run_doit(proj.root / "config.yaml", "fetch", "build:demo/fast", check=True)
    return proj


def _stop_both_slow(proj, proc, sig):
    for name in ("slow1", "slow2"):
        assert wait_for((proj.cache / f"work/demo/{name}/src/started").exists, timeout=120), \
            proc.communicate(timeout=5)
    time.sleep(0.3)
    sent = time.monotonic()
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=60)
    took = time.monotonic() - sent
    # no build process is left, in either worker thread
    assert not alive("sleep 31.1") and not alive("sleep 31.2")
    return out, err, took


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT, signal.SIGHUP])
def test_signal_stops_every_build_of_plain_doit(tmp_path, sig):
    proj = _signal_project(tmp_path)
    config = proj.root / "config.yaml"
    proc = start_doit(config, "-n", "2", "--continue", "assemble:demo")
    out, err, took = _stop_both_slow(proj, proc, sig)
    assert proc.returncode == 128 + sig, (out + err)[-3000:]
    assert "Traceback" not in out + err
    assert f"stopped by {signal.Signals(sig).name}" in err
    assert took < 10
    assert key(proj, "fast").is_file()
    assert not key(proj, "slow1").exists() and not key(proj, "slow2").exists()
    assert not key(proj, "after").exists()
    # the next run builds what was left, and only that
    proj.write_recipe(dict(proj.recipes["slow1"], script=writes("slow1")))
    proj.write_recipe(dict(proj.recipes["slow2"], script=writes("slow2")))
    again = run_doit(config, "-n", "2", "assemble:demo", check=True)
    assert again.ran() == ["build:demo/after", "build:demo/slow1", "build:demo/slow2"]


def test_sigterm_nightly_n2_report_matches_disk(tmp_path):
    proj = _signal_project(tmp_path)
    config = proj.root / "config.yaml"
    proc = start_doit(config, "-n", "2", nightly=True)
    out, err, took = _stop_both_slow(proj, proc, signal.SIGTERM)
    assert proc.returncode == 143, (out + err)[-3000:]
    assert "Traceback" not in out + err
    report = json.loads((proj.cache / "reports" / "latest" / "report.json").read_text())
    assert report["result"] == "interrupted" and report["exit_code"] == 143
    status = {t["name"]: t["status"] for t in report["tasks"]}
    assert status["build:demo/slow1"] == status["build:demo/slow2"] == "interrupted"
    assert status["build:demo/after"] == "not-run"
    for name in ("fast", "slow1", "slow2", "after"):     # the report says what is on disk
        said = status[f"build:demo/{name}"]
        if said in ("ran", "up-to-date"):
            assert key(proj, name).is_file(), (name, status)
        elif said in ("interrupted", "failed", "blocked"):
            assert not key(proj, name).exists(), (name, status)
    assert took < 15


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
            images / f".demo-1.0.legal.new-{pid}-9", stage / f".a.new-{pid}-5",
            images / f".demo-1.0.tar.strip-{pid}-4", images / ".strip-abc123"]
    live = [images / f".demo-1.0.tar.tmp{os.getpid()}-1", stage / f".b.new-{os.getpid()}-2"]
    for path in dead + live:
        if "new" in path.name or "strip" in path.name:
            path.mkdir()
            (path / "f").write_bytes(b"x" * 1000)
        else:
            path.write_bytes(b"x" * 5000)
    # the next run, even with nothing to build, sweeps what killed runs left
    run = run_doit(config, "image:demo", check=True)
    assert run.ran() == []
    assert "cleanup: removed" in run.err
    assert not work.exists()
    assert [p for p in dead if os.path.lexists(p)] == []
    assert all(p.exists() for p in live)            # a live process's scratch is left alone
    assert failed.exists()
    # `doit reclaim` takes the rest: failed work folders, superseded images
    (images / "demo-0.9.tar").write_bytes(b"y" * 20_000)
    out = run_doit(config, "reclaim", check=True)
    assert "work/demo/b (work folder of a failed or interrupted build" in out.out
    assert "images/demo-0.9.tar (image demo at another version than 1.0, 20.0 KB)" in out.out
    assert re.search(r"reclaim: 2 removed, [\d.]+ KB reclaimed", out.out), out.out
    assert not failed.exists() and (images / "demo-1.0.tar").is_file()
    for path in live:
        subprocess.run(["rm", "-rf", str(path)], check=True)


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
