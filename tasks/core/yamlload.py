"""The one YAML reader of the data files (config.yaml, config.local.yaml, DAPPDEPS_CONFIG,
recipes): every oddity is a one-paragraph UserError naming the file, never a traceback.

- the file is at most MAX_BYTES (a 5 MB value is a mistake, not a recipe);
- it is UTF-8 text;
- a key given twice in one mapping is an error (naming the key and both lines), not
  "the last one wins";
- nesting deeper than MAX_DEPTH is an error (PyYAML's composer is recursive);
- aliases (`*name`) are refused: the data files never need them, and they are what
  "billion laughs" bombs are made of (a few lines that expand to gigabytes downstream).
"""
from pathlib import Path

import yaml
from yaml.events import AliasEvent

from tasks.core.errors import UserError, cut

MAX_BYTES = 1 << 20
MAX_DEPTH = 32


class _Refused(Exception):
    def __init__(self, message, mark=None):
        super().__init__(message)
        self.message = message
        self.mark = mark


class _Loader(yaml.SafeLoader):
    """SafeLoader + duplicate keys, a depth limit and no aliases."""

    def __init__(self, stream):
        super().__init__(stream)
        self._depth = 0

    def compose_node(self, parent, index):
        if self.check_event(AliasEvent):
            event = self.peek_event()
            raise _Refused(f"uses the alias *{cut(event.anchor, 40)}; aliases and anchors are "
                           "not supported in dappdeps files (write the value out)",
                           event.start_mark)
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                raise _Refused(f"nests deeper than {MAX_DEPTH} levels", self.peek_event().start_mark)
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def construct_mapping(self, node, deep=False):
        seen = {}
        for key_node, _ in node.value:
            if not isinstance(key_node, yaml.ScalarNode):
                raise _Refused("has a key that is a list or a mapping; keys are text",
                               key_node.start_mark)
            key = self.construct_object(key_node, deep=True)
            line = key_node.start_mark.line + 1
            try:
                first = seen.setdefault(key, line)
            except TypeError:
                raise _Refused("has a key that cannot be used as a key", key_node.start_mark) from None
            if first != line:
                raise _Refused(f"key '{cut(str(key), 60)}' is given twice (lines {first} and "
                               f"{line}); remove one (the later value would silently win)")
        return super().construct_mapping(node, deep=deep)


def _where(mark):
    return f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""


def parse_yaml(text, path):
    """Parse YAML text read from path (named in errors)."""
    try:
        loader = _Loader(text)
        try:
            return loader.get_single_data()
        finally:
            loader.dispose()
    except _Refused as exc:
        raise UserError(f"{exc.message}{_where(exc.mark)}.", path) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        problem = getattr(exc, "problem", None) or str(exc)
        raise UserError(f"is not valid YAML{_where(mark)}: {cut(' '.join(problem.split()))}.",
                        path) from None
    except RecursionError:
        raise UserError(f"nests deeper than {MAX_DEPTH} levels.", path) from None


def load_yaml(path):
    """Read and parse one data file; UserError (naming path) for every problem."""
    path = Path(path)
    try:
        with open(path, "rb") as fh:
            raw = fh.read(MAX_BYTES + 1)
    except OSError as exc:
        raise UserError(f"cannot be read: {exc.strerror}.", path) from None
    if len(raw) > MAX_BYTES:
        raise UserError(f"is larger than {MAX_BYTES // 1024} KiB; a dappdeps data file is "
                        "a few kilobytes (is it the right file?).", path)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[:exc.start].count(b"\n") + 1
        raise UserError(f"is not UTF-8 text (byte 0x{raw[exc.start]:02x} on line {line}); "
                        "save it as UTF-8.", path) from None
    return parse_yaml(text, path)
