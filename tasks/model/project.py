"""The loaded project (config.yaml + recipes), shared by all stage modules.

Loading happens once, when dodo.py is imported. A mistake in the user's data
ends the run here with a one-paragraph message and exit status 2: no task runs
and no traceback is shown.
"""
import os
import sys
from pathlib import Path

from tasks.model.config import load_config
from tasks.core.errors import UserError

REPO = Path(__file__).resolve().parents[2]


def load_or_exit(root=None):
    try:
        return load_config(root or os.getcwd())
    except UserError as exc:
        print(exc.render(), file=sys.stderr)
        raise SystemExit(2) from None


class _Lazy:
    """Loads on first attribute access so that importing a stage module is cheap."""

    _cfg = None

    def __getattr__(self, name):
        if _Lazy._cfg is None:
            _Lazy._cfg = load_or_exit()
        return getattr(_Lazy._cfg, name)

    @staticmethod
    def reset(cfg=None):
        _Lazy._cfg = cfg


project = _Lazy()
