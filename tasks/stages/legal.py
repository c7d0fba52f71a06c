"""Stage: legal. For every image, next to its tarball (Buildroot's `make legal-info` is the model):

  cache/images/<image>-<version>.cdx.json   CycloneDX 1.6 SBOM: the image (name, version,
                                            digest) and each component it holds, with its
                                            version, license, source files' URLs and sha256s
  cache/images/<image>-<version>.legal/     README, manifest.csv (one line per component),
                                            licenses/<component>-<version>/<file> (the texts
                                            named by the recipes' license_files, taken from
                                            the source archives), legal-info.sha256

One task per image (legal:<image>), after image:<image>: an image of a distribution may hold
only some of its components (a run-time cut of the toolchain), and the SBOM names exactly the
components that provide a file of the image, like the image's labels do.

Texts come from the verified archives in the download cache; only the listed members are
read (tarfile, one streaming pass per archive), never the whole tree. license_files paths
are relative to the unpacked source tree, the way the build sees it ($SRCDIR): the archive's
single top-level folder is dropped, a source with `dest: gmp` answers for `gmp/...` paths, and
an `inner` tarball is opened inside its outer one. A listed file that the archive does not
hold fails the task (the recipe is wrong); a component without license_files is listed in
the README as such.
"""
import csv
import hashlib
import io
import json
import os
import posixpath
import shutil
import tarfile
import uuid
from pathlib import Path

from tasks.ship.image import image_paths, read_result, select
from tasks.core.canonical import digest_of
from tasks.core.files import write_atomic
from tasks.model.project import project
from tasks.model.stamp import REASONS, Stamp

# Bump when the files written here change for the same inputs.
LEGAL_VERSION = "1"

SBOM_SPEC = "1.6"


def legal_paths(cache, name, version):
    """Where legal:<name> writes: the SBOM, the license folder and the task's stamp."""
    base = Path(cache) / "images" / f"{name}-{version}"
    return {"sbom": base.with_name(base.name + ".cdx.json"),
            "folder": base.with_name(base.name + ".legal"),
            "stamp": base.with_name(base.name + ".legal.stamp")}


def _images(cfg):
    for dist in cfg.distributions.values():
        for name, spec in dist.images.items():
            yield dist, name, spec


def _manifest_path(cfg, dist):
    return cfg.cache / "stage" / f"{dist.name}.manifest.json"


# ---- which components an image holds ------------------------------------------------
def image_components(doc, spec):
    """The distribution manifest's components that provide a file of this image, each with
    the bytes and files it contributes: [{name, version, license, description, sources,
    size, files}] in the manifest's (build) order."""
    entries = select(doc.get("entries", []), spec.get("include") or ["**"], spec.get("exclude") or [])
    size, files = {}, {}
    for e in entries:
        comp = e.get("component")
        if e["type"] == "dir" or not comp:
            continue
        size[comp] = size.get(comp, 0) + e.get("size", 0)
        files[comp] = files.get(comp, 0) + 1
    out = []
    for comp in doc.get("components", []):
        if comp["name"] in files:
            out.append(dict(comp, size=size[comp["name"]], files=files[comp["name"]]))
    return out


# ---- license texts --------------------------------------------------------------------
def _norm(name):
    name = name.replace("\\", "/")
    while name.startswith("./"):
        name = name[2:]
    return name.strip("/")


def _safe_rel(path):
    """A recipe's license file path as a safe relative path (no .., not absolute)."""
    norm = posixpath.normpath(_norm(path))
    if norm in ("", ".") or norm.startswith("../") or norm == "..":
        return None
    return norm


class _Wanted:
    """Members wanted from one archive, matched with or without its top-level folder."""

    def __init__(self, paths):
        self.paths = set(paths)
        self.tops = set()          # first path components of every member
        self.found = {}            # (top or "", path) -> bytes | ("link", target)

    def offer(self, tar, member):
        name = _norm(member.name)
        if not name:
            return
        first, _, rest = name.partition("/")
        self.tops.add(first)
        for key, path in (("", name), (first, rest)):
            if path in self.paths and (member.isfile() or member.issym() or member.islnk()):
                if member.isfile():
                    self.found[(key, path)] = tar.extractfile(member).read()
                else:
                    target = member.linkname
                    if member.issym():
                        target = posixpath.normpath(posixpath.join(posixpath.dirname(name), target))
                    self.found[(key, path)] = ("link", _norm(target))

    def result(self):
        """{path: bytes or ('link', archive path)} with the top-level folder dropped when the
        archive has a single one (as the build's unpack does)."""
        keys = [next(iter(self.tops)), ""] if len(self.tops) == 1 else [""]
        out = {}
        for path in self.paths:
            for key in keys:
                if (key, path) in self.found:
                    out[path] = self.found[(key, path)]
                    break
        return out


def _scan(tar, wanted, inner=None):
    """One streaming pass; with `inner`, descend into the first member named like it."""
    import fnmatch
    for member in tar:
        if inner is not None:
            if member.isfile() and fnmatch.fnmatch(posixpath.basename(member.name), inner):
                with tarfile.open(fileobj=tar.extractfile(member), mode="r|*") as nested:
                    _scan(nested, wanted)
                return True
            continue
        wanted.offer(tar, member)
    return inner is None


def read_members(archive, paths, inner=None):
    """{path: bytes} for the given source-tree paths found in a tarball (None: not found).
    Symbolic and hard links inside the archive are followed (second pass)."""
    from tasks.core.errors import UserError
    wanted = _Wanted(paths)
    try:
        with tarfile.open(archive, mode="r|*") as tar:
            if not _scan(tar, wanted, inner):
                raise UserError(f"{Path(archive).name} holds no file named {inner}.")
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise UserError(f"cannot read {archive}: {exc}.") from None
    got = wanted.result()
    links = {p: v[1] for p, v in got.items() if isinstance(v, tuple)}
    if links:
        again = _Wanted(set(links.values()))
        with tarfile.open(archive, mode="r|*") as tar:
            _scan(tar, again, inner)
        # link targets are archive paths, top folder included: match them as found
        raw = {path: data for (key, path), data in again.found.items() if key == ""}
        for path, target in links.items():
            data = raw.get(target)
            got[path] = data if isinstance(data, bytes) else None
    return {p: got.get(p) for p in paths}


def _download_path(cfg, file, source=None):
    path = cfg.cache / "downloads" / file
    if path.is_file() or source is None:
        return path
    try:                                   # the fetch stage knows where it keeps files
        from tasks.sources.download import cached
        hit = cached(source, cfg)
        if hit is not None and hit.alternative.file == file:
            return Path(hit.path)
    except Exception:                       # noqa: BLE001 - fall back to the plain path
        pass
    return path


def collect_license_texts(cfg, recipe, used_files):
    """[(relative path, bytes)] of the recipe's license_files, read from the source archives
    the component was built from (`used_files`: the source file names in its manifest)."""
    from tasks.core.errors import UserError
    plan = {}                                # (archive, inner) -> {archive path: tree path}
    for i, raw in enumerate(recipe.license_files):
        rel = _safe_rel(raw)
        if rel is None:
            raise UserError(f"'{raw}' is not a path inside the source tree.", recipe.path,
                            f"license_files[{i}]")
        # the source whose dest holds this path (longest dest wins); dest "" holds the rest
        candidates = [s for s in recipe.sources if s.extract and
                      (not s.dest or rel.startswith(s.dest.strip("/") + "/"))]
        if not candidates:
            raise UserError(f"'{raw}': no extracted source of '{recipe.name}' holds this path.",
                            recipe.path, f"license_files[{i}]")
        src = max(candidates, key=lambda s: len(s.dest.strip("/")))
        alt = next((a for a in src.alternatives if a.file in used_files), src.primary)
        inside = rel[len(src.dest.strip("/")) + 1:] if src.dest.strip("/") else rel
        archive = _download_path(cfg, alt.file, src)
        plan.setdefault((archive, alt.inner), {})[inside] = rel
    texts = []
    for (archive, inner), members in plan.items():
        if not Path(archive).is_file():
            raise UserError(f"{Path(archive).name} is not in the download cache.", recipe.path,
                            "license_files", "Run `doit fetch` first.")
        found = read_members(archive, list(members), inner)
        for inside, rel in members.items():
            if found.get(inside) is None:
                raise UserError(
                    f"license file '{rel}' is not in {Path(archive).name} "
                    f"(looked for '{inside}' below the archive's top-level folder).",
                    recipe.path, "license_files",
                    "Fix the path (relative to the unpacked source tree), or remove it.")
            texts.append((rel, found[inside]))
    return sorted(texts)


# ---- the SBOM ---------------------------------------------------------------------------
def _license_factory():
    try:
        from cyclonedx.contrib.license.factories import LicenseFactory
    except ImportError:                      # cyclonedx-python-lib < 11.5
        from cyclonedx.factory.license import LicenseFactory
    return LicenseFactory()


def build_sbom(image, comps, recipes, epoch, license_dirs):
    """CycloneDX JSON text (spec 1.6) of one image.

    image: {name, repository, version, distribution, prefix, digest, id}
    comps: image_components() output; recipes: {name: Recipe}
    license_dirs: {component: [paths relative to the legal folder]}
    Deterministic: serial number derived from the image, timestamp = SOURCE_DATE_EPOCH."""
    import datetime

    from cyclonedx.model import (ExternalReference, ExternalReferenceType, HashAlgorithm,
                                 HashType, Property, XsUri)
    from cyclonedx.model.bom import Bom
    from cyclonedx.model.component import Component, ComponentType
    from cyclonedx.output.json import JsonV1Dot6
    from packageurl import PackageURL

    lf = _license_factory()
    seed = f"dappdeps:{image['repository']}:{image['version']}:{image.get('digest') or ''}"
    bom = Bom(serial_number=uuid.uuid5(uuid.NAMESPACE_URL, seed))
    bom.metadata.timestamp = datetime.datetime.fromtimestamp(int(epoch), datetime.timezone.utc)
    repo_name = image["repository"].rsplit("/", 1)[-1]
    purl = None
    if image.get("digest"):
        purl = PackageURL(type="oci", name=repo_name, version=image["digest"],
                          qualifiers={"repository_url": image["repository"],
                                      "tag": image["version"]})
    top = Component(
        type=ComponentType.CONTAINER, name=image["repository"], version=image["version"],
        bom_ref=f"image:{image['name']}", purl=purl,
        description=f"dappdeps image {image['name']}: distribution {image['distribution']} "
                    f"at {image['prefix']}",
        properties=[Property(name=k, value=str(v)) for k, v in (
            ("dappdeps:image", image["name"]), ("dappdeps:distribution", image["distribution"]),
            ("dappdeps:prefix", image["prefix"]), ("dappdeps:image-id", image.get("id") or ""),
            ("dappdeps:manifest-digest", image.get("digest") or "")) if v])
    bom.metadata.component = top
    by_name = {}
    for comp in comps:
        recipe = recipes.get(comp["name"])
        refs = []
        first_url, first_sha = None, None
        for src in comp.get("sources", []):
            hashes = [HashType(alg=HashAlgorithm.SHA_256, content=src["sha256"])] if src.get("sha256") else []
            for url in src.get("urls") or []:
                refs.append(ExternalReference(type=ExternalReferenceType.SOURCE_DISTRIBUTION,
                                              url=XsUri(url), hashes=hashes,
                                              comment=f"source file {src['file']}"))
                if first_url is None and url.startswith(("https://", "http://")):
                    first_url, first_sha = url, src.get("sha256")
            if first_sha is None:
                first_sha = src.get("sha256")
        if recipe is not None and recipe.data.get("homepage"):
            refs.append(ExternalReference(type=ExternalReferenceType.WEBSITE,
                                          url=XsUri(recipe.data["homepage"])))
        qualifiers = {}
        if first_url:
            qualifiers["download_url"] = first_url
        if first_sha:
            qualifiers["checksum"] = f"sha256:{first_sha}"
        props = [Property(name="dappdeps:installed-size", value=str(comp.get("size", 0))),
                 Property(name="dappdeps:installed-files", value=str(comp.get("files", 0)))]
        for src in comp.get("sources", []):
            props.append(Property(name="dappdeps:source", value=f"{src['file']}@sha256:{src.get('sha256', '')}"))
        for path in license_dirs.get(comp["name"], []):
            props.append(Property(name="dappdeps:license-file", value=path))
        licenses = [lf.make_from_string(comp["license"])] if comp.get("license") else []
        c = Component(type=ComponentType.LIBRARY,
                      name=comp["name"], version=str(comp.get("version", "")),
                      description=comp.get("description") or None,
                      bom_ref=f"component:{comp['name']}", licenses=licenses,
                      purl=PackageURL(type="generic", name=comp["name"],
                                      version=str(comp.get("version", "")),
                                      qualifiers=qualifiers or None),
                      external_references=refs, properties=props)
        bom.components.add(c)
        by_name[comp["name"]] = c
    bom.register_dependency(top, list(by_name.values()))
    for name, c in by_name.items():
        recipe = recipes.get(name)
        deps = [by_name[d] for d in (recipe.depends if recipe else ()) if d in by_name]
        bom.register_dependency(c, deps)
    return JsonV1Dot6(bom).output_as_string(indent=1) + "\n"


def validate_sbom(text):
    """None when the SBOM is valid CycloneDX 1.6 JSON (the schema the library ships), else
    the validation error; None too when the validator's extra (jsonschema) is missing."""
    try:
        from cyclonedx.schema import SchemaVersion
        from cyclonedx.validation.json import JsonStrictValidator
        error = JsonStrictValidator(SchemaVersion.V1_6).validate_str(text)
    except ImportError:
        return None
    return error


# ---- the legal folder -------------------------------------------------------------------
def _readme(image, comps, missing):
    lines = [
        f"Legal information of image {image['repository']}:{image['version']} "
        f"(dappdeps image '{image['name']}', distribution {image['distribution']}, "
        f"prefix {image['prefix']}).",
        f"Image digest: {image.get('digest') or 'unknown'}",
        "",
        "manifest.csv          one line per component: version, license (SPDX), license files,",
        "                      source archives with their sha256 and download locations",
        "licenses/<name>-<version>/   the license texts named by each recipe's license_files,",
        "                      taken from the component's verified source archive",
        f"../{Path(image['sbom']).name}   the same as a CycloneDX {SBOM_SPEC} SBOM",
        "legal-info.sha256     sha256 of every file in this folder",
        "",
        f"{len(comps)} components. Source archives: cache/downloads/ of the build host "
        "(identified by sha256 in manifest.csv).",
    ]
    if missing:
        lines += ["", "WARNING: these components' recipes list no license_files, so no license "
                  "text was saved for them:"] + [f"  {name}" for name in missing]
    return "\n".join(lines) + "\n"


def write_legal(cfg, dist_name, name):
    """The legal:<name> action: SBOM + license folder of one exported image."""
    from doit.exceptions import TaskFailed

    from tasks.core.errors import UserError
    dist = cfg.distributions[dist_name]
    spec = dist.images[name]
    paths = legal_paths(cfg.cache, name, dist.version)
    stamp = legal_stamp(cfg, dist, name, spec)
    stamp.remove()
    try:
        doc = json.loads(_manifest_path(cfg, dist).read_text())
    except (OSError, ValueError) as exc:
        return TaskFailed(f"legal:{name}: cannot read the distribution's manifest ({exc}); "
                          f"run assemble:{dist.name} first.")
    result = read_result(image_paths(cfg.cache, name, dist.version)["json"]) or {}
    comps = image_components(doc, spec)
    image = {"name": name, "repository": spec["repository"], "version": dist.version,
             "distribution": dist.name, "prefix": dist.prefix, "digest": result.get("digest"),
             "id": result.get("id"), "sbom": str(paths["sbom"])}
    folder = paths["folder"]
    new = folder.with_name(f".{folder.name}.new")
    old = folder.with_name(f".{folder.name}.old")
    for leftover in (new, old):
        if leftover.exists():
            shutil.rmtree(leftover)
    license_dirs, missing, rows = {}, [], []
    try:
        new.mkdir(parents=True)
        for comp in comps:
            recipe = cfg.recipes.get(comp["name"])
            used = {s["file"] for s in comp.get("sources", [])}
            texts = collect_license_texts(cfg, recipe, used) if recipe else []
            if recipe is not None and not recipe.license_files:
                missing.append(comp["name"])
            sub = f"licenses/{comp['name']}-{comp.get('version', '')}"
            for rel, data in texts:
                dest = new / sub / rel
                dest.parent.mkdir(parents=True, exist_ok=True)
                dest.write_bytes(data)
                license_dirs.setdefault(comp["name"], []).append(f"{sub}/{rel}")
            srcs = comp.get("sources", [])
            rows.append([comp["name"], comp.get("version", ""), comp.get("license", ""),
                         " ".join(rel for rel, _ in texts),
                         " ".join(s["file"] for s in srcs),
                         " ".join(s.get("sha256", "") for s in srcs),
                         " ".join(u for s in srcs for u in s.get("urls", []))])
    except UserError as exc:
        shutil.rmtree(new, ignore_errors=True)
        return TaskFailed(f"legal:{name}: {exc.render()}")
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["PACKAGE", "VERSION", "LICENSE", "LICENSE FILES", "SOURCE ARCHIVE",
                     "SHA256", "SOURCE SITE"])
    writer.writerows(rows)
    (new / "manifest.csv").write_text(buf.getvalue())
    (new / "README").write_text(_readme(image, comps, missing))
    sums = []
    for path in sorted(p for p in new.rglob("*") if p.is_file()):
        sums.append(f"{hashlib.sha256(path.read_bytes()).hexdigest()}  {path.relative_to(new)}")
    (new / "legal-info.sha256").write_text("\n".join(sums) + "\n")

    try:
        text = build_sbom(image, comps, cfg.recipes, cfg.source_date_epoch, license_dirs)
    except ImportError as exc:
        shutil.rmtree(new, ignore_errors=True)
        return TaskFailed(f"legal:{name}: the CycloneDX library is missing ({exc}); "
                          "pip install -r requirements.txt")
    error = validate_sbom(text)
    if error is not None:
        shutil.rmtree(new, ignore_errors=True)
        return TaskFailed(f"legal:{name}: the SBOM does not validate against CycloneDX "
                          f"{SBOM_SPEC}: {error}")
    write_atomic(paths["sbom"], text)
    if folder.exists():
        os.rename(folder, old)
    os.rename(new, folder)
    if old.exists():
        shutil.rmtree(old)
    stamp.write(sbom=digest_of(text))
    texts = sum(len(v) for v in license_dirs.values())
    print(f"legal:{name}: {len(comps)} components, {texts} license texts -> {folder}; "
          f"SBOM {paths['sbom']}")
    if missing:
        print(f"legal:{name}: note: no license_files listed for {', '.join(missing)}")
    return True


# ---- the task -----------------------------------------------------------------------------
def legal_stamp(cfg, dist, name, spec):
    """Inputs of legal:<name>: the image's digest, the distribution manifest, and what the
    recipes say about licenses (which is not part of the image's bytes)."""
    try:
        manifest_digest = hashlib.sha256(_manifest_path(cfg, dist).read_bytes()).hexdigest()
    except OSError:
        manifest_digest = None
    result = read_result(image_paths(cfg.cache, name, dist.version)["json"]) or {}
    recipes = {}
    for comp in dist.components:
        r = cfg.recipes[comp]
        recipes[comp] = {"license": r.license, "license_files": list(r.license_files),
                         "homepage": r.data.get("homepage", ""), "depends": list(r.depends)}
    return Stamp(legal_paths(cfg.cache, name, dist.version)["stamp"], {
        "image": result.get("digest"), "manifest": manifest_digest,
        "include": list(spec["include"]), "exclude": list(spec["exclude"]),
        "recipes": recipes, "epoch": cfg.source_date_epoch, "legal": LEGAL_VERSION})


def _legal_current(cfg, dist_name, name):
    def check(task, values):
        dist = cfg.distributions[dist_name]
        paths = legal_paths(cfg.cache, name, dist.version)
        stamp = legal_stamp(cfg, dist, name, dist.images[name])
        if not stamp.is_current():
            REASONS[f"legal:{name}"] = stamp.why()
            return False
        if not paths["sbom"].is_file() or not paths["folder"].is_dir():
            REASONS[f"legal:{name}"] = "its SBOM or license folder is missing"
            return False
        return True
    check.__name__ = f"legal_of_{name}"
    return check


def _clean(cfg, dist_name, name):
    dist = cfg.distributions[dist_name]
    paths = legal_paths(cfg.cache, name, dist.version)
    paths["sbom"].unlink(missing_ok=True)
    paths["stamp"].unlink(missing_ok=True)
    shutil.rmtree(paths["folder"], ignore_errors=True)


def task_legal():
    """CycloneDX SBOM and license texts of each image, next to its tarball (legal-info)."""
    for dist, name, spec in _images(project):
        paths = legal_paths(project.cache, name, dist.version)
        yield {
            "name": name,
            "doc": f"SBOM + license texts of {spec['repository']}:{dist.version}",
            "actions": [(write_legal, [project, dist.name, name])],
            "uptodate": [_legal_current(project, dist.name, name)],
            "task_dep": [f"image:{name}"],
            "targets": [str(paths["sbom"])],
            "clean": [(_clean, [project, dist.name, name])],
            "verbosity": 2,
        }


def summary(cfg):
    """{image name: {sbom, folder, components, texts}} of what legal:<image> wrote so far."""
    out = {}
    for dist, name, _spec in _images(cfg):
        paths = legal_paths(cfg.cache, name, dist.version)
        if paths["sbom"].is_file():
            out[name] = {"sbom": paths["sbom"],
                         "folder": paths["folder"] if paths["folder"].is_dir() else None}
    return out

