"""Stage: check-host. Like LFS's version-check.sh: the host tools stage-0 builds need.

Fails early, before any download or compile, with every missing tool and the
Debian package that provides it.
"""
import shutil

# tool -> Debian package. The stage-0 toolchain is built by the host compiler;
# bwrap/unshare run the sandboxes; tar/xz/bzip2/gzip unpack sources.
HOST_TOOLS = {
    "bwrap": "bubblewrap", "unshare": "util-linux", "mount": "mount",
    "tar": "tar", "xz": "xz-utils", "bzip2": "bzip2", "gzip": "gzip", "patch": "patch",
    "bash": "bash", "make": "make", "gcc": "gcc", "g++": "g++", "ld": "binutils",
    "bison": "bison", "flex": "flex", "gawk": "gawk", "m4": "m4", "makeinfo": "texinfo",
    "perl": "perl", "python3": "python3", "sed": "sed", "grep": "grep", "diff": "diffutils",
    "find": "findutils", "file": "file", "apt-get": "apt",
    # Without msgfmt glibc silently leaves out its translations: another output.
    "msgfmt": "gettext",
}


def missing_tools(tools=HOST_TOOLS):
    return {tool: pkg for tool, pkg in tools.items() if shutil.which(tool) is None}


def _check():
    from doit.exceptions import TaskFailed
    missing = missing_tools()
    if not missing:
        return True
    lines = "\n".join(f"  {tool:10} (apt-get install {pkg})" for tool, pkg in sorted(missing.items()))
    packages = " ".join(sorted(set(missing.values())))
    return TaskFailed(f"check-host: {len(missing)} host tool(s) missing:\n{lines}\n"
                      f"Install them with: apt-get install -y {packages}")


def tasks():
    return {
        "actions": [_check],
        "uptodate": [lambda: not missing_tools()],
        "verbosity": 2,
    }
