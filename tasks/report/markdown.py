"""report.md: a nightly run for mail and chat, rendered from its JSON document."""
from tasks.report.formatting import (check_rows, counts_line, engines_cell, fmt_seconds, fmt_size,
                                     headline, image_state, short_digest)


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
        out += ["", "## Images", "", "| image | this run | reference | digest | size | SBOM | licenses | loaded in |",
                "| --- | --- | --- | --- | ---: | --- | --- | --- |"]
        for im in report["images"]:
            if not im["exported"]:
                out.append(f"| {im['name']} | {image_state(im)} | | | | | | |")
                continue
            out.append(f"| {im['name']} | {image_state(im)} | `{im.get('ref') or ''}` | "
                       f"`{short_digest(im.get('digest'))}` | "
                       f"{fmt_size(im.get('size'))} | {'`' + im['sbom'] + '`' if im.get('sbom') else '-'} | "
                       f"{'`' + im['licenses'] + '`' if im.get('licenses') else '-'} | "
                       f"{_md_cell(engines_cell(im))} |")
    checks = check_rows(report)
    if checks:
        out += ["", "## Smoke tests in images (check-images)", "",
                "| image | engine | engine version | in base image | passed |",
                "| --- | --- | --- | --- | ---: |"]
        out += [f"| {name} | {engine} | {_md_cell(label)} | `{base}` | {count}{'' if ok else ' FAILED'} |"
                for name, engine, label, base, count, ok in checks]
    out += _repro(report.get("repro") or [])
    out += _outdated(report.get("outdated"))
    out += _updates(report.get("updates"))
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


def _repro(records):
    """The latest repro:<dist> measurements (docs/reproducibility.md), if any."""
    if not records:
        return []
    out = ["", "## Reproducibility", "",
           "| distribution | measured | bit-identical | differing files | summary |",
           "| --- | --- | ---: | --- | --- |"]
    for r in records:
        shown = ", ".join(f"`{e['component']}/{e['path']}` ({e['hint']})" for e in r["examples"])
        more = r["differing"] - len(r["examples"])
        shown += f" and {more} more" if more > 0 else ""
        if not r["images_same"]:
            shown += ("; " if shown else "") + "image digests differ"
        out.append(f"| {r['distribution']} | {r['when']} | {r['percent']:.2f} % of {r['files']} | "
                   f"{r['differing']}{': ' + _md_cell(shown) if shown else ''} | `{r['summary']}` |")
    return out


def outdated_cells(r):
    """(Debian newest, upstream newest, CVEs) of a `doit outdated` record, as text."""
    debian = f"{r['debian']} ({r['suite']})" if r.get("debian") else "-"
    upstream = r.get("upstream") or r.get("upstream_error") or "-"
    more = r["cve_count"] - len(r["cves"])
    cves = ", ".join(r["cves"]) + (f" and {more} more" if more > 0 else "")
    return debian, upstream, cves or "-"


def _outdated(doc):
    """The latest `doit outdated` (docs/outdated.md): the recipes that are not current."""
    if not doc:
        return []
    t = doc["totals"]
    out = ["", "## Outdated recipes", "",
           f"`doit outdated` of {doc['when']} (suites: {', '.join(doc['suites'])}): "
           f"{t['current']} current, {t['outdated']} outdated, {t['security']} with CVE fixes "
           f"in Debian since the version shipped; `{doc['summary']}`"]
    rows = [r for r in doc["recipes"] if r["verdict"] != "current"]
    if rows:
        out += ["", "| recipe | shipped | Debian newest | upstream newest | CVEs fixed since | verdict |",
                "| --- | --- | --- | --- | --- | --- |"]
        for r in rows:
            debian, upstream, cves = outdated_cells(r)
            out.append(f"| {_md_cell(r['recipe'])} | {_md_cell(r['shipped'])} | {_md_cell(debian)} | "
                       f"{_md_cell(upstream)} | {_md_cell(cves)} | {r['verdict']} |")
    return out


def updates_line(doc):
    """The one-line summary of a `bin/nightly --update` step."""
    line = (f"`bin/nightly --update`, policy {doc['policy']}: {len(doc['bumped'])} bumped, "
            f"{len(doc['refused'])} refused")
    if doc.get("branch"):
        line += f"; the kept bumps are committed on branch `{doc['branch']}` (not pushed)"
    return line


def _updates(doc):
    """bin/nightly --update (docs/nightly.md, Updates): what was bumped, refused and why."""
    if not doc:
        return []
    out = ["", "## Updates", "", updates_line(doc)]
    if doc.get("error"):
        out += ["", f"**{_md_cell(doc['error'])}**"]
    if doc["bumped"]:
        out += ["", "| bumped | version | CVEs fixed | from | commit |", "| --- | --- | --- | --- | --- |"]
        for b in doc["bumped"]:
            notes = "; ".join(b.get("notes") or [])
            out.append(f"| {_md_cell(b['recipe'])} | {_md_cell(b['from'])} → {_md_cell(b['to'])} | "
                       f"{_md_cell(', '.join(b['cves']) or '-')} | {_md_cell(b.get('where'))}"
                       f"{_md_cell(' (' + notes + ')') if notes else ''} | "
                       f"{'`' + b['commit'][:12] + '`' if b.get('commit') else '-'} |")
    if doc["refused"]:
        out += ["", "| refused | version | why |", "| --- | --- | --- |"]
        for r in doc["refused"]:
            to = f" → {r['to']}" if r.get("to") else ""
            out.append(f"| {_md_cell(r['recipe'])} | {_md_cell(r['from'] + to)} | {_md_cell(r['why'])} |")
    out += [f"- {_md_cell(n)}" for n in doc.get("notes") or []]
    return out
