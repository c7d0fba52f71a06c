"""doit settings shared by dodo.py and the nightly command."""
import signal

from tasks.model.project import project

project.cache.mkdir(parents=True, exist_ok=True)

DOIT_CONFIG = {
    # The default dbm flavour differs between Python builds and corrupts when two
    # runs overlap; sqlite3 is portable. Completion of expensive tasks does not
    # rely on it anyway (see tasks/stamp.py).
    "backend": "sqlite3",
    "dep_file": str(project.cache / "doit.sqlite3"),
    "default_tasks": None,   # set below: the pipeline of the `default: true` distributions
    # Builds run in sandboxes (separate processes); threads avoid pickling tasks.
    "par_type": "thread",
    "sort": "definition",
    "verbosity": 1,
}


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


def default_tasks(cfg):
    """Everything for the distributions that a plain `doit` builds (default: true)."""
    tasks = ["check-host"]
    for dist in cfg.distributions.values():
        if not dist.default:
            continue
        tasks += [f"assemble:{dist.name}", f"check:{dist.name}"]
        for image in dist.images:
            tasks += [f"image:{image}", f"legal:{image}", f"load:{image}"]
            if cfg.data["image_registry"]["default"]:
                tasks.append(f"push:{image}")
        if cfg.data["checks"]["images"]:
            tasks.append(f"check-images:{dist.name}")
    return tasks


DOIT_CONFIG["default_tasks"] = default_tasks(project)
