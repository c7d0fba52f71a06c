"""Completion records that survive SIGKILL.

doit saves its own database only when it exits cleanly, so a killed hour-long
run would forget everything. Every expensive task therefore keeps its own
stamp: a small JSON file holding the task's inputs and their digest (the key),
written atomically as the task's LAST step. A task is up to date when its
stamp exists and its key equals the key of the current inputs; when not, the
stored inputs tell which input changed ("why it runs").
"""
import json
from pathlib import Path

from tasks.core.canonical import digest_of, dumps
from tasks.core.files import write_atomic

# Reasons computed by up-to-date checks, read by the actions and the reporter.
REASONS = {}


class Stamp:
    def __init__(self, path, inputs):
        self.path = Path(path)
        self.inputs = dict(inputs)
        self.key = digest_of(dumps(self.inputs))

    def stored(self):
        try:
            return json.loads(self.path.read_text())
        except (OSError, ValueError):
            return None

    def is_current(self):
        stored = self.stored()
        return bool(stored) and stored.get("key") == self.key

    def why(self):
        """One line saying which inputs changed since the stamp was written."""
        stored = self.stored()
        if not stored:
            return "never built (or the last build did not finish)"
        old = stored.get("inputs", {})
        changed = []
        for name in sorted(set(old) | set(self.inputs)):
            if old.get(name) != self.inputs.get(name):
                changed.append(_describe(name, old.get(name), self.inputs.get(name)))
        return "; ".join(changed) if changed else "stamp key differs"

    def write(self, **extra):
        write_atomic(self.path, dumps({"key": self.key, "inputs": self.inputs, **extra}))

    def remove(self):
        self.path.unlink(missing_ok=True)


def _describe(name, old, new):
    if old is None:
        return f"{name} is new"
    if new is None:
        return f"{name} was removed"
    if isinstance(old, dict) and isinstance(new, dict):
        keys = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
        return f"{name} changed ({', '.join(keys[:5])}{'...' if len(keys) > 5 else ''})"
    return f"{name} changed"


def uptodate_check(task_name, stamp_factory):
    """A doit `uptodate` callable: builds the stamp lazily (after dependencies ran)."""
    def check(task, values):
        stamp = stamp_factory()
        if stamp.is_current():
            return True
        REASONS[task_name] = stamp.why()
        return False
    check.__name__ = f"stamp_of_{task_name}"
    return check
