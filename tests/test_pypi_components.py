"""Every PyPI package of the ansible distribution is a component of its own (issue 15,
point 5): pinned sdist (or, where it cannot be built here, the pinned wheel), the license
its metadata declares, its license texts and a pkg:pypi purl; the SBOM marks what came
from prebuilt wheels and validates against CycloneDX 1.6. A real build of a fixture
distribution installs a wheel (a zip made here) and takes its license text out of it."""
import copy
import hashlib
import io
import json
import os
import zipfile
from pathlib import Path

import pytest

from conftest import run_doit
from fixtures import FixtureProject, make_tarball
from tasks.core.errors import UserError

REPO = Path(__file__).resolve().parent.parent
# A cache holding the real PyPI sources (DAPPDEPS_CACHE_DIR=... pytest): their license files
# are read from it. Every other test, and the fixture builds, use their own cache.
PINNED_CACHE = os.environ.get("DAPPDEPS_CACHE_DIR")


@pytest.fixture(autouse=True)
def _own_cache(monkeypatch):
    monkeypatch.delenv("DAPPDEPS_CACHE_DIR", raising=False)

# recipe -> (PyPI name, version)
PYPI = {
    "py-flit-core": ("flit-core", "3.12.0"),
    "py-pip": ("pip", "26.3"),
    "py-setuptools": ("setuptools", "84.0.0"),
    "py-pycparser": ("pycparser", "3.12"),
    "py-cffi": ("cffi", "2.1.1"),
    "py-cryptography": ("cryptography", "50.0.2"),
    "py-markupsafe": ("markupsafe", "3.0.4"),
    "py-jinja2": ("jinja2", "3.1.6"),
    "py-pyyaml": ("pyyaml", "6.0.4"),
    "py-packaging": ("packaging", "26.4"),
    "py-resolvelib": ("resolvelib", "1.2.1"),
    "ansible-core": ("ansible-core", "2.21.5"),
}
PREBUILT = {"py-cryptography", "py-pyyaml"}          # no Rust/maturin; no Cython/libyaml
BUILD_ONLY = {"py-flit-core", "py-setuptools"}        # build backends, not in the image
RUNTIME = {                                           # what each needs at run time
    "ansible-core": {"py-jinja2", "py-pyyaml", "py-cryptography", "py-packaging", "py-resolvelib"},
    "py-jinja2": {"py-markupsafe"},
    "py-cryptography": {"py-cffi"},
    "py-cffi": {"py-pycparser", "libffi"},
}


@pytest.fixture(scope="module")
def cfg():
    from tasks.model.config import load_config
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv("DAPPDEPS_CONFIG", raising=False)
        mp.delenv("DAPPDEPS_CACHE_DIR", raising=False)
        return load_config(REPO)


# ---- the recipes --------------------------------------------------------------------------
def test_every_pypi_package_is_a_component_of_the_ansible_distribution(cfg):
    comps = cfg.distributions["ansible"].components
    assert set(PYPI) <= set(comps)
    assert {"python", "libffi", "ca-certificates"} <= set(comps)


@pytest.mark.parametrize("name", sorted(PYPI))
def test_each_has_its_version_license_purl_and_license_files(cfg, name):
    recipe = cfg.recipes[name]
    pypi, version = PYPI[name]
    assert recipe.version == version
    assert recipe.data["purl"] == f"pkg:pypi/{pypi}@{version}"
    assert recipe.license and recipe.license != "NOASSERTION"
    assert recipe.license_files
    # the comment says where the license expression comes from
    assert "PyPI: info." in recipe.path.read_text()


def test_the_licenses_are_those_the_metadata_declares(cfg):
    got = {name: cfg.recipes[name].license for name in PYPI}
    assert got == {
        "py-flit-core": "BSD-3-Clause", "py-pip": "MIT", "py-setuptools": "MIT",
        "py-pycparser": "BSD-3-Clause", "py-cffi": "MIT-0",
        "py-cryptography": "Apache-2.0 OR BSD-3-Clause", "py-markupsafe": "BSD-3-Clause",
        "py-jinja2": "BSD-3-Clause", "py-pyyaml": "MIT",
        "py-packaging": "Apache-2.0 OR BSD-2-Clause", "py-resolvelib": "ISC",
        "ansible-core": "GPL-3.0-or-later"}


def test_the_dependency_graph_is_the_real_one(cfg):
    from tasks.model.config import topological
    recipes = cfg.recipes
    for name, needs in RUNTIME.items():
        assert needs <= set(recipes[name].depends), name
    for name in PYPI:
        assert "python" in recipes[name].depends, name
    # pip first: everything after it is installed with it
    for name in set(PYPI) - {"py-flit-core", "py-pip"}:
        assert "py-pip" in recipes[name].depends, name
    assert recipes["py-pip"].depends == ("python", "py-flit-core")
    assert recipes["py-flit-core"].depends == ("python",)
    # the build backend of each sdist is a dependency
    for name in ("py-pip", "py-jinja2", "py-packaging"):
        assert "py-flit-core" in recipes[name].depends, name
    for name in ("py-markupsafe", "py-cffi", "py-pycparser", "py-resolvelib", "ansible-core"):
        assert "py-setuptools" in recipes[name].depends, name
    comps = cfg.distributions["ansible"].components
    graph = {c: [d for d in recipes[c].depends if d in comps] for c in comps}
    order = topological(graph)
    assert order.index("py-pip") < min(order.index(n) for n in set(PYPI) - {"py-flit-core", "py-pip"})


def test_sdists_where_they_build_here_and_wheels_only_where_stated(cfg):
    for name in PYPI:
        files = [s.primary.file for s in cfg.recipes[name].sources]
        assert len(files) == 1, name
        if name in PREBUILT:
            assert files[0].endswith(".whl") and not cfg.recipes[name].sources[0].extract
        else:
            assert files[0].endswith(".tar.gz"), name


def test_the_build_backends_are_not_shipped(cfg):
    from tasks.ship.legal_info import image_components
    from tasks.ship.select import select
    spec = cfg.distributions["ansible"].images["ansible"]
    site = "lib/python3.13/site-packages"
    owned = {
        "py-setuptools": [f"{site}/setuptools/__init__.py", f"{site}/setuptools-84.0.0.dist-info/RECORD",
                          f"{site}/_distutils_hack/__init__.py",
                          f"{site}/distutils-precedence.pth"],
        "py-flit-core": [f"{site}/flit_core/buildapi.py", f"{site}/flit_core-3.12.0.dist-info/RECORD"],
        "py-pip": [f"{site}/pip/__init__.py", "bin/pip3"],
        "py-jinja2": [f"{site}/jinja2/__init__.py", f"{site}/jinja2-3.1.6.dist-info/RECORD"],
    }
    entries = [{"path": p, "type": "file", "component": c, "size": 1}
               for c, paths in owned.items() for p in paths]
    kept = {e["path"] for e in select(entries, spec["include"], spec["exclude"])}
    assert kept == set(owned["py-pip"] + owned["py-jinja2"])
    doc = {"entries": entries, "components": [{"name": c} for c in owned]}
    assert [c["name"] for c in image_components(doc, spec)] == ["py-pip", "py-jinja2"]


def test_the_license_files_are_in_the_pinned_sources(cfg):
    """Read from the download cache when the sources are there (after `doit fetch`)."""
    from tasks.ship.licenses import collect_license_texts
    cfg = copy.copy(cfg)
    cfg.cache = Path(PINNED_CACHE) if PINNED_CACHE else cfg.cache
    # each platform's recipe: the arm64 wheels have their own license files
    recipes = [cfg.recipes[n].for_platform(p) for n in PYPI for p in ("linux/amd64", "linux/arm64")]
    have = [r for r in recipes if all((cfg.cache / "downloads" / s.primary.file).is_file()
                                      for s in r.sources)]
    if not have:
        pytest.skip(f"the PyPI sources are not in {cfg.cache}/downloads (doit fetch, or "
                    "DAPPDEPS_CACHE_DIR=<a cache holding them>)")
    for recipe in have:
        texts = collect_license_texts(cfg, recipe, {s.primary.file for s in recipe.sources})
        assert [rel for rel, _ in texts] == sorted(recipe.license_files), recipe.name
        assert all(len(data) > 100 for _, data in texts), recipe.name   # texts, not stubs


# ---- the purl field -----------------------------------------------------------------------
@pytest.mark.parametrize("purl,words", [
    ("pkg:pypi/demo-pkg@2.0", "another version than the recipe's (1.0)"),
    ("pkg:pypi/Demo_Pkg@1.0", "lowercase, with - for _"),
    ("pkg:pypi/ns/demo-pkg@1.0", "without a namespace"),
    ("pkg:pypi/demo-pkg@1.0?file_name=x.whl", "not a package URL"),
    ("pypi/demo-pkg@1.0", "not a package URL"),
    ("pkg:pypi/demo-pkg", "not a package URL"),
])
def test_a_bad_purl_is_refused_when_loading(tmp_path, monkeypatch, purl, words):
    from tasks.model.config import load_config
    proj = FixtureProject(tmp_path, base_url="http://127.0.0.1:9")
    proj.write_recipe({"name": "demo-pkg", "version": "1.0", "description": "d", "license": "MIT",
                       "purl": purl, "sources": [{"file": "demo-1.0.tar.gz", "sha256": "a" * 64,
                                                  "urls": ["http://127.0.0.1:9/d"]}]})
    proj.add_distribution("demo", ["demo-pkg"])
    proj.write_config()
    monkeypatch.setenv("DAPPDEPS_CONFIG", str(proj.root / "config.yaml"))
    with pytest.raises(UserError) as info:
        load_config()
    text = info.value.render()
    assert "demo-pkg.yaml" in text and "purl" in text and words in text, text


def test_other_ecosystems_and_namespaces_are_accepted(tmp_path, monkeypatch):
    from tasks.model.recipes import purl_check
    assert purl_check("pkg:github/pypa/pip@25.3") is None
    assert purl_check("pkg:generic/zlib@1.2.13") is None
    assert purl_check("pkg:pypi/flit-core@3.12.0") is None


# ---- license texts from inside a wheel ----------------------------------------------------
DIST_INFO = "demo_pkg-1.0.dist-info"
WHEEL = "demo_pkg-1.0-py3-none-any.whl"
WHEEL_LICENSE = "Demo license: do what you like, keep this text.\n"


def make_wheel(path, link=False):
    """A minimal wheel: a module and its dist-info with a license file; returns its sha256."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        def add(name, text, mode=0o644):
            info = zipfile.ZipInfo(name, date_time=(2023, 11, 14, 22, 13, 20))
            info.external_attr = mode << 16
            zf.writestr(info, text)
        add("demo_pkg/__init__.py", "VERSION = '1.0'\n")
        add(f"{DIST_INFO}/METADATA", "Metadata-Version: 2.4\nName: demo-pkg\nVersion: 1.0\n"
                                     "License-Expression: MIT\nLicense-File: LICENSE\n")
        add(f"{DIST_INFO}/WHEEL", "Wheel-Version: 1.0\nRoot-Is-Purelib: true\nTag: py3-none-any\n")
        add(f"{DIST_INFO}/licenses/LICENSE", WHEEL_LICENSE)
        if link:
            add(f"{DIST_INFO}/licenses/LINK", "LICENSE", mode=0o120777)
        add(f"{DIST_INFO}/RECORD", "")
    Path(path).write_bytes(buf.getvalue())
    return hashlib.sha256(buf.getvalue()).hexdigest()


def wheel_recipe(base_url, sha, license_files):
    return {"name": "demo-wheel", "version": "1.0", "description": "a prebuilt wheel",
            "license": "MIT", "purl": "pkg:pypi/demo-pkg@1.0", "license_files": license_files,
            "sources": [{"file": WHEEL, "sha256": sha, "urls": [f"{base_url}/{WHEEL}"],
                         "extract": False, "dest": "wheels"}],
            "build": "script",
            "script": f'python3 -m zipfile -e "$SRCDIR/wheels/{WHEEL}" "$PREFIX/lib/site-packages"\n'}


def wheel_config(tmp_path, monkeypatch, license_files, link=False):
    from tasks.model.config import load_config
    proj = FixtureProject(tmp_path, base_url="http://127.0.0.1:9")
    downloads = proj.cache / "downloads"
    downloads.mkdir(parents=True)
    sha = make_wheel(downloads / WHEEL, link=link)
    proj.write_recipe(wheel_recipe(proj.base_url, sha, license_files))
    proj.add_distribution("demo", ["demo-wheel"])
    proj.write_config()
    monkeypatch.setenv("DAPPDEPS_CONFIG", str(proj.root / "config.yaml"))
    cfg = load_config()
    return cfg, cfg.recipes["demo-wheel"]


def test_a_license_file_is_read_out_of_a_wheel(tmp_path, monkeypatch):
    from tasks.ship.licenses import collect_license_texts
    rel = f"wheels/{WHEEL}/{DIST_INFO}/licenses/LICENSE"
    cfg, recipe = wheel_config(tmp_path, monkeypatch, [rel])
    assert collect_license_texts(cfg, recipe, {WHEEL}) == [(rel, WHEEL_LICENSE.encode())]


@pytest.mark.parametrize("member", ["licenses/NOPE", "licenses", "licenses/LINK"])
def test_a_member_the_wheel_does_not_hold_as_a_file_is_an_error(tmp_path, monkeypatch, member):
    from tasks.ship.licenses import collect_license_texts
    rel = f"wheels/{WHEEL}/{DIST_INFO}/{member}"
    cfg, recipe = wheel_config(tmp_path, monkeypatch, [rel], link=True)
    with pytest.raises(UserError) as info:
        collect_license_texts(cfg, recipe, {WHEEL})
    text = info.value.render()
    assert f"is not in {WHEEL}" in text and "license_files[0]" in text, text


def test_a_huge_member_is_refused(tmp_path, monkeypatch):
    from tasks.ship import licenses
    rel = f"wheels/{WHEEL}/{DIST_INFO}/licenses/LICENSE"
    cfg, recipe = wheel_config(tmp_path, monkeypatch, [rel])
    monkeypatch.setattr(licenses, "MAX_ZIP_MEMBER", 10)
    with pytest.raises(UserError, match="a license text is at most 10 bytes"):
        licenses.collect_license_texts(cfg, recipe, {WHEEL})


def test_a_path_beside_the_wheel_is_not_inside_it(tmp_path, monkeypatch):
    from tasks.ship.licenses import collect_license_texts
    cfg, recipe = wheel_config(tmp_path, monkeypatch, [f"wheels/{DIST_INFO}/licenses/LICENSE"])
    with pytest.raises(UserError, match="no extracted source of 'demo-wheel' holds this path"):
        collect_license_texts(cfg, recipe, {WHEEL})


# ---- the SBOM -----------------------------------------------------------------------------
def validate(text):
    from cyclonedx.schema import SchemaVersion
    from cyclonedx.validation.json import JsonStrictValidator
    return JsonStrictValidator(SchemaVersion.V1_6).validate_str(text)


def test_the_sbom_of_a_hand_made_manifest_marks_the_prebuilt_component():
    from types import SimpleNamespace

    from tasks.ship.sbom import build_sbom
    recipes = {
        "py-demo": SimpleNamespace(data={"purl": "pkg:pypi/demo-pkg@1.0", "homepage": ""},
                                   depends=("py-lib",)),
        "py-lib": SimpleNamespace(data={"purl": "pkg:pypi/lib@2.0"}, depends=()),
        "zlib": SimpleNamespace(data={"purl": ""}, depends=()),
    }
    comps = [
        {"name": "py-lib", "version": "2.0", "license": "MIT", "size": 10, "files": 2,
         "sources": [{"file": "lib-2.0.tar.gz", "sha256": "b" * 64,
                      "urls": ["https://files.example/lib-2.0.tar.gz"]}]},
        {"name": "py-demo", "version": "1.0", "license": "Apache-2.0 OR BSD-3-Clause",
         "size": 20, "files": 3,
         "sources": [{"file": WHEEL, "sha256": "a" * 64, "urls": [f"https://files.example/{WHEEL}"]}]},
        {"name": "zlib", "version": "1.2.13", "license": "Zlib", "size": 1, "files": 1,
         "sources": [{"file": "zlib-1.2.13.tar.xz", "sha256": "c" * 64, "urls": ["debian:zlib"]}]},
    ]
    image = {"name": "demo", "repository": "dappdeps/demo", "version": "1.0", "distribution": "demo",
             "prefix": "/.dapp/test/demo/1.0", "digest": None, "id": None}
    text = build_sbom(image, comps, recipes, 1700000000,
                      {"py-demo": [f"licenses/py-demo-1.0/wheels/{WHEEL}/{DIST_INFO}/licenses/LICENSE"]})
    assert validate(text) is None
    sbom = json.loads(text)
    by = {c["name"]: c for c in sbom["components"]}
    props = {n: [(p["name"], p["value"]) for p in c["properties"]] for n, c in by.items()}
    assert ("dappdeps:prebuilt", WHEEL) in props["py-demo"]
    assert not [p for p in props["py-lib"] + props["zlib"] if p[0] == "dappdeps:prebuilt"]
    assert by["py-demo"]["purl"].startswith("pkg:pypi/demo-pkg@1.0?")
    assert f"checksum=sha256:{'a' * 64}" in by["py-demo"]["purl"]
    assert by["py-lib"]["purl"].startswith("pkg:pypi/lib@2.0?")
    assert by["zlib"]["purl"].startswith("pkg:generic/zlib@1.2.13")
    assert by["py-demo"]["licenses"] == [{"expression": "Apache-2.0 OR BSD-3-Clause"}]
    # a wheel is a binary distribution, an sdist a source distribution
    assert [r["type"] for r in by["py-demo"]["externalReferences"]] == ["distribution"]
    assert [r["type"] for r in by["py-lib"]["externalReferences"]] == ["source-distribution"]
    deps = {d["ref"]: d.get("dependsOn", []) for d in sbom["dependencies"]}
    assert deps["component:py-demo"] == ["component:py-lib"]


# ---- a real build: a wheel installed, its SBOM and license text ---------------------------
@pytest.fixture(scope="module")
def built(tmp_path_factory):
    proj = FixtureProject(tmp_path_factory.mktemp("pypi"))
    sha = make_wheel(proj.served / WHEEL)
    proj.write_recipe(wheel_recipe(proj.base_url, sha,
                                   [f"wheels/{WHEEL}/{DIST_INFO}/licenses/LICENSE"]))
    tar = "demo-src-1.0.tar.gz"
    src_sha = make_tarball(proj.served / tar, "demo-src-1.0", {"LICENSE": "source license\n"})
    proj.write_recipe({"name": "demo-src", "version": "1.0", "description": "built from source",
                       "license": "MIT", "purl": "pkg:pypi/demo-src@1.0", "license_files": ["LICENSE"],
                       "sources": [{"file": tar, "sha256": src_sha, "urls": [f"{proj.base_url}/{tar}"]}],
                       "depends": ["demo-wheel"], "build": "script",
                       "script": 'mkdir -p "$PREFIX/share/demo-src" && cp LICENSE "$PREFIX/share/demo-src/"\n'})
    proj.add_distribution("demo", ["demo-wheel", "demo-src"])
    proj.write_config()
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv("DAPPDEPS_CACHE_DIR", raising=False)
        run = run_doit(proj.root / "config.yaml", "legal:demo", check=True)
    return proj, run


def test_the_real_sbom_marks_the_wheel_and_validates(built):
    proj, _ = built
    text = (proj.cache / "images/demo-1.0.cdx.json").read_text()
    assert validate(text) is None
    sbom = json.loads(text)
    by = {c["name"]: c for c in sbom["components"]}
    props = {n: {p["name"]: p["value"] for p in c["properties"]} for n, c in by.items()}
    assert props["demo-wheel"]["dappdeps:prebuilt"] == WHEEL
    assert "dappdeps:prebuilt" not in props["demo-src"]
    assert by["demo-wheel"]["purl"].startswith("pkg:pypi/demo-pkg@1.0?")
    assert by["demo-src"]["purl"].startswith("pkg:pypi/demo-src@1.0?")
    # the files of the prebuilt component are those the manifest gives it
    manifest = json.loads((proj.cache / "stage/demo.manifest.json").read_text())
    files = sorted(e["path"] for e in manifest["entries"]
                   if e.get("component") == "demo-wheel" and e["type"] == "file")
    assert f"lib/site-packages/{DIST_INFO}/licenses/LICENSE" in files
    assert props["demo-wheel"]["dappdeps:installed-files"] == str(len(files))


def test_the_legal_folder_holds_the_license_text_out_of_the_wheel(built):
    proj, _ = built
    legal = proj.cache / "images/demo-1.0.legal"
    rel = f"licenses/demo-wheel-1.0/wheels/{WHEEL}/{DIST_INFO}/licenses/LICENSE"
    assert (legal / rel).read_text() == WHEEL_LICENSE
    assert (legal / "licenses/demo-src-1.0/LICENSE").read_text() == "source license\n"
    installed = proj.cache / f"stage/demo/demo-wheel/tree/lib/site-packages/{DIST_INFO}/licenses/LICENSE"
    assert installed.read_text() == WHEEL_LICENSE      # the same text the image ships
    sbom = json.loads((proj.cache / "images/demo-1.0.cdx.json").read_text())
    (comp,) = [c for c in sbom["components"] if c["name"] == "demo-wheel"]
    assert {"name": "dappdeps:license-file", "value": rel} in comp["properties"]
