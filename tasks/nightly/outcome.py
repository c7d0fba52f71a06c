"""A nightly run's outcome: its result, exit code and one-line summary, and the report
document (tasks.report.schema) that says it all."""
import socket
from datetime import datetime, timezone

from tasks.model.pipeline import STAGES
from tasks.nightly.records import relative
from tasks.report.schema import FORMAT, totals as count_totals

EXIT_OK = 0             # every task ran or was up to date
EXIT_FAILED = 1         # at least one task failed (or was blocked by a failed dependency)
EXIT_ERROR = 2          # configuration error, or doit could not start the run
EXIT_LOCKED = 75        # another nightly run holds the lock (EX_TEMPFAIL: try again later)
# interrupted by a signal: 128 + its number (130 SIGINT, 143 SIGTERM, 129 SIGHUP)

# Stages whose running means that something was (re)built; load:<image> runs whenever the
# engine lacks the image or no engine answers, and check-host only checks.
BUILDING_STAGES = tuple(stage.name for stage in STAGES if stage.builds)


def iso(epoch):
    return datetime.fromtimestamp(epoch, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def make_report(cfg, run, tasks, images):
    """The report document of a run (run: id, dir, t0, t1, seconds, signal, signum, error,
    doit_rc, command, doit_args, parallel) from its task and image records."""
    totals = count_totals(tasks)
    built = [t for t in tasks if t["status"] in ("ran", "failed", "interrupted")
             and t["stage"] in BUILDING_STAGES]
    bad = totals["failed"] + totals["blocked"]
    if run["signal"]:
        result, code = "interrupted", 128 + run["signum"]
    elif run["error"]:
        result, code = "error", EXIT_ERROR
    elif bad or run["doit_rc"] not in (0, None):
        result, code = "failed", EXIT_FAILED
    else:
        result, code = "ok", EXIT_OK
    nothing = result == "ok" and not built
    if nothing:
        summary = f"nothing to rebuild: all {totals['up_to_date']} tasks up to date"
        others = [t["name"] for t in tasks if t["status"] == "ran"]
        if others:
            summary += f" ({', '.join(others[:5])}{'...' if len(others) > 5 else ''} ran anyway)"
    elif result == "ok":
        summary = f"rebuilt: {len(built)} tasks ran, {totals['up_to_date']} up to date"
    elif result == "failed":
        failed = [t["name"] for t in tasks if t["status"] == "failed"]
        summary = f"{len(failed)} failed ({', '.join(failed[:5])}{'...' if len(failed) > 5 else ''})"
        if totals["blocked"]:
            summary += f", {totals['blocked']} blocked by the failure"
        summary += f"; {totals['ran']} ran, {totals['up_to_date']} up to date"
        if not failed:
            summary = f"doit reported a failure (exit {run['doit_rc']}); {totals['ran']} ran"
    elif result == "interrupted":
        summary = (f"interrupted by {run['signal']} after {run['seconds']:.0f} s: {totals['ran']} tasks "
                   f"finished and are kept; {totals['interrupted']} interrupted, "
                   f"{totals['not_run']} not started")
    else:
        summary = run["error"].splitlines()[0]
    return {
        "format": FORMAT, "id": run["id"], "started": iso(run["t0"]), "finished": iso(run["t1"]),
        "seconds": round(run["seconds"], 3), "host": socket.gethostname(), "root": str(cfg.root),
        "config": str(cfg.path), "report_dir": relative(run["dir"], cfg.root),
        "command": run["command"], "doit_args": run["doit_args"], "parallel": run["parallel"],
        "result": result, "exit_code": code, "signal": run["signal"], "error": run["error"],
        "summary": summary, "nothing_to_rebuild": nothing, "totals": totals, "tasks": tasks,
        "images": images,
    }
