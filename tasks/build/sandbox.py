"""bubblewrap sandboxes with overlayfs views of prefixes.

A build sees:
  /                  an empty, read-only tmpfs
  /usr /etc /bin ... the host's, read-only (stage-0 toolchain builds need host tools)
  <its prefix>       writable overlay: lower = the outputs of its dependencies,
                     upper = a fresh folder that becomes the component's output
  <used prefixes>    read-only overlays of the distributions it uses
  /dappdeps/src, /dappdeps/build   writable; /tmp is a private tmpfs
and no network unless the recipe asks for it.

overlayfs needs a private mount namespace: `unshare -m` runs a short shell
script that mounts the overlays and then execs bwrap, which binds them at
their absolute prefix paths. Everything disappears when the process ends.
"""
import ctypes
import os
import shlex
import signal
import subprocess
from pathlib import Path

from tasks.model.component import BUILD, HOME, SRC  # noqa: F401 - the sandbox's layout

HOST_DIRS = ("usr", "etc", "bin", "sbin", "lib", "lib32", "lib64", "libx32", "opt")

# Redirects and metacopy would make the captured upper folder depend on kernel
# features; without them a rename of a lower folder falls back to copying.
OVERLAY_OPTS = "redirect_dir=off,metacopy=off,index=off,xino=off"


class Overlay:
    """One overlay mount: lowers (top first), optional upper/work, mount point."""

    def __init__(self, mountpoint, lowers, upper=None, work=None):
        self.mountpoint = Path(mountpoint)
        self.lowers = [Path(p) for p in lowers]
        self.upper = upper and Path(upper)
        self.work = work and Path(work)

    def shell(self, empty, base):
        lowers = [_rel(p, base) for p in (self.lowers or [Path(empty)])]
        if self.upper is None and len(lowers) == 1:
            # A read-only overlay needs two layers; one folder is just a bind.
            return f"mount --bind -o ro {shlex.quote(str(lowers[0]))} {shlex.quote(str(self.mountpoint))}"
        opts = "lowerdir=" + ":".join(_escape(p) for p in lowers)
        if self.upper is not None:
            opts += f",upperdir={_escape(_rel(self.upper, base))},workdir={_escape(_rel(self.work, base))}"
        opts += "," + OVERLAY_OPTS
        return f"mount -t overlay overlay -o {shlex.quote(opts)} {shlex.quote(str(self.mountpoint))}"


def _rel(path, base):
    # The mount options are limited to one page: relative paths keep a
    # distribution of many components well under it.
    try:
        return Path(path).relative_to(base)
    except ValueError:
        return Path(path)


def _escape(path):
    # overlayfs splits lowerdir on ':' and ','; escape them.
    return str(path).replace("\\", "\\\\").replace(":", "\\:").replace(",", "\\,")


def host_binds():
    args = []
    for name in HOST_DIRS:
        path = Path("/") / name
        if path.is_symlink():
            args += ["--symlink", os.readlink(path), str(path)]
        elif path.is_dir():
            args += ["--ro-bind", str(path), str(path)]
    return args


def command(*, overlays, mounts, binds, env, argv, network=False, chdir=SRC, scratch, base="/",
            host=True):
    """The full argv: unshare -m sh -c '<mount overlays>; exec bwrap ... argv'.

    overlays: [(Overlay, prefix_in_sandbox, writable)]
    mounts:   [(host_path, sandbox_path, writable)] plain binds (source, build dir)
    binds:    extra read-only files [(host_path, sandbox_path)]
    scratch:  a host folder for mount points and the empty lower layer
    base:     folder the mount script runs in; overlay paths are made relative to it
    host:     bind the host's /usr, /etc, ... read-only (False: an empty root, like
              a FROM-scratch container with only the prefixes mounted)
    """
    scratch = Path(scratch)
    empty = scratch / "empty"
    empty.mkdir(parents=True, exist_ok=True)
    lines = ["set -e", f"cd {shlex.quote(str(base))}"]
    bw = ["bwrap", "--die-with-parent", "--unshare-pid", "--unshare-ipc", "--unshare-uts",
          "--hostname", "dappdeps", "--tmpfs", "/"]
    if not network:
        bw.append("--unshare-net")
    if host:
        bw += host_binds()
    bw += ["--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp"]
    for i, (overlay, target, writable) in enumerate(overlays):
        overlay.mountpoint.mkdir(parents=True, exist_ok=True)
        lines.append(overlay.shell(empty, base))
        bw += ["--bind" if writable else "--ro-bind", str(overlay.mountpoint), target]
    for host, target, writable in mounts:
        bw += ["--bind" if writable else "--ro-bind", str(host), target]
    for host, target in binds:
        bw += ["--ro-bind", str(host), target]
    bw += ["--remount-ro", "/", "--chdir", chdir, "--clearenv"]
    for key, value in env.items():
        bw += ["--setenv", key, value]
    bw += list(argv)
    lines.append("exec " + " ".join(shlex.quote(a) for a in bw))
    return ["unshare", "-m", "--propagation", "private", "sh", "-c", "\n".join(lines)]


_PR_SET_PDEATHSIG = 1


def _die_with_parent():
    # If doit is killed (even with SIGKILL) the whole sandbox goes with it, so a
    # later run never races an orphaned build writing into the same work folder.
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    os.setsid()


def run(argv, log_path, timeout=None):
    """Run argv with stdout+stderr appended to log_path; return the exit status."""
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                preexec_fn=_die_with_parent)
        try:
            return proc.wait(timeout=timeout)
        except BaseException:
            # Ctrl-C or SIGTERM: stop the build now; a half output never counts.
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            raise
