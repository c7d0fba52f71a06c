"""The CVE-2023-4911 loader probe (issue 15, point 6; tasks/verify/loader.py): a setuid
program run for another user in a chroot, with Qualys' GLIBC_TUNABLES string.

Real programs, real setuid, real secure mode: the host's own glibc (Debian 12, fixed in
2.36-9+deb12u3) must come out "not vulnerable"; a program that crashes exactly when the
kernel started it in secure mode with that string must come out "vulnerable"; and a run
that never reaches secure mode must not prove anything."""
import os
import shutil
import subprocess

import pytest

from tasks.verify import loader

HOST_LOADER = "/lib64/ld-linux-x86-64.so.2"
HOST_LIBC = "/lib/x86_64-linux-gnu/libc.so.6"

# Dies like a vulnerable loader: SIGSEGV when started in secure mode with a
# GLIBC_TUNABLES whose value names a tunable again. Exits 3 outside secure mode.
CRASHER = r"""
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/auxv.h>
int main(void) {
    const char *t = getenv("GLIBC_TUNABLES");
    if (!getauxval(AT_SECURE)) return 3;
    if (t && strstr(t, "=glibc.")) raise(SIGSEGV);
    puts("crasher 1.0");
    return 0;
}
"""


def host_root(tmp_path):
    root = tmp_path / "root"
    loader.make_root(root, {"/usr/bin/iconv": "/usr/bin/iconv",
                            HOST_LIBC: os.path.realpath(HOST_LIBC),
                            HOST_LOADER: os.path.realpath(HOST_LOADER)})
    return root


def test_host_glibc_is_not_vulnerable_and_ran_in_secure_mode(tmp_path):
    root = host_root(tmp_path)
    assert os.stat(root / "usr/bin/iconv").st_mode & 0o7777 == 0o4755
    log = tmp_path / "probe.log"
    result = loader.run_probe(root, "/usr/bin/iconv", log=log)
    assert result["vulnerable"] is False, result
    assert "not vulnerable to CVE-2023-4911" in result["verdict"]
    text = log.read_text()
    # both runs happened, the control without the loader's LD_PRELOAD complaint
    assert "[loader probe, control]" in text and "[loader probe, GLIBC_TUNABLES]" in text
    assert "cannot be preloaded" not in text


def test_without_a_user_switch_the_probe_proves_nothing(tmp_path):
    """As root the kernel does not set AT_SECURE: the loader reads LD_PRELOAD and
    complains, and the probe refuses to give a verdict."""
    root = host_root(tmp_path)
    with pytest.raises(loader.ProbeError, match="did not run in secure mode"):
        loader.run_probe(root, "/usr/bin/iconv", uid=0)


def test_a_crash_in_secure_mode_is_reported_vulnerable(tmp_path):
    cc = shutil.which("gcc") or shutil.which("cc")
    assert cc, "the tests need the host's C compiler (./setup installs build-essential)"
    (tmp_path / "crasher.c").write_text(CRASHER)
    subprocess.run([cc, "-static", "-O1", "-o", str(tmp_path / "crasher"), str(tmp_path / "crasher.c")],
                   check=True)
    root = tmp_path / "root"
    loader.make_root(root, {"/bin/crasher": str(tmp_path / "crasher")})
    result = loader.run_probe(root, "/bin/crasher")
    assert result["vulnerable"] is True
    assert result["status"] == -11 and "SIGSEGV" in result["verdict"]
    # the same program without the setuid switch exits 3 (not secure): no verdict
    with pytest.raises(loader.ProbeError):
        loader.run_probe(root, "/bin/crasher", uid=0)


def test_a_failing_program_is_an_error_not_a_verdict(tmp_path):
    root = host_root(tmp_path)
    with pytest.raises(loader.ProbeError, match="failed in the probe's root"):
        loader.run_probe(root, "/usr/bin/iconv", args=("--no-such-option",))


# ---- another platform's loader, under qemu-user -------------------------------------
ARM64_LOADER = "/lib/ld-linux-aarch64.so.1"
ARM64_LIBC = "/lib/aarch64-linux-gnu/libc.so.6"


def arm64_root(tmp_path, setuid_emulator=True):
    """Debian's arm64 iconv, libc and loader (the host's release, fixed) and the host's
    qemu-aarch64, placed as the probe places another platform's program."""
    from foreignbin import arm64_package
    from tasks.core import emulation
    from tasks.model.platforms import PLATFORMS
    arm64 = PLATFORMS["linux/arm64"]
    assert emulation.problem(arm64) is None, emulation.problem(arm64)
    qemu = os.path.realpath(emulation.registration(arm64.qemu)["interpreter"])
    libc6, libc_bin = arm64_package("libc6"), arm64_package("libc-bin")
    placed = {loader.EMULATOR_INSIDE: qemu, "/usr/bin/iconv": libc_bin / "usr/bin/iconv",
              ARM64_LIBC: os.path.realpath(libc6 / ARM64_LIBC.lstrip("/")),
              ARM64_LOADER: os.path.realpath(libc6 / ARM64_LOADER.lstrip("/"))}
    root = tmp_path / "root"
    loader.make_root(root, placed)
    if not setuid_emulator:
        os.chmod(root / loader.EMULATOR_INSIDE.lstrip("/"), 0o755)
    return root


def test_another_platforms_loader_is_probed_in_secure_mode_under_qemu(tmp_path):
    """qemu-user, setuid root in the probe's root, hands AT_SECURE on to the arm64
    loader: the control run proves secure mode, Debian's fixed arm64 glibc passes."""
    root = arm64_root(tmp_path)
    log = tmp_path / "probe.log"
    result = loader.run_probe(root, "/usr/bin/iconv", log=log, emulator=loader.EMULATOR_INSIDE)
    assert result["vulnerable"] is False, result
    text = log.read_text()
    assert "[loader probe, control]" in text and "[loader probe, GLIBC_TUNABLES]" in text
    assert "cannot be preloaded" not in text and "iconv (Debian GLIBC" in text


def test_another_platform_without_a_setuid_emulator_proves_nothing(tmp_path):
    """binfmt_misc's way (qemu with its own credentials): no secure mode, no verdict."""
    root = arm64_root(tmp_path, setuid_emulator=False)
    with pytest.raises(loader.ProbeError) as caught:
        loader.run_probe(root, "/usr/bin/iconv", emulator=loader.EMULATOR_INSIDE)
    assert "did not run in secure mode" in str(caught.value)
