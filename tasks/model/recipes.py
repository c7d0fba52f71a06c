"""Recipes: one small YAML file per component in recipes/ (see docs/recipes.md).

A recipe says what is special about a component (sources, options, smoke tests);
every generic step (download, verify, extract, patch, configure/make/install)
is done once by the framework.
"""
import dataclasses
import re
from dataclasses import dataclass, field
from pathlib import Path

from tasks.core.errors import UserError, cut
from tasks.core.yamlload import load_yaml
from tasks.model import perplatform
from tasks.model.platforms import platform_check
from tasks.model.schema import (FILE_RE, Field, Schema, debian_check, env_key_check,
                                file_name_check, name_check, pattern_check,
                                relative_path_check, sha256_check, version_check)


def location_check(value):
    """A recipe's or a mirror's location: a URL without spaces or control characters,
    or debian:<source-package>."""
    if not value.startswith(("https://", "http://", "file://", "debian:")):
        return (f"'{cut(value)}' is not a location: use an https://, http:// or file:// URL, "
                "or debian:<source-package> for Debian's source archive.")
    if value.startswith("debian:"):
        return debian_check(value[len("debian:"):])
    if not value.isprintable() or any(c.isspace() for c in value) or len(value) > 2000:
        return f"'{cut(value)}' is not a URL: no spaces or control characters (encode them as %20 ...)."
    return None



def mirror_check(value):
    """config.yaml `mirrors`: URL prefixes only."""
    if value.startswith("debian:"):
        return f"'{cut(value)}' is not a mirror: use an https://, http:// or file:// URL prefix."
    return location_check(value)


LOCATION = Field(str, check=location_check)

ALTERNATIVE = Schema({
    "file": Field(str, required=True, check=file_name_check,
                  expect="the file name, e.g. sed-4.9.tar.xz"),
    "sha256": Field(str, required=True, check=sha256_check, expect="64 hex digits"),
    "urls": Field(list, default=list, item=LOCATION),
    "inner": Field(str, check=pattern_check,
                   expect="the name of a tarball inside this one to unpack instead"),
    "fixup": Field(str, default="", expect="shell run in the unpacked tree"),
}, "source file")

SOURCE = Schema(dict(ALTERNATIVE.fields, **{
    "dest": Field(str, default="", check=relative_path_check,
                  expect="a folder inside the source tree, e.g. gmp"),
    "extract": Field(bool, default=True),
    "alternatives": Field(list, default=list, item=Field(ALTERNATIVE)),
}), "source")

BUILD_SYSTEMS = ("autotools", "make", "script")

CVE_RE = re.compile(r"^CVE-\d{4}-\d{4,}$")
DEBIAN_PATCHES_DIR = "debian/patches/"


def cve_check(value):
    if not CVE_RE.match(value):
        return f"'{cut(value)}' is not a CVE ID: expected CVE-<year>-<number>, e.g. CVE-2023-4911."
    return None


def debian_patch_check(value):
    """A patch's path inside a Debian tarball: a plain relative path under debian/patches/."""
    problem = relative_path_check(value, inside="the Debian tarball")
    if problem is None and not value.startswith(DEBIAN_PATCHES_DIR):
        problem = (f"'{cut(value)}' is not under {DEBIAN_PATCHES_DIR}: name the patch by its "
                   f"path in the tarball, e.g. {DEBIAN_PATCHES_DIR}git-updates.diff.")
    return problem


# Patches taken out of Debian's debian.tar.xz (a source of the recipe), applied in order
# before the recipe's own patches; each records the CVEs it fixes (SBOM vulnerabilities).
DEBIAN_PATCHES = Schema({
    "source": Field(str, default="", check=lambda v: file_name_check(v) if v else None,
                    expect="the file of one of the recipe's sources, e.g. "
                           "glibc_2.36-9+deb12u10.debian.tar.xz"),
    "patches": Field(list, default=list, item=Field(Schema({
        "name": Field(str, required=True, check=debian_patch_check,
                      expect="the patch's path in the tarball, e.g. "
                             "debian/patches/git-updates.diff"),
        "cves": Field(list, default=list, item=Field(str, check=cve_check)),
    }, "Debian patch"))),
}, "Debian patches mapping (source, patches)")

# A package URL (purl) naming the component in its ecosystem, for the SBOM: type, an
# optional namespace, name and the recipe's version; no qualifiers or subpath (the SBOM
# adds download_url and checksum). pypi names are normalised: lowercase, `-` for `_`.
PURL_RE = re.compile(r"^pkg:(?P<type>[a-z][a-z0-9.+-]{0,31})/(?P<path>(?:[A-Za-z0-9._~%+-]+/)*"
                     r"(?P<name>[A-Za-z0-9._~%+-]{1,128}))@(?P<version>[A-Za-z0-9.+~_!-]{1,64})$")
PYPI_NAME_RE = re.compile(r"^[a-z0-9](?:[a-z0-9.-]*[a-z0-9])?$")


def purl_check(value):
    """A recipe's purl: pkg:<type>/[<namespace>/]<name>@<version>, e.g. pkg:pypi/jinja2@3.1.6."""
    match = PURL_RE.match(value)
    if not match:
        return (f"'{cut(value)}' is not a package URL: expected pkg:<type>/<name>@<version> "
                "without qualifiers, e.g. pkg:pypi/jinja2@3.1.6.")
    if match["type"] == "pypi" and (match["path"] != match["name"] or
                                    not PYPI_NAME_RE.match(match["name"])):
        return (f"'{cut(value)}': a pypi purl names the package without a namespace, "
                "lowercase, with - for _ (e.g. pkg:pypi/flit-core@3.12.0).")
    return None


RECIPE = Schema({
    "name": Field(str, required=True, check=name_check),
    "inherit": Field(str, check=name_check, expect="the name of a recipe to start from"),
    "version": Field(str, required=True, check=version_check,
                     expect="the upstream version as text, e.g. \"4.9\""),
    "description": Field(str, required=True, expect="one line saying what the component is"),
    "homepage": Field(str, default=""),
    "license": Field(str, required=True, expect="an SPDX expression, e.g. GPL-3.0-or-later"),
    "license_files": Field(list, default=list, item=Field(str, check=pattern_check)),
    "purl": Field(str, default="", check=lambda v: purl_check(v) if v else None,
                  expect="a package URL with the recipe's version, e.g. pkg:pypi/jinja2@3.1.6"),
    "sources": Field(list, required=True, item=Field(SOURCE), expect="a list of sources"),
    "patches": Field(list, default=list, item=Field(str, check=lambda v: relative_path_check(v, inside="recipes/")
                                                    if v else "is empty; expected a patch file.")),
    "debian_patches": Field(DEBIAN_PATCHES),
    "depends": Field(list, default=list, item=Field(str, check=name_check)),
    "replaces": Field(list, default=list, item=Field(str, check=name_check)),
    "environment": Field(dict, default=dict, item=Field(str), keys=env_key_check),
    "network": Field(bool, default=False),
    # a build for another platform runs that platform's programs (its own python3) under
    # qemu-user through binfmt_misc: checked before it starts, the emulator in its key
    "emulated": Field(bool, default=False),
    # wall-clock limits in seconds: a hung configure or test suite must not block a nightly
    "timeout": Field(int, default=4 * 3600, check=lambda v: None if 1 <= v <= 48 * 3600 else
                     "must be between 1 and 172800 seconds.",
                     expect="the build's time limit in seconds (default 14400)"),
    "smoke_timeout": Field(int, default=300, check=lambda v: None if 1 <= v <= 48 * 3600
                           else "must be between 1 and 172800 seconds.",
                           expect="each smoke command's time limit in seconds (default 300)"),
    "test_timeout": Field(int, default=2 * 3600, check=lambda v: None if 1 <= v <= 48 * 3600
                          else "must be between 1 and 172800 seconds.",
                          expect="the upstream test suite's time limit in seconds (default 7200)"),
    "build": Field(str, default="autotools",
                   check=lambda v: None if v in BUILD_SYSTEMS else
                   f"'{v}' is not a build system: use one of {', '.join(BUILD_SYSTEMS)}."),
    "out_of_tree": Field(bool, default=True),
    # autotools: configure is autoconf's, so a cross build passes it --build/--host
    # (tasks/model/cross.py); false for a configure of its own (zlib's rejects them)
    "autoconf": Field(bool, default=True),
    "configure": Field(list, default=list, item=Field(str)),
    "make": Field(list, default=list, item=Field(str)),
    "install": Field(list, default=list, item=Field(str)),
    "pre_configure": Field(str, default=""),
    "post_install": Field(str, default=""),
    "script": Field(str, default=""),
    "test": Field(str, default="", expect="shell that runs the upstream test suite"),
    "smoke": Field(list, default=list, item=Field(str)),
    # platform -> build fields that replace (or `append` to) the recipe's own when
    # building for it (e.g. the toolchain's, which name the amd64 loader): perplatform.py
    "per_platform": Field(dict, default=dict, keys=platform_check, item=Field(dict)),
}, "recipe")

@dataclass(frozen=True)
class Alternative:
    file: str
    sha256: str
    urls: tuple
    inner: str = None
    fixup: str = ""


@dataclass(frozen=True)
class Source:
    """One upstream file, possibly available as several pinned alternatives."""
    alternatives: tuple          # of Alternative, in the order they are tried
    dest: str = ""
    extract: bool = True

    @property
    def primary(self):
        return self.alternatives[0]

    @property
    def id(self):
        return self.primary.file


@dataclass(frozen=True)
class DebianPatch:
    """A patch of Debian's tarball: its path there and the CVE IDs it fixes."""
    name: str
    cves: tuple = ()


@dataclass
class Recipe:
    name: str
    version: str
    description: str
    license: str
    path: Path
    data: dict                    # the validated fields, inheritance applied
    sources: tuple = ()
    patches: tuple = ()           # absolute paths
    debian_source: str = ""       # the id of the source holding the Debian patches
    debian_patches: tuple = ()    # of DebianPatch, in the order they are applied
    depends: tuple = ()
    replaces: tuple = ()
    license_files: tuple = ()
    smoke: tuple = ()
    extra: dict = field(default_factory=dict)
    plain: dict = None            # the fields before for_platform applied per_platform

    def __getitem__(self, key):
        return self.data[key]

    def for_platform(self, platform):
        """The recipe as a build for `platform` (e.g. linux/arm64) sees it, its
        `per_platform` fields applied (tasks/model/perplatform.py). Itself when it has
        none, so a platform without them renders byte-identical scripts (the same keys)."""
        plain = self.plain if self.plain is not None else self.data
        data = perplatform.apply(plain, platform)
        if data is None:
            if self.plain is None:
                return self
            data = plain        # resolved for another platform before: back to its own
        return dataclasses.replace(self, data=data, plain=plain, smoke=tuple(data["smoke"]),
                                   sources=source_objects(data["sources"], self.path),
                                   license_files=tuple(data["license_files"]))


def read_yaml(path):
    """Every data file goes through tasks/core/yamlload.py (duplicate keys, size, ...)."""
    return load_yaml(path)



def load_recipes(recipes_dir):
    """Load and validate every recipes/<name>.yaml; returns {name: Recipe}."""
    recipes_dir = Path(recipes_dir)
    if not recipes_dir.is_dir():
        raise UserError("the recipes folder does not exist.", recipes_dir,
                        hint="Set 'recipes_dir' in config.yaml to the folder holding <name>.yaml files.")
    raw = {}
    for path in sorted(recipes_dir.glob("*.yaml")):
        data = read_yaml(path)
        if not isinstance(data, dict):
            raise UserError("expected a recipe (key: value lines) but the file is empty or a list.", path)
        name = data.get("name")
        if name is not None and name != path.stem:
            raise UserError(f"'{cut(name)}' does not match the file name; a recipe's name is its "
                            f"file's name.", path, "name", f"Rename the file to {name}.yaml or "
                            f"set name: {path.stem}.")
        if path.stem in raw:
            raise UserError(f"duplicate recipe name '{path.stem}'.", path, "name")
        raw[path.stem] = (path, data)
    recipes = {}
    for name in raw:
        recipes[name] = _build_recipe(name, raw, recipes_dir, stack=())
    return recipes


def _merged(name, raw, stack):
    path, data = raw[name]
    parent = data.get("inherit")
    if parent is None:
        return dict(data)
    if not isinstance(parent, str) or name_check(parent):
        raise UserError(name_check(parent) if isinstance(parent, str) else
                        "expected the name of a recipe to start from.", path, "inherit")
    if parent not in raw:
        raise UserError(f"inherits from '{parent}', which is not a recipe in {path.parent}.",
                        path, "inherit")
    if parent in stack + (name,):
        cycle = " -> ".join(stack + (name, parent))
        raise UserError(f"inheritance cycle: {cycle}.", path, "inherit")
    base = _merged(parent, raw, stack + (name,))
    # per_platform is not inherited: a recipe built from another (cross-glibc from
    # glibc) builds something else, and says itself what differs per platform
    for key in ("name", "inherit", "per_platform"):
        base.pop(key, None)
    base.update(data)
    return base


def _build_recipe(name, raw, recipes_dir, stack):
    path, _ = raw[name]
    merged = _merged(name, raw, stack)
    merged.setdefault("name", name)
    data = RECIPE.validate(merged, path)
    sources = source_objects(data["sources"], path)
    patches = []
    inside = recipes_dir.resolve()
    for i, rel in enumerate(data["patches"]):
        patch = (recipes_dir / rel).resolve()
        if not patch.is_relative_to(inside) or not FILE_RE.match(patch.name):
            raise UserError(f"patch '{rel}' leads to {cut(patch, 200)}, outside {inside} (a "
                            "symbolic link?); patches are files inside the recipes folder.",
                            path, f"patches[{i}]")
        if not patch.is_file():
            raise UserError(f"patch '{rel}' does not exist (looked at {patch}).", path, f"patches[{i}]")
        patches.append(patch)
    debian_patches = _debian_patches(data["debian_patches"], sources, path)
    data["per_platform"] = perplatform.validate(data, path, RECIPE.fields, source_objects)
    if data["build"] == "script" and not data["script"].strip():
        raise UserError("is empty but build is 'script'.", path, "script",
                        "Write the build commands there, or use build: autotools.")
    if data["purl"] and PURL_RE.match(data["purl"])["version"] != data["version"]:
        raise UserError(f"'{cut(data['purl'])}' names another version than the recipe's "
                        f"({data['version']}).", path, "purl",
                        f"Write the purl with @{data['version']}.")
    if name in data["depends"]:
        raise UserError("a recipe cannot depend on itself.", path, "depends")
    for i, rep in enumerate(data["replaces"]):
        if rep not in data["depends"]:
            raise UserError(f"'{rep}' is not in depends; a component may only replace files of "
                            f"a component it depends on.", path, f"replaces[{i}]")
    return Recipe(
        name=name, version=data["version"], description=data["description"],
        license=data["license"], path=path, data=data, sources=sources,
        patches=tuple(patches), debian_source=data["debian_patches"]["source"],
        debian_patches=debian_patches, depends=tuple(data["depends"]),
        replaces=tuple(data["replaces"]), license_files=tuple(data["license_files"]), smoke=tuple(data["smoke"]))


def source_objects(specs, path, field="sources"):
    """The validated `sources` field as Source tuples; each alternative needs a location."""
    sources = []
    for i, src in enumerate(specs):
        alts = [Alternative(a["file"], a["sha256"], tuple(a["urls"]), a["inner"], a["fixup"])
                for a in [src] + src["alternatives"]]
        for j, alt in enumerate(alts):
            if not alt.urls:
                where = f"{field}[{i}]" + (f".alternatives[{j - 1}]" if j else "")
                raise UserError("has no locations.", path, f"{where}.urls",
                                "List at least one URL or debian:<package> location.")
        sources.append(Source(tuple(alts), src["dest"], src["extract"]))
    if not sources:
        raise UserError("is empty; a recipe needs at least one source.", path, field)
    return tuple(sources)


def _debian_patches(spec, sources, path):
    """The validated debian_patches field as DebianPatch tuples: the source must be one of
    the recipe's, not its tree, and not unpacked over it; names and CVEs not repeated."""
    field = "debian_patches"
    if not spec["patches"] and not spec["source"]:
        return ()
    if not spec["patches"]:
        raise UserError("lists no patches.", path, f"{field}.patches",
                        "Name the patches to apply, or drop debian_patches.")
    ids = [src.id for src in sources]
    if not spec["source"]:
        raise UserError("is missing; expected the file of the source holding the patches.",
                        path, f"{field}.source", f"The recipe's sources: {', '.join(ids)}.")
    if spec["source"] not in ids:
        raise UserError(f"'{spec['source']}' is not one of the recipe's sources.", path,
                        f"{field}.source", f"Its sources: {', '.join(ids)}.")
    src = sources[ids.index(spec["source"])]
    if src is sources[0] or (src.extract and not src.dest) or any(a.inner for a in src.alternatives):
        raise UserError(f"'{spec['source']}' must be a source of its own: not the first "
                        "source (the tree), with extract: false or its own dest, and no inner.",
                        path, f"{field}.source")
    seen = set()
    out = []
    for i, patch in enumerate(spec["patches"]):
        if patch["name"] in seen:
            raise UserError(f"'{patch['name']}' is listed twice.", path,
                            f"{field}.patches[{i}].name")
        seen.add(patch["name"])
        twice = sorted({c for c in patch["cves"] if patch["cves"].count(c) > 1})
        if twice:
            raise UserError(f"'{twice[0]}' is listed twice.", path, f"{field}.patches[{i}].cves")
        out.append(DebianPatch(patch["name"], tuple(patch["cves"])))
    return tuple(out)
