"""License texts of a component, read from its verified source archives (legal:<image>).

Only the listed members are read (tarfile, one streaming pass per archive), never the
whole tree. license_files paths are relative to the unpacked source tree, the way the
build sees it ($SRCDIR): the archive's single top-level folder is dropped, a source with
`dest: gmp` answers for `gmp/...` paths, and an `inner` tarball is opened inside its outer
one. A listed file that the archive does not hold is an error (the recipe is wrong).

A zip file that is not unpacked (a Python wheel: `extract: false`, copied to
$SRCDIR/<dest>/<file>) answers for paths below its own name, the way Python's zipimport
names them: `wheels/cryptography-50.0.2-cp311-abi3-manylinux_2_28_x86_64.whl/
cryptography-50.0.2.dist-info/licenses/LICENSE` is that member of that wheel.
"""
import fnmatch
import posixpath
import tarfile
import zipfile
from pathlib import Path

from tasks.core.errors import UserError


def _norm(name):
    name = name.replace("\\", "/")
    while name.startswith("./"):
        name = name[2:]
    return name.strip("/")


def _safe_rel(path):
    """A recipe's license file path as a safe relative path (no .., not absolute)."""
    norm = posixpath.normpath(_norm(path))
    if norm in ("", ".") or norm.startswith("../") or norm == "..":
        return None
    return norm


class _Wanted:
    """Members wanted from one archive, matched with or without its top-level folder."""

    def __init__(self, paths):
        self.paths = set(paths)
        self.tops = set()          # first path components of every member
        self.found = {}            # (top or "", path) -> bytes | ("link", target)

    def offer(self, tar, member):
        name = _norm(member.name)
        if not name:
            return
        first, _, rest = name.partition("/")
        self.tops.add(first)
        for key, path in (("", name), (first, rest)):
            if path in self.paths and (member.isfile() or member.issym() or member.islnk()):
                if member.isfile():
                    self.found[(key, path)] = tar.extractfile(member).read()
                else:
                    target = member.linkname
                    if member.issym():
                        target = posixpath.normpath(posixpath.join(posixpath.dirname(name), target))
                    self.found[(key, path)] = ("link", _norm(target))

    def result(self):
        """{path: bytes or ('link', archive path)} with the top-level folder dropped when the
        archive has a single one (as the build's unpack does)."""
        keys = [next(iter(self.tops)), ""] if len(self.tops) == 1 else [""]
        out = {}
        for path in self.paths:
            for key in keys:
                if (key, path) in self.found:
                    out[path] = self.found[(key, path)]
                    break
        return out


def _scan(tar, wanted, inner=None):
    """One streaming pass; with `inner`, descend into the first member named like it."""
    for member in tar:
        if inner is not None:
            if member.isfile() and fnmatch.fnmatch(posixpath.basename(member.name), inner):
                with tarfile.open(fileobj=tar.extractfile(member), mode="r|*") as nested:
                    _scan(nested, wanted)
                return True
            continue
        wanted.offer(tar, member)
    return inner is None


def read_members(archive, paths, inner=None):
    """{path: bytes} for the given source-tree paths found in a tarball (None: not found).
    Symbolic and hard links inside the archive are followed (second pass)."""
    wanted = _Wanted(paths)
    try:
        with tarfile.open(archive, mode="r|*") as tar:
            if not _scan(tar, wanted, inner):
                raise UserError(f"{Path(archive).name} holds no file named {inner}.")
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise UserError(f"cannot read {archive}: {exc}.") from None
    got = wanted.result()
    links = {p: v[1] for p, v in got.items() if isinstance(v, tuple)}
    if links:
        again = _Wanted(set(links.values()))
        with tarfile.open(archive, mode="r|*") as tar:
            _scan(tar, again, inner)
        # link targets are archive paths, top folder included: match them as found
        raw = {path: data for (key, path), data in again.found.items() if key == ""}
        for path, target in links.items():
            data = raw.get(target)
            got[path] = data if isinstance(data, bytes) else None
    return {p: got.get(p) for p in paths}


def _download_path(cfg, file, source=None):
    path = cfg.cache / "downloads" / file
    if path.is_file() or source is None:
        return path
    try:                                   # the fetch stage knows where it keeps files
        from tasks.sources.download import cached
        hit = cached(source, cfg)
        if hit is not None and hit.alternative.file == file:
            return Path(hit.path)
    except Exception:                       # noqa: BLE001 - fall back to the plain path
        pass
    return path


ZIP_SUFFIXES = (".whl", ".zip")
MAX_ZIP_MEMBER = 16 << 20                    # a license text, not a zip bomb


def _zipped(recipe, rel):
    """(source, alternative, member) when `rel` names a member of a zip source that is not
    unpacked (`<dest>/<file>/<member>`), else None."""
    for src in recipe.sources:
        if src.extract:
            continue
        dest = src.dest.strip("/")
        for alt in src.alternatives:
            base = f"{dest}/{alt.file}" if dest else alt.file
            if alt.file.endswith(ZIP_SUFFIXES) and rel.startswith(base + "/"):
                return src, alt, rel[len(base) + 1:]
    return None


def read_zip_member(archive, member):
    """The bytes of one member of a zip file (None: not there, or not a regular file)."""
    try:
        with zipfile.ZipFile(archive) as zf:
            try:
                info = zf.getinfo(member)
            except KeyError:
                return None
            if info.is_dir() or (info.external_attr >> 16) & 0o170000 == 0o120000:
                return None                  # a folder or a symbolic link
            if info.file_size > MAX_ZIP_MEMBER:
                raise UserError(f"{member} in {Path(archive).name} is {info.file_size} bytes; "
                                f"a license text is at most {MAX_ZIP_MEMBER} bytes.")
            with zf.open(info) as fh:
                data = fh.read(MAX_ZIP_MEMBER + 1)
    except (zipfile.BadZipFile, OSError, EOFError, RuntimeError, NotImplementedError) as exc:
        raise UserError(f"cannot read {archive}: {exc}.") from None
    if len(data) > MAX_ZIP_MEMBER:
        raise UserError(f"{member} in {Path(archive).name} unpacks to more than "
                        f"{MAX_ZIP_MEMBER} bytes; a license text is smaller.")
    return data


def collect_license_texts(cfg, recipe, used_files):
    """[(relative path, bytes)] of the recipe's license_files, read from the source archives
    the component was built from (`used_files`: the source file names in its manifest)."""
    plan = {}                                # (archive, inner) -> {archive path: tree path}
    texts = []
    for i, raw in enumerate(recipe.license_files):
        rel = _safe_rel(raw)
        if rel is None:
            raise UserError(f"'{raw}' is not a path inside the source tree.", recipe.path,
                            f"license_files[{i}]")
        zipped = _zipped(recipe, rel)
        if zipped is not None:
            src, alt, member = zipped
            archive = _download_path(cfg, alt.file, src)
            if not Path(archive).is_file():
                raise UserError(f"{alt.file} is not in the download cache.", recipe.path,
                                "license_files", "Run `doit fetch` first.")
            data = read_zip_member(archive, member)
            if data is None:
                raise UserError(f"license file '{rel}' is not in {alt.file} (looked for the "
                                f"member '{member}').", recipe.path, f"license_files[{i}]",
                                "Fix the path: <dest>/<wheel file>/<member in the wheel>.")
            texts.append((rel, data))
            continue
        # the source whose dest holds this path (longest dest wins); dest "" holds the rest
        candidates = [s for s in recipe.sources if s.extract and
                      (not s.dest or rel.startswith(s.dest.strip("/") + "/"))]
        if not candidates:
            raise UserError(f"'{raw}': no extracted source of '{recipe.name}' holds this path.",
                            recipe.path, f"license_files[{i}]")
        src = max(candidates, key=lambda s: len(s.dest.strip("/")))
        alt = next((a for a in src.alternatives if a.file in used_files), src.primary)
        inside = rel[len(src.dest.strip("/")) + 1:] if src.dest.strip("/") else rel
        archive = _download_path(cfg, alt.file, src)
        plan.setdefault((archive, alt.inner), {})[inside] = rel
    for (archive, inner), members in plan.items():
        if not Path(archive).is_file():
            raise UserError(f"{Path(archive).name} is not in the download cache.", recipe.path,
                            "license_files", "Run `doit fetch` first.")
        found = read_members(archive, list(members), inner)
        for inside, rel in members.items():
            if found.get(inside) is None:
                raise UserError(
                    f"license file '{rel}' is not in {Path(archive).name} "
                    f"(looked for '{inside}' below the archive's top-level folder).",
                    recipe.path, "license_files",
                    "Fix the path (relative to the unpacked source tree), or remove it.")
            texts.append((rel, found[inside]))
    return sorted(texts)
