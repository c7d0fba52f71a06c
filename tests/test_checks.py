"""check:<dist>: the ELF audit and smoke tests in an empty root (real bwrap)."""
import json

from conftest import run_doit
from fixtures import HELLO, LIBGREET, FixtureProject, demo_project
from tasks.core import elf


def test_static_fixture_passes_in_an_empty_root(tmp_path):
    proj = demo_project(tmp_path)
    run = run_doit(proj.root / "config.yaml", "check:demo", check=True)
    assert "smoke tests in an empty root: 2/2 passed" in run.out
    report = json.loads((proj.cache / "checks/demo.json").read_text())
    assert report["passed"] and report["elf_files"] == 2 and report["elf_problems"] == []
    again = run_doit(proj.root / "config.yaml", "check:demo", check=True)
    assert "-- check:demo" in again.out


def test_host_linked_program_fails_audit_and_smoke(tmp_path):
    proj = FixtureProject(tmp_path)
    proj.add_package("libgreet", "1.0", LIBGREET)
    # Linked against the host's glibc and a shared libgreet without rpath:
    # its interpreter is /lib64/ld-linux-x86-64.so.2, outside the prefixes.
    dynamic = dict(HELLO, Makefile=HELLO["Makefile"].replace(
        "-static -I$(PREFIX)/include -o $@ hello.c $(PREFIX)/lib/libgreet.a",
        "-I$(PREFIX)/include -o $@ hello.c -L$(PREFIX)/lib -lgreet"))
    proj.add_package("hello", "1.0", dynamic, depends=["libgreet"], smoke=["hello"])
    proj.add_distribution("demo", ["hello", "libgreet"])
    run = run_doit(proj.write_config(), "check:demo")
    assert run.returncode != 0
    report = json.loads((proj.cache / "checks/demo.json").read_text())
    text = "\n".join(report["elf_problems"])
    assert "bin/hello: interpreter /lib64/ld-linux-x86-64.so.2" in text
    assert "needs libc.so.6" in text
    assert report["smoke"][0]["status"] != 0
    assert "smoke FAILED" in run.out


def test_runpath_is_refused_rpath_is_not(tmp_path):
    proj = FixtureProject(tmp_path)
    proj.add_package("libgreet", "1.0", LIBGREET)
    # Two shared libraries into the prefix: one with DT_RUNPATH, one with DT_RPATH.
    both = dict(LIBGREET, Makefile=LIBGREET["Makefile"].replace(
        "all: libgreet.so libgreet.a",
        "all: libgreet.so libgreet.a libnew.so libold.so\n"
        "libnew.so: greet.c\n\t$(CC) -shared -fPIC -Wl,--enable-new-dtags -Wl,-rpath,$(PREFIX)/lib -o $@ greet.c\n"
        "libold.so: greet.c\n\t$(CC) -shared -fPIC -Wl,--disable-new-dtags -Wl,-rpath,$(PREFIX)/lib -o $@ greet.c"
    ).replace("cp libgreet.so libgreet.a", "cp libgreet.so libgreet.a libnew.so libold.so"))
    proj.add_package("dtags", "1.0", both)
    proj.add_distribution("demo", ["dtags"])
    run = run_doit(proj.write_config(), "check:demo")
    assert run.returncode != 0
    problems = json.loads((proj.cache / "checks/demo.json").read_text())["elf_problems"]
    runpath = [p for p in problems if "RUNPATH" in p]
    assert len(runpath) == 1 and "lib/libnew.so: RUNPATH" in runpath[0], problems
    assert "--disable-new-dtags" in runpath[0]


def test_elf_reader_on_host_binaries():
    info = elf.read("/bin/ls")
    assert info.interp == "/lib64/ld-linux-x86-64.so.2"
    assert "libc.so.6" in info.needed
    assert elf.read(__file__) is None
