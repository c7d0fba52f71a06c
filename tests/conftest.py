import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))


class DoitRun:
    def __init__(self, proc):
        self.proc = proc
        self.returncode = proc.returncode
        self.out = proc.stdout
        self.err = proc.stderr
        self.text = proc.stdout + proc.stderr

    def ran(self, prefix="build:"):
        """Task names doit executed (lines '.  name'), filtered by prefix."""
        return sorted(m.group(1) for m in re.finditer(r"^\.  (\S+)", self.out, re.M)
                      if m.group(1).startswith(prefix))

    def skipped(self, prefix="build:"):
        return sorted(m.group(1) for m in re.finditer(r"^-- (\S+)", self.out, re.M)
                      if m.group(1).startswith(prefix))


def doit_env(config):
    env = dict(os.environ)
    env["DAPPDEPS_CONFIG"] = str(config)
    env["PYTHONHASHSEED"] = "0"
    env.pop("DAPPDEPS_OFFLINE", None)
    env.pop("DAPPDEPS_CACHE_DIR", None)      # a fixture's cache is the one its config names
    return env


def run_doit(config, *args, timeout=600, check=False):
    proc = subprocess.run([sys.executable, "-m", "doit", "-f", str(REPO / "dodo.py"), *args],
                          env=doit_env(config), capture_output=True, text=True, timeout=timeout)
    run = DoitRun(proc)
    if check and proc.returncode != 0:
        raise AssertionError(f"doit {' '.join(args)} failed ({proc.returncode}):\n{run.text[-4000:]}")
    return run


@pytest.fixture
def doit():
    return run_doit


@pytest.fixture(scope="session", autouse=True)
def test_buildroot():
    """The fixture projects' build root (tests/fixtures.py TEST_BUILDROOT): made with
    mmdebstrap the first time, reused while its spec is unchanged."""
    from types import SimpleNamespace
    from fixtures import TEST_BUILDROOT, TEST_BUILDROOT_DIR
    from tasks.build import buildroot
    cfg = SimpleNamespace(data={"buildroot": dict(TEST_BUILDROOT, mirror="")},
                          path=REPO / "tests" / "fixtures.py", buildroot_dir=TEST_BUILDROOT_DIR)
    if buildroot.identity(cfg) is None:
        buildroot.create(cfg, TEST_BUILDROOT_DIR / "buildroot.log")
    return buildroot.tree(cfg)
