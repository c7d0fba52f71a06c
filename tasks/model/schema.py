"""A small declarative validator for the YAML data files (config.yaml, recipes).

Each data file is checked against a table of fields so that every mistake is
reported as "<file>: field '<dotted.path>': <what is wrong>. <what is expected>"
before any task runs.
"""
import os
import re

from tasks.core.errors import UserError, cut

SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
# recipe, distribution and image names: they become folders, task names and tags
NAME_RE = re.compile(r"^[a-z0-9][a-z0-9.+_-]{0,63}$")
# OCI distribution spec: repository names, tags, digests
REPOSITORY_RE = re.compile(r"^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*$")
TAG_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")
DIGEST_RE = re.compile(r"^sha256:[0-9a-f]{64}$")
# Everything that becomes a path or a word of the build script is one of these
# (docs/recipes.md "What is checked"): no '/', no shell metacharacters, no spaces.
FILE_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._+~-]{0,199}$")
PATTERN_RE = re.compile(r"^[A-Za-z0-9._+~*?\[\]-]{1,200}$")
VERSION_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9.+~_-]{0,63}$")
DIST_VERSION_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")   # also an image tag
ENV_KEY_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")
DEBIAN_RE = re.compile(r"^[a-z0-9][a-z0-9.+-]{1,99}$")
PREFIX_PART_RE = re.compile(r"^[A-Za-z0-9._+~-]{1,100}$")
# Set by the framework for every build (tasks/model/component.py environment()), or
# changing how bash and the dynamic linker behave: a recipe may not override them.
RESERVED_ENV = frozenset((
    "PREFIX", "SRCDIR", "BUILDDIR", "NAME", "VERSION", "DISTRIBUTION", "JOBS",
    "SOURCE_DATE_EPOCH", "PATH", "HOME", "LC_ALL", "TZ", "SHELL", "TERM",
    "BASH_ENV", "ENV", "IFS", "SHELLOPTS", "BASHOPTS", "PS4", "CDPATH", "GLOBIGNORE",
    "LD_PRELOAD", "LD_AUDIT", "GLIBC_TUNABLES",
    # a foreign platform's build (tasks/model/cross.py)
    "BUILD_TRIPLET", "HOST_TRIPLET", "KERNEL_ARCH", "TARGET_LOADER"))
RESERVED_ENV_PREFIXES = ("PREFIX_", "BASH_FUNC_", "DAPPDEPS_")
# Folders that must never be the cache or the prefix root, and whose subfolders may
# not be either (the host's system). Below /var, /home, /root, /tmp, /srv, /opt, /mnt
# is fine; those folders themselves are not.
SYSTEM_TREES = ("/etc", "/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32",
                "/boot", "/dev", "/proc", "/sys", "/run")
SYSTEM_FOLDERS = frozenset(("/", "/var", "/var/tmp", "/var/lib", "/var/cache", "/var/log",
                            "/home", "/root", "/tmp", "/srv", "/opt", "/mnt", "/media")
                           + SYSTEM_TREES)


class Field:
    """One expected key: its type, whether it is required, its default, a check."""

    def __init__(self, kind, required=False, default=None, check=None, expect=None, item=None,
                 keys=None):
        self.kind = kind          # str, int, float, bool, list, dict, or a Schema
        self.required = required
        self.default = default
        self.check = check        # callable(value) -> error text or None
        self.expect = expect      # human description of the expected value
        self.item = item          # for lists/dicts: the Field or Schema of each item
        self.keys = keys          # for dicts: callable(key) -> error text or None


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
        unknown = sorted((k for k in data if k not in self.fields), key=str)
        if unknown:
            known = ", ".join(sorted(self.fields))
            raise UserError(f"unknown key '{cut(unknown[0])}'.", path, _join(field, unknown[0]),
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
    if spec.kind is dict:
        for key in value:
            problem = ("keys here are text, got " + _kind(key) + ".") if not isinstance(key, str) \
                else spec.keys(key) if spec.keys else None
            if problem:
                raise UserError(problem, path, _join(where, key))
    if spec.kind is dict and spec.item is not None:
        value = {k: validate_value(spec.item, v, path, f"{where}.{k}") for k, v in value.items()}
    if spec.check is not None:
        problem = spec.check(value)
        if problem:
            if isinstance(value, str) and cut(value) != value:
                problem = problem.replace(value, cut(value))
            raise UserError(problem, path, where)
    return value


def sha256_check(value):
    if not SHA256_RE.match(value):
        return (f"'{value}' is not a sha256: expected 64 lowercase hex digits "
                "(sha256sum FILE prints it).")
    return None


def name_check(value):
    if not NAME_RE.match(value):
        return (f"'{cut(value)}' is not a valid name: use lowercase letters, digits and . + _ -, "
                "starting with a letter or digit, at most 64 characters.")
    return None


def version_check(value):
    if not VERSION_RE.match(value):
        return (f"'{cut(value)}' is not a valid version: letters, digits and . + ~ _ -, "
                "starting with a letter or digit, at most 64 characters (it becomes part of "
                "paths and of the build's environment).")
    return None


def dist_version_check(value):
    if not DIST_VERSION_RE.match(value):
        return (f"'{cut(value)}' is not a valid distribution version: letters, digits and "
                ". _ -, starting with a letter or digit, at most 64 characters (it becomes "
                "the prefix folder and the image tag).")
    return None


def file_name_check(value):
    if not FILE_RE.match(value):
        return (f"'{cut(value)}' is not a plain file name: use letters, digits and . _ + ~ -, "
                "starting with a letter, digit or _, at most 200 characters; no '/', spaces "
                "or shell characters (it becomes a path and a word of the build script).")
    return None


def relative_path_check(value, pattern=False, inside="the source tree"):
    """A relative, normalised path inside a folder ('' is the folder itself): parts are
    plain file names (or, with pattern, glob patterns), never '.', '..' or empty."""
    if value == "" and not pattern:
        return None
    parts = value.split("/")
    for part in parts:
        bad = part in ("", ".", "..") or not (PATTERN_RE if pattern else FILE_RE).match(part)
        if bad or len(value) > 400:
            what = "pattern" if pattern else "path"
            return (f"'{cut(value)}' is not a relative {what} inside {inside}: "
                    "parts separated by single '/', no leading '/', no '.' or '..' parts, "
                    "each made of letters, digits and . _ + ~ -"
                    + (" and the patterns * ? [ ]" if pattern else "") + ".")
    return None


def pattern_check(value):
    return relative_path_check(value, pattern=True)


def env_key_check(key):
    if not ENV_KEY_RE.match(key):
        return (f"'{cut(key)}' is not an environment variable name: letters, digits and _, "
                "not starting with a digit.")
    if key in RESERVED_ENV or key.startswith(RESERVED_ENV_PREFIXES):
        return (f"'{key}' is set by dappdeps for every build (or changes how the shell and "
                "the dynamic linker behave), so a recipe may not set it; use another name "
                "(see docs/recipes.md, What a build sees).")
    return None


def debian_check(package):
    if not DEBIAN_RE.match(package):
        return (f"'{cut(package)}' is not a Debian source package name: lowercase letters, "
                "digits and . + -, starting with a letter or digit.")
    return None


def host_folder_problem(folder, what):
    """Why the absolute folder `folder` (after joining and normalising) may not hold
    `what`, or None: a system folder or a folder inside the host's system trees."""
    norm = os.path.normpath(folder)
    if norm in SYSTEM_FOLDERS or any(norm.startswith(t + "/") for t in SYSTEM_TREES):
        return (f"'{cut(norm)}' is a system folder (or inside one) and cannot hold {what}; "
                "use a folder of its own, e.g. /var/cache/dappdeps or one below /work or "
                "the repository.")
    if any(c in norm for c in ":,\\") or not norm.isprintable():
        return (f"'{cut(norm)}' holds ':', ',', '\\' or control characters, which break "
                "mount options and PATH; choose a plainer folder name.")
    return None


def prefix_root_check(value):
    parts = value.split("/")[1:]
    if (not value.startswith("/") or value == "/" or os.path.normpath(value) != value
            or not all(PREFIX_PART_RE.match(p) and p not in (".", "..") for p in parts)):
        return (f"'{cut(value)}' is not an absolute, normalised folder other than /: e.g. "
                "/.dapp/deps (no trailing '/', no '.' or '..' parts, letters, digits and "
                ". _ + ~ - only).")
    return host_folder_problem(value, "the distributions' prefixes")


def optional_name_check(value):
    return name_check(value) if value else None


def env_name_check(value):
    if not ENV_KEY_RE.match(value):
        return f"'{cut(value)}' is not an environment variable name: letters, digits and _."
    return None


def repository_check(value):
    if not REPOSITORY_RE.match(value):
        return (f"'{value}' is not a repository name: lowercase letters, digits, . _ - "
                "and / between parts, e.g. dappdeps/cache.")
    return None


_FLAGS = {"": False, "0": False, "false": False, "no": False, "off": False,
          "1": True, "true": True, "yes": True, "on": True}


def apply_environment(data):
    """DAPPDEPS_OFFLINE, DAPPDEPS_JOBS, DAPPDEPS_BUILDCACHE and DAPPDEPS_CACHE_DIR,
    checked like the file."""
    env = os.environ
    cache_dir = env.get("DAPPDEPS_CACHE_DIR", "")
    if cache_dir:
        if not cache_dir.isprintable() or len(cache_dir) > 1000:
            raise UserError(f"'{cut(cache_dir)}' is not a folder path (control characters or "
                            "too long).", field="DAPPDEPS_CACHE_DIR (environment)")
        data["cache_dir"] = cache_dir   # checked like cache_dir when the folder is resolved
    offline = env.get("DAPPDEPS_OFFLINE", "").strip().lower()
    if offline not in _FLAGS:
        raise UserError(f"'{cut(env['DAPPDEPS_OFFLINE'])}' is not a switch.",
                        field="DAPPDEPS_OFFLINE (environment)", hint="Use 1 (offline) or 0.")
    if _FLAGS[offline]:
        data["download"]["offline"] = True
    jobs = env.get("DAPPDEPS_JOBS", "")
    if jobs:
        if not (jobs.isascii() and jobs.isdigit() and 1 <= int(jobs) <= 4096):
            raise UserError(f"'{cut(jobs)}' is not a whole number from 1 to 4096.",
                            field="DAPPDEPS_JOBS (environment)")
        data["jobs"] = int(jobs)
    mode = env.get("DAPPDEPS_BUILDCACHE", "").strip().lower()
    if mode not in ("", "off", "read-only", "read-write"):
        raise UserError(f"'{cut(env['DAPPDEPS_BUILDCACHE'])}' is not a build cache mode.",
                        field="DAPPDEPS_BUILDCACHE (environment)",
                        hint="Use off, read-only or read-write (or unset it).")


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
        return f"the text {cut(repr(value))}"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    return type(value).__name__
