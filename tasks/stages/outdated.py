"""Stage: outdated (`doit outdated`, on demand, never up to date). For every recipe a
configured distribution uses: the version shipped, the newest in config.yaml's
`debian.suites`, the newest upstream release where the site answers, and the CVE IDs
Debian's changelog lists as fixed since the version shipped (tasks/sources/outdated.py).
Prints a table, writes cache/reports/outdated.json (the nightly report shows it).
docs/outdated.md."""
import json
from datetime import datetime, timezone

from tasks.core.files import write_atomic
from tasks.core.log import echo
from tasks.model.project import project
from tasks.sources.outdated import report_path, survey

HEADERS = ("recipe", "shipped", "Debian newest (suite)", "upstream newest",
           "CVEs fixed since", "verdict")
WIDTHS = (28, 16, 44, 52, 72, 8)            # a longer cell is cut with …
CVES_SHOWN = 3


def _cut(text, width):
    text = " ".join(str(text).split())
    return text if len(text) <= width else text[:width - 1] + "…"


def debian_cell(row):
    deb = row["debian"]
    if deb is None:
        return "- (no debian: location)"
    if deb["newest"] is None:
        return f"? ({deb['error'] or 'not found'})"
    return f"{deb['newest']} ({deb['suite']})"


def upstream_cell(row):
    up = row["upstream"]
    if up.get("newest"):
        return up["newest"] + (" (PyPI)" if up.get("kind") == "pypi" else "")
    return up.get("error") or "?"


def cves_cell(row):
    cves = row["cves"]
    deb = row["debian"] or {}
    if deb.get("changelog_error") and not deb.get("changelog_version"):
        return "? (changelog unread)"
    upto = f" (to {deb['changelog_version']})" if deb.get("changelog_version") not in (
        None, deb.get("newest")) else ""
    if not cves:
        return "-" + upto
    shown = ", ".join(cves[:CVES_SHOWN])
    more = f" +{len(cves) - CVES_SHOWN}" if len(cves) > CVES_SHOWN else ""
    return f"{len(cves)}{upto}: {shown}{more}"


def table_rows(doc):
    return [(row["recipe"] + (f" (+{len(row['also'])})" if row["also"] else ""), row["shipped"],
             debian_cell(row), upstream_cell(row), cves_cell(row), row["verdict"])
            for row in doc["recipes"]]


def render_table(doc):
    """The table for people, then the notes: recipes asked once for several, notes,
    changelogs that could not be read."""
    rows = [tuple(_cut(c, w) for c, w in zip(r, WIDTHS)) for r in table_rows(doc)]
    widths = [max([len(h)] + [len(r[i]) for r in rows]) for i, h in enumerate(HEADERS)]
    line = lambda cells: "  ".join(c.ljust(w) for c, w in zip(cells, widths)).rstrip()  # noqa: E731
    out = [line(HEADERS), line("-" * w for w in widths)] + [line(r) for r in rows]
    notes, by_note = [], {}
    for row in doc["recipes"]:
        for note in filter(None, row["note"].split("; ")):
            by_note.setdefault(note, []).append(row["recipe"])
    also = [f"{r['recipe']} ({', '.join(r['also'])})" for r in doc["recipes"] if r["also"]]
    if also:
        notes.append(f"  asked once for recipes sharing a source: {'; '.join(also)}")
    notes += [f"  {note}: {', '.join(names)}" for note, names in by_note.items()]
    notes += [f"  {r['recipe']}: changelog: {r['debian']['changelog_error']}"
              for r in doc["recipes"] if (r["debian"] or {}).get("changelog_error")]
    t = doc["totals"]
    out += ["", f"{len(doc['recipes'])} recipes: {t['current']} current, {t['outdated']} outdated, "
            f"{t['security']} with CVE fixes in Debian since the version shipped "
            f"(suites: {', '.join(doc['suites'])})"]
    if doc.get("missing_suites"):
        out.append(f"not asked (the host's apt names no archive for them): "
                   f"{', '.join(doc['missing_suites'])}")
    if notes:
        out += ["notes:"] + notes
    return "\n".join(out)


def outdated(cfg):
    when = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    doc = survey(cfg, when)
    path = report_path(cfg.cache)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, json.dumps(doc, indent=1) + "\n")
    echo(render_table(doc))
    echo(f"outdated: written {path}")
    return True


def tasks():
    yield {
        "basename": "outdated",
        "actions": [(outdated, [project])],
        "uptodate": [False],
        "verbosity": 2,
    }
