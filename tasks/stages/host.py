"""Stage: check-host. Like LFS's version-check.sh, for what is left on the host: the
sandbox tools and the maker of the build root (the compilers are in the build root).

Fails early, before any download or compile, with every missing tool and the
Debian package that provides it.
"""
import shutil

from tasks.core.log import echo
from tasks.model.platforms import PLATFORMS
from tasks.model.project import project
from tasks.core import emulation

# tool -> Debian package. Builds run in the build root (tasks/build/buildroot.py), not
# on the host's tools: the host needs Linux, Python, bubblewrap and util-linux's unshare
# and mount for the sandboxes, and mmdebstrap to make the build root (unless the build
# cache holds it). Source downloads from Debian's archive (`debian:` locations) need apt.
HOST_TOOLS = {
    "bwrap": "bubblewrap", "unshare": "util-linux", "mount": "mount",
    "mmdebstrap": "mmdebstrap", "apt-get": "apt",
}


def missing_tools(tools=HOST_TOOLS):
    return {tool: pkg for tool, pkg in tools.items() if shutil.which(tool) is None}


def foreign_platforms(cfg):
    """The configured platforms other than the build machine's, in PLATFORMS order."""
    wanted = {p for d in cfg.distributions.values() for p in d.platforms}
    return [p for name, p in PLATFORMS.items() if name in wanted and name != cfg.native_platform]


def _report_emulation():
    """Whether each foreign platform's programs run here (check:<dist>@<arch> needs it;
    builds do not: they cross-compile). Said, never a failure of check-host."""
    for platform in foreign_platforms(project):
        echo(f"check-host: {emulation.summary(platform)}")


def _check():
    from doit.exceptions import TaskFailed
    _report_emulation()
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
        # with a foreign platform configured it runs every time (it reads /proc only),
        # to say whether that platform's programs run here
        "uptodate": [lambda: not missing_tools() and not foreign_platforms(project)],
        "verbosity": 2,
    }
