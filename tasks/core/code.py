"""The digest of the engine's own code: staleness from content, not hand-kept versions.

A stage's key includes the digest of the modules that shape its output (the script
renderer, the sandbox, the capture for a build; the tar writer for an image; ...), so
a change there makes exactly the outputs it shapes stale, and nobody has to remember
to bump a constant. A change anywhere else (messages of a stage module, the report)
changes no key.
"""
import hashlib
import importlib
import inspect
import threading

_CACHE = {}
_LOCK = threading.Lock()


def digest(*module_names):
    """sha256 over the source files of the named modules (e.g. "tasks.build.sandbox")."""
    key = tuple(sorted(set(module_names)))
    with _LOCK:
        if key in _CACHE:
            return _CACHE[key]
    h = hashlib.sha256()
    for name in key:
        path = inspect.getsourcefile(importlib.import_module(name))
        with open(path, "rb") as fh:
            h.update(f"{name}\0{hashlib.sha256(fh.read()).hexdigest()}\n".encode())
    value = h.hexdigest()
    with _LOCK:
        _CACHE[key] = value
    return value
