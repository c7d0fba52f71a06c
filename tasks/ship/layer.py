"""The build cache's layer: a component's stage output (manifest.json, build.json,
tree/) as a deterministic tar.gz, and back, checked against its manifest.

Written by the one tar writer (tasks/ship/tarwriter.py) into a gzip stream whose
compressed bytes are hashed as they are written; read back with `tarfile`, member by
member, refusing anything an output cannot hold. Hard links of the tree (entries with
"link") travel as hard link members and come back as one inode; verify_output's scan
checks that.
"""
import gzip
import hashlib
import json
import os
import shutil
import stat
import tarfile
import zlib
from pathlib import Path

from tasks.build import manifest
from tasks.core import canonical
from tasks.core.files import unique_suffix
from tasks.ship import registry
from tasks.ship.tarwriter import FileSink, TarStream

_TOP = {"manifest.json", "build.json"}
REBUILD = "Build the component again (doit clean build:<dist>/<component>)."


class _HashingFile:
    """The raw file under the gzip stream: hashes the compressed bytes it writes."""

    def __init__(self, raw):
        self.raw = raw
        self.sha = hashlib.sha256()

    def write(self, data):
        self.sha.update(data)
        return self.raw.write(data)

    def flush(self):
        self.raw.flush()


def write_layer(stage_dir, out, epoch, level=6):
    """A deterministic tar.gz of stage_dir's manifest.json, build.json and tree/ (in
    manifest order, mtime = epoch, uid/gid 0, no names). Returns (digest, size)."""
    stage_dir = Path(stage_dir)
    out = Path(out)
    doc = canonical.load(stage_dir / "manifest.json")
    tmp = out.with_name(out.name + f".tmp{unique_suffix()}")
    try:
        with open(tmp, "wb") as raw:
            hashed = _HashingFile(raw)
            with gzip.GzipFile(filename="", mode="wb", fileobj=hashed, mtime=0,
                               compresslevel=level) as gz:
                stream = TarStream(FileSink(gz), epoch, hint=REBUILD)
                for name in ("manifest.json", "build.json"):
                    path = stage_dir / name
                    stream.file(name, 0o644, os.stat(path).st_size, path)
                stream.directory("tree", 0o755)
                root = stage_dir / "tree"
                for e in doc["entries"]:
                    name = f"tree/{e['path']}"
                    if e["type"] == "dir":
                        stream.directory(name, e["mode"] & 0o7777)
                    elif e["type"] == "file" and e.get("link"):
                        stream.hardlink(name, f"tree/{e['link']}", e["mode"] & 0o7777)
                    elif e["type"] == "file":
                        stream.file(name, e["mode"] & 0o7777, e["size"], root / e["path"])
                    elif e["type"] == "symlink":
                        stream.symlink(name, e["target"])
                    elif e["type"] == "whiteout":
                        stream.chardev(name)
                    else:
                        raise ValueError(f"{stage_dir}: entry {e['path']} has type {e['type']}")
                stream.finish()
        os.replace(tmp, out)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return "sha256:" + hashed.sha.hexdigest(), out.stat().st_size


def unpack_layer(archive, dest):
    """Unpack a layer written by write_layer into dest (a new folder). Every member must
    be manifest.json, build.json or under tree/, inside a folder unpacked before it (so
    nothing is written through a symlink), and of a kind an output holds; a hard link
    must name a regular file of tree/ unpacked before it (nothing else, nothing outside)."""
    dest = Path(dest)
    dest.mkdir(parents=True)
    dirs = {""}
    regular = set()                     # tree/ files unpacked so far: hard link targets
    modes = []
    try:
        with tarfile.open(archive, mode="r:gz") as tar:
            for m in tar:
                name = m.name
                parts = name.split("/")
                if (name.startswith("/") or any(p in ("", ".", "..") for p in parts)
                        or not (name in _TOP or parts[0] == "tree")):
                    raise registry.Corrupt(f"layer member {name!r} is not part of an output")
                if name == "tree" and not m.isdir():
                    raise registry.Corrupt("layer member 'tree' is not a folder")
                parent = "/".join(parts[:-1])
                if parent not in dirs:
                    raise registry.Corrupt(f"layer member {name!r} comes before its folder")
                path = dest / name
                if m.isdir():
                    os.mkdir(path, 0o700)
                    dirs.add(name)
                    modes.append((path, m.mode & 0o7777))
                elif m.isreg():
                    src = tar.extractfile(m)
                    with open(path, "xb") as fh:
                        shutil.copyfileobj(src, fh, 1 << 20)
                    os.chmod(path, m.mode & 0o7777)
                    if parts[0] == "tree":
                        regular.add(name)
                elif m.islnk() and name not in _TOP:
                    if m.linkname not in regular:
                        raise registry.Corrupt(f"layer member {name!r} is a hard link to "
                                               f"{m.linkname!r}, not to a file of the tree "
                                               "unpacked before it")
                    os.link(dest / m.linkname, path, follow_symlinks=False)
                elif m.issym() and name not in _TOP:
                    os.symlink(m.linkname, path)
                elif m.ischr() and m.devmajor == 0 and m.devminor == 0 and name not in _TOP:
                    os.mknod(path, 0o600 | stat.S_IFCHR, os.makedev(0, 0))
                else:
                    raise registry.Corrupt(f"layer member {name!r} has a kind an output "
                                           "cannot hold")
    except (tarfile.TarError, EOFError, zlib.error, gzip.BadGzipFile, FileExistsError) as exc:
        raise registry.Corrupt(f"the layer does not unpack: {exc}") from None
    for path, mode in reversed(modes):
        os.chmod(path, mode)


def verify_output(folder, comp, manifest_digest):
    """The unpacked output must be exactly what its manifest.json says, and that
    manifest must be this component's and have the digest the config names."""
    folder = Path(folder)
    for name, kind in (("manifest.json", stat.S_ISREG), ("build.json", stat.S_ISREG),
                       ("tree", stat.S_ISDIR)):
        try:
            st = os.lstat(folder / name)
        except FileNotFoundError:
            raise registry.Corrupt(f"the layer has no {name}") from None
        if not kind(st.st_mode):          # never a link to somewhere on the host
            raise registry.Corrupt(f"the layer's {name} is not a plain "
                                   f"{'folder' if name == 'tree' else 'file'}")
    text = (folder / "manifest.json").read_bytes()
    if hashlib.sha256(text).hexdigest() != manifest_digest:
        raise registry.Corrupt("manifest.json does not have the digest the config names")
    try:
        doc = json.loads(text)
    except ValueError:
        raise registry.Corrupt("manifest.json is not JSON") from None
    for name, value in (("component", comp.name), ("distribution", comp.dist.name),
                        ("prefix", comp.dist.prefix), ("version", comp.recipe.version)):
        if doc.get(name) != value:
            raise registry.Corrupt(f"manifest.json {name} is {doc.get(name)!r}, not {value!r}")
    unwanted = manifest.privileged(doc.get("entries") or [], comp.dist.setuid)
    if unwanted:
        raise registry.Corrupt(f"it holds setuid/setgid files the distribution does not "
                               f"allow ({', '.join(unwanted[:3])})")
    try:
        manifest.mark_opaque(folder / "tree", [e for e in doc.get("entries") or []
                                                if e.get("type") == "dir"])
    except OSError as exc:
        raise registry.Corrupt(f"manifest.json names an opaque folder the layer lacks ({exc})"
                               ) from None
    entries = manifest.scan_tree(folder / "tree")
    if entries != doc.get("entries"):
        listed = {e["path"]: e for e in doc.get("entries") or []}
        found = {e["path"]: e for e in entries}
        diff = sorted(p for p in set(listed) | set(found) if listed.get(p) != found.get(p))
        raise registry.Corrupt(f"the unpacked tree differs from manifest.json at "
                               f"{', '.join(diff[:3])}")
