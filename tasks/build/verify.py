"""Is a component's output still what its build made? Its tree against its manifest.

Two depths:
  quick  every path's type, mode and size against manifest.json, no path missing or
         added, each hard link (an entry with "link") still one inode with its first
         path, and each file's (size, mtime_ns) against stat.json (recorded when the
         output was published: stagedir.replace). Costs one lstat per path (two for a
         hard link); run before a tree is assembled, exported or pushed.
  full   the quick check plus the sha256 of every file and every symlink's target
         (`doit verify`).

A mismatch names the paths and the command that repairs the component: it removes the
key, so the next run builds (or pulls) the output again.
"""
import json
import os
import stat

from tasks.core import canonical
from tasks.core.files import sha256_file

STAT_FILE = "stat.json"
SHOWN = 5


def stat_record(tree):
    """{path: [size, mtime_ns]} of the files under `tree` and its digest, for stat.json."""
    files = {}
    for dirpath, dirnames, filenames in os.walk(tree):
        dirnames.sort()
        rel_dir = os.path.relpath(dirpath, tree)
        for name in filenames:
            full = os.path.join(dirpath, name)
            st = os.lstat(full)
            if stat.S_ISREG(st.st_mode):
                rel = name if rel_dir == "." else f"{rel_dir}/{name}"
                files[rel] = [st.st_size, st.st_mtime_ns]
    return {"format": 1, "files": dict(sorted(files.items()))}


def _same_inode(st, other):
    try:
        there = os.lstat(other)
    except OSError:
        return False
    return (st.st_dev, st.st_ino) == (there.st_dev, there.st_ino)


def repair_command(comp):
    return f"doit clean {comp.task} && doit {comp.task}"


def problems(comp, full=False):
    """What differs between the component's tree and its manifest (and stat.json):
    a list of one-line descriptions, empty when it is intact."""
    try:
        doc = canonical.load(comp.manifest_path)
    except (OSError, ValueError) as exc:
        return [f"its manifest cannot be read ({exc})"]
    try:
        recorded = json.loads((comp.stage_dir / STAT_FILE).read_text())["files"]
    except (OSError, ValueError, KeyError, TypeError):
        recorded = None                      # published before stat.json existed
    tree = str(comp.tree)
    found = []
    expected = set()
    for e in doc["entries"]:
        rel = e["path"]
        expected.add(rel)
        full_path = os.path.join(tree, rel)
        try:
            st = os.lstat(full_path)
        except OSError:
            found.append(f"{rel}: missing")
            continue
        kind = e["type"]
        if kind == "file":
            if not stat.S_ISREG(st.st_mode):
                found.append(f"{rel}: no longer a file")
            elif st.st_size != e["size"]:
                found.append(f"{rel}: {st.st_size} bytes, the manifest says {e['size']}")
            elif stat.S_IMODE(st.st_mode) != e["mode"]:
                found.append(f"{rel}: mode {stat.S_IMODE(st.st_mode):o}, the manifest says {e['mode']:o}")
            elif e.get("link") and not _same_inode(st, os.path.join(tree, e["link"])):
                found.append(f"{rel}: no longer a hard link of {e['link']}")
            elif recorded is not None and recorded.get(rel, [None, None])[1] != st.st_mtime_ns:
                found.append(f"{rel}: modified after the build (mtime changed)")
            elif full and sha256_file(full_path) != e["sha256"]:
                found.append(f"{rel}: content differs from its sha256 in the manifest")
        elif kind == "dir":
            if not stat.S_ISDIR(st.st_mode):
                found.append(f"{rel}: no longer a folder")
            elif stat.S_IMODE(st.st_mode) != e["mode"]:
                found.append(f"{rel}: mode {stat.S_IMODE(st.st_mode):o}, the manifest says {e['mode']:o}")
        elif kind == "symlink":
            if not stat.S_ISLNK(st.st_mode):
                found.append(f"{rel}: no longer a symlink")
            elif full and os.readlink(full_path) != e["target"]:
                found.append(f"{rel}: points to {os.readlink(full_path)}, the manifest says {e['target']}")
        elif kind == "whiteout":
            if not (stat.S_ISCHR(st.st_mode) and st.st_rdev == 0):
                found.append(f"{rel}: no longer a whiteout")
    for dirpath, dirnames, filenames in os.walk(tree):
        rel_dir = os.path.relpath(dirpath, tree)
        for name in dirnames + filenames:
            rel = name if rel_dir == "." else f"{rel_dir}/{name}"
            if rel not in expected:
                found.append(f"{rel}: not in the manifest (added after the build)")
    return found


def describe(comp, found):
    """One paragraph: what is wrong with the component's output and how to repair it."""
    shown = "; ".join(found[:SHOWN]) + (f"; and {len(found) - SHOWN} more" if len(found) > SHOWN else "")
    return (f"{comp.task}: its output {comp.tree} does not match its manifest "
            f"{comp.manifest_path}: {shown}. Something changed it after the build. Repair: "
            f"`{repair_command(comp)}` (removes the output and its key, then builds it again).")



class Output:
    """A component's output by its paths only (what problems() and describe() need)."""

    def __init__(self, cfg, dist_name, name):
        self.task = f"build:{dist_name}/{name}{cfg.tag(dist_name)}"
        self.stage_dir = cfg.stage_of(dist_name, name)
        self.tree = self.stage_dir / "tree"
        self.manifest_path = self.stage_dir / "manifest.json"
        self.stamp_path = self.stage_dir / "key.json"


def distribution(cfg, dist_name, full=False):
    """[(output, problems)] of the distribution's components whose output changed."""
    out = []
    for name in cfg.distributions[dist_name].components:
        comp = Output(cfg, dist_name, name)
        found = problems(comp, full)
        if found:
            out.append((comp, found))
    return out


def failure(bad):
    """The TaskFailed message for distribution()'s findings (None when all is well)."""
    if not bad:
        return None
    return "\n".join(describe(comp, found) for comp, found in bad)
