"""`debian:<source-package>` locations: Debian's source archive through apt.

apt runs with private state under cache/apt (lists, cache, sources), never the
host's /etc/apt. Its deb-src entries are derived at run time from the host's own
deb sources, so no mirror host name is written into the repository. apt tells
where the file is (`apt-get source --print-uris`); the download itself goes
through the normal downloader (progress, resume, sha256 verification).
"""
import fcntl
import re
import subprocess
import time
from pathlib import Path

from .errors import FetchError

HOST_SOURCES = Path("/etc/apt/sources.list")
HOST_PARTS = Path("/etc/apt/sources.list.d")


def deb_src_from_deb822(text):
    """deb822 stanzas with Types: deb -> the same stanzas with Types: deb-src."""
    out = []
    for stanza in re.split(r"\n\s*\n", text.strip()):
        lines = stanza.splitlines()
        types = [l for l in lines if l.lower().startswith("types:")]
        if not types or "deb" not in types[0].split(":", 1)[1].split():
            continue
        if any(l.lower().startswith("enabled:") and l.split(":", 1)[1].strip().lower() == "no" for l in lines):
            continue
        lines = ["Types: deb-src" if l.lower().startswith("types:") else l for l in lines]
        out.append("\n".join(lines))
    return "\n\n".join(out) + ("\n" if out else "")


def deb_src_from_list(text):
    """One-line `deb ...` entries -> `deb-src ...`."""
    out = []
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith("deb ") or stripped.startswith("deb\t"):
            out.append("deb-src" + stripped[3:])
    return "\n".join(out) + ("\n" if out else "")


class Apt:
    def __init__(self, cache, refresh_hours=24.0):
        self.root = Path(cache) / "apt"
        self.refresh_hours = refresh_hours

    def options(self):
        r = self.root
        return ["-o", f"Dir::Etc::SourceList={r / 'sources.list'}",
                "-o", f"Dir::Etc::SourceParts={r / 'sources.list.d'}",
                "-o", f"Dir::State::Lists={r / 'lists'}",
                "-o", f"Dir::Cache={r / 'cache'}",
                "-o", "APT::Sandbox::User=root",
                "-o", "Debug::NoLocking=1", "-q"]

    def _write_sources(self):
        parts = self.root / "sources.list.d"
        parts.mkdir(parents=True, exist_ok=True)
        for old in parts.iterdir():
            old.unlink()
        (self.root / "sources.list").write_text(
            deb_src_from_list(HOST_SOURCES.read_text()) if HOST_SOURCES.is_file() else "")
        found = bool((self.root / "sources.list").read_text().strip())
        if HOST_PARTS.is_dir():
            for src in sorted(HOST_PARTS.iterdir()):
                if src.suffix == ".sources":
                    text = deb_src_from_deb822(src.read_text())
                elif src.suffix == ".list":
                    text = deb_src_from_list(src.read_text())
                else:
                    continue
                if text.strip():
                    (parts / src.name).write_text(text)
                    found = True
        if not found:
            raise FetchError("the host has no Debian/Ubuntu deb sources configured, so "
                             "debian: locations cannot be resolved.", HOST_PARTS,
                             hint="Configure apt, add a mirror in config.yaml, or use offline mode.")

    def update(self):
        """Refresh the private lists when missing or older than refresh_hours (locked)."""
        self.root.mkdir(parents=True, exist_ok=True)
        stamp = self.root / "updated"
        with open(self.root / "lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if stamp.exists() and time.time() - stamp.stat().st_mtime < self.refresh_hours * 3600:
                return
            self._write_sources()
            for sub in ("lists/partial", "cache/archives/partial"):
                (self.root / sub).mkdir(parents=True, exist_ok=True)
            proc = subprocess.run(["apt-get", *self.options(), "update"], capture_output=True, text=True)
            if proc.returncode != 0:
                raise FetchError(f"apt-get update (private state in {self.root}) failed: "
                                 f"{proc.stderr.strip()[-500:]}")
            stamp.write_text(time.strftime("%Y-%m-%d %H:%M:%S\n"))

    def versions(self, package):
        proc = subprocess.run(["apt-cache", *self.options(), "showsrc", package],
                              capture_output=True, text=True)
        return re.findall(r"^Version: (\S+)", proc.stdout, re.M)

    def uris(self, package, version=None):
        """{file name: (url, sha256 or None)} of one version of a source package."""
        spec = f"{package}={version}" if version else package
        proc = subprocess.run(["apt-get", *self.options(), "source", "--print-uris", spec],
                              capture_output=True, text=True, cwd=self.root)
        found = {}
        for url, name, _size, checksum in re.findall(r"^'([^']+)' (\S+) (\d+) (\S+)", proc.stdout, re.M):
            sha = checksum.split(":", 1)[1] if checksum.upper().startswith("SHA256:") else None
            found[name] = (url, sha)
        return found

    def locate(self, package, file):
        """URL of `file` in any version of `package` that the archive lists."""
        self.update()
        seen = {}
        for version in [None] + self.versions(package):
            files = self.uris(package, version)
            if file in files:
                return files[file][0]
            seen.update(files)
        if not seen:
            raise FetchError(f"Debian's source archive has no package '{package}'.",
                             field=f"debian:{package}")
        origs = sorted(n for n in seen if ".orig" in n) or sorted(seen)
        raise FetchError(f"source package '{package}' has no file {file}; its versions now offer: "
                         f"{', '.join(origs)}.", field=f"debian:{package}",
                         hint="Update the recipe's file name and sha256.")
