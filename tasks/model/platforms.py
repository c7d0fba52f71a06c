"""Platforms (config `platforms:`, issue 16): which machines a distribution is built for.

A platform is an OCI platform name (`linux/amd64`, `linux/arm64`). The build machine's
own platform is *native*: its tasks, stage folders, logs and keys are spelled exactly as
before platforms existed, so existing outputs and the build cache stay valid. Any other
platform is *foreign*: `@<arch>` is part of its task names (`build:base/sed@arm64`,
`assemble:base@arm64`), of its folders (`cache/stage/base@arm64/sed/`,
`cache/logs/base@arm64/sed.log`) and of its keys (tasks/model/cross.py).

What the engine knows of each platform is data, here, in one table: the GNU triplet a
cross build passes as `--host=`, the dynamic linker's file name (DT_INTERP and
`--dynamic-linker`), the ELF machine an audit expects, the kernel's ARCH for headers, and
the qemu-user emulator that runs its programs on another machine (docs/toolchain.md,
"Plan: arm64").
"""
import platform as _platform
from dataclasses import dataclass


@dataclass(frozen=True)
class Platform:
    name: str               # OCI platform: os/architecture
    arch: str               # OCI architecture, the tag in task names and folders
    triplet: str            # GNU triplet: configure --host/--build, <triplet>-gcc
    loader: str             # glibc's dynamic linker, in the toolchain prefix's lib/
    elf_machine: str        # e_machine of its programs, pyelftools' name
    elf_class: int          # 32 or 64
    kernel_arch: str        # linux's ARCH= for `make headers`
    qemu: str               # binfmt_misc entry and Debian's qemu-user-static program
    uname: tuple            # what `uname -m` says on it (platform.machine())
    little_endian: bool = True   # byte order of its ELF files (both known ones: little)


PLATFORMS = {p.name: p for p in (
    Platform("linux/amd64", "amd64", "x86_64-linux-gnu", "ld-linux-x86-64.so.2",
             "EM_X86_64", 64, "x86_64", "qemu-x86_64", ("x86_64", "amd64")),
    Platform("linux/arm64", "arm64", "aarch64-linux-gnu", "ld-linux-aarch64.so.1",
             "EM_AARCH64", 64, "arm64", "qemu-aarch64", ("aarch64", "arm64")),
)}


def platform_check(value):
    """Config check of one platform name: None, or what is wrong (the known ones listed)."""
    if value in PLATFORMS:
        return None
    known = ", ".join(PLATFORMS)
    return f"'{value}' is not a platform dappdeps knows (known: {known})."


def platforms_check(values):
    if not values:
        return "is empty: name at least one platform, e.g. [linux/amd64]."
    twice = sorted({v for v in values if values.count(v) > 1})
    return f"names {', '.join(twice)} twice." if twice else None


def native(machine=None):
    """The build machine's platform, from `uname -m` (None when dappdeps knows no
    platform of that machine)."""
    machine = machine or _platform.machine()
    return next((p.name for p in PLATFORMS.values() if machine in p.uname), None)


def suffix(platform_name, native_name):
    """'' for the native platform (names as before platforms existed), '@arm64' else."""
    if not platform_name or platform_name == native_name:
        return ""
    return "@" + PLATFORMS[platform_name].arch
