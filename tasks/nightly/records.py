"""What a nightly run did, as the report's `tasks` and `images` lists: one record per task
(read from the NightlyReporter) and one per configured image (read from cache/)."""
import json
from pathlib import Path

from tasks.core.files import tail
from tasks.model.pipeline import STAGES
from tasks.ship.engine import read_loaded
from tasks.ship.image import image_paths, read_result
from tasks.ship.legal_info import image_components, legal_paths
from tasks.sources.outdated import report_path as outdated_report_path
from tasks.verify.repro import summary_path

# Why a task ran when its up-to-date check leaves no reason in tasks.model.stamp.REASONS.
FALLBACK_WHY = {stage.name: stage.why for stage in STAGES if stage.why}


def relative(path, root):
    """path relative to the project folder when it is inside it, else as it is."""
    path = Path(path)
    try:
        return str(path.resolve().relative_to(root))
    except ValueError:
        return str(path)


def _tail(path, count):
    return [line.rstrip("\n") for line in tail(path, count)]


def log_of(cfg, task_name):
    """The build log of a build:<dist>/<component> task (None for other tasks)."""
    if not task_name.startswith("build:") or "/" not in task_name:
        return None
    dist, comp = task_name[len("build:"):].split("/", 1)
    return cfg.cache / "logs" / dist / f"{comp}.log"


def task_records(cfg, reporter, interrupted, log_tail):
    from tasks.stages import finished       # imported late: it loads the project
    root = cfg.root
    names = [n for n, r in reporter.records.items() if r["actions"]]
    for name in sorted(reporter.wanted() - set(names)):
        task = reporter.tasks.get(name)
        if task is not None and task.actions:
            names.append(name)
    out = []
    for name in names:
        rec = reporter.records.get(name) or {"name": name, "stage": name.split(":", 1)[0],
                                             "status": None, "why": None, "started": None,
                                             "finished": None, "error": None, "output": ""}
        status = rec["status"]
        if status == "running":
            # doit stops listening to its worker threads at a signal: ask what the action did
            status = "ran" if finished(name) else "interrupted"
            if status == "ran" and rec["finished"] is None:
                rec = dict(rec, finished=rec["started"])
        elif status is None:
            status = "not-run"
        why = rec["why"]
        if status in ("ran", "failed", "interrupted") and not why:
            why = FALLBACK_WHY.get(rec["stage"], "its up-to-date check said it must run")
        if status == "not-run":
            why = "the run was interrupted before it" if interrupted else "not reached"
        seconds = None
        if rec["started"] is not None and rec["finished"] is not None:
            seconds = round(rec["finished"] - rec["started"], 3)
        item = {"name": name, "stage": rec["stage"], "status": status, "why": why,
                "started": rec["started"], "finished": rec["finished"], "seconds": seconds}
        if status == "failed":
            item["error"] = (rec["error"] or "failed")[-6000:]
            log = log_of(cfg, name)
            if log is not None:
                item["log"] = relative(log, root)
                item["log_tail"] = _tail(log, log_tail) if log.is_file() else []
            elif rec.get("output"):
                item["log_tail"] = rec["output"].rstrip("\n").splitlines()[-log_tail:]
        elif status in ("ran", "interrupted"):
            log = log_of(cfg, name)
            if log is not None:
                item["log"] = relative(log, root)
                if status == "interrupted" and log.is_file():
                    item["log_tail"] = _tail(log, log_tail)
        out.append(item)
    return out


def image_records(cfg, tasks=()):
    """Every configured image: its export result (cache/images/*.json), SBOM, license folder,
    the installed size of each component it holds, and what its image:<name> task did in
    this run (an image whose task was blocked is the one of an earlier run)."""
    status = {t["name"]: t["status"] for t in tasks}
    root = cfg.root
    out = []
    for dist in cfg.distributions.values():
        try:
            doc = json.loads(cfg.assembled_manifest(dist.name).read_text())
        except (OSError, ValueError):
            doc = None
        for name, spec in dist.images.items():
            paths = image_paths(cfg.cache, name, dist.version)
            result = read_result(paths["json"]) or {}
            legal = legal_paths(cfg.cache, name, dist.version)
            item = {"name": name, "distribution": dist.name, "version": dist.version,
                    "repository": spec["repository"],
                    "exported": bool(result) and paths["tar"].is_file(),
                    "status": status.get(f"image:{name}"),
                    "ref": result.get("ref"), "digest": result.get("digest"), "id": result.get("id"),
                    "size": result.get("size"), "files": result.get("files"),
                    "tar": relative(paths["tar"], root) if paths["tar"].is_file() else None,
                    "sbom": relative(legal["sbom"], root) if legal["sbom"].is_file() else None,
                    "licenses": relative(legal["folder"], root) if legal["folder"].is_dir() else None,
                    "components": []}
            item["engines"] = loaded_in(paths["json"])
            if name == dist.name:
                item["checks"] = check_results(cfg, dist.name)
            if doc is not None:
                item["components"] = [
                    {"name": c["name"], "version": str(c.get("version", "")),
                     "license": c.get("license", ""), "size": c["size"], "files": c["files"]}
                    for c in image_components(doc, spec)]
            out.append(item)
    return out


ENGINE_KEYS = ("kind", "version", "api_version")


def loaded_in(result_json):
    """The engines load:<image> put this image into (cache/images/*.engines.json)."""
    return [{"name": name, **{k: str(rec.get(k, "")) for k in ENGINE_KEYS},
             "status": str(rec.get("status", "")), "at": str(rec.get("at", ""))}
            for name, rec in sorted(read_loaded(result_json).items()) if isinstance(rec, dict)]


def check_results(cfg, dist_name):
    """check-images:<dist> results (cache/checks/<dist>.images.json): per engine and base
    image, how many smoke tests passed, and the engine's kind, version and API version."""
    try:
        doc = json.loads((cfg.cache / "checks" / f"{dist_name}.images.json").read_text())
    except (OSError, ValueError):
        return []
    out = []
    for found in doc.get("engines") or []:
        for ref, results in sorted((found.get("images") or {}).items()):
            out.append({"engine": str(found.get("name", "")),
                        **{k: str(found.get(k, "")) for k in ENGINE_KEYS}, "image": ref,
                        "passed": sum(1 for r in results if r.get("status") == 0),
                        "total": len(results)})
    return out


REPRO_SHOWN = 5


def repro_records(cfg):
    """The latest repro:<dist> measurement of each distribution that has one
    (cache/reports/repro-<dist>.json): when, how many files were bit-identical, and the
    first differing files with their hints."""
    out = []
    for dist in cfg.distributions.values():
        path = summary_path(cfg.cache, dist.name)
        try:
            doc = json.loads(path.read_text())
            totals = doc["totals"]
            differing = [{"component": str(c["name"]), "path": str(d["path"]), "hint": str(d["hint"])}
                         for c in doc["components"] for d in c["differing"]]
            item = {"distribution": dist.name, "when": str(doc["when"]), "ok": doc["ok"] is True,
                    "files": int(totals["files"]), "identical": int(totals["identical"]),
                    "percent": float(totals["percent"]), "differing": len(differing),
                    "examples": differing[:REPRO_SHOWN],
                    "images_same": all(im.get("same") is True for im in doc.get("images") or []),
                    "summary": relative(path, cfg.root)}
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            continue                        # never measured, or not a summary we wrote
        out.append(item)
    return out


OUTDATED_CVES = 10


def outdated_records(cfg):
    """The latest `doit outdated` (cache/reports/outdated.json), or None: when, which
    suites, the totals, and per recipe its versions, verdict and the first CVE IDs."""
    path = outdated_report_path(cfg.cache)
    try:
        doc = json.loads(path.read_text())
        recipes = []
        for r in doc["recipes"]:
            deb, up = r.get("debian") or {}, r.get("upstream") or {}
            recipes.append({
                "recipe": str(r["recipe"]), "shipped": str(r["shipped"]),
                "debian": deb.get("newest"), "suite": deb.get("suite"),
                "upstream": up.get("newest"), "upstream_error": up.get("error"),
                "verdict": str(r["verdict"]), "cve_count": len(r["cves"]),
                "cves": [str(c) for c in r["cves"][:OUTDATED_CVES]], "note": str(r.get("note") or "")})
        return {"when": str(doc["when"]), "suites": [str(s) for s in doc["suites"]],
                "totals": {k: int(doc["totals"][k]) for k in ("current", "outdated", "security")},
                "recipes": recipes, "summary": relative(path, cfg.root)}
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None                         # never run, or not a document we wrote
