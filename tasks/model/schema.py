"""A small declarative validator for the YAML data files (config.yaml, recipes).

Each data file is checked against a table of fields so that every mistake is
reported as "<file>: field '<dotted.path>': <what is wrong>. <what is expected>"
before any task runs.
"""
import re

from tasks.core.errors import UserError

SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
NAME_RE = re.compile(r"^[a-z0-9][a-z0-9.+_-]*$")
# OCI distribution spec: repository names, tags, digests
REPOSITORY_RE = re.compile(r"^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*$")
TAG_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")
DIGEST_RE = re.compile(r"^sha256:[0-9a-f]{64}$")


class Field:
    """One expected key: its type, whether it is required, its default, a check."""

    def __init__(self, kind, required=False, default=None, check=None, expect=None, item=None):
        self.kind = kind          # str, int, float, bool, list, dict, or a Schema
        self.required = required
        self.default = default
        self.check = check        # callable(value) -> error text or None
        self.expect = expect      # human description of the expected value
        self.item = item          # for lists/dicts: the Field or Schema of each item


class Schema:
    """A mapping with known keys; unknown keys are errors (typos must not pass silently)."""

    def __init__(self, fields, name="mapping"):
        self.fields = fields
        self.name = name

    def validate(self, data, path, field=""):
        if data is None:
            data = {}
        if not isinstance(data, dict):
            raise UserError(f"expected a {self.name} (key: value lines), got {_kind(data)}.",
                            path, field or None)
        unknown = sorted(set(data) - set(self.fields))
        if unknown:
            known = ", ".join(sorted(self.fields))
            raise UserError(f"unknown key '{unknown[0]}'.", path, _join(field, unknown[0]),
                            f"Known keys here: {known}.")
        out = {}
        for key, spec in self.fields.items():
            where = _join(field, key)
            if key not in data or data[key] is None:
                if spec.required:
                    raise UserError(f"is missing; expected {_expect(spec)}.", path, where)
                default = spec.default
                default = default() if callable(default) else default
                if isinstance(spec.kind, Schema):
                    # A missing sub-mapping still gets its own defaults.
                    default = spec.kind.validate(default or {}, path, where)
                out[key] = default
                continue
            out[key] = validate_value(spec, data[key], path, where)
        return out


def validate_value(spec, value, path, where):
    if isinstance(spec.kind, Schema):
        return spec.kind.validate(value, path, where)
    if spec.kind is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if spec.kind is str and isinstance(value, (int, float)) and not isinstance(value, bool):
        # YAML reads `version: 2.40` as a float; a version is text, say so.
        raise UserError(f"must be text, got the number {value!r}.", path, where,
                        f"Quote it: \"{value}\".")
    if spec.kind is int and isinstance(value, bool) or not isinstance(value, spec.kind):
        raise UserError(f"expected {_expect(spec)}, got {_kind(value)}.", path, where)
    if spec.kind is list and spec.item is not None:
        value = [validate_value(spec.item, v, path, f"{where}[{i}]") for i, v in enumerate(value)]
    if spec.kind is dict and spec.item is not None:
        value = {k: validate_value(spec.item, v, path, f"{where}.{k}") for k, v in value.items()}
    if spec.check is not None:
        problem = spec.check(value)
        if problem:
            raise UserError(problem, path, where)
    return value


def sha256_check(value):
    if not SHA256_RE.match(value):
        return (f"'{value}' is not a sha256: expected 64 lowercase hex digits "
                "(sha256sum FILE prints it).")
    return None


def name_check(value):
    if not NAME_RE.match(value):
        return (f"'{value}' is not a valid name: use lowercase letters, digits and . + _ -, "
                "starting with a letter or digit.")
    return None


def _join(prefix, key):
    return f"{prefix}.{key}" if prefix else str(key)


def _expect(spec):
    if spec.expect:
        return spec.expect
    if isinstance(spec.kind, Schema):
        return f"a {spec.kind.name}"
    return {str: "text", int: "a whole number", float: "a number", bool: "true or false",
            list: "a list", dict: "a mapping"}[spec.kind]


def _kind(value):
    if value is None:
        return "nothing"
    if isinstance(value, bool):
        return f"the boolean {value}"
    if isinstance(value, (int, float)):
        return f"the number {value}"
    if isinstance(value, str):
        return f"the text {value!r}"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    return type(value).__name__
