"""Trend pictures from the history: per drill, recovery time and user-visible downtime over its last
runs (lines, one point a run, a failed run a red cross), data loss as red bars. Inline SVG, no
script, so the pages stay self-contained and print."""

from __future__ import annotations

from html import escape

from reports.history import Result

WIDTH, HEIGHT = 360, 110
PAD_LEFT, PAD_RIGHT, PAD_TOP, PAD_BOTTOM = 44, 12, 14, 22
LAST_RUNS = 12
COLOURS = {"recovery": "#2f6fbd", "downtime": "#e08a1e", "loss": "#d64545", "failed": "#d64545"}
LABELS = {
    "ja": {
        "recovery": "復旧時間",
        "downtime": "停止時間",
        "loss": "データ損失 (行)",
        "none": "履歴なし",
        "runs": "直近 {n} 回",
        "regression": "回帰",
    },
    "en": {
        "recovery": "recovery",
        "downtime": "downtime",
        "loss": "data loss (rows)",
        "none": "no history",
        "runs": "last {n} runs",
        "regression": "regression",
    },
}


def _label(lang: str, key: str) -> str:
    return LABELS.get(lang, LABELS["ja"])[key]


def _nice(value: float) -> float:
    """A round axis maximum at or above value."""
    if value <= 0:
        return 1.0
    for step in (1, 2, 5, 10, 20, 30, 60, 120, 300, 600, 1200, 1800, 3600, 7200, 14400, 86400):
        if value <= step:
            return float(step)
    return float(value)


def _seconds(value: float) -> str:
    return f"{value:g}s" if value < 120 else f"{value / 60:g}min"


def svg(results: list[Result], lang: str = "ja", flagged: set[str] | None = None) -> str:
    """One drill's trend: its results in time order (the last LAST_RUNS are drawn)."""
    shown = results[-LAST_RUNS:]
    title = escape(
        f"{_label(lang, 'recovery')} / {_label(lang, 'downtime')}: "
        + _label(lang, "runs").format(n=len(shown))
    )
    if not shown:
        return (
            f'<svg class="trend" xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="30" '
            f'role="img" aria-label="{title}"><text x="4" y="18" font-size="11" fill="#667">'
            f"{escape(_label(lang, 'none'))}</text></svg>"
        )
    flagged = flagged or set()
    values = [v for r in shown for v in (r.recovery_seconds, r.downtime_seconds) if v is not None]
    top = _nice(max(values, default=0.0))
    losses = [r.data_loss_rows or 0 for r in shown]
    loss_top = max(losses) or 1
    inner_w, inner_h = WIDTH - PAD_LEFT - PAD_RIGHT, HEIGHT - PAD_TOP - PAD_BOTTOM

    def x(i: int) -> float:
        return PAD_LEFT + (inner_w * i / (len(shown) - 1) if len(shown) > 1 else inner_w / 2)

    def y(v: float) -> float:
        return PAD_TOP + inner_h * (1 - v / top)

    out = [
        f'<svg class="trend" xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" '
        f'viewBox="0 0 {WIDTH} {HEIGHT}" role="img" aria-label="{title}"><title>{title}</title>',
        f'<rect x="{PAD_LEFT}" y="{PAD_TOP}" width="{inner_w}" height="{inner_h}" fill="#f7f9fc" '
        'stroke="#dde3ec"/>',
        f'<text x="{PAD_LEFT - 4}" y="{PAD_TOP + 4}" font-size="9" text-anchor="end" fill="#556">'
        f"{_seconds(top)}</text>",
        f'<text x="{PAD_LEFT - 4}" y="{PAD_TOP + inner_h}" font-size="9" text-anchor="end" '
        'fill="#556">0</text>',
    ]
    for i, rows in enumerate(losses):
        if rows:
            h = inner_h * 0.4 * rows / loss_top
            out.append(
                f'<rect class="loss" x="{x(i) - 3:.1f}" y="{PAD_TOP + inner_h - h:.1f}" width="6" '
                f'height="{h:.1f}" fill="{COLOURS["loss"]}" opacity="0.6"><title>{rows} rows</title></rect>'
            )
    for key, attr in (("downtime", "downtime_seconds"), ("recovery", "recovery_seconds")):
        points = [(x(i), y(getattr(r, attr))) for i, r in enumerate(shown) if getattr(r, attr) is not None]
        if len(points) > 1:
            path = " ".join(f"{px:.1f},{py:.1f}" for px, py in points)
            out.append(
                f'<polyline class="{key}" points="{path}" fill="none" stroke="{COLOURS[key]}" '
                'stroke-width="1.6"/>'
            )
        for (px, py), r in zip(points, [r for r in shown if getattr(r, attr) is not None], strict=True):
            value = getattr(r, attr)
            tip = escape(f"{r.rec_id} {r.run_id}: {_label(lang, key)} {value:g}s")
            ring = ' stroke="#d64545" stroke-width="2"' if key == "recovery" and r.rec_id in flagged else ""
            out.append(
                f'<circle class="{key}" cx="{px:.1f}" cy="{py:.1f}" r="2.6" fill="{COLOURS[key]}"'
                f"{ring}><title>{tip}</title></circle>"
            )
    for i, r in enumerate(shown):
        if r.verdict != "passed":
            cx, cy = x(i), PAD_TOP + inner_h - 6
            out.append(
                f'<path class="failed" d="M{cx - 4:.1f},{cy - 4:.1f}L{cx + 4:.1f},{cy + 4:.1f}'
                f'M{cx - 4:.1f},{cy + 4:.1f}L{cx + 4:.1f},{cy - 4:.1f}" stroke="{COLOURS["failed"]}" '
                f'stroke-width="2"><title>{escape(r.rec_id)}: {escape(r.verdict)}</title></path>'
            )
    legend_y = HEIGHT - 6
    for n, key in enumerate(("recovery", "downtime", "loss")):
        lx = PAD_LEFT + n * 100
        out.append(
            f'<rect x="{lx}" y="{legend_y - 7}" width="8" height="8" fill="{COLOURS[key]}"/>'
            f'<text x="{lx + 11}" y="{legend_y}" font-size="9" fill="#334">'
            f"{escape(_label(lang, key))}</text>"
        )
    out.append("</svg>")
    return "".join(out)
