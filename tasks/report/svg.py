"""Inline SVG charts of the HTML pages: the timeline of a run's tasks, horizontal bars
(image sizes per component, durations and sizes over the last runs). No script, no font
or stylesheet of their own: the page's CSS styles them."""
from tasks.model.pipeline import STAGES
from tasks.report.formatting import esc, fmt_seconds, fmt_size

STAGE_COLORS = {stage.name: stage.colour for stage in STAGES}
STATUS_COLORS = {"failed": "#d62728", "interrupted": "#ff9896", "ran": None}


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
        out.append(f'<text x="{label_w}" y="{y + 13}" class="label" text-anchor="end">{esc(name)}</text>')
        tip = (f"{t['name']}: {t['status']}, {fmt_seconds(t['seconds'])} "
               f"(from {fmt_seconds(t['started'])} to {fmt_seconds(end)})"
               + (f"\nwhy: {t['why']}" if t.get("why") else ""))
        out.append(f'<rect x="{x0:.1f}" y="{y + 3}" width="{max(x1 - x0, 2):.1f}" height="{row_h - 5}" '
                   f'rx="2" fill="{color}" class="bar {t["status"]}"><title>{esc(tip)}</title></rect>')
        value = esc(fmt_seconds(t["seconds"]))
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
                   f'<text x="{lx + 14}" y="{legend_y}" class="tick">{esc(stage)}</text>')
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
           f'height="{height}" viewBox="0 0 {width} {height}" role="img" aria-label="{esc(title)}">']
    for i, (label, value, color, tip) in enumerate(items):
        y = 4 + i * row_h
        w = max(chart_w * value / biggest, 1)
        out.append(f'<text x="{label_w}" y="{y + 12}" class="label" text-anchor="end">{esc(label)}</text>')
        out.append(f'<rect x="{label_w + pad}" y="{y + 2}" width="{w:.1f}" height="{row_h - 5}" rx="2" '
                   f'fill="{color or "#4c78a8"}"><title>{esc(tip or label)}</title></rect>')
        out.append(f'<text x="{label_w + pad + w + 4:.1f}" y="{y + 12}" class="value">{esc(unit(value))}</text>')
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
