"""The legal information of an image, next to its tarball (Buildroot's `make legal-info`):

  cache/images/<image>-<version>.cdx.json   CycloneDX SBOM (tasks.ship.sbom)
  cache/images/<image>-<version>.legal/     README, manifest.csv (one line per component),
                                            licenses/<component>-<version>/<file> (the texts
                                            named by the recipes' license_files, taken from
                                            the source archives: tasks.ship.licenses),
                                            legal-info.sha256

An image of a distribution may hold only some of its components (a run-time cut of the
toolchain): the legal information names exactly the components that provide a file of the
image, like the image's labels do. A component without license_files is listed in the
README as such.
"""
import csv
import io
from pathlib import Path

from tasks.core.files import sha256_file
from tasks.ship.select import select
from tasks.ship.licenses import collect_license_texts
from tasks.ship.sbom import SBOM_SPEC


def legal_paths(cache, name, version):
    """Where legal:<name> writes: the SBOM, the license folder and the task's stamp."""
    base = Path(cache) / "images" / f"{name}-{version}"
    return {"sbom": base.with_name(base.name + ".cdx.json"),
            "folder": base.with_name(base.name + ".legal"),
            "stamp": base.with_name(base.name + ".legal.stamp")}


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


def write_legal_folder(cfg, image, comps, folder):
    """Fill `folder` (which must not exist) with the license texts of the image's
    components, manifest.csv, README and legal-info.sha256.

    Returns ({component: [its license files, relative to the folder]}, [components whose
    recipes list no license_files]). Raises UserError when a recipe's license file cannot
    be read from its source archive."""
    license_dirs, missing, rows = {}, [], []
    folder.mkdir(parents=True)
    for comp in comps:
        recipe = cfg.recipes.get(comp["name"])
        used = {s["file"] for s in comp.get("sources", [])}
        texts = collect_license_texts(cfg, recipe, used) if recipe else []
        if recipe is not None and not recipe.license_files:
            missing.append(comp["name"])
        sub = f"licenses/{comp['name']}-{comp.get('version', '')}"
        for rel, data in texts:
            dest = folder / sub / rel
            dest.parent.mkdir(parents=True, exist_ok=True)
            dest.write_bytes(data)
            license_dirs.setdefault(comp["name"], []).append(f"{sub}/{rel}")
        srcs = comp.get("sources", [])
        rows.append([comp["name"], comp.get("version", ""), comp.get("license", ""),
                     " ".join(rel for rel, _ in texts),
                     " ".join(s["file"] for s in srcs),
                     " ".join(s.get("sha256", "") for s in srcs),
                     " ".join(u for s in srcs for u in s.get("urls", []))])
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["PACKAGE", "VERSION", "LICENSE", "LICENSE FILES", "SOURCE ARCHIVE",
                     "SHA256", "SOURCE SITE"])
    writer.writerows(rows)
    (folder / "manifest.csv").write_text(buf.getvalue())
    (folder / "README").write_text(_readme(image, comps, missing))
    sums = []
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        sums.append(f"{sha256_file(path)}  {path.relative_to(folder)}")
    (folder / "legal-info.sha256").write_text("\n".join(sums) + "\n")
    return license_dirs, missing
