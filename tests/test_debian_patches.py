"""Debian patches (issue 15, points 2 and 5): a recipe names patches of Debian's
debian.tar.xz (a pinned source like any other) with the CVEs they fix; the build applies
them in order before the recipe's own patches, the manifests record them and the SBOM
lists them as pedigree patches and resolved vulnerabilities, valid CycloneDX 1.6.
Real builds of a small generated package through bwrap, sources over real HTTP."""
import io
import json
import lzma
import tarfile
import textwrap

import pytest

from conftest import run_doit
from fixtures import FixtureProject
from tasks.core.errors import UserError
from tasks.sources.unpack import extract_files

DEB = "greet_1.0-1.debian.tar.xz"
FIX = "debian/patches/fix-message.patch"
OTHER = "debian/patches/extra/other.patch"
STALE = "debian/patches/stale.patch"
CVES = ["CVE-2024-0001", "CVE-2024-12345"]

GREET = {
    "message.txt": "hello\n",
    "notes.txt": "notes\n",
    "Makefile": textwrap.dedent("""\
        all:
        install:
        \tmkdir -p $(PREFIX)/share/greet
        \tcp message.txt notes.txt $(PREFIX)/share/greet/
        """),
}


def diff(path, old, new):
    """A unified diff of a one-line file, as Debian's patches are written (-p1)."""
    return (f"Description: change {path}\n--- a/{path}\n+++ b/{path}\n@@ -1 +1 @@\n"
            f"-{old}\n+{new}\n")


DEBIAN = {
    "changelog": "greet (1.0-1) unstable; urgency=medium\n",
    "patches/series": "fix-message.patch\nextra/other.patch\nstale.patch\n",
    "patches/fix-message.patch": diff("message.txt", "hello", "hello, fixed"),
    "patches/extra/other.patch": diff("notes.txt", "notes", "notes, changed by Debian"),
    "patches/stale.patch": diff("message.txt", "no such line", "never"),
}


def debian_tarball(path, files, top="debian"):
    """A deterministic .tar.xz holding debian/...; returns its sha256."""
    import hashlib
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        folders = sorted({"/".join(n.split("/")[:i]) for n in files for i in range(1, n.count("/") + 1)})
        for folder in [top] + [f"{top}/{f}" for f in folders]:
            info = tarfile.TarInfo(folder)
            info.type, info.mode, info.mtime = tarfile.DIRTYPE, 0o755, 1700000000
            tar.addfile(info)
        for name, text in sorted(files.items()):
            data = text.encode()
            info = tarfile.TarInfo(f"{top}/{name}")
            info.size, info.mode, info.mtime = len(data), 0o644, 1700000000
            tar.addfile(info, io.BytesIO(data))
    raw = lzma.compress(buf.getvalue())
    path.write_bytes(raw)
    return hashlib.sha256(raw).hexdigest()


def project(root, patches, own_patch=True):
    """greet with the Debian tarball as its second source and `patches` as its
    debian_patches; its own patch (recipes/patches/after.patch) edits what the Debian
    patch wrote, so it applies only after it."""
    proj = FixtureProject(root)
    sha = debian_tarball(proj.served / DEB, DEBIAN)
    extra = {}
    if own_patch:
        (proj.root / "recipes" / "patches").mkdir()
        (proj.root / "recipes" / "patches" / "after.patch").write_text(
            diff("message.txt", "hello, fixed", "hello, fixed, then patched by the recipe"))
        extra["patches"] = ["patches/after.patch"]
    proj.add_package("greet", "1.0", GREET, **extra)
    recipe = dict(proj.recipes["greet"])
    recipe["sources"] = recipe["sources"] + [{"file": DEB, "sha256": sha,
                                              "urls": [f"{proj.base_url}/{DEB}"],
                                              "extract": False, "dest": "debian-src"}]
    recipe["debian_patches"] = {"source": DEB, "patches": patches}
    proj.write_recipe(recipe)
    proj.add_distribution("demo", ["greet"])
    proj.write_config()
    return proj


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    proj = project(tmp_path_factory.mktemp("debpatches"), [{"name": FIX, "cves": CVES}])
    run = run_doit(proj.root / "config.yaml", "legal:demo", check=True)
    return proj, run


def test_named_patch_is_applied_in_order_and_logged(built):
    proj, run = built
    tree = proj.cache / "stage/demo/greet/tree/share/greet"
    assert (tree / "message.txt").read_text() == "hello, fixed, then patched by the recipe\n"
    assert (tree / "notes.txt").read_text() == "notes\n"     # other.patch is not named
    log = (proj.cache / "logs/demo/greet.log").read_text()
    line = f">>> debian patch {FIX} ({', '.join(CVES)})"
    assert line in log and log.index(line) < log.index(">>> patch after.patch")
    assert "other.patch" not in log
    again = run_doit(proj.root / "config.yaml", "legal:demo", check=True)
    assert again.ran() == [] and again.ran("legal:") == []


def test_manifests_record_the_patches_and_their_cves(built):
    proj, _ = built
    want = [{"name": FIX, "cves": CVES, "source": DEB}]
    own = json.loads((proj.cache / "stage/demo/greet/manifest.json").read_text())
    assert own["debian_patches"] == want
    assembled = json.loads((proj.cache / "stage/demo.manifest.json").read_text())
    (comp,) = assembled["components"]
    assert comp["debian_patches"] == want


def test_sbom_lists_pedigree_patches_and_resolved_vulnerabilities(built):
    from cyclonedx.schema import SchemaVersion
    from cyclonedx.validation.json import JsonStrictValidator
    proj, _ = built
    text = (proj.cache / "images/demo-1.0.cdx.json").read_text()
    validator = JsonStrictValidator(SchemaVersion.V1_6)
    assert validator.validate_str(text) is None
    sbom = json.loads(text)
    (comp,) = [c for c in sbom["components"] if c["name"] == "greet"]
    (patch,) = comp["pedigree"]["patches"]
    assert patch["type"] == "backport"
    assert patch["diff"]["url"] == f"{proj.base_url}/{DEB}#{FIX}"
    assert [(r["type"], r["id"], r["source"]["name"]) for r in patch["resolves"]] == \
        [("security", cve, "NVD") for cve in CVES]
    props = {p["name"]: p["value"] for p in comp["properties"]}
    assert props["dappdeps:debian-patch"].startswith(f"{FIX} of {DEB}@sha256:")
    vulns = sorted(sbom["vulnerabilities"], key=lambda v: v["id"])
    assert [v["id"] for v in vulns] == CVES
    for v in vulns:
        assert v["source"] == {"name": "NVD", "url": f"https://nvd.nist.gov/vuln/detail/{v['id']}"}
        assert v["affects"] == [{"ref": comp["bom-ref"]}]
        assert v["analysis"] == {"state": "resolved",
                                 "detail": f"fixed by Debian patch {FIX} applied in the build"}
    # the schema does check this part: a state it does not know is an error
    vulns[0]["analysis"]["state"] = "fixed-somehow"
    assert validator.validate_str(json.dumps(sbom)) is not None


def test_a_patch_missing_from_the_tarball_fails_naming_it(tmp_path):
    missing = "debian/patches/no-such.patch"
    proj = project(tmp_path, [{"name": FIX, "cves": CVES}, {"name": missing}])
    run = run_doit(proj.root / "config.yaml", "build:demo/greet")
    assert run.returncode != 0
    assert f"the Debian patch {missing} is not a file of {DEB}" in run.text
    assert "debian_patches.patches[1].name" in run.text
    assert not (proj.cache / "stage/demo/greet/key.json").exists()


def test_a_patch_that_does_not_apply_fails_naming_it(tmp_path):
    proj = project(tmp_path, [{"name": FIX}, {"name": STALE, "cves": ["CVE-2023-4911"]}])
    run = run_doit(proj.root / "config.yaml", "build:demo/greet")
    assert run.returncode != 0
    assert f"!!! debian patch {STALE} of {DEB} does not apply" in run.text      # the log's tail
    # and doit's summary of the failure
    assert f"debian patch {STALE} of {DEB} does not apply (recipe field 'debian_patches'" in run.out
    assert not (proj.cache / "stage/demo/greet/key.json").exists()


# ---- loading ------------------------------------------------------------------------------
BAD = [
    ({"source": DEB, "patches": [{"name": FIX, "cves": ["CVE-24-1"]}]}, "patches[0].cves[0]", "not a CVE ID"),
    ({"source": DEB, "patches": [{"name": FIX, "cves": ["cve-2024-0001"]}]}, "cves[0]", "not a CVE ID"),
    ({"source": DEB, "patches": [{"name": FIX, "cves": [CVES[0], CVES[0]]}]}, "patches[0].cves", "twice"),
    ({"source": DEB, "patches": [{"name": "debian/rules"}]}, "patches[0].name", "not under debian/patches/"),
    ({"source": DEB, "patches": [{"name": "debian/patches/../../etc/x"}]}, "patches[0].name", "not a relative path"),
    ({"source": DEB, "patches": [{"name": "/debian/patches/x"}]}, "patches[0].name", "not a relative path"),
    ({"source": DEB, "patches": [{"name": FIX}, {"name": FIX}]}, "patches[1].name", "twice"),
    ({"source": DEB, "patches": [{"cves": CVES}]}, "patches[0].name", "missing"),
    ({"source": DEB, "patches": [{"name": FIX, "cve": CVES}]}, "patches[0].cve", "unknown key"),
    ({"source": DEB, "patches": []}, "debian_patches.patches", "lists no patches"),
    ({"patches": [{"name": FIX}]}, "debian_patches.source", "is missing"),
    ({"source": "other_1.debian.tar.xz", "patches": [{"name": FIX}]}, "debian_patches.source",
     "not one of the recipe's sources"),
    ({"source": "greet-1.0.tar.gz", "patches": [{"name": FIX}]}, "debian_patches.source",
     "not the first source"),
    ({"source": "a/b.tar.xz", "patches": [{"name": FIX}]}, "debian_patches.source", "plain file name"),
]


@pytest.mark.parametrize("spec,field,words", BAD)
def test_the_field_is_checked_when_loading(tmp_path, monkeypatch, spec, field, words):
    from tasks.model.config import load_config
    proj = project(tmp_path, [{"name": FIX}], own_patch=False)
    recipe = dict(proj.recipes["greet"], debian_patches=spec)
    proj.write_recipe(recipe)
    monkeypatch.setenv("DAPPDEPS_CONFIG", str(proj.root / "config.yaml"))
    with pytest.raises(UserError) as info:
        load_config()
    text = info.value.render()
    assert "greet.yaml" in text and field in text and words in text, text


def test_the_debian_source_must_not_be_unpacked_over_the_tree(tmp_path, monkeypatch):
    from tasks.model.config import load_config
    proj = project(tmp_path, [{"name": FIX}], own_patch=False)
    recipe = dict(proj.recipes["greet"])
    recipe["sources"] = [recipe["sources"][0], dict(recipe["sources"][1], extract=True, dest="")]
    proj.write_recipe(recipe)
    monkeypatch.setenv("DAPPDEPS_CONFIG", str(proj.root / "config.yaml"))
    with pytest.raises(UserError, match="extract: false or its own dest"):
        load_config()


# ---- the rendered script ------------------------------------------------------------------
# A recipe without debian_patches, rendered by the code before this feature (commit
# f56cbba): the feature must not change its script, so neither its key.
GOLDEN = """\
set -euo pipefail
cd "$SRCDIR"
export FOO="bar $PREFIX \\"q\\""
(cd "$SRCDIR"
sed -i s/a/b/ Makefile
)
(cd "$SRCDIR"/gmp
rm -f doc/Makefile.in
)
echo '>>> patch fix-1.patch'
patch -p1 --forward --batch -i /dappdeps/patches/000-fix-1.patch
cd "$SRCDIR"
autoreconf -fi
cd "$BUILDDIR"
echo '>>> configure'
"$SRCDIR/configure" --prefix="$PREFIX" "--disable-nls" "CFLAGS=-O2 -g"
echo '>>> make'
make -j"$JOBS" "V=1"
echo '>>> install'
make "DESTDIR=" install
cd "$BUILDDIR"
echo '>>> post_install'
rm -f $PREFIX/lib/*.la
"""


def golden_recipe(tmp_path, monkeypatch, **extra):
    from tasks.build.key import obtained
    from tasks.model.component import Component
    from tasks.model.config import load_config
    proj = FixtureProject(tmp_path, base_url="http://127.0.0.1:9")
    (proj.root / "recipes/patches").mkdir()
    (proj.root / "recipes/patches/fix-1.patch").write_text("")
    proj.write_recipe(dict({
        "name": "zlib", "version": "1.3", "description": "d", "license": "Zlib",
        "environment": {"FOO": 'bar $PREFIX "q"'},
        "sources": [{"file": "zlib-1.3.tar.xz", "sha256": "a" * 64, "urls": ["http://127.0.0.1:9/z"],
                     "fixup": "sed -i s/a/b/ Makefile\n"},
                    {"file": "gmp-6.tar.xz", "sha256": "b" * 64, "urls": ["http://127.0.0.1:9/g"],
                     "dest": "gmp", "fixup": "rm -f doc/Makefile.in\n"},
                    {"file": "extra_1.debian.tar.xz", "sha256": "c" * 64, "urls": ["debian:zlib"],
                     "extract": False, "dest": "debian-src"}],
        "patches": ["patches/fix-1.patch"],
        "configure": ["--disable-nls", "CFLAGS=-O2 -g"], "make": ["V=1"], "install": ["DESTDIR="],
        "pre_configure": "autoreconf -fi\n", "post_install": "rm -f $PREFIX/lib/*.la\n"}, **extra))
    proj.add_distribution("base", ["zlib"], version="0.1.0")
    proj.write_config()
    monkeypatch.setenv("DAPPDEPS_CONFIG", str(proj.root / "config.yaml"))
    comp = Component(load_config(), "base", "zlib")
    return comp, comp.script(obtained(comp))


def test_a_recipe_without_the_field_renders_the_same_script_as_before(tmp_path, monkeypatch):
    _, script = golden_recipe(tmp_path, monkeypatch)
    assert script == GOLDEN


def test_debian_patches_come_after_the_fixups_and_before_the_recipes_patches(tmp_path, monkeypatch):
    comp, script = golden_recipe(tmp_path, monkeypatch, debian_patches={
        "source": "extra_1.debian.tar.xz",
        "patches": [{"name": "debian/patches/any/git-updates.diff", "cves": ["CVE-2023-4911"]},
                    {"name": "debian/patches/local/no-cve.diff"}]})
    added = (
        "echo '>>> debian patch debian/patches/any/git-updates.diff (CVE-2023-4911)'\n"
        "patch -p1 --forward --batch -i /dappdeps/patches/debian/000-git-updates.diff || "
        "{ echo '!!! debian patch debian/patches/any/git-updates.diff of extra_1.debian.tar.xz "
        "does not apply' >&2; exit 1; }\n"
        "echo '>>> debian patch debian/patches/local/no-cve.diff'\n"
        "patch -p1 --forward --batch -i /dappdeps/patches/debian/001-no-cve.diff || "
        "{ echo '!!! debian patch debian/patches/local/no-cve.diff of extra_1.debian.tar.xz "
        "does not apply' >&2; exit 1; }\n")
    at = GOLDEN.index("echo '>>> patch fix-1.patch'")
    assert script == GOLDEN[:at] + added + GOLDEN[at:]
    # the key holds the script (names, order, CVEs) and the tarball by sha256
    from tasks.build.key import component_key
    inputs = component_key(comp).inputs
    assert added in inputs["script"]
    assert {"sha256": "c" * 64, "dest": "debian-src", "inner": None, "extract": False,
            "file": "extra_1.debian.tar.xz"} in inputs["sources"]


# ---- taking the files out of the tarball --------------------------------------------------
def test_only_regular_files_are_taken_out_of_the_tarball(tmp_path):
    arc = tmp_path / "x.debian.tar.xz"
    with tarfile.open(arc, "w:xz") as tar:
        for name, kind, target in (("debian/patches/real.patch", "file", ""),
                                   ("debian/patches/link.patch", "sym", "real.patch"),
                                   ("debian/patches/hard.patch", "hard", "debian/patches/real.patch"),
                                   ("debian/up", "sym", "patches"),
                                   ("debian/patches/dir.patch", "dir", "")):
            info = tarfile.TarInfo(name)
            if kind == "file":
                info.size = 4
                tar.addfile(info, io.BytesIO(b"x y\n"))
                continue
            info.type = {"sym": tarfile.SYMTYPE, "hard": tarfile.LNKTYPE, "dir": tarfile.DIRTYPE}[kind]
            info.linkname = target
            tar.addfile(info)
    work = tmp_path / "work"
    work.mkdir()
    names = ["debian/patches/real.patch", "debian/patches/link.patch", "debian/up/real.patch",
             "debian/patches/dir.patch", "debian/patches/absent.patch", "debian/patches/hard.patch"]
    missing = extract_files(arc, [(n, work / f"{i}.out") for i, n in enumerate(names)], work)
    assert missing == names[1:5]
    assert (work / "0.out").read_text() == "x y\n" and (work / "5.out").read_text() == "x y\n"
    assert sorted(p.name for p in work.iterdir()) == ["0.out", "5.out"]   # no scratch left


def test_a_hostile_tarball_is_refused_whole(tmp_path):
    arc = tmp_path / "x.debian.tar.xz"
    with tarfile.open(arc, "w:xz") as tar:
        info = tarfile.TarInfo("debian/patches/../../../escape.patch")
        info.size = 2
        tar.addfile(info, io.BytesIO(b"x\n"))
    work = tmp_path / "work"
    work.mkdir()
    with pytest.raises(UserError, match="has a '..' part"):
        extract_files(arc, [("debian/patches/x.patch", work / "out")], work)
    assert list(work.iterdir()) == [] and not (tmp_path / "escape.patch").exists()
