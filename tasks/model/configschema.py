"""The shape of config.yaml: every field, its type, default and check (docs/config.md).
Loading and the distribution graph are tasks/model/config.py."""
import os
import re

from tasks.core.errors import cut
from tasks.model.platforms import native, platform_check, platforms_check
from tasks.model.recipes import mirror_check
from tasks.model.schema import (Field, Schema, dist_version_check, env_name_check,
                                name_check, optional_name_check, prefix_root_check,
                                repository_check)


def setuid_path_check(value):
    parts = value.split("/")
    if value.startswith("/") or any(p in ("", ".", "..") for p in parts) or len(value) > 200:
        return (f"'{cut(value)}' is not a prefix-relative path: write e.g. bin/sudo "
                "(no leading /, no . or .. parts).")
    return None


IMAGE = Schema({
    "name": Field(str, check=lambda v: repository_check(v) if v else None,
                  expect="the repository to tag, e.g. dappdeps/base"),
    "include": Field(list, default=lambda: ["**"], item=Field(str)),
    "exclude": Field(list, default=list, item=Field(str)),
    # what ships is stripped; cache/stage keeps the debug info (docs/images.md)
    "strip": Field(bool, default=True, expect="true (ship stripped ELF executables and "
                   "shared libraries) or false (ship them as built)"),
}, "image")

DISTRIBUTION = Schema({
    "version": Field(str, required=True, check=dist_version_check,
                     expect="the distribution's version as text, e.g. \"0.1.0\""),
    "description": Field(str, default=""),
    "components": Field(list, required=True, item=Field(str, check=name_check),
                        expect="a list of recipe names"),
    # files that may keep a setuid/setgid bit (prefix-relative paths); every other one
    # loses it when captured, and an image or a pulled output holding one is refused
    "setuid": Field(list, default=list, item=Field(str, check=lambda v: setuid_path_check(v)),
                    expect="a list of prefix-relative paths, e.g. [bin/sudo]"),
    "uses": Field(list, default=list, item=Field(str, check=name_check),
                  expect="a list of other distributions needed at build and run time"),
    "toolchain": Field(str, default="", check=optional_name_check,
                       expect="the distribution whose compiler builds this one"),
    "default": Field(bool, default=True),
    "image": Field(IMAGE, default=dict),
    "images": Field(dict, default=dict, item=Field(IMAGE), keys=name_check,
                    expect="extra images of this distribution: name: {include, exclude}"),
    "runtime_image": Field(str, default="", check=optional_name_check, expect="the image (of this distribution's images) "
                           "that users of the distributions using this one mount at run time"),
    # empty: the top-level `platforms` (tasks/model/platforms.py)
    "platforms": Field(list, default=list, item=Field(str, check=platform_check),
                       check=lambda v: platforms_check(v) if v else None,
                       expect="a list of platforms, e.g. [linux/amd64, linux/arm64]"),
}, "distribution")

CHECKS = Schema({
    "images": Field(list, default=list, item=Field(str),
                    expect="base images (references in the engine) to run the smoke tests in"),
    # another platform's base images (check-images:<dist>@arm64); the build machine's are
    # `images` (config.py checks the keys against the distributions' platforms)
    "platform_images": Field(dict, default=dict, keys=platform_check,
                             item=Field(list, item=Field(str), expect="a list of base images "
                                        "of that platform, e.g. [busybox:latest-arm64]"),
                             expect="a mapping of platform to its base images, e.g. "
                                    "{linux/arm64: [busybox:latest-arm64]}"),
}, "check settings")

DOWNLOAD = Schema({
    "connect_timeout": Field(float, default=10.0),
    "read_timeout": Field(float, default=60.0),
    "retries": Field(int, default=3, check=lambda v: None if v >= 0 else "must be 0 or more."),
    "backoff": Field(float, default=1.0, expect="seconds before the first retry; doubles each time"),
    "offline": Field(bool, default=False),
    "apt_refresh_hours": Field(float, default=24.0),
}, "download settings")


def _url_check(value):
    if value and not value.startswith(("http://", "https://")):
        return (f"'{cut(value)}' is not a registry URL: expected http://HOST[:PORT] or "
                "https://HOST[:PORT] (http only for a registry on this machine).")
    if "@" in value.split("://", 1)[-1].split("/", 1)[0]:
        return ("holds credentials (user:password@); they would end up in logs. Put them in "
                "the variables named by username_env/password_env, or use `docker login`.")
    return None


def _registry_fields(repository, url_expect):
    """Where a registry is and how to log in (buildcache and image_registry)."""
    return {
        "url": Field(str, default="", check=_url_check, expect=url_expect),
        "repository": Field(str, default=repository, check=repository_check),
        "username_env": Field(str, default="DAPPDEPS_REGISTRY_USERNAME", check=env_name_check,
                              expect="the name of the environment variable holding the user"),
        "password_env": Field(str, default="DAPPDEPS_REGISTRY_PASSWORD", check=env_name_check,
                              expect="the name of the environment variable holding the "
                                     "password or token"),
        "docker_config": Field(bool, default=True, expect="true (also read credentials from "
                               "$DOCKER_CONFIG/config.json or ~/.docker/config.json) or false"),
        "connect_timeout": Field(float, default=3.0, check=_positive),
        "read_timeout": Field(float, default=30.0, check=_positive),
    }


def _positive(value):
    return None if value > 0 else "must be more than 0 seconds."


BUILDCACHE = Schema({
    **_registry_fields("dappdeps/cache", "the registry's URL, e.g. http://127.0.0.1:5000; "
                       "empty: no build cache"),
    "mode": Field(str, default="read-write",
                  check=lambda v: None if v in ("read-write", "read-only", "off") else
                  f"'{v}' is not a mode: use read-write, read-only or off."),
    "gzip_level": Field(int, default=6, check=lambda v: None if 1 <= v <= 9 else
                        "must be 1 (fastest) to 9 (smallest)."),
}, "build cache settings")

IMAGE_REGISTRY = Schema({
    **_registry_fields("dappdeps", "the registry's URL; empty: buildcache.url"),
    "default": Field(bool, default=False, expect="true (a plain doit pushes the default "
                     "distributions' images) or false (only `doit push:<image>`)"),
}, "image registry settings")

DEBIAN_PACKAGE = r"^[a-z0-9][a-z0-9.+-]{0,99}$"


def _matches(pattern, what):
    import re
    return lambda v: None if re.match(pattern, v) else f"'{cut(v)}' is not {what}."


BUILDROOT = Schema({
    # the Debian release of the tree every build runs in (tasks/build/buildroot.py)
    "suite": Field(str, default="bookworm", check=_matches(r"^[a-z][a-z0-9-]{1,30}$",
                   "a Debian suite name such as bookworm or trixie")),
    "packages": Field(list, default=list, item=Field(str, check=_matches(
        DEBIAN_PACKAGE, "a Debian package name")), expect="a list of Debian package names"),
    # empty: the Debian mirror of the host's own apt sources
    "mirror": Field(str, default="", check=lambda v: None if not v or
                    v.startswith(("http://", "https://", "file:///")) else
                    f"'{cut(v)}' is not a mirror URL (http://, https:// or file:///)."),
    # empty: <cache_dir>/buildroot; another folder lets several caches share one root
    "dir": Field(str, default=""),
}, "build root settings")

SUITE = r"^[a-z][a-z0-9-]{1,30}$"


def _suites_check(value):
    if not value:
        return "is empty: name at least one Debian suite, e.g. [bookworm, bookworm-security]."
    twice = sorted({v for v in value if value.count(v) > 1})
    return f"names {', '.join(twice)} twice." if twice else None


DEBIAN = Schema({
    # the suites `debian:` locations and `doit outdated` read, at the host's mirror URIs
    # (tasks/sources/debian.py): *-security from its /debian-security, the others /debian
    "suites": Field(list, default=lambda: ["bookworm", "bookworm-updates", "bookworm-security"],
                    item=Field(str, check=_matches(SUITE, "a Debian suite name such as bookworm, "
                                                   "bookworm-updates or trixie-security")),
                    check=_suites_check, expect="a list of Debian suite names"),
}, "Debian archive settings")

UPDATE_POLICIES = ("security", "patch", "minor")


def _branch_check(value):
    """update.branch: a git branch name once {date} is filled in (git check-ref-format)."""
    name = value.replace("{date}", "2000-01-01")
    bad = (not re.match(r"^[A-Za-z0-9][A-Za-z0-9._/-]{0,199}$", name) or ".." in name
           or "//" in name or name.endswith(("/", ".", ".lock")) or "/." in name)
    if bad or "{" in name or "}" in name:
        return (f"'{cut(value)}' is not a branch name: letters, digits and . _ / -, "
                "optionally {date}, e.g. dappdeps/updates-{date}.")
    return None


UPDATE = Schema({
    # bin/nightly --update (docs/nightly.md "Updates"): which bumps are tried (never a
    # major release), and the branch the kept ones are committed on
    "policy": Field(str, default="patch", check=lambda v: None if v in UPDATE_POLICIES else
                    f"'{cut(v)}' is not a policy: use security, patch or minor."),
    "branch": Field(str, default="dappdeps/updates-{date}", check=_branch_check,
                    expect="a branch name, {date} is the day of the run"),
}, "update settings")

CONFIG = Schema({
    "prefix_root": Field(str, default="/.dapp/deps", check=prefix_root_check),
    "cache_dir": Field(str, default="cache"),
    "recipes_dir": Field(str, default="recipes"),
    "jobs": Field(int, default=lambda: os.cpu_count() or 1,
                  check=lambda v: None if v >= 1 else "must be 1 or more."),
    "source_date_epoch": Field(int, default=1700000000),
    "mirrors": Field(list, default=list, item=Field(str, check=mirror_check)),
    "download": Field(DOWNLOAD, default=dict),
    # the platforms every distribution is built for, unless it lists its own; the build
    # machine's own platform keeps the names and keys it had before platforms existed
    "platforms": Field(list, default=lambda: [native() or "linux/amd64"],
                       item=Field(str, check=platform_check), check=platforms_check,
                       expect="a list of platforms, e.g. [linux/amd64, linux/arm64]"),
    # target platform -> the distribution (built for the build machine) whose
    # bin/<triplet>-gcc, -ld, ... cross-compile for it (docs/toolchain.md, Plan: arm64)
    "cross": Field(dict, default=dict, item=Field(str, check=name_check), keys=platform_check,
                   expect="a mapping of target platform to the cross toolchain distribution, "
                          "e.g. {linux/arm64: cross-aarch64}"),
    "distributions": Field(dict, required=True, item=Field(DISTRIBUTION), keys=name_check,
                           expect="a mapping of distribution name to its settings"),
    "engine": Field(dict, default=dict, item=Field(str)),
    "engines": Field(list, default=list, expect="a list of {name, host} (docs/images.md)", item=Field(Schema({
        "name": Field(str, required=True, check=name_check), "host": Field(str, required=True)}, "engine"))),
    "reports": Field(dict, default=dict),
    "checks": Field(CHECKS, default=dict),
    "buildcache": Field(BUILDCACHE, default=dict),
    "image_registry": Field(IMAGE_REGISTRY, default=dict),
    "buildroot": Field(BUILDROOT, default=dict),
    "debian": Field(DEBIAN, default=dict),
    "update": Field(UPDATE, default=dict),
}, "configuration")
