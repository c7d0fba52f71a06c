"""Just enough ELF64 reading for the audit: interpreter, needed libraries, rpaths.

The audit needs four fields of x86_64 binaries; reading them directly avoids a
dependency and a subprocess per file.
"""
import struct

PT_INTERP, PT_DYNAMIC = 3, 2
DT_NEEDED, DT_STRTAB, DT_SONAME, DT_RPATH, DT_RUNPATH = 1, 5, 14, 15, 29
ET_EXEC, ET_DYN = 2, 3


class ElfInfo:
    def __init__(self, kind, interp, needed, rpath, runpath, soname):
        self.kind = kind
        self.interp = interp
        self.needed = needed
        self.rpath = rpath
        self.runpath = runpath
        self.soname = soname


def is_elf(path):
    try:
        with open(path, "rb") as fh:
            return fh.read(4) == b"\x7fELF"
    except OSError:
        return False


def read(path):
    """ElfInfo of a 64-bit little-endian executable or shared object, else None."""
    with open(path, "rb") as fh:
        data = fh.read()
    if data[:4] != b"\x7fELF" or data[4] != 2 or data[5] != 1:
        return None
    e_type = struct.unpack_from("<H", data, 16)[0]
    if e_type not in (ET_EXEC, ET_DYN):
        return None
    phoff, = struct.unpack_from("<Q", data, 32)
    phentsize, phnum = struct.unpack_from("<HH", data, 54)
    segments = []
    for i in range(phnum):
        p_type, _flags, p_offset, p_vaddr, _paddr, p_filesz = struct.unpack_from(
            "<IIQQQQ", data, phoff + i * phentsize)
        segments.append((p_type, p_offset, p_vaddr, p_filesz))
    interp = None
    dynamic = []
    for p_type, offset, _vaddr, size in segments:
        if p_type == PT_INTERP:
            interp = data[offset:offset + size].split(b"\0")[0].decode()
        elif p_type == PT_DYNAMIC:
            for j in range(0, size, 16):
                tag, val = struct.unpack_from("<qQ", data, offset + j)
                if tag == 0:
                    break
                dynamic.append((tag, val))
    strtab_vaddr = next((v for t, v in dynamic if t == DT_STRTAB), None)
    strtab = _vaddr_to_offset(segments, strtab_vaddr) if strtab_vaddr is not None else None

    def string(off):
        start = strtab + off
        return data[start:data.index(b"\0", start)].decode(errors="replace")

    needed, rpath, runpath, soname = [], [], [], None
    if strtab is not None:
        for tag, val in dynamic:
            if tag == DT_NEEDED:
                needed.append(string(val))
            elif tag == DT_RPATH:
                rpath += [p for p in string(val).split(":") if p]
            elif tag == DT_RUNPATH:
                runpath += [p for p in string(val).split(":") if p]
            elif tag == DT_SONAME:
                soname = string(val)
    return ElfInfo("exec" if e_type == ET_EXEC else "dyn", interp, needed, rpath, runpath, soname)


def _vaddr_to_offset(segments, vaddr):
    for p_type, offset, seg_vaddr, size in segments:
        if p_type == 1 and seg_vaddr <= vaddr < seg_vaddr + size:   # PT_LOAD
            return offset + (vaddr - seg_vaddr)
    return vaddr
