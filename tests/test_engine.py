"""The build engine, end to end on small generated packages (real compiles, real bwrap)."""
import json
import os
import signal
import subprocess
import sys


from conftest import REPO, doit_env, run_doit
from fixtures import HELLO, LIBGREET, FixtureProject, demo_project, wait_for


def stage(proj, comp, dist="demo"):
    return proj.cache / "stage" / dist / comp


def tree_files(proj, comp, dist="demo"):
    doc = json.loads((stage(proj, comp, dist) / "manifest.json").read_text())
    return sorted(e["path"] for e in doc["entries"] if e["type"] != "dir")


def test_outputs_hold_only_each_components_files(tmp_path):
    proj = demo_project(tmp_path)
    run = run_doit(proj.root / "config.yaml", check=True)
    assert run.ran() == ["build:demo/hello", "build:demo/libgreet"]
    assert tree_files(proj, "libgreet") == ["include/greet.h", "lib/libgreet.a", "lib/libgreet.so"]
    # hello compiled against libgreet (visible at the prefix) but captured only itself.
    assert tree_files(proj, "hello") == ["bin/hello"]
    entry = json.loads((stage(proj, "hello") / "manifest.json").read_text())["entries"][-1]
    assert entry["type"] == "file" and len(entry["sha256"]) == 64 and entry["mode"] == 0o755
    binary = stage(proj, "hello") / "tree/bin/hello"
    assert subprocess.run([binary], capture_output=True, text=True).stdout == "hello: GREETING\n"
    assembled = json.loads((proj.cache / "stage/demo.manifest.json").read_text())
    owners = {e["path"]: e["component"] for e in assembled["entries"]}
    assert owners["bin/hello"] == "hello" and owners["lib/libgreet.so"] == "libgreet"
    again = run_doit(proj.root / "config.yaml", check=True)
    assert again.ran("") == [] and "build:demo/hello" in again.skipped()


def _three(tmp_path):
    proj = FixtureProject(tmp_path)
    proj.add_package("libgreet", "1.0", LIBGREET)
    proj.add_package("hello", "1.0", HELLO, depends=["libgreet"])
    proj.add_package("other", "1.0", {"Makefile": "all:\ninstall:\n\tmkdir -p $(PREFIX)/share && echo o > $(PREFIX)/share/other\n"})
    proj.add_distribution("demo", ["hello", "libgreet", "other"])
    proj.write_config()
    return proj


def test_changed_recipe_rebuilds_it_and_dependents_only(tmp_path):
    proj = _three(tmp_path)
    config = proj.root / "config.yaml"
    run_doit(config, check=True)
    files = dict(LIBGREET, **{"greet.c": LIBGREET["greet.c"].replace("GREETING", "CHANGED")})
    proj.add_package("libgreet", "1.0", files)
    run = run_doit(config, check=True)
    assert run.ran() == ["build:demo/hello", "build:demo/libgreet"]
    assert "build:demo/other" in run.skipped()
    assert "sources changed" in run.err
    out = subprocess.run([stage(proj, "hello") / "tree/bin/hello"], capture_output=True, text=True)
    assert out.stdout == "hello: CHANGED\n"


def test_identical_rebuild_cuts_off_dependents(tmp_path):
    proj = _three(tmp_path)
    config = proj.root / "config.yaml"
    run_doit(config, check=True)
    recipe = dict(proj.recipes["libgreet"], environment={"UNUSED": "changes the key, not the output"})
    proj.write_recipe(recipe)
    run = run_doit(config, check=True)
    assert run.ran() == ["build:demo/libgreet"]
    assert "build:demo/hello" in run.skipped()


def test_sigkill_mid_compile_rebuilds_only_that_component(tmp_path):
    proj = _three(tmp_path)
    slow = {"name": "slow", "version": "1.0", "description": "a slow compile",
            "license": "MIT", "sources": proj.recipes["other"]["sources"], "depends": ["libgreet"],
            "build": "script",
            "script": "touch $SRCDIR/started\nmkdir -p $PREFIX/share\necho half > $PREFIX/share/slow\n"
                      "sleep 4.31\necho done > $PREFIX/share/slow\n"}
    proj.write_recipe(slow)
    proj.add_distribution("demo", ["hello", "libgreet", "other", "slow"])
    config = proj.write_config()
    proc = subprocess.Popen([sys.executable, "-m", "doit", "-f", str(REPO / "dodo.py")],
                            env=doit_env(config), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    started = proj.cache / "work/demo/slow/src/started"
    assert wait_for(started.exists, timeout=120), proc.communicate()
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    # The sandbox died with doit: no build keeps writing into the work folder.
    assert wait_for(lambda: subprocess.run(["pgrep", "-f", "^sleep 4.31$"]).returncode != 0, timeout=10)
    assert not (stage(proj, "slow") / "key.json").exists()
    done = [c for c in ("hello", "libgreet", "other") if (stage(proj, c) / "key.json").exists()]
    assert "libgreet" in done
    run = run_doit(config, check=True)
    rebuilt = {t.split("/")[1] for t in run.ran()}
    assert rebuilt == {"slow"} | ({"hello", "other"} - set(done))
    assert (stage(proj, "slow") / "tree/share/slow").read_text() == "done\n"


def test_writing_outside_the_sandbox_fails_clearly(tmp_path):
    proj = demo_project(tmp_path)
    for target in ("/etc/dappdeps-test", "$HOME/.config", "/.dapp/test/other/1.0/x"):
        recipe = dict(proj.recipes["libgreet"], build="script", script=f"echo x > {target}\n")
        proj.write_recipe(recipe)
        run = run_doit(proj.root / "config.yaml")
        assert run.returncode != 0
        assert "outside its sandbox" in run.text, run.text[-2000:]
        assert "Traceback" not in run.text
    assert not os.path.exists("/etc/dappdeps-test")


def test_failing_compile_shows_log_tail_and_path(tmp_path):
    proj = demo_project(tmp_path)
    files = dict(LIBGREET, **{"greet.c": "this is not C;\n"})
    proj.add_package("libgreet", "1.0", files)
    run = run_doit(proj.root / "config.yaml")
    assert run.returncode != 0
    log = proj.cache / "logs/demo/libgreet.log"
    assert str(log) in run.err
    assert "Last" in run.err and "greet.c" in run.err and "error" in run.err
    assert "error" in log.read_text()
    assert not (stage(proj, "libgreet") / "key.json").exists()


def test_continue_builds_independent_branches(tmp_path):
    proj = _three(tmp_path)
    recipe = dict(proj.recipes["libgreet"], build="script", script="exit 3\n")
    proj.write_recipe(recipe)
    run = run_doit(proj.root / "config.yaml", "--continue")
    assert run.returncode != 0
    assert (stage(proj, "other") / "key.json").exists()
    assert not (stage(proj, "hello") / "key.json").exists()


def test_reinstalling_a_dependencys_path_needs_replaces(tmp_path):
    proj = FixtureProject(tmp_path)
    proj.add_package("first", "1.0", {"Makefile": "all:\ninstall:\n\tmkdir -p $(PREFIX)/bin && echo one > $(PREFIX)/bin/tool\n"})
    proj.add_package("second", "1.0", {"Makefile": "all:\ninstall:\n\tmkdir -p $(PREFIX)/bin && echo two > $(PREFIX)/bin/tool\n"},
                     depends=["first"])
    proj.add_distribution("demo", ["first", "second"])
    config = proj.write_config()
    run = run_doit(config)
    assert run.returncode != 0
    assert "bin/tool" in run.text and "'first'" in run.text and "replaces" in run.text
    proj.write_recipe(dict(proj.recipes["second"], replaces=["first"]))
    run_doit(config, check=True)
    assembled = json.loads((proj.cache / "stage/demo.manifest.json").read_text())
    tool = next(e for e in assembled["entries"] if e["path"] == "bin/tool")
    assert tool["component"] == "second"


def test_independent_components_installing_one_path_conflict(tmp_path):
    proj = FixtureProject(tmp_path)
    make = {"Makefile": "all:\ninstall:\n\tmkdir -p $(PREFIX)/bin && echo $(NAME) > $(PREFIX)/bin/tool\n"}
    proj.add_package("left", "1.0", make)
    proj.add_package("right", "1.0", make)
    proj.add_distribution("demo", ["left", "right"])
    run = run_doit(proj.write_config())
    assert run.returncode != 0
    assert "bin/tool" in run.text and "'left'" in run.text and "'right'" in run.text
