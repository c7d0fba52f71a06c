"""The CycloneDX SBOM of an image: each component it holds, with its version, license,
package URL (the recipe's `purl`, else pkg:generic), source files' URLs and sha256s, the
prebuilt files it installs (wheels), the Debian patches applied in its build (pedigree) and
the CVEs they fix (vulnerabilities, resolved); legal:<image> writes it next to the image's
tarball."""
import uuid

SBOM_SPEC = "1.6"
NVD = "https://nvd.nist.gov/vuln/detail/"
# Sources that are binaries built elsewhere, installed as they are: Python wheels.
PREBUILT_SUFFIXES = (".whl",)


def prebuilt_files(comp):
    """The source files of a component (as its manifest lists them) that are prebuilt
    binaries installed as they are, not built from source here: its wheels."""
    return [s["file"] for s in comp.get("sources", []) if s["file"].endswith(PREBUILT_SUFFIXES)]


def _license_factory():
    try:
        from cyclonedx.contrib.license.factories import LicenseFactory
    except ImportError:                      # cyclonedx-python-lib < 11.5
        from cyclonedx.factory.license import LicenseFactory
    return LicenseFactory()


def build_sbom(image, comps, recipes, epoch, license_dirs):
    """CycloneDX JSON text (spec 1.6) of one image.

    image: {name, repository, version, distribution, prefix, digest, id}, and platform
           (linux/arm64) for one export of an image of several platforms
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
        qualifiers = {"repository_url": image["repository"], "tag": image["version"]}
        if image.get("platform"):       # the purl spec's oci `arch` qualifier
            qualifiers["arch"] = image["platform"].split("/", 1)[1]
        purl = PackageURL(type="oci", name=repo_name, version=image["digest"],
                          qualifiers=qualifiers)
    top = Component(
        type=ComponentType.CONTAINER, name=image["repository"], version=image["version"],
        bom_ref=f"image:{image['name']}", purl=purl,
        description=f"dappdeps image {image['name']}: distribution {image['distribution']} "
                    f"at {image['prefix']}",
        properties=[Property(name=k, value=str(v)) for k, v in (
            ("dappdeps:image", image["name"]), ("dappdeps:distribution", image["distribution"]),
            ("dappdeps:prefix", image["prefix"]), ("dappdeps:image-id", image.get("id") or ""),
            ("dappdeps:manifest-digest", image.get("digest") or ""),
            ("dappdeps:platform", image.get("platform") or "")) if v])
    bom.metadata.component = top
    by_name = {}
    for comp in comps:
        recipe = recipes.get(comp["name"])
        refs = []
        first_url, first_sha = None, None
        prebuilt = prebuilt_files(comp)
        for src in comp.get("sources", []):
            hashes = [HashType(alg=HashAlgorithm.SHA_256, content=src["sha256"])] if src.get("sha256") else []
            binary = src["file"] in prebuilt
            for url in src.get("urls") or []:
                refs.append(ExternalReference(
                    type=ExternalReferenceType.DISTRIBUTION if binary else
                    ExternalReferenceType.SOURCE_DISTRIBUTION, url=XsUri(url), hashes=hashes,
                    comment=f"{'prebuilt file' if binary else 'source file'} {src['file']}"))
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
        # installed as built elsewhere: every file this component puts in the image (the
        # distribution manifest's entries of the component) comes from these wheels
        for file in prebuilt:
            props.append(Property(name="dappdeps:prebuilt", value=file))
        licenses = [lf.make_from_string(comp["license"])] if comp.get("license") else []
        patches = comp.get("debian_patches") or []
        for patch in patches:
            src = _source_of(comp, patch["source"])
            props.append(Property(name="dappdeps:debian-patch",
                                  value=f"{patch['name']} of {patch['source']}"
                                        f"@sha256:{src.get('sha256', '')}"))
        c = Component(type=ComponentType.LIBRARY,
                      name=comp["name"], version=str(comp.get("version", "")),
                      description=comp.get("description") or None,
                      bom_ref=f"component:{comp['name']}", licenses=licenses,
                      purl=_purl(recipe, comp, qualifiers),
                      external_references=refs, properties=props,
                      pedigree=_pedigree(comp, patches) if patches else None)
        bom.components.add(c)
        by_name[comp["name"]] = c
    bom.register_dependency(top, list(by_name.values()))
    for name, c in by_name.items():
        recipe = recipes.get(name)
        deps = [by_name[d] for d in (recipe.depends if recipe else ()) if d in by_name]
        bom.register_dependency(c, deps)
    for comp in comps:
        for vulnerability in _vulnerabilities(comp, by_name[comp["name"]]):
            bom.vulnerabilities.add(vulnerability)
    return JsonV1Dot6(bom).output_as_string(indent=1) + "\n"


def _purl(recipe, comp, qualifiers):
    """The recipe's purl (pkg:pypi/jinja2@3.1.6) when it has one, else pkg:generic/<name>;
    either at the version the manifest records, with the first source's download_url and
    checksum as qualifiers."""
    from packageurl import PackageURL

    version = str(comp.get("version", ""))
    given = recipe.data.get("purl") if recipe is not None else None
    if given:
        base = PackageURL.from_string(given)
        return PackageURL(type=base.type, namespace=base.namespace, name=base.name,
                          version=version, qualifiers=qualifiers or None)
    return PackageURL(type="generic", name=comp["name"], version=version,
                      qualifiers=qualifiers or None)


def _source_of(comp, file):
    return next((s for s in comp.get("sources", []) if s["file"] == file), {})


def _pedigree(comp, patches):
    """The Debian patches applied in the component's build, as CycloneDX backports: the
    diff's URL is the tarball's location with the patch's path in it as the fragment,
    `resolves` the CVEs each fixes."""
    from cyclonedx.model import XsUri
    from cyclonedx.model.component import Diff, Patch, PatchClassification, Pedigree
    from cyclonedx.model.issue import IssueClassification, IssueType, IssueTypeSource

    out = []
    for patch in patches:
        urls = _source_of(comp, patch["source"]).get("urls") or []
        web = [u for u in urls if u.startswith(("https://", "http://"))]
        where = (web or urls or [None])[0]
        out.append(Patch(
            type=PatchClassification.BACKPORT,
            diff=Diff(url=XsUri(f"{where}#{patch['name']}")) if where else None,
            resolves=[IssueType(type=IssueClassification.SECURITY, id=cve, name=cve,
                                source=IssueTypeSource(name="NVD", url=XsUri(NVD + cve)))
                      for cve in patch["cves"]]))
    return Pedigree(patches=out, notes="Debian patches applied in the build: " +
                    ", ".join(p["name"] for p in patches))


def _vulnerabilities(comp, component):
    """One resolved vulnerability per CVE the component's Debian patches fix."""
    from cyclonedx.model import XsUri
    from cyclonedx.model.impact_analysis import ImpactAnalysisState
    from cyclonedx.model.vulnerability import (BomTarget, Vulnerability, VulnerabilityAnalysis,
                                               VulnerabilitySource)

    fixed = {}
    for patch in comp.get("debian_patches") or []:
        for cve in patch["cves"]:
            fixed.setdefault(cve, []).append(patch["name"])
    for cve, names in sorted(fixed.items()):
        yield Vulnerability(
            bom_ref=f"vulnerability:{comp['name']}:{cve}", id=cve,
            source=VulnerabilitySource(name="NVD", url=XsUri(NVD + cve)),
            affects=[BomTarget(ref=component.bom_ref.value)],
            analysis=VulnerabilityAnalysis(
                state=ImpactAnalysisState.RESOLVED,
                detail=f"fixed by Debian patch{'es' if len(names) > 1 else ''} "
                       f"{', '.join(names)} applied in the build"))


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
