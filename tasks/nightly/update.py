"""`bin/nightly --update` (opt-in; docs/nightly.md "Updates"): bump the outdated recipes
within config.yaml's `update.policy`, one at a time, keeping a bump only if it builds, checks
and tests. Candidates carry a published sha256 (Debian's orig in `debian.suites`, a PyPI
file; a newer Debian revision for recipes taking Debian patches: its debian.tar); the new
files are downloaded and verified before any edit; the recipe file's value lines are edited
in place (comments and layout kept) and must load, through the real loader, as exactly the
old recipe with the new values; a scratch file is swapped in by rename and the old bytes
kept. A child doit builds, checks and tests; any failure puts the old bytes back (a failed
build publishes nothing: the old output and key stay in cache/stage). In a git checkout the
kept bumps are committed on a new branch through a temporary index (HEAD, the index and the
working tree stay as they are); never pushed. Uncommitted changes in the recipes folder
refuse the whole step.
"""
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from datetime import datetime, timezone
from functools import cmp_to_key
from pathlib import Path

import requests

from tasks.core.errors import FetchError, UserError
from tasks.core.files import write_atomic
from tasks.core.log import say
from tasks.model.config import load_config
from tasks.model.recipes import Source, load_recipes
from tasks.nightly.recipetext import Refused, edit_text, expected, new_sources, owner_file, swap_version
from tasks.sources import debian
from tasks.sources import outdated as od
from tasks.sources.download import fetch_source

REPO = Path(__file__).resolve().parents[2]
ALLOWED = {"security": (), "patch": ("patch",), "minor": ("patch", "minor")}
ORIG = re.compile(r"\.orig\.tar\.[a-z0-9]+$")
PLAIN = re.compile(r"^[0-9][0-9A-Za-z.]*$")                 # not 6.5+20250216, 1.3.dfsg+really1.3.1
PYPI_FINAL = re.compile(r"^[0-9]+(\.[0-9]+)*(\.post[0-9]+)?$")  # PEP 440: no a/b/rc/dev releases
DEBIAN_TAR = re.compile(r"^[a-z0-9][a-z0-9.+-]*_(?P<rev>[^_/]+)\.debian\.tar\.[a-z0-9]+$")
OLDEST_FIRST, NEWEST_FIRST = cmp_to_key(od.compare), cmp_to_key(lambda a, b: od.compare(b, a))
IDENTITY = {"GIT_AUTHOR_NAME": "dappdeps nightly", "GIT_AUTHOR_EMAIL": "dappdeps-nightly@localhost",
            "GIT_COMMITTER_NAME": "dappdeps nightly", "GIT_COMMITTER_EMAIL": "dappdeps-nightly@localhost"}


def release_kind(old, new):
    """major, minor or patch: the first dotted part of the upstream version that changes
    (5.2.15 -> 5.2.37 patch, 4.9 -> 4.10 minor, 1.4 -> 2.0 major); None when equal."""
    a, b = old.split("."), new.split(".")
    for i in range(max(len(a), len(b))):
        if (a[i] if i < len(a) else "0") != (b[i] if i < len(b) else "0"):
            return ("major", "minor", "patch")[min(i, 2)]
    return None


# ---------------------------------------------------------------- candidates

def _plan(recipe, also, frm, to, version, where):
    return {"recipe": recipe.name, "also": also, "from": frm, "to": to, "version": version,
            "where": where, "debian_tar": None, "cves": [], "notes": []}


def debian_plan(apt, recipe, also, policy, suites, cfg):
    """The bump Debian's archive offers (upstream release or, for a recipe taking Debian
    patches, a newer revision); None when there is none; Refused outside the policy."""
    pkg, shipped, where = od.debian_package(recipe), recipe.version, {}
    order = {s: i for i, s in enumerate(suites)}      # a version: the first suite carrying it
    for version, suite in sorted((vs for vs in apt.madison(pkg) if vs[1] in order), key=lambda vs: order[vs[1]]):
        where.setdefault(version, f"Debian {version} ({suite})")
    versions = sorted(where, key=NEWEST_FIRST)
    newer = [v for v in versions if od.compare_upstream(v, shipped) > 0]
    kinds = {v: release_kind(shipped, od.upstream_of(v)) for v in newer}
    fits = [v for v in newer if kinds[v] in ALLOWED[policy] and PLAIN.match(od.upstream_of(v))]
    pinned = DEBIAN_TAR.match(recipe.debian_source or "")
    if recipe.debian_source and not pinned:
        raise Refused(f"debian_patches.source {recipe.debian_source} is not <package>_<revision>.debian.tar.*")
    if fits:
        deb = fits[0]
        plan = _plan(recipe, also, shipped, od.upstream_of(deb), od.upstream_of(deb), where[deb])
    elif pinned and any(od.upstream_of(v) == od.upstream_of(pinned["rev"])
                        and od.compare(v, pinned["rev"]) > 0 for v in versions):
        deb = next(v for v in versions if od.upstream_of(v) == od.upstream_of(pinned["rev"]))
        plan = _plan(recipe, also, pinned["rev"], deb, shipped, where[deb])
    elif newer:
        new = od.upstream_of(newer[0])
        if kinds[newer[0]] in ALLOWED[policy]:
            raise Refused(f"not attempted: Debian's {new} is no upstream release (a snapshot or "
                          "repack): bump it by hand", new)
        raise Refused(f"not attempted: {shipped} -> {new} is a {kinds[newer[0]]} release, "
                      f"outside policy {policy}", new)
    else:
        return None
    found, problem = apt.print_uris(f"{pkg}={deb}")
    origs = [f for f in found or {} if ORIG.search(f)]
    if len(origs) != 1 or not found[origs[0]][2]:
        raise Refused(f"apt lists no single orig tarball with a sha256 for {pkg} {deb} ({problem or origs})")
    plan["orig"] = (origs[0], found[origs[0]][2], f"debian:{pkg}")
    plan["signed"] = f"{origs[0]}.asc" in found     # Debian ships upstream's signature of it
    if pinned:
        tars = [f for f in found if DEBIAN_TAR.match(f) and found[f][2]]
        if not tars:
            raise Refused(f"apt lists no debian.tar with a sha256 for {pkg} {deb}")
        plan["debian_tar"] = (recipe.debian_source, tars[0], found[tars[0]][2])
    try:
        entries = od.changelog_entries(od.debian_changelog(apt, pkg, deb, cfg))
    except (FetchError, OSError, ValueError) as exc:
        plan["notes"].append(f"CVEs unknown: changelog unread ({getattr(exc, 'message', exc)})")
        entries = []
    if plan["version"] != shipped:     # a new upstream release: what it fixed
        first = min((v for v, _ in entries if od.upstream_of(v) == plan["to"]),
                    key=OLDEST_FIRST, default=deb)
        fixed = od.fixes_since(entries, shipped, first)
    else:                              # a newer revision: its entries since the pinned one
        fixed = [(v, c) for v, c in entries if od.compare(v, plan["from"]) > 0 and od.compare(v, deb) <= 0]
        plan["notes"].append("the recipe applies only the Debian patches it names")
    plan["cves"] = list(dict.fromkeys(c for _, cves in fixed for c in cves))
    if policy == "security" and not plan["cves"]:
        return None
    return plan


def pypi_plan(recipe, also, policy, timeout):
    """The bump PyPI offers for a recipe whose first file comes from files.pythonhosted.org."""
    alt = next((a for a in recipe.sources[0].alternatives if any(
        od.PYPI_HOST in u.split("/")[2:3] for u in a.urls)), None)
    project, shipped = od.project_of(alt.file, recipe.version) if alt else None, recipe.version
    if project is None:
        return None
    url = f"{od.PYPI_URL.rstrip('/')}/{re.sub(r'[-_.]+', '-', project).lower()}/json"
    try:
        resp = requests.get(url, timeout=timeout)
        resp.raise_for_status()
        releases = resp.json()["releases"]
    except (requests.RequestException, ValueError, KeyError, TypeError) as exc:
        raise Refused(f"PyPI ({url}): {' '.join(str(exc).split())[:200]}") from None
    newer = sorted((v for v, files in releases.items() if PYPI_FINAL.match(v)
                    and any(not f.get("yanked") for f in files) and od.compare_upstream(v, shipped) > 0),
                   key=NEWEST_FIRST)
    fits = [v for v in newer if release_kind(shipped, v) in ALLOWED[policy]]
    if not fits:
        if newer:
            raise Refused(f"not attempted: {shipped} -> {newer[0]} is a "
                          f"{release_kind(shipped, newer[0])} release, outside policy {policy}", newer[0])
        return None
    want = swap_version(alt.file, shipped, fits[0])
    got = [f for f in releases[fits[0]] if f.get("filename") == want and not f.get("yanked")]
    if not got or not (got[0].get("digests") or {}).get("sha256"):
        raise Refused(f"PyPI has no file {want} with a sha256 for {fits[0]}")
    plan = _plan(recipe, also, shipped, fits[0], fits[0], "PyPI")
    plan["pypi"] = (alt.file, want, got[0]["digests"]["sha256"], got[0]["url"])
    return plan


def candidates(cfg, policy, doc):
    """[plan] of every recipe that has a bump within the policy; the others that are
    outdated go to doc["refused"] (not attempted), problems to doc["notes"]."""
    suites = list(debian.configured_suites(cfg) or [])
    timeout = (float(cfg.download.get("connect_timeout", 10)), float(cfg.download.get("read_timeout", 60)))
    plans, apt_error = [], None
    with ExitStack() as stack:
        apt = None
        for recipe, also in od.groups(cfg):
            try:
                if od.debian_package(recipe):
                    if apt_error:
                        continue
                    if apt is None:
                        apt = debian.private_apt(cfg)
                        stack.enter_context(apt.ready())
                    plan = debian_plan(apt, recipe, also, policy, suites, cfg)
                else:
                    plan = pypi_plan(recipe, also, policy, timeout)
            except Refused as exc:
                doc["refused"].append({"recipe": recipe.name, "from": recipe.version, "to": exc.to,
                                       "why": str(exc), "attempted": False})
                continue
            except FetchError as exc:       # apt could not be asked: nor for the others
                apt_error = exc.message
                doc["notes"].append(f"Debian's archive not asked: {exc.message}")
                continue
            if plan:
                plans.append(plan)
    return plans


def prepare(cfg, plan):
    """Download and verify the new files, edit the text, check it with the loader:
    (path, old bytes, new text). Nothing is written to the recipes folder."""
    recipe = cfg.recipes[plan["recipe"]]
    path = owner_file(cfg, recipe)
    recipe = cfg.recipes[path.stem]
    changes, confirm = new_sources(recipe, plan)
    for key, alt in changes.items():
        if key not in confirm:
            fetch_source(Source((alt,)), cfg, progress=False)     # FetchError: refused
    for key in confirm:
        try:
            fetch_source(Source((changes[key],)), cfg, progress=False)
        except FetchError as exc:
            if "sha256 mismatch" in exc.message or "not found (HTTP" in exc.message:
                raise Refused(f"the upstream copy {changes[key].file} is not the file published: "
                              f"{' '.join(exc.message.split())[:400]}") from None
            if not plan.get("signed"):
                raise Refused(f"the upstream copy {changes[key].file} did not answer, and Debian's orig "
                              "carries no upstream signature (.asc): nothing says they are the same file")
            plan["notes"].append(f"{changes[key].file} not checked upstream (no answer); pinned to "
                                 "Debian's orig, which carries upstream's signature, as before")
    old = path.read_bytes()
    text = edit_text(old.decode(), recipe, plan, changes)
    with tempfile.TemporaryDirectory(prefix="dappdeps-update-") as tmp:
        folder = Path(tmp) / "recipes"
        shutil.copytree(cfg.recipes_dir, folder, symlinks=True)
        (folder / path.name).write_text(text, encoding="utf-8")
        loaded = load_recipes(folder)[path.stem]
    if loaded.data != expected(recipe, plan, changes):
        raise Refused(f"{path.name}: the edited file does not load as the bump alone; bump it by hand")
    plan["files"] = sorted({alt.file for alt in changes.values()})
    return path, old, text


# ---------------------------------------------------------------- trying it

def child_doit(cfg, task_names, log):
    """Run doit (a child process, the new recipe) for the tasks; (exit status, failed task)."""
    log.parent.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, DAPPDEPS_CONFIG=str(cfg.path))
    with open(log, "w") as fh:
        proc = subprocess.Popen([sys.executable, "-m", "doit", "-f", str(REPO / "dodo.py"), *task_names],
                                cwd=REPO, env=env, stdout=fh, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL)
        try:
            status = proc.wait()
        except BaseException:               # a signal: the child stops its builds, then us
            proc.terminate()
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            raise
    failed = re.search(r"^TaskFailed - taskid:(\S+)\n(.*)", log.read_text(errors="replace"), re.M)
    said = failed and re.sub(r"\. Last \d+ lines of .*|:$", "", failed[2].strip())[:300]
    return status, (said or failed[1] if failed else None)


def attempt(cfg, plan, doc):
    """One bump: prepare, swap in, build, check and test; keep or restore. Returns the
    configuration as loaded afterwards and whether the bump was kept."""
    refused = {"recipe": plan["recipe"], "from": plan["from"], "to": plan["to"], "attempted": True}
    try:
        path, old, text = prepare(cfg, plan)
    except (Refused, UserError, OSError) as exc:
        why = " ".join((getattr(exc, "message", None) or str(exc)).split())
        doc["refused"].append(dict(refused, why=why if len(why) <= 600 else why[:599] + "…"))
        return cfg, False
    mode = path.stat().st_mode & 0o7777
    log = cfg.cache / "logs" / "update" / f"{path.stem}.log"
    kept = False
    try:
        write_atomic(path, text)
        os.chmod(path, mode)
        new = load_config(cfg.root)
        changed = {n for n, r in new.recipes.items() if n in cfg.recipes and
                   (r.version, r.sources) != (cfg.recipes[n].version, cfg.recipes[n].sources)}
        dists = [d for d in new.distributions.values() if changed & set(d.components)]
        names = [f"build:{d.name}/{c}" for d in dists for c in d.components if c in changed]
        names += [f"check:{d.name}" for d in dists]
        if new.data["checks"]["images"]:
            names += [f"check-images:{d.name}" for d in dists]
        else:
            plan["notes"].append("check-images skipped: checks.images is empty")
        names += [f"test:{d.name}/{c}" for d in dists for c in d.components
                  if c in changed and new.recipes[c]["test"].strip()]
        say(f"nightly: update {plan['recipe']} {plan['from']} -> {plan['to']}: doit {' '.join(names)}")
        status, failed = child_doit(new, names, log)
        if status == 0:
            kept = True
            doc["bumped"].append({"recipe": plan["recipe"], "also": plan["also"], "from": plan["from"],
                                  "to": plan["to"], "where": plan["where"], "files": plan["files"],
                                  "cves": plan["cves"], "tasks": names, "branch": None, "commit": None,
                                  "log": _shown(log, cfg),
                                  "notes": plan["notes"], "path": str(path)})
            return new, True
        doc["refused"].append(dict(refused, log=_shown(log, cfg), why=f"{failed or f'doit exit status {status}'}"
                                   f"; the recipe is as before; log: {_shown(log, cfg)}"))
        return cfg, False
    except UserError as exc:
        doc["refused"].append(dict(refused, why=exc.message))
        return cfg, False
    except KeyboardInterrupt:
        doc["refused"].append(dict(refused, why="interrupted; the recipe is as before"))
        raise
    finally:
        if not kept:
            write_atomic(path, old)
            os.chmod(path, mode)


def _shown(path, cfg):
    return str(path.relative_to(cfg.root)) if path.is_relative_to(cfg.root) else str(path)


# ---------------------------------------------------------------- git

def git(top, *args, env=None):
    proc = subprocess.run(["git", "-C", str(top), *args], capture_output=True, text=True, env=env,
                          stdin=subprocess.DEVNULL)
    if proc.returncode:
        raise UserError(f"git {' '.join(args[:2])} failed: {proc.stderr.strip()[:300]}")
    return proc.stdout


def git_top(folder):
    """The top of the git checkout holding `folder`, or None."""
    if shutil.which("git") is None:
        return None
    proc = subprocess.run(["git", "-C", str(folder), "rev-parse", "--show-toplevel"],
                          capture_output=True, text=True, stdin=subprocess.DEVNULL)
    return Path(proc.stdout.strip()) if proc.returncode == 0 and proc.stdout.strip() else None


class Branch:
    """Commits on a new branch from HEAD, through a temporary index: HEAD, the index and
    the working tree are not touched."""

    def __init__(self, top, template, index):
        self.top, self.name, self.made = top, None, False
        self.tip = git(top, "rev-parse", "--verify", "HEAD^{commit}").strip()
        self.env = dict(os.environ, GIT_INDEX_FILE=str(index))
        if subprocess.run(["git", "-C", str(top), "var", "GIT_COMMITTER_IDENT"], capture_output=True).returncode:
            self.env.update(IDENTITY)       # no user.name/email configured
        git(top, "read-tree", self.tip, env=self.env)
        base = template.replace("{date}", datetime.now(timezone.utc).strftime("%Y-%m-%d"))
        for n in range(1, 100):
            name = base if n == 1 else f"{base}-{n}"
            if subprocess.run(["git", "-C", str(top), "rev-parse", "--verify", "-q", f"refs/heads/{name}"],
                              capture_output=True).returncode:
                self.name = name
                break
        git(top, "check-ref-format", "--branch", self.name or "..")

    def commit(self, bump):
        path = Path(bump["path"]).resolve()
        rel = path.relative_to(self.top.resolve()).as_posix()
        staged = git(self.top, "ls-files", "-s", "--", rel, env=self.env).split()
        blob = git(self.top, "hash-object", "-w", "--", rel).strip()
        git(self.top, "update-index", "--add", "--cacheinfo",
            f"{staged[0] if staged else '100644'},{blob},{rel}", env=self.env)
        tree = git(self.top, "write-tree", env=self.env).strip()
        cves = f"\n\nFixes {', '.join(bump['cves'])}." if bump["cves"] else ""
        message = (f"{bump['recipe']}: {bump['from']} -> {bump['to']}{cves}\n\nFrom {bump['where']}: "
                   f"{', '.join(bump['files'])}. Built, checked and tested by bin/nightly --update "
                   f"({' '.join(bump['tasks'])}).\n")
        commit = git(self.top, "commit-tree", tree, "-p", self.tip, "-m", message, env=self.env).strip()
        # the branch must not exist before its first commit, and be ours after
        git(self.top, "update-ref", f"refs/heads/{self.name}", commit, self.tip if self.made else "")
        self.made, self.tip = True, commit
        bump["commit"], bump["branch"] = commit, self.name


def run(cfg, doc):
    """The update step: fills `doc` (report.json's `updates`) and returns the configuration
    as loaded afterwards (with the kept bumps)."""
    t0 = time.time()
    settings = cfg.data.get("update") or {}
    policy = settings.get("policy", "patch")
    doc.update(policy=policy, branch=None, error=None, bumped=[], refused=[], notes=[], seconds=0.0)
    top = git_top(cfg.recipes_dir)
    try:
        if top:
            dirty = [l[3:] for l in git(top, "status", "--porcelain", "--untracked-files=all", "--",
                                        str(cfg.recipes_dir)).splitlines()]
            if dirty:
                doc["error"] = (f"refused: the recipes folder has uncommitted changes ({', '.join(dirty[:5])}"
                                f"{' ...' if len(dirty) > 5 else ''}); an update commits its bumps on a "
                                "branch and must not take them along. Commit or stash them (a bump kept "
                                "by an earlier --update stays uncommitted until its branch is merged).")
                return cfg
        plans = candidates(cfg, policy, doc)
        with tempfile.TemporaryDirectory(prefix="dappdeps-update-index-") as tmp:
            branch = None
            for plan in plans:
                cfg, kept = attempt(cfg, plan, doc)
                if kept and top:
                    try:
                        branch = branch or Branch(top, settings.get("branch", "dappdeps/updates-{date}"),
                                                  Path(tmp) / "index")
                        branch.commit(doc["bumped"][-1])
                        doc["branch"] = branch.name
                    except (UserError, OSError, ValueError) as exc:
                        doc["bumped"][-1]["notes"].append(f"not committed: {getattr(exc, 'message', exc)}")
    except Exception as exc:                # noqa: BLE001 - the nightly still runs; recipes were restored
        import traceback
        traceback.print_exc()
        doc["error"] = f"the update step failed: {getattr(exc, 'message', None) or repr(exc)}"
    finally:
        for bump in doc["bumped"]:
            bump.pop("path", None)
        doc["seconds"] = round(time.time() - t0, 3)
    return cfg
