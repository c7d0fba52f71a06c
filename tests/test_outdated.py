"""`doit outdated` (docs/outdated.md): dpkg's version order, the deb-src entries made from
config.yaml's debian.suites, and the whole survey against real servers on 127.0.0.1: a
fixture Debian archive read by the real apt (private state, `[trusted=yes]` host
entries), a fixture PyPI JSON API and fixture upstream listings; then `doit outdated`
end to end and the nightly report's section."""
import dataclasses
import gzip
import hashlib
import io
import json
import lzma
import shutil
import socket
import subprocess
import tarfile
import textwrap
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

from conftest import run_doit
from fixtures import TEST_BUILDROOT
from httpfixture import HttpFixture
from test_debian import make_etc

import tasks.sources.debian as debian
import tasks.sources.outdated as outdated
from tasks.core.errors import UserError
from tasks.model.config import load_config
from tasks.model.configschema import DEBIAN
from tasks.nightly.records import outdated_records
from tasks.report import schema
from tasks.report.htmlpage import render_html
from tasks.report.markdown import render_markdown
from tasks.sources.outdated import changelog_entries, compare, fixes_since, upstream_of
from tasks.stages.outdated import render_table

needs_apt = pytest.mark.skipif(shutil.which("apt-get") is None, reason="needs apt (Debian/Ubuntu)")


# ---------------------------------------------------------------- dpkg's version order

@pytest.mark.parametrize("a, b, order", [
    ("1.0", "1.0", 0), ("1.0", "1.0-0", 0), ("1.0", "1.0-1", -1), ("1.0-1", "1.0-2", -1),
    ("1:0.1", "9.9", 1), ("0:1.0", "1.0", 0), ("2:1.0-1", "1:9.0-9", 1),           # epochs
    ("1.0~rc1", "1.0", -1), ("1.0~rc1", "1.0~rc2", -1), ("1.0~~", "1.0~", -1),     # tilde
    ("1.0-1~bpo12+1", "1.0-1", -1), ("3.0.22-1~deb12u2", "3.0.22-1", -1),
    ("1.0+dfsg-1", "1.0-1", 1), ("6.2.1+dfsg1-1", "6.2.1", 1),                     # repacks
    ("1.2.13.dfsg-1", "1.2.13-1", 1), ("2.36-9+deb12u10", "2.36-9+deb12u4", 1),
    ("1.0a", "1.0", 1), ("1.0.1", "1.0a", 1), ("1.0+", "1.0a", 1), ("10", "9", 1),
    ("1.001", "1.1", 0), ("1.9.13p3-1", "1.9.13p2-5", 1), ("5.2.15-2", "5.2.15-2+b1", -1),
])
def test_debian_version_order(a, b, order):
    got = compare(a, b)
    assert (got > 0) - (got < 0) == order
    assert (compare(b, a) > 0) - (compare(b, a) < 0) == -order


@pytest.mark.skipif(shutil.which("dpkg") is None, reason="needs dpkg")
def test_debian_version_order_agrees_with_dpkg():
    pairs = [("1.0~beta1+dfsg-1", "1.0+dfsg-0~exp1"), ("1:2.36-9", "2.37-1"), ("2.4a-1", "2.4-1.1"),
             ("0.9.8zh-1", "0.9.8zg-2"), ("1.2.3-4+b1", "1.2.3-4.1"), ("7~20200101", "7"),
             ("1.0-1a", "1.0-1+"), ("8.2-1.3", "8.2-1.10")]
    for a, b in pairs:
        lt = subprocess.run(["dpkg", "--compare-versions", a, "lt", b]).returncode == 0
        eq = subprocess.run(["dpkg", "--compare-versions", a, "eq", b]).returncode == 0
        assert (compare(a, b) < 0, compare(a, b) == 0) == (lt, eq), (a, b)


def test_upstream_versions_lose_epoch_revision_and_repack_marks():
    assert upstream_of("1:1.2.13.dfsg-1") == "1.2.13"
    assert upstream_of("6.2.1+dfsg1-1.1") == "6.2.1"
    assert upstream_of("1:4.13+dfsg1-1+deb12u2") == "4.13"
    assert upstream_of("2.36-9+deb12u4") == "2.36"
    assert upstream_of("1.0~rc1.orig-1") == "1.0~rc1"


CHANGELOG = textwrap.dedent("""\
    foo (1.0-3) bookworm-security; urgency=high

      * Fix CVE-2024-1111 (heap overflow) and CVE-2024-2222.

     -- Test Maintainer <t@example.org>  Mon, 01 Jul 2024 00:00:00 +0000

    foo (1.0-2) bookworm; urgency=medium

      * Backport the fix for CVE-2024-0333.
      * Mention CVE-2024-1111 again (listed once).

     -- Test Maintainer <t@example.org>  Mon, 01 Apr 2024 00:00:00 +0000

    foo (1.0-1) unstable; urgency=medium

      * New upstream release; it fixes CVE-2023-9999.

     -- Test Maintainer <t@example.org>  Mon, 01 Jan 2024 00:00:00 +0000

    foo (0.9-2) unstable; urgency=medium

      * Fix CVE-2022-0001.

     -- Test Maintainer <t@example.org>  Mon, 01 Jan 2023 00:00:00 +0000
    """)


def test_changelog_entries_newer_than_the_shipped_version():
    entries = changelog_entries(CHANGELOG)
    assert [v for v, _ in entries] == ["1.0-3", "1.0-2", "1.0-1", "0.9-2"]
    assert entries[1] == ("1.0-2", ["CVE-2024-0333", "CVE-2024-1111"])
    # shipped 1.0: 1.0-1 packaged that release (what it fixes came with it), 0.9-2 is older
    assert fixes_since(entries, "1.0", "1.0-3") == [
        ("1.0-3", ["CVE-2024-1111", "CVE-2024-2222"]), ("1.0-2", ["CVE-2024-0333", "CVE-2024-1111"])]
    # only up to the version asked about
    assert [v for v, _ in fixes_since(entries, "1.0", "1.0-2")] == ["1.0-2"]
    # shipped 0.9: every entry from 1.0-1 on, but not 0.9-2's (the first packaging of 0.9 is
    # not in this changelog at all, so 0.9-2 counts as that first one)
    assert [v for v, _ in fixes_since(entries, "0.9", "1.0-3")] == ["1.0-3", "1.0-2", "1.0-1"]
    # an epoch on Debian's side only
    epoch = [("1:" + v, c) for v, c in entries]
    assert [v for v, _ in fixes_since(epoch, "1.0", "1:1.0-3")] == ["1:1.0-3", "1:1.0-2"]
    # "+really": zlib 1.3.1 is Debian's 1:1.3.dfsg+really1.3.1, which dpkg orders after
    # 1:1.3.dfsg-2 (its CVE fix is older than the release shipped, not newer)
    zlib = [("1:1.3.dfsg+really1.3.1-1+deb13u1", ["CVE-2026-0001"]),
            ("1:1.3.dfsg+really1.3.1-1", []), ("1:1.3.dfsg-2", ["CVE-2023-45853"])]
    assert upstream_of("1:1.3.dfsg+really1.3.1-1") == "1.3.1"
    assert fixes_since(zlib, "1.3.1", "1:1.3.dfsg+really1.3.1-1+deb13u1") == [
        ("1:1.3.dfsg+really1.3.1-1+deb13u1", ["CVE-2026-0001"])]


# ---------------------------------------------------------------- suites -> deb-src

HOST_LIST = "deb [trusted=yes arch=amd64] http://mirror.example/debian bookworm main contrib\n" \
            "deb http://security.example/debian-security bookworm-security main\n"
HOST_DEB822 = textwrap.dedent("""\
    Types: deb
    URIs: http://mirror.example/debian
    Suites: bookworm bookworm-updates
    Components: main
    Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
    """)


def test_suites_are_read_at_the_hosts_mirror_uris(tmp_path):
    etc = make_etc(tmp_path / "a", sources_list=HOST_LIST, parts={})
    one_line, deb822, missing = debian.suites_deb_src(["trixie", "trixie-security"], etc)
    assert one_line == ("deb-src [trusted=yes arch=amd64] http://mirror.example/debian trixie main contrib\n"
                        "deb-src http://security.example/debian-security trixie-security main\n")
    assert deb822 == "" and missing == []
    etc = make_etc(tmp_path / "b", sources_list="", parts={"debian.sources": HOST_DEB822})
    one_line, deb822, missing = debian.suites_deb_src(["trixie", "trixie-updates", "trixie-security"], etc)
    assert one_line == "" and missing == ["trixie-security"]        # no /debian-security here
    assert deb822 == "\n".join(
        f"Types: deb-src\nURIs: http://mirror.example/debian\nSuites: {s}\nComponents: main\n"
        "Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg\n" for s in ("trixie", "trixie-updates"))
    assert debian.host_mirror(etc) == "http://mirror.example/debian"


def test_debian_suites_are_validated():
    assert DEBIAN.validate({}, "config.yaml")["suites"] == ["bookworm", "bookworm-updates", "bookworm-security"]
    for bad, said in [([], "is empty"), (["Trixie"], "is not a Debian suite name"),
                      (["sid", "sid"], "names sid twice"), ("trixie", "expected a list"),
                      (["-o Dir=/tmp"], "is not a Debian suite name")]:
        with pytest.raises(UserError, match=said):
            DEBIAN.validate({"suites": bad}, "config.yaml", "debian")


# ---------------------------------------------------------------- a fixture world on 127.0.0.1

def _tar_xz(members):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:xz") as tar:
        for name, text in members.items():
            data = text.encode()
            info = tarfile.TarInfo(name)
            info.size, info.mtime = len(data), 1700000000
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def _diff_gz(changelog):
    lines = changelog.splitlines(keepends=True)
    body = (f"--- bar-2.0.orig/debian/changelog\n+++ bar-2.0/debian/changelog\n"
            f"@@ -0,0 +1,{len(lines)} @@\n" + "".join("+" + l for l in lines)
            + "--- bar-2.0.orig/debian/rules\n+++ bar-2.0/debian/rules\n@@ -0,0 +1 @@\n"
            "+#!/usr/bin/make -f  (CVE-2099-0001 outside the changelog)\n")
    return gzip.compress(body.encode(), mtime=0)


class FixtureArchive:
    """A Debian archive (two of them: /debian and /debian-security) in a folder served by
    HttpFixture: dists/<suite>/{Release, main/source/Sources{,.gz,.xz}}, pool/main/."""

    def __init__(self, root):
        self.root = Path(root)
        self.sources = {}                  # (archive, suite) -> [stanza]

    def add(self, archive, suite, package, version, files):
        directory = f"pool/main/{package[0]}/{package}"
        folder = self.root / archive / directory
        folder.mkdir(parents=True, exist_ok=True)
        sums, md5s = [], []
        for name, data in files.items():
            (folder / name).write_bytes(data)
            sums.append(f" {hashlib.sha256(data).hexdigest()} {len(data)} {name}")
            md5s.append(f" {hashlib.md5(data).hexdigest()} {len(data)} {name}")
        self.sources.setdefault((archive, suite), []).append(
            f"Package: {package}\nBinary: {package}\nVersion: {version}\n"
            f"Maintainer: Test Maintainer <t@example.org>\nArchitecture: any\n"
            f"Format: 3.0 (quilt)\nDirectory: {directory}\nFiles:\n" + "\n".join(md5s) +
            "\nChecksums-Sha256:\n" + "\n".join(sums) + "\n")

    def write(self):
        for (archive, suite), stanzas in self.sources.items():
            dist = self.root / archive / "dists" / suite
            (dist / "main/source").mkdir(parents=True, exist_ok=True)
            text = "\n".join(stanzas).encode()
            indexes = {"main/source/Sources": text, "main/source/Sources.gz": gzip.compress(text, mtime=0),
                       "main/source/Sources.xz": lzma.compress(text)}
            for name, data in indexes.items():
                (dist / name).write_bytes(data)
            (dist / "Release").write_text(
                f"Origin: Fixture\nLabel: Fixture\nSuite: {suite}\nCodename: {suite}\n"
                "Date: Sat, 01 Jan 2022 00:00:00 UTC\nArchitectures: amd64\nComponents: main\n"
                "SHA256:\n" + "".join(f" {hashlib.sha256(d).hexdigest()} {len(d)} {n}\n"
                                      for n, d in indexes.items()))


def closed_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def recipe(name, version, url, debian_file=None, package=None):
    source = {"file": url.rsplit("/", 1)[1], "sha256": hashlib.sha256(name.encode()).hexdigest(),
              "urls": [url]}
    if debian_file:
        source["alternatives"] = [{"file": debian_file, "sha256": hashlib.sha256(debian_file.encode()).hexdigest(),
                                   "urls": [f"debian:{package or name}"]}]
    return {"name": name, "version": version, "description": f"test {name}", "license": "MIT",
            "sources": [source], "build": "make"}


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """foo: shipped 1.0, Debian has 1.0-3 in bookworm-security (CVEs), upstream 1.1.
    bar: shipped 2.0, Debian 2.0-1 (format 1.0, .diff.gz), upstream 2.0: current.
    qux: shipped 3.0 from qux-3.0/qux-3.0.tar.gz, upstream has qux-3.1/: outdated.
    pyth-pkg: from files.pythonhosted.org, PyPI says 1.2: outdated.
    dead: its site refuses connections: upstream unreachable."""
    root = tmp_path_factory.mktemp("outdated")
    served = root / "served"
    archive = FixtureArchive(served)
    foo_debian = _tar_xz({"debian/changelog": CHANGELOG, "debian/rules": "#!/usr/bin/make -f\n"})
    archive.add("debian", "bookworm", "foo", "1.0-2", {
        "foo_1.0-2.dsc": b"Format: 3.0 (quilt)\n", "foo_1.0.orig.tar.gz": b"orig",
        "foo_1.0-2.debian.tar.xz": _tar_xz({"debian/changelog": CHANGELOG.split("\n\n", 3)[-1]})})
    archive.add("debian-security", "bookworm-security", "foo", "1.0-3", {
        "foo_1.0-3.dsc": b"Format: 3.0 (quilt)\n", "foo_1.0.orig.tar.gz": b"orig",
        "foo_1.0-3.debian.tar.xz": foo_debian})
    bar_log = ("bar (2.0-1) bookworm; urgency=low\n\n  * New upstream release (CVE-2021-0002).\n\n"
               " -- T <t@example.org>  Mon, 01 Jan 2024 00:00:00 +0000\n\n"
               "bar (1.9-1) unstable; urgency=low\n\n  * Fix CVE-2020-0001.\n\n"
               " -- T <t@example.org>  Mon, 01 Jan 2023 00:00:00 +0000\n")
    archive.add("debian", "bookworm", "bar", "2.0-1", {
        "bar_2.0-1.dsc": b"Format: 1.0\n", "bar_2.0.orig.tar.gz": b"orig", "bar_2.0-1.diff.gz": _diff_gz(bar_log)})
    archive.write()
    server = HttpFixture(directory=served)
    url = server.url
    server.add("releases/foo/", '<a href="foo-1.0.tar.gz">x</a> <a href="foo-1.1.tar.xz">x</a>'.encode())
    server.add("releases/bar/", ('<a href="bar-1.9.tar.gz">1.9</a><a href="./bar-2.0.tar.gz">2.0</a>'
                                 '<a href="bar-2.1rc1.tar.gz">rc</a><a href="bar-2.0.tar.gz.sig">sig</a>').encode())
    server.add("releases/qux/", '<a href="qux-2.9/">.</a><a href="qux-3.0/">.</a><a href="qux-3.1/">.</a>'.encode())
    server.add("pypi/pyth-pkg/json", json.dumps({"info": {"name": "pyth-pkg", "version": "1.2"}}).encode())
    etc = make_etc(root, sources_list=f"deb [trusted=yes] {url}/debian bookworm main\n"
                                      f"deb [trusted=yes] {url}/debian-security bookworm-security main\n",
                   parts={})
    recipes = root / "recipes"
    recipes.mkdir()
    for data in [recipe("foo", "1.0", f"{url}/releases/foo/foo-1.0.tar.gz", "foo_1.0.orig.tar.gz"),
                 recipe("bar", "2.0", f"{url}/releases/bar/bar-2.0.tar.gz", "bar_2.0.orig.tar.gz"),
                 dict(recipe("bar-pass2", "2.0", f"{url}/releases/bar/bar-2.0.tar.gz"), inherit="bar"),
                 recipe("qux", "3.0", f"{url}/releases/qux/qux-3.0/qux-3.0.tar.gz"),
                 recipe("pyth-pkg", "1.0", "https://files.pythonhosted.org/packages/ab/cd/pyth_pkg-1.0.tar.gz"),
                 recipe("dead", "0.1", f"http://127.0.0.1:{closed_port()}/dead-0.1.tar.gz")]:
        if data.get("inherit"):
            data = {"name": data["name"], "inherit": "bar"}
        (recipes / f"{data['name']}.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
    config = root / "config.yaml"
    config.write_text(yaml.safe_dump({
        "prefix_root": "/.dapp/test", "cache_dir": "cache", "recipes_dir": "recipes",
        "download": {"retries": 0, "connect_timeout": 2, "read_timeout": 5},
        "buildroot": dict(TEST_BUILDROOT), "debian": {"suites": ["bookworm", "bookworm-security"]},
        "distributions": {"demo": {"version": "1.0", "components": ["foo", "bar", "qux", "pyth-pkg", "dead"]},
                          "other": {"version": "1.0", "components": ["bar-pass2"], "default": False}}}))
    yield SimpleNamespace(root=root, config=config, etc=etc, server=server, pypi=f"{url}/pypi")
    server.close()


@pytest.fixture(scope="module")
def surveyed(world):
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(debian, "HOST_ETC", world.etc)
        mp.setattr(outdated, "PYPI_URL", world.pypi)
        cfg = load_config(world.root)
        doc = outdated.survey(cfg, "2026-01-01T00:00:00Z")
    return cfg, doc, {r["recipe"]: r for r in doc["recipes"]}


@needs_apt
def test_outdated_recipe_with_the_cves_of_newer_entries_only(surveyed):
    cfg, doc, rows = surveyed
    foo = rows["foo"]
    assert foo["debian"]["newest"] == "1.0-3" and foo["debian"]["suite"] == "bookworm-security"
    assert foo["debian"]["suites"] == {"bookworm": "1.0-2", "bookworm-security": "1.0-3"}
    assert foo["debian"]["changelog_version"] == "1.0-3" and foo["debian"]["changelog_error"] is None
    assert foo["cves"] == ["CVE-2024-1111", "CVE-2024-2222", "CVE-2024-0333"]     # not 2023-9999, 2022-0001
    assert foo["debian"]["newer_entries"] == ["1.0-3", "1.0-2"]
    assert foo["upstream"] == {"newest": "1.1", "where": f"{world_url(cfg)}/releases/foo/",
                               "error": None, "kind": "listing"}
    assert foo["verdict"] == "security" and foo["note"] == "same upstream, newer Debian revision"
    # the changelog came through the downloader, checked against apt's sha256
    assert (cfg.cache / "outdated/downloads/foo_1.0-3.debian.tar.xz").is_file()
    # the private apt state names the configured suites at the host's URIs, with its options
    url = world_url(cfg)
    assert (cfg.cache / "apt/sources.list").read_text() == (
        f"deb-src [trusted=yes] {url}/debian bookworm main\n"
        f"deb-src [trusted=yes] {url}/debian-security bookworm-security main\n")


def world_url(cfg):
    return cfg.recipes["foo"].sources[0].primary.urls[0].split("/releases/")[0]


@needs_apt
def test_current_recipe_folder_listing_and_pypi(surveyed):
    cfg, doc, rows = surveyed
    bar = rows["bar"]                     # a .diff.gz changelog; 2.0-1 packaged 2.0 itself
    assert bar["also"] == ["bar-pass2"] and bar["distributions"] == ["demo", "other"]
    assert bar["debian"]["newest"] == "2.0-1" and bar["debian"]["changelog_version"] == "2.0-1"
    assert bar["cves"] == [] and bar["debian"]["newer_entries"] == []
    assert bar["upstream"]["newest"] == "2.0"          # 2.1rc1 is a pre-release
    assert (bar["verdict"], bar["note"]) == ("current", "")
    qux = rows["qux"]                     # qux-3.0/qux-3.0.tar.gz: the parent folder lists versions
    assert qux["debian"] is None and qux["upstream"]["newest"] == "3.1" and qux["verdict"] == "outdated"
    pyth = rows["pyth-pkg"]
    assert pyth["upstream"]["newest"] == "1.2" and pyth["upstream"]["kind"] == "pypi"
    assert pyth["upstream"]["where"] == f"{world_url(cfg)}/pypi/pyth-pkg/json"
    assert pyth["verdict"] == "outdated"
    assert "bar-pass2" not in rows and doc["totals"] == {"current": 2, "outdated": 2, "security": 1}


@needs_apt
def test_unreachable_upstream_is_said_quickly(surveyed):
    cfg, doc, rows = surveyed
    dead = rows["dead"]
    assert dead["upstream"]["newest"] is None
    assert dead["upstream"]["error"] == "unreachable (connection to 127.0.0.1 refused)"
    assert dead["verdict"] == "current"
    table = render_table(doc)
    assert "unreachable (connection to 127.0.0.1 refused)" in table


def test_a_dead_site_is_asked_once(monkeypatch):
    port = closed_port()
    queries = [("listing", f"http://127.0.0.1:{port}/a/x-{v}.tar.gz", f"x-{v}.tar.gz", v) for v in ("1", "2", "3")]
    calls = []
    real = outdated.requests.get
    monkeypatch.setattr(outdated.requests, "get", lambda *a, **k: calls.append(a) or real(*a, **k))
    found = outdated.upstream_facts(queries, (1.0, 1.0))
    assert len(calls) == 1 and all(r["error"].startswith("unreachable (connection to") for r in found.values())


@needs_apt
def test_doit_outdated_end_to_end(world, monkeypatch):
    monkeypatch.setenv("DAPPDEPS_APT_ETC", str(world.etc))
    monkeypatch.setenv("DAPPDEPS_PYPI_URL", world.pypi)
    run = run_doit(world.config, "outdated", check=True, timeout=300)
    lines = run.out.splitlines()
    header = next(l for l in lines if l.startswith("recipe "))
    assert header.split() == ["recipe", "shipped", "Debian", "newest", "(suite)", "upstream", "newest",
                              "CVEs", "fixed", "since", "verdict"]
    row = {l.split()[0]: l for l in lines if l.split() and l.split()[0] in ("foo", "bar", "qux", "pyth-pkg", "dead")}
    assert row["foo"].split()[1:4] == ["1.0", "1.0-3", "(bookworm-security)"]
    assert "3: CVE-2024-1111, CVE-2024-2222, CVE-2024-0333" in row["foo"] and row["foo"].endswith("security")
    assert row["bar"].split()[:2] == ["bar", "(+1)"] and row["bar"].endswith("current")
    assert "1.2 (PyPI)" in row["pyth-pkg"] and row["pyth-pkg"].endswith("outdated")
    assert "unreachable (connection to 127.0.0.1 refused)" in row["dead"]
    assert "5 recipes: 2 current, 2 outdated, 1 with CVE fixes" in run.out
    doc = json.loads((world.root / "cache/reports/outdated.json").read_text())
    assert doc["format"] == 1 and doc["suites"] == ["bookworm", "bookworm-security"]
    assert [r["recipe"] for r in doc["recipes"]] == ["bar", "dead", "foo", "pyth-pkg", "qux"]
    assert {r["recipe"]: r["verdict"] for r in doc["recipes"]}["foo"] == "security"
    again = run_doit(world.config, "outdated", check=True, timeout=300)     # never up to date
    assert ".  outdated" in again.out


@needs_apt
def test_nightly_report_section(world, surveyed, tmp_path):
    cfg, doc, rows = surveyed
    assert outdated_records(SimpleNamespace(cache=tmp_path, root=tmp_path)) is None
    path = outdated.report_path(cfg.cache)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc))
    record = outdated_records(cfg)
    assert record["summary"] == "cache/reports/outdated.json"
    assert record["totals"] == {"current": 2, "outdated": 2, "security": 1}
    report = {"format": schema.FORMAT, "id": "20260101T020000Z", "started": "2026-01-01T02:00:00Z",
              "finished": "2026-01-01T02:00:01Z", "seconds": 1.0, "root": str(cfg.root), "result": "ok",
              "exit_code": 0, "summary": "nothing to rebuild", "nothing_to_rebuild": True,
              "totals": dict({s.replace("-", "_"): 0 for s in schema.STATUSES}, tasks=0,
                             busy_seconds=0, peak_parallel=0),
              "tasks": [], "images": [], "outdated": record}
    schema.validate(report)
    schema.validate(dict(report, outdated=None))
    md = render_markdown(report)
    assert "## Outdated recipes" in md and "2 current, 2 outdated, 1 with CVE fixes" in md
    assert "| foo | 1.0 | 1.0-3 (bookworm-security) | 1.1 | CVE-2024-1111, CVE-2024-2222, CVE-2024-0333 | security |" in md
    assert "| bar |" not in md                       # current recipes are only counted
    html_text = render_html(report, cfg.cache / "reports" / report["id"])
    assert '<h2 id="outdated">Outdated recipes</h2>' in html_text
    assert '<span class="badge security">security</span>' in html_text
    assert 'href="../outdated.json"' in html_text
    assert "Outdated recipes" not in render_markdown(dict(report, outdated=None))


@needs_apt
def test_a_host_without_a_debian_archive_is_said_per_recipe(world, tmp_path, monkeypatch):
    etc = make_etc(tmp_path, sources_list="deb http://vendor.example/apt stable main\n", parts={})
    monkeypatch.setattr(debian, "HOST_ETC", etc)
    monkeypatch.setattr(outdated, "PYPI_URL", world.pypi)
    cfg = dataclasses.replace(load_config(world.root), cache=tmp_path / "cache")
    rows = {r["recipe"]: r for r in outdated.survey(cfg, "2026-01-01T00:00:00Z")["recipes"]}
    assert "no deb or deb-src entry whose URI ends in /debian" in rows["foo"]["debian"]["error"]
    assert rows["foo"]["verdict"] == "outdated"          # upstream still answered: 1.1
    assert rows["qux"]["debian"] is None and rows["qux"]["upstream"]["newest"] == "3.1"


@needs_apt
def test_cves_the_recipes_debian_patches_fix_are_not_missing(world, tmp_path):
    """foo takes two of the three CVE fixes of 1.0-3 as debian_patches: only the third
    one is reported, and the note says which ones the patches fix."""
    shutil.copy(world.config, tmp_path / "config.yaml")
    shutil.copytree(world.root / "recipes", tmp_path / "recipes")
    foo = yaml.safe_load((tmp_path / "recipes/foo.yaml").read_text())
    foo["sources"].append({"file": "foo_1.0-3.debian.tar.xz", "sha256": "0" * 63 + "1",
                           "urls": ["debian:foo"], "extract": False})
    foo["debian_patches"] = {"source": "foo_1.0-3.debian.tar.xz", "patches": [
        {"name": "debian/patches/one.patch", "cves": ["CVE-2024-1111"]},
        {"name": "debian/patches/two.patch", "cves": ["CVE-2024-0333"]}]}
    (tmp_path / "recipes/foo.yaml").write_text(yaml.safe_dump(foo, sort_keys=False))
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(debian, "HOST_ETC", world.etc)
        mp.setattr(outdated, "PYPI_URL", world.pypi)
        doc = outdated.survey(load_config(tmp_path), "2026-01-01T00:00:00Z")
    row = next(r for r in doc["recipes"] if r["recipe"] == "foo")
    assert row["cves"] == ["CVE-2024-2222"] and row["verdict"] == "security"
    assert row["patched"] == ["CVE-2024-0333", "CVE-2024-1111"]
    assert "debian_patches fix CVE-2024-1111, CVE-2024-0333" in row["note"]
