"""The report folders of the nightly runs, and how long they are kept:

    cache/reports/<run id>/report.{md,json,html}
    cache/reports/index.html          every kept run, newest first, with trend charts
    cache/reports/latest              symbolic link to the newest run's folder
"""
import json
import os
import shutil
from pathlib import Path

from tasks.core.files import write_atomic
from tasks.report.htmlpage import render_html, render_index
from tasks.report.markdown import render_markdown
from tasks.report.schema import RUN_ID


def write_report(report, report_dir):
    """report.json, report.md and report.html in report_dir (each written atomically)."""
    report_dir = Path(report_dir)
    report_dir.mkdir(parents=True, exist_ok=True)
    write_atomic(report_dir / "report.json", json.dumps(report, indent=1, sort_keys=False) + "\n")
    write_atomic(report_dir / "report.md", render_markdown(report))
    write_atomic(report_dir / "report.html", render_html(report, report_dir))
    return {k: report_dir / f"report.{k}" for k in ("json", "md", "html")}


def new_run_dir(reports_dir, run_id):
    """cache/reports/<run id>, made unique (-2, -3...) when a run started in the same second."""
    reports_dir = Path(reports_dir)
    reports_dir.mkdir(parents=True, exist_ok=True)
    candidate, n = run_id, 1
    while True:
        try:
            (reports_dir / candidate).mkdir()
            return reports_dir / candidate
        except FileExistsError:
            n += 1
            candidate = f"{run_id}-{n}"


def run_dirs(reports_dir):
    """Report folders, oldest first."""
    reports_dir = Path(reports_dir)
    if not reports_dir.is_dir():
        return []
    found = [p for p in reports_dir.iterdir() if p.is_dir() and RUN_ID.match(p.name)]

    def key(p):
        base, _, n = p.name.partition("-")
        return base, int(n or 1)
    return sorted(found, key=key)


def prune(reports_dir, keep, current=None):
    """Delete all but the newest `keep` report folders (never `current`); returns the deleted."""
    dirs = run_dirs(reports_dir)
    doomed = dirs[:max(0, len(dirs) - max(1, keep))]
    removed = []
    for path in doomed:
        if current is not None and Path(path) == Path(current):
            continue
        shutil.rmtree(path, ignore_errors=True)
        removed.append(path)
    return removed


def _read(path):
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None


def update_index(reports_dir, keep, current=None):
    """Apply retention, rewrite index.html and point `latest` at the newest run."""
    reports_dir = Path(reports_dir)
    removed = prune(reports_dir, keep, current)
    runs = [(d, _read(d / "report.json")) for d in reversed(run_dirs(reports_dir))]
    write_atomic(reports_dir / "index.html", render_index(runs))
    dirs = run_dirs(reports_dir)
    if dirs:
        link = reports_dir / "latest"
        tmp = reports_dir / ".latest.tmp"
        try:
            tmp.unlink(missing_ok=True)
            tmp.symlink_to(dirs[-1].name)
            os.replace(tmp, link)
        except OSError:
            pass
    return removed
