"""check:<dist>: the ELF audit and smoke tests in an empty root (real bwrap)."""
import json
import os
import textwrap

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
    # the versions /bin/ls needs of the host's libc are defined by that libc
    needs = elf.needed_versions("/bin/ls")["libc.so.6"]
    assert "GLIBC_2.2.5" in needs
    libc = next(p for p in ("/lib/x86_64-linux-gnu/libc.so.6", "/lib64/libc.so.6")
                if os.path.exists(p))
    defined = elf.defined_versions(libc)
    assert needs <= defined and "libc.so.6" not in defined     # not the base entry
    assert elf.needed_versions(__file__) == {} and elf.defined_versions("/bin/ls") == set()
    assert elf.ident("/bin/ls").type in ("ET_EXEC", "ET_DYN") and elf.ident(__file__) is None


# libvers.so is linked with a version script defining VERS_1 and VERS_2, the program
# against it (so it needs VERS_2 of libvers.so), then libvers.so is rebuilt with VERS_1
# only and that one is installed: at run time ld.so would stop with "version `VERS_2'
# not found"; the audit must say so first.
VERSIONED = {
    "v.c": "int v1(void) { return 1; }\nint v2(void) { return 2; }\n",
    "prog.c": "int v2(void);\nint main(void) { return v2() - 2; }\n",
    "both.map": "VERS_1 { global: v1; local: *; };\nVERS_2 { global: v2; } VERS_1;\n",
    "one.map": "VERS_1 { global: v1; local: *; };\n",
    "Makefile": textwrap.dedent("""\
        CC ?= cc
        all: prog libvers-old.so
        libvers.so: v.c both.map
        \t$(CC) -shared -fPIC -Wl,--version-script=both.map -o $@ v.c
        prog: prog.c libvers.so
        \t$(CC) -o $@ prog.c -L. -lvers -Wl,--disable-new-dtags -Wl,-rpath,$(PREFIX)/lib
        libvers-old.so: v.c one.map
        \t$(CC) -shared -fPIC -Wl,--version-script=one.map -o $@ v.c
        install:
        \tmkdir -p $(PREFIX)/bin $(PREFIX)/lib
        \tcp prog $(PREFIX)/bin/
        \tcp libvers-old.so $(PREFIX)/lib/libvers.so
        """),
}


def test_audit_flags_a_symbol_version_the_library_does_not_define(tmp_path):
    proj = FixtureProject(tmp_path)
    proj.add_package("vers", "1.0", VERSIONED)
    proj.add_distribution("demo", ["vers"])
    run = run_doit(proj.write_config(), "check:demo")
    assert run.returncode != 0
    problems = json.loads((proj.cache / "checks/demo.json").read_text())["elf_problems"]
    prefix = proj.prefix_root + "/demo/1.0"
    flagged = [p for p in problems if "symbol version" in p]
    assert flagged == [f"{prefix}/bin/prog: needs symbol version VERS_2 of libvers.so, which "
                       f"{prefix}/lib/libvers.so does not define (its newest is VERS_1)"], problems
    assert "audit: " + flagged[0] in run.out
    # the library itself resolves (only the version is missing), and libc.so.6, which is
    # not in the prefixes, is reported as not found, not as a version problem
    assert not [p for p in problems if "needs libvers.so, not found" in p]
    assert [p for p in problems if "needs libc.so.6, not found" in p]
