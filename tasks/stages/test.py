"""Stage: test (on demand, not part of a plain `doit`). Each component's own upstream
test suite, the recipe's `test` shell (e.g. `make check`).

test:<dist>/<component> redoes the component's build (same recipe, script,
sandbox, environment, toolchain and dependencies, so the same key) in its own
work folder, cache/work/<dist>/<component>.test/, and then runs `test` in the
sandbox on that build tree: the programs tested are the ones compiled for the
prefix, exactly as shipped. The build's own work folder and output are never
touched, so a test can run next to the pipeline.

Results: cache/tests/<dist>/<component>.json (counts parsed from the log when
the suite prints a summary tasks/verify/suite_counts.py knows, else the exit status
only) and the log cache/logs/<dist>/<component>.test.log (tasks/verify/upstream.py). The task fails when the suite
fails; the result is written anyway so reports can show it.

Kill-safety as in the builder: the work folder is wiped at the start, the result
is written last and atomically; a passing result is the stamp that makes the
task up to date (for the component's current key and the current `test`).
"""
import fcntl
import time

from doit.exceptions import TaskFailed

from tasks.build import builder
from tasks.build.key import component_key
from tasks.core import canonical, code, files
from tasks.core.errors import UserError
from tasks.core.log import duration, say
from tasks.model.stamp import REASONS, Stamp
from tasks.stages.build import components
from tasks.verify.suite_counts import blank, describe, parse
from tasks.verify.upstream import (log_path, record_failure, result_path, same_output, test_dir,
                                   test_script, work_dir)

# Bump when how a suite is run or judged changes: every result is redone once.
# 2: the suite sees the whole distribution at $PREFIX.


def task_name(comp):
    return f"test:{comp.dist.name}/{comp.name}"


def test_stamp(comp):
    """Key of a test result: the component's build key and how its suite is run."""
    return Stamp(result_path(comp.cfg, comp.dist.name, comp.name), {
        "build": component_key(comp).key, "test": comp.recipe["test"],
        "directory": test_dir(comp.recipe), "version": code.digest("tasks.stages.test", "tasks.verify.upstream",
                                                        "tasks.verify.suite_counts", "tasks.build.sandbox",
                                                        "tasks.build.builder")})


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
        build_key = component_key(comp, fetched).key
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
                          counts=blank(), failed_tests=[])
            return _failed(comp, work, stamp, result,
                           f"{name}: the rebuild for the test failed (exit status {status})")
        result["same_output_as_shipped"] = same_output(comp, work)
        offset = log.stat().st_size
        test_started = time.time()
        # The rebuild saw only its dependencies; the suite sees the whole distribution,
        # as users do: gawk and tar run $PREFIX/bin/sh (bash), tar runs the prefix's
        # gzip and xz by absolute path. The fresh output stays on top.
        everything = [c for c in comp.dist.components if c != comp.name]
        status = builder.run_sandboxed(comp, work, log, script="meta/test.sh", lowers=everything,
                                        timeout=comp.recipe["test_timeout"])
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
    result["finished"] = int(time.time())
    return TaskFailed(record_failure(comp, work, stamp, result, headline))


def _clean(comp):
    path = work_dir(comp)
    if path.exists():
        files.force_rmtree(path)
    result_path(comp.cfg, comp.dist.name, comp.name).unlink(missing_ok=True)


def tasks():
    """Upstream test suites (recipe `test`), on demand: cache/tests/<dist>/<component>.json."""
    for comp in components(native_only=True):
        if not comp.recipe["test"].strip():
            continue
        yield {
            "name": f"{comp.dist.name}/{comp.name}",
            "doc": f"{comp.recipe['test'].strip().splitlines()[0][:60]} for {comp.name} "
                   f"{comp.recipe.version}",
            "actions": [(run_test, [comp])],
            "uptodate": [_uptodate(comp)],
            # the suite sees the whole distribution at $PREFIX, not only what the
            # component's build mounts: every output of it must be there
            "task_dep": [comp.task, f"assemble:{comp.dist.name}"],
            "clean": [(_clean, [comp])],
        }


