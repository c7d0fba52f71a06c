"""report.html of a run and index.html of every kept run: one self-contained file each.

Inline CSS and inline SVG charts (tasks.report.svg), no script, no external resource, so a
page can be mailed, archived as a CI artifact or served as a static file. Links to logs,
SBOMs and license folders are relative to the report's folder (they work when cache/ is
served as is).
"""
import os
from pathlib import Path

from tasks.report.formatting import (check_rows, engines_cell, esc, fmt_seconds, fmt_size, headline,
                                     image_state, short_digest)
from tasks.report.markdown import outdated_cells, updates_line
from tasks.report.schema import STATUSES
from tasks.report.svg import STATUS_COLORS, svg_bars, svg_image_sizes, svg_timeline

CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,"DejaVu Sans",sans-serif;margin:0;color:#1d2330;background:#f6f7f9}
main{max-width:1000px;margin:0 auto;padding:18px 20px 40px}
h1{font-size:22px;margin:4px 0 2px}h2{font-size:17px;margin:26px 0 8px;border-bottom:1px solid #dde1e6;padding-bottom:3px}
h3{font-size:15px;margin:14px 0 4px}
.meta{color:#5a6270;font-size:13px}.meta a{color:#2b5fad}
.badge{display:inline-block;padding:1px 8px;border-radius:10px;font-size:12px;font-weight:600;color:#fff;vertical-align:middle}
.ok,.ran{background:#2e8540}.failed,.error{background:#c62828}.interrupted{background:#ef6c00}.blocked{background:#8e6c00}
.up-to-date,.ignored,.not-run{background:#8d99ae}.security{background:#c62828}.outdated{background:#8e6c00}
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
    return "/".join(esc(p) for p in rel.split(os.sep))


def _abs(report, path):
    if not path:
        return None
    p = Path(path)
    return p if p.is_absolute() else Path(report.get("root") or ".") / p


def _badge(status):
    return f'<span class="badge {esc(status)}">{esc(status)}</span>'


def render_html(report, report_dir):
    report_dir = Path(report_dir)
    link = lambda path: _rel_link(_abs(report, path), report_dir)     # noqa: E731
    e = esc
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
                   '<th class="num">size</th><th class="num">files</th><th>SBOM</th><th>licenses</th>'
                   '<th>loaded in</th></tr>')
        for im in report["images"]:
            if not im["exported"]:
                out.append(f'<tr><td>{e(im["name"])}</td><td>{e(image_state(im))}</td>'
                           f'<td colspan="7" class="muted">no exported image</td></tr>')
                continue
            sbom = f'<a href="{link(im["sbom"])}">CycloneDX</a>' if im.get("sbom") else "-"
            lic = f'<a href="{link(im["licenses"])}/">license texts</a>' if im.get("licenses") else "-"
            out.append(f'<tr><td>{e(im["name"])}</td><td>{e(image_state(im))}</td>'
                       f'<td><code>{e(im.get("ref") or "")}</code></td>'
                       f'<td><code title="{e(im.get("digest") or "")}">{e(short_digest(im.get("digest")))}</code></td>'
                       f'<td class="num">{e(fmt_size(im.get("size")))}</td><td class="num">{e(im.get("files") or "")}</td>'
                       f"<td>{sbom}</td><td>{lic}</td><td>{e(engines_cell(im))}</td></tr>")
        out.append("</table>")
        checks = check_rows(report)
        if checks:
            out.append('<h3 id="checks">Smoke tests in images (check-images)</h3>')
            out.append('<table><tr><th>image</th><th>engine</th><th>engine version</th>'
                       '<th>in base image</th><th class="num">passed</th></tr>')
            out += [f'<tr><td>{e(name)}</td><td>{e(engine)}</td><td>{e(label)}</td>'
                    f'<td><code>{e(base)}</code></td><td class="num">{e(count)}'
                    f'{"" if ok else " " + _badge("failed")}</td></tr>'
                    for name, engine, label, base, count, ok in checks]
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

    out += _repro(report.get("repro") or [], link)
    out += _outdated(report.get("outdated"), link)
    out += _updates(report.get("updates"), link)
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


def _repro(records, link):
    """The latest repro:<dist> measurements (docs/reproducibility.md), if any."""
    if not records:
        return []
    e = esc
    out = ['<h2 id="repro">Reproducibility</h2>',
           '<p class="meta">the latest <code>doit repro:&lt;dist&gt;</code> of each distribution: '
           'a second build under other conditions, compared file by file</p>',
           '<table><tr><th>distribution</th><th>result</th><th>measured</th>'
           '<th class="num">bit-identical</th><th>differing files (hint)</th><th>summary</th></tr>']
    for r in records:
        shown = "<br>".join(f"<code>{e(x['component'])}/{e(x['path'])}</code> ({e(x['hint'])})"
                            for x in r["examples"])
        more = r["differing"] - len(r["examples"])
        shown += f"<br>and {more} more" if more > 0 else ""
        if not r["images_same"]:
            shown += ("<br>" if shown else "") + "image digests differ"
        out.append(f'<tr><td>{e(r["distribution"])}</td><td>{_badge("ok" if r["ok"] else "failed")}</td>'
                   f'<td>{e(r["when"])}</td><td class="num">{r["percent"]:.2f} % of {r["files"]}</td>'
                   f'<td>{shown or "none"}</td>'
                   f'<td><a href="{link(r["summary"])}"><code>{e(r["summary"])}</code></a></td></tr>')
    out.append("</table>")
    return out


def _outdated(doc, link):
    """The latest `doit outdated` (docs/outdated.md): the recipes that are not current."""
    if not doc:
        return []
    e, t = esc, doc["totals"]
    out = ['<h2 id="outdated">Outdated recipes</h2>',
           f'<p class="meta"><code>doit outdated</code> of {e(doc["when"])} (suites: '
           f'{e(", ".join(doc["suites"]))}): {t["current"]} current, {t["outdated"]} outdated, '
           f'{t["security"]} with CVE fixes in Debian since the version shipped · '
           f'<a href="{link(doc["summary"])}"><code>{e(doc["summary"])}</code></a></p>']
    rows = [r for r in doc["recipes"] if r["verdict"] != "current"]
    if rows:
        out.append("<table><tr><th>recipe</th><th>shipped</th><th>Debian newest</th>"
                   "<th>upstream newest</th><th>CVEs fixed since</th><th>verdict</th></tr>")
        for r in rows:
            debian, upstream, cves = outdated_cells(r)
            out.append(f'<tr><td>{e(r["recipe"])}</td><td>{e(r["shipped"])}</td><td>{e(debian)}</td>'
                       f'<td>{e(upstream)}</td><td>{e(cves)}</td><td>{_badge(r["verdict"])}</td></tr>')
        out.append("</table>")
    return out


def _updates(doc, link):
    """bin/nightly --update (docs/nightly.md, Updates): what was bumped, refused and why."""
    if not doc:
        return []
    e = esc
    out = ['<h2 id="updates">Updates</h2>',
           f'<p class="meta">{e(updates_line(doc)).replace("`", "")}</p>']
    if doc.get("error"):
        out.append(f"<pre>{e(doc['error'])}</pre>")
    badge = lambda css, text: f'<span class="badge {css}">{text}</span>'     # noqa: E731
    rows = [(badge("ok", "kept"), b["recipe"], f"{b['from']} → {b['to']}", ", ".join(b["cves"]) or "-",
             "; ".join([b.get("where") or ""] + (b.get("notes") or [])), b.get("log"),
             b["commit"][:12] if b.get("commit") else "") for b in doc["bumped"]]
    rows += [(badge("failed", "refused") if r.get("attempted") else badge("not-run", "not tried"), r["recipe"],
              r["from"] + (f" → {r['to']}" if r.get("to") else ""), "", r["why"], r.get("log"), "")
             for r in doc["refused"]]
    if rows:
        out.append("<table><tr><th>bump</th><th>recipe</th><th>version</th><th>CVEs fixed</th>"
                   "<th>from / why</th><th>commit</th></tr>")
        for state, name, version, cves, why, log, commit in rows:
            log = f' <a href="{link(log)}" class="muted">log</a>' if log else ""
            out.append(f"<tr><td>{state}</td><td>{e(name)}</td><td>{e(version)}</td><td>{e(cves)}</td>"
                       f"<td>{e(why)}{log}</td><td>{f'<code>{e(commit)}</code>' if commit else ''}</td></tr>")
        out.append("</table>")
    out += [f'<p class="meta">{e(n)}</p>' for n in doc.get("notes") or []]
    return out


def render_index(runs):
    """index.html: runs = [(report folder, its report.json document or None)], newest first."""
    e = esc
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
