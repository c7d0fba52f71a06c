"""The loader probe: is a distribution's dynamic linker open to CVE-2023-4911?

"Looney Tunables" (glibc 2.34 to 2.38 as released): the dynamic linker of a setuid
program overflows a buffer while it rewrites a malformed GLIBC_TUNABLES, so any local
user who can run a setuid program linked against it becomes root. The overflow happens
only in secure mode (AT_SECURE: the kernel runs a setuid program for another user), which
smoke tests never reach: bubblewrap sets no_new_privs, and the kernel then ignores setuid
bits. So the probe builds its own root instead:

- a folder under cache/work holding one program of the distribution (setuid root,
  mode 4755) and the shared libraries it needs, at their paths under the prefix;
- chroot into it and become uid/gid 65534 between fork and exec, so the kernel starts
  the program in secure mode (and no host program sees the probe's environment);
- a control run first, with LD_PRELOAD naming a missing library: outside secure mode the
  loader complains about it, in secure mode it ignores it silently. No complaint proves
  that the probe really reached secure mode (otherwise the probe fails: it proves nothing);
- then Qualys' test from the advisory: GLIBC_TUNABLES=glibc.malloc.mxfast=
  glibc.malloc.mxfast=A and an 8 KiB filler variable. A vulnerable loader dies of a
  signal (SIGSEGV); a fixed one runs the program to its normal end.

check:<dist> runs it for the loader its programs use (its toolchain's, or its own), and
a distribution may keep setuid files (`setuid:` in config.yaml) only when it passes.
"""
import fnmatch
import os
import posixpath
import shutil
import signal
import subprocess

from pathlib import Path

from tasks.core import elf, emulation, files

NOBODY = 65534
# From Qualys' advisory (2023-10-03): the string that makes parse_tunables() run past
# its buffer in secure mode, and a filler that makes the overflow hit what follows.
TUNABLES = "glibc.malloc.mxfast=glibc.malloc.mxfast=A"
FILLER = "%08192x" % 1
MISSING_PRELOAD = "/nonexistent/dappdeps-probe.so"
LOADER_PATTERN = "lib/ld-linux*.so*"
# where another platform's probe puts the host's qemu-user program in its root
EMULATOR_INSIDE = "/.dappdeps-probe/qemu-user"
TIMEOUT = 60


class ProbeError(Exception):
    """The probe could not run, or did not reach secure mode: it proves nothing."""


def run_probe(root, program, args=("--version",), uid=NOBODY, log=None, emulator=None):
    """Run `program` (an absolute path inside `root`, setuid root there) as `uid` in a
    chroot at `root`: the control run, then the tunables run. Returns a result mapping:
    vulnerable (bool), status of each run, and a one-line verdict. emulator: a qemu-user
    program inside `root`, setuid root there, that runs `program` (another platform's)."""
    argv = ([emulator] if emulator else []) + [program, *args]

    def enter():
        # In the child, between fork and exec: no host program runs with the probe's
        # environment (a host chroot(1) would itself read LD_PRELOAD and GLIBC_TUNABLES).
        os.chroot(root)
        os.chdir("/")
        os.setgroups([])
        os.setgid(uid)
        os.setuid(uid)

    def run(env, what):
        try:
            proc = subprocess.run(argv, env=env, capture_output=True, text=True, errors="replace",
                                  timeout=TIMEOUT, stdin=subprocess.DEVNULL, preexec_fn=enter)
        except subprocess.TimeoutExpired:
            raise ProbeError(f"the {what} run of {program} did not end within {TIMEOUT} s") from None
        except (OSError, subprocess.SubprocessError) as exc:
            raise ProbeError(f"cannot run {program} in the probe's root {root} as uid {uid}: "
                             f"{exc}") from None
        if log:
            with open(log, "a") as fh:
                shown = " ".join(f"{k}={v[:60]}{'...' if len(v) > 60 else ''}" for k, v in env.items())
                fh.write(f"$ chroot {root} as uid {uid}: {shown} {' '.join(argv)}   "
                         f"[loader probe, {what}]\n{proc.stdout}{proc.stderr}"
                         f"exit status {proc.returncode}\n")
        return proc

    control = run({"LD_PRELOAD": MISSING_PRELOAD}, "control")
    if control.returncode != 0:
        raise ProbeError(f"{program} {' '.join(args)} failed in the probe's root "
                         f"(exit status {control.returncode}): {control.stderr.strip()[-300:]}")
    if MISSING_PRELOAD in control.stderr:
        raise ProbeError(f"{program} did not run in secure mode (its loader read LD_PRELOAD): "
                         "the setuid bit had no effect (a nosuid file system, or no user switch), "
                         "so the probe cannot tell anything")
    probe = run({"GLIBC_TUNABLES": TUNABLES, "Z": FILLER}, "GLIBC_TUNABLES")
    if probe.returncode < 0:
        name = signal.Signals(-probe.returncode).name
        return {"vulnerable": True, "control_status": 0, "status": probe.returncode,
                "verdict": f"VULNERABLE to CVE-2023-4911: a setuid {program} died of {name} "
                           "on a malformed GLIBC_TUNABLES"}
    if probe.returncode != 0:
        raise ProbeError(f"{program} exited {probe.returncode} with GLIBC_TUNABLES set (not a "
                         f"crash, not its normal end): {probe.stderr.strip()[-300:]}")
    return {"vulnerable": False, "control_status": 0, "status": 0,
            "verdict": f"not vulnerable to CVE-2023-4911: a setuid {program} ran in secure "
                       "mode with Qualys' GLIBC_TUNABLES and ended normally"}


def make_root(root, placed):
    """A fresh root folder holding `placed` ({absolute path inside: host file}), owned by
    root; the first entry is what the kernel runs (the program, or its emulator), made
    setuid root (4755)."""
    files.force_rmtree(root)
    root.mkdir(parents=True)
    os.chmod(root, 0o755)
    for i, (inside, source) in enumerate(placed.items()):
        target = root / inside.lstrip("/")
        for parent in reversed(target.relative_to(root).parents):
            folder = root / parent
            folder.mkdir(exist_ok=True)
            os.chmod(folder, 0o755)
        shutil.copyfile(source, target)
        os.chown(target, 0, 0)
        os.chmod(target, 0o4755 if i == 0 else 0o755)


def loader_of(cfg, dist_name):
    """(distribution, Tree, loader path) of the dynamic linker `dist_name`'s programs use,
    or None when that distribution ships none."""
    from tasks.verify.audit import Tree
    dist = cfg.distributions[dist_name]
    owner = dist.toolchain or dist_name
    tree = Tree(cfg, [owner])
    prefix = cfg.distributions[owner].prefix
    for path in sorted(tree.entries):
        if fnmatch.fnmatch(path[len(prefix) + 1:], LOADER_PATTERN) and tree.resolve(path) == path:
            return owner, tree, path
    return None


def _placement(tree, loader, program):
    """{inside path: host file} for `program`, its loader and the libraries it needs
    (found in the loader's folder, as the loader searches it by default), or None."""
    placed = {program: tree.host_path(program)}
    todo, libdir = [program], posixpath.dirname(loader)
    while todo:
        info = elf.read(placed[todo.pop()])
        if info is None:
            return None
        for name in info.needed:
            found = tree.resolve(f"{libdir}/{name}")
            if found is None:
                return None
            if found not in placed:
                placed[found] = tree.host_path(found)
                todo.append(found)
    placed[loader] = tree.host_path(loader)
    return placed


def probe_program(tree, prefix, loader):
    """The first program in the prefix's bin/ (by name) that uses `loader` and needs only
    libraries from the loader's folder: {inside path: host file}, program first."""
    for path in sorted(tree.entries):
        if posixpath.dirname(path) != f"{prefix}/bin" or tree.resolve(path) != path:
            continue
        name, entry = tree.entries[path]
        if entry["type"] != "file" or not elf.is_elf(tree.host_path(path)):
            continue
        info = elf.read(tree.host_path(path))
        if info is None or info.interp != loader or info.rpath or info.runpath:
            continue
        placed = _placement(tree, loader, path)
        if placed:
            return placed
    return None


def probe_distribution(cfg, dist_name, scratch, log):
    """The probe of `dist_name`'s loader: a result mapping (with "loader" and "program"),
    or None when its programs have no loader of dappdeps' (nothing to probe)."""
    found = loader_of(cfg, dist_name)
    if found is None:
        return None
    owner, tree, loader = found
    placed = probe_program(tree, cfg.distributions[owner].prefix, loader)
    if placed is None:
        raise ProbeError(f"no program in {cfg.distributions[owner].prefix}/bin uses {loader} "
                         "with only the libraries beside it: nothing to probe the loader with")
    program = next(iter(placed))
    placed = _with_link_names(tree, loader, placed)
    emulator = _emulator(cfg, owner)
    if emulator:
        # Another platform's program runs under qemu-user. binfmt_misc would start qemu
        # with qemu's credentials (Debian registers it without the C flag), so no secure
        # mode: the probe runs qemu itself setuid root instead. The kernel then starts
        # qemu in secure mode, and qemu hands AT_SECURE on to the guest's loader, as the
        # kernel would on that machine. The control run proves that it arrived.
        placed = {EMULATOR_INSIDE: emulator, **placed}
    # The root holds setuid-root files (another platform's: a setuid emulator, which runs
    # any program as root) while the probe runs: a folder only root may enter keeps other
    # users of this machine away from them. The probe itself chroots before it drops to
    # uid 65534, so it never walks through this folder.
    guard = scratch / "loader-guard"
    guard.mkdir(mode=0o700)
    os.chmod(guard, 0o700)
    root = guard / "root"
    try:
        make_root(root, placed)
        result = run_probe(root, program, log=log, emulator=EMULATOR_INSIDE if emulator else None)
    finally:
        files.force_rmtree(guard)
    return dict(result, loader=loader, program=program, distribution=owner,
                **({"emulator": str(emulator)} if emulator else {}))


def _emulator(cfg, owner):
    """The host's qemu-user program for the platform of `cfg`'s view when `owner` is built
    for another platform than the build machine's; None for the build machine's."""
    if not cfg.tag(owner):
        return None
    target = cfg.target()
    found = emulation.problem(target)
    if found is not None:
        raise ProbeError(f"{target.name} programs do not run here: {found}")
    program = Path(emulation.registration(target.qemu)["interpreter"]).resolve()
    if not elf.is_host_program(program) or elf.read(program).interp:
        raise ProbeError(f"the binfmt_misc interpreter of {target.name}, {program}, is not a "
                         "static program of this machine (Debian's qemu-user-static is)")
    return program


def _with_link_names(tree, loader, placed):
    """placed, plus every entry of the loader's folder that resolves to a placed file
    (libc.so.6 when the file is libc.so.6 itself or a versioned name)."""
    out = dict(placed)
    libdir = posixpath.dirname(loader)
    for path in sorted(tree.entries):
        if posixpath.dirname(path) == libdir and path not in out:
            real = tree.resolve(path)
            if real in placed:
                out[path] = placed[real]
    return out


def setuid_refusal(cfg, dist_name, scratch, log=None):
    """Why `dist_name` may not ship its `setuid:` files, or None (it lists none, or its
    loader was probed and is not vulnerable). A setuid program is only as safe as the
    dynamic linker that starts it: an unproven loader counts as a vulnerable one."""
    dist = cfg.distributions[dist_name]
    if not dist.setuid:
        return None
    listed = ", ".join(dist.setuid)
    try:
        result = probe_distribution(cfg, dist_name, scratch, log)
    except ProbeError as exc:
        return (f"{dist_name} keeps setuid files ({listed}; config.yaml setuid:), but the "
                f"CVE-2023-4911 probe of its dynamic linker could not run: {exc}")
    if result is None:
        return (f"{dist_name} keeps setuid files ({listed}; config.yaml setuid:), but no "
                "dynamic linker of dappdeps' was found to probe for CVE-2023-4911")
    if result["vulnerable"]:
        return (f"{dist_name} keeps setuid files ({listed}; config.yaml setuid:), but its "
                f"dynamic linker {result['loader']} is {result['verdict']}: each of them would be "
                "a local root hole. Ship a fixed glibc (2.39 or later, or the stable-branch "
                "fixes: recipes/glibc.yaml debian_patches) or empty the setuid: list")
    return None
