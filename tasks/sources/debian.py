"""`debian:<source-package>` locations: Debian's source archive, asked through apt.

apt runs with private state under cache/apt (sources, lists, cache, state); the host's
/etc/apt is only read. The deb-src entries name the suites of config.yaml's
`debian.suites`, at the mirror URIs of the host's own apt sources (its URI ending in
/debian, and /debian-security for `*-security` suites), so no mirror host name lives in
the repository and whatever mirror (or proxy) the machine is set up for is the one used.
apt only says where a file is and what its sha256 is; the transfer goes through
tasks/sources/download.py like any other URL, so progress, resume and verification are
the same everywhere.

apt knows only what the suites list today, and a mirror may lag behind its lists (404):
after apt's answer a `debian:` location also tries the file's place in each host archive's
pool, which keeps superseded files a while. The pinned sha256 decides either way.
"""
import fcntl
import hashlib
import json
import os
import re
import shutil
import subprocess
import time
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import quote

from tasks.core.errors import FetchError

# The host's apt configuration, only ever read. DAPPDEPS_APT_ETC names another folder of
# the same layout (tests: a fixture archive on 127.0.0.1); tests may also patch this.
HOST_ETC = Path(os.environ.get("DAPPDEPS_APT_ETC") or "/etc/apt")

# apt's own rule for which files in sources.list.d count (editor backups etc. do not).
_PART_NAME = re.compile(r"^[A-Za-z0-9_.-]+\.(list|sources)$")
# Debian policy 5.6.1: source package names (the part after `debian:`)
PACKAGE = re.compile(r"^[a-z0-9][a-z0-9.+-]+$")
_ONE_LINE = re.compile(r"^(deb|deb-src)\s+(\[[^\]]*\]\s+)?(\S.*)$")


# ---------------------------------------------------------------- deb -> deb-src

def _stanzas(text):
    """deb822 text -> list of stanzas, each a list of [field, value] (value keeps its
    continuation lines, e.g. an inline Signed-By key)."""
    stanzas, current = [], []
    for line in text.splitlines():
        if not line.strip():
            if current:
                stanzas.append(current)
            current = []
        elif line.startswith("#"):
            continue
        elif line[0] in " \t":
            if current:
                current[-1][1] += "\n" + line
        elif ":" in line:
            name, value = line.split(":", 1)
            current.append([name.strip(), value.strip()])
    if current:
        stanzas.append(current)
    return stanzas


def _get(stanza, name):
    for field, value in stanza:
        if field.lower() == name.lower():
            return value
    return None


def deb822_to_deb_src(text):
    """Stanzas of a .sources file that name binary or source indexes, as deb-src stanzas.

    Disabled stanzas (Enabled: no) are dropped: the host chose not to use them.
    """
    out = []
    for stanza in _stanzas(text):
        types = (_get(stanza, "Types") or "").split()
        if not {"deb", "deb-src"} & set(types):
            continue
        if (_get(stanza, "Enabled") or "yes").strip().lower() == "no":
            continue
        lines = []
        for field, value in stanza:
            if field.lower() == "types":
                value = "deb-src"
            first, nl, rest = value.partition("\n")
            lines.append(f"{field}:{' ' + first if first else ''}{nl}{rest}")
        out.append("\n".join(lines) + "\n")
    return out


def list_to_deb_src(text):
    """One-line `deb [options] uri suite components` entries as `deb-src ...` lines."""
    out = []
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()
        match = _ONE_LINE.match(line)
        if match:
            options = f"{match.group(2).strip()} " if match.group(2) else ""
            out.append(f"deb-src {options}{match.group(3)}\n")
    return out


def _unique(items):
    seen = set()
    return [i for i in items if not (i in seen or seen.add(i))]


def host_deb_src(etc=None):
    """(one-line entries, deb822 stanzas) derived from the host's apt sources.

    Duplicates are folded: a host that already has a deb-src twin of its deb entries
    would otherwise give apt the same index twice (and a warning on every run).
    """
    lines, stanzas = [], []
    for kind, text in _host_texts(etc):
        if kind == "list":
            lines += list_to_deb_src(text)
        else:
            stanzas += deb822_to_deb_src(text)
    return "".join(_unique(lines)), "\n".join(_unique(stanzas))


def _host_texts(etc):
    """(kind, text) of the host's sources.list and its sources.list.d parts, in apt's order."""
    etc = Path(etc or HOST_ETC)
    out = []
    main = etc / "sources.list"
    if main.is_file():
        out.append(("list", main.read_text(errors="replace")))
    parts = etc / "sources.list.d"
    if parts.is_dir():
        out += [(p.suffix[1:], p.read_text(errors="replace")) for p in sorted(parts.iterdir())
                if p.is_file() and _PART_NAME.match(p.name)]
    return out


def archive_of(suite):
    """The archive a suite lives in: bookworm-security -> debian-security, else debian."""
    return "debian-security" if suite.endswith("-security") else "debian"


def host_archives(etc=None):
    """{archive: template} for the first host entry (deb or deb-src, enabled) whose URI path
    ends in /debian, and in /debian-security. A template is ("line", options, uri,
    components) or ("stanza", [[field, value] but Types/URIs/Suites/Enabled], uri)."""
    found = {}
    for kind, text in _host_texts(etc):
        if kind == "list":
            for line in list_to_deb_src(text):
                match = _ONE_LINE.match(line.strip())
                words = match.group(3).split()
                if len(words) < 3:
                    continue
                for archive in ("debian", "debian-security"):
                    if words[0].rstrip("/").endswith("/" + archive):
                        found.setdefault(archive, ("line", match.group(2) or "", words[0].rstrip("/"),
                                                   " ".join(words[2:])))
            continue
        for stanza in _stanzas(text):
            types = (_get(stanza, "Types") or "").split()
            if not {"deb", "deb-src"} & set(types) or \
                    (_get(stanza, "Enabled") or "yes").strip().lower() == "no":
                continue
            rest = [f for f in stanza if f[0].lower() not in ("types", "uris", "suites", "enabled")]
            for uri in (_get(stanza, "URIs") or "").split():
                for archive in ("debian", "debian-security"):
                    if uri.rstrip("/").endswith("/" + archive):
                        found.setdefault(archive, ("stanza", rest, uri.rstrip("/")))
    return found


def suites_deb_src(suites, etc=None):
    """(one-line entries, deb822 stanzas, suites without an archive) naming `suites` at
    the host's mirror URIs, with the host entry's options (Signed-By, trusted, ...).
    A `*-security` suite reads the host's /debian-security URI, every other its /debian."""
    archives = host_archives(etc)
    lines, stanzas, missing = [], [], []
    for suite in suites:
        template = archives.get(archive_of(suite))
        if template is None:
            missing.append(suite)
        elif template[0] == "line":
            _, options, uri, components = template
            lines.append(f"deb-src {options.strip() + ' ' if options else ''}{uri} {suite} {components}\n")
        else:
            _, rest, uri = template
            fields = [["Types", "deb-src"], ["URIs", uri], ["Suites", suite]] + rest
            body = []
            for field, value in fields:
                first, nl, more = value.partition("\n")
                body.append(f"{field}:{' ' + first if first else ''}{nl}{more}")
            stanzas.append("\n".join(body) + "\n")
    return "".join(_unique(lines)), "\n".join(_unique(stanzas)), missing


# ---------------------------------------------------------------- private apt

class PrivateApt:
    """apt-get/apt-cache with every piece of writable state under `root`."""

    def __init__(self, root, refresh_hours=24.0, retries=3, etc=None, suites=None):
        self.root = Path(root)
        self.refresh_hours = float(refresh_hours)
        self.retries = int(retries)
        self.etc = Path(etc or HOST_ETC)
        # config.yaml debian.suites; None (a stand-in configuration): every suite the
        # host's own entries name
        self.suites = None if suites is None else tuple(suites)
        self.missing = []            # configured suites the host names no archive for

    def options(self):
        r = self.root
        return [
            "-o", f"Dir::Etc::SourceList={r / 'sources.list'}",
            "-o", f"Dir::Etc::SourceParts={r / 'sources.list.d'}",
            # A private Dir::State keeps apt away from the host's lock files, so a
            # concurrent `apt-get install` on the host neither blocks nor breaks us.
            "-o", f"Dir::State={r / 'state'}",
            "-o", f"Dir::State::Lists={r / 'lists'}",
            "-o", f"Dir::Cache={r / 'cache'}",
            # The _apt user may not be able to enter a private folder under $HOME.
            "-o", "APT::Sandbox::User=root",
            "-o", "Acquire::Languages=none",
            "-o", f"Acquire::Retries={self.retries}",
            "-q",
        ]

    def _run(self, *args, what):
        exe = shutil.which("apt-cache" if args[0] in ("showsrc", "madison") else "apt-get")
        if exe is None:
            raise FetchError("debian: locations need apt (apt-get and apt-cache), which this "
                             "host does not have; add a mirror or a URL to the recipe instead")
        env = dict(os.environ, LC_ALL="C", DEBIAN_FRONTEND="noninteractive")
        try:
            return subprocess.run([exe, *self.options(), *args], capture_output=True, text=True,
                                  env=env, cwd=self.root, stdin=subprocess.DEVNULL)
        except OSError as exc:
            raise FetchError(f"cannot run {exe} for {what}: {exc.strerror}") from None

    @contextmanager
    def ready(self):
        """Exclusive while deciding on / running `apt-get update`, shared afterwards, so
        parallel fetch tasks update once and never read lists that are being rewritten."""
        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.root / "lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            self._ensure_lists()
            fcntl.flock(lock, fcntl.LOCK_SH)
            yield

    def _has_lists(self):
        lists = self.root / "lists"
        return lists.is_dir() and any("Sources" in p.name for p in lists.iterdir())

    def _ensure_lists(self):
        if self.suites is None:
            one_line, deb822 = host_deb_src(self.etc)
        else:
            one_line, deb822, self.missing = suites_deb_src(self.suites, self.etc)
        if not (one_line.strip() or deb822.strip()):
            what = ("no deb or deb-src entries" if self.suites is None else
                    "no deb or deb-src entry whose URI ends in /debian (or /debian-security) for "
                    f"the suites of config.yaml's debian.suites ({', '.join(self.suites) or 'none'})")
            raise FetchError(f"the host's apt has {what} ({self.etc}/sources.list, "
                             f"{self.etc}/sources.list.d/), so there is no Debian archive to ask; "
                             "configure apt, or give the recipe a URL or config.yaml a mirror")
        digest = hashlib.sha256((one_line + "\0" + deb822).encode()).hexdigest()
        stamp = self.root / "updated.json"
        try:
            done = json.loads(stamp.read_text())
            age = time.time() - stamp.stat().st_mtime
        except (OSError, ValueError):
            done, age = {}, None
        if (age is not None and age < self.refresh_hours * 3600 and done.get("sources") == digest
                and self._has_lists()):
            return
        parts = self.root / "sources.list.d"
        parts.mkdir(parents=True, exist_ok=True)
        for old in parts.iterdir():
            old.unlink()
        (self.root / "sources.list").write_text(one_line)
        if deb822:
            (parts / "host.sources").write_text(deb822)
        for sub in ("lists/partial", "cache/archives/partial", "state"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        proc = self._run("update", what="apt-get update")
        # apt exits 0 when only some indexes failed (a third-party repository without
        # deb-src, say); what matters is whether Debian's Sources indexes arrived.
        (self.root / "update.log").write_text(proc.stdout + proc.stderr)
        if proc.returncode != 0 or not self._has_lists():
            problems = _apt_problems(proc.stderr) or f"exit status {proc.returncode}"
            if self._has_lists():
                return   # keep using the previous lists; no stamp, so the next run tries again
            raise FetchError(f"apt-get update (private state in {self.root}) got no source "
                             f"indexes: {problems}")
        stamp.write_text(json.dumps({"sources": digest, "time": time.time()}))

    def print_uris(self, spec):
        """{file: (url, size, sha256 or None)} of `apt-get source --print-uris spec`."""
        proc = self._run("source", "--print-uris", spec, what=f"apt-get source {spec}")
        found = {}
        for url, name, size, checksum in re.findall(r"^'([^']+)' (\S+) (\d+) (\S+)", proc.stdout, re.M):
            kind, _, value = checksum.partition(":")
            found[name] = (url, int(size), value.lower() if kind.upper() == "SHA256" else None)
        if not found and proc.returncode != 0:
            return None, _apt_problems(proc.stderr)
        return found, None

    def madison(self, package):
        """[(version, suite)] of every version of source package `package` the lists know."""
        proc = self._run("madison", package, what=f"apt-cache madison {package}")
        out = []
        for line in proc.stdout.splitlines():
            cells = [c.strip() for c in line.split("|")]
            if len(cells) == 3 and cells[0] == package and cells[2].endswith(" Sources"):
                where = cells[2].split()
                if len(where) >= 3:
                    out.append((cells[1], where[-2].split("/")[0]))
        return out

    def showsrc(self, package):
        """[(source name, version, [file names])] for every version the lists know."""
        proc = self._run("showsrc", package, what=f"apt-cache showsrc {package}")
        out = []
        for stanza in _stanzas(proc.stdout):
            files = _get(stanza, "Checksums-Sha256") or _get(stanza, "Files") or ""
            names = [line.split()[-1] for line in files.splitlines() if len(line.split()) >= 3]
            out.append((_get(stanza, "Package"), _get(stanza, "Version"), names))
        return out

    def locate(self, package, file):
        """(url, size, sha256) of `file` in some version of source package `package`."""
        with self.ready():
            found, problem = self.print_uris(package)
            if found and file in found:
                return found[file]
            versions = self.showsrc(package)
            for name, version, names in versions:
                if file in names and name and version:
                    other, _ = self.print_uris(f"{name}={version}")
                    if other and file in other:
                        return other[file]
        if not versions and not found:
            extra = f" (apt: {problem})" if problem else ""
            raise FetchError(f"Debian's source archive, as this host's apt sources describe it, has "
                             f"no source package '{package}'{extra}; check the name after "
                             f"'debian:' (`apt-cache showsrc {package}` on a machine with deb-src)")
        have = [f"{v}: {', '.join(n)}" for _, v, n in versions] or \
               [f"{', '.join(sorted(found))}"]
        raise FetchError(f"source package '{package}' has no file {file}; it currently has "
                         f"{'; '.join(have)}. Update the recipe's file name and sha256 to one "
                         f"of these")


def _apt_problems(stderr):
    lines = [l.strip() for l in stderr.splitlines() if l.startswith(("E:", "W:", "Err:"))]
    return " / ".join(lines[-4:])[-600:]


def configured_suites(cfg):
    """config.yaml's debian.suites, or None for a stand-in configuration without it."""
    debian = (getattr(cfg, "data", None) or {}).get("debian") or {}
    return debian.get("suites")


def private_apt(cfg):
    """The PrivateApt of a configuration: its state in <cache>/apt, its suites."""
    root = Path(cfg.cache) / "apt"
    if root.is_symlink():
        raise FetchError(f"refusing to use {root}: it is a link (apt's state stays in the cache)")
    return PrivateApt(root, cfg.download.get("apt_refresh_hours", 24.0),
                      cfg.download.get("retries", 3), suites=configured_suites(cfg))


def pool_urls(package, file, etc=None):
    """Where `file` of `package` lies in each host archive's pool (main): pool/main/<p>/
    <package>/, <p> its first letter (four for lib*); pool/updates/main/... for security."""
    initial = package[:4] if package.startswith("lib") and len(package) > 3 else package[0]
    archives = host_archives(etc)
    return [f"{archives[archive][2]}/{pool}/{initial}/{package}/{quote(file, safe='')}"
            for archive, pool in (("debian", "pool/main"), ("debian-security", "pool/updates/main"))
            if archive in archives]


def resolve(package, alt, cfg):
    """(URLs to try for alt.file, why apt had none or None): apt's URL first, after
    checking that apt's sha256 for it is the one the recipe pins (no point downloading a
    file known to differ), then the file's places in the host archives' pools."""
    if not PACKAGE.match(package):
        # checked when loading too (tasks/model/recipes.py); never an apt option
        raise FetchError(f"'{package[:80]}' is not a Debian source package name")
    apt = private_apt(cfg)
    urls, unlisted = [], None
    try:
        url, size, sha = apt.locate(package, alt.file)
    except OSError as exc:
        raise FetchError(f"cannot use the private apt folder {apt.root}: {exc.strerror} "
                         f"({exc.filename})") from None
    except FetchError as exc:        # not (or no longer) listed: the pool may have it
        unlisted = exc.message
    else:
        if sha and sha != alt.sha256.lower():
            raise FetchError(f"Debian's archive lists {alt.file} ({url}) with sha256 {sha}, but "
                             f"the recipe pins {alt.sha256}; Debian changed the file or the pin "
                             f"is wrong: check it and update the recipe's sha256 (not downloaded)")
        urls.append(url)
    urls += [u for u in pool_urls(package, alt.file, apt.etc) if u not in urls]
    if not urls:
        raise FetchError(unlisted)
    return urls, unlisted


def host_mirror(etc=None):
    """The Debian archive the host's apt reads (its first URI ending in /debian), or None:
    the build root's mirror unless buildroot.mirror says otherwise. Never in the repository."""
    template = host_archives(etc).get("debian")
    return template[2] if template else None
