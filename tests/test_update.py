"""`bin/nightly --update` (issue 15, point 4; docs/nightly.md "Updates"): against a fixture
Debian archive read by the real apt on 127.0.0.1, with fixture recipes built for real
through bwrap: a patch release found in bookworm-security is downloaded, verified, written
into the recipe (comments kept), built, checked, tested, kept and committed on a branch of
the fixture git repository; a bump whose new source does not build is refused with the
recipe byte for byte as before and the old output still in place; a major release is not
attempted; uncommitted recipes refuse the step; the report (JSON schema, Markdown, HTML)
says it all. Plus the pieces: release kinds, the line edit, PyPI's JSON API."""
import hashlib
import json
import shutil
import subprocess
import textwrap
from datetime import datetime, timezone
from types import SimpleNamespace

import jsonschema
import pytest

from conftest import run_doit
from fixtures import FixtureProject, make_tarball
from httpfixture import HttpFixture
from test_debian import make_etc
from test_nightly import NO_ENGINE, check_html, nightly
from test_outdated import FixtureArchive, _tar_xz

import tasks.sources.outdated as outdated
from tasks.model.config import load_config
from tasks.model.recipes import load_recipes
from tasks.nightly import update
from tasks.nightly.recipetext import Refused, edit_text, expected, new_sources
from tasks.report import schema
from tasks.report.htmlpage import render_html
from tasks.report.markdown import render_markdown

pytestmark = pytest.mark.skipif(shutil.which("apt-get") is None or shutil.which("git") is None,
                                reason="needs apt and git")
CVE = "CVE-2026-1111"


def program(name, version, fail=None):
    """A static C program printing its name and version; its Makefile's `all` (fail="build")
    or `check` (fail="test") fails when asked."""
    return {
        "main.c": f'#include <stdio.h>\nint main(void) {{ puts("{name} {version}"); return 0; }}\n',
        "Makefile": ("all:\n\t@echo this release does not build; exit 1\n" if fail == "build" else
                     f"all: {name}\n{name}: main.c\n\t$(CC) -static -o $@ main.c\n")
                    + f"install:\n\tmkdir -p $(PREFIX)/bin\n\tcp {name} $(PREFIX)/bin/\n"
                    + f"check:\n\t./{name} | grep -qx '{name} {version}'" + (" && false" if fail == "test" else "")
                    + "\n"}


def changelog(package, entries):
    return "".join(f"{package} ({v}) {suite}; urgency=medium\n\n  * {text}\n\n"
                   f" -- T <t@example.org>  Mon, 01 Jan 2024 00:00:00 +0000\n\n"
                   for v, suite, text in entries)


def tarball(folder, name, top, files):
    sha = make_tarball(folder / name, top, files)
    return (folder / name).read_bytes(), sha


RECIPE = """\
name: {name}
version: "{version}"       # the release we ship
description: test package {name}
license: MIT
sources:
  # {upstream}
  - file: {first}
    sha256: {sha}
    urls: [{url}]
{alternatives}build: make
make: [PREFIX=$PREFIX]
install: [PREFIX=$PREFIX]
test: make check
smoke: [{name}]
"""

ALTERNATIVES = """\
    alternatives:
      - file: {orig}      # Debian's, byte-identical
        sha256: {sha}
        urls: ["debian:{name}"]
"""


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """foo 1.0 (upstream first, Debian's orig as alternative): bookworm-security has 1.0.1
    fixing a CVE. bar 2.0 (Debian's orig only): 2.0.1 does not build. baz 1.0: Debian has
    2.0, a major release. qux 3.0: 3.0.1 builds but fails its test suite."""
    root = tmp_path_factory.mktemp("update")
    proj = FixtureProject(root)
    archive = FixtureArchive(proj.served)
    scratch = root / "scratch"
    scratch.mkdir()
    (proj.served / "releases").mkdir()
    recipes = {}
    for name, old, new, fail in (("foo", "1.0", "1.0.1", None), ("bar", "2.0", "2.0.1", "build"),
                                 ("baz", "1.0", "2.0", None), ("qux", "3.0", "3.0.1", "test")):
        for version, suite, archive_name in ((old, "bookworm", "debian"),
                                             (new, "bookworm-security", "debian-security")):
            data, sha = tarball(scratch, f"{name}_{version}.orig.tar.gz", f"{name}-{version}",
                                program(name, version, fail if version == new else None))
            log = changelog(name, [(f"{new}-1", "bookworm-security", f"New upstream release; fixes {CVE}."),
                                   (f"{old}-1", "bookworm", "Initial release (CVE-2020-0001).")])
            if version == old:
                log = log.split("\n\n", 3)[-1]
            archive.add(archive_name, suite, name, f"{version}-1", {
                f"{name}_{version}-1.dsc": b"Format: 3.0 (quilt)\n", f"{name}_{version}.orig.tar.gz": data,
                f"{name}_{version}-1.debian.tar.xz": _tar_xz({"debian/changelog": log})})
            if name == "foo":                         # upstream serves the same bytes
                (proj.served / "releases" / f"foo-{version}.tar.gz").write_bytes(data)
            if version == old:
                recipes[name] = sha
    archive.write()
    url = proj.base_url
    texts = {
        "foo": RECIPE.format(name="foo", version="1.0", upstream="upstream first", first="foo-1.0.tar.gz",
                             sha=recipes["foo"], url=f"{url}/releases/foo-1.0.tar.gz",
                             alternatives=ALTERNATIVES.format(orig="foo_1.0.orig.tar.gz", sha=recipes["foo"],
                                                              name="foo")),
        "bar": RECIPE.format(name="bar", version="2.0", upstream="Debian's orig only", first="bar_2.0.orig.tar.gz",
                             sha=recipes["bar"], url='"debian:bar"', alternatives=""),
        "baz": RECIPE.format(name="baz", version="1.0", upstream="Debian's orig only", first="baz_1.0.orig.tar.gz",
                             sha=recipes["baz"], url='"debian:baz"', alternatives=""),
        "qux": RECIPE.format(name="qux", version="3.0", upstream="Debian's orig only", first="qux_3.0.orig.tar.gz",
                             sha=recipes["qux"], url='"debian:qux"', alternatives=""),
    }
    for name, text in texts.items():
        (root / "recipes" / f"{name}.yaml").write_text(text)
    proj.add_distribution("demo", ["foo", "bar", "baz", "qux"])
    config = proj.write_config(debian={"suites": ["bookworm", "bookworm-security"]})
    etc = make_etc(root, sources_list=f"deb [trusted=yes] {url}/debian bookworm main\n"
                                      f"deb [trusted=yes] {url}/debian-security bookworm-security main\n",
                   parts={})
    git = lambda *args: subprocess.run(["git", "-C", str(root), *args], check=True, capture_output=True,  # noqa: E731
                                       text=True).stdout
    git("init", "-q", "-b", "main")
    git("add", "recipes", "config.yaml")
    git("-c", "user.name=T", "-c", "user.email=t@example.org", "commit", "-q", "-m", "recipes")
    return SimpleNamespace(root=root, proj=proj, config=config, etc=etc, git=git, texts=texts, shas=recipes)


@pytest.fixture(scope="module")
def updated(world):
    """The old recipes built by a plain doit, then `bin/nightly --update`."""
    with pytest.MonkeyPatch.context() as mp:           # for the children: doit and bin/nightly
        mp.setenv("DAPPDEPS_APT_ETC", str(world.etc))
        mp.setenv("DOCKER_HOST", NO_ENGINE)             # load: says "no engine", loads nothing
        run_doit(world.config, check=True, timeout=600)
        stage = world.proj.cache / "stage" / "demo"
        before = {n: (stage / n / "key.json").read_bytes() for n in ("foo", "bar", "baz", "qux")}
        head = world.git("rev-parse", "HEAD").strip()
        run = nightly(world.config, "--update", timeout=900)
    report_dir = (world.proj.cache / "reports" / "latest").resolve()
    doc = json.loads((report_dir / "report.json").read_text())
    return SimpleNamespace(run=run, doc=doc, dir=report_dir, before=before, head=head, stage=stage)


def test_an_update_within_policy_is_bumped_built_kept_and_committed(world, updated):
    assert updated.run.returncode == 0, updated.run.text[-3000:]
    up = updated.doc["updates"]
    assert up["policy"] == "patch" and up["error"] is None
    [bump] = up["bumped"]
    assert (bump["recipe"], bump["from"], bump["to"], bump["cves"]) == ("foo", "1.0", "1.0.1", [CVE])
    assert bump["files"] == ["foo-1.0.1.tar.gz", "foo_1.0.1.orig.tar.gz"]
    assert bump["tasks"] == ["build:demo/foo", "check:demo", "test:demo/foo"]
    assert "check-images skipped: checks.images is empty" in bump["notes"]
    # the recipe: new version, files, sha256 and URL; comments and layout as they were
    text = (world.root / "recipes/foo.yaml").read_text()
    sha = hashlib.sha256((world.proj.cache / "downloads/foo_1.0.1.orig.tar.gz").read_bytes()).hexdigest()
    assert text == (world.texts["foo"].replace('"1.0"', '"1.0.1"').replace("foo-1.0.tar.gz", "foo-1.0.1.tar.gz")
                    .replace("foo_1.0.orig", "foo_1.0.1.orig")
                    .replace(world.shas["foo"], sha))
    assert text.count(sha) == 2 and "# the release we ship" in text and "# Debian's, byte-identical" in text
    # built and kept: the output is the new release's
    out = subprocess.run([str(updated.stage / "foo/tree/bin/foo")], capture_output=True, text=True).stdout
    assert out == "foo 1.0.1\n"
    assert json.loads((world.proj.cache / "tests/demo/foo.json").read_text())["passed"] is True
    # committed on the branch, one commit; HEAD, its branch and the index untouched
    branch = f"dappdeps/updates-{datetime.now(timezone.utc):%Y-%m-%d}"
    assert up["branch"] == bump["branch"] == branch and len(bump["commit"]) == 40
    assert world.git("rev-parse", branch).strip() == bump["commit"]
    assert world.git("rev-parse", f"{branch}^").strip() == updated.head
    assert world.git("rev-parse", "HEAD").strip() == updated.head
    assert world.git("symbolic-ref", "--short", "HEAD").strip() == "main"
    assert world.git("show", f"{branch}:recipes/foo.yaml") == text
    assert world.git("show", "main:recipes/foo.yaml") == world.texts["foo"]
    assert world.git("diff", "--name-only", f"main..{branch}").split() == ["recipes/foo.yaml"]
    assert world.git("log", "-1", "--format=%B", branch).startswith(f"foo: 1.0 -> 1.0.1\n\nFixes {CVE}.")
    assert world.git("status", "--porcelain", "recipes").splitlines() == [" M recipes/foo.yaml"]
    assert world.git("diff", "--cached", "--name-only") == ""
    # the nightly that followed built nothing more of foo
    tasks = {t["name"]: t["status"] for t in updated.doc["tasks"]}
    assert tasks["build:demo/foo"] == "up-to-date"


def test_a_bump_that_does_not_build_is_refused_and_the_old_recipe_kept(world, updated):
    refused = {r["recipe"]: r for r in updated.doc["updates"]["refused"]}
    bar = refused["bar"]
    assert (bar["from"], bar["to"], bar["attempted"]) == ("2.0", "2.0.1", True)
    assert bar["why"].startswith("build:demo/bar: build failed (exit status 2); the recipe is as before")
    assert "this release does not build" in (world.root / bar["log"]).read_text()
    assert (world.root / "recipes/bar.yaml").read_text() == world.texts["bar"]
    # the failed build published nothing: the old output and key are the component's
    assert (updated.stage / "bar/key.json").read_bytes() == updated.before["bar"]
    out = subprocess.run([str(updated.stage / "bar/tree/bin/bar")], capture_output=True, text=True).stdout
    assert out == "bar 2.0\n"
    tasks = {t["name"]: t["status"] for t in updated.doc["tasks"]}
    assert tasks["build:demo/bar"] == "up-to-date"


def test_a_bump_whose_tests_fail_is_refused_and_the_old_release_rebuilt(world, updated):
    qux = {r["recipe"]: r for r in updated.doc["updates"]["refused"]}["qux"]
    assert qux["why"].startswith("test:demo/qux") and "the recipe is as before" in qux["why"]
    assert (world.root / "recipes/qux.yaml").read_text() == world.texts["qux"]
    # its new output had replaced the old one: the nightly that followed built the old again
    tasks = {t["name"]: t for t in updated.doc["tasks"]}
    assert tasks["build:demo/qux"]["status"] == "ran"
    out = subprocess.run([str(updated.stage / "qux/tree/bin/qux")], capture_output=True, text=True).stdout
    assert out == "qux 3.0\n"
    key = lambda raw: {k: v for k, v in json.loads(raw).items() if k != "seconds"}    # noqa: E731
    assert key((updated.stage / "qux/key.json").read_bytes()) == key(updated.before["qux"])


def test_a_major_release_is_not_attempted(world, updated):
    baz = {r["recipe"]: r for r in updated.doc["updates"]["refused"]}["baz"]
    assert baz["attempted"] is False and baz["to"] == "2.0"
    assert baz["why"] == "not attempted: 1.0 -> 2.0 is a major release, outside policy patch"
    assert (world.root / "recipes/baz.yaml").read_text() == world.texts["baz"]
    assert (updated.stage / "baz/key.json").read_bytes() == updated.before["baz"]


def test_the_report_says_it(world, updated):
    jsonschema.validate(updated.doc, schema.REPORT_SCHEMA, format_checker=jsonschema.FormatChecker())
    md = (updated.dir / "report.md").read_text()
    assert "## Updates" in md and f"| foo | 1.0 → 1.0.1 | {CVE} |" in md
    assert "| bar | 2.0 → 2.0.1 | build:demo/bar: build failed (exit status 2); the recipe is as before" in md
    assert "| baz | 1.0 → 2.0 | not attempted: 1.0 -> 2.0 is a major release, outside policy patch |" in md
    page = check_html(updated.dir / "report.html")
    assert "Updates" in page.all_text and "dappdeps/updates-" in page.all_text
    bad = dict(updated.doc, updates=dict(updated.doc["updates"], surprise=1))
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(bad, schema.REPORT_SCHEMA)
    schema.validate(dict(updated.doc, updates=None))
    assert "## Updates" not in render_markdown(dict(updated.doc, updates=None))
    assert "Updates" not in render_html(dict(updated.doc, updates=None), updated.dir)


def test_uncommitted_recipes_refuse_the_step(tmp_path):
    proj = FixtureProject(tmp_path, base_url="http://127.0.0.1:9")
    proj.add_package("qux", "1.0", {"Makefile": "all:\ninstall:\n"})
    proj.add_distribution("demo", ["qux"])
    proj.write_config()
    run = lambda *a: subprocess.run(["git", "-C", str(tmp_path), *a], check=True, capture_output=True)  # noqa: E731
    run("init", "-q", "-b", "main")
    run("add", "recipes")
    run("-c", "user.name=T", "-c", "user.email=t@example.org", "commit", "-q", "-m", "r")
    path = tmp_path / "recipes/qux.yaml"
    path.write_text(path.read_text() + "# my edit\n")
    before = path.read_bytes()
    doc = {}
    cfg = load_config(tmp_path)
    assert update.run(cfg, doc) is cfg
    assert doc["error"].startswith("refused: the recipes folder has uncommitted changes (recipes/qux.yaml)")
    assert doc["bumped"] == doc["refused"] == [] and doc["branch"] is None
    assert path.read_bytes() == before
    assert subprocess.run(["git", "-C", str(tmp_path), "branch", "--list"], capture_output=True,
                          text=True).stdout.split() == ["*", "main"]


# ---------------------------------------------------------------- the pieces

@pytest.mark.parametrize("old, new, kind", [
    ("1.2.3", "1.2.4", "patch"), ("5.2.15", "5.2.37", "patch"), ("1.9.13p3", "1.9.13p4", "patch"),
    ("2.36", "2.36.1", "patch"), ("4.9", "4.10", "minor"), ("2.39.5", "2.47.3", "minor"),
    ("1.4", "2.0", "major"), ("3.0", "3.0", None), ("2024a", "2024b", "major")])
def test_release_kinds(old, new, kind):
    assert update.release_kind(old, new) == kind


TEXT = textwrap.dedent("""\
    name: x
    version: '1.2.3'   # shipped
    description: x
    license: MIT
    purl: pkg:generic/x@1.2.3
    sources:
      - file: x-1.2.3.tar.gz        # upstream; the sha256 below is Debian's too
        sha256: {a}
        urls:
          - https://example.org/x/v1.2.3/x-1.2.3.tar.gz   # tags are named v1.2.3
        alternatives:
          - file: "x_1.2.3.orig.tar.gz"
            sha256: {a}
            urls: ["debian:xx"]
      - file: extra-1.2.3-data.tar.gz    # another source: not touched
        sha256: {b}
        urls: [https://example.org/extra-1.2.3-data.tar.gz]
    build: make
    """).format(a="a" * 64, b="b" * 64)
ALT = """\
      - file: "x_1.2.3.orig.tar.gz"
        sha256: %s
        urls: ["debian:xx"]
""" % ("a" * 64)


def _recipe(tmp_path, text):
    (tmp_path / "recipes").mkdir(exist_ok=True)
    (tmp_path / "recipes/x.yaml").write_text(text)
    return load_recipes(tmp_path / "recipes")["x"]


def test_the_line_edit_keeps_everything_else(tmp_path):
    recipe = _recipe(tmp_path, TEXT)
    plan = {"version": "1.2.4", "orig": ("x_1.2.4.orig.tar.gz", "c" * 64, "debian:xx"), "debian_tar": None}
    changes, confirm = new_sources(recipe, plan)
    assert confirm == [(0, 0)] and changes[(0, 0)].urls == ("https://example.org/x/v1.2.4/x-1.2.4.tar.gz",)
    text = edit_text(TEXT, recipe, plan, changes)
    assert text == (TEXT.replace("1.2.3", "1.2.4").replace("a" * 64, "c" * 64)
                    .replace("extra-1.2.4", "extra-1.2.3").replace("tags are named v1.2.4", "tags are named v1.2.3"))
    assert _recipe(tmp_path, text).data == expected(recipe, plan, changes)
    # an upstream file pinned apart from Debian's orig has no published sha256: refused
    apart = _recipe(tmp_path, TEXT.replace(f"sha256: {'a' * 64}\n    urls:", f"sha256: {'d' * 64}\n    urls:"))
    with pytest.raises(Refused, match="pinned apart from x_1.2.3.orig.tar.gz"):
        new_sources(apart, plan)
    # a value that is not on a line of its own: refused, not guessed
    flow = TEXT.replace(ALT, '      - {file: x_1.2.3.orig.tar.gz, sha256: %s, urls: ["debian:xx"]}\n' % ("a" * 64))
    assert flow != TEXT and _recipe(tmp_path, flow).data == recipe.data
    with pytest.raises(Refused, match="not one `file: x_1.2.3.orig.tar.gz` line"):
        edit_text(flow, recipe, plan, changes)


def test_pypi_candidates_come_with_their_sha256(tmp_path, monkeypatch):
    files = lambda v, **extra: [dict({"filename": f"pkg_x-{v}-py3-none-any.whl", "url": f"https://h/pkg_x-{v}.whl",  # noqa: E731
                                      "digests": {"sha256": hashlib.sha256(v.encode()).hexdigest()}}, **extra)]
    releases = {"1.0.0": files("1.0.0"), "1.0.7": files("1.0.7"), "1.0.9": files("1.0.9", yanked=True),
                "1.1.0": files("1.1.0"), "1.0.8rc1": files("1.0.8rc1"), "2.0.0": files("2.0.0")}
    with HttpFixture() as server:
        server.add("pypi/pkg-x/json", json.dumps({"info": {"version": "2.0.0"}, "releases": releases}).encode())
        monkeypatch.setattr(outdated, "PYPI_URL", f"{server.url}/pypi")
        recipe = SimpleNamespace(name="pkg-x", version="1.0.0", sources=[SimpleNamespace(alternatives=[
            SimpleNamespace(file="pkg_x-1.0.0-py3-none-any.whl", urls=("https://files.pythonhosted.org/p/a.whl",))])])
        plan = update.pypi_plan(recipe, [], "patch", (2, 2))
        assert (plan["to"], plan["where"]) == ("1.0.7", "PyPI")
        assert plan["pypi"] == ("pkg_x-1.0.0-py3-none-any.whl", "pkg_x-1.0.7-py3-none-any.whl",
                                hashlib.sha256(b"1.0.7").hexdigest(), "https://h/pkg_x-1.0.7.whl")
        assert update.pypi_plan(recipe, [], "minor", (2, 2))["to"] == "1.1.0"
        with pytest.raises(Refused, match=r"1.0.0 -> 2.0.0 is a major release, outside policy security"):
            update.pypi_plan(recipe, [], "security", (2, 2))


PATCHED = textwrap.dedent("""\
    name: xx
    version: "1.0"
    description: x
    license: MIT
    sources:
      - file: xx_1.0.orig.tar.gz
        sha256: {a}
        urls: ["debian:xx"]
      - file: xx_1.0-1.debian.tar.xz     # the revision the patches come from
        sha256: {b}
        urls: ["debian:xx"]
        extract: false
    debian_patches:
      source: xx_1.0-1.debian.tar.xz
      patches:
        - name: debian/patches/fix.patch
          cves: [CVE-2026-0001]
    build: make
    """).format(a="a" * 64, b="b" * 64)


class FakeApt:
    """madison and print_uris of a small archive (the real apt is in the end-to-end test)."""
    versions = [("1.0-1", "bookworm"), ("1.0-2", "bookworm-security"), ("1.0.1-1", "trixie")]

    def madison(self, package):
        return self.versions

    def print_uris(self, spec):
        version = spec.split("=")[1]
        up = version.rsplit("-", 1)[0]
        return {f"xx_{version}.dsc": ("http://h/d", 1, "e" * 64),
                f"xx_{up}.orig.tar.gz": ("http://h/o", 1, "a" * 64 if up == "1.0" else "f" * 64),
                f"xx_{version}.debian.tar.xz": ("http://h/t", 1, "c" * 64)}, None


def test_a_newer_debian_revision_bumps_the_debian_patches_tarball(tmp_path, monkeypatch):
    log = changelog("xx", [("1.0.1-1", "trixie", "New upstream release (CVE-2026-3333)."),
                           ("1.0-2", "bookworm-security", "Fix CVE-2026-2222."),
                           ("1.0-1", "bookworm", "Initial release.")])
    monkeypatch.setattr(outdated, "debian_changelog", lambda apt, pkg, version, cfg: log)
    (tmp_path / "recipes").mkdir()
    (tmp_path / "recipes/xx.yaml").write_text(PATCHED)
    recipe = load_recipes(tmp_path / "recipes")["xx"]
    # security: only the newer revision of the release shipped, for its CVE fixes
    plan = update.debian_plan(FakeApt(), recipe, [], "security", ["bookworm", "bookworm-security"], None)
    assert (plan["from"], plan["to"], plan["version"], plan["cves"]) == ("1.0-1", "1.0-2", "1.0", ["CVE-2026-2222"])
    assert plan["where"] == "Debian 1.0-2 (bookworm-security)"
    changes, confirm = new_sources(recipe, plan)
    assert list(changes) == [(1, 0)] and confirm == []          # the orig is the same file
    text = edit_text(PATCHED, recipe, plan, changes)
    assert text == PATCHED.replace("xx_1.0-1.debian", "xx_1.0-2.debian").replace("b" * 64, "c" * 64)
    (tmp_path / "recipes/xx.yaml").write_text(text)
    assert load_recipes(tmp_path / "recipes")["xx"].data == expected(recipe, plan, changes)
    # patch, with trixie asked too: the new upstream release, with its Debian tarball
    plan = update.debian_plan(FakeApt(), recipe, [], "patch", ["bookworm", "bookworm-security", "trixie"], None)
    assert (plan["from"], plan["to"], plan["cves"]) == ("1.0", "1.0.1", ["CVE-2026-3333", "CVE-2026-2222"])
    assert plan["orig"] == ("xx_1.0.1.orig.tar.gz", "f" * 64, "debian:xx")
    assert plan["debian_tar"] == ("xx_1.0-1.debian.tar.xz", "xx_1.0.1-1.debian.tar.xz", "c" * 64)
    # the revision only: not a bump under security when it fixes no CVE
    monkeypatch.setattr(outdated, "debian_changelog", lambda *a: log.replace("Fix CVE-2026-2222.", "Fix a crash."))
    assert update.debian_plan(FakeApt(), recipe, [], "security", ["bookworm", "bookworm-security"], None) is None


def test_a_stopped_or_failed_try_puts_the_old_bytes_back(tmp_path, monkeypatch):
    proj = FixtureProject(tmp_path, base_url="http://127.0.0.1:9")
    proj.add_package("qux", "1.0", {"Makefile": "all:\ninstall:\n"})
    proj.add_distribution("demo", ["qux"])
    proj.write_config()
    path = tmp_path / "recipes/qux.yaml"
    path.chmod(0o640)
    old = path.read_bytes()
    cfg = load_config(tmp_path)
    plan = {"recipe": "qux", "from": "1.0", "to": "1.0.1", "files": [], "notes": [], "also": [],
            "where": "test", "cves": []}
    monkeypatch.setattr(update, "prepare", lambda cfg, plan: (path, old, old.decode().replace("1.0", "1.0.1")))
    seen = []

    def stopped(cfg, names, log):
        seen.append((cfg.recipes["qux"].version, names, path.read_bytes() != old))
        raise KeyboardInterrupt
    monkeypatch.setattr(update, "child_doit", stopped)
    doc = {"bumped": [], "refused": []}
    with pytest.raises(KeyboardInterrupt):
        update.attempt(cfg, plan, doc)
    assert seen == [("1.0.1", ["build:demo/qux", "check:demo"], True)]
    assert path.read_bytes() == old and path.stat().st_mode & 0o777 == 0o640
    assert doc["refused"] == [{"recipe": "qux", "from": "1.0", "to": "1.0.1", "attempted": True,
                               "why": "interrupted; the recipe is as before"}]
    monkeypatch.setattr(update, "child_doit", lambda cfg, names, log: (1, "check:demo: smoke test failed"))
    assert update.attempt(cfg, plan, doc) == (cfg, False)
    assert path.read_bytes() == old
    assert doc["refused"][-1]["why"].startswith("check:demo: smoke test failed; the recipe is as before; log: ")


@pytest.mark.parametrize("answer, signed, outcome", [
    ("sha256 mismatch for x-1.2.4.tar.gz from https://example.org/...", True, "is not the file published"),
    ("connection failed: [Errno 111] Connection refused (gave up after 1 attempt)", False, "did not answer"),
    ("connection failed: [Errno 111] Connection refused (gave up after 1 attempt)", True, None)])
def test_an_identical_upstream_copy_is_checked_or_vouched_for(tmp_path, monkeypatch, answer, signed, outcome):
    recipe = _recipe(tmp_path, TEXT)
    cfg = SimpleNamespace(recipes={"x": recipe}, recipes_dir=tmp_path / "recipes")

    def fetch(source, cfg, progress=None):
        if source.id.startswith("x-"):
            raise update.FetchError(f"cannot get {source.id}: every location failed. {answer}")
    monkeypatch.setattr(update, "fetch_source", fetch)
    plan = {"recipe": "x", "version": "1.2.4", "orig": ("x_1.2.4.orig.tar.gz", "c" * 64, "debian:xx"),
            "debian_tar": None, "notes": [], "signed": signed}
    if outcome:
        with pytest.raises(Refused, match=outcome):
            update.prepare(cfg, plan)
        return
    path, old, text = update.prepare(cfg, plan)
    assert path == tmp_path / "recipes/x.yaml" and old == TEXT.encode() and "x_1.2.4.orig.tar.gz" in text
    assert plan["notes"] == ["x-1.2.4.tar.gz not checked upstream (no answer); pinned to Debian's orig, "
                             "which carries upstream's signature, as before"]
    assert plan["files"] == ["x-1.2.4.tar.gz", "x_1.2.4.orig.tar.gz"]
