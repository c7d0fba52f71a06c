"""The doit-facing stages: one module per stage of tasks.model.pipeline.STAGES.

Each module defines `tasks()` (doit task dicts) and, if the stage is part of a plain
`doit`, `defaults(cfg)` (the names of its default tasks). This package turns the
declared list into doit task creators in pipeline order, and holds doit's settings.
"""
import importlib
import signal

from tasks.model.pipeline import STAGES
from tasks.model.project import project

project.cache.mkdir(parents=True, exist_ok=True)


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
        return module_of(stage).tasks()
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


def install_signal_handlers():
    """SIGTERM (schedulers, `timeout`) acts like Ctrl-C: doit saves what finished."""
    def on_term(signum, frame):
        raise KeyboardInterrupt
    signal.signal(signal.SIGTERM, on_term)


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
