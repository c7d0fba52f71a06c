"""Stage: check. Proof that a distribution works where users put it.

check:<dist> (after assemble) does two things:
  - the ELF audit (tasks/verify/audit.py): interpreter, RPATH/RUNPATH, DT_NEEDED and
    the symbol versions needed of every executable and shared library resolve inside
    the dappdeps prefixes;
  - the smoke tests: each component's `smoke` commands run in an EMPTY root (no /usr,
    /lib, /etc), with only the distribution's and its used distributions' prefixes
    mounted, a hostile LD_LIBRARY_PATH and PATH. recipes/checks/ is mounted at
    /dappdeps/check for commands that compile test programs; /tmp is writable.
Results: cache/checks/<dist>.json and .log.
"""
import hashlib
import json
import os
import re
import shlex
import time

from tasks.core import files
from tasks.core import canonical
from tasks.core import code
from tasks.build import manifest
from tasks.build import sandbox
from tasks.core.log import echo
from tasks.model.project import project
from tasks.model.stamp import Stamp, uptodate_check
from tasks.verify.audit import Tree, audit

CHECK_MODULES = ("tasks.stages.check", "tasks.verify.audit", "tasks.core.elf", "tasks.build.sandbox")
HOSTILE_LD_LIBRARY_PATH = "/nonexistent:/lib"


_VAR = re.compile(r"\$(\{)?(PREFIX(?:_[A-Z0-9_]+)?)(?(1)\})")


def smoke_environment(cfg, dist_name):
    chain = [cfg.distributions[n] for n in cfg.closure(dist_name)]
    env = {"PREFIX": chain[0].prefix, "HOME": "/tmp", "TMPDIR": "/tmp", "LC_ALL": "C.UTF-8",
           "PATH": ":".join([f"{d.prefix}/{sub}" for d in chain for sub in ("bin", "sbin")]
                            + ["/nonexistent/bin"]),
           "LD_LIBRARY_PATH": HOSTILE_LD_LIBRARY_PATH}
    for d in chain:
        env[f"PREFIX_{d.name.upper().replace('-', '_').replace('.', '_')}"] = d.prefix
    return env


def expand(command, env):
    """$PREFIX and $PREFIX_<DIST> replaced by their values, also inside quotes: smoke
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
            env=env, argv=argv, scratch=scratch, base=cfg.cache, host=False, chdir="/tmp")
        start = time.time()
        with open(log, "a") as fh:
            fh.write(f"$ {expanded}   [{comp}]\n")
        status = sandbox.run(cmd, log)
        results.append({"component": comp, "command": command, "status": status,
                        "seconds": round(time.time() - start, 2)})
    return results


def check_stamp(cfg, dist_name):
    chain = cfg.closure(dist_name)
    digests = {}
    for name in chain:
        try:
            digests[name] = canonical.load(cfg.assembled_stamp(name)).get("manifest")
        except (OSError, ValueError):
            digests[name] = None
    files = {}
    checks = cfg.recipes_dir / "checks"
    if checks.is_dir():
        for path in sorted(checks.iterdir()):
            files[path.name] = hashlib.sha256(path.read_bytes()).hexdigest()
    return Stamp(cfg.cache / "checks" / f"{dist_name}.stamp.json",
                 {"distributions": digests, "smoke": smoke_tests(cfg, dist_name), "files": files,
                  "check": code.digest(*CHECK_MODULES)})


def check(cfg, dist_name):
    from doit.exceptions import TaskFailed
    out = cfg.cache / "checks"
    out.mkdir(parents=True, exist_ok=True)
    log = out / f"{dist_name}.log"
    log.write_text(f"# check:{dist_name} {time.strftime('%Y-%m-%d %H:%M:%S')}\n")
    problems, count = audit(cfg, dist_name)
    results = run_smoke(cfg, dist_name, log)
    failed = [r for r in results if r["status"] != 0]
    report = {"distribution": dist_name, "elf_files": count, "elf_problems": problems,
              "smoke": results, "passed": not problems and not failed}
    files.write_atomic(out / f"{dist_name}.json", json.dumps(report, indent=2) + "\n")
    echo(f"check:{dist_name}: ELF audit of {count} files: "
         f"{'clean' if not problems else f'{len(problems)} problem(s)'}; "
         f"smoke tests in an empty root: {len(results) - len(failed)}/{len(results)} passed")
    for line in problems[:40]:
        echo(f"  audit: {line}")
    for r in failed:
        echo(f"  smoke FAILED (exit {r['status']}): {r['command']}   [{r['component']}]")
    if problems or failed:
        return TaskFailed(f"check:{dist_name} failed; details in {log} and {out / (dist_name + '.json')}")
    check_stamp(cfg, dist_name).write()
    return True


def defaults(cfg, dist):
    return [f"check:{dist.name}"]


def tasks():
    for dist in project.distributions.values():
        yield {
            "name": dist.name,
            "doc": f"audit + smoke-test {dist.name} with only dappdeps prefixes mounted",
            "actions": [(check, [project, dist.name])],
            "uptodate": [uptodate_check(f"check:{dist.name}",
                                        lambda d=dist.name: check_stamp(project, d))],
            "task_dep": [f"assemble:{n}" for n in project.closure(dist.name)],
            "verbosity": 2,
        }
