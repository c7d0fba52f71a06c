"""Stripping what ships: images get `strip --strip-unneeded` copies of the ELF files.

Like Buildroot's target vs staging: cache/stage keeps the unstripped trees (debug info
for whoever debugs), the image gets stripped copies of the ELF executables and shared
libraries. Only ET_EXEC/ET_DYN of the image's machine: object files, kernel modules
(ET_REL) and static archives (not ELF) need their symbols for linking. The host's strip
understands only the host's machine: another platform's image is stripped by the host's
<triplet>-strip (tasks/stages/image.py).
"""
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from tasks.core import elf
from tasks.core.errors import UserError

STRIP_ARGS = ("--strip-unneeded",)
_HOST = {}                              # the strip version, asked once per process


def strip_tool():
    """The host's strip (binutils), or a UserError saying how to get it."""
    tool = shutil.which("strip")
    if not tool:
        raise UserError("images are stripped (image option strip: true) but the host has no "
                        "`strip` program.",
                        hint="Install binutils (apt-get install binutils), or set "
                             "strip: false for the image in config.yaml.")
    return tool


def strip_version(tool=None):
    """First line of `strip --version` ("" without strip): an input of the image stamps,
    since another binutils may strip differently and must re-export. tool: another
    platform's strip (the host's aarch64-linux-gnu-strip), else the host's strip."""
    tool = tool or shutil.which("strip")
    if tool not in _HOST:
        line = ""
        if tool:
            try:
                out = subprocess.run([tool, "--version"], capture_output=True, text=True,
                                     timeout=60).stdout
                line = out.splitlines()[0].strip() if out else ""
            except (OSError, subprocess.SubprocessError):
                line = ""
        _HOST[tool] = line
    return _HOST[tool]


class Stripper:
    """Strips ELF files one at a time into a private temporary folder.

    prepare() returns the path and size to ship (the stripped temp file, or the stage's
    file itself); release() deletes the temp file once its bytes are in the layer (the
    hasher may still hold an fd on it: unlinking is safe). One temp file exists at a time,
    so disk use is bounded by the largest binary and memory is untouched. A hard-linked
    file is prepared once: image.py writes its other paths as hard link members of the
    stripped one, never as second stripped copies."""

    def __init__(self, workdir, tool=None, machine=None):
        """tool, machine: another platform's strip and its ELF machine (elfclass,
        little_endian, e_machine); by default the host's strip and machine."""
        self.tool = tool or strip_tool()
        self.version = strip_version(self.tool)
        self.machine = machine or elf.host()
        self.tmpdir = Path(tempfile.mkdtemp(prefix=".strip-", dir=workdir))
        self.count = 0
        self.saved = 0
        self.failed = []                    # [{"path", "reason"}]: shipped unstripped
        self._n = 0

    def prepare(self, src, size, rel):
        try:
            if os.stat(src).st_size != size:
                return src, size            # stream.file() reports the changed tree
        except OSError:
            return src, size                # stream.file() reports the missing file
        if not elf.is_program(src, self.machine):
            return src, size
        self._n += 1
        out = self.tmpdir / f"{self._n}"
        try:
            proc = subprocess.run([self.tool, *STRIP_ARGS, "-o", str(out), src],
                                  capture_output=True, text=True, timeout=600)
            problem = None
            if proc.returncode != 0:
                lines = (proc.stderr or proc.stdout).strip().splitlines()
                problem = f"strip failed: {lines[-1] if lines else f'exit {proc.returncode}'}"
        except (OSError, subprocess.SubprocessError) as exc:
            problem = f"strip failed: {exc}"
        if problem is None:
            before, after = elf.ident(src), elf.ident(out)
            if after != before:
                problem = "strip's output is not an ELF file of the same type and machine"
        if problem is not None:
            self.failed.append({"path": rel, "reason": problem})
            print(f"warning: {rel}: {problem}; shipped unstripped", file=sys.stderr)
            self.release(out)
            return src, size
        new_size = out.stat().st_size
        if new_size >= size:                # already stripped: ship the stage's bytes
            self.release(out)
            return src, size
        self.count += 1
        self.saved += size - new_size
        return str(out), new_size

    def release(self, path):
        if Path(path).parent == self.tmpdir:
            Path(path).unlink(missing_ok=True)

    def summary(self):
        return {"files": self.count, "bytes_saved": self.saved, "tool": self.version,
                "failed": self.failed[:20]}

    def close(self):
        shutil.rmtree(self.tmpdir, ignore_errors=True)


