"""Stage: check. Proof that a distribution works where users put it.

check:<dist> (after assemble) does three things:
  - the ELF audit (tasks/verify/audit.py): interpreter, RPATH/RUNPATH, DT_NEEDED and
    the symbol versions needed of every executable and shared library resolve inside
    the dappdeps prefixes;
  - the smoke tests: each component's `smoke` commands run in an EMPTY root (no /usr,
    /lib, /etc), with only the distribution's and its used distributions' prefixes
    mounted, a hostile LD_LIBRARY_PATH and PATH. recipes/checks/ is mounted at
    /dappdeps/check for commands that compile test programs; /tmp is writable;
  - the loader probe (tasks/verify/loader.py): the dynamic linker its programs use, run
    setuid in secure mode with Qualys' CVE-2023-4911 string. A vulnerable loader fails
    the check; one the probe cannot reach secure mode with fails it only when the
    distribution keeps setuid files (otherwise it is a warning).
Results: cache/checks/<dist>.json and .log. A foreign platform's distribution
(check:<dist>@arm64) is audited for that platform's machine and loader, and its smoke
tests run the same way: binfmt_misc hands its programs to qemu-user-static, registered
with the F flag so the empty root needs no emulator inside (docs/toolchain.md).
"""
import hashlib
import json
import time

from tasks.core import files
from tasks.core import canonical
from tasks.core import code
from tasks.core.log import echo
from tasks.model.project import project
from tasks.model.stamp import Stamp, uptodate_check
from tasks.core import emulation
from tasks.verify import loader
from tasks.verify.audit import audit
from tasks.verify.smoke import run_smoke, smoke_tests

# the code that decides what a check finds
CHECK_MODULES = ("tasks.stages.check", "tasks.verify.smoke", "tasks.verify.audit", "tasks.core.elf",
                 "tasks.verify.loader", "tasks.model.platforms",
                 "tasks.build.sandbox")


def check_stamp(cfg, dist_name):
    chain = cfg.closure(dist_name)
    digests = {}
    for name in chain:
        try:
            digests[name] = canonical.load(cfg.assembled_stamp(name)).get("content")
        except (OSError, ValueError):
            digests[name] = None
    files = {}
    checks = cfg.recipes_dir / "checks"
    if checks.is_dir():
        for path in sorted(checks.iterdir()):
            files[path.name] = hashlib.sha256(path.read_bytes()).hexdigest()
    return Stamp(cfg.cache / "checks" / f"{cfg.label(dist_name)}.stamp.json",
                 {"distributions": digests, "smoke": smoke_tests(cfg, dist_name), "files": files,
                  "check": code.digest(*CHECK_MODULES)})


def check(cfg, dist_name):
    from doit.exceptions import TaskFailed
    out = cfg.cache / "checks"
    out.mkdir(parents=True, exist_ok=True)
    label = cfg.label(dist_name)
    if cfg.tag(dist_name):
        missing = emulation.problem(cfg.target())
        if missing:
            return TaskFailed(f"check:{label}: its smoke tests run {cfg.platform} programs "
                              f"on this {cfg.native_platform} machine, and {missing}")
    log = out / f"{label}.log"
    log.write_text(f"# check:{label} {time.strftime('%Y-%m-%d %H:%M:%S')}\n")
    problems, count = audit(cfg, dist_name)
    results = run_smoke(cfg, dist_name, log)
    failed = [r for r in results if r["status"] != 0]
    probe, probe_problem = _loader_probe(cfg, dist_name, log)
    report = {"distribution": dist_name, "platform": cfg.target().name,
              "elf_files": count, "elf_problems": problems,
              "smoke": results, "loader_probe": probe,
              "passed": not problems and not failed and not probe_problem}
    files.write_atomic(out / f"{label}.json", json.dumps(report, indent=2) + "\n")
    echo(f"check:{label}: ELF audit of {count} files: "
         f"{'clean' if not problems else f'{len(problems)} problem(s)'}; "
         f"smoke tests in an empty root: {len(results) - len(failed)}/{len(results)} passed")
    for line in problems[:40]:
        echo(f"  audit: {line}")
    for r in failed:
        echo(f"  smoke FAILED (exit {r['status']}): {r['command']}   [{r['component']}]")
    if probe:
        echo(f"check:{label}: loader probe"
             + (f" of {probe['loader']}" if probe.get("loader") else "") + f": {probe['verdict']}")
    if probe_problem:
        echo(f"  {probe_problem}")
    if problems or failed or probe_problem:
        return TaskFailed(f"check:{label} failed; details in {log} and {out / (label + '.json')}")
    check_stamp(cfg, dist_name).write()
    return True


def _loader_probe(cfg, dist_name, log):
    """(report entry or None, what fails the check or None)."""
    scratch = cfg.cache / "work" / "check" / f".{cfg.label(dist_name)}-probe-{files.unique_suffix()}"
    scratch.mkdir(parents=True, exist_ok=True)
    try:
        try:
            probe = loader.probe_distribution(cfg, dist_name, scratch, log)
        except loader.ProbeError as exc:
            probe = {"vulnerable": None, "verdict": f"not probed: {exc}"}
        if probe and probe["vulnerable"]:
            return probe, f"loader probe FAILED: {probe['loader']} is {probe['verdict']}"
        return probe, loader.setuid_refusal(cfg, dist_name, scratch, log)
    finally:
        files.force_rmtree(scratch)


def defaults(cfg, dist):
    return [f"check:{cfg.for_platform(p).label(dist.name)}" for p in dist.platforms]


def tasks():
    for dist in project.distributions.values():
        for view in (project.for_platform(p) for p in dist.platforms):
            label = view.label(dist.name)
            yield {
                "name": label,
                "doc": f"audit + smoke-test {dist.name} with only dappdeps prefixes mounted"
                       + (f" ({view.platform}, under qemu)" if view.tag(dist.name) else ""),
                "actions": [(check, [view, dist.name])],
                "uptodate": [uptodate_check(f"check:{label}",
                                            lambda v=view, d=dist.name: check_stamp(v, d))],
                "task_dep": [f"assemble:{view.label(n)}" for n in view.closure(dist.name)],
                "verbosity": 2,
            }
