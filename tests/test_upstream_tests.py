"""test:<dist>/<component>: a component's upstream test suite (recipe `test`), run on a
rebuild for the prefix; and the parser of the suites' summaries."""
import json
import textwrap

from conftest import run_doit
from fixtures import FixtureProject

from tasks.verify import suite_counts, upstream

# Static: check:demo (part of a plain `doit`) audits that no program needs the host's libc.
COUNTER = {
    "counter.c": '#include <stdio.h>\nint main(int c, char **v) { printf("%s\\n", c > 1 ? v[1] : "0"); return 0; }\n',
    "Makefile": textwrap.dedent("""\
        CC ?= cc
        all: counter
        counter: counter.c
        \t$(CC) -static -o $@ counter.c
        install:
        \tmkdir -p $(PREFIX)/bin
        \tcp counter $(PREFIX)/bin/
        check:
        \tBREAK=$(BREAK) sh ./check.sh
        """),
    # Prints what automake's parallel harness prints; the tests use the program of
    # the build tree and the one installed at the prefix, so they need the rebuild.
    "check.sh": textwrap.dedent("""\
        pass=0 fail=0 skip=0
        run() { if "$@"; then echo "PASS: $name"; pass=$((pass+1)); else echo "FAIL: $name"; fail=$((fail+1)); fi; }
        name=built; run test "$(./counter 3)" = 3
        name=installed; run test "$("$PREFIX/bin/counter" 5)" = 5
        if [ -n "$BREAK" ]; then name=broken; run false; else echo "SKIP: broken"; skip=$((skip+1)); fi
        echo "============================================================================"
        echo "Testsuite summary for counter 1.0"
        echo "============================================================================"
        echo "# TOTAL: $((pass+fail+skip))"
        echo "# PASS:  $pass"
        echo "# SKIP:  $skip"
        echo "# XFAIL: 0"
        echo "# FAIL:  $fail"
        echo "# XPASS: 0"
        echo "# ERROR: 0"
        [ $fail -eq 0 ]
        """),
}


def _project(tmp_path, test="make check"):
    proj = FixtureProject(tmp_path)
    proj.add_package("counter", "1.0", COUNTER, test=test)
    proj.add_package("plain", "1.0", {"Makefile": "all:\ninstall:\n"})   # no `test`
    proj.add_distribution("demo", ["counter", "plain"])
    proj.write_config()
    return proj


def _result(proj):
    return json.loads((proj.cache / "tests/demo/counter.json").read_text())


def test_suite_runs_on_a_rebuild_and_reruns_only_when_its_inputs_change(tmp_path):
    proj = _project(tmp_path)
    config = proj.root / "config.yaml"
    listed = run_doit(config, "list", "--all", check=True).out
    assert "test:demo/counter" in listed and "test:demo/plain" not in listed

    # A plain `doit` builds but runs no upstream suite.
    run = run_doit(config, check=True)
    assert run.ran("build:") == ["build:demo/counter", "build:demo/plain"]
    assert run.ran("test:") == [] and not (proj.cache / "tests").exists()

    run = run_doit(config, "test:demo/counter", check=True)
    assert run.ran("test:") == ["test:demo/counter"] and run.ran("build:") == []
    assert "2 passed, 0 failed, 1 skipped of 3" in run.err
    result = _result(proj)
    assert result["passed"] is True and result["status"] == 0 and result["format"] == "automake"
    assert result["counts"] == {"total": 3, "pass": 2, "skip": 1, "xfail": 0, "fail": 0,
                                "xpass": 0, "error": 0}
    key = json.loads((proj.cache / "stage/demo/counter/key.json").read_text())["key"]
    assert result["build_key"] == key and result["version"] == "1.0"
    assert result["same_output_as_shipped"] is True
    log = proj.cache / "logs/demo/counter.test.log"
    assert result["log"] == str(log) and "PASS: installed" in log.read_text()
    # The build's own log and work folder are not the test's.
    assert "PASS: installed" not in (proj.cache / "logs/demo/counter.log").read_text()
    assert not (proj.cache / "work/demo/counter.test").exists()

    again = run_doit(config, "test:demo/counter", check=True)
    assert again.ran("") == [] and "test:demo/counter" in again.skipped("test:")

    # Another test command: the suite reruns, the component does not rebuild.
    proj.write_recipe(dict(proj.recipes["counter"], test="make check BREAK=1"))
    run = run_doit(config, "test:demo/counter")
    assert run.returncode != 0
    assert run.ran("build:") == [] and run.ran("test:") == ["test:demo/counter"]
    assert "test changed" in run.err
    assert "upstream test suite failed (exit status 2): 2 passed, 1 failed of 3" in run.text
    assert "Failed: broken" in run.text and f"Full log: {log}" in run.text
    assert "| FAIL: broken" in run.text   # the log's tail
    result = _result(proj)
    assert result["passed"] is False and result["status"] == 2
    assert result["counts"]["fail"] == 1 and result["failed_tests"] == ["broken"]
    assert (proj.cache / "work/demo/counter.test/build").is_dir()   # kept for inspection

    # A failed suite is not up to date: it runs again, and says why.
    run = run_doit(config, "test:demo/counter")
    assert run.returncode != 0 and "the last run failed" in run.err


def test_a_suite_in_a_fresh_cache_first_builds_the_whole_distribution(tmp_path):
    """The suite sees the whole distribution at $PREFIX: `doit test:demo/counter` as the
    first command of a cache builds `plain` too (counter does not depend on it), instead
    of mounting an output that does not exist yet."""
    proj = _project(tmp_path)
    run = run_doit(proj.root / "config.yaml", "test:demo/counter", check=True)
    assert set(run.ran("build:")) == {"build:demo/counter", "build:demo/plain"}
    assert run.ran("test:") == ["test:demo/counter"] and _result(proj)["passed"] is True


def test_suite_runs_where_configure_wrote_the_makefiles():
    def recipe(**fields):
        return dict({"build": "autotools", "out_of_tree": True}, **fields)
    assert upstream.test_dir(recipe()) == "$BUILDDIR"
    assert upstream.test_dir(recipe(out_of_tree=False)) == "$SRCDIR"
    assert upstream.test_dir(recipe(build="make")) == "$SRCDIR"
    assert upstream.test_dir(recipe(build="script")) == "$SRCDIR"


# ---- parser -------------------------------------------------------------------

SED_CHECK = """\
PASS: testsuite/misc.pl
SKIP: testsuite/panic-tests.sh
FAIL: testsuite/title-case.sh
============================================================================
Testsuite summary for GNU sed 4.9
============================================================================
# TOTAL: 70
# PASS:  65
# SKIP:  4
# XFAIL: 0
# FAIL:  1
# XPASS: 0
# ERROR: 0
============================================================================
See ./test-suite.log
============================================================================
make[4]: Entering directory '/dappdeps/build/gnulib-tests'
PASS: test-alloca-opt
ERROR: test-fopen
============================================================================
Testsuite summary for GNU sed 4.9
============================================================================
# TOTAL: 120
# PASS:  105
# SKIP:  14
# XFAIL: 0
# FAIL:  0
# XPASS: 0
# ERROR: 1
============================================================================
"""


def test_automake_summaries_are_summed():
    fmt, counts, failed = suite_counts.parse(SED_CHECK)
    assert fmt == "automake"
    assert counts == {"total": 190, "pass": 170, "skip": 18, "xfail": 0, "fail": 1,
                      "xpass": 0, "error": 1}
    assert failed == ["testsuite/title-case.sh", "test-fopen"]
    assert suite_counts.describe(counts) == "170 passed, 1 failed, 1 errored, 18 skipped of 190"


def test_automake_summary_with_colours_and_a_catted_test_suite_log():
    green, reset = "\x1b[0;32m", "\x1b[m"
    summary = ("Testsuite summary for GNU grep 3.8\n"
               f"{green}# TOTAL: 10{reset}\n{green}# PASS:  9{reset}\n# SKIP:  1\n# FAIL:  0\n")
    # With VERBOSE=yes the harness also prints test-suite.log, which repeats the block.
    catted = "   GNU grep 3.8: tests/test-suite.log\n\n# TOTAL: 10\n# PASS:  9\n# SKIP:  1\n# FAIL:  0\n"
    fmt, counts, _ = suite_counts.parse(summary + catted)
    assert fmt == "automake" and counts["total"] == 10 and counts["pass"] == 9
    assert counts["skip"] == 1 and counts["fail"] == 0 and counts["xpass"] is None


def test_git_per_script_results():
    log = textwrap.dedent("""\
        *** t0000-basic.sh ***
        ok 1 - verify that the running shell supports "local"
        ok 2 # skip lazy prereq (missing SYMLINKS)
        not ok 3 - pretend we have a known breakage # TODO known breakage
        # still have 1 known breakage(s)
        # passed all remaining 90 test(s)
        1..91
        *** t4150-am.sh ***
        not ok 7 - am applies patch with a mail header
        # failed 2 among 80 test(s)
        1..80
        """)
    fmt, counts, failed = suite_counts.parse(log)
    assert fmt == "git"
    assert counts["fail"] == 2 and counts["xfail"] == 1 and counts["skip"] == 1
    assert counts["pass"] == 90 + 78 - 1 and counts["total"] == 90 + 80 + 1
    assert failed == ["am applies patch with a mail header"]


def test_gawk_dejagnu_serial_and_unknown():
    fmt, counts, _ = suite_counts.parse("======== Done with tests ========\nALL TESTS PASSED\n")
    assert fmt == "gawk" and counts["fail"] == 0 and counts["pass"] is None
    fmt, counts, _ = suite_counts.parse("mbprintf4\n2 TESTS FAILED\nmake: *** [Makefile:1: check] Error 1\n")
    assert fmt == "gawk" and counts["fail"] == 2
    dejagnu = ("\t\t=== libffi Summary ===\n\n# of expected passes\t\t1517\n"
               "# of unexpected failures\t2\n# of unsupported tests\t\t30\n"
               "FAIL: libffi.call/va_struct1.c -W -Wall -O2 execution test\n")
    fmt, counts, failed = suite_counts.parse(dejagnu)
    assert fmt == "dejagnu" and (counts["pass"], counts["fail"], counts["skip"]) == (1517, 2, 30)
    assert counts["total"] == 1549 and failed == ["libffi.call/va_struct1.c -W -Wall -O2 execution test"]
    fmt, counts, _ = suite_counts.parse("=====\n1 of 12 tests failed\n(2 tests were not run)\n=====\n")
    assert fmt == "automake-serial"
    assert (counts["pass"], counts["fail"], counts["skip"], counts["total"]) == (11, 1, 2, 14)
    fmt, counts, _ = suite_counts.parse("run-alias\nrun-arith\nwarning: some tests print nothing\n")
    assert fmt is None and set(counts.values()) == {None}
    assert "no counts" in suite_counts.describe(counts)


def test_rsync_overall_results():
    log = ("----- xattrs-hlink failed\n------------------------------------------------------------\n"
           "----- overall results:\n      40 passed\n      1 failed\n      4 skipped\n")
    fmt, counts, failed = suite_counts.parse(log)
    assert fmt == "rsync" and (counts["pass"], counts["fail"], counts["skip"]) == (40, 1, 4)
    assert failed == ["xattrs-hlink"]
    # rsync 3.5's runtests.py names each test on a PASS / FAIL / SKIP line
    log = ("PASS    alt-dest\nFAIL    daemon-gzip-upload\nSKIP    acls (ACLs disabled)\n"
           "------------------------------------------------------------\n"
           "----- overall results:\n      1 passed\n      1 failed\n      1 skipped\n")
    fmt, counts, failed = suite_counts.parse(log)
    assert fmt == "rsync" and (counts["pass"], counts["fail"], counts["skip"]) == (1, 1, 1)
    assert failed == ["daemon-gzip-upload"]


def test_two_harnesses_in_one_package_are_summed():
    # tar: gnulib's tests through automake, then its own Autotest suite.
    log = textwrap.dedent("""\
        Testsuite summary for GNU tar 1.34
        # TOTAL: 20
        # PASS:  19
        # SKIP:  1
        # FAIL:  0
        ## ----------------------------- ##
        ## GNU tar 1.34 test suite.      ##
        ## ----------------------------- ##
          1: tar version                                    ok
          2: decompressing from stdin                       skipped (pipe.at:30)
          3: remove-files with compression                  FAILED (remfiles01.at:32)
          4: exclude wildcards                              expected failure (exclude.at:9)

        ## ------------- ##
        ## Test results. ##
        ## ------------- ##

        ERROR: 3 tests were run,
        2 failed (1 expected failure).
        1 test was skipped.
        """)
    fmt, counts, failed = suite_counts.parse(log)
    assert fmt == "automake+autotest"
    assert counts == {"total": 24, "pass": 20, "skip": 2, "fail": 1, "xfail": 1, "xpass": 0,
                      "error": 0}
    assert failed == ["remove-files with compression"]
