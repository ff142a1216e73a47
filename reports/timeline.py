"""The availability timeline of a drill, as an inline SVG picture and as rows for text reports.

One band shows what users saw (the probe's samples: green answered, red failed); one row per
recovery step shows when it ran; vertical lines mark failure, detection and healthy-again.
"""

from __future__ import annotations

import datetime as dt
from html import escape
from typing import Any

from reports.i18n import duration, words
from reports.model import DrillRecord

WIDTH = 920
LABEL_W = 230
PLOT_X = LABEL_W + 10
PLOT_W = WIDTH - PLOT_X - 24
ROW_H = 24
HEAD_H = 46
AXIS_H = 30
MARKED = {"fault": "#d64545", "detected": "#e08a1e", "healthy": "#2e9e5b", "verdict": "#555b66"}
DOT = {"baseline": "#8a94a6", "check": "#7d5bbe", "step": "#3b6fd8"}


def parse_time(value: str) -> dt.datetime | None:
    try:
        parsed = dt.datetime.fromisoformat(value)
    except (TypeError, ValueError):
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.UTC)


def steps_of(record: DrillRecord) -> list[dict[str, Any]]:
    """The recovery steps: the record's own, else those of its journals, in order."""
    if record.steps:
        return list(record.steps)
    return [step for journal in record.journals for step in journal.get("steps", [])]


def step_title(record: DrillRecord, step: dict[str, Any]) -> str:
    """The step's title, after its action's title when the record holds several actions."""
    title = str(step.get("title") or step.get("name") or "")
    action = step.get("action")
    if not action or len(record.journals) < 2:
        return title
    owner = next((j.get("title") for j in record.journals if j.get("action") == action), None)
    return f"{owner}: {title}" if owner and owner != title else title


def _offset(record: DrillRecord, when: str) -> float | None:
    start, at = parse_time(record.started_at), parse_time(when)
    if start is None or at is None:
        return None
    return (at - start).total_seconds()


def step_spans(record: DrillRecord) -> list[tuple[str, str, float, float]]:
    """(title, status, start offset, end offset) of each step that has times."""
    spans = []
    for step in steps_of(record):
        begin = _offset(record, step.get("started_at", ""))
        if begin is None:
            continue
        end = _offset(record, step.get("ended_at", ""))
        if end is None:
            end = begin + float(step.get("seconds") or 0)
        spans.append((step_title(record, step), str(step.get("status", "")), begin, end))
    return spans


def span_seconds(record: DrillRecord) -> float:
    ends = [e.offset_seconds for e in record.timeline]
    ends += [end for *_, end in step_spans(record)]
    if record.probe and record.probe.samples:
        ends.append(record.probe.samples[-1][0] + record.probe.interval_seconds)
    end = _offset(record, record.ended_at)
    if end is not None:
        ends.append(end)
    return max([1.0, *ends])


def probe_runs(record: DrillRecord) -> list[tuple[float, float, bool, int, set[int | None]]]:
    """Consecutive probe samples of one outcome: (start, end, ok, samples, HTTP statuses seen)."""
    if not record.probe:
        return []
    samples, runs = record.probe.samples, []
    for i, (offset, ok, status, _latency) in enumerate(samples):
        end = samples[i + 1][0] if i + 1 < len(samples) else offset + record.probe.interval_seconds
        if runs and runs[-1][2] == bool(ok):
            begin, _, _, count, statuses = runs[-1]
            runs[-1] = (begin, end, bool(ok), count + 1, statuses | {status})
        else:
            runs.append((offset, end, bool(ok), 1, {status}))
    return runs


def _ticks(span: float) -> list[float]:
    for step in (0.1, 0.2, 0.5, 1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200):
        if span / step <= 10:
            return [i * step for i in range(int(span / step) + 1)]
    return [0.0, span]


def _short(text: str, limit: int = 20) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def svg(record: DrillRecord, lang: str = "ja") -> str:
    w = words(lang)
    span = span_seconds(record)

    def x(offset: float) -> float:
        return round(PLOT_X + PLOT_W * max(0.0, min(offset, span)) / span, 1)

    spans = step_spans(record)
    rows = (1 if record.probe else 0) + len(spans)
    height = HEAD_H + rows * ROW_H + AXIS_H + 8
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="timeline" viewBox="0 0 {WIDTH} {height}" '
        f'width="100%" role="img" aria-label="{escape(w["timeline"])}" '
        "font-family=\"system-ui, 'Noto Sans CJK JP', 'IPAGothic', sans-serif\" font-size=\"12\">",
        f"<title>{escape(w['timeline'])}</title>",
        f'<rect x="{PLOT_X}" y="{HEAD_H - 4}" width="{PLOT_W}" height="{rows * ROW_H + 8}" fill="#f6f8fb"/>',
    ]
    y = HEAD_H
    if record.probe:
        out.append(
            f'<text x="{LABEL_W}" y="{y + 16}" text-anchor="end" fill="#1f2a3a">'
            f"{escape(w['availability'])}</text>"
        )
        for begin, end, ok, count, statuses in probe_runs(record):
            colour = "#7cc49a" if ok else "#d64545"
            shown = ", ".join(str(s) if s is not None else "—" for s in sorted(statuses, key=str))
            out.append(
                f'<rect class="probe-{"ok" if ok else "fail"}" x="{x(begin)}" y="{y + 4}" '
                f'width="{max(0.8, x(end) - x(begin)):.1f}" height="{ROW_H - 8}" fill="{colour}">'
                f"<title>{begin:.2f}–{end:.2f}s: {count} × HTTP {escape(shown)}</title></rect>"
            )
        y += ROW_H
    for number, (title, status, begin, end) in enumerate(spans, 1):
        label = f"{number}. {title}"
        colour = "#d64545" if status == "failed" else "#3b6fd8"
        out.append(
            f'<text x="{LABEL_W}" y="{y + 16}" text-anchor="end" fill="#1f2a3a">'
            f"<title>{escape(label)}</title>{escape(_short(label))}</text>"
        )
        out.append(
            f'<rect class="step" x="{x(begin)}" y="{y + 5}" width="{max(2.0, x(end) - x(begin)):.1f}" '
            f'height="{ROW_H - 10}" rx="3" fill="{colour}"><title>{escape(label)}: '
            f"{escape(duration(end - begin, lang))}</title></rect>"
        )
        y += ROW_H
    bottom = y + 4
    lane = 0
    for event in sorted(record.timeline, key=lambda e: e.offset_seconds):
        ex = x(event.offset_seconds)
        tip = f"{event.offset_seconds:.2f}s {w.get('kind_' + event.kind, event.kind)}: {event.label}"
        if event.kind in MARKED:
            colour = MARKED[event.kind]
            label_y = 14 + 16 * (lane % 2)
            lane += 1
            anchor = "end" if ex > PLOT_X + PLOT_W * 0.8 else "start"
            out.append(
                f'<line class="mark-{event.kind}" x1="{ex}" y1="{label_y + 4}" x2="{ex}" y2="{bottom}" '
                f'stroke="{colour}" stroke-width="2" stroke-dasharray="4 3"/>'
            )
            out.append(
                f'<text x="{ex + (-4 if anchor == "end" else 4)}" y="{label_y}" text-anchor="{anchor}" '
                f'fill="{colour}" font-weight="600"><title>{escape(tip)}</title>'
                f"{escape(w.get('kind_' + event.kind, event.kind))} {event.offset_seconds:.2f}s</text>"
            )
        else:
            colour = DOT.get(event.kind, "#8a94a6")
            out.append(
                f'<circle class="event-{escape(event.kind)}" cx="{ex}" cy="{HEAD_H - 10}" r="4" '
                f'fill="{colour}"><title>{escape(tip)}</title></circle>'
            )
    out.append(f'<line x1="{PLOT_X}" y1="{bottom}" x2="{PLOT_X + PLOT_W}" y2="{bottom}" stroke="#8a94a6"/>')
    for tick in _ticks(span):
        tx = x(tick)
        out.append(f'<line x1="{tx}" y1="{bottom}" x2="{tx}" y2="{bottom + 5}" stroke="#8a94a6"/>')
        out.append(
            f'<text x="{tx}" y="{bottom + 18}" text-anchor="middle" fill="#5b6575">'
            f"{escape(duration(tick, lang) if tick else '0')}</text>"
        )
    out.append("</svg>")
    return "\n".join(out)


def rows(record: DrillRecord, lang: str = "ja") -> list[tuple[str, str, str]]:
    """(offset, kind, label) of every timeline event, for the Markdown table."""
    w = words(lang)
    return [
        (f"{e.offset_seconds:+.2f}s", w.get("kind_" + e.kind, e.kind), e.label)
        for e in sorted(record.timeline, key=lambda e: e.offset_seconds)
    ]
