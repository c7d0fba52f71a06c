"""Running a foreign platform's programs on the build machine: binfmt_misc + qemu-user.

check:<dist>@arm64 runs its smoke tests in the empty root like a native check. The
kernel hands each aarch64 ELF file to the interpreter registered in binfmt_misc (Debian's
qemu-user-static: /usr/libexec/qemu-binfmt/aarch64-binfmt-P -> /usr/bin/qemu-aarch64-static).
That works inside the empty root only with the F (fix-binary) flag: the kernel opens the
interpreter when it is registered, so no emulator is needed inside the sandbox. `./setup`
registers it (docs/toolchain.md, "Checks without arm64 hardware").
"""
import functools
import hashlib
from pathlib import Path

BINFMT = Path("/proc/sys/fs/binfmt_misc")


def registration(entry, root=BINFMT):
    """{enabled, interpreter, flags} of a binfmt_misc entry (e.g. qemu-aarch64), or None."""
    try:
        text = (Path(root) / entry).read_text()
    except OSError:
        return None
    lines = text.splitlines()
    found = {"enabled": bool(lines) and lines[0].strip() == "enabled", "interpreter": "",
             "flags": ""}
    for line in lines[1:]:
        key, _, value = line.partition(" ")
        if key == "interpreter":
            found["interpreter"] = value.strip()
        elif key == "flags:":
            found["flags"] = value.strip()
    return found


def problem(platform, root=BINFMT):
    """None when `platform`'s programs run here, in an empty root too; else what is
    missing and how to get it."""
    how = ("Run ./setup as root (it mounts binfmt_misc and enables Debian's "
           f"qemu-user-static {platform.qemu} entry; docs/toolchain.md), or by hand: "
           "apt-get install qemu-user-static binfmt-support; "
           f"mount -t binfmt_misc binfmt_misc {root}; update-binfmts --enable {platform.qemu}")
    if not (Path(root) / "status").exists():
        return f"binfmt_misc is not mounted at {root}. {how}"
    found = registration(platform.qemu, root)
    if found is None:
        return f"no binfmt_misc entry {platform.qemu} for {platform.name} programs. {how}"
    if not found["enabled"]:
        return f"the binfmt_misc entry {platform.qemu} is disabled. {how}"
    if "F" not in found["flags"]:
        return (f"the binfmt_misc entry {platform.qemu} lacks the F (fix-binary) flag "
                f"(flags: {found['flags'] or 'none'}): its interpreter "
                f"{found['interpreter']} would be looked up inside the empty root, where "
                "it is not. Debian's qemu-user-static registers it with F.")
    return None


def summary(platform, root=BINFMT):
    """One line for check-host."""
    found = problem(platform, root)
    if found is None:
        entry = registration(platform.qemu, root)
        return (f"{platform.name} programs run here: binfmt_misc {platform.qemu} -> "
                f"{entry['interpreter']} (flags {entry['flags']})")
    return f"{platform.name} programs do not run here: {found}"


@functools.lru_cache(maxsize=None)
def identity(platform, root=BINFMT):
    """What runs `platform`'s programs here, as a build input: the binfmt_misc entry and
    the sha256 of its interpreter's program (qemu-aarch64-static). None when they do not
    run here (problem() says why). A build that runs them (recipe `emulated`) has it in
    its key: another emulator may behave otherwise."""
    if problem(platform, root) is not None:
        return None
    entry = registration(platform.qemu, root)
    program = Path(entry["interpreter"]).resolve()
    try:
        digest = hashlib.sha256(program.read_bytes()).hexdigest()
    except OSError:
        return None
    return f"{platform.qemu} {program.name} sha256:{digest}"
