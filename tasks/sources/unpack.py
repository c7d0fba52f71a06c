"""Unpacking source archives into a build's source folder."""
import os
import shutil
import subprocess
from pathlib import Path

from tasks.core.errors import UserError


def unpack(archive, dest, inner, work):
    """Unpack a tarball into dest, dropping its single top-level folder; `inner` names
    a tarball inside it to unpack instead (Debian's tarballs of tarballs)."""
    tmp = work / f".unpack-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    _tar(archive, tmp)
    if inner:
        found = [p for p in tmp.rglob(inner) if p.is_file()]
        if not found:
            raise UserError(f"{Path(archive).name} holds no file named {inner}.", field="inner")
        nested = work / f".inner-{os.getpid()}"
        nested.mkdir()
        _tar(found[0], nested)
        shutil.rmtree(tmp)
        tmp = nested
    top = list(tmp.iterdir())
    root = top[0] if len(top) == 1 and top[0].is_dir() else tmp
    dest.parent.mkdir(parents=True, exist_ok=True)
    if dest.exists() and not any(dest.iterdir()):
        dest.rmdir()
    if dest.exists():
        for item in root.iterdir():
            os.rename(item, dest / item.name)
    else:
        os.rename(root, dest)
    shutil.rmtree(tmp, ignore_errors=True)


def _tar(archive, into):
    proc = subprocess.run(["tar", "-xf", str(archive), "-C", str(into), "--no-same-owner"],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        raise UserError(f"cannot unpack {archive}: {proc.stderr.strip()[-400:]}")
