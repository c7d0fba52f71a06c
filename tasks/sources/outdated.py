"""How far behind are the recipes? (`doit outdated`, docs/outdated.md)

For each recipe a configured distribution uses: the newest version of its Debian source
package in `debian.suites` (apt, tasks/sources/debian.py), the newest upstream release
where the site answers (PyPI's JSON API, else the listing of the recipe's first URL's
folder), and the CVEs Debian's changelog lists since the version shipped that the
recipe's debian_patches do not fix (versions in dpkg's order, compare()).
"""
import gzip
import html
import os
import re
import tarfile
import urllib.parse
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from functools import cmp_to_key
from pathlib import Path
from types import SimpleNamespace

import requests

from tasks.core.errors import FetchError
from tasks.model.recipes import Alternative
from tasks.sources import debian
from tasks.sources.download import download, is_verified, in_downloads

# PyPI's JSON API (<url>/<project>/json); DAPPDEPS_PYPI_URL: a mirror of it (tests: 127.0.0.1)
PYPI_URL = os.environ.get("DAPPDEPS_PYPI_URL") or "https://pypi.org/pypi"
PYPI_HOST = "files.pythonhosted.org"
CVE = re.compile(r"\bCVE-\d{4}-\d{4,7}\b")
# a debian/changelog entry's first line: package (version) distributions; urgency=...
ENTRY = re.compile(r"^[a-z0-9][a-z0-9.+-]*\s+\(([^()\s]+)\)\s[^;\n]*;", re.M)
# repacking marks Debian adds to an upstream version (+dfsg, +dfsg1, .dfsg, ~ds, .orig)
REPACK = re.compile(r"(?:[+~.](?:dfsg|ds|repack|orig)\d*)+$", re.I)
PRERELEASE = re.compile(r"(?i)(alpha|beta|rc|pre|dev|snap|test|git)")
VERSION_TEXT = r"(\d[0-9A-Za-z.+~_]*?)"
ARCHIVE_EXT = r"(?:\.tar\.[A-Za-z0-9]+|\.tgz|\.tbz2?|\.txz|\.zip)"
CHANGELOG_LIMIT = 64 << 20


# ---------------------------------------------------------------- dpkg's version order

def _order(c):
    return -1 if c == "~" else 0 if not c else ord(c) if c.isalpha() else ord(c) + 256


def _verrevcmp(a, b):
    """dpkg's verrevcmp(): non-digit runs compared by _order (~ before everything, even
    the end; letters before other characters), digit runs as numbers."""
    i = j = 0
    while i < len(a) or j < len(b):
        while (i < len(a) and not a[i].isdigit()) or (j < len(b) and not b[j].isdigit()):
            ac = _order(a[i] if i < len(a) and not a[i].isdigit() else "")
            bc = _order(b[j] if j < len(b) and not b[j].isdigit() else "")
            if ac != bc:
                return -1 if ac < bc else 1
            i, j = i + 1, j + 1
        ni, nj = i, j
        while i < len(a) and a[i].isdigit():
            i += 1
        while j < len(b) and b[j].isdigit():
            j += 1
        x, y = int(a[ni:i] or 0), int(b[nj:j] or 0)
        if x != y:
            return -1 if x < y else 1
    return 0


def split_version(version):
    """'1:2.36-9+deb12u4' -> (1, '2.36', '9+deb12u4'); no revision -> ''."""
    epoch, _, rest = version.partition(":") if ":" in version else ("0", "", version)
    upstream, _, revision = rest.rpartition("-") if "-" in rest else (rest, "", "")
    return int(epoch) if epoch.isdigit() else 0, upstream, revision


def compare(a, b):
    """<0, 0, >0 as Debian version a sorts before, with, after b (dpkg --compare-versions)."""
    ea, ua, ra = split_version(a)
    eb, ub, rb = split_version(b)
    if ea != eb:
        return -1 if ea < eb else 1
    return _verrevcmp(ua, ub) or _verrevcmp(ra, rb)


_Key = cmp_to_key(compare)     # sort key: Debian versions in dpkg's order


def upstream_of(version):
    """The upstream release a Debian version packages: no epoch, revision or repack mark
    ('1:1.2.13.dfsg-1' -> '1.2.13', '6.2.1+dfsg1-1.1' -> '6.2.1'); what follows
    '+really' is the release really inside ('1:1.3.dfsg+really1.3.1-1' -> '1.3.1')."""
    return REPACK.sub("", split_version(version)[1].rpartition("+really")[2])


def compare_upstream(a, b):
    return _verrevcmp(upstream_of(a), upstream_of(b))


# ---------------------------------------------------------------- Debian's archive

def debian_package(recipe):
    """The source package a recipe's first source names (`debian:<pkg>`), or None."""
    urls = [u for alt in (recipe.sources[0].alternatives if recipe.sources else ()) for u in alt.urls]
    return next((u[len("debian:"):] for u in urls if u.startswith("debian:")), None)


def newest_in_suites(versions, suites):
    """(newest version, suite carrying it first in `suites` order, {suite: newest there})."""
    per_suite = {}
    for version, suite in versions:
        if suite not in per_suite or compare(version, per_suite[suite]) > 0:
            per_suite[suite] = version
    if not per_suite:
        return None, None, {}
    order = {s: i for i, s in enumerate(suites)}
    ranked = sorted(per_suite.items(), key=lambda kv: order.get(kv[0], len(order)))
    newest = max(per_suite.values(), key=_Key)
    return newest, next(s for s, v in ranked if compare(v, newest) == 0), dict(ranked)


def changelog_entries(text):
    """[(version, [CVE IDs])] of a debian/changelog, newest first (as written)."""
    heads = list(ENTRY.finditer(text))
    out = []
    for n, head in enumerate(heads):
        body = text[head.end():heads[n + 1].start() if n + 1 < len(heads) else len(text)]
        out.append((head.group(1), list(dict.fromkeys(CVE.findall(body)))))
    return out


def fixes_since(entries, shipped, newest):
    """The entries newer than the shipped upstream version, up to `newest`: [(version, [CVE
    IDs])]; not the entry that first packaged it (what it lists came with the release)."""
    same = [v for v, _ in entries if upstream_of(v) == upstream_of(shipped)]
    if same:        # Debian packaged the release shipped: what came after its first packaging
        first = min(same, key=_Key)
        return [(v, c) for v, c in entries if compare(v, first) > 0 and compare(v, newest) <= 0]
    epoch = split_version(newest)[0]
    base = f"{epoch}:{shipped}" if epoch else shipped
    return [(v, c) for v, c in entries if compare(v, base) > 0 and compare(v, newest) <= 0]


def read_changelog(path):
    """debian/changelog from a debian.tar.* or a .diff.gz (text)."""
    name = Path(path).name
    if name.endswith(".diff.gz"):     # format 1.0: the changelog is a file the diff adds
        lines, inside = [], False
        with gzip.open(path, "rt", errors="replace") as fh:
            for line in fh:
                if line.startswith(("+++ ", "--- ", "diff ")):
                    inside = line.startswith("+++ ") and line.split()[1].endswith("/debian/changelog")
                elif inside and line.startswith("+"):
                    lines.append(line[1:])
        if lines:
            return "".join(lines)
    else:
        with tarfile.open(path) as tar:
            for member in tar:
                if member.name.lstrip("./") == "debian/changelog" and member.isfile():
                    if member.size > CHANGELOG_LIMIT:
                        raise FetchError(f"{name}: debian/changelog is {member.size} bytes")
                    return tar.extractfile(member).read().decode("utf-8", "replace")
    raise FetchError(f"{name} has no debian/changelog")


def debian_changelog(apt, package, version, cfg):
    """The changelog of one version: its debian.tar.* / .diff.gz through the normal
    downloader, sha256 as apt lists it, kept in <cache>/outdated/downloads/."""
    found, problem = apt.print_uris(f"{package}={version}")
    if not found:
        raise FetchError(f"apt has no files of {package} {version}: {problem}")
    names = [f for f in found if re.search(r"\.debian\.tar\.[a-z0-9]+$|\.diff\.gz$", f)]
    if not names:
        raise FetchError(f"{package} {version} has no debian.tar or .diff.gz (a native package?)")
    url, _size, sha = found[names[0]]
    if not sha:
        raise FetchError(f"apt lists no sha256 for {names[0]}")
    store = SimpleNamespace(cache=Path(cfg.cache) / "outdated", mirrors=(), download=cfg.download)
    alt = Alternative(names[0], sha, (url,))
    path = in_downloads(store, alt.file) if is_verified(store, alt) else \
        download(url, alt, store, progress=False)
    return read_changelog(path)


def debian_record(package, error=None):
    return {"package": package, "newest": None, "suite": None, "suites": {}, "error": error,
            "changelog_version": None, "changelog_error": None, "newer_entries": [], "fixes": []}


def debian_facts(apt, recipe, suites, cfg, tries=6):
    """What the configured suites have of a recipe's Debian source package. The changelog
    is the newest version's; when its file cannot be had (a mirror may lack the latest
    upload), the next newest version's, and changelog_error says why."""
    package = debian_package(recipe)
    if package is None:
        return None
    out = debian_record(package)
    versions = apt.madison(package)
    newest, suite, per_suite = newest_in_suites(versions, suites)
    if newest is None:
        out["error"] = f"no source package {package} in {', '.join(suites)}"
        return out
    out.update(newest=newest, suite=suite, suites=per_suite)
    problems, epoch = [], split_version(newest)[0]
    base = f"{epoch}:{recipe.version}" if epoch else recipe.version
    candidates = sorted({v for v, _ in versions if compare(v, base) > 0}, key=_Key, reverse=True)
    for version in candidates[:tries]:
        try:
            entries = changelog_entries(debian_changelog(apt, package, version, cfg))
        except (FetchError, OSError, tarfile.TarError, EOFError) as exc:
            problems.append(f"{version}: {getattr(exc, 'message', None) or exc}")
            continue
        newer = fixes_since(entries, recipe.version, version)
        out.update(changelog_version=version, newer_entries=[v for v, _ in newer],
                   fixes=[{"version": v, "cves": c} for v, c in newer if c])
        break
    if problems:
        out["changelog_error"] = "; ".join(problems) + (
            f"; read {out['changelog_version']}'s instead" if out["changelog_version"] else "")
    return out


# ---------------------------------------------------------------- upstream

def project_of(file, version):
    """The upstream name in a release file: 'ansible_core-2.1-py3-none-any.whl' ->
    'ansible_core', 'bash-5.2.15.tar.gz' -> 'bash'; None when the file lacks the version."""
    if file.endswith(".whl"):
        return file.split("-", 1)[0]
    at = file.find(f"-{version}")
    return file[:at] if at > 0 else None


def _reason(exc, url, timeout):
    text, host = repr(exc), urllib.parse.urlsplit(url).hostname
    for kind, said in ((requests.exceptions.ConnectTimeout, f"connect timed out after {timeout[0]:g} s"),
                       (requests.exceptions.ReadTimeout, f"no answer within {timeout[1]:g} s"),
                       (requests.exceptions.SSLError, "TLS handshake failed")):
        if isinstance(exc, kind):
            return said
    if "NameResolutionError" in text or "Name or service not known" in text:
        return f"cannot resolve {host}"
    if "Connection refused" in text or "ConnectionRefusedError" in text:
        return f"connection to {host} refused"
    return " ".join(str(exc).split())[:160] or type(exc).__name__


class Unreachable(Exception):
    """The site did not answer: its other URLs are not tried."""


def _get(url, timeout):
    try:
        resp = requests.get(url, timeout=timeout, headers={"Accept-Encoding": "identity"})
    except (requests.RequestException, OSError) as exc:
        raise Unreachable(_reason(exc, url, timeout)) from None
    if resp.status_code >= 400:
        raise FetchError(f"HTTP {resp.status_code} at {url}")
    return resp


def pypi_newest(project, timeout):
    name = re.sub(r"[-_.]+", "-", project).lower()
    url = f"{PYPI_URL.rstrip('/')}/{urllib.parse.quote(name)}/json"
    try:
        return str(_get(url, timeout).json()["info"]["version"]), url
    except (ValueError, KeyError, TypeError):
        raise FetchError(f"{url} is not PyPI's JSON API") from None


def listing_newest(url, file, version, timeout):
    """The newest release in the directory listing holding `url` (or, when the folder is
    named after the version, as in gcc-12.2.0/gcc-12.2.0.tar.xz, in its parent's)."""
    name = project_of(file, version)
    if name is None:
        raise FetchError(f"not asked: the file name {file} lacks the version")
    folder = url.rsplit("/", 1)[0]
    last = urllib.parse.urlsplit(folder).path.rsplit("/", 1)[-1]
    if version in last:
        at = last.index(version)
        pattern = re.escape(last[:at]) + VERSION_TEXT + re.escape(last[at + len(version):]) + "$"
        folder = folder.rsplit("/", 1)[0]
    else:
        pattern = re.escape(name) + "-" + VERSION_TEXT + ARCHIVE_EXT + "$"
    listing = folder + "/"
    found = set()
    for href in re.findall(r"""href\s*=\s*["']?([^"'\s>]+)""", _get(listing, timeout).text, re.I):
        base = urllib.parse.unquote(html.unescape(href)).split("?")[0].rstrip("/").rsplit("/", 1)[-1]
        match = re.match(pattern, base)
        if match and not PRERELEASE.search(match.group(1)):
            found.add(match.group(1))
    if not found:
        raise FetchError(f"no {name} releases listed at {listing}")
    return max(found, key=lambda v: _Key(f"0:{v}")), listing


def upstream_query(recipe):
    """How the newest upstream release of a recipe is asked, from its first source's first
    http(s) URL: ("pypi", project) or ("listing", url, file, version); None without one."""
    alt = recipe.sources[0].primary
    url = next((u for u in alt.urls if u.startswith(("http://", "https://"))), None)
    if url is None:
        return None
    if urllib.parse.urlsplit(url).hostname == PYPI_HOST:
        return ("pypi", project_of(alt.file, recipe.version) or recipe.name, None, None)
    return ("listing", url, alt.file, recipe.version)


def upstream_facts(queries, timeout):
    """{query: {"newest", "where", "error"}}: one thread per site, a site that did not
    answer is not asked again (its other queries say the same), so a dead site costs one
    connect timeout."""
    by_host = {}
    for q in queries:
        host = urllib.parse.urlsplit(PYPI_URL if q[0] == "pypi" else q[1]).netloc
        by_host.setdefault(host, []).append(q)

    def one_host(items):
        out, dead = {}, None
        for q in items:
            rec = {"newest": None, "where": None, "error": None}
            try:
                if dead:
                    raise Unreachable(dead)
                rec["newest"], rec["where"] = (pypi_newest(q[1], timeout) if q[0] == "pypi"
                                               else listing_newest(q[1], q[2], q[3], timeout))
            except Unreachable as exc:
                dead = str(exc)
                rec["error"] = f"unreachable ({dead})"
            except FetchError as exc:
                rec["error"] = exc.message
            out[q] = rec
        return out
    results = {}
    if by_host:
        with ThreadPoolExecutor(max_workers=min(8, len(by_host))) as pool:
            for part in pool.map(one_host, by_host.values()):
                results.update(part)
    return results


# ---------------------------------------------------------------- the survey

def report_path(cache):
    return Path(cache) / "reports" / "outdated.json"


def groups(cfg):
    """[(recipe, [other recipes with the same version and first source])] for every recipe
    a configured distribution uses (binutils-pass1 inherits binutils: asked once)."""
    used = sorted({c for d in cfg.distributions.values() for c in d.components})
    by_key = {}
    for name in used:
        recipe = cfg.recipes[name]
        key = (recipe.version, recipe.sources[0].id if recipe.sources else name)
        by_key.setdefault(key, []).append(recipe)
    out = []
    for members in by_key.values():
        members.sort(key=lambda r: (bool(r.data.get("inherit")), r.name))
        out.append((members[0], [r.name for r in members[1:]]))
    return sorted(out, key=lambda g: g[0].name)


def verdict(shipped, deb, up, cves):
    """(current|outdated|security, note) of one recipe."""
    notes, newer, newest = [], False, (deb or {}).get("newest")
    if newest:
        order = compare_upstream(newest, shipped)
        newer = order > 0
        if order < 0 or order == 0 and deb.get("newer_entries"):
            notes.append("Debian's is older" if order < 0 else "same upstream, newer Debian revision")
    if up and up.get("newest") and compare_upstream(up["newest"], shipped) > 0:
        newer = True
    return ("security" if cves else "outdated" if newer else "current"), "; ".join(notes)


def survey(cfg, when):
    """The outdated.json document (docs/outdated.md) of a configuration."""
    suites = list(debian.configured_suites(cfg) or [])
    recipe_groups = groups(cfg)
    queries = {g[0].name: upstream_query(g[0]) for g in recipe_groups}
    timeout = (float(cfg.download.get("connect_timeout", 10.0)),
               float(cfg.download.get("read_timeout", 60.0)))
    up = upstream_facts([q for q in queries.values() if q], timeout)
    apt, apt_error = None, None
    rows = []
    with ExitStack() as stack:
        try:
            apt = debian.private_apt(cfg)
            if any(debian_package(g[0]) for g in recipe_groups):
                stack.enter_context(apt.ready())
        except (FetchError, OSError) as exc:
            apt_error = getattr(exc, "message", None) or f"{exc.strerror}: {exc.filename}"
        for recipe, also in recipe_groups:
            try:
                if apt_error and debian_package(recipe):
                    raise FetchError(apt_error)
                deb = debian_facts(apt, recipe, suites, cfg)
            except FetchError as exc:
                deb = debian_record(debian_package(recipe), exc.message)
            q = queries[recipe.name]
            upstream = dict(up.get(q) or {"newest": None, "where": None,
                                          "error": "no http(s) URL in the recipe"},
                            kind=q[0] if q else None)
            applied = {c for p in recipe.debian_patches for c in p.cves}   # shipped, not missing
            listed = dict.fromkeys(c for f in (deb or {}).get("fixes", []) for c in f["cves"])
            cves = [c for c in listed if c not in applied]
            state, note = verdict(recipe.version, deb, upstream, cves)
            taken = ", ".join(c for c in listed if c in applied)
            note = "; ".join(filter(None, [note, taken and f"debian_patches fix {taken}"]))
            rows.append({"recipe": recipe.name, "also": also, "shipped": recipe.version,
                         "patched": sorted(applied),
                         "distributions": sorted(d.name for d in cfg.distributions.values()
                                                 if {recipe.name, *also} & set(d.components)),
                         "debian": deb, "upstream": upstream, "cves": cves,
                         "verdict": state, "note": note})
    totals = {v: sum(1 for r in rows if r["verdict"] == v) for v in ("current", "outdated", "security")}
    return {"format": 1, "when": when, "suites": suites, "missing_suites": list(apt.missing if apt else []),
            "totals": totals, "recipes": rows}
