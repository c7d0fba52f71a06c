"""The nightly run: one command for schedulers (`bin/nightly`, see docs/nightly.md).

    bin/nightly [--wait SECONDS] [--parallel N] [--keep N] [TASK...]

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
import fcntl
import inspect
import json
import os
import signal
import socket
import sys
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

from doit.reporter import ConsoleReporter

from tasks.core import log

EXIT_OK = 0             # every task ran or was up to date
EXIT_FAILED = 1         # at least one task failed (or was blocked by a failed dependency)
EXIT_ERROR = 2          # configuration error, or doit could not start the run
EXIT_LOCKED = 75        # another nightly run holds the lock (EX_TEMPFAIL: try again later)
# interrupted by a signal: 128 + its number (130 SIGINT, 143 SIGTERM, 129 SIGHUP)

REPO = Path(__file__).resolve().parent.parent

DEFAULTS = {"keep": 30, "lock_wait": 60.0, "parallel": 1, "log_tail": 40}

# Stages whose running means that something was (re)built; load:<image> runs whenever the
# engine lacks the image or no engine answers, and check-host only checks.
BUILDING_STAGES = ("fetch", "build", "assemble", "image", "legal")

# Why a task ran when its up-to-date check leaves no reason in tasks.model.stamp.REASONS.
FALLBACK_WHY = {
    "check-host": "host tools are missing",
    "fetch": "not in the download cache",
    "load": "the engine lacks this image, or no engine answers",
}


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


# ---- the lock ---------------------------------------------------------------------------
class RunLock:
    """An exclusive fcntl lock on a file that stays in place; the holder writes who it is
    into the file (pid, start, command) so that a waiting run can say whom it waits for.
    The kernel drops the lock when the holder dies, however it dies."""

    def __init__(self, path):
        self.path = Path(path)
        self.fd = None

    def acquire(self, wait, info):
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        deadline = time.monotonic() + max(0.0, wait)
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    os.close(fd)
                    return False
                time.sleep(min(0.2, max(0.01, deadline - time.monotonic())))
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(info, sort_keys=True) + "\n").encode(), 0)
        self.fd = fd
        return True

    def holder(self):
        try:
            return json.loads(self.path.read_text() or "{}")
        except (OSError, ValueError):
            return {}

    def release(self):
        if self.fd is not None:
            os.ftruncate(self.fd, 0)
            fcntl.flock(self.fd, fcntl.LOCK_UN)
            os.close(self.fd)
            self.fd = None


# ---- signals ----------------------------------------------------------------------------
class Signals:
    """SIGTERM/SIGINT/SIGHUP raise KeyboardInterrupt once (doit then saves what finished);
    later signals, and any signal while the report is written, are only recorded."""

    NAMES = {signal.SIGTERM: "SIGTERM", signal.SIGINT: "SIGINT", signal.SIGHUP: "SIGHUP"}

    def __init__(self):
        self.received = None
        self.armed = False

    def install(self):
        for sig in self.NAMES:
            signal.signal(sig, self._handler)
        self.armed = True

    def _handler(self, signum, frame):
        first = self.received is None
        if first:
            self.received = signum
        if first and self.armed:
            self.armed = False
            raise KeyboardInterrupt

    @property
    def name(self):
        return self.NAMES.get(self.received)


# ---- the reporter -------------------------------------------------------------------------
class NightlyReporter(ConsoleReporter):
    """doit's console output, plus one record per task for the report. Thread-safe: with
    `-n N -P thread` doit calls execute_task() in its worker threads."""

    def __init__(self, outstream, t0, clock=time.time):
        super().__init__(outstream, {"failure_verbosity": 0})
        self.t0 = t0
        self.clock = clock
        self.records = {}
        self.tasks = {}
        self.selected = []
        self._lock = threading.Lock()

    def _now(self):
        return round(self.clock() - self.t0, 3)

    def _record(self, task):
        rec = self.records.get(task.name)
        if rec is None:
            rec = {"name": task.name, "stage": task.name.split(":", 1)[0], "status": None,
                   "why": None, "started": None, "finished": None, "error": None,
                   "actions": bool(task.actions), "output": ""}
            self.records[task.name] = rec
        return rec

    def initialize(self, tasks, selected_tasks):
        self.tasks = tasks
        self.selected = list(selected_tasks or [])

    def execute_task(self, task):
        from tasks.model.stamp import REASONS
        # the action (e.g. the builder) pops its reason: read it before the action runs
        why = REASONS.get(task.name)
        with self._lock:
            rec = self._record(task)
            rec.update(status="running", started=self._now(), why=why)
        super().execute_task(task)

    def add_success(self, task):
        with self._lock:
            rec = self._record(task)
            rec.update(status="ran", finished=self._now())
        super().add_success(task)

    def add_failure(self, task, fail):
        from doit.exceptions import UnmetDependency
        with self._lock:
            rec = self._record(task)
            now = self._now()
            if isinstance(fail, UnmetDependency) and rec["started"] is None:
                needs = ", ".join(fail.message.split())
                rec.update(status="blocked", why=f"not run: {needs} did not succeed")
            else:
                rec.update(status="failed", error=fail.get_msg().strip(), finished=now)
                if rec["started"] is None:
                    rec["started"] = now
                rec["output"] = "".join((getattr(a, "err", None) or "") + (getattr(a, "out", None) or "")
                                        for a in task.actions)
        super().add_failure(task, fail)

    def skip_uptodate(self, task):
        with self._lock:
            self._record(task).update(status="up-to-date")
        super().skip_uptodate(task)

    def skip_ignore(self, task):
        with self._lock:
            self._record(task).update(status="ignored", why="ignored (`doit ignore`)")
        super().skip_ignore(task)

    def wanted(self):
        """Names of the tasks this run was to visit: the selected ones and their deps."""
        seen, todo = set(), list(self.selected)
        while todo:
            name = todo.pop()
            if name in seen or name not in self.tasks:
                continue
            seen.add(name)
            task = self.tasks[name]
            todo += list(task.task_dep) + list(getattr(task, "setup_tasks", []))
        return seen


# ---- the report ----------------------------------------------------------------------------
def _iso(epoch):
    return datetime.fromtimestamp(epoch, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _rel(path, root):
    path = Path(path)
    try:
        return str(path.resolve().relative_to(root))
    except ValueError:
        return str(path)


def _tail(path, count):
    from tasks.core.files import tail
    return [line.rstrip("\n") for line in tail(path, count)]


def log_of(cfg, task_name):
    """The build log of a build:<dist>/<component> task (None for other tasks)."""
    if not task_name.startswith("build:") or "/" not in task_name:
        return None
    dist, comp = task_name[len("build:"):].split("/", 1)
    return cfg.cache / "logs" / dist / f"{comp}.log"


def task_records(cfg, reporter, interrupted, log_tail):
    root = cfg.root
    names = [n for n, r in reporter.records.items() if r["actions"]]
    for name in sorted(reporter.wanted() - set(names)):
        task = reporter.tasks.get(name)
        if task is not None and task.actions:
            names.append(name)
    out = []
    for name in names:
        rec = reporter.records.get(name) or {"name": name, "stage": name.split(":", 1)[0],
                                             "status": None, "why": None, "started": None,
                                             "finished": None, "error": None, "output": ""}
        status = rec["status"]
        if status == "running":
            status = "interrupted"
        elif status is None:
            status = "not-run"
        why = rec["why"]
        if status in ("ran", "failed", "interrupted") and not why:
            why = FALLBACK_WHY.get(rec["stage"], "its up-to-date check said it must run")
        if status == "not-run":
            why = "the run was interrupted before it" if interrupted else "not reached"
        seconds = None
        if rec["started"] is not None and rec["finished"] is not None:
            seconds = round(rec["finished"] - rec["started"], 3)
        item = {"name": name, "stage": rec["stage"], "status": status, "why": why,
                "started": rec["started"], "finished": rec["finished"], "seconds": seconds}
        if status == "failed":
            item["error"] = (rec["error"] or "failed")[-6000:]
            log = log_of(cfg, name)
            if log is not None:
                item["log"] = _rel(log, root)
                item["log_tail"] = _tail(log, log_tail) if log.is_file() else []
            elif rec.get("output"):
                item["log_tail"] = rec["output"].rstrip("\n").splitlines()[-log_tail:]
        elif status in ("ran", "interrupted"):
            log = log_of(cfg, name)
            if log is not None:
                item["log"] = _rel(log, root)
                if status == "interrupted" and log.is_file():
                    item["log_tail"] = _tail(log, log_tail)
        out.append(item)
    return out


def image_records(cfg, tasks=()):
    """Every configured image: its export result (cache/images/*.json), SBOM, license folder,
    the installed size of each component it holds, and what its image:<name> task did in
    this run (an image whose task was blocked is the one of an earlier run)."""
    status = {t["name"]: t["status"] for t in tasks}
    from tasks.ship.image import image_paths, read_result
    from tasks.stages.legal import image_components, legal_paths
    root = cfg.root
    out = []
    for dist in cfg.distributions.values():
        try:
            doc = json.loads((cfg.cache / "stage" / f"{dist.name}.manifest.json").read_text())
        except (OSError, ValueError):
            doc = None
        for name, spec in dist.images.items():
            paths = image_paths(cfg.cache, name, dist.version)
            result = read_result(paths["json"]) or {}
            legal = legal_paths(cfg.cache, name, dist.version)
            item = {"name": name, "distribution": dist.name, "version": dist.version,
                    "repository": spec["repository"],
                    "exported": bool(result) and paths["tar"].is_file(),
                    "status": status.get(f"image:{name}"),
                    "ref": result.get("ref"), "digest": result.get("digest"), "id": result.get("id"),
                    "size": result.get("size"), "files": result.get("files"),
                    "tar": _rel(paths["tar"], root) if paths["tar"].is_file() else None,
                    "sbom": _rel(legal["sbom"], root) if legal["sbom"].is_file() else None,
                    "licenses": _rel(legal["folder"], root) if legal["folder"].is_dir() else None,
                    "components": []}
            if doc is not None:
                item["components"] = [
                    {"name": c["name"], "version": str(c.get("version", "")),
                     "license": c.get("license", ""), "size": c["size"], "files": c["files"]}
                    for c in image_components(doc, spec)]
            out.append(item)
    return out


def make_report(cfg, run, tasks, images):
    from tasks.report.report import FORMAT, STATUSES, peak_parallel
    totals = {s.replace("-", "_"): 0 for s in STATUSES}
    for t in tasks:
        totals[t["status"].replace("-", "_")] += 1
    totals["tasks"] = len(tasks)
    totals["busy_seconds"] = round(sum(t["seconds"] or 0 for t in tasks), 3)
    totals["peak_parallel"] = peak_parallel(tasks)
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
        "format": FORMAT, "id": run["id"], "started": _iso(run["t0"]), "finished": _iso(run["t1"]),
        "seconds": round(run["seconds"], 3), "host": socket.gethostname(), "root": str(cfg.root),
        "config": str(cfg.path), "report_dir": _rel(run["dir"], cfg.root),
        "command": run["command"], "doit_args": run["doit_args"], "parallel": run["parallel"],
        "result": result, "exit_code": code, "signal": run["signal"], "error": run["error"],
        "summary": summary, "nothing_to_rebuild": nothing, "totals": totals, "tasks": tasks,
        "images": images,
    }


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
    me = {"pid": os.getpid(), "host": socket.gethostname(), "since": _iso(time.time()),
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
    from tasks.report import report as reports
    signals = Signals()
    t0 = time.time()
    run_id = datetime.fromtimestamp(t0, timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    reports_dir = cfg.cache / "reports"
    run_dir = reports.new_run_dir(reports_dir, run_id)
    reporter = NightlyReporter(sys.stdout, t0)
    doit_args = ["--continue"]
    if opts["parallel"] > 1:
        doit_args += ["-n", str(opts["parallel"])]
    doit_args += list(args.tasks)
    say(f"run {run_dir.name}: doit {' '.join(doit_args)} (report: {run_dir})")
    error, rc = None, None
    try:
        signals.install()
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
    try:
        reports.validate(doc)
    except ImportError:
        pass
    except Exception as exc:                 # noqa: BLE001 - still write it, but say so
        say(f"warning: the report does not follow its schema: {str(exc).splitlines()[0]}")
    reports.write_report(doc, run_dir)
    removed = reports.update_index(reports_dir, opts["keep"], current=run_dir)
    if removed:
        say(f"removed {len(removed)} old report(s), keeping {opts['keep']}")
    say(f"{doc['summary']} ({reports.fmt_seconds(doc['seconds'])}, exit {doc['exit_code']})")
    say(f"report: {run_dir / 'report.html'} (index: {reports_dir / 'index.html'})")
    return doc["exit_code"]


if __name__ == "__main__":
    sys.exit(main())
