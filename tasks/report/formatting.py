"""Words and numbers shared by the report's pages: durations, sizes, digests, headlines."""
import html


def esc(text):
    """Text made safe for HTML and SVG (attributes included)."""
    return html.escape(str(text), quote=True)


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



def engine_label(rec):
    """'docker 20.10.24+dfsg1 (API 1.41)' of an engines/checks record."""
    return f"{rec.get('kind', '?')} {rec.get('version', '?')} (API {rec.get('api_version', '?')})"


def engines_cell(image):
    """Where an image was loaded: 'podman: podman 4.3.1 (API 1.41); docker: ...'."""
    return "; ".join(f"{r['name']}: {engine_label(r)}" for r in image.get("engines") or []) or "-"


def check_rows(report):
    """[(image, engine name, engine label, base image, 'passed/total', ok)] of all images."""
    return [(im["name"], c["engine"], engine_label(c), c["image"], f"{c['passed']}/{c['total']}",
             c["passed"] == c["total"])
            for im in report["images"] for c in im.get("checks") or []]
