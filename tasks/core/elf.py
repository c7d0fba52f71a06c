"""ELF files, read with pyelftools: the one ELF reader of dappdeps.

The audit (tasks/verify/audit.py) asks what a program or library needs at run time
(interpreter, DT_NEEDED, RPATH/RUNPATH, and the symbol versions of .gnu.version_r) and
what a library provides (the versions of .gnu.version_d); image stripping
(tasks/ship/strip.py) asks only what kind of file it is (ident) and whether the host
runs that machine.
"""
import platform
import sys
from collections import namedtuple

from elftools.common.exceptions import ELFError
from elftools.construct import ConstructError
from elftools.elf.dynamic import DynamicSegment
from elftools.elf.elffile import ELFFile
from elftools.elf.gnuversions import GNUVerDefSection, GNUVerNeedSection
from elftools.elf.segments import InterpSegment

MAGIC = b"\x7fELF"
EXECUTABLE_TYPES = ("ET_EXEC", "ET_DYN")
# what a truncated or corrupt file that starts like ELF makes pyelftools raise
_BROKEN = (ELFError, ConstructError, ValueError, EOFError)

# (elfclass, little_endian, type, machine), with pyelftools' names: (64, True, "ET_DYN",
# "EM_X86_64")
Ident = namedtuple("Ident", "elfclass little_endian type machine")


class ElfInfo:
    def __init__(self, kind, interp, needed, rpath, runpath, soname, machine=None, elfclass=None):
        self.kind = kind            # "exec" or "dyn"
        self.interp = interp
        self.needed = needed
        self.rpath = rpath
        self.runpath = runpath
        self.soname = soname
        self.machine = machine      # e_machine, pyelftools' name: "EM_X86_64", "EM_AARCH64"
        self.elfclass = elfclass    # 32 or 64


def is_elf(path):
    try:
        with open(path, "rb") as fh:
            return fh.read(4) == MAGIC
    except OSError:
        return False


def _open(path):
    """(file object, ELFFile) or None when path is not an ELF file pyelftools reads."""
    if not is_elf(path):
        return None
    fh = open(path, "rb")
    try:
        return fh, ELFFile(fh)
    except _BROKEN:
        fh.close()
        return None


def ident(path):
    """Ident of an ELF file, or None (not ELF, unreadable, or broken)."""
    opened = _open(path)
    if opened is None:
        return None
    fh, elf = opened
    with fh:
        return Ident(elf.elfclass, elf.little_endian, elf["e_type"], elf["e_machine"])


_HOST = {}
_MACHINES = {"x86_64": "EM_X86_64", "amd64": "EM_X86_64", "aarch64": "EM_AARCH64",
             "arm64": "EM_AARCH64", "i686": "EM_386", "i386": "EM_386", "armv7l": "EM_ARM",
             "ppc64le": "EM_PPC64", "s390x": "EM_S390", "riscv64": "EM_RISCV"}


def host():
    """(elfclass, little_endian, machine) of the host's programs: the running Python's
    own ELF header says it exactly (a 32-bit userland on a 64-bit kernel included)."""
    if "host" not in _HOST:
        found = ident("/proc/self/exe") or ident(sys.executable)
        if found:
            _HOST["host"] = (found.elfclass, found.little_endian, found.machine)
        else:                               # not Linux/ELF: from the machine name
            _HOST["host"] = (64 if sys.maxsize > 2 ** 32 else 32, sys.byteorder == "little",
                             _MACHINES.get(platform.machine().lower()))
    return _HOST["host"]


def is_program(path, machine):
    """True for an ELF executable or shared object (ET_EXEC/ET_DYN) of `machine`:
    (elfclass, little_endian, e_machine) as host() gives it."""
    found = ident(path)
    return bool(found) and found.type in EXECUTABLE_TYPES and \
        (found.elfclass, found.little_endian, found.machine) == tuple(machine)


def is_host_program(path):
    """True for a host-architecture ELF executable or shared object (ET_EXEC/ET_DYN)."""
    return is_program(path, host())


def read(path):
    """ElfInfo of an executable or shared object, else None (not ELF, or another type)."""
    opened = _open(path)
    if opened is None:
        return None
    fh, elf = opened
    with fh:
        e_type = elf["e_type"]
        if e_type not in EXECUTABLE_TYPES:
            return None
        interp, needed, rpath, runpath, soname = None, [], [], [], None
        try:
            for segment in elf.iter_segments():
                if isinstance(segment, InterpSegment):
                    interp = segment.get_interp_name()
                elif isinstance(segment, DynamicSegment):
                    for tag in segment.iter_tags():
                        kind = tag.entry.d_tag
                        if kind == "DT_NEEDED":
                            needed.append(tag.needed)
                        elif kind == "DT_RPATH":
                            rpath += [p for p in tag.rpath.split(":") if p]
                        elif kind == "DT_RUNPATH":
                            runpath += [p for p in tag.runpath.split(":") if p]
                        elif kind == "DT_SONAME":
                            soname = tag.soname
        except _BROKEN:
            return None
    return ElfInfo("exec" if e_type == "ET_EXEC" else "dyn", interp, needed, rpath, runpath,
                   soname, elf["e_machine"], elf.elfclass)


def needed_versions(path):
    """The symbol versions an ELF file needs, by library (.gnu.version_r), without the
    weak ones (ld.so only warns about those): {"libc.so.6": {"GLIBC_2.34", ...}, ...};
    {} for none or not ELF."""
    out = {}
    for verneed, auxiliaries in _versions(path, GNUVerNeedSection):
        out.setdefault(verneed.name, set()).update(
            aux.name for aux in auxiliaries if not aux["vna_flags"] & 2)   # VER_FLG_WEAK
    return out


def defined_versions(path):
    """The symbol versions a shared library defines (.gnu.version_d), without the base
    entry (its own soname): {"GLIBC_2.2.5", ..., "GLIBC_2.36", "GLIBC_PRIVATE"}."""
    return {auxiliaries[0].name for verdef, auxiliaries in _versions(path, GNUVerDefSection)
            if auxiliaries and not verdef["vd_flags"] & 1}   # VER_FLG_BASE; [1:]: parents


def _versions(path, kind):
    """[(entry, [auxiliary entries])] of the GNU version sections of that kind."""
    opened = _open(path)
    if opened is None:
        return []
    fh, elf = opened
    with fh:
        try:
            return [(head, list(auxiliaries))
                    for section in elf.iter_sections() if isinstance(section, kind)
                    for head, auxiliaries in section.iter_versions()]
        except _BROKEN:
            return []
