"""Dependencies cannot change under a build (issue 14, point 5), on small script
components (real flock, real threads and processes, real bwrap builds through doit):

- a build holds the outputs it mounts shared (cache/stage/<dist>/.<comp>.output.lock),
  from its key to its push; replacing or removing one of them waits (exclusive);
- an input that changes anyway (edited by hand, an old dappdeps) is caught before the
  publish and before the push: nothing published, no key, nothing pushed;
- builds sharing inputs still run at once.
docs/engine.md "Fault model" names these tests."""
import json
import os
import shutil
import subprocess
import sys
import threading
import time
import types

import pytest

from conftest import REPO, doit_env, run_doit
from fixtures import FixtureProject, wait_for
from registryfixture import RegistryServer, available
from test_faults import Watched

from tasks.build import builder, stagedir
from tasks.core import files
from tasks.model.component import Component
from tasks.model.config import load_config

REPOSITORY = "test/cache"


def writes(name, text=None):
    return f"mkdir -p $PREFIX/share\necho {text or name} > $PREFIX/share/{name}\n"


def waits(name, reads="lib"):
    """A build that says it started, then waits (at most 15 s) for the test's go."""
    return ('ls "$PREFIX/share" > $SRCDIR/seen-local\n'
            'ls "${PREFIX_TOOLS:-/nonexistent}/share" > $SRCDIR/seen-tools 2>/dev/null || true\n'
            "touch $SRCDIR/started\n"
            "for i in $(seq 300); do [ -e $SRCDIR/go ] && break; sleep 0.05; done\n"
            "[ -e $SRCDIR/go ]\n"
            f"mkdir -p $PREFIX/share\ncat $PREFIX/share/{reads} > $PREFIX/share/{name}\n")


def make_project(root, demo, depends=None, tools=None, **config):
    """Distribution `demo` of script components {name: script}; with `tools`, a second
    distribution `tools` that demo uses."""
    proj = FixtureProject(root)
    proj.add_package("src", "1.0", {"README": "a source\n"})
    source = proj.recipes["src"]["sources"]
    for name, script in {**(tools or {}), **demo}.items():
        proj.write_recipe({"name": name, "version": "1.0", "description": f"component {name}",
                           "license": "MIT", "sources": source, "build": "script",
                           "depends": (depends or {}).get(name, []), "script": script})
    if tools:
        proj.add_distribution("tools", list(tools))
    proj.add_distribution("demo", list(demo), **({"uses": ["tools"]} if tools else {}))
    proj.write_config(**config)
    return proj


def config_of(proj):
    path = proj.root / "config.yaml"
    os.environ["DAPPDEPS_CONFIG"] = str(path)
    try:
        return load_config(path.parent)
    finally:
        del os.environ["DAPPDEPS_CONFIG"]


def stage(proj, comp, dist="demo"):
    return proj.cache / "stage" / dist / comp


def work(proj, comp, dist="demo"):
    return proj.cache / "work" / dist / comp


def output_lock(proj, comp, dist="demo"):
    return proj.cache / "stage" / dist / f".{comp}.output.lock"


def lib_and_app(tmp_path, **config):
    """lib, and app (depends on lib) waiting for the test's go; lib built."""
    proj = make_project(tmp_path, {"lib": writes("lib"), "app": waits("app")},
                        depends={"app": ["lib"]}, **config)
    run_doit(proj.root / "config.yaml", "build:demo/lib", check=True)
    return proj


def new_output(comp, text):
    """A complete output folder for `comp` next to its stage (a copy, one file changed)."""
    new = stagedir.scratch(comp, "new")
    shutil.copytree(comp.stage_dir, new, symlinks=True)
    (new / "key.json").unlink()
    (new / "tree" / "share" / comp.name).write_text(text + "\n")
    return new


def rewrite_content(key_json):
    """What an old dappdeps or a hand edit does: another output, no lock taken."""
    data = json.loads(key_json.read_text())
    for field in ("content", "manifest"):
        if field in data:
            data[field] = "0" * 64
    key_json.write_text(json.dumps(data))


def tags(reg, comp, dist="demo"):
    folder = (reg.storage / "docker/registry/v2/repositories" / REPOSITORY /
              f"{dist}-{comp}" / "_manifests/tags")
    return sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []


@pytest.fixture
def reg(tmp_path):
    assert available(), "docker-registry is not installed: run ./setup"
    with RegistryServer(tmp_path / "registry") as server:
        yield server


# ---- the locks themselves -------------------------------------------------------------
def _in_thread(target, timeout=10):
    """Run target() in a thread; its result, or a failure when it hangs."""
    out = {}
    thread = threading.Thread(target=lambda: out.update(value=target()), daemon=True)
    thread.start()
    thread.join(timeout)
    assert not thread.is_alive(), "hangs (a thread waits for a lock it holds itself)"
    return out.get("value")


def test_shared_and_exclusive_between_threads_of_one_process(tmp_path):
    path = tmp_path / ".lib.output.lock"
    both = threading.Barrier(2, timeout=5)
    release = threading.Event()
    order = []

    def user(name):
        with files.flocked(path, shared=True):
            both.wait()                 # both hold it at once, or this breaks
            order.append(f"{name} holds")
            release.wait(5)
            order.append(f"{name} releases")

    def replacer():
        with files.flocked(path) as waited:
            order.append(f"replacer holds (waited: {waited})")

    users = [threading.Thread(target=user, args=(n,)) for n in ("a", "b")]
    for thread in users:
        thread.start()
    assert wait_for(lambda: len(order) == 2, timeout=5)
    with files.flocked(path, wait=False) as free:
        assert free is None             # exclusive: refused while shared holders hold it
    with files.flocked(path, wait=False, shared=True) as free:
        assert free is False            # shared: granted at once
    exclusive = threading.Thread(target=replacer)
    exclusive.start()
    time.sleep(0.3)
    assert exclusive.is_alive()
    release.set()
    for thread in users + [exclusive]:
        thread.join(5)
    assert order[-1] == "replacer holds (waited: True)", order
    assert order[2:4] == ["a releases", "b releases"] or order[2:4] == ["b releases", "a releases"]


def test_one_thread_never_waits_for_itself(tmp_path):
    cfg = types.SimpleNamespace(stage_of=lambda d, c: tmp_path / "stage" / d / c)
    comp = types.SimpleNamespace(cfg=cfg, dist=types.SimpleNamespace(name="demo"), name="lib",
                                 task="build:demo/lib")

    def nested_exclusive():
        with stagedir.replacing(comp):
            with stagedir.replacing(comp):     # build() around publish, replace() inside
                with stagedir.using(cfg, [("demo", "lib")], "build:demo/lib"):
                    return "done"
    assert _in_thread(nested_exclusive) == "done"

    def replace_what_it_uses():
        with stagedir.using(cfg, [("demo", "lib"), ("demo", "zlib")], "build:demo/app"):
            with pytest.raises(RuntimeError, match="uses the output it is replacing"):
                with stagedir.replacing(comp):
                    pass
            return "refused"
    assert _in_thread(replace_what_it_uses) == "refused"
    # and all of it is released: another thread gets it exclusively at once
    assert _in_thread(lambda: _try_exclusive(output_lock_path(tmp_path))) is False


def output_lock_path(tmp_path):
    return tmp_path / "stage" / "demo" / ".lib.output.lock"


def _try_exclusive(path):
    with files.flocked(path, wait=False) as free:
        return free


# ---- (1) a replacement waits for the builds that use the output -------------------------
@pytest.mark.parametrize("by", ["thread", "process", "clean"])
def test_replacing_a_dependency_waits_for_the_build_that_uses_it(tmp_path, capfd, by):
    """thread: the build runs in a thread of this process (builder.build), another thread
    replaces its dependency; process: `doit build:` runs, this process replaces;
    clean: `doit build:` runs, `doit clean build:demo/lib` removes the dependency."""
    proj = lib_and_app(tmp_path)
    config = proj.root / "config.yaml"
    cfg = config_of(proj)
    lib, app = Component(cfg, "demo", "lib"), Component(cfg, "demo", "app")
    if by == "thread":
        built = {}
        run = threading.Thread(target=lambda: built.update(result=builder.build(app, "test")))
        run.start()
    else:
        run = Watched(config, "build:demo/app")
    assert wait_for(lambda: (work(proj, "app") / "src" / "started").exists(), timeout=60)

    seen = {}
    if by == "clean":
        other = Watched(config, "clean", "build:demo/lib")
        # (doit keeps a clean action's stderr to itself: no "waiting" line to read here)
        assert wait_for(lambda: "function remove" in "".join(other.out), timeout=30), \
            "".join(other.out + other.err)[-3000:]
        waiting = other.proc
    else:
        def replace():
            stagedir.replace(lib, new_output(lib, "lib2"))
            seen["app key when replaced"] = (stage(proj, "app") / "key.json").exists()
        waiting = threading.Thread(target=replace)
        waiting.start()
    time.sleep(1)
    still = waiting.poll() is None if by == "clean" else waiting.is_alive()
    assert still, "the dependency was replaced while a build used it"
    assert (stage(proj, "lib") / "tree/share/lib").read_text() == "lib\n"
    (work(proj, "app") / "src" / "go").touch()

    if by == "thread":
        run.join(60)
        assert built["result"] is True, built
    else:
        out, err = run.finish(60)
        assert run.proc.returncode == 0, (out + err)[-3000:]
    if by == "clean":
        out, err = other.finish(60)
        assert other.proc.returncode == 0, (out + err)[-3000:]
        assert not stage(proj, "lib").exists()
    else:
        waiting.join(30)
        assert seen["app key when replaced"] is True
        assert (stage(proj, "lib") / "tree/share/lib").read_text() == "lib2\n"
        assert "build:demo/lib: waiting for builds that use it" in capfd.readouterr().err
    # the build used the dependency it started with, and counts
    assert (stage(proj, "app") / "tree/share/app").read_text() == "lib\n"
    assert (stage(proj, "app") / "key.json").exists()


# ---- (2) an input changed without the lock: refused -------------------------------------
def test_input_changed_during_the_build_is_refused_not_published_not_pushed(tmp_path, reg):
    proj = lib_and_app(tmp_path, buildcache={"url": reg.url, "repository": REPOSITORY})
    assert tags(reg, "lib"), "lib was pushed: the build cache is on"
    run = Watched(proj.root / "config.yaml", "build:demo/app")
    assert wait_for(lambda: (work(proj, "app") / "src" / "started").exists(), timeout=60)
    rewrite_content(stage(proj, "lib") / "key.json")
    (work(proj, "app") / "src" / "go").touch()
    out, err = run.finish(60)
    assert run.proc.returncode != 0, (out + err)[-3000:]
    assert ("build:demo/app: its input demo/lib (content " in err
            and "changed while it was built" in err), err[-3000:]
    assert not stage(proj, "app").exists()           # not published, no key.json
    assert not work(proj, "app").exists()            # work folder removed
    assert tags(reg, "app") == [] and "build:demo/app: pushed" not in err
    assert "changed while it was built" in (proj.cache / "logs/demo/app.log").read_text()


PUSH_AFTER_CHANGE = """
import json, sys
from tasks.build import builder
from tasks.model.project import project
from tasks.model.component import Component
from tasks.stages import build as stage

real = builder.build

def build_then_change(comp, reason):
    result = real(comp, reason)
    key = comp.cfg.stage_of("demo", "lib") / "key.json"
    data = json.loads(key.read_text())
    for field in ("content", "manifest"):
        if field in data:
            data[field] = "0" * 64
    key.write_text(json.dumps(data))
    return result

builder.build = build_then_change
result = stage.make(Component(project, "demo", "app"))
print("RESULT", type(result).__name__, getattr(result, "message", result), flush=True)
"""


def test_input_changed_after_the_publish_is_not_pushed(tmp_path, reg):
    """The window between publish and push: make() reads the inputs again before it
    pushes (the change is forced right after builder.build returned)."""
    proj = make_project(tmp_path, {"lib": writes("lib"), "app": writes("app")},
                        depends={"app": ["lib"]},
                        buildcache={"url": reg.url, "repository": REPOSITORY})
    config = proj.root / "config.yaml"
    run_doit(config, "build:demo/lib", check=True)
    assert tags(reg, "lib")
    proc = subprocess.run([sys.executable, "-c", PUSH_AFTER_CHANGE], env=doit_env(config),
                          cwd=REPO, capture_output=True, text=True, timeout=120)
    text = proc.stdout + proc.stderr
    assert "RESULT TaskFailed build:demo/app: its input demo/lib (content " in text, text[-3000:]
    assert "nothing is pushed" in text
    assert tags(reg, "app") == []


# ---- (3) shared locks do not serialize builds -------------------------------------------
def test_builds_sharing_inputs_run_at_once(tmp_path):
    """a and b both mount lib and tools/cc: with `-n 2` they wait for each other's start,
    which only works when both run at once. Meanwhile every output they see in their
    sandboxes (their own prefix and the used one) is held shared."""
    proj = make_project(tmp_path, {"lib": writes("lib"), "a": waits("a"), "b": waits("b")},
                        depends={"a": ["lib", "cc"], "b": ["lib", "cc"]},
                        tools={"cc": writes("cc"), "other": writes("other")})
    run = Watched(proj.root / "config.yaml", "-n", "2", "build:demo/a", "build:demo/b")
    started = [work(proj, n) / "src" / "started" for n in ("a", "b")]
    assert wait_for(lambda: all(p.exists() for p in started), timeout=60), \
        "".join(run.out + run.err)[-3000:]
    for name in ("a", "b"):
        src = work(proj, name) / "src"
        local = (src / "seen-local").read_text().split()
        used = (src / "seen-tools").read_text().split()
        assert local == ["lib"] and "cc" in used, (local, used)
        for dist, comp in [("demo", c) for c in local] + [("tools", c) for c in used]:
            with files.flocked(output_lock(proj, comp, dist), wait=False) as free:
                assert free is None, f"{dist}/{comp} is mounted by {name} but not held"
            with files.flocked(output_lock(proj, comp, dist), wait=False, shared=True) as free:
                assert free is False
    for path in started:
        (path.parent / "go").touch()
    out, err = run.finish(60)
    assert run.proc.returncode == 0, (out + err)[-3000:]
    for name in ("a", "b"):
        assert (stage(proj, name) / "tree/share" / name).read_text() == "lib\n"
        assert (stage(proj, name) / "key.json").exists()
    # released: the outputs can be replaced now
    for dist, comp in (("demo", "lib"), ("tools", "cc")):
        with files.flocked(output_lock(proj, comp, dist), wait=False) as free:
            assert free is False
