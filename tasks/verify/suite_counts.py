"""Counts of an upstream test suite, parsed from its log: the summaries printed by the
harnesses dappdeps knows (automake, Autotest, DejaGnu, git's t/, gawk, rsync, ...)."""
import re

COUNT_KEYS = ("total", "pass", "fail", "skip", "xfail", "xpass", "error")

_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def blank():
    """Counts of a suite that printed no summary: all unknown."""
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
    counts = blank()
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
    counts, seen = blank(), False
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
    counts, seen = blank(), False
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
    counts, seen = blank(), False
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
            counts = blank()
            counts["fail"] = 0
            return counts, []
        match = re.match(r"^(\d+) TESTS? FAILED", line.strip())
        if match:
            counts = blank()
            counts["fail"] = int(match[1])
            return counts, []
    return None


def _rsync(lines):
    """rsync's runner ('----- overall results:' then '  37 passed', '  5 skipped'); the
    failed tests: 'FAIL    name' (3.4's runtests.py) or '----- name failed' (runtests.sh)."""
    try:
        start = max(i for i, line in enumerate(lines) if "overall results:" in line)
    except ValueError:
        return None
    counts = blank()
    for line in lines[start + 1:start + 8]:
        match = re.match(r"^\s+(\d+) (passed|failed|skipped)\s*$", line)
        if match:
            key = {"passed": "pass", "failed": "fail", "skipped": "skip"}[match[2]]
            _add(counts, key, int(match[1]))
            _add(counts, "total", int(match[1]))
    failed = [m.group(1) or m.group(2) for m in
              (re.match(r"^(?:----- (\S+) failed|FAIL\s+(\S+)\s*$)", l) for l in lines) if m]
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
    counts, failed = blank(), []
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
    formats, counts, failed = [], blank(), []
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
