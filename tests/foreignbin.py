"""Real programs of another platform for the tests: Debian's busybox-static for arm64
(and any other arm64 package, arm64_package),
of the host's Debian release (so the host's busybox names the same applets:
enginefixture.busybox_files), fetched with `apt-get download` through a private apt state
(its own sources, lists, cache and status under .test-foreign/<release>/, architecture
arm64): the host's dpkg and apt architectures are never changed. apt checks the .deb
against the signed Packages index. The one helper for it (the tests' arm64 trees, fixture
builds and arm64 base images)."""
import shutil
import subprocess
from pathlib import Path

from tasks.sources.debian import host_archives

def host_release():
    """The host's Debian codename (bookworm), from /etc/os-release."""
    fields = dict(line.split("=", 1) for line in Path("/etc/os-release").read_text().split()
                  if "=" in line)
    return fields.get("VERSION_CODENAME", "bookworm").strip('"')


SUITE = host_release()
ROOT = Path(__file__).resolve().parent.parent / ".test-foreign" / SUITE


def busybox_arm64():
    """Path of the aarch64 busybox binary (statically linked), fetched once."""
    out = ROOT / "arm64" / "busybox"
    if out.is_file():
        return out
    unpacked = arm64_package("busybox-static")
    out.parent.mkdir(parents=True, exist_ok=True)
    # /bin/busybox up to bookworm, /usr/bin/busybox since trixie (merged /usr)
    (found,) = [p for p in (unpacked / "bin/busybox", unpacked / "usr/bin/busybox")
                if p.is_file() and not p.is_symlink()]
    shutil.copy2(found, out)
    return out


def arm64_package(package):
    """The files of Debian's `package`:arm64 (the host's release), unpacked once under
    .test-foreign/<release>/unpacked/<package>."""
    unpacked = ROOT / "unpacked" / package
    if (unpacked / ".done").is_file():
        return unpacked
    template = host_archives().get("debian")
    assert template, "the host's apt sources name no /debian archive to read arm64 from"
    uri = template[2]
    signed = dict((k.lower(), v) for k, v in template[1]).get("signed-by", "") \
        if template[0] == "stanza" else ""
    apt = ROOT / "apt"
    for sub in ("lists/partial", "cache/archives/partial", "state", "sources.list.d", "debs"):
        (apt / sub).mkdir(parents=True, exist_ok=True)
    (apt / "state" / "status").touch()
    options = f"arch=arm64{' signed-by=' + signed if signed else ''}"
    (apt / "sources.list").write_text(f"deb [{options}] {uri} {SUITE} main\n")
    opts = ["-o", f"Dir::Etc::SourceList={apt / 'sources.list'}",
            "-o", f"Dir::Etc::SourceParts={apt / 'sources.list.d'}",
            "-o", f"Dir::State={apt / 'state'}", "-o", f"Dir::State::Lists={apt / 'lists'}",
            "-o", f"Dir::State::status={apt / 'state' / 'status'}",
            "-o", f"Dir::Cache={apt / 'cache'}", "-o", "APT::Architecture=arm64",
            "-o", "APT::Architectures::=arm64", "-o", "APT::Sandbox::User=root",
            "-o", "Acquire::Languages=none", "-q"]
    subprocess.run(["apt-get", *opts, "update"], check=True, capture_output=True)
    subprocess.run(["apt-get", *opts, "download", f"{package}:arm64"], check=True,
                   capture_output=True, cwd=apt / "debs")
    deb = next((apt / "debs").glob(f"{package}_*_arm64.deb"))
    shutil.rmtree(unpacked, ignore_errors=True)
    unpacked.mkdir(parents=True)
    subprocess.run(["dpkg-deb", "-x", str(deb), str(unpacked)], check=True)
    (unpacked / ".done").touch()
    return unpacked
