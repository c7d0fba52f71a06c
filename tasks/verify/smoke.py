"""Smoke tests: each component's `smoke` commands, run where users run them.

check:<dist> runs them in an EMPTY root (no /usr, /lib, /etc) with only the
distribution's and its used distributions' prefixes mounted, a hostile LD_LIBRARY_PATH
and PATH; check-images:<dist> runs the same commands in containers of other images."""
import re
import shlex
import subprocess
import time

from tasks.build import sandbox
from tasks.core import files
from tasks.model import cross
from tasks.model.component import prefix_variable
from tasks.verify.audit import Tree

HOSTILE_LD_LIBRARY_PATH = "/nonexistent:/lib"


# $PREFIX, $PREFIX_<DIST>, and a cross toolchain's $SYSROOT, $TARGET_PREFIX, ...
_VAR = re.compile(r"\$(\{)?(PREFIX(?:_[A-Z0-9_]+)?|SYSROOT|TARGET_[A-Z]+)(?(1)\})")


def smoke_environment(cfg, dist_name):
    chain = [cfg.distributions[n] for n in cfg.closure(dist_name)]
    env = {"PREFIX": chain[0].prefix, "HOME": "/tmp", "TMPDIR": "/tmp", "LC_ALL": "C.UTF-8",
           "PATH": ":".join([f"{d.prefix}/{sub}" for d in chain for sub in ("bin", "sbin")]
                            + ["/nonexistent/bin"]),
           "LD_LIBRARY_PATH": HOSTILE_LD_LIBRARY_PATH}
    for d in chain:
        env[prefix_variable(d.name)] = d.prefix
    if cross.cross_target(cfg, dist_name):
        # what its build was told (tasks/model/cross.py): where the target's files are
        env.update({k: v for k, v in cross.target_environment(cfg, dist_name).items()
                    if k != "KERNEL_ARCH"})
    return env


def expand(command, env):
    """$PREFIX and $PREFIX_<DIST> (and a cross toolchain's $SYSROOT, $TARGET_*) replaced by
    their values, also inside quotes: smoke
    commands like `env -i $PREFIX/bin/bash -c '... $PREFIX/bin ...'` mean the prefix."""
    return _VAR.sub(lambda m: env.get(m.group(2), m.group(0)), command)


def smoke_tests(cfg, dist_name):
    """[(component, command)] of the distribution's components."""
    tests = []
    for name in cfg.distributions[dist_name].components:
        for command in cfg.recipes[name].smoke:
            tests.append((name, command))
    return tests


def run_smoke(cfg, dist_name, log):
    env = smoke_environment(cfg, dist_name)
    chain = cfg.closure(dist_name)
    tree = Tree(cfg, chain)
    bash = next((f"{cfg.distributions[n].prefix}/bin/bash" for n in chain
                 if tree.resolve(f"{cfg.distributions[n].prefix}/bin/bash")), None)
    # unique to this process and thread (a killed run's is swept by the next one)
    scratch = cfg.cache / "work" / "check" / f".{dist_name}-{files.unique_suffix()}"
    files.force_rmtree(scratch)
    (scratch / "tmp").mkdir(parents=True)
    try:
        return _run_smoke(cfg, dist_name, log, env, chain, bash, scratch)
    finally:
        files.force_rmtree(scratch)


def _run_smoke(cfg, dist_name, log, env, chain, bash, scratch):
    overlays = []
    for name in chain:
        dist = cfg.distributions[name]
        lowers = [cfg.tree_of(name, c) for c in reversed(dist.components)]
        overlays.append((sandbox.Overlay(scratch / "mnt" / name, lowers), dist.prefix, False))
    results = []
    for comp, command in smoke_tests(cfg, dist_name):
        expanded = expand(command, env)
        argv = [bash, "-c", expanded] if bash else shlex.split(expanded)
        cmd = sandbox.command(
            overlays=overlays, mounts=[(scratch / "tmp", "/tmp", True)],
            binds=[(cfg.recipes_dir / "checks", "/dappdeps/check")] if (cfg.recipes_dir / "checks").is_dir() else [],
            env=env, argv=argv, scratch=scratch, base=cfg.cache, chdir="/tmp")
        start = time.time()
        with open(log, "a") as fh:
            fh.write(f"$ {expanded}   [{comp}]\n")
        limit = cfg.recipes[comp]["smoke_timeout"]
        try:
            status = sandbox.run(cmd, log, timeout=limit)
        except subprocess.TimeoutExpired:
            status = 124        # as timeout(1) says it; every process of it was killed
            with open(log, "a") as fh:
                fh.write(f"!! stopped after {limit} s, the time limit of {comp}'s smoke "
                         "tests (recipe field 'smoke_timeout')\n")
        results.append({"component": comp, "command": command, "status": status,
                        "seconds": round(time.time() - start, 2)})
    return results
