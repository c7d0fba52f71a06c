"""The CVE-2023-4911 gate on setuid files, end to end (docs/security.md, "Setuid and
setgid files" and "The loader probe"): real doit runs of a fixture project whose two
toolchains ship real dynamic linkers, probed for real (a setuid program run as uid 65534
in a chroot, so the kernel starts it in secure mode).

- tcgood ships the host's own ld.so (Debian 12's glibc, fixed): not vulnerable.
- tcbad ships a stand-in with the hole's symptom: a static-pie program without libc,
  installed as lib/ld-linux-x86-64.so.2. The kernel runs a program's PT_INTERP as its ELF
  interpreter, so the stand-in runs in the probed program's process with its auxv: it
  dies of SIGSEGV when AT_SECURE is set and GLIBC_TUNABLES names a tunable again (Qualys'
  string), and outside secure mode it complains about LD_PRELOAD as ld.so does, so the
  probe's control run really tests that secure mode was reached.

Each toolchain's bin/hello is a program with that toolchain's loader as PT_INTERP and no
DT_NEEDED: the host's ld.so searches only the host's library folders (not the fixture
prefix's lib/), so a libc-linked program could not start in the probe's root.

Distributions: appbad (setuid: [bin/su-demo], toolchain tcbad), appgood (the same on
tcgood), plain (no setuid: list, toolchain tcbad; its build drops the bit)."""
import gzip
import hashlib
import io
import json
import os
import stat
import subprocess
import tarfile

import pytest

from conftest import run_doit
from fixtures import FixtureProject
from tasks.ship.image import image_paths

PREFIX_ROOT = "/.dapp/test"
LOADER = "lib/ld-linux-x86-64.so.2"
HOST_LOADER = "/lib64/ld-linux-x86-64.so.2"
SETUID_FILE = "bin/su-demo"
CVE = "CVE-2023-4911"

# Raw syscalls, no libc: runs with nothing set up (no TLS, no relocations).
SYSCALL = r"""
static long sys(long n, long a, long b, long c) {
    long r;
    __asm__ volatile ("syscall" : "=a"(r) : "a"(n), "D"(a), "S"(b), "d"(c)
                      : "rcx", "r11", "memory");
    return r;
}
static long len(const char *s) { long n = 0; while (s[n]) n++; return n; }
static void say(int fd, const char *s) { sys(1, fd, (long)s, len(s)); }
"""

# The vulnerable loader's stand-in (see the module's docstring).
FAKE_LOADER = SYSCALL + r"""
static const char *after(const char *s, const char *p) {
    while (*p) if (*s++ != *p++) return 0;
    return s;
}
static int contains(const char *s, const char *p) {
    for (; *s; s++) if (after(s, p)) return 1;
    return 0;
}
__attribute__((used)) void cmain(long *sp) {
    long argc = sp[0], secure = 0, *aux;
    char **env = (char **)(sp + 1 + argc + 1);
    const char *tunables = 0, *preload = 0, *v;
    for (; *env; env++) {
        if ((v = after(*env, "GLIBC_TUNABLES="))) tunables = v;
        if ((v = after(*env, "LD_PRELOAD="))) preload = v;
    }
    for (aux = (long *)(env + 1); aux[0] != 0; aux += 2)
        if (aux[0] == 23) secure = aux[1];                   /* AT_SECURE */
    if (secure && tunables && contains(tunables, "=glibc."))
        sys(62, sys(39, 0, 0, 0), 11, 0);                    /* kill(getpid(), SIGSEGV) */
    if (!secure && preload) {                                /* ld.so honours it here */
        say(2, "ERROR: ld.so: object '"); say(2, preload);
        say(2, "' from LD_PRELOAD cannot be preloaded: ignored.\n");
    }
    say(1, "fake ld.so 1.0\n");
    sys(231, 0, 0, 0);                                       /* exit_group(0) */
}
__asm__(".globl _start\n_start:\n mov %rsp, %rdi\n and $-16, %rsp\n call cmain\n hlt\n");
"""

# The toolchains' bin/hello: a dynamic program (PT_INTERP, PT_DYNAMIC) with no DT_NEEDED.
HELLO = SYSCALL + r"""
__attribute__((used)) void cmain(void) {
    say(1, "hello 1.0\n");
    sys(231, 0, 0, 0);
}
__asm__(".globl _start\n_start:\n and $-16, %rsp\n call cmain\n hlt\n");
"""

NOLIBC = ["-nostdlib", "-ffreestanding", "-fno-stack-protector", "-fPIE", "-O1"]

TOOLCHAIN_SCRIPT = f"""mkdir -p $PREFIX/bin $PREFIX/lib
install -m 755 ld.so $PREFIX/{LOADER}
install -m 755 hello $PREFIX/bin/hello
"""

APP_SCRIPT = f"""mkdir -p $PREFIX/bin
printf '#!/bin/sh\\necho hi\\n' > $PREFIX/{SETUID_FILE}
chmod 4755 $PREFIX/{SETUID_FILE}
"""


def prefix(dist):
    return f"{PREFIX_ROOT}/{dist}/1.0"


def compile_c(out, source, *flags):
    src = out.with_suffix(".c")
    src.write_text(source)
    subprocess.run(["gcc", *NOLIBC, *flags, "-o", str(out), str(src)], check=True)
    return out


def binary_tarball(path, top, files):
    """A .tar.gz of {name: bytes} (mode 0755) under one top folder; returns its sha256."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        info = tarfile.TarInfo(top)
        info.type, info.mode, info.mtime = tarfile.DIRTYPE, 0o755, 1700000000
        tar.addfile(info)
        for name, data in sorted(files.items()):
            info = tarfile.TarInfo(f"{top}/{name}")
            info.size, info.mode, info.mtime = len(data), 0o755, 1700000000
            tar.addfile(info, io.BytesIO(data))
    raw = gzip.compress(buf.getvalue(), mtime=0)
    path.write_bytes(raw)
    return hashlib.sha256(raw).hexdigest()


def add_toolchain(proj, dist, loader_bytes, bins):
    """Distribution `dist` of one component `<dist>-ld`: the loader and a bin/hello that
    uses it (compiled here, by the host's gcc)."""
    hello = compile_c(bins / f"hello-{dist}", HELLO, "-pie",
                      f"-Wl,--dynamic-linker={prefix(dist)}/{LOADER}")
    name = f"{dist}-ld"
    tarball = f"{name}-1.0.tar.gz"
    sha = binary_tarball(proj.served / tarball, f"{name}-1.0",
                         {"ld.so": loader_bytes, "hello": hello.read_bytes()})
    proj.write_recipe({"name": name, "version": "1.0", "description": f"test loader of {dist}",
                       "license": "MIT", "sources": [{"file": tarball, "sha256": sha,
                                                      "urls": [f"{proj.base_url}/{tarball}"]}],
                       "build": "script", "script": TOOLCHAIN_SCRIPT})
    proj.add_distribution(dist, [name])


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    top = tmp_path_factory.mktemp("suidgate")
    bins = top / "bin-src"
    bins.mkdir()
    fake = compile_c(bins / "fake-ld", FAKE_LOADER, "-static-pie")
    # The premise: this kernel runs a static-pie as a program's interpreter.
    probe_prog = compile_c(bins / "uses-fake", HELLO, "-pie", f"-Wl,--dynamic-linker={fake}")
    ran = subprocess.run([str(probe_prog)], capture_output=True, text=True)
    assert ran.returncode == 0 and ran.stdout == "fake ld.so 1.0\n", ran

    proj = FixtureProject(top / "proj", prefix_root=PREFIX_ROOT)
    add_toolchain(proj, "tcbad", fake.read_bytes(), bins)
    with open(os.path.realpath(HOST_LOADER), "rb") as fh:
        add_toolchain(proj, "tcgood", fh.read(), bins)
    proj.add_package("suidapp", "1.0", {"README": "x\n"}, build="script", script=APP_SCRIPT)
    proj.add_distribution("appbad", ["suidapp"], toolchain="tcbad", setuid=[SETUID_FILE],
                          image={"name": "test/appbad"})
    proj.add_distribution("appgood", ["suidapp"], toolchain="tcgood", setuid=[SETUID_FILE],
                          image={"name": "test/appgood"})
    proj.add_distribution("plain", ["suidapp"], toolchain="tcbad", image={"name": "test/plain"})
    config = proj.write_config()
    run_doit(config, "assemble:tcbad", "assemble:tcgood", "assemble:appbad", "assemble:appgood",
             "assemble:plain", check=True)
    return proj, config


def check_report(proj, dist):
    return json.loads((proj.cache / "checks" / f"{dist}.json").read_text())


def image_tar(proj, dist):
    return image_paths(proj.cache, dist, "1.0")["tar"]


def layer_member(tar_path, path):
    """The tarfile member of `path` in the image's (one) layer."""
    with tarfile.open(tar_path) as outer:
        oci = json.load(outer.extractfile("index.json"))
        manifest = json.load(outer.extractfile(
            "blobs/sha256/" + oci["manifests"][0]["digest"].split(":")[1]))
        (layer,) = manifest["layers"]
        blob = outer.extractfile("blobs/sha256/" + layer["digest"].split(":")[1]).read()
    with tarfile.open(fileobj=io.BytesIO(blob)) as inner:
        return inner.getmember(path.lstrip("/"))


def leftovers(proj, stage):
    work = proj.cache / "work" / stage
    return sorted(p.name for p in work.iterdir()) if work.is_dir() else []


def test_the_staged_setuid_file_keeps_its_bit_only_where_listed(built):
    proj, _config = built
    for dist, mode in (("appbad", 0o4755), ("appgood", 0o4755), ("plain", 0o755)):
        path = proj.cache / "stage" / dist / "suidapp" / "tree" / SETUID_FILE
        assert stat.S_IMODE(os.lstat(path).st_mode) == mode, dist


def test_vulnerable_loader_fails_check_and_refuses_the_image(built):
    proj, config = built
    loader = f"{prefix('tcbad')}/{LOADER}"

    run = run_doit(config, "check:appbad")
    assert run.returncode != 0, run.text
    assert run.ran("check:") == ["check:appbad"] and run.ran("assemble:") == []
    assert "loader probe FAILED" in run.text and CVE in run.text, run.text
    assert f"{prefix('tcbad')}/bin/hello died of SIGSEGV" in run.text, run.text
    report = check_report(proj, "appbad")
    assert report["passed"] is False
    assert report["elf_problems"] == [] and report["smoke"] == []   # the probe alone failed it
    probe = report["loader_probe"]
    assert probe["vulnerable"] is True and probe["status"] == -11 and "SIGSEGV" in probe["verdict"]
    assert probe["loader"] == loader and probe["program"] == f"{prefix('tcbad')}/bin/hello"
    assert probe["distribution"] == "tcbad"
    log = (proj.cache / "checks" / "appbad.log").read_text()
    # the control run happened and reached secure mode (the stand-in kept quiet about LD_PRELOAD)
    assert "[loader probe, control]" in log and "cannot be preloaded" not in log
    assert not (proj.cache / "checks" / "appbad.stamp.json").exists()

    run = run_doit(config, "image:appbad")
    assert run.returncode != 0, run.text
    assert "image:appbad" in run.text and SETUID_FILE in run.text, run.text
    assert CVE in run.text and loader in run.text and "VULNERABLE" in run.text, run.text
    assert not image_tar(proj, "appbad").exists()
    images = proj.cache / "images"
    assert not (images.is_dir() and [p.name for p in images.iterdir() if p.name.startswith("appbad")])
    assert leftovers(proj, "image") == [] and leftovers(proj, "check") == []


def test_fixed_loader_passes_check_and_ships_the_setuid_bit(built):
    proj, config = built
    run = run_doit(config, "check:appgood")
    assert run.returncode == 0, run.text
    report = check_report(proj, "appgood")
    assert report["passed"] is True
    probe = report["loader_probe"]
    assert probe["vulnerable"] is False and "not vulnerable to " + CVE in probe["verdict"]
    assert probe["loader"] == f"{prefix('tcgood')}/{LOADER}" and probe["distribution"] == "tcgood"
    log = (proj.cache / "checks" / "appgood.log").read_text()
    assert "[loader probe, control]" in log and "[loader probe, GLIBC_TUNABLES]" in log
    assert "cannot be preloaded" not in log

    run = run_doit(config, "image:appgood")
    assert run.returncode == 0, run.text
    member = layer_member(image_tar(proj, "appgood"), f"{prefix('appgood')}/{SETUID_FILE}")
    assert member.isfile() and member.mode & 0o7777 == 0o4755, oct(member.mode)
    assert (member.uid, member.gid) == (0, 0)
    assert leftovers(proj, "image") == [] and leftovers(proj, "check") == []


def test_without_setuid_files_the_image_ships_on_a_vulnerable_loader(built):
    proj, config = built
    run = run_doit(config, "image:plain")
    assert run.returncode == 0, run.text
    member = layer_member(image_tar(proj, "plain"), f"{prefix('plain')}/{SETUID_FILE}")
    assert member.mode & 0o7777 == 0o755, oct(member.mode)

    # the check still fails: a vulnerable loader fails it whatever the distribution ships
    run = run_doit(config, "check:plain")
    assert run.returncode != 0, run.text
    assert "loader probe FAILED" in run.text and CVE in run.text, run.text
    report = check_report(proj, "plain")
    probe = report["loader_probe"]
    assert probe["vulnerable"] is True and probe["loader"] == f"{prefix('tcbad')}/{LOADER}"
    assert report["passed"] is False and report["elf_problems"] == []


def test_check_output_names_the_vulnerable_loader(built):
    _proj, config = built
    run = run_doit(config, "check:appbad")
    assert run.returncode != 0
    assert f"{prefix('tcbad')}/{LOADER}" in run.out + run.err
