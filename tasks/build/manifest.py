"""Manifests: what a component installed, and what a distribution's tree holds.

A component's output is cache/stage/<distribution>/<component>/ with
  tree/           the files it installed, relative to the prefix
  manifest.json   one entry per path: type, mode, size, sha256, symlink target
  key             the component key, written last (see stamp.py)

Entry types: "dir", "file", "symlink", and "whiteout" (the component deleted a
path that a dependency installed; overlayfs records that as a 0/0 char device).
A folder with "opaque": true was deleted and made anew (nothing below shows through).
Hard links: the paths of one inode in the tree are all "file" entries (same mode, size,
sha256); every one but the first in path order also has "link": <that first path>.
"""
import os
import stat
from pathlib import Path

from tasks.core import canonical
from tasks.core.errors import UserError
from tasks.core.files import sha256_file

FORMAT = 1




def scan_tree(root):
    """Walk an output tree; return its entries sorted by path (deterministic)."""
    root = Path(root)
    entries = []
    digests = {}                            # (st_dev, st_ino) -> sha256 of a hard link
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        rel_dir = os.path.relpath(dirpath, root)
        for name in sorted(dirnames) + sorted(filenames):
            full = os.path.join(dirpath, name)
            rel = name if rel_dir == "." else f"{rel_dir}/{name}"
            st = os.lstat(full)
            mode = stat.S_IMODE(st.st_mode)
            if stat.S_ISLNK(st.st_mode):
                entries.append({"path": rel, "type": "symlink", "target": os.readlink(full)})
            elif stat.S_ISDIR(st.st_mode):
                entry = {"path": rel, "type": "dir", "mode": mode}
                if is_opaque(full):
                    # overlayfs: the build removed this folder of a dependency and made it
                    # anew; nothing of the lower layers shows through it
                    entry["opaque"] = True
                entries.append(entry)
            elif stat.S_ISREG(st.st_mode):
                entry = {"path": rel, "type": "file", "mode": mode, "size": st.st_size}
                if st.st_nlink > 1:
                    inode = (st.st_dev, st.st_ino)
                    entry["_inode"] = inode        # _mark_links() makes it "link"
                    if inode not in digests:
                        digests[inode] = sha256_file(full)
                    entry["sha256"] = digests[inode]
                else:
                    entry["sha256"] = sha256_file(full)
                entries.append(entry)
            elif stat.S_ISCHR(st.st_mode) and st.st_rdev == 0:
                entries.append({"path": rel, "type": "whiteout"})
            else:
                raise UserError(f"installed {rel}, which is neither a file, a folder nor a "
                                "symlink (device, socket or fifo); dappdeps cannot ship it.",
                                root)
    entries.sort(key=lambda e: e["path"])
    _mark_links(entries)
    return entries


def _mark_links(entries):
    """Hard links within the tree (entries sorted by path): every path of an inode after
    the first gets "link": the first. An inode with one path here is a plain file (its
    other names, if any, are outside the tree: overlayfs' index, say)."""
    first = {}
    for entry in entries:
        inode = entry.pop("_inode", None)
        if inode is None:
            continue
        if inode in first:
            entry["link"] = first[inode]
        else:
            first[inode] = entry["path"]


OPAQUE = "trusted.overlay.opaque"


def is_opaque(path):
    try:
        return os.getxattr(path, OPAQUE, follow_symlinks=False) == b"y"
    except OSError:
        return False


def mark_opaque(root, entries):
    """Set the overlayfs mark on the folders the manifest says are opaque (an output
    unpacked from a build-cache layer: tar does not carry trusted.* attributes)."""
    for entry in entries:
        if entry.get("opaque"):
            os.setxattr(os.path.join(root, entry["path"]), OPAQUE, b"y", follow_symlinks=False)


def hidden_below(entries, lower_paths):
    """The paths of lower layers that this output deletes: whiteouts, and everything
    below an opaque folder."""
    gone = [e["path"] for e in entries if e["type"] == "whiteout"]
    for entry in entries:
        if entry.get("opaque"):
            prefix = entry["path"] + "/"
            gone += [p for p in lower_paths if p.startswith(prefix)]
    return gone










def merge(dist_name, layers):
    """Lay component outputs over each other in dependency order.

    layers: [(component, entries, replaces)] in build order. A later component
    may overwrite a non-folder path of an earlier one only if it declares that it
    replaces it; otherwise two components installing one path is an error.
    Returns the merged entries, each tagged with the component that provides it.
    """
    merged = {}
    for comp, entries, replaces in layers:
        for entry in entries:
            path = entry["path"]
            prev = merged.get(path)
            if entry["type"] == "whiteout":
                if prev is not None:
                    _drop(merged, path)
                continue
            if entry.get("opaque"):
                _drop_below(merged, path)
            if prev is not None and not (prev["type"] == "dir" and entry["type"] == "dir"):
                if prev["component"] not in replaces:
                    raise UserError(
                        f"the same path {path} is installed by components '{prev['component']}' "
                        f"and '{comp}' of distribution '{dist_name}'.",
                        hint=f"Remove it from one of them, or, if '{comp}' depends on "
                             f"'{prev['component']}' and is meant to reinstall it, add "
                             f"'{prev['component']}' to its 'replaces' list.")
                if prev["type"] == "dir":
                    _drop(merged, path)
            merged[path] = dict(entry, component=comp)
    return [merged[p] for p in sorted(merged)]


def _drop_below(merged, path):
    prefix = path + "/"
    for key in [k for k in merged if k.startswith(prefix)]:
        del merged[key]


def _drop(merged, path):
    prefix = path + "/"
    for key in [k for k in merged if k == path or k.startswith(prefix)]:
        del merged[key]


PRIVILEGE_BITS = stat.S_ISUID | stat.S_ISGID
WRITE_BITS = stat.S_IWGRP | stat.S_IWOTH


def privileged(entries, allowed=()):
    """Paths of files or folders with a setuid/setgid bit that `allowed` does not name
    (the distribution's `setuid:` list in config.yaml)."""
    allowed = set(allowed)
    return [e["path"] for e in entries
            if e.get("mode", 0) & PRIVILEGE_BITS and e["path"] not in allowed]


def drop_privileges(root, allowed=()):
    """Clear setuid/setgid bits in a tree, except on the allowed paths (a build runs as
    uid 0, so `chmod u+s` or `install -m 4755` makes real setuid-root files), and group
    and other write bits everywhere (a world-writable folder of an output would let any
    local user swap a shipped file). Returns the paths whose setuid/setgid was cleared."""
    root = Path(root)
    allowed = set(allowed)
    changed = []
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            full = os.path.join(dirpath, name)
            st = os.lstat(full)
            if stat.S_ISLNK(st.st_mode):
                continue
            rel = os.path.relpath(full, root)
            mode = stat.S_IMODE(st.st_mode)
            keep = mode & ~WRITE_BITS
            if mode & PRIVILEGE_BITS and rel not in allowed:
                keep &= ~PRIVILEGE_BITS
                changed.append(rel)
            if keep != mode:
                os.chmod(full, keep, follow_symlinks=False)
    return sorted(changed)


def content_digest(entries):
    """The digest of what an output holds (paths, types, modes, contents, links): what
    the keys of dependents hold (tasks/build/key.py). Metadata beside it (license,
    description, URLs in manifest.json) is not part of it."""
    return canonical.digest_of(canonical.dumps(entries))
