"""A component's upstream test suite (the recipe's `test` shell, e.g. `make check`): where
it runs and logs, the script that runs it after the rebuild, and its result record.

    cache/work/<dist>/<component>.test/     the rebuild and the suite's work folder
    cache/logs/<dist>/<component>.test.log  the rebuild's and the suite's log
    cache/tests/<dist>/<component>.json     the result (counts: tasks.verify.suite_counts)
"""
from tasks.build import manifest
from tasks.core import canonical, files
from tasks.core.shell import dquote

LOG_TAIL = 30


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


def record_failure(comp, work, stamp, result, headline):
    """Write a failed result (without its key: a report sees the failure, the next run
    retries) and return the message that says what failed, with the log's tail."""
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
    return "\n".join(lines)


def same_output(comp, work):
    """Did the rebuild install byte for byte what the build shipped? (It should, since
    the key is the same; a difference means the build is not reproducible, not that
    the tested programs were built differently.)"""
    try:
        shipped = canonical.load(comp.manifest_path)["entries"]
    except (OSError, ValueError, KeyError):
        return None
    return manifest.scan_tree(work / "upper") == shipped
