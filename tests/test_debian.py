"""debian: locations. Source conversion from fixture text, the private-apt logic against
a stand-in apt-get/apt-cache (fast, no network), and one real fetch from Debian's archive."""
import hashlib
import json
import os
import shutil
import sys
import textwrap
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

import tasks.sources.debian as debian
from httpfixture import HttpFixture
from tasks.sources.debian import deb822_to_deb_src, host_deb_src, list_to_deb_src
from tasks.sources.download import fetch_source
from tasks.core.errors import FetchError
from tasks.model.recipes import Alternative, Source

DEB822 = """\
# the host's main archive
Types: deb
URIs: http://archive.example/debian
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb deb-src
URIs: http://security.example/debian-security
Suites: bookworm-security
Components: main
# an inline key keeps its continuation lines
Signed-By:
 -----BEGIN PGP PUBLIC KEY BLOCK-----
 .
 mDMEZ
 -----END PGP PUBLIC KEY BLOCK-----

Types: deb
Enabled: no
URIs: http://disabled.example/debian
Suites: bookworm
Components: main

Types: rpm
URIs: http://other.example
"""

ONE_LINE = """\
# comment
deb http://archive.example/debian bookworm main contrib
deb [arch=amd64 signed-by=/usr/share/keyrings/x.gpg] http://vendor.example/apt stable main # tail
deb-src http://archive.example/debian bookworm main contrib
#deb http://commented.example/debian bookworm main
"""


def test_deb822_stanzas_become_deb_src():
    out = deb822_to_deb_src(DEB822)
    assert len(out) == 2
    assert out[0] == ("Types: deb-src\nURIs: http://archive.example/debian\n"
                      "Suites: bookworm bookworm-updates\nComponents: main\n"
                      "Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg\n")
    assert out[1].startswith("Types: deb-src\nURIs: http://security.example/debian-security\n")
    assert "Signed-By:\n -----BEGIN PGP PUBLIC KEY BLOCK-----\n .\n mDMEZ\n" in out[1]
    assert not any("disabled.example" in s or "other.example" in s or "#" in s for s in out)


def test_one_line_entries_become_deb_src():
    assert list_to_deb_src(ONE_LINE) == [
        "deb-src http://archive.example/debian bookworm main contrib\n",
        "deb-src [arch=amd64 signed-by=/usr/share/keyrings/x.gpg] http://vendor.example/apt stable main\n",
        "deb-src http://archive.example/debian bookworm main contrib\n"]


def make_etc(root, sources_list=ONE_LINE, parts=None):
    etc = Path(root) / "etc-apt"
    (etc / "sources.list.d").mkdir(parents=True)
    (etc / "sources.list").write_text(sources_list)
    for name, text in (parts if parts is not None else {"debian.sources": DEB822}).items():
        (etc / "sources.list.d" / name).write_text(text)
    return etc


def test_host_sources_are_collected_and_duplicates_folded(tmp_path):
    twin = DEB822.replace("Types: deb\nURIs: http://archive", "Types: deb-src\nURIs: http://archive")
    etc = make_etc(tmp_path, parts={
        "debian.sources": DEB822, "debian-src.sources": twin,
        "vendor.list": "deb http://vendor2.example/apt stable main\n",
        "off.list.disabled-by-admin": "deb http://off.example/apt stable main\n",
        "notes.txt": "deb http://notes.example/apt stable main\n"})
    one_line, deb822 = host_deb_src(etc)
    assert one_line.splitlines() == [
        "deb-src http://archive.example/debian bookworm main contrib",
        "deb-src [arch=amd64 signed-by=/usr/share/keyrings/x.gpg] http://vendor.example/apt stable main",
        "deb-src http://vendor2.example/apt stable main"]
    assert deb822.count("Types: deb-src") == 2 and "off.example" not in one_line + deb822


# ---------------------------------------------------------------- a stand-in apt

FAKE_APT = textwrap.dedent('''\
    #!{python}
    """Stand-in for apt-get/apt-cache: logs its arguments, answers from catalog.json."""
    import json, os, sys, time
    here = os.path.dirname(os.path.abspath(__file__))
    args = sys.argv[1:]
    opts = dict(a.split("=", 1) for a in args[1::1] if "=" in a and "::" in a)
    words = [a for a in args if not a.startswith("-") and "::" not in a]
    with open(os.path.join(here, "calls.log"), "a") as log:
        log.write(json.dumps([os.path.basename(sys.argv[0])] + args) + "\\n")
    catalog = json.load(open(os.path.join(here, "catalog.json")))
    if words[0] == "update":
        time.sleep(catalog.get("update_seconds", 0))
        if catalog.get("update_fails"):
            print("E: Failed to fetch http://archive.example/InRelease  Could not resolve", file=sys.stderr)
            sys.exit(100)
        lists = opts["Dir::State::Lists"]
        open(os.path.join(lists, "archive.example_dists_bookworm_main_source_Sources"), "w").close()
        sys.exit(0)
    if not os.listdir(opts["Dir::State::Lists"]):
        sys.exit("E: no lists")
    def versions(name):
        return catalog["packages"].get(name, [])
    if words[0] == "showsrc":
        for v in versions(words[1]):
            print("Package: %s\\nVersion: %s\\nChecksums-Sha256:" % (words[1], v["version"]))
            for f, (sha, size) in v["files"].items():
                print(" %s %d %s" % (sha, size, f))
            print()
        sys.exit(0)
    if words[0] == "source":
        name, _, want = words[1].partition("=")
        for v in versions(name):
            if want in ("", v["version"]):
                print("NOTICE: chatter apt prints")
                for f, (sha, size) in v["files"].items():
                    print("'%s/%s' %s %d SHA256:%s" % (catalog["base"], f, f, size, sha))
                sys.exit(0)
        print("E: Unable to find a source package for " + name, file=sys.stderr)
        sys.exit(100)
''')


class FakeApt:
    def __init__(self, root, base):
        self.bin = Path(root) / "fake-apt-bin"
        self.bin.mkdir()
        for name in ("apt-get", "apt-cache"):
            exe = self.bin / name
            exe.write_text(FAKE_APT.replace("{python}", sys.executable))
            exe.chmod(0o755)
        self.catalog = {"base": base, "packages": {}}
        self.save()

    def save(self):
        (self.bin / "catalog.json").write_text(json.dumps(self.catalog))

    def package(self, name, *versions):
        """versions: (version, {file: bytes})"""
        self.catalog["packages"][name] = [
            {"version": v, "files": {f: [hashlib.sha256(d).hexdigest(), len(d)] for f, d in files.items()}}
            for v, files in versions]
        self.save()

    @property
    def calls(self):
        log = self.bin / "calls.log"
        return [json.loads(l) for l in log.read_text().splitlines()] if log.exists() else []

    def updates(self):
        return [c for c in self.calls if "update" in c]


ORIG = os.urandom(50_000)
OLD_ORIG = os.urandom(40_000)
DSC = b"Format: 3.0 (quilt)\n"


@pytest.fixture
def fake(tmp_path, monkeypatch):
    with HttpFixture() as server:
        server.add("pool/foo_2.0.orig.tar.xz", ORIG)
        server.add("pool/foo_1.0.orig.tar.xz", OLD_ORIG)
        server.add("pool/foo_2.0-1.dsc", DSC)
        server.add("pool/foo_1.0-3.dsc", DSC)
        apt = FakeApt(tmp_path, f"{server.url}/pool")
        apt.package("foo", ("2.0-1", {"foo_2.0-1.dsc": DSC, "foo_2.0.orig.tar.xz": ORIG}),
                    ("1.0-3", {"foo_1.0-3.dsc": DSC, "foo_1.0.orig.tar.xz": OLD_ORIG}))
        apt.server = server
        monkeypatch.setenv("PATH", f"{apt.bin}{os.pathsep}{os.environ['PATH']}")
        monkeypatch.setattr(debian, "HOST_ETC", make_etc(tmp_path))
        yield apt


def cfg_for(tmp_path, refresh_hours=24.0, **download):
    return SimpleNamespace(cache=tmp_path / "cache", mirrors=(), download=dict({
        "connect_timeout": 1.0, "read_timeout": 2.0, "retries": 0, "backoff": 0.05,
        "offline": False, "apt_refresh_hours": refresh_hours}, **download))


def debian_source(file, data, package="foo"):
    return Source((Alternative(file, hashlib.sha256(data).hexdigest(), (f"debian:{package}",)),))


def test_debian_location_uses_private_apt_state_and_the_normal_downloader(fake, tmp_path):
    cfg = cfg_for(tmp_path)
    result = fetch_source(debian_source("foo_2.0.orig.tar.xz", ORIG), cfg)
    assert result.path.read_bytes() == ORIG
    assert result.how == f"{fake.server.url}/pool/foo_2.0.orig.tar.xz"
    apt_root = tmp_path / "cache" / "apt"
    for call in fake.calls:
        for key in ("Dir::Etc::SourceList", "Dir::Etc::SourceParts", "Dir::State",
                    "Dir::State::Lists", "Dir::Cache"):
            values = [a.split("=", 1)[1] for a in call if a.startswith(key + "=")]
            assert values and Path(values[0]).is_relative_to(apt_root), (key, call)
        assert "APT::Sandbox::User=root" in call
    private = (apt_root / "sources.list.d" / "host.sources").read_text()
    assert "Types: deb-src\nURIs: http://archive.example/debian" in private
    assert "deb-src http://archive.example/debian" in (apt_root / "sources.list").read_text()
    # a second file of the same package: the lists are fresh, no second update
    fetch_source(debian_source("foo_2.0-1.dsc", DSC), cfg)
    assert len(fake.updates()) == 1


def test_lists_are_refreshed_when_stale_or_when_the_host_sources_change(fake, tmp_path):
    cfg = cfg_for(tmp_path, refresh_hours=1.0)
    fetch_source(debian_source("foo_2.0-1.dsc", DSC), cfg)
    stamp = tmp_path / "cache/apt/updated.json"
    old = time.time() - 2 * 3600
    os.utime(stamp, (old, old))
    fetch_source(debian_source("foo_2.0.orig.tar.xz", ORIG), cfg)
    assert len(fake.updates()) == 2
    (debian.HOST_ETC / "sources.list.d" / "more.list").write_text("deb http://new.example/d x main\n")
    fetch_source(debian_source("foo_1.0-3.dsc", DSC), cfg)
    assert len(fake.updates()) == 3
    assert "new.example" in (tmp_path / "cache/apt/sources.list").read_text()


def test_file_of_an_older_version_is_found(fake, tmp_path):
    result = fetch_source(debian_source("foo_1.0.orig.tar.xz", OLD_ORIG), cfg_for(tmp_path))
    assert result.path.read_bytes() == OLD_ORIG
    assert any(c[-1] == "foo=1.0-3" for c in fake.calls)


def test_missing_file_names_the_files_the_package_has(fake, tmp_path):
    with pytest.raises(FetchError) as info:
        fetch_source(debian_source("foo_3.0.orig.tar.xz", ORIG), cfg_for(tmp_path))
    text = info.value.render()
    assert "has no file foo_3.0.orig.tar.xz" in text
    assert "2.0-1: foo_2.0-1.dsc, foo_2.0.orig.tar.xz" in text and "foo_1.0.orig.tar.xz" in text
    assert "Update the recipe" in text


def test_unknown_package_is_named(fake, tmp_path):
    with pytest.raises(FetchError, match="no source package 'nosuch'"):
        fetch_source(debian_source("nosuch_1.orig.tar.gz", ORIG, package="nosuch"), cfg_for(tmp_path))


def test_apt_sha256_differing_from_the_pin_stops_before_downloading(fake, tmp_path):
    src = Source((Alternative("foo_2.0.orig.tar.xz", "0" * 64, ("debian:foo",)),))
    with pytest.raises(FetchError) as info:
        fetch_source(src, cfg_for(tmp_path))
    text = info.value.render()
    assert hashlib.sha256(ORIG).hexdigest() in text and "0" * 64 in text
    assert fake.server.requests == []


def test_parallel_resolves_update_once(fake, tmp_path):
    fake.catalog["update_seconds"] = 0.3
    fake.save()
    cfg = cfg_for(tmp_path)
    errors = []

    def one(file, data):
        try:
            debian.resolve("foo", Alternative(file, hashlib.sha256(data).hexdigest(), ()), cfg)
        except Exception as exc:           # surfaced below; a thread cannot fail the test
            errors.append(exc)
    threads = [threading.Thread(target=one, args=a) for a in
               [("foo_2.0.orig.tar.xz", ORIG), ("foo_2.0-1.dsc", DSC), ("foo_1.0.orig.tar.xz", OLD_ORIG)]]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == [] and len(fake.updates()) == 1


def test_failed_update_without_lists_is_reported(fake, tmp_path):
    fake.catalog["update_fails"] = True
    fake.save()
    with pytest.raises(FetchError) as info:
        fetch_source(debian_source("foo_2.0-1.dsc", DSC), cfg_for(tmp_path))
    assert "apt-get update" in info.value.render() and "Could not resolve" in info.value.render()


def test_host_without_deb_sources(fake, tmp_path, monkeypatch):
    monkeypatch.setattr(debian, "HOST_ETC", make_etc(tmp_path / "empty", sources_list="", parts={}))
    with pytest.raises(FetchError, match="no deb or deb-src entries"):
        fetch_source(debian_source("foo_2.0-1.dsc", DSC), cfg_for(tmp_path))
    assert fake.calls == []


# ---------------------------------------------------------------- the real archive

# GNU hello 2.10: Debian's orig is byte-identical to the GNU release.
HELLO_FILE = "hello_2.10.orig.tar.gz"
HELLO_SHA256 = "31e066137a962676e89f69d1b65382de95a7ef7d914b8cb956f41ea72e0f516b"

needs_apt = pytest.mark.skipif(shutil.which("apt-get") is None, reason="needs apt (Debian/Ubuntu)")


def _etc_apt_snapshot():
    return sorted((str(p), p.stat().st_mtime_ns, p.stat().st_size)
                  for p in Path("/etc/apt").rglob("*") if p.is_file())


@pytest.fixture(scope="module")
def real_cache(tmp_path_factory):
    return tmp_path_factory.mktemp("debian-real") / "cache"


@needs_apt
def test_real_fetch_of_hello_from_debians_source_archive(real_cache):
    before = _etc_apt_snapshot()
    cfg = SimpleNamespace(cache=real_cache, mirrors=(), download={
        "connect_timeout": 10.0, "read_timeout": 60.0, "retries": 2, "backoff": 1.0,
        "offline": False, "apt_refresh_hours": 24.0})
    src = Source((Alternative(HELLO_FILE, HELLO_SHA256, ("debian:hello",)),))
    result = fetch_source(src, cfg)
    assert result.alternative.file == HELLO_FILE and result.how.endswith(f"/{HELLO_FILE}")
    assert hashlib.sha256(result.path.read_bytes()).hexdigest() == HELLO_SHA256
    assert (real_cache / "apt/sources.list.d").is_dir() and (real_cache / "apt/updated.json").is_file()
    assert _etc_apt_snapshot() == before


@needs_apt
def test_real_missing_file_lists_what_hello_has(real_cache):
    cfg = SimpleNamespace(cache=real_cache, mirrors=(), download={
        "connect_timeout": 10.0, "read_timeout": 60.0, "retries": 0, "backoff": 1.0,
        "offline": False, "apt_refresh_hours": 24.0})
    src = Source((Alternative("hello_9.9.orig.tar.gz", HELLO_SHA256, ("debian:hello",)),))
    with pytest.raises(FetchError) as info:
        fetch_source(src, cfg)
    assert HELLO_FILE in info.value.render() and "has no file hello_9.9.orig.tar.gz" in info.value.render()


@pytest.mark.parametrize("package", ["-oDir::Etc=/tmp", "../foo", "foo;id", "Foo", ""])
def test_resolve_refuses_what_is_not_a_package_name(tmp_path, package):
    """Checked when loading (tasks/model/recipes.py); never handed to apt as an option."""
    alt = Alternative("foo_2.0.orig.tar.xz", "a" * 64, (f"debian:{package}",))
    with pytest.raises(FetchError) as info:
        debian.resolve(package, alt, cfg_for(tmp_path))
    assert "not a Debian source package name" in info.value.message
    assert not (tmp_path / "cache").exists()


def test_a_file_apt_no_longer_lists_comes_from_the_pool(fake, tmp_path):
    """A security update superseded the pinned revision: apt lists only the new one, the
    pool of the host's archive still has the old file (Debian's layout, '+' quoted)."""
    newer = os.urandom(3000)
    fake.server.add("debian/pool/main/f/foo/foo_2.0-1+deb13u2.debian.tar.xz", newer)
    debian.HOST_ETC = make_etc(tmp_path / "pool-etc", sources_list=(
        f"deb {fake.server.url}/debian bookworm main\n"
        f"deb {fake.server.url}/debian-security bookworm-security main\n"))
    result = fetch_source(debian_source("foo_2.0-1+deb13u2.debian.tar.xz", newer), cfg_for(tmp_path))
    assert result.path.read_bytes() == newer
    assert result.how == f"{fake.server.url}/debian/pool/main/f/foo/foo_2.0-1%2Bdeb13u2.debian.tar.xz"
    # lib* packages live under their first four letters; security under pool/updates
    assert debian.pool_urls("libffi", "libffi_3.4.8.orig.tar.gz", debian.HOST_ETC) == [
        f"{fake.server.url}/debian/pool/main/libf/libffi/libffi_3.4.8.orig.tar.gz",
        f"{fake.server.url}/debian-security/pool/updates/main/libf/libffi/libffi_3.4.8.orig.tar.gz"]


def test_a_file_in_no_pool_names_every_place_tried(fake, tmp_path):
    debian.HOST_ETC = make_etc(tmp_path / "pool-etc", sources_list=(
        f"deb {fake.server.url}/debian bookworm main\n"))
    with pytest.raises(FetchError) as info:
        fetch_source(debian_source("foo_9.0.orig.tar.xz", ORIG), cfg_for(tmp_path))
    text = info.value.render()
    assert "has no file foo_9.0.orig.tar.xz" in text and "trying Debian's pool" in text
    assert f"{fake.server.url}/debian/pool/main/f/foo/foo_9.0.orig.tar.xz" in text and "404" in text
