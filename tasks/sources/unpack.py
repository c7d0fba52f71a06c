"""Unpacking source archives into a build's source folder, as root, safely.

Source archives are pinned by sha256 but are still not trusted to stay in their
folder. Python's tarfile (gz, bz2, xz) extracts them with these rules:

- a member with an absolute name or a '..' part is refused (the whole archive);
- a symbolic link is refused when it leads outside the unpacked tree, resolved the way
  the kernel would inside it (absolute targets, '..' past the top, chains of links);
  the check runs for each link and again over the finished tree;
- a hard link must name a regular file of the archive, reached without links;
- nothing is ever written through a link: a member whose folder, or whose own name, is
  a link already on disk is refused; so is a `dest` with a link on its way (a link that
  an earlier source unpacked, e.g. `sub -> /etc`, then `dest: sub`);
- device nodes, fifos and other special files are dropped;
- owners are not restored; setuid, setgid, sticky and group/other write bits are
  cleared (the modes of tarfile's 'data' filter; its path checks are replaced by the
  stricter ones above, which do not call realpath twice per member).
"""
import os
import shutil
import stat
import tarfile
from pathlib import Path

from tasks.core.errors import UserError, cut

MAX_HOPS = 40            # links followed while resolving one target (the kernel's limit)


class _Refused(Exception):
    def __init__(self, member, why):
        super().__init__(why)
        self.member = member
        self.why = why


def unpack(archive, dest, inner, work):
    """Unpack a tarball into dest, dropping its single top-level folder; `inner` names
    a tarball inside it to unpack instead (Debian's tarballs of tarballs). dest must be
    inside work; no link on the way to it is followed."""
    work = Path(work)
    dest = Path(dest)
    tmp = work / f".unpack-{os.getpid()}"
    nested = work / f".inner-{os.getpid()}"
    for folder in (tmp, nested):
        if folder.is_symlink() or folder.exists():
            shutil.rmtree(folder)
    tmp.mkdir()
    try:
        extract(archive, tmp)
        if inner:
            found = sorted(p for p in tmp.rglob(inner) if p.is_file() and not p.is_symlink())
            if not found:
                raise UserError(f"{Path(archive).name} holds no file named {cut(inner)}.",
                                field="inner")
            nested.mkdir()
            extract(found[0], nested)
        top = list((nested if inner else tmp).iterdir())
        single = len(top) == 1 and top[0].is_dir() and not top[0].is_symlink()
        root = top[0] if single else (nested if inner else tmp)
        prepare_dest(dest.parent, work)
        if dest.is_symlink() or (dest.exists() and not dest.is_dir()):
            raise UserError(f"{dest} is a link or a file (unpacked by an earlier source), not a "
                            "folder: sources are never unpacked through links.", field="dest")
        if dest.exists() and not any(dest.iterdir()):
            dest.rmdir()
        if dest.exists():
            for item in root.iterdir():
                os.rename(item, dest / item.name)
        else:
            os.rename(root, dest)
    except OSError as exc:
        raise UserError(f"cannot unpack {Path(archive).name} into {dest}: "
                        f"{exc.strerror or exc} ({exc.filename}).", field="sources") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.rmtree(nested, ignore_errors=True)


def extract_files(archive, wanted, work):
    """Copy the named regular files of a tarball (Debian's debian.tar.xz and its patches)
    to their destinations. wanted: [(path in the archive, destination file)]. The archive
    is unpacked under the rules above into a scratch folder of `work` first (a hostile one
    is refused whole); a wanted path must then be a regular file reached through folders,
    never through a link. Returns the wanted paths the archive does not hold as such."""
    work = Path(work)
    tmp = work / f".files-{os.getpid()}"
    if tmp.is_symlink() or tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    missing = []
    try:
        extract(archive, tmp)
        for name, dest in wanted:
            here = str(tmp)
            for part in _parts(name)[:-1]:
                here = os.path.join(here, part)
                if not stat.S_ISDIR(_lstat_mode(here)):
                    break
            else:
                here = os.path.join(here, _parts(name)[-1])
                if stat.S_ISREG(_lstat_mode(here)):
                    shutil.copyfile(here, dest, follow_symlinks=False)
                    continue
            missing.append(name)
    except OSError as exc:
        raise UserError(f"cannot unpack {Path(archive).name} into {tmp}: "
                        f"{exc.strerror or exc} ({exc.filename}).", field="sources") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return missing


def prepare_dest(folder, work):
    """Create `folder` (inside `work`) without following any link on the way; UserError
    if a part of it is a link or a file. Use it before copying a source into the tree."""
    work, folder = Path(os.path.normpath(work)), Path(os.path.normpath(folder))
    if folder != work and work not in folder.parents:
        raise UserError(f"{folder} is outside the work folder {work}.", field="dest")
    here = work
    for part in folder.relative_to(work).parts:
        here = here / part
        try:
            mode = os.lstat(here).st_mode
        except FileNotFoundError:
            os.mkdir(here)
            continue
        if not stat.S_ISDIR(mode):
            raise UserError(f"{here} is a link or a file (unpacked by an earlier source), not "
                            "a folder: sources are never unpacked or copied through links.",
                            field="dest")
    return folder


def extract(archive, into, rooted=False):
    """Extract every member of archive into the empty folder `into` (the rules above);
    returns the names of the special files that were dropped.

    rooted: the archive is a root file system (the build root): its symbolic links,
    absolute ones included, are read inside the sandbox where the tree is /, so they
    are kept as they are; the host never follows them (nothing is written through a
    link, and the sandbox recreates top-level links instead of binding them)."""
    into = os.path.realpath(into)
    dropped = []
    safe_dirs = {into}
    try:
        with tarfile.open(archive) as tar:
            tar.errorlevel = 2
            tar.extractall(into, filter=lambda m, path: _filter(m, into, safe_dirs, dropped,
                                                                  rooted))
        if not rooted:
            _check_tree(into)
    except _Refused as exc:
        raise UserError(f"{Path(archive).name}: member '{cut(exc.member)}' {exc.why}; the archive "
                        "is refused (nothing of it is used).", field="sources") from None
    except (tarfile.TarError, EOFError, ValueError) as exc:
        raise UserError(f"cannot unpack {Path(archive).name}: {cut(exc, 300)}.",
                        field="sources") from None
    return dropped


def _parts(name):
    return [p for p in name.split("/") if p not in ("", ".")]


def _filter(member, root, safe_dirs, dropped, rooted=False):
    name = member.name
    if name.startswith("/") or member.name.startswith("\\"):
        raise _Refused(name, "has an absolute name")
    parts = _parts(name)
    if ".." in parts:
        raise _Refused(name, "has a '..' part")
    if not parts:
        return None                      # the archive's "./" itself
    if not (member.isreg() or member.isdir() or member.issym() or member.islnk()):
        dropped.append(name)             # devices, fifos, unknown types
        return None
    _no_link_on_the_way(root, parts, safe_dirs, name)
    if member.issym() and rooted:
        _forget(safe_dirs, os.path.join(root, *parts))
    elif member.issym():
        if member.linkname.startswith("/"):
            raise _Refused(name, f"is a link to the absolute path {cut(member.linkname)}")
        if _escapes(root, parts[:-1], member.linkname):
            raise _Refused(name, f"is a link to {cut(member.linkname)}, outside the archive")
        _forget(safe_dirs, os.path.join(root, *parts))
    if member.islnk():
        target = _parts(member.linkname)
        if member.linkname.startswith("/") or ".." in target or not target:
            raise _Refused(name, f"is a hard link to {cut(member.linkname)}, outside the archive")
        _no_link_on_the_way(root, target, safe_dirs, name, itself=False)
        if not stat.S_ISREG(_lstat_mode(os.path.join(root, *target))):
            raise _Refused(name, f"is a hard link to {cut(member.linkname)}, which is not a "
                           "regular file of the archive")
        member = member.replace(linkname="/".join(target), deep=False)
    # tarfile's 'data' filter semantics for modes and owners (its path checks call
    # realpath twice per member; the checks above are stricter and cheaper)
    mode = member.mode & 0o755
    if member.isreg() or member.islnk():
        mode = (mode if mode & 0o100 else mode & ~0o111) | 0o600
    else:
        mode = None
    return member.replace(name="/".join(parts), mode=mode, uid=None, gid=None, uname=None,
                          gname=None, deep=False)


def _lstat_mode(path):
    try:
        return os.lstat(path).st_mode
    except FileNotFoundError:
        return 0


def _no_link_on_the_way(root, parts, safe_dirs, name, itself=True):
    """No folder of the member is a link or a file, and the member itself is not a link
    already on disk (tarfile would write through it)."""
    here = root
    for part in parts[:-1]:
        here = os.path.join(here, part)
        if here in safe_dirs:
            continue
        mode = _lstat_mode(here)
        if mode == 0:
            break                        # tarfile creates the rest as plain folders
        if not stat.S_ISDIR(mode):
            raise _Refused(name, f"would be written through the link or file {part}")
        safe_dirs.add(here)
    if itself and stat.S_ISLNK(_lstat_mode(os.path.join(root, *parts))):
        raise _Refused(name, "would replace or write through a link unpacked before it")


def _forget(safe_dirs, path):
    safe_dirs.discard(path)
    for known in [d for d in safe_dirs if d.startswith(path + "/")]:
        safe_dirs.discard(known)


def _escapes(root, folder, target):
    """Does a link in root/<folder> to `target` lead outside root? Resolved part by part
    like the kernel would with root as '/', following the links on disk."""
    stack = list(folder)
    todo = list(reversed(target.split("/")))
    hops = 0
    while todo:
        part = todo.pop()
        if part in ("", "."):
            continue
        if part == "..":
            if not stack:
                return True
            stack.pop()
            continue
        stack.append(part)
        path = os.path.join(root, *stack)
        if stat.S_ISLNK(_lstat_mode(path)):
            hops += 1
            link = os.readlink(path)
            if hops > MAX_HOPS or link.startswith("/"):
                return True
            stack.pop()
            todo.extend(reversed(link.split("/")))
    return False


def _check_tree(root, parts=()):
    """Every link of the finished tree, resolved with all of it on disk (a link may only
    escape through links unpacked after it)."""
    with os.scandir(os.path.join(root, *parts)) as entries:
        for entry in entries:
            if entry.is_symlink():
                target = os.readlink(entry.path)
                if _escapes(root, list(parts), target):
                    raise _Refused("/".join(parts + (entry.name,)), "is a link that leads "
                                   f"outside the archive (to {cut(target)})")
            elif entry.is_dir(follow_symlinks=False):
                _check_tree(root, parts + (entry.name,))
