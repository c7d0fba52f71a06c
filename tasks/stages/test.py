"""Stage: test (on demand, not part of a plain `doit`). Each component's own upstream
test suite, the recipe's `test` shell (e.g. `make check`).

test:<dist>/<component> redoes the component's build (same recipe, script,
sandbox, environment, toolchain and dependencies, so the same key) in its own
work folder, cache/work/<dist>/<component>.test/, and then runs `test` in the
sandbox on that build tree: the programs tested are the ones compiled for the
prefix, exactly as shipped. The build's own work folder and output are never
touched, so a test can run next to the pipeline.

Results: cache/tests/<dist>/<component>.json (counts parsed from the log when
the suite prints a summary this module knows, else the exit status only) and
the log cache/logs/<dist>/<component>.test.log. The task fails when the suite
fails; the result is written anyway so reports can show it.

Kill-safety as in the builder: the work folder is wiped at the start, the result
is written last and atomically; a passing result is the stamp that makes the
task up to date (for the component's current key and the current `test`).
"""
import fcntl
import re
import time

from tasks.core import files
from tasks.core import canonical
from doit.exceptions import TaskFailed

from tasks.build import builder
from tasks.build import manifest
from tasks.core.log import duration, say
from tasks.core.shell import dquote
from tasks.core.errors import UserError
from tasks.model.project import project
from tasks.stages.build import components
from tasks.model.stamp import REASONS, Stamp

# Bump when how a suite is run or judged changes: every result is redone once.
# 2: the suite sees the whole distribution at $PREFIX.
TEST_VERSION = "2"
LOG_TAIL = 30
COUNT_KEYS = ("total", "pass", "fail", "skip", "xfail", "xpass", "error")


# ---- paths and inputs --------------------------------------------------------

def task_name(comp):
    return f"test:{comp.dist.name}/{comp.name}"


def work_dir(comp):
    # Next to the build's folder but never the same one: a test may run while the
    # component builds.
    return comp.cfg.cache / "work" / comp.dist.name / f"{comp.name}.test"


def log_path(comp):
    return comp.cfg.cache / "logs" / comp.dist.name / f"{comp.name}.test.log"


def result_path(cfg, dist_name, comp_name):
    return cfg.cache / "tests" / dist_name / f"{comp_name}.json"


def test_dir(recipe):
    """Where the suite runs: where configure wrote the Makefiles (component.script())."""
    if recipe["build"] == "autotools" and recipe["out_of_tree"]:
        return "$BUILDDIR"
    return "$SRCDIR"


def test_script(comp):
    """The suite as a bash script, run after the build in the same sandbox."""
    r = comp.recipe
    lines = ["set -euo pipefail", 'cd "$SRCDIR"']
    # The recipe's environment holds for its whole build, so for its tests too.
    for key, value in r["environment"].items():
        lines.append(f"export {key}={dquote(value)}")
    lines += [f'cd "{test_dir(r)}"', "echo '>>> test'", r["test"].rstrip()]
    return "\n".join(lines) + "\n"


def test_stamp(comp):
    """Key of a test result: the component's build key and how its suite is run."""
    return Stamp(result_path(comp.cfg, comp.dist.name, comp.name), {
        "build": comp.stamp().key, "test": comp.recipe["test"],
        "directory": test_dir(comp.recipe), "version": TEST_VERSION})


def _why(stamp):
    stored = stamp.stored()
    if stored and stored.get("inputs") == stamp.inputs and not stored.get("passed"):
        return "the last run failed"
    if not stored:
        return "never run (or the last run did not finish)"
    # The stamp's input "build" is the component key: say so in words.
    return stamp.why().replace("build changed", "the component's build key changed")


def _uptodate(comp):
    name = task_name(comp)

    def check(task, values):
        stamp = test_stamp(comp)
        if stamp.is_current():
            return True
        REASONS[name] = _why(stamp)
        return False
    check.__name__ = f"stamp_of_{name}"
    return check


# ---- parsing the suites' summaries -------------------------------------------

_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def _blank():
    return {k: None for k in COUNT_KEYS}


def _add(counts, key, n):
    counts[key] = (counts[key] or 0) + n


_AM_LINE = re.compile(r"^# (TOTAL|PASS|SKIP|XFAIL|FAIL|XPASS|ERROR):\s+(\d+)\s*$")
_AM_KEYS = {"TOTAL": "total", "PASS": "pass", "SKIP": "skip", "XFAIL": "xfail",
            "FAIL": "fail", "XPASS": "xpass", "ERROR": "error"}


def _automake(lines):
    """automake's parallel harness: one '# TOTAL: ...' block per test suite (a package
    with gnulib-tests prints two); all blocks are summed."""
    blocks = []
    for i, line in enumerate(lines):
        match = _AM_LINE.match(line)
        if not match:
            continue
        if match.group(1) == "TOTAL" or not blocks:
            # A block printed on stdout follows "Testsuite summary for <package>"; the
            # same block again inside a cat'ed test-suite.log (VERBOSE=yes) does not.
            heading = any("Testsuite summary" in prev for prev in lines[max(0, i - 3):i])
            blocks.append((heading, {}))
        blocks[-1][1][_AM_KEYS[match.group(1)]] = int(match.group(2))
    if not blocks:
        return None
    if any(heading for heading, _ in blocks):
        blocks = [b for b in blocks if b[0]]
    counts = _blank()
    for _, block in blocks:
        for key, n in block.items():
            _add(counts, key, n)
    # Whole line: Autotest's "ERROR: 3 tests were run," is not a test named "3".
    failed = [m.group(2) for m in (re.match(r"^(FAIL|ERROR|XPASS): (\S+)\s*$", l) for l in lines) if m]
    return counts, failed


_SERIAL = [
    (re.compile(r"^All (\d+) tests? passed"), lambda m, c: (_add(c, "pass", int(m[1])),
                                                           _add(c, "total", int(m[1])))),
    (re.compile(r"^All (\d+) tests? behaved as expected \((\d+) expected failures?\)"),
     lambda m, c: (_add(c, "pass", int(m[1]) - int(m[2])), _add(c, "xfail", int(m[2])),
                   _add(c, "total", int(m[1])))),
    (re.compile(r"^(\d+) of (\d+) tests? failed"),
     lambda m, c: (_add(c, "fail", int(m[1])), _add(c, "pass", int(m[2]) - int(m[1])),
                   _add(c, "total", int(m[2])))),
    (re.compile(r"^\((\d+) tests? (?:was|were) not run\)"),
     lambda m, c: (_add(c, "skip", int(m[1])), _add(c, "total", int(m[1])))),
]


def _automake_serial(lines):
    """automake's older serial harness: 'All 12 tests passed', '1 of 12 tests failed'."""
    counts, seen = _blank(), False
    for line in lines:
        for pattern, apply in _SERIAL:
            match = pattern.match(line.strip())
            if match:
                apply(match, counts)
                seen = True
    failed = [m.group(1) for m in (re.match(r"^FAIL: (\S+)", l) for l in lines) if m]
    return (counts, failed) if seen else None


_DEJAGNU = {"expected passes": "pass", "unexpected failures": "fail", "expected failures": "xfail",
            "unexpected successes": "xpass", "unsupported tests": "skip",
            "untested testcases": "skip", "unresolved testcases": "error"}
_DEJAGNU_LINE = re.compile(r"^# of ([a-z ]+?)\s+(\d+)\s*$")


def _dejagnu(lines):
    """DejaGnu (libffi): '# of expected passes  1234' per tool summary, summed."""
    counts, seen = _blank(), False
    for line in lines:
        match = _DEJAGNU_LINE.match(line)
        if match and match.group(1) in _DEJAGNU:
            n = int(match.group(2))
            _add(counts, _DEJAGNU[match.group(1)], n)
            _add(counts, "total", n)
            seen = True
    failed = [m.group(1) for m in (re.match(r"^(?:FAIL|UNRESOLVED): (.+)$", l) for l in lines) if m]
    return (counts, failed) if seen else None


_GIT_PASSED = re.compile(r"^# passed all (?:remaining )?(\d+) test\(s\)")
_GIT_FAILED = re.compile(r"^# failed (\d+) among (?:remaining )?(\d+) test\(s\)")
_GIT_BROKEN = re.compile(r"^# still have (\d+) known breakage\(s\)")
_GIT_FIXED = re.compile(r"^# (\d+) known breakage\(s\) vanished")
_GIT_SKIP = re.compile(r"^ok \d+ # skip\b")


def _git(lines):
    """git's t/ harness (TAP): each script ends with '# passed all N test(s)' or
    '# failed K among N test(s)', after '# still have B known breakage(s)'. The N
    excludes known breakages; skipped tests are in it as 'ok N # skip'."""
    counts, seen = _blank(), False
    for line in lines:
        for pattern, action in ((_GIT_PASSED, "passed"), (_GIT_FAILED, "failed"),
                                (_GIT_BROKEN, "xfail"), (_GIT_FIXED, "xpass")):
            match = pattern.match(line)
            if not match:
                continue
            seen = True
            if action == "passed":
                _add(counts, "pass", int(match[1]))
                _add(counts, "total", int(match[1]))
            elif action == "failed":
                _add(counts, "fail", int(match[1]))
                _add(counts, "pass", int(match[2]) - int(match[1]))
                _add(counts, "total", int(match[2]))
            else:
                _add(counts, action, int(match[1]))
                _add(counts, "total", int(match[1]))
    if not seen:
        return None
    skipped = sum(1 for line in lines if _GIT_SKIP.match(line))
    if skipped:
        counts["skip"] = skipped
        counts["pass"] -= skipped
    failed = [m.group(1) for m in (re.match(r"^not ok \d+ - (.*)$", l) for l in lines)
              if m and "# TODO" not in m.group(1)]
    return counts, failed


def _gawk(lines):
    """gawk's test/Makefile ends with 'ALL TESTS PASSED' or 'N TESTS FAILED'; it does
    not count what passed."""
    for line in reversed(lines):
        if line.strip() == "ALL TESTS PASSED":
            counts = _blank()
            counts["fail"] = 0
            return counts, []
        match = re.match(r"^(\d+) TESTS? FAILED", line.strip())
        if match:
            counts = _blank()
            counts["fail"] = int(match[1])
            return counts, []
    return None


def _rsync(lines):
    """rsync's runtests.sh: '----- overall results:' then '  37 passed', '  5 skipped'."""
    try:
        start = max(i for i, line in enumerate(lines) if "overall results:" in line)
    except ValueError:
        return None
    counts = _blank()
    for line in lines[start + 1:start + 8]:
        match = re.match(r"^\s+(\d+) (passed|failed|skipped)\s*$", line)
        if match:
            key = {"passed": "pass", "failed": "fail", "skipped": "skip"}[match[2]]
            _add(counts, key, int(match[1]))
            _add(counts, "total", int(match[1]))
    failed = [m.group(1) for m in (re.match(r"^----- (\S+) failed", l) for l in lines) if m]
    return counts, failed


_AUTOTEST_LINE = re.compile(r"^\s*\d+: .*?\s(ok|skipped \(.*\)|FAILED \(.*\)|"
                            r"expected failure \(.*\)|UNEXPECTED PASS)\s*$")
_AUTOTEST_KEYS = {"ok": "pass", "skipped": "skip", "FAILED": "fail", "expected": "xfail",
                  "UNEXPECTED": "xpass"}


def _autotest(lines):
    """Autotest (tar's tests/testsuite): one line per test, '  12: name    ok' (or
    'skipped (file.at:3)', 'FAILED (file.at:9)', ...), then '## Test results. ##'.
    The per-test lines are counted: the final sentence leaves some counts out."""
    if not any(line.strip() == "## Test results. ##" for line in lines):
        return None
    counts, failed = _blank(), []
    for line in lines:
        match = _AUTOTEST_LINE.match(line)
        if match:
            key = _AUTOTEST_KEYS[match.group(1).split()[0]]
            _add(counts, key, 1)
            _add(counts, "total", 1)
            if key == "fail":
                failed.append(line.split(":", 1)[1].rsplit("FAILED", 1)[0].strip())
    for key in COUNT_KEYS:
        counts[key] = counts[key] or 0
    return counts, failed


# One package may use several harnesses (tar: gnulib's tests under automake, its own
# under Autotest): every format found is counted and the counts are summed. None of
# these summaries can be mistaken for another's.
PARSERS = (("automake", _automake), ("autotest", _autotest), ("dejagnu", _dejagnu),
           ("git", _git), ("automake-serial", _automake_serial), ("rsync", _rsync),
           ("gawk", _gawk))


def parse(text):
    """(format, counts, failed test names) of a suite's output; format None and all
    counts None when no known summary is in it (then only the exit status counts)."""
    lines = _ANSI.sub("", text).replace("\r", "").splitlines()
    formats, counts, failed = [], _blank(), []
    for name, parser in PARSERS:
        found = parser(lines)
        if found is None:
            continue
        formats.append(name)
        for key, n in found[0].items():
            if n is not None:
                _add(counts, key, n)
        failed += found[1]
    return ("+".join(formats) or None), counts, list(dict.fromkeys(failed))


def describe(counts):
    """'65 passed, 1 failed, 4 skipped of 70' (unknown counts left out)."""
    words = [("pass", "passed"), ("fail", "failed"), ("error", "errored"), ("skip", "skipped"),
             ("xfail", "failed as expected"), ("xpass", "passed unexpectedly")]
    parts = [f"{counts[k]} {w}" for k, w in words
             if counts.get(k) is not None and (counts[k] or k in ("pass", "fail"))]
    text = ", ".join(parts)
    if counts.get("total") is not None:
        text += f" of {counts['total']}"
    return text or "no counts (the suite prints no summary dappdeps knows)"


# ---- running ----------------------------------------------------------------

def run_test(comp):
    work = work_dir(comp)
    lock_path = work.with_name(f".{work.name}.lock")
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, "w") as lock:
        # Two runs testing one component would share the work folder: the second
        # waits, then finds the result current.
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            say(f"{task_name(comp)}: another run is testing it; waiting")
            fcntl.flock(lock, fcntl.LOCK_EX)
            if test_stamp(comp).is_current():
                say(f"{task_name(comp)}: tested by the other run")
                return True
        return _run_locked(comp, work)


def _run_locked(comp, work):
    name, log, r = task_name(comp), log_path(comp), comp.recipe
    stamp = test_stamp(comp)
    reason = REASONS.pop(name, None) or _why(stamp)
    say(f"{name}: rebuilding, then `{r['test'].strip()}` ({reason}); log: {log}")
    started = time.time()
    result = {"component": comp.name, "distribution": comp.dist.name, "version": r.version,
              "test": r["test"], "directory": test_dir(r), "log": str(log),
              "started": int(started)}
    try:
        fetched = builder.prepare_work(comp, work, log)
        build_key = comp.stamp(fetched).key
        result["build_key"] = build_key
        shipped = canonical.load(comp.stamp_path).get("key") if comp.stamp_path.exists() else None
        if shipped != build_key:
            # task_dep ran build: first, so this means the stage changed under us.
            raise UserError(f"the built output of {comp.task} is not the one for the current "
                            f"key; run `doit {comp.task}` first.")
        (work / "meta" / "test.sh").write_text(test_script(comp))
        build_started = time.time()
        status = builder.run_sandboxed(comp, work, log)
        result["build_seconds"] = round(time.time() - build_started, 1)
        if status != 0:
            result.update(phase="build", status=status, passed=False, format=None,
                          counts=_blank(), failed_tests=[])
            return _failed(comp, work, stamp, result,
                           f"{name}: the rebuild for the test failed (exit status {status})")
        result["same_output_as_shipped"] = _same_output(comp, work)
        offset = log.stat().st_size
        test_started = time.time()
        # The rebuild saw only its dependencies; the suite sees the whole distribution,
        # as users do: gawk and tar run $PREFIX/bin/sh (bash), tar runs the prefix's
        # gzip and xz by absolute path. The fresh output stays on top.
        everything = [c for c in comp.dist.components if c != comp.name]
        status = builder.run_sandboxed(comp, work, log, script="meta/test.sh", lowers=everything)
        result["seconds"] = round(time.time() - test_started, 1)
    except UserError as exc:
        files.append(log, exc.render())
        return TaskFailed(f"{name}: {exc.render()}\nlog: {log}")
    with open(log, "rb") as fh:
        fh.seek(offset)
        fmt, counts, failed = parse(fh.read().decode(errors="replace"))
    passed = status == 0 and not counts["fail"] and not counts["error"]
    result.update(phase="test", status=status, passed=passed, format=fmt, counts=counts,
                  failed_tests=failed[:100], finished=int(time.time()))
    if not passed:
        return _failed(comp, work, stamp, result, f"{name}: upstream test suite failed "
                       f"(exit status {status}): {describe(counts)}")
    # Last step: the result with its key, atomically (it is the task's stamp).
    stamp.write(**result)
    files.force_rmtree(work)
    say(f"{name}: passed in {duration(result['seconds'])}: {describe(counts)}")
    return True


def _failed(comp, work, stamp, result, headline):
    # Written without a key: a report sees the failure, the next run retries.
    result["finished"] = int(time.time())
    files.write_atomic(stamp.path, canonical.dumps({"inputs": stamp.inputs, **result}))
    log = log_path(comp)
    tail = files.tail(log, LOG_TAIL)
    names = result.get("failed_tests") or []
    lines = [headline]
    if names:
        lines.append("Failed: " + " ".join(names[:20]) + (" ..." if len(names) > 20 else ""))
    lines.append(f"Last {len(tail)} lines of {log}:")
    lines += ["  | " + line.rstrip("\n") for line in tail]
    lines += [f"Full log: {log}", f"Result: {stamp.path}",
              f"Work folder kept for inspection: {work}"]
    return TaskFailed("\n".join(lines))


def _same_output(comp, work):
    """Did the rebuild install byte for byte what the build shipped? (It should, since
    the key is the same; a difference means the build is not reproducible, not that
    the tested programs were built differently.)"""
    try:
        shipped = canonical.load(comp.manifest_path)["entries"]
    except (OSError, ValueError, KeyError):
        return None
    return manifest.scan_tree(work / "upper") == shipped


def _clean(comp):
    path = work_dir(comp)
    if path.exists():
        files.force_rmtree(path)
    result_path(comp.cfg, comp.dist.name, comp.name).unlink(missing_ok=True)


def task_test():
    """Upstream test suites (recipe `test`), on demand: cache/tests/<dist>/<component>.json."""
    for comp in components():
        if not comp.recipe["test"].strip():
            continue
        yield {
            "name": f"{comp.dist.name}/{comp.name}",
            "doc": f"{comp.recipe['test'].strip().splitlines()[0][:60]} for {comp.name} "
                   f"{comp.recipe.version}",
            "actions": [(run_test, [comp])],
            "uptodate": [_uptodate(comp)],
            "task_dep": [comp.task],
            "clean": [(_clean, [comp])],
        }

