"""The doit-facing stages: one module per stage of tasks.model.pipeline.STAGES.

Each module defines `tasks()` (doit task dicts) and, if the stage is part of a plain
`doit`, `defaults(cfg)` (the names of its default tasks). This package turns the
declared list into doit task creators in pipeline order, and holds doit's settings.
"""
import importlib
import os
import signal
import sys
import threading
import time

from tasks.build import sandbox
from tasks.core import files
from tasks.core.errors import DiskFull
from tasks.core.log import say
from tasks.model.pipeline import STAGES
from tasks.model.stamp import REASONS
from tasks.model.project import project

project.cache.mkdir(parents=True, exist_ok=True)
# Builds run as root and their work folders hold what a build made (perhaps a setuid
# file, until the capture clears it): nobody else may reach into the cache.
project.cache.chmod(0o700)
# What this process writes (unpacked sources, stage folders, layers, images) gets the
# same modes whatever the caller's umask: a umask of 027 once made every image digest
# differ and left programs a non-root user could not run (docs/reproducibility.md).
os.umask(0o022)


def module_of(stage):
    return importlib.import_module(f"tasks.stages.{stage.module}")


def creators(names=None):
    """Task creators for a dodo namespace, in pipeline order.

    doit sorts creators by the line they are defined on (all of these share one) and
    then, stably, by their name in the namespace (its members come sorted); the task's
    name is the creator's `basename`. So the namespace names only carry the order."""
    out = {}
    for index, stage in enumerate(STAGES):
        if names is not None and stage.name not in names:
            continue
        out[f"stage_{index:02d}_{stage.module}"] = _creator(stage)
    return out


def _creator(stage):
    def create():
        made = module_of(stage).tasks()
        if isinstance(made, dict):          # one task, not a generator of them
            return guarded(stage, made)
        return (guarded(stage, task) for task in made)
    # doit takes a creator's attributes: `create_doit_tasks` marks it, `basename` names it
    holder = type(f"Stage_{stage.module}", (), {})()
    create.__doc__ = stage.doc
    create.basename = stage.name
    holder.create_doit_tasks = create
    return holder


def default_tasks(cfg):
    """A plain `doit`: check-host, then distribution by distribution (those with
    `default: true`) the default stages' tasks, each stage module saying which
    (`defaults(cfg, dist)`)."""
    names = ["check-host"]
    for dist in cfg.distributions.values():
        if not dist.default:
            continue
        for stage in STAGES:
            if stage.default and stage.name != "check-host":
                names += module_of(stage).defaults(cfg, dist)
    return names


def _patient_sqlite():
    """Let several doit runs share cache/doit.sqlite3 (a nightly, a developer's run):
    doit opens it with sqlite's 5 s busy timeout, and a run whose final save meets
    another run's write lock dies with "database is locked". Wait instead."""
    from doit.dependency import SqliteDB
    if getattr(SqliteDB, "_dappdeps_patient", False):
        return
    open_db = SqliteDB._sqlite3

    def patient(self, name):
        conn = open_db(self, name)
        conn.execute("PRAGMA busy_timeout = 600000")
        return conn
    SqliteDB._sqlite3 = patient
    SqliteDB._dappdeps_patient = True


_patient_sqlite()


# ---- every action runs guarded ------------------------------------------------------
# Task name -> thread of the actions running now, and -> True/False for actions that
# ended: after a signal doit stops listening to its worker threads, so the nightly report
# asks these (settle(), finished()) what really happened.
ACTIVE = {}
ENDED = {}
_ACTIVE_LOCK = threading.Lock()


def lock_of(cfg, task_name):
    """The lock two runs take to run one task of a `locked` stage (cache/locks/)."""
    return cfg.cache / "locks" / (task_name.replace("/", "%") + ".lock")


def guarded(stage, task):
    """The task with its actions run by run_guarded(): a stage marked `locked` holds the
    task's lock (a second run waits, then skips what the first made); a full disk gives
    one paragraph; nothing starts once the run is stopping."""
    actions = task.get("actions") or []
    if not actions or not all(isinstance(a, tuple) or callable(a) for a in actions):
        return task
    name = f"{stage.name}:{task['name']}" if task.get("name") else stage.name
    checks = [u for u in task.get("uptodate", []) if callable(u)]
    return dict(task, actions=[(run_guarded, [name, stage.locked, actions, checks])])


def run_guarded(name, locked, actions, checks):
    from doit.exceptions import TaskFailed
    if sandbox.stopping():
        return TaskFailed(f"{name}: not started, the run is stopping")
    with _ACTIVE_LOCK:
        ACTIVE[name] = threading.get_ident()
        ENDED.pop(name, None)
    result = False
    try:
        if locked:
            with files.flocked(lock_of(project, name),
                               on_wait=lambda: say(f"{name}: another run is doing it; waiting")) as waited:
                # the other run may have made it while we waited, or just before we
                # looked (this run's check found it stale: REASONS): check again
                if (waited or name in REASONS) and checks and all(check(None, {}) for check in checks):
                    say(f"{name}: done by the other run")
                    result = True
                else:
                    result = _call(actions)
        else:
            result = _call(actions)
    except OSError as exc:
        if not files.is_disk_full(exc):
            raise
        where = files.existing_parent(os.path.dirname(exc.filename) if exc.filename else project.cache)
        result = TaskFailed(f"{name}: {DiskFull(exc, where).render()}")
    finally:
        with _ACTIVE_LOCK:
            ACTIVE.pop(name, None)
            ENDED[name] = result is True or isinstance(result, dict) or result is None
    return result


def _call(actions):
    from doit.exceptions import BaseFail
    result = True
    for action in actions:
        if callable(action):
            action = (action,)
        fn, args, kwargs = action[0], list(action[1]) if len(action) > 1 else [], \
            dict(action[2]) if len(action) > 2 else {}
        result = fn(*args, **kwargs)
        if result is False or isinstance(result, BaseFail):
            return result
    return result


def settle(timeout):
    """Wait up to `timeout` seconds for the actions still running in worker threads (after
    a signal their sandboxes are killed, so they end at once). Returns those still going."""
    end = time.time() + timeout
    while time.time() < end:
        with _ACTIVE_LOCK:
            if not ACTIVE:
                return []
        time.sleep(0.02)
    with _ACTIVE_LOCK:
        return sorted(ACTIVE)


def finished(name):
    """True when the task's actions ended successfully in this process (even after doit
    stopped listening), False when they failed, None when they never ended."""
    with _ACTIVE_LOCK:
        return ENDED.get(name)


# ---- signals and doit's database ---------------------------------------------------------
SIGNALS = {signal.SIGTERM: "SIGTERM", signal.SIGINT: "SIGINT", signal.SIGHUP: "SIGHUP"}
RECEIVED = []


def install_signal_handlers():
    """SIGTERM (schedulers, `timeout`), SIGINT and SIGHUP stop a plain `doit`: every
    sandbox of every worker thread is killed at once, doit saves its database (it does
    on KeyboardInterrupt), and the process exits 128+N without a traceback."""
    def on_signal(signum, frame):
        first = not RECEIVED
        RECEIVED.append(signum)
        sandbox.stop_all()
        if first:
            raise KeyboardInterrupt
    for sig in SIGNALS:
        signal.signal(sig, on_signal)
    previous = sys.excepthook
    if getattr(previous, "dappdeps", False):
        return

    def hook(kind, value, tb):
        if not issubclass(kind, KeyboardInterrupt):
            return previous(kind, value, tb)
        signum = RECEIVED[0] if RECEIVED else signal.SIGINT
        for sig in SIGNALS:
            signal.signal(sig, signal.SIG_IGN)
        sandbox.stop_all()
        left = settle(5)
        say(f"doit: stopped by {SIGNALS.get(signum, signum)}: every running build was killed"
            + (f"; still running: {', '.join(left)}" if left else "")
            + ". Every task that finished is kept (its stamp is on disk); "
            f"the next run continues from there. Exit {128 + signum}.")
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (OSError, ValueError):
                pass
        os._exit(128 + signum)
    hook.dappdeps = True
    sys.excepthook = hook


DB_FAILURES = []


def _db_failed(name, exc):
    """Say once per run that doit's database could not be written, and why."""
    DB_FAILURES.append(exc)
    if len(DB_FAILURES) > 1:
        return
    import shutil
    folder = files.existing_parent(os.path.dirname(os.path.abspath(name)))
    try:
        free = f" {folder} has {files.human(shutil.disk_usage(folder).free)} free."
    except OSError:
        free = ""
    say(f"doit: could not write its database {name}: {type(exc).__name__}: {exc}.{free} "
        "Tasks that finished are kept anyway (their stamps are on disk), so the next run "
        "redoes none of them; only doit's own record of this run is lost. Exit 2.")


def _reported_db_failures():
    """doit writes its database at the end (and when a task fails): on a full disk sqlite
    raises there and doit would crash before listing the failed tasks. Say what happened
    instead, let doit list the failures, and exit 2."""
    import sqlite3

    from doit.dependency import DatabaseException, Dependency, SqliteDB
    from doit.runner import ERROR, Runner
    if getattr(Dependency, "dappdeps_reported", False):
        return
    close, finish, remove = Dependency.close, Runner.finish, SqliteDB.remove

    def reported_close(self):
        try:
            close(self)
        except (sqlite3.Error, DatabaseException, OSError) as exc:
            self._closed = True
            _db_failed(self.name, exc)

    def reported_remove(self, task_id):
        try:
            remove(self, task_id)
        except sqlite3.Error as exc:
            _db_failed(self.name, exc)

    def reporting_finish(self):
        result = finish(self)
        if DB_FAILURES:
            self.final_result = ERROR
        return result
    Dependency.close, Runner.finish, SqliteDB.remove = reported_close, reporting_finish, reported_remove
    Dependency.dappdeps_reported = True


_reported_db_failures()


DOIT_CONFIG = {
    # The default dbm flavour differs between Python builds and corrupts when two
    # runs overlap; sqlite3 is portable. Completion of expensive tasks does not
    # rely on it anyway (see tasks/model/stamp.py).
    "backend": "sqlite3",
    "dep_file": str(project.cache / "doit.sqlite3"),
    # Builds run in sandboxes (separate processes); threads avoid pickling tasks.
    "par_type": "thread",
    "sort": "definition",
    "verbosity": 1,
}
