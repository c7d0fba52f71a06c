"""check:<dist>@arm64 without arm64 hardware (issue 16): a real aarch64 program (Debian's
busybox-static for arm64) passes the ELF audit of an arm64 distribution and runs in the
empty root under qemu-user-static (binfmt_misc, F flag); in an amd64 distribution the
audit flags it, although qemu would run it there too."""
import hashlib
import json

from conftest import run_doit
from fixtures import FixtureProject
from foreignbin import busybox_arm64
from tasks.model.platforms import PLATFORMS
from tasks.core import emulation

SMOKE = "$PREFIX/bin/busybox sh -c 'test \"$($PREFIX/bin/busybox uname -m)\" = aarch64'"


def _project(tmp_path, platforms):
    binary = busybox_arm64()
    proj = FixtureProject(tmp_path / "proj")
    proj.add_package("xgcc", "1.0", {"Makefile": "all:\ninstall:\n"})
    proj.add_package(
        "busybox", "1.0",
        {"Makefile": "all:\ninstall:\n\tmkdir -p $(PREFIX)/bin\n"
                     "\tinstall -m 755 bb/busybox $(PREFIX)/bin/busybox\n"},
        smoke=[SMOKE])
    recipe = proj.recipes["busybox"]
    recipe["sources"].append({"file": "busybox", "dest": "bb", "extract": False,
                              "sha256": hashlib.sha256(binary.read_bytes()).hexdigest(),
                              "urls": [binary.as_uri()]})
    proj.write_recipe(recipe)
    proj.add_distribution("xtc", ["xgcc"], platforms=["linux/amd64"])
    proj.add_distribution("bb", ["busybox"], platforms=platforms)
    return proj, proj.write_config(cross={"linux/arm64": "xtc"})


def test_binfmt_misc_runs_arm64_programs_here():
    """./setup registered Debian's qemu-aarch64 entry with the F flag."""
    assert emulation.problem(PLATFORMS["linux/arm64"]) is None, \
        emulation.problem(PLATFORMS["linux/arm64"])
    entry = emulation.registration("qemu-aarch64")
    assert entry["enabled"] and "F" in entry["flags"]


def test_without_binfmt_misc_the_problem_says_how(tmp_path):
    text = emulation.problem(PLATFORMS["linux/arm64"], root=tmp_path)
    assert f"binfmt_misc is not mounted at {tmp_path}" in text and "./setup" in text


def test_arm64_busybox_passes_the_arm64_check_under_qemu(tmp_path):
    proj, config = _project(tmp_path, ["linux/amd64", "linux/arm64"])
    run = run_doit(config, "check:bb@arm64", check=True)
    assert "build:bb/busybox@arm64" in run.text
    assert (proj.cache / "stage/bb@arm64/busybox/tree/bin/busybox").is_file()
    assert (proj.cache / "logs/bb@arm64/busybox.log").is_file()
    report = json.loads((proj.cache / "checks/bb@arm64.json").read_text())
    assert report["platform"] == "linux/arm64"
    assert report["passed"] and report["elf_files"] == 1 and report["elf_problems"] == []
    assert [r["status"] for r in report["smoke"]] == [0]
    assert "smoke tests in an empty root: 1/1 passed" in run.out


def test_arm64_busybox_is_flagged_in_an_amd64_distribution(tmp_path):
    proj, config = _project(tmp_path, ["linux/amd64"])
    run = run_doit(config, "check:bb")
    assert run.returncode != 0
    report = json.loads((proj.cache / "checks/bb.json").read_text())
    assert report["platform"] == "linux/amd64"
    assert report["elf_problems"] == [
        f"{proj.prefix_root}/bb/1.0/bin/busybox: machine EM_AARCH64 (64-bit), not "
        "linux/amd64's EM_X86_64 (64-bit)"]
    # qemu runs it here all the same: only the audit tells the wrong machine
    assert [r["status"] for r in report["smoke"]] == [0]


def test_check_host_says_whether_arm64_programs_run_here(tmp_path):
    _proj, config = _project(tmp_path, ["linux/amd64", "linux/arm64"])
    run = run_doit(config, "check-host", check=True)
    assert ("check-host: linux/arm64 programs run here: binfmt_misc qemu-aarch64 -> "
            "/usr/libexec/qemu-binfmt/aarch64-binfmt-P (flags PF)") in run.out, run.text


def test_the_emulator_identity_is_its_entry_and_program(tmp_path):
    """identity(): what an `emulated` build has in its key (the qemu program's sha256)."""
    qemu = tmp_path / "qemu-aarch64-static"
    qemu.write_bytes(b"not really qemu\n")
    (tmp_path / "status").write_text("enabled\n")
    entry = tmp_path / "qemu-aarch64"
    entry.write_text(f"enabled\ninterpreter {qemu}\nflags: OCF\n")
    arm64 = PLATFORMS["linux/arm64"]
    assert emulation.identity(arm64, root=tmp_path) == (
        "qemu-aarch64 qemu-aarch64-static "
        "sha256:" + hashlib.sha256(b"not really qemu\n").hexdigest())
    assert emulation.identity(arm64, root=tmp_path / "unmounted") is None
