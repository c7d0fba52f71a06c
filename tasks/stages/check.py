"""Stage: check. Proof that a distribution works where users put it.

check:<dist> (after assemble) does two things:
  - the ELF audit: every executable and shared library of the distribution has its
    interpreter and every RPATH/RUNPATH inside the dappdeps prefixes, and every
    DT_NEEDED resolves inside them (the way the prefix's ld.so would look);
  - the smoke tests: each component's `smoke` commands run in an EMPTY root (no /usr,
    /lib, /etc), with only the distribution's and its used distributions' prefixes
    mounted, a hostile LD_LIBRARY_PATH and PATH. recipes/checks/ is mounted at
    /dappdeps/check for commands that compile test programs; /tmp is writable.
Results: cache/checks/<dist>.json and .log.
"""
import hashlib
import json
import os
import posixpath
import re
import shlex
import shutil
import time

from tasks.core import files
from tasks.core import canonical
from tasks.core import elf
from tasks.build import manifest
from tasks.build import sandbox
from tasks.model.project import project
from tasks.model.stamp import Stamp, uptodate_check

CHECK_VERSION = "3"
HOSTILE_LD_LIBRARY_PATH = "/nonexistent:/lib"



def _assembled(cfg, name):
    return canonical.load(cfg.assembled_manifest(name))


class Tree:
    """All paths of some distributions, by absolute path, with symlinks followed."""

    def __init__(self, cfg, names):
        self.entries = {}
        for name in names:
            dist = cfg.distributions[name]
            for entry in _assembled(cfg, name)["entries"]:
                self.entries[f"{dist.prefix}/{entry['path']}"] = (name, entry)

    def resolve(self, path, depth=0):
        path = posixpath.normpath(path)
        found = self.entries.get(path)
        if found is None:
            # A parent folder may be a symlink (lib64 -> lib).
            parent, base = posixpath.split(path)
            if parent != "/" and depth < 20:
                real_parent = self.resolve(parent, depth + 1)
                if real_parent and real_parent != parent:
                    return self.resolve(posixpath.join(real_parent, base), depth + 1)
            return None
        entry = found[1]
        if entry["type"] == "symlink" and depth < 20:
            target = entry["target"]
            target = target if target.startswith("/") else posixpath.join(posixpath.dirname(path), target)
            return self.resolve(target, depth + 1)
        return path


def audit(cfg, dist_name):
    """Problems (one line each) and the number of ELF files looked at."""
    dist = cfg.distributions[dist_name]
    tree = Tree(cfg, cfg.closure(dist_name))
    root = cfg.prefix_root + "/"
    tc = cfg.distributions[dist.toolchain] if dist.toolchain else dist
    default_dirs = [f"{tc.prefix}/lib"]
    problems, count = [], 0
    for entry in _assembled(cfg, dist_name)["entries"]:
        if entry["type"] != "file":
            continue
        host_path = cfg.tree_of(dist_name, entry["component"]) / entry["path"]
        if not elf.is_elf(host_path):
            continue
        info = elf.read(host_path)
        if info is None:
            continue
        count += 1
        where = f"{dist.prefix}/{entry['path']}"
        origin = posixpath.dirname(where)
        if info.interp and not (info.interp.startswith(root) and tree.resolve(info.interp)):
            problems.append(f"{where}: interpreter {info.interp} is not inside the dappdeps prefixes")
        # DT_RUNPATH is searched after LD_LIBRARY_PATH, so an image's LD_LIBRARY_PATH
        # could redirect the libraries (werf issue #4745): only DT_RPATH is allowed.
        # The one exception is glibc's gconv modules' [$ORIGIN]: they find their
        # sibling helper modules (libKSC.so, ...) and nothing else.
        if info.runpath and info.runpath != ["$ORIGIN"]:
            problems.append(f"{where}: RUNPATH {':'.join(info.runpath)} (LD_LIBRARY_PATH "
                            "beats it): link with -Wl,--disable-new-dtags for DT_RPATH")
        dirs = []
        for kind, paths in (("RPATH", info.rpath), ("RUNPATH", info.runpath)):
            for raw in paths:
                path = raw.replace("$ORIGIN", origin).replace("${ORIGIN}", origin)
                if not path.startswith(root):
                    problems.append(f"{where}: {kind} {raw} points outside the dappdeps prefixes")
                dirs.append(path)
        search = dirs + default_dirs + ([posixpath.dirname(info.interp)] if info.interp else [])
        if info.kind == "dyn" and not info.interp:
            # A library is loaded into programs of this distribution, whose RPATH
            # covers the distribution's own lib/ (tasks/flags.py).
            search.append(f"{dist.prefix}/lib")
        for needed in info.needed:
            if not any(tree.resolve(f"{d}/{needed}") for d in search):
                problems.append(f"{where}: needs {needed}, not found in {':'.join(dict.fromkeys(search))}")
    return problems, count


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
    scratch = cfg.cache / "work" / "check" / dist_name
    if scratch.exists():
        shutil.rmtree(scratch)
    (scratch / "tmp").mkdir(parents=True)
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
                  "check": CHECK_VERSION})


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
    print(f"check:{dist_name}: ELF audit of {count} files: "
          f"{'clean' if not problems else f'{len(problems)} problem(s)'}; "
          f"smoke tests in an empty root: {len(results) - len(failed)}/{len(results)} passed")
    for line in problems[:40]:
        print(f"  audit: {line}")
    for r in failed:
        print(f"  smoke FAILED (exit {r['status']}): {r['command']}   [{r['component']}]")
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
