"""Image export: a distribution's tree as a one-layer container image, without a daemon.

export_image() writes ONE uncompressed tar that is at the same time
  - a docker-archive: manifest.json with RepoTags (`docker load`, `podman load`), and
  - an OCI image layout: oci-layout, index.json, blobs/sha256/<digest>
    (skopeo `oci-archive:`, registries' tools),
the way `docker save` of Docker 25+ does. Its single layer holds only the prefix
(/.dapp/deps/<name>/<version>) and the parent folders; the image config declares the
prefix as a VOLUME and carries OCI and per-component labels.

Deterministic: entries in manifest (path) order, mtime = SOURCE_DATE_EPOCH, uid/gid 0,
no user/group names, ustar headers built here (PAX only for long or non-ASCII names),
stable JSON. Two exports of the same inputs are byte-identical, hence same digests.

Streamed: the layer is written straight into the outer tar as a member whose header is
patched once the layer's size and sha256 are known (the blob name is its digest). File
contents are copied by the kernel (copy_file_range / sendfile) while a second thread
hashes them through small mmap windows, so memory stays flat whatever the tree's size.

Stripped (strip=True, the image option's default): host-architecture ELF executables and
shared libraries go through `strip --strip-unneeded` into a temporary file whose bytes
the layer gets instead; cache/stage keeps the unstripped originals (like Buildroot's
target vs staging).
"""
import hashlib
import json
import mmap
import os
import platform
import queue
import re
import shutil
import struct
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from tasks.core.errors import UserError
from tasks.core.files import write_atomic

# ---- the toolchain's run-time part -------------------------------------------------
# An image of the toolchain distribution holding only what programs built by it need at
# run time (same prefix path). The lead puts this into config.yaml, e.g.:
#   distributions:
#     toolchain:
#       images:
#         toolchain-runtime: {name: dappdeps/toolchain-runtime, include: [...], exclude: [...]}
RUNTIME_INCLUDE = [
    "lib/ld-linux*.so*",        # the dynamic linker (lib64/ is a link to lib/ in the toolchain)
    "lib64",
    "lib64/ld-linux*.so*",
    "lib/lib*.so.[0-9]*",       # versioned shared libraries: glibc's, libstdc++, libgcc_s, ...
    "lib/gconv",                # iconv modules
    "lib/locale",               # locale-archive (C.UTF-8 ...)
    "share/locale/locale.alias",
    "etc",                      # ld.so.conf, nsswitch.conf, rpc, ...
]
RUNTIME_EXCLUDE = [
    "**/*-gdb.py",              # libstdc++'s pretty printers
    "lib/lib*san.so*",          # sanitizer runtimes: only for -fsanitize builds (full toolchain)
    "lib/libssp*",
]
RUNTIME_IMAGE = {"include": RUNTIME_INCLUDE, "exclude": RUNTIME_EXCLUDE}

# Bump when the exported bytes change for the same inputs: every image is exported again.
EXPORTER_VERSION = "1"

LABEL_PREFIX = "io.dappdeps"    # io.dappdeps.component.<name> = <version>, ...

MEDIA_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MEDIA_INDEX = "application/vnd.oci.image.index.v1+json"
MEDIA_CONFIG = "application/vnd.oci.image.config.v1+json"
MEDIA_LAYER = "application/vnd.oci.image.layer.v1.tar"

BLOCK = 512
BIG_FILE = 256 * 1024           # larger files: kernel copy + mmap hashing; smaller: read()
FLUSH_AT = 1 << 20              # bytes of headers/small files batched per write and hash
HASH_WINDOW = 16 << 20          # mmap window the hasher maps at a time (bounded RSS)
# root may skip atime updates of files it does not own (saves inode writes)
_READ_FLAGS = os.O_RDONLY | (getattr(os, "O_NOATIME", 0) if os.geteuid() == 0 else 0)


# ---- paths -------------------------------------------------------------------------
def image_paths(cache, name, version):
    """Where image:<name> writes: the tar, its result (.json/.digest) and its stamp."""
    base = Path(cache) / "images" / f"{name}-{version}"
    return {"tar": base.with_name(base.name + ".tar"),
            "json": base.with_name(base.name + ".json"),
            "digest": base.with_name(base.name + ".digest"),
            "stamp": base.with_name(base.name + ".stamp")}


def read_result(path):
    """The .json written next to an exported tar, or None."""
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None


# ---- include / exclude patterns ----------------------------------------------------
def _glob_to_regex(pattern):
    """A prefix-relative glob: * and ? within one path segment, ** across segments,
    [...] classes. A pattern naming a folder also names everything below it."""
    pat = pattern.strip().strip("/")
    if pat in ("", "**"):
        return ".*"
    out, i, n = [], 0, len(pat)
    while i < n:
        c = pat[i]
        if pat.startswith("**/", i):
            out.append("(?:.*/)?")
            i += 3
        elif pat.startswith("**", i):
            out.append(".*")
            i += 2
        elif c == "*":
            out.append("[^/]*")
            i += 1
        elif c == "?":
            out.append("[^/]")
            i += 1
        elif c == "[":
            j = pat.find("]", i + 2 if pat[i + 1:i + 2] in ("!", "]") else i + 1)
            if j < 0:
                out.append(re.escape(c))
                i += 1
                continue
            body = pat[i + 1:j]
            if body.startswith("!"):
                body = "^" + body[1:]
            out.append("[" + body.replace("\\", "\\\\") + "]")
            i = j + 1
        else:
            out.append(re.escape(c))
            i += 1
    return "".join(out) + "(?:/.*)?"


def compile_patterns(patterns):
    """One compiled regex matching any of the globs (None when there are none)."""
    patterns = [p for p in (patterns or []) if p.strip()]
    if not patterns:
        return None
    return re.compile("^(?:" + "|".join(_glob_to_regex(p) for p in patterns) + ")$", re.S)


def select(entries, include=("**",), exclude=()):
    """Entries matched by include and not by exclude, plus the folders above them."""
    inc = compile_patterns(include)
    exc = compile_patterns(exclude)
    everything = inc is not None and inc.pattern == "^(?:.*)$"
    if everything and exc is None:
        return [e for e in entries if e["type"] != "whiteout"]
    chosen = set()
    for e in entries:
        if e["type"] == "whiteout":
            continue
        path = e["path"]
        if (everything or (inc is not None and inc.match(path))) and not (exc and exc.match(path)):
            chosen.add(path)
    parents = set()
    for path in chosen:
        while "/" in path:
            path = path.rsplit("/", 1)[0]
            if path in parents:
                break
            parents.add(path)
    keep = chosen | parents
    return [e for e in entries if e["path"] in keep]


def dangling_links(entries):
    """Symlinks (within the prefix) whose target is not in the selected entries."""
    present = {e["path"] for e in entries}
    out = []
    for e in entries:
        if e["type"] != "symlink" or e["target"].startswith("/"):
            continue
        parts = e["path"].split("/")[:-1]
        for seg in e["target"].split("/"):
            if seg == "..":
                if parts:
                    parts.pop()
            elif seg not in ("", "."):
                parts.append(seg)
        target = "/".join(parts)
        if target and target not in present:
            out.append(e["path"])
    return out


# ---- tar headers -------------------------------------------------------------------
_DIR, _FILE, _LINK, _PAX = b"5", b"0", b"2", b"x"


def _octal(value, width):
    """NUL-terminated octal; GNU base-256 when it does not fit (sizes >= 8 GiB)."""
    if value < 8 ** (width - 1):
        return b"%0*o\0" % (width - 1, value)
    return bytes([0x80]) + value.to_bytes(width - 1, "big")


def _split_name(raw):
    """(name, prefix) for ustar, or None when a PAX header is needed."""
    if len(raw) <= 100:
        return raw, b""
    if len(raw) > 256:
        return None
    cut = raw.rfind(b"/", 0, 156)
    while cut > 0:
        if len(raw) - cut - 1 <= 100:
            return raw[cut + 1:], raw[:cut]
        cut = raw.rfind(b"/", 0, cut)
    return None


_ZERO8 = b"0000000\0"
_MAGIC = b"ustar\x0000"
_NAMES = b"\0" * 64                # uname, gname: empty
# checksum of the fields that never vary: uid, gid, the checksum field itself (spaces),
# magic+version, devmajor, devminor (all other padding is NUL and adds nothing)
_CONST_SUM = 2 * sum(_ZERO8) + 8 * 32 + sum(_MAGIC) + 2 * sum(_ZERO8)
_MTIMES = {}


def _ustar(name, prefix, size, mode, mtime, typeflag, linkname=b""):
    mode_f = _octal(mode, 8)
    size_f = _octal(size, 12)
    mtime_f, mtime_sum = _MTIMES.get(mtime) or _MTIMES.setdefault(
        mtime, (_octal(mtime, 12), sum(_octal(mtime, 12))))
    chksum = (_CONST_SUM + mtime_sum + sum(name) + sum(prefix) + sum(linkname) + sum(mode_f)
              + sum(size_f) + typeflag[0])
    return b"".join((
        name.ljust(100, b"\0"), mode_f, _ZERO8, _ZERO8, size_f, mtime_f,
        b"%06o\0 " % chksum, typeflag, linkname.ljust(100, b"\0"), _MAGIC, _NAMES,
        _ZERO8, _ZERO8, prefix.ljust(155, b"\0"), b"\0" * 12))


def _pax_record(key, value):
    body = b" %s=%s\n" % (key, value)
    length = len(body) + 1
    while len(str(length).encode()) + len(body) != length:
        length = len(str(length).encode()) + len(body)
    return str(length).encode() + body


def tar_header(name, size=0, mode=0o644, mtime=0, typeflag=_FILE, linkname=""):
    """Header block(s) of one tar member: ustar, preceded by a PAX header when needed."""
    raw = name.encode("utf-8", "surrogateescape")
    link = linkname.encode("utf-8", "surrogateescape")
    split = _split_name(raw) if raw.isascii() else None
    records = b""
    if split is None:
        records += _pax_record(b"path", raw)
        split = (raw[-100:].lstrip(b"/") if raw.isascii() else b"dappdeps-long-name", b"")
    if len(link) > 100 or not link.isascii():
        records += _pax_record(b"linkpath", link)
        link = b""
    head = _ustar(split[0], split[1], size, mode, mtime, typeflag, link)
    if not records:
        return head
    pax = _ustar(b"././@PaxHeader", b"", len(records), 0o644, mtime, _PAX)
    return pax + records + b"\0" * (-len(records) % BLOCK) + head


# ---- streaming with a hashing thread -----------------------------------------------
class _Hasher:
    """sha256 of a stream computed by a second thread (hashlib releases the GIL).

    Items: bytes-like chunks, or (fd, size) of a file to hash in mmap windows; the
    hasher closes those fds. The bounded queue keeps memory flat."""

    def __init__(self):
        self.sha = hashlib.sha256()
        self.error = None
        self.q = queue.Queue(maxsize=16)
        self.thread = threading.Thread(target=self._run, name="dappdeps-hash", daemon=True)
        self.thread.start()

    def _run(self):
        while True:
            item = self.q.get()
            if item is None:
                return
            try:
                if isinstance(item, tuple):
                    self._hash_file(*item)
                elif self.error is None:
                    self.sha.update(item)
            except Exception as exc:          # reported by hexdigest()
                self.error = exc

    def _hash_file(self, fd, size):
        try:
            if self.error is not None:
                return
            offset = 0
            while offset < size:
                length = min(HASH_WINDOW, size - offset)
                with mmap.mmap(fd, length, prot=mmap.PROT_READ, offset=offset) as view:
                    if hasattr(view, "madvise"):
                        view.madvise(mmap.MADV_SEQUENTIAL)
                    self.sha.update(view)
                offset += length
        finally:
            os.close(fd)

    def put(self, item):
        self.q.put(item)

    def hexdigest(self):
        self.q.put(None)
        self.thread.join()
        if self.error is not None:
            raise self.error
        return self.sha.hexdigest()

    def abort(self):
        self.error = self.error or RuntimeError("aborted")
        self.q.put(None)
        self.thread.join()


def _write_all(fd, data):
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def _kernel_copy(src, dst, size, path):
    """Copy size bytes of src (from offset 0) at dst's position; no user-space buffer."""
    offset = 0
    use_cfr = hasattr(os, "copy_file_range")
    while offset < size:
        count = min(size - offset, 1 << 30)
        done = None
        if use_cfr:
            try:
                done = os.copy_file_range(src, dst, count, offset)
            except OSError:
                use_cfr = False       # EXDEV, EINVAL, ENOSYS...: sendfile works file to file
        if done is None:
            done = os.sendfile(dst, src, offset, count)
        if done == 0:
            raise UserError(f"{path} became shorter ({offset} of {size} bytes) since the "
                            "distribution was assembled.", hint="Run the assemble task again.")
        offset += done


class _LayerStream:
    """Writes tar members to fd while hashing them; batches small writes."""

    def __init__(self, fd, mtime):
        self.fd = fd
        self.mtime = mtime
        self.hasher = _Hasher()
        self.pending = bytearray()
        self.size = 0

    def _flush(self):
        if self.pending:
            chunk, self.pending = self.pending, bytearray()
            _write_all(self.fd, chunk)
            self.hasher.put(chunk)

    def _add(self, data):
        self.pending += data
        self.size += len(data)
        if len(self.pending) >= FLUSH_AT:
            self._flush()

    def directory(self, name, mode):
        self._add(tar_header(name.rstrip("/") + "/", 0, mode, self.mtime, _DIR))

    def symlink(self, name, target):
        self._add(tar_header(name, 0, 0o777, self.mtime, _LINK, target))

    def file(self, name, mode, size, path):
        header = tar_header(name, size, mode, self.mtime, _FILE)
        pad = b"\0" * (-size % BLOCK)
        try:
            fd = os.open(path, _READ_FLAGS)
        except OSError as exc:
            raise UserError(f"cannot read {path} ({exc.strerror}), which the distribution's "
                            "manifest lists.", hint="Run the assemble task again.") from None
        if size < BIG_FILE:
            try:
                # one read() of size+1 bytes: a regular file returns all of it up to EOF,
                # so size+1 bytes back means the file grew, fewer means it shrank
                data = os.read(fd, size + 1)
                while len(data) < size:
                    more = os.read(fd, size + 1 - len(data))
                    if not more:
                        break
                    data += more
            finally:
                os.close(fd)
            if len(data) != size:
                raise UserError(f"{path} has {len(data)}{'+' if len(data) > size else ''} "
                                f"bytes but the manifest says {size}: the tree changed since "
                                "the distribution was assembled.",
                                hint="Run the assemble task again.")
            self.pending += header
            self.pending += data
            self.pending += pad
            self.size += len(header) + size + len(pad)
            if len(self.pending) >= FLUSH_AT:
                self._flush()
            return
        try:
            real = os.fstat(fd).st_size
            if real != size:
                raise UserError(f"{path} has {real} bytes but the manifest says {size}: the "
                                "tree changed since the distribution was assembled.",
                                hint="Run the assemble task again.")
            self._add(header)
            self._flush()
            _kernel_copy(fd, self.fd, size, path)
        except BaseException:
            os.close(fd)
            raise
        self.hasher.put((fd, size))            # the hasher closes fd
        self.size += size
        self._add(pad)

    def finish(self):
        self._add(b"\0" * (2 * BLOCK))
        self._flush()
        return self.hasher.hexdigest(), self.size

    def abort(self):
        self.hasher.abort()


# ---- stripping what ships ----------------------------------------------------------
# Like Buildroot's target vs staging: cache/stage keeps the unstripped trees (debug info
# for whoever debugs), the image gets `strip --strip-unneeded` copies of the ELF
# executables and shared libraries. Only ET_EXEC/ET_DYN of the host's machine: object
# files, kernel modules (ET_REL) and static archives (not ELF) need their symbols for
# linking, and the host's strip may not understand another architecture.
STRIP_ARGS = ("--strip-unneeded",)
_ET_EXEC, _ET_DYN = 2, 3
_ELF_MACHINES = {"x86_64": 62, "amd64": 62, "aarch64": 183, "arm64": 183, "i686": 3,
                 "i386": 3, "armv7l": 40, "ppc64le": 21, "s390x": 22, "riscv64": 243}


def elf_ident(head):
    """(class, byte order, e_type, e_machine) of an ELF header's first 20 bytes, or None."""
    if len(head) < 20 or head[:4] != b"\x7fELF" or head[4] not in (1, 2) or head[5] not in (1, 2):
        return None
    e_type, e_machine = struct.unpack("<HH" if head[5] == 1 else ">HH", head[16:20])
    return head[4], head[5], e_type, e_machine


def _read_head(path, size=64):
    try:
        with open(path, "rb") as fh:
            return fh.read(size)
    except OSError:
        return b""


_HOST = {}


def host_elf():
    """(class, byte order, machine) of the host's programs: the running Python's own ELF
    header says it exactly (a 32-bit userland on a 64-bit kernel included)."""
    if "elf" not in _HOST:
        ident = elf_ident(_read_head("/proc/self/exe")) or elf_ident(_read_head(sys.executable))
        if ident:
            _HOST["elf"] = (ident[0], ident[1], ident[3])
        else:                               # not Linux/ELF: from the machine name
            machine = _ELF_MACHINES.get(platform.machine().lower())
            _HOST["elf"] = (2 if sys.maxsize > 2 ** 32 else 1,
                            1 if sys.byteorder == "little" else 2, machine)
    return _HOST["elf"]


def strippable(path):
    """True for a host-architecture ELF executable or shared object (ET_EXEC/ET_DYN)."""
    ident = elf_ident(_read_head(path))
    return bool(ident) and ident[2] in (_ET_EXEC, _ET_DYN) and \
        (ident[0], ident[1], ident[3]) == host_elf()


def strip_tool():
    """The host's strip (binutils), or a UserError saying how to get it."""
    tool = shutil.which("strip")
    if not tool:
        raise UserError("images are stripped (image option strip: true) but the host has no "
                        "`strip` program.",
                        hint="Install binutils (apt-get install binutils), or set "
                             "strip: false for the image in config.yaml.")
    return tool


def strip_version():
    """First line of `strip --version` ("" without strip): an input of the image stamps,
    since another binutils may strip differently and must re-export."""
    if "version" not in _HOST:
        tool = shutil.which("strip")
        line = ""
        if tool:
            try:
                out = subprocess.run([tool, "--version"], capture_output=True, text=True,
                                     timeout=60).stdout
                line = out.splitlines()[0].strip() if out else ""
            except (OSError, subprocess.SubprocessError):
                line = ""
        _HOST["version"] = line
    return _HOST["version"]


class _Stripper:
    """Strips ELF files one at a time into a private temporary folder.

    prepare() returns the path and size to ship (the stripped temp file, or the stage's
    file itself); release() deletes the temp file once its bytes are in the layer (the
    hasher may still hold an fd on it: unlinking is safe). One temp file exists at a time,
    so disk use is bounded by the largest binary and memory is untouched."""

    def __init__(self, workdir):
        self.tool = strip_tool()
        self.version = strip_version()
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
        if not strippable(src):
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
            before, after = elf_ident(_read_head(src)), elf_ident(_read_head(out))
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


# ---- image metadata ----------------------------------------------------------------
def rfc3339(epoch):
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(int(epoch)))


def _arch():
    machine = platform.machine().lower()
    return {"x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64",
            "armv7l": "arm", "i686": "386", "i386": "386", "ppc64le": "ppc64le",
            "s390x": "s390x", "riscv64": "riscv64"}.get(machine, machine)


def _blob(obj):
    """Stable JSON bytes of a blob (sorted keys, no spaces)."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def licenses_expression(licenses):
    """SPDX AND of the components' license expressions (compound ones in parentheses)."""
    parts = []
    for lic in sorted({x.strip() for x in licenses if x and x.strip()}):
        compound = re.search(r"\s(AND|OR|WITH)\s", lic) and not (
            lic.startswith("(") and lic.endswith(")"))
        parts.append(f"({lic})" if compound and len(licenses) > 1 else lic)
    return " AND ".join(parts)


def image_labels(doc, entries, title):
    """OCI labels plus one label per component of the image (version, source sha256s)."""
    providers = {e["component"] for e in entries if e["type"] != "dir" and e.get("component")}
    comps = [c for c in doc.get("components", []) if c["name"] in providers]
    labels = {
        "org.opencontainers.image.title": title,
        "org.opencontainers.image.version": doc["version"],
        "org.opencontainers.image.licenses": licenses_expression(
            [c.get("license", "") for c in comps]),
        f"{LABEL_PREFIX}.distribution": doc["distribution"],
        f"{LABEL_PREFIX}.prefix": doc["prefix"],
        f"{LABEL_PREFIX}.components": " ".join(sorted(c["name"] for c in comps)),
    }
    for comp in comps:
        key = f"{LABEL_PREFIX}.component.{comp['name']}"
        labels[key] = str(comp.get("version", ""))
        shas = []
        for src in comp.get("sources", []):
            if isinstance(src, dict) and src.get("sha256"):
                shas.append(f"{src.get('file', '')}@sha256:{src['sha256']}")
        labels[key + ".sources"] = " ".join(shas)
    return labels


def normalized_name(repository, tag):
    """docker.io/library/x:tag style name, as containerd (Docker 25+) annotates it."""
    first = repository.split("/", 1)[0]
    if "/" in repository and ("." in first or ":" in first or first == "localhost"):
        full = repository
    elif "/" in repository:
        full = f"docker.io/{repository}"
    else:
        full = f"docker.io/library/{repository}"
    return f"{full}:{tag}"


# ---- export ------------------------------------------------------------------------
def export_image(manifest_path, stage_dir, out_tar, repository, tag, include=("**",),
                 exclude=(), source_date_epoch=0, labels=None, title=None, fsync=True,
                 strip=False):
    """Write out_tar (docker-archive + OCI layout) and, next to it, <stem>.json and
    <stem>.digest. Returns the result dict (also the content of <stem>.json).

    manifest_path  the distribution's merged manifest (cache/stage/<dist>.manifest.json)
    stage_dir      cache/stage/<dist>: a file's content is <stage_dir>/<component>/tree/<path>;
                   None = the folder named after the distribution next to the manifest
    include/exclude  globs on prefix-relative paths; parents of included paths are kept
    labels         extra (or overriding) image labels, e.g. org.opencontainers.image.source
    title          org.opencontainers.image.title (default: last part of repository)
    fsync          flush the tar to disk before renaming it into place (crash safety)
    strip          ship `strip --strip-unneeded` copies of the host-architecture ELF
                   executables and shared libraries (the stage keeps the originals); the
                   image task passes the image's `strip` option (default true there)
    """
    manifest_path = Path(manifest_path)
    out_tar = Path(out_tar)
    try:
        doc = json.loads(manifest_path.read_text())
    except (OSError, ValueError) as exc:
        raise UserError(f"cannot read the distribution's manifest ({exc}).", manifest_path,
                        hint="Run its assemble task first.") from None
    stage_dir = Path(stage_dir) if stage_dir else manifest_path.parent / doc["distribution"]
    prefix = doc["prefix"].strip("/")
    epoch = int(source_date_epoch)
    entries = select(doc["entries"], include or ["**"], exclude or [])
    if not any(e["type"] != "dir" for e in entries):
        raise UserError(f"image {repository}:{tag} would hold no file: the include patterns "
                        f"{list(include)} minus the exclude patterns {list(exclude)} select "
                        f"nothing of distribution '{doc['distribution']}'.")
    all_labels = image_labels(doc, entries, title or repository.rsplit("/", 1)[-1])
    all_labels["org.opencontainers.image.created"] = rfc3339(epoch)
    all_labels.update({k: str(v) for k, v in (labels or {}).items() if v is not None})
    all_labels = {k: v for k, v in all_labels.items() if v != ""}

    out_tar.parent.mkdir(parents=True, exist_ok=True)
    # before any output exists: a missing strip fails the export cleanly
    stripper = _Stripper(out_tar.parent) if strip else None
    tmp = out_tar.with_name(f".{out_tar.name}.tmp{os.getpid()}")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            result = _write_image(fd, doc, entries, stage_dir, prefix, repository, tag, epoch,
                                  all_labels, stripper)
            if fsync:
                os.fsync(fd)
        except BaseException:
            os.close(fd)
            tmp.unlink(missing_ok=True)
            raise
        os.close(fd)
    finally:
        if stripper is not None:
            stripper.close()
    result["stripped"] = stripper.summary() if stripper else {
        "files": 0, "bytes_saved": 0, "tool": None, "failed": []}
    os.replace(tmp, out_tar)
    result["size"] = out_tar.stat().st_size
    result["dangling_links"] = dangling_links(entries)[:20]
    stem = out_tar.name[:-4] if out_tar.name.endswith(".tar") else out_tar.name
    write_atomic(out_tar.with_name(stem + ".json"),
                 json.dumps(result, sort_keys=True, indent=1) + "\n")
    write_atomic(out_tar.with_name(stem + ".digest"), result["digest"] + "\n")
    return result


def _write_image(fd, doc, entries, stage_dir, prefix, repository, tag, epoch, labels,
                 stripper=None):
    outer = []

    def member(name, data=b"", typeflag=_FILE, mode=0o644):
        outer.append(tar_header(name, len(data), mode, epoch, typeflag))
        if data:
            outer.append(data + b"\0" * (-len(data) % BLOCK))

    # 1. the layer, streamed as the first member; its header is patched afterwards
    member("blobs/", typeflag=_DIR, mode=0o755)
    member("blobs/sha256/", typeflag=_DIR, mode=0o755)
    _write_all(fd, b"".join(outer))
    outer.clear()
    header_at = os.lseek(fd, 0, os.SEEK_CUR)
    _write_all(fd, b"\0" * BLOCK)
    stream = _LayerStream(fd, epoch)
    files = 0
    content = 0                         # bytes of file contents as shipped (after strip)
    stage = str(stage_dir)
    try:
        parts = prefix.split("/")
        for i in range(1, len(parts) + 1):
            stream.directory("/".join(parts[:i]), 0o755)
        for e in entries:
            name = f"{prefix}/{e['path']}"
            kind = e["type"]
            if kind == "dir":
                stream.directory(name, e.get("mode", 0o755))
            elif kind == "symlink":
                stream.symlink(name, e["target"])
            elif kind == "file":
                src = f"{stage}/{e['component']}/tree/{e['path']}"
                size = e["size"]
                if stripper is not None:
                    src, size = stripper.prepare(src, size, e["path"])
                try:
                    stream.file(name, e.get("mode", 0o644), size, src)
                finally:
                    if stripper is not None:
                        stripper.release(src)
                files += 1
                content += size
            else:
                raise UserError(f"entry {e['path']} has type '{e['type']}', which an image "
                                "cannot hold.")
        layer_hex, layer_size = stream.finish()
    except BaseException:
        stream.abort()
        raise
    _write_all(fd, b"\0" * (-layer_size % BLOCK))
    layer_name = f"blobs/sha256/{layer_hex}"
    os.pwrite(fd, tar_header(layer_name, layer_size, 0o644, epoch), header_at)

    # 2. config, manifest, index and the docker-archive manifest.json
    config = {
        "architecture": _arch(),
        "os": "linux",
        "created": rfc3339(epoch),
        "config": {"Labels": labels, "Volumes": {doc["prefix"]: {}}},
        "rootfs": {"type": "layers", "diff_ids": [f"sha256:{layer_hex}"]},
        "history": [{"created": rfc3339(epoch),
                     "created_by": f"dappdeps export {doc['distribution']} {doc['version']}",
                     "comment": f"{doc['prefix']}: {files} files"}],
    }
    config_blob = _blob(config)
    config_hex = hashlib.sha256(config_blob).hexdigest()
    manifest = {
        "schemaVersion": 2,
        "mediaType": MEDIA_MANIFEST,
        "config": {"mediaType": MEDIA_CONFIG, "digest": f"sha256:{config_hex}",
                   "size": len(config_blob)},
        "layers": [{"mediaType": MEDIA_LAYER, "digest": f"sha256:{layer_hex}",
                    "size": layer_size}],
    }
    manifest_blob = _blob(manifest)
    manifest_hex = hashlib.sha256(manifest_blob).hexdigest()
    ref = f"{repository}:{tag}"
    index = {
        "schemaVersion": 2,
        "mediaType": MEDIA_INDEX,
        "manifests": [{
            "mediaType": MEDIA_MANIFEST, "digest": f"sha256:{manifest_hex}",
            "size": len(manifest_blob),
            "platform": {"architecture": _arch(), "os": "linux"},
            "annotations": {"io.containerd.image.name": normalized_name(repository, tag),
                            "org.opencontainers.image.ref.name": ref},
        }],
    }
    docker_manifest = [{"Config": f"blobs/sha256/{config_hex}", "RepoTags": [ref],
                        "Layers": [layer_name]}]
    member(f"blobs/sha256/{config_hex}", config_blob)
    member(f"blobs/sha256/{manifest_hex}", manifest_blob)
    member("index.json", _blob(index) + b"\n")
    member("manifest.json", _blob(docker_manifest) + b"\n")
    member("oci-layout", _blob({"imageLayoutVersion": "1.0.0"}) + b"\n")
    outer.append(b"\0" * (2 * BLOCK))
    _write_all(fd, b"".join(outer))
    return {
        "format": 1,
        "distribution": doc["distribution"],
        "version": doc["version"],
        "prefix": doc["prefix"],
        "repository": repository,
        "tag": tag,
        "ref": ref,
        "id": f"sha256:{config_hex}",
        "digest": f"sha256:{manifest_hex}",
        "layer": f"sha256:{layer_hex}",
        "layer_size": layer_size,
        "files": files,
        "entries": len(entries),
        "content_size": content,
        "created": rfc3339(epoch),
    }
