"""Helpers for dodo.py, which lists the stages in pipeline order.

doit orders task creators by their line number, which interleaves creators from
different modules; so dodo.py defines one short creator per stage, in order,
and each takes its one-line doc (shown by `doit list`) from the stage module.
"""


def adopt_docs(namespace, *modules):
    for name, creator in list(namespace.items()):
        if not name.startswith("task_") or creator.__doc__:
            continue
        for module in modules:
            original = getattr(module, name, None)
            if original is not None and original is not creator:
                creator.__doc__ = original.__doc__
                break
