"""Run reports of the nightly command: Markdown (mail, chat), JSON (machines), HTML (people).

    cache/reports/<run id>/report.{md,json,html}
    cache/reports/index.html          every kept run, newest first, with trend charts
    cache/reports/latest              symbolic link to the newest run's folder

The HTML page is one self-contained file: inline CSS and inline SVG charts (a timeline of
the tasks that ran, a size chart per image), no script, no external resource, so it can be
mailed, archived as a CI artifact or served as a static file. Links to logs, SBOMs and
license folders are relative to the report's folder (they work when cache/ is served as is).

The JSON document follows REPORT_SCHEMA (below; `format` is bumped on incompatible changes).
"""
import html
import json
import os
import re
import shutil
from pathlib import Path

from tasks.core.files import write_atomic

FORMAT = 1

STATUSES = ("ran", "failed", "blocked", "interrupted", "up-to-date", "ignored", "not-run")
RESULTS = ("ok", "failed", "interrupted", "error")
RUN_ID = re.compile(r"^\d{8}T\d{6}Z(-\d+)?$")

_num = {"type": "number", "minimum": 0}
_opt_num = {"type": ["number", "null"], "minimum": 0}
_opt_str = {"type": ["string", "null"]}

REPORT_SCHEMA = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "$id": "https://dappdeps.invalid/schemas/nightly-report-1.json",
    "title": "dappdeps nightly run report",
    "type": "object",
    "required": ["format", "id", "started", "finished", "seconds", "result", "exit_code",
                 "summary", "nothing_to_rebuild", "totals", "tasks", "images"],
    "additionalProperties": False,
    "properties": {
        "format": {"const": FORMAT},
        "id": {"type": "string", "pattern": RUN_ID.pattern},
        "started": {"type": "string", "format": "date-time"},
        "finished": {"type": "string", "format": "date-time"},
        "seconds": _num,
        "host": {"type": "string"},
        "root": {"type": "string", "description": "the project folder paths are relative to"},
        "config": {"type": "string"},
        "report_dir": {"type": "string"},
        "command": {"type": "array", "items": {"type": "string"}},
        "doit_args": {"type": "array", "items": {"type": "string"}},
        "parallel": {"type": "integer", "minimum": 1},
        "result": {"enum": list(RESULTS)},
        "exit_code": {"type": "integer"},
        "signal": _opt_str,
        "error": _opt_str,
        "summary": {"type": "string"},
        "nothing_to_rebuild": {"type": "boolean"},
        "totals": {
            "type": "object", "additionalProperties": False,
            "required": ["tasks", "busy_seconds", "peak_parallel"] + [s.replace("-", "_") for s in STATUSES],
            "properties": dict({s.replace("-", "_"): {"type": "integer", "minimum": 0} for s in STATUSES},
                               tasks={"type": "integer", "minimum": 0}, busy_seconds=_num,
                               peak_parallel={"type": "integer", "minimum": 0}),
        },
        "tasks": {
            "type": "array",
            "items": {
                "type": "object", "additionalProperties": False,
                "required": ["name", "stage", "status", "why", "started", "finished", "seconds"],
                "properties": {
                    "name": {"type": "string", "minLength": 1},
                    "stage": {"type": "string"},
                    "status": {"enum": list(STATUSES)},
                    "why": _opt_str,
                    "started": _opt_num, "finished": _opt_num, "seconds": _opt_num,
                    "error": _opt_str,
                    "log": _opt_str,
                    "log_tail": {"type": "array", "items": {"type": "string"}},
                },
                "allOf": [
                    {"if": {"properties": {"status": {"const": "failed"}}},
                     "then": {"required": ["error"],
                              "properties": {"error": {"type": "string", "minLength": 1}}}},
                    {"if": {"properties": {"status": {"enum": ["ran", "failed"]}}},
                     "then": {"properties": {"started": {"type": "number"},
                                             "finished": {"type": "number"},
                                             "seconds": {"type": "number"}}}},
                ],
            },
        },
        "images": {
            "type": "array",
            "items": {
                "type": "object", "additionalProperties": False,
                "required": ["name", "distribution", "version", "exported"],
                "properties": {
                    "name": {"type": "string"}, "distribution": {"type": "string"},
                    "version": {"type": "string"}, "repository": {"type": "string"},
                    "exported": {"type": "boolean"},
                    "status": {"enum": list(STATUSES) + [None],
                               "description": "what image:<name> did in this run"},
                    "ref": _opt_str, "digest": _opt_str, "id": _opt_str,
                    "size": _opt_num, "files": _opt_num, "tar": _opt_str,
                    "sbom": _opt_str, "licenses": _opt_str,
                    "components": {"type": "array", "items": {
                        "type": "object", "required": ["name", "size"],
                        "properties": {"name": {"type": "string"}, "version": {"type": "string"},
                                       "license": {"type": "string"}, "size": _num,
                                       "files": _num}}},
                },
            },
        },
    },
}


# ---- formatting helpers ----------------------------------------------------------------
def fmt_seconds(seconds):
    if seconds is None:
        return ""
    if seconds < 10:
        return f"{seconds:.1f} s"
    if seconds < 90:
        return f"{seconds:.0f} s"
    minutes, sec = divmod(int(round(seconds)), 60)
    if minutes < 90:
        return f"{minutes} min {sec:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


def fmt_size(size):
    if size is None:
        return ""
    for unit, factor in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if size >= factor:
            return f"{size / factor:.1f} {unit}"
    return f"{int(size)} B"


def short_digest(digest):
    if not digest:
        return ""
    algo, _, hexa = digest.partition(":")
    return f"{algo}:{hexa[:12]}" if hexa else digest[:19]


def headline(report):
    word = {"ok": "OK", "failed": "FAILED", "interrupted": "INTERRUPTED", "error": "ERROR"}
    return f"dappdeps nightly {report['started'][:19].replace('T', ' ')} UTC: {word[report['result']]}"


def counts_line(report):
    t = report["totals"]
    parts = []
    for key, label in (("failed", "failed"), ("blocked", "blocked by a failure"),
                       ("interrupted", "interrupted"), ("ran", "ran"),
                       ("up_to_date", "up to date"), ("not_run", "not run"), ("ignored", "ignored")):
        if t.get(key):
            parts.append(f"{t[key]} {label}")
    return ", ".join(parts) or "no task"


def image_state(image):
    """What an image's row means in this run: exported now, unchanged, or an earlier run's."""
    status = image.get("status")
    if status == "ran":
        return "exported"
    if status == "up-to-date":
        return "unchanged"
    if status == "failed":
        return "export failed"
    if not image.get("exported"):
        return "not built"
    if status in ("blocked", "interrupted", "not-run"):
        return "from an earlier run"
    return status or ""


# ---- Markdown ---------------------------------------------------------------------------
def _md_cell(text):
    return str(text or "").replace("|", "\\|").replace("\n", " ")


def render_markdown(report):
    out = [f"# {headline(report)}", ""]
    out.append(f"**{report['summary']}**  ")
    out.append(f"{counts_line(report)}; {fmt_seconds(report['seconds'])}, exit code "
               f"{report['exit_code']}" + (f", stopped by {report['signal']}" if report.get("signal") else ""))
    if report.get("error"):
        out += ["", "```", report["error"].rstrip(), "```"]
    failed = [t for t in report["tasks"] if t["status"] == "failed"]
    if failed:
        out += ["", "## Failed", ""]
        for t in failed:
            out.append(f"### {t['name']}")
            out.append("")
            if t.get("why"):
                out.append(f"why it ran: {t['why']}  ")
            out.append(f"after {fmt_seconds(t['seconds'])}" + (f"; log: `{t['log']}`" if t.get("log") else ""))
            out += ["", "```", (t.get("error") or "").rstrip()[:3000], "```"]
            if t.get("log_tail"):
                out += ["", f"Last {len(t['log_tail'])} lines of the log:", "", "```"]
                out += [line.replace("```", "ʼʼʼ") for line in t["log_tail"]]
                out.append("```")
            out.append("")
    blocked = [t for t in report["tasks"] if t["status"] in ("blocked", "interrupted", "not-run")]
    if blocked:
        out += ["", "## Not run", ""]
        out += [f"- `{t['name']}` ({t['status']}): {_md_cell(t.get('why'))}" for t in blocked]
    ran = [t for t in report["tasks"] if t["status"] == "ran"]
    if ran:
        out += ["", "## Ran", "", "| task | why | duration |", "| --- | --- | ---: |"]
        for t in sorted(ran, key=lambda t: t["started"] or 0):
            out.append(f"| `{t['name']}` | {_md_cell(t.get('why'))} | {fmt_seconds(t['seconds'])} |")
    if report["images"]:
        out += ["", "## Images", "", "| image | this run | reference | digest | size | SBOM | licenses |",
                "| --- | --- | --- | --- | ---: | --- | --- |"]
        for im in report["images"]:
            if not im["exported"]:
                out.append(f"| {im['name']} | {image_state(im)} | | | | | |")
                continue
            out.append(f"| {im['name']} | {image_state(im)} | `{im.get('ref') or ''}` | "
                       f"`{short_digest(im.get('digest'))}` | "
                       f"{fmt_size(im.get('size'))} | {'`' + im['sbom'] + '`' if im.get('sbom') else '-'} | "
                       f"{'`' + im['licenses'] + '`' if im.get('licenses') else '-'} |")
    fresh = [t for t in report["tasks"] if t["status"] in ("up-to-date", "ignored")]
    if fresh:
        out += ["", f"## Up to date ({len(fresh)})", ""]
        stages = {}
        for t in fresh:
            stages.setdefault(t["stage"], []).append(t["name"])
        for stage, names in stages.items():
            shown = ", ".join(n.split(":", 1)[-1] for n in names[:30])
            more = f" and {len(names) - 30} more" if len(names) > 30 else ""
            out.append(f"- {stage} ({len(names)}): {shown}{more}")
    tail = f"Run {report['id']} on {report.get('host') or 'an unnamed host'}"
    if report.get("report_dir"):
        tail += f"; this report: `{report['report_dir']}/report.html`"
    out += ["", tail + "."]
    return "\n".join(out) + "\n"


# ---- SVG charts ------------------------------------------------------------------------
STAGE_COLORS = {"check-host": "#8d99ae", "fetch": "#4c78a8", "build": "#54a24b",
                "assemble": "#b279a2", "image": "#f58518", "legal": "#9d755d", "load": "#72b7b2"}
STATUS_COLORS = {"failed": "#d62728", "interrupted": "#ff9896", "ran": None}


def _esc(text):
    return html.escape(str(text), quote=True)


def _nice_step(span, target=8):
    for step in (0.1, 0.2, 0.5, 1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600,
                 7200, 10800, 21600):
        if span / step <= target:
            return step
    return 43200


def _tick_label(seconds):
    if seconds == 0:
        return "0"
    if seconds < 1:
        return f"{seconds:.1f}s"
    if seconds < 60:
        return f"{seconds:g}s"
    if seconds < 3600:
        m, s = divmod(int(seconds), 60)
        return f"{m}m" + (f"{s:02d}" if s else "")
    h, m = divmod(int(seconds) // 60, 60)
    return f"{h}h" + (f"{m:02d}" if m else "")


def peak_parallel(tasks):
    events = []
    for t in tasks:
        if t.get("started") is not None and t.get("finished") is not None:
            events += [(t["started"], 1), (t["finished"], -1)]
    running = peak = 0
    for _, delta in sorted(events, key=lambda e: (e[0], e[1])):
        running += delta
        peak = max(peak, running)
    return peak


def svg_timeline(tasks, total, width=960):
    """Gantt chart: one row per task that ran (or failed), x = seconds since the run started;
    bars that overlap in x ran at the same time."""
    rows = sorted((t for t in tasks if t.get("started") is not None and t["status"] in
                   ("ran", "failed", "interrupted")), key=lambda t: (t["started"], t["name"]))
    if not rows:
        return ""
    label_w, pad, row_h, top = 230, 12, 18, 26
    chart_w = width - label_w - pad * 2
    span = max(total or 0, max((t["finished"] or t["started"]) for t in rows), 0.001)
    x = lambda s: label_w + pad + chart_w * (s / span)          # noqa: E731
    height = top + row_h * len(rows) + 30
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" class="chart timeline" width="{width}" '
           f'height="{height}" viewBox="0 0 {width} {height}" role="img" '
           f'aria-label="timeline of the tasks that ran">']
    step = _nice_step(span)
    tick = 0.0
    while tick <= span + 1e-9:
        xt = x(tick)
        out.append(f'<line x1="{xt:.1f}" y1="{top - 6}" x2="{xt:.1f}" y2="{height - 24}" class="grid"/>')
        out.append(f'<text x="{xt:.1f}" y="{top - 10}" class="tick" text-anchor="middle">'
                   f'{_tick_label(round(tick, 3))}</text>')
        tick += step
    for i, t in enumerate(rows):
        y = top + i * row_h
        end = t["finished"] if t["finished"] is not None else span
        x0, x1 = x(t["started"]), x(end)
        color = STATUS_COLORS.get(t["status"]) or STAGE_COLORS.get(t["stage"], "#888")
        name = t["name"] if len(t["name"]) <= 34 else t["name"][:16] + "…" + t["name"][-16:]
        out.append(f'<text x="{label_w}" y="{y + 13}" class="label" text-anchor="end">{_esc(name)}</text>')
        tip = (f"{t['name']}: {t['status']}, {fmt_seconds(t['seconds'])} "
               f"(from {fmt_seconds(t['started'])} to {fmt_seconds(end)})"
               + (f"\nwhy: {t['why']}" if t.get("why") else ""))
        out.append(f'<rect x="{x0:.1f}" y="{y + 3}" width="{max(x1 - x0, 2):.1f}" height="{row_h - 5}" '
                   f'rx="2" fill="{color}" class="bar {t["status"]}"><title>{_esc(tip)}</title></rect>')
        value = _esc(fmt_seconds(t["seconds"]))
        if x1 + 60 < width:
            out.append(f'<text x="{x1 + 4:.1f}" y="{y + 13}" class="value">{value}</text>')
        elif x1 - x0 > 60:
            out.append(f'<text x="{x1 - 4:.1f}" y="{y + 13}" class="value inside" '
                       f'text-anchor="end">{value}</text>')
        else:
            out.append(f'<text x="{x0 - 4:.1f}" y="{y + 13}" class="value" text-anchor="end">{value}</text>')
    legend_y = height - 8
    lx = label_w + pad
    for stage in dict.fromkeys(t["stage"] for t in rows):
        color = STAGE_COLORS.get(stage, "#888")
        out.append(f'<rect x="{lx}" y="{legend_y - 9}" width="10" height="10" fill="{color}"/>'
                   f'<text x="{lx + 14}" y="{legend_y}" class="tick">{_esc(stage)}</text>')
        lx += 24 + 7 * len(stage)
    if any(t["status"] == "failed" for t in rows):
        out.append(f'<rect x="{lx}" y="{legend_y - 9}" width="10" height="10" fill="{STATUS_COLORS["failed"]}"/>'
                   f'<text x="{lx + 14}" y="{legend_y}" class="tick">failed</text>')
    out.append("</svg>")
    return "\n".join(out)


def svg_bars(items, width=960, unit=fmt_size, label_w=230, css="sizes", title=""):
    """Horizontal bars: items = [(label, value, color or None, tooltip)]."""
    if not items:
        return ""
    row_h, pad = 18, 12
    chart_w = width - label_w - pad * 2 - 80
    biggest = max(v for _, v, _, _ in items) or 1
    height = row_h * len(items) + 8
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" class="chart {css}" width="{width}" '
           f'height="{height}" viewBox="0 0 {width} {height}" role="img" aria-label="{_esc(title)}">']
    for i, (label, value, color, tip) in enumerate(items):
        y = 4 + i * row_h
        w = max(chart_w * value / biggest, 1)
        out.append(f'<text x="{label_w}" y="{y + 12}" class="label" text-anchor="end">{_esc(label)}</text>')
        out.append(f'<rect x="{label_w + pad}" y="{y + 2}" width="{w:.1f}" height="{row_h - 5}" rx="2" '
                   f'fill="{color or "#4c78a8"}"><title>{_esc(tip or label)}</title></rect>')
        out.append(f'<text x="{label_w + pad + w + 4:.1f}" y="{y + 12}" class="value">{_esc(unit(value))}</text>')
    out.append("</svg>")
    return "\n".join(out)


def svg_image_sizes(image, top=14):
    comps = sorted(image.get("components") or [], key=lambda c: -c["size"])
    if not comps:
        return ""
    items = [(f"{c['name']} {c.get('version', '')}".strip(), c["size"], None,
              f"{c['name']}: {fmt_size(c['size'])} in {c.get('files', 0)} files") for c in comps[:top]]
    rest = comps[top:]
    if rest:
        items.append((f"{len(rest)} others", sum(c["size"] for c in rest), "#9ecae9",
                      ", ".join(c["name"] for c in rest)))
    return svg_bars(items, title=f"installed size per component of image {image['name']}")


# ---- HTML -------------------------------------------------------------------------------
CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,"DejaVu Sans",sans-serif;margin:0;color:#1d2330;background:#f6f7f9}
main{max-width:1000px;margin:0 auto;padding:18px 20px 40px}
h1{font-size:22px;margin:4px 0 2px}h2{font-size:17px;margin:26px 0 8px;border-bottom:1px solid #dde1e6;padding-bottom:3px}
h3{font-size:15px;margin:14px 0 4px}
.meta{color:#5a6270;font-size:13px}.meta a{color:#2b5fad}
.badge{display:inline-block;padding:1px 8px;border-radius:10px;font-size:12px;font-weight:600;color:#fff;vertical-align:middle}
.ok,.ran{background:#2e8540}.failed,.error{background:#c62828}.interrupted{background:#ef6c00}.blocked{background:#8e6c00}
.up-to-date,.ignored,.not-run{background:#8d99ae}
.summary{font-size:16px;margin:10px 0;padding:10px 14px;background:#fff;border-left:4px solid #2e8540;border-radius:3px}
.summary.failed,.summary.error{border-color:#c62828;background:#fff}.summary.interrupted{border-color:#ef6c00;background:#fff}
.cards{display:flex;gap:10px;flex-wrap:wrap;margin:10px 0}
.card{background:#fff;border:1px solid #dde1e6;border-radius:4px;padding:6px 12px;min-width:90px}
.card b{display:block;font-size:20px}.card span{color:#5a6270;font-size:12px}
table{border-collapse:collapse;width:100%;background:#fff;font-size:13px}
th,td{border-bottom:1px solid #e6e9ee;padding:4px 8px;text-align:left;vertical-align:top}
th{background:#eef1f5;font-weight:600}td.num,th.num{text-align:right;white-space:nowrap}td:first-child{white-space:nowrap}
code,pre{font:12px/1.4 "DejaVu Sans Mono",Menlo,Consolas,monospace}
pre{background:#1d2330;color:#e8ecf2;padding:8px 10px;border-radius:4px;overflow-x:auto;white-space:pre-wrap;word-break:break-all}
.failure{background:#fff;border:1px solid #f0c4c4;border-radius:4px;padding:4px 12px 8px;margin:10px 0}
.chart{background:#fff;border:1px solid #dde1e6;border-radius:4px;max-width:100%;height:auto}
.chart .label{font-size:11px;fill:#1d2330}.chart .tick{font-size:10px;fill:#5a6270}.chart .value{font-size:10px;fill:#5a6270}
.chart .grid{stroke:#e6e9ee;stroke-width:1}.chart .value.inside{fill:#fff}
.muted{color:#5a6270}
"""


def _rel_link(target, base_dir):
    """A relative URL from the report folder to a file (None when there is none)."""
    if not target:
        return None
    try:
        rel = os.path.relpath(target, base_dir)
    except ValueError:
        return None
    return "/".join(html.escape(p, quote=True) for p in rel.split(os.sep))


def _abs(report, path):
    if not path:
        return None
    p = Path(path)
    return p if p.is_absolute() else Path(report.get("root") or ".") / p


def _badge(status):
    return f'<span class="badge {_esc(status)}">{_esc(status)}</span>'


def render_html(report, report_dir):
    report_dir = Path(report_dir)
    link = lambda path: _rel_link(_abs(report, path), report_dir)     # noqa: E731
    e = _esc
    tasks = report["tasks"]
    t = report["totals"]
    out = ["<!DOCTYPE html>", '<html lang="en">', "<head>", '<meta charset="utf-8">',
           '<meta name="viewport" content="width=device-width, initial-scale=1">',
           f"<title>{e(headline(report))}</title>", f"<style>{CSS}</style>", "</head>", "<body>", "<main>"]
    out.append(f"<h1>dappdeps nightly {_badge(report['result'])}</h1>")
    out.append(f'<p class="meta">run {e(report["id"])} · started {e(report["started"])} · finished '
               f'{e(report["finished"])} · {e(fmt_seconds(report["seconds"]))} · host {e(report.get("host", ""))} · '
               f'exit code {report["exit_code"]}<br><a href="../index.html">all runs</a> · '
               f'<a href="report.md">Markdown</a> · <a href="report.json">JSON</a></p>')
    out.append(f'<div class="summary {e(report["result"])}">{e(report["summary"])}</div>')
    if report.get("error"):
        out.append(f"<pre>{e(report['error'])}</pre>")
    cards = [("tasks", t["tasks"]), ("ran", t["ran"]), ("up to date", t["up_to_date"]),
             ("failed", t["failed"]), ("blocked", t["blocked"]),
             ("busy time", fmt_seconds(t["busy_seconds"])), ("peak parallel", t["peak_parallel"])]
    if t["interrupted"] or t["not_run"]:
        cards.insert(5, ("interrupted / not run", f"{t['interrupted']} / {t['not_run']}"))
    out.append('<div class="cards">' + "".join(
        f'<div class="card"><b>{e(v)}</b><span>{e(k)}</span></div>' for k, v in cards) + "</div>")

    failed = [x for x in tasks if x["status"] == "failed"]
    if failed:
        out.append(f'<h2 id="failures">Failures ({len(failed)})</h2>')
        for x in failed:
            out.append('<div class="failure">')
            out.append(f"<h3>{e(x['name'])}</h3>")
            meta = [f"after {fmt_seconds(x['seconds'])}"]
            if x.get("why"):
                meta.append(f"why it ran: {e(x['why'])}")
            if x.get("log"):
                meta.append(f'log: <a href="{link(x["log"])}"><code>{e(x["log"])}</code></a>')
            out.append(f'<p class="meta">{" · ".join(meta)}</p>')
            out.append(f"<pre>{e((x.get('error') or '').rstrip())}</pre>")
            if x.get("log_tail"):
                out.append(f'<p class="meta">last {len(x["log_tail"])} lines of the log:</p>')
                out.append(f"<pre>{e(chr(10).join(x['log_tail']))}</pre>")
            out.append("</div>")

    out.append('<h2 id="timeline">Timeline</h2>')
    chart = svg_timeline(tasks, report["seconds"])
    if chart:
        out.append(f'<p class="meta">tasks that ran, by start time; overlapping bars ran in parallel '
                   f'(at most {t["peak_parallel"]} at once). Up-to-date tasks take no time and are '
                   f'not drawn ({t["up_to_date"]}).</p>')
        out.append(chart)
    else:
        out.append('<p class="muted">No task ran: nothing to rebuild.</p>')

    if report["images"]:
        out.append('<h2 id="images">Images</h2>')
        out.append('<table><tr><th>image</th><th>this run</th><th>reference</th><th>digest</th>'
                   '<th class="num">size</th><th class="num">files</th><th>SBOM</th><th>licenses</th></tr>')
        for im in report["images"]:
            if not im["exported"]:
                out.append(f'<tr><td>{e(im["name"])}</td><td>{e(image_state(im))}</td>'
                           f'<td colspan="6" class="muted">no exported image</td></tr>')
                continue
            sbom = f'<a href="{link(im["sbom"])}">CycloneDX</a>' if im.get("sbom") else "-"
            lic = f'<a href="{link(im["licenses"])}/">license texts</a>' if im.get("licenses") else "-"
            out.append(f'<tr><td>{e(im["name"])}</td><td>{e(image_state(im))}</td>'
                       f'<td><code>{e(im.get("ref") or "")}</code></td>'
                       f'<td><code title="{e(im.get("digest") or "")}">{e(short_digest(im.get("digest")))}</code></td>'
                       f'<td class="num">{e(fmt_size(im.get("size")))}</td><td class="num">{e(im.get("files") or "")}</td>'
                       f"<td>{sbom}</td><td>{lic}</td></tr>")
        out.append("</table>")
        for im in report["images"]:
            chart = svg_image_sizes(im)
            if chart:
                total = sum(c["size"] for c in im["components"])
                n = len(im["components"])
                out.append(f"<h3>{e(im['name'])}: {fmt_size(total)} installed by "
                           f"{n} component{'s' if n != 1 else ''}"
                           + (f" (tar {fmt_size(im.get('size'))})" if im.get("size") else "") + "</h3>")
                out.append(chart)

    out.append(f'<h2 id="tasks">Tasks ({len(tasks)})</h2>')
    out.append('<table><tr><th>status</th><th>task</th><th>why it ran</th><th class="num">started</th>'
               '<th class="num">duration</th></tr>')
    order = {s: i for i, s in enumerate(STATUSES)}
    for x in sorted(tasks, key=lambda x: (order[x["status"]], x["started"] if x["started"] is not None else 1e18)):
        why = e(x.get("why") or "")
        if x.get("log") and x["status"] in ("ran", "failed"):
            why += f' <a href="{link(x["log"])}" class="muted">log</a>'
        out.append(f'<tr><td>{_badge(x["status"])}</td><td><code>{e(x["name"])}</code></td><td>{why}</td>'
                   f'<td class="num">{e("+" + fmt_seconds(x["started"]) if x["started"] is not None else "")}</td>'
                   f'<td class="num">{e(fmt_seconds(x["seconds"]))}</td></tr>')
    out.append("</table>")
    out.append(f'<p class="meta">doit {e(" ".join(report.get("doit_args", [])))} · config '
               f'{e(report.get("config", ""))}</p>')
    out += ["</main>", "</body>", "</html>"]
    return "\n".join(out) + "\n"


# ---- writing, the index, retention ------------------------------------------------------
def validate(report):
    """Raise jsonschema.ValidationError when the report does not follow REPORT_SCHEMA."""
    import jsonschema
    jsonschema.validate(report, REPORT_SCHEMA, format_checker=jsonschema.FormatChecker())


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


def _load(path):
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None


def render_index(reports_dir):
    reports_dir = Path(reports_dir)
    runs = []
    for d in reversed(run_dirs(reports_dir)):
        doc = _load(d / "report.json")
        runs.append((d, doc))
    e = _esc
    out = ["<!DOCTYPE html>", '<html lang="en">', "<head>", '<meta charset="utf-8">',
           '<meta name="viewport" content="width=device-width, initial-scale=1">',
           "<title>dappdeps nightly runs</title>", f"<style>{CSS}</style>", "</head>", "<body>", "<main>",
           "<h1>dappdeps nightly runs</h1>",
           f'<p class="meta">{len(runs)} kept runs, newest first · '
           f'<a href="latest/report.html">latest</a></p>']
    good = [(d, doc) for d, doc in runs if doc]
    if len(good) > 1:
        items = [(doc["id"], doc["seconds"], STATUS_COLORS.get(doc["result"]) or
                  ("#2e8540" if doc["result"] == "ok" else "#ef6c00"),
                  f"{doc['id']}: {doc['result']}, {doc['summary']}") for d, doc in reversed(good[:30])]
        out.append("<h2>Duration of the last runs</h2>")
        out.append(svg_bars(items, unit=fmt_seconds, css="durations", title="run durations"))
        sizes = {}
        for d, doc in reversed(good[:30]):
            for im in doc.get("images", []):
                if im.get("size"):
                    sizes.setdefault(im["name"], []).append((doc["id"], im["size"], None,
                                                             f"{im['name']} {im.get('digest') or ''}"))
        if sizes:
            out.append("<h2>Image sizes over the last runs</h2>")
            for name, items in sizes.items():
                out.append(f"<h3>{e(name)}</h3>")
                out.append(svg_bars(items, css="trend", title=f"size of image {name} per run"))
    out.append('<h2>Runs</h2><table><tr><th>run</th><th>result</th><th>summary</th><th class="num">ran</th>'
               '<th class="num">failed</th><th class="num">up to date</th><th class="num">duration</th>'
               "<th>files</th></tr>")
    for d, doc in runs:
        name = e(d.name)
        if not doc:
            out.append(f'<tr><td>{name}</td><td colspan="7" class="muted">no report.json (run still '
                       f'going, or killed)</td></tr>')
            continue
        t = doc["totals"]
        out.append(f'<tr><td><a href="{name}/report.html">{e(doc["started"][:19].replace("T", " "))}</a></td>'
                   f'<td>{_badge(doc["result"])}</td><td>{e(doc["summary"])}</td>'
                   f'<td class="num">{t["ran"]}</td><td class="num">{t["failed"]}</td>'
                   f'<td class="num">{t["up_to_date"]}</td><td class="num">{e(fmt_seconds(doc["seconds"]))}</td>'
                   f'<td><a href="{name}/report.html">html</a> <a href="{name}/report.md">md</a> '
                   f'<a href="{name}/report.json">json</a></td></tr>')
    out += ["</table>", "</main>", "</body>", "</html>"]
    return "\n".join(out) + "\n"


def update_index(reports_dir, keep, current=None):
    """Apply retention, rewrite index.html and point `latest` at the newest run."""
    reports_dir = Path(reports_dir)
    removed = prune(reports_dir, keep, current)
    write_atomic(reports_dir / "index.html", render_index(reports_dir))
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
