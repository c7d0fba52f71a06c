"""bubblewrap sandboxes with overlayfs views of prefixes: the boundary of every build,
smoke test and upstream test suite (docs/security.md).

A sandboxed step sees:
  /                  an empty, read-only tmpfs
  /usr /bin /lib...  the build root's (tasks/build/buildroot.py), read-only: a pinned
                     Debian tree, never the host's
  /etc               the build root's, with generated passwd, group, hosts and
                     nsswitch.conf on top; nothing of the host's /etc (a recipe with
                     network: true gets the host's resolv.conf)
  <its prefix>       writable overlay: lower = the outputs of its dependencies,
                     upper = a fresh folder that becomes the component's output
  <used prefixes>    read-only overlays of the distributions it uses
  /dappdeps/src, /dappdeps/build   writable; /tmp is a private tmpfs
and runs as uid 0 of a user namespace (uid 0 outside, so outputs are owned by root) with
every capability dropped, no nested user namespaces, its own pid/ipc/uts/cgroup/network
namespaces (network only if the recipe asks) and a new session. So it cannot mount,
remount, mknod, ptrace or signal host processes, load modules, write /proc/sys, or write
anywhere but its upper folder, its build folders and /tmp.

overlayfs needs a private mount namespace and real root: `unshare -m` runs a short shell
script that mounts the overlays, then execs bwrap, which binds them at their absolute
prefix paths. Everything disappears when the process ends.
"""
import ctypes
import os
import shlex
import signal
import subprocess
import threading
from pathlib import Path

from tasks.model.component import SRC

# For a recipe that declares `network: true`: the host's name resolution, laid over the
# build root's (tasks/build/buildroot.py makes these mount points). Certificates come
# from the build root's own ca-certificates.
HOST_ETC_NETWORK = ("resolv.conf", "gai.conf", "protocols", "services")
# Laid over the build root's /etc: only root and nobody exist, and names resolve locally.
GENERATED_ETC = {
    "passwd": "root:x:0:0:root:/dappdeps/home:/bin/bash\n"
              "nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n",
    "group": "root:x:0:\nnogroup:x:65534:\n",
    "hosts": "127.0.0.1 localhost dappdeps\n::1 localhost ip6-localhost ip6-loopback\n",
    "nsswitch.conf": "passwd: files\ngroup: files\nshadow: files\nhosts: files dns\n"
                     "networks: files\nprotocols: files\nservices: files\n",
}

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


def etc_binds(scratch, network):
    """The generated /etc files (and the host's name resolution with network), bound
    over the build root's /etc."""
    args = []
    etc = Path(scratch) / "etc"
    etc.mkdir(parents=True, exist_ok=True)
    for name, text in GENERATED_ETC.items():
        (etc / name).write_text(text)
        args += ["--ro-bind", str(etc / name), f"/etc/{name}"]
    for name in HOST_ETC_NETWORK if network else ():
        path = Path("/etc") / name
        if path.is_file():
            args += ["--ro-bind", str(path), str(path)]
    return args


def command(*, overlays, mounts, binds, env, argv, network=False, chdir=SRC, scratch, base="/",
            root=None):
    """The full argv: unshare -m sh -c '<mount overlays>; exec bwrap ... argv'.

    overlays: [(Overlay, prefix_in_sandbox, writable)]
    mounts:   [(host_path, sandbox_path, writable)] plain binds (source, build dir)
    binds:    extra read-only files [(host_path, sandbox_path)]
    scratch:  a host folder for mount points and the empty lower layer
    base:     folder the mount script runs in; overlay paths are made relative to it
    root:     bwrap arguments binding the build root's /usr, /bin, /lib..., /etc read-only
              (tasks/build/buildroot.py sandbox_binds), with a generated /etc on top; None:
              an empty root, like a FROM-scratch container with only the prefixes mounted
    """
    scratch = Path(scratch)
    empty = scratch / "empty"
    empty.mkdir(parents=True, exist_ok=True)
    # the caller's umask must not reach the outputs' modes (issue 14: a umask of 027
    # made every image digest differ and left programs a non-root user cannot run)
    lines = ["set -e", "umask 022", f"cd {shlex.quote(str(base))}"]
    bw = ["bwrap",
          # uid 0 inside is uid 0 outside (outputs owned by root), but with no capability:
          # no mount/remount, mknod, ptrace, module loading, DAC override
          "--unshare-user", "--uid", "0", "--gid", "0", "--cap-drop", "ALL",
          # a nested user namespace would hand the step all capabilities again
          "--disable-userns",
          "--new-session", "--die-with-parent",
          "--unshare-pid", "--unshare-ipc", "--unshare-uts", "--unshare-cgroup-try",
          "--hostname", "dappdeps", "--tmpfs", "/"]
    if not network:
        bw.append("--unshare-net")
    if root is not None:
        bw += list(root) + etc_binds(scratch, network)
    # /proc/sys: the kernel checks its writes against uid 0, not capabilities
    bw += ["--proc", "/proc", "--ro-bind", "/proc/sys", "/proc/sys", "--dev", "/dev",
           "--tmpfs", "/tmp"]
    for i, (overlay, target, writable) in enumerate(overlays):
        overlay.mountpoint.mkdir(parents=True, exist_ok=True)
        lines.append(overlay.shell(empty, base))
        bw += ["--bind" if writable else "--ro-bind", str(overlay.mountpoint), target]
    for host, target, writable in mounts:
        bw += ["--bind" if writable else "--ro-bind", str(host), target]
    for host, target in binds:
        bw += ["--ro-bind", str(host), target]
    bw += ["--remount-ro", "/", "--chdir", chdir, "--clearenv"]
    # only uid/gid 0 exist in the namespace: a tar run inside must not try to chown
    env = dict({"TAR_OPTIONS": "--no-same-owner"}, **env)
    items = list(env.items())
    if os.environ.get("DAPPDEPS_REPRO_VARIANT") == "1":
        items.reverse()     # doit repro: the same environment in another order
    for key, value in items:
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


class Interrupted(Exception):
    """The run is stopping (SIGTERM, SIGINT, SIGHUP): no new sandbox starts, and the
    sandbox that was killed does not count as a failed build."""


# Every running sandbox of this process, whichever thread started it: a signal handler
# (tasks/stages, tasks/nightly) kills them all, so doit -n N stops every build at once.
_RUNNING = {}
_RUNNING_LOCK = threading.RLock()     # re-entrant: the handler may run in a holder's thread
_STOP = threading.Event()


def stopping():
    """True once stop_all() ran: a finished step must not write its key any more."""
    return _STOP.is_set()


def stop_all():
    """Refuse new sandboxes and kill every running one (its whole process group).
    Safe in a signal handler. Returns the number of sandboxes killed."""
    _STOP.set()
    with _RUNNING_LOCK:
        procs = list(_RUNNING.values())
    for proc in procs:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
    return len(procs)


def running():
    with _RUNNING_LOCK:
        return len(_RUNNING)


def run(argv, log_path, timeout=None):
    """Run argv with stdout+stderr appended to log_path; return the exit status.
    Raises Interrupted when the run is stopping (before or during the step)."""
    with open(log_path, "ab") as log:
        with _RUNNING_LOCK:
            if _STOP.is_set():
                raise Interrupted("the run is stopping")
            proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log,
                                    stderr=subprocess.STDOUT, preexec_fn=_die_with_parent)
            _RUNNING[proc.pid] = proc
        try:
            status = proc.wait(timeout=timeout)
        except BaseException:
            # Ctrl-C or SIGTERM: stop the build now; a half output never counts.
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.wait()
            raise
        finally:
            with _RUNNING_LOCK:
                _RUNNING.pop(proc.pid, None)
        if _STOP.is_set():
            raise Interrupted(f"stopped by a signal (exit status {status})")
        return status
