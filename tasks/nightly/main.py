"""The nightly run: one command for schedulers (`bin/nightly`, see docs/nightly.md).

    bin/nightly [--wait SECONDS] [--parallel N] [--keep N] [--update] [TASK...]

1. takes an exclusive lock (fcntl) on cache/nightly.lock, so two runs never overlap: a second
   run waits up to --wait seconds (config `reports: {lock_wait: 60}`) for the first to finish,
   then gives up with EXIT_LOCKED and says who holds the lock;
2. runs the whole pipeline (doit's default tasks plus legal:<image>) incrementally through
   doit as a library (DoitMain + ModuleTaskLoader of dodo.py) with --continue, so one broken
   component does not stop unrelated ones; a reporter records, per task, whether it ran or
   was up to date, why it ran (tasks.model.stamp.REASONS, filled by the up-to-date checks), when it
   started and ended, and for failures the message and the log's tail;
3. SIGTERM, SIGINT and SIGHUP stop it like Ctrl-C: the running build's sandbox is killed, doit
   saves its database, the components' stamps of everything finished are on disk anyway, and
   the report of the interrupted run is still written;
4. writes cache/reports/<run id>/report.{md,json,html}, keeps the newest N runs (config
   `reports: {keep: 30}`) and rewrites cache/reports/index.html.

Exit codes (also in docs/nightly.md):
    0  every task ran or was up to date
    1  a task failed (the report says which, with its log tail); tasks needing it were blocked
    2  configuration error, or doit could not start (unknown task name, broken dodo.py)
   75  another nightly run holds cache/nightly.lock (it waited --wait seconds): try later
  143  stopped by SIGTERM (130 SIGINT, 129 SIGHUP): finished work kept, report written
"""
import argparse
import inspect
import os
import signal
import socket
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

from tasks.core import log
from tasks.nightly.lock import RunLock
from tasks.nightly.outcome import EXIT_LOCKED, iso, make_report
from tasks.nightly.records import image_records, outdated_records, repro_records, task_records
from tasks.nightly.reporter import NightlyReporter
from tasks.nightly.signals import Signals
from tasks.report.formatting import fmt_seconds
from tasks.report.runs import new_run_dir, update_index, write_report
from tasks.report.schema import validate

REPO = Path(__file__).resolve().parents[2]

SETTLE_SECONDS = 30     # after a signal: how long worker threads may take to end

DEFAULTS = {"keep": 30, "lock_wait": 60.0, "parallel": 1, "log_tail": 40}


def settings(cfg, args=None):
    """The `reports:` mapping of config.yaml, read defensively, then command-line overrides."""
    raw = cfg.data.get("reports") if isinstance(getattr(cfg, "data", None), dict) else None
    raw = raw if isinstance(raw, dict) else {}
    out = dict(DEFAULTS)
    for key, default in DEFAULTS.items():
        value = raw.get(key)
        try:
            value = type(default)(value) if value is not None and not isinstance(value, bool) else None
        except (TypeError, ValueError):
            value = None
        if value is not None and value >= 0:
            out[key] = value
    out["keep"] = max(1, int(out["keep"]))
    out["parallel"] = max(1, int(out["parallel"]))
    if args is not None:
        for key in ("keep", "parallel", "lock_wait", "log_tail"):
            value = getattr(args, key, None)
            if value is not None:
                out[key] = value
    return out


# ---- running doit ---------------------------------------------------------------------------
def doit_namespace(reporter, parallel):
    """dodo.py's namespace for ModuleTaskLoader, with the nightly's reporter. The default
    tasks are dodo.py's: the pipeline of the `default: true` distributions."""
    if str(REPO) not in sys.path:
        sys.path.insert(0, str(REPO))
    import dodo
    namespace = dict(inspect.getmembers(dodo))
    config = dict(namespace.get("DOIT_CONFIG") or {})
    config["reporter"] = reporter           # an instance: doit uses it as it is
    if parallel > 1:
        config["par_type"] = "thread"       # builds are subprocesses; no pickling needed
    namespace["DOIT_CONFIG"] = config
    return namespace


class StderrTail:
    """sys.stderr that also keeps its last lines (doit's own error messages for the report)."""

    def __init__(self, stream, keep=8192):
        self.stream, self.keep, self.text = stream, keep, ""

    def write(self, text):
        self.text = (self.text + text)[-self.keep:]
        return self.stream.write(text)

    def __getattr__(self, name):
        return getattr(self.stream, name)


def run_doit(namespace, doit_args):
    """DoitMain(...).run(); returns (doit's exit code, the tail of what it wrote to stderr)."""
    from doit.cmd_base import ModuleTaskLoader
    from doit.doit_cmd import DoitMain
    saved = sys.stderr
    sys.stderr = tail = StderrTail(saved)
    try:
        return DoitMain(ModuleTaskLoader(namespace)).run(doit_args), tail.text
    finally:
        sys.stderr = saved


def parse_args(argv):
    p = argparse.ArgumentParser(
        prog="bin/nightly", description="The nightly run: lock, the whole pipeline with "
        "--continue, reports in cache/reports/ (docs/nightly.md).",
        epilog="exit codes: 0 ok, 1 a task failed, 2 configuration error, 75 another run "
               "holds the lock, 128+N stopped by signal N (143 = SIGTERM)")
    p.add_argument("--wait", dest="lock_wait", type=float, metavar="SECONDS",
                   help=f"wait this long for a running nightly to finish (config reports.lock_wait, "
                        f"default {DEFAULTS['lock_wait']:g})")
    p.add_argument("-n", "--parallel", type=int, metavar="N",
                   help="tasks run at once (doit -n N -P thread; config reports.parallel, default 1)")
    p.add_argument("--keep", type=int, metavar="N",
                   help=f"report folders kept (config reports.keep, default {DEFAULTS['keep']})")
    p.add_argument("--log-tail", dest="log_tail", type=int, metavar="LINES",
                   help=f"log lines shown per failure (default {DEFAULTS['log_tail']})")
    p.add_argument("--update", action="store_true",
                   help="first bump outdated recipes within config update.policy, keeping only "
                        "bumps that build, check and test (docs/nightly.md, Updates)")
    p.add_argument("tasks", nargs="*", metavar="TASK",
                   help="doit tasks to run (default: the whole pipeline)")
    args = p.parse_args(argv)
    for key in ("keep", "parallel"):
        if getattr(args, key) is not None and getattr(args, key) < 1:
            p.error(f"--{key} must be 1 or more")
    return args


def say(message):
    log.say(f"nightly: {message}")


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    from tasks.model.project import load_or_exit, project
    cfg = load_or_exit(os.getcwd())         # exits 2 with the message on a config error
    opts = settings(cfg, args)

    lock = RunLock(cfg.cache / "nightly.lock")
    me = {"pid": os.getpid(), "host": socket.gethostname(), "since": iso(time.time()),
          "command": " ".join([Path(sys.argv[0]).name] + list(sys.argv[1:]))}
    if not lock.acquire(0, me):
        holder = lock.holder()
        if opts["lock_wait"] > 0:
            say(f"another nightly run holds {lock.path} (pid {holder.get('pid', '?')} since "
                f"{holder.get('since', '?')}); waiting up to {opts['lock_wait']:g} s for it")
        if not lock.acquire(opts["lock_wait"], me):
            holder = lock.holder() or holder
            say(f"another nightly run is still going: pid {holder.get('pid', '?')} on "
                f"{holder.get('host', '?')} since {holder.get('since', '?')} holds {lock.path}; "
                f"gave up after waiting {opts['lock_wait']:g} s. Nothing was done "
                f"(exit {EXIT_LOCKED}: try again later).")
            return EXIT_LOCKED
        # the configuration may have changed while we waited: read it again
        cfg = load_or_exit(os.getcwd())
        opts = settings(cfg, args)
    project.reset(cfg)
    try:
        return run_locked(cfg, args, opts)
    finally:
        lock.release()


def run_locked(cfg, args, opts):
    signals = Signals()
    t0 = time.time()
    run_id = datetime.fromtimestamp(t0, timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    reports_dir = cfg.cache / "reports"
    run_dir = new_run_dir(reports_dir, run_id)
    reporter = NightlyReporter(sys.stdout, t0)
    doit_args = ["--continue"]
    if opts["parallel"] > 1:
        doit_args += ["-n", str(opts["parallel"])]
    doit_args += list(args.tasks)
    say(f"run {run_dir.name}: doit {' '.join(doit_args)} (report: {run_dir})")
    error, rc, updates = None, None, ({} if args.update else None)
    try:
        signals.install()
        if args.update:                      # before the pipeline, which then builds the kept bumps
            from tasks.model.project import project
            from tasks.nightly import update
            cfg = update.run(cfg, updates)
            project.reset(cfg)
            say(f"update: {len(updates['bumped'])} bumped, {len(updates['refused'])} refused"
                + (f" ({updates['error']})" if updates.get("error") else ""))
        namespace = doit_namespace(reporter, opts["parallel"])
        signals.install()                    # again: importing dodo.py installs its own
        rc, err = run_doit(namespace, doit_args)
        signals.armed = False
        if rc == 3:
            said = [line for line in err.splitlines() if line.startswith("ERROR")]
            error = "doit could not start the run: " + ("\n".join(said[-5:]) or f"exit status {rc}")
    except KeyboardInterrupt:
        signals.armed = False
        if signals.received is None:
            signals.received = signal.SIGINT
    except SystemExit as exc:                # a stage module refused the configuration
        signals.armed = False
        error = f"the pipeline could not be loaded (exit status {exc.code})"
    except Exception as exc:                 # noqa: BLE001 - a broken dodo.py or stage module
        signals.armed = False
        import traceback
        traceback.print_exc()
        error = f"the pipeline could not be loaded: {exc!r}"
    if signals.received is not None:
        # doit stopped listening to its worker threads: wait for their (killed) builds
        # to end, so the report says what is on disk (tasks.stages.finished)
        from tasks.stages import settle
        left = settle(SETTLE_SECONDS)
        if left:
            say(f"still running after {SETTLE_SECONDS} s, reported as interrupted: {', '.join(left)}")
    t1 = time.time()
    run = {"id": run_dir.name, "dir": run_dir, "t0": t0, "t1": t1, "seconds": t1 - t0,
           "signal": signals.name, "signum": signals.received, "error": error, "doit_rc": rc,
           "command": [Path(sys.argv[0]).name] + list(sys.argv[1:]), "doit_args": doit_args,
           "parallel": opts["parallel"]}
    if run["signal"] is None and signals.received is not None:
        run["signal"] = f"signal {signals.received}"
    tasks = task_records(cfg, reporter, signals.received is not None, opts["log_tail"])
    images = image_records(cfg, tasks)
    doc = make_report(cfg, run, tasks, images)
    doc["repro"] = repro_records(cfg)     # the latest doit repro:<dist>, if any
    doc["outdated"] = outdated_records(cfg)   # the latest doit outdated, if any
    doc["updates"] = updates                  # bin/nightly --update, or None
    try:
        validate(doc)
    except ImportError:
        pass
    except Exception as exc:                 # noqa: BLE001 - still write it, but say so
        say(f"warning: the report does not follow its schema: {str(exc).splitlines()[0]}")
    write_report(doc, run_dir)
    removed = update_index(reports_dir, opts["keep"], current=run_dir)
    if removed:
        say(f"removed {len(removed)} old report(s), keeping {opts['keep']}")
    say(f"{doc['summary']} ({fmt_seconds(doc['seconds'])}, exit {doc['exit_code']})")
    say(f"report: {run_dir / 'report.html'} (index: {reports_dir / 'index.html'})")
    return doc["exit_code"]


if __name__ == "__main__":
    sys.exit(main())
