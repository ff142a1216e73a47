"""The compliance index of a run: every drill, its verdict and figures, and what it evidences.

Written as Markdown and HTML into runs/<run id>/ beside the run's manifest. A failed drill is listed
(its REC says why) but marked as not evidencing its controls until it passes again.
"""

from __future__ import annotations

import datetime as dt
import os
from dataclasses import dataclass, field
from html import escape
from pathlib import Path
from typing import Any

from reports import history as history_module
from reports import html as html_module
from reports import schedules, trends
from reports.i18n import SCHEDULE, duration, evidence_words, loss_text, words
from reports.manifest import MANIFEST

CONTROLS = {
    "A.5.30": {
        "ja": "ISO/IEC 27001:2022 A.5.30 事業継続のための ICT の備え",
        "en": "ISO/IEC 27001:2022 A.5.30 ICT readiness for business continuity",
    },
    "A.8.13": {
        "ja": "ISO/IEC 27001:2022 A.8.13 情報のバックアップ",
        "en": "ISO/IEC 27001:2022 A.8.13 Information backup",
    },
    "A1.3": {"ja": "SOC 2 A1.3 復旧計画のテスト", "en": "SOC 2 A1.3 Recovery plan testing"},
}
OUTPUT_LABELS = {"plan": "plan", "oscal": "oscal", "metrics": "metrics", "history": "history_page"}
BACKUP_WORDS = (
    "backup",
    "restore",
    "pitr",
    "dump",
    "wal",
    "バックアップ",
    "データ復旧",
    "復元",
    "データベース復旧",
)


@dataclass
class Entry:
    summary: dict[str, Any]  # RecReport.summary()
    backup_related: bool
    scan_findings: int = 0
    ran_under: str | None = None  # the schedule the run selected it under, None when picked by hand


@dataclass
class HistoryView:
    """What the history says around this run (history.sqlite, or this run alone when it is refused)."""

    series: dict[str, list[history_module.Result]]  # drill id -> its results, oldest first
    regressions: dict[str, float]  # rec id -> the median it exceeded
    factor: float
    sections: list[history_module.Proven]
    schedules: list[history_module.Proven]
    runs: list[dict[str, Any]]
    last_success: dict[str, str]  # drill id -> ended_at of its last pass
    path: Path | None = None

    @classmethod
    def alone(cls, results: list[history_module.Result], factor: float, now: dt.datetime) -> HistoryView:
        series: dict[str, list[history_module.Result]] = {}
        for r in results:
            series.setdefault(r.drill_id, []).append(r)
        passed = {r.drill_id: r.ended_at for r in results if r.verdict == "passed"}
        return cls(
            series,
            {},
            factor,
            history_module.last_proven_sections(results, now, schedules.sections(schedules.catalogue())),
            history_module.last_proven_schedules([], now),
            [],
            passed,
        )


@dataclass
class Signing:
    public_pem: str
    fingerprint: str


@dataclass
class Context:
    coverage: schedules.Coverage
    history: HistoryView
    signing: Signing | None  # None: unsigned
    files: dict[str, str] = field(default_factory=dict)  # oscal, plan, metrics, history -> file name


def backup_related(record: dict[str, Any]) -> bool:
    """Whether a drill exercised backups (and so evidences A.8.13): its section, journals or steps say so."""
    texts = [record.get("runbook_section", ""), record.get("scenario", "")]
    texts += [f"{j.get('action', '')} {j.get('title', '')}" for j in record.get("journals", [])]
    texts += [f"{s.get('name', '')} {s.get('title', '')}" for s in record.get("steps", [])]
    joined = " ".join(str(t) for t in texts).lower()
    return any(word in joined for word in BACKUP_WORDS)


def is_self_test(drill_id: str) -> bool:
    """Records made by the harness's own tests (tests/), not by the drills in scenarios/."""
    return drill_id.startswith("tests/")


def evidences(entry: Entry, lang: str, claimed: list[str] | None = None) -> list[str]:
    """The controls, and the runbook schedules this run evidences (claimed: ran and passed every
    drill of it) that include this drill. Without the run's coverage no schedule is claimed."""
    ids = ["A.5.30", "A1.3"] + (["A.8.13"] if entry.backup_related else [])
    names = [CONTROLS[i][lang if lang in ("ja", "en") else "ja"] for i in sorted(ids)]
    named = SCHEDULE.get(lang, SCHEDULE["ja"])
    runbook = "復旧手順書 復旧テスト" if lang == "ja" else "Runbook recovery tests"
    names += [
        f"{runbook}: {named.get(s, s)}" for s in entry.summary.get("schedule", []) if s in (claimed or [])
    ]
    return names


def schedule_name(schedule: str | None, lang: str) -> str:
    if schedule is None:
        return evidence_words(lang)["ad_hoc_drill"]
    return SCHEDULE.get(lang, SCHEDULE["ja"]).get(schedule, schedule)


def _loss(summary: dict[str, Any], lang: str) -> str:
    return loss_text(summary.get("data_loss_rows"), summary.get("data_loss_seconds"), lang)


def _rows(
    entries: list[Entry], lang: str, folder: Path, reports_dir: Path, context: Context | None = None
) -> list[dict[str, Any]]:
    w = words(lang)
    ew = evidence_words(lang)
    claimed = context.coverage.claimed if context else None
    out = []
    for entry in entries:
        s = entry.summary
        link = os.path.relpath(reports_dir / s["files"]["html"], folder) if s.get("files") else ""
        target = w["target"] + " " + w["within"].format(t=duration(s.get("rto_target_seconds"), lang))
        rto = f"{duration(s.get('recovery_seconds'), lang)} ({target})"
        if s.get("forecast_seconds") is not None:
            rto += f", {'予測' if lang == 'ja' else 'forecast'} {duration(s['forecast_seconds'], lang)}"
            if s.get("forecast_high_seconds") is not None:
                low = s.get("forecast_low_seconds", s["forecast_seconds"])
                span = w["forecast_interval"].format(low=duration(low, lang),
                                                     high=duration(s["forecast_high_seconds"], lang))
                rto += f" ({span})"
        controls = evidences(entry, lang, claimed)
        trend, regression = "", ""
        if context:
            trend = trends.svg(
                context.history.series.get(s.get("drill_id", ""), []), lang, set(context.history.regressions)
            )
            median = context.history.regressions.get(s["rec_id"])
            if median is not None:
                regression = ew["regression"].format(
                    m=duration(median, lang), f=f"{context.history.factor:g}"
                )
        if is_self_test(s.get("drill_id", "")):
            # the harness's own tests (sabotage, framework) fail drills on purpose: no evidence either way
            ja, en = "ハーネスの自己テスト (証跡ではない)", "harness self-test (not evidence)"
            controls = [ja if lang == "ja" else en]
        elif s.get("verdict") != "passed":
            controls = [("是正が必要 (不合格)" if lang == "ja" else "needs remediation (failed)")]
        out.append(
            {
                "rec_id": s["rec_id"],
                "link": link,
                "scenario": s.get("scenario", ""),
                "drill_id": s.get("drill_id", ""),
                "verdict": s.get("verdict", ""),
                "verdict_text": w.get(s.get("verdict", ""), s.get("verdict", "")),
                "level": s.get("level", ""),
                "rto": rto,
                "loss": _loss(s, lang),
                "controls": controls,
                "ran_under": schedule_name(entry.ran_under, lang),
                "trend": trend,
                "regression": regression,
            }
        )
    return out


def _when(value: dt.datetime | None, lang: str) -> str:
    if value is None:
        return evidence_words(lang)["never"]
    return value.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")


def _coverage_rows(context: Context, lang: str) -> list[list[str]]:
    ew = evidence_words(lang)
    rows = []
    for c in context.coverage.schedules:
        rows.append(
            [
                schedule_name(c.schedule, lang),
                f"{len(c.ran)} / {len(c.required)}",
                ", ".join(c.missing) or "-",
                ", ".join(c.failed) or "-",
                ew["yes"] if c.evidenced else ew["no"],
            ]
        )
    return rows


def _coverage_lines(context: Context, lang: str) -> list[str]:
    """The run's selection, its claims and whether it was partial, as sentences."""
    ew = evidence_words(lang)
    cov = context.coverage
    chosen = (
        ew["all"]
        if len(cov.selected) == len(schedules.SCHEDULES)
        else ", ".join(schedule_name(s, lang) for s in cov.selected) or ew["none_selected"]
    )
    claims = ", ".join(schedule_name(s, lang) for s in cov.claimed) or ew["claims_none"]
    lines = [f"{ew['selected']}: {chosen}", f"{ew['claimed']}: {claims}"]
    lines.append(ew["partial"] if cov.partial else ew["complete"])
    if cov.ad_hoc:
        lines.append(ew["ad_hoc"])
    return lines


def _proven_rows(proven: list[history_module.Proven], lang: str, schedule_column: bool) -> list[list[str]]:
    ew = evidence_words(lang)
    rows = []
    for p in proven:
        first = p.subject if not schedule_column else schedule_name(p.subject, lang)
        due = ew["every"].format(n=schedules.PERIODS[p.schedule].days)
        rows.append(
            [
                first,
                f"{schedule_name(p.schedule, lang)} ({due})" if not schedule_column else due,
                _when(p.last, lang),
                ew["overdue"] if p.overdue else ew["on_time"],
            ]
        )
    return rows


def _md_table(header: list[str], rows: list[list[str]]) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(c.replace("|", "\\|") for c in row) + " |" for row in rows]
    return out


def render_markdown(
    entries: list[Entry],
    run_id: str,
    lang: str,
    folder: Path,
    reports_dir: Path,
    scan: tuple[int, int],
    context: Context | None = None,
) -> str:
    w = words(lang)
    ew = evidence_words(lang)
    lines = [
        f"# {w['index_title']}",
        "",
        f"- **{w['run']}**: `{run_id}`",
        f"- **{w['drills']}**: {len(entries)} ({w['passed']} "
        f"{sum(e.summary.get('verdict') == 'passed' for e in entries)})",
        "",
    ]
    if context:
        lines += (
            [f"## {ew['coverage']}", ""] + [f"- {line}" for line in _coverage_lines(context, lang)] + [""]
        )
        header = [ew["schedule"], ew["drills_ran"], ew["missing"], ew["failed"], ew["evidenced"]]
        lines += [*_md_table(header, _coverage_rows(context, lang)), ""]
    if entries:
        header = [
            "REC",
            w["scenario"],
            w["verdict"],
            w["level"],
            ew["ran_under"],
            w["recovery_time"],
            w["data_loss"],
            w["evidences"],
        ]
        body = []
        for row in _rows(entries, lang, folder, reports_dir, context):
            rto = row["rto"] + (f" ({row['regression']})" if row["regression"] else "")
            body.append(
                [
                    f"[{row['rec_id']}]({row['link']})",
                    row["scenario"],
                    row["verdict_text"],
                    row["level"],
                    row["ran_under"],
                    rto,
                    row["loss"],
                    "; ".join(row["controls"]),
                ]
            )
        lines += _md_table(header, body)
    else:
        lines.append(w["no_drills"])
    if context:
        lines += ["", f"## {ew['proven']}", ""]
        lines += _md_table(
            [ew["section"], ew["schedule"], ew["last"], ew["state"]],
            _proven_rows(context.history.sections, lang, False),
        )
        lines += [
            "",
            *_md_table(
                [ew["schedule"], ew["due"], ew["last"], ew["state"]],
                _proven_rows(context.history.schedules, lang, True),
            ),
        ]
        lines += ["", f"## {ew['signature']}", ""]
        if context.signing:
            lines += [
                ew["signed"],
                "",
                f"- {ew['fingerprint']}: `{context.signing.fingerprint}`",
                "",
                "```",
                context.signing.public_pem.strip(),
                "```",
            ]
        else:
            lines.append(ew["unsigned"])
        lines += ["", f"## {ew['machine']}", ""]
        lines += [f"- {ew[OUTPUT_LABELS[k]]}: [{name}]({name})" for k, name in context.files.items()]
    files, found = scan
    lines += [
        "",
        f"## {w['secret_scan']}",
        w["scan_clean"].format(n=files) if not found else w["scan_found"].format(n=found),
        "",
        f"## {w['manifest']}",
        f"{w['verify_with']}:",
        "",
        "```bash",
        f"python -m reports verify {folder}"
        + (" --public-key KEY.pub" if context and context.signing else ""),
        f"cd {folder} && sha256sum -c {MANIFEST}",
        "```",
        "",
    ]
    return "\n".join(lines)


def _html_sections(context: Context, lang: str) -> list[str]:
    e = html_module.e
    ew = evidence_words(lang)
    body = [f"<h2>{e(ew['proven'])}</h2>"]
    for rows, column in ((context.history.sections, False), (context.history.schedules, True)):
        cells = [
            [
                e(c) if i != 3 else f'<span class="{"bad" if c == ew["overdue"] else "ok"}">{e(c)}</span>'
                for i, c in enumerate(row)
            ]
            for row in _proven_rows(rows, lang, column)
        ]
        first, second = (ew["schedule"], ew["due"]) if column else (ew["section"], ew["schedule"])
        body.append(html_module.rows([e(first), e(second), e(ew["last"]), e(ew["state"])], cells, "proven"))
    body.append(f"<h2>{e(ew['signature'])}</h2>")
    if context.signing:
        body += [
            f'<p class="ok signed">{e(ew["signed"])}</p>',
            f'<p>{e(ew["fingerprint"])}: <code id="fingerprint">{e(context.signing.fingerprint)}</code></p>',
            f"<p>{e(ew['public_key'])}:</p><pre>{e(context.signing.public_pem.strip())}</pre>",
        ]
    else:
        body.append(f'<p class="bad unsigned">{e(ew["unsigned"])}</p>')
    body.append(f"<h2>{e(ew['machine'])}</h2><ul>")
    body += [
        f'<li>{e(ew[OUTPUT_LABELS[k]])}: <a href="{e(name)}">{e(name)}</a></li>'
        for k, name in context.files.items()
    ]
    body.append("</ul>")
    return body


def render_html(
    entries: list[Entry],
    run_id: str,
    lang: str,
    folder: Path,
    reports_dir: Path,
    scan: tuple[int, int],
    context: Context | None = None,
) -> str:
    w = words(lang)
    ew = evidence_words(lang)
    e = html_module.e
    body = [
        f'<header class="rec"><div><h1>{e(w["index_title"])}</h1>'
        f'<div class="sub">{e(w["run"])}: <code>{e(run_id)}</code></div></div></header>'
    ]
    if context:
        state = "bad partial" if context.coverage.partial else "ok complete"
        lines = _coverage_lines(context, lang)
        body += [f"<h2>{e(ew['coverage'])}</h2>", '<ul class="coverage">']
        body += [f'<li class="{state if i == 2 else ""}">{e(line)}</li>' for i, line in enumerate(lines)]
        body.append("</ul>")
        header = [e(ew[k]) for k in ("schedule", "drills_ran", "missing", "failed", "evidenced")]
        body.append(
            html_module.rows(header, [[e(c) for c in r] for r in _coverage_rows(context, lang)], "coverage")
        )
    if entries:
        table_rows = []
        for row in _rows(entries, lang, folder, reports_dir, context):
            badge = (
                f'<span class="badge {e(row["verdict"])}" style="font-size:12px;padding:2px 10px">'
                f"{e(row['verdict_text'])}</span>"
            )
            rto = e(row["rto"])
            if row["regression"]:
                rto += f'<br><strong class="bad regression">{e(row["regression"])}</strong>'
            cells = [
                f'<a href="{e(row["link"])}">{e(row["rec_id"])}</a>',
                f"{e(row['scenario'])}<br><code>{e(row['drill_id'])}</code>",
                badge,
                f'{e(row["level"])}<br><span class="ran-under">{e(row["ran_under"])}</span>',
                rto,
                e(row["loss"]),
                '<ul class="controls">' + "".join(f"<li>{e(c)}</li>" for c in row["controls"]) + "</ul>",
            ]
            table_rows.append(cells)
        keys = ["report", "scenario", "verdict", "level", "recovery_time", "data_loss", "evidences"]
        header = [e(w[k]) for k in keys]
        header[3] += f"<br>{e(ew['ran_under'])}"
        body.append(html_module.rows(header, table_rows, "index"))
        if context:
            body += [f"<h2>{e(ew['trend'])}</h2>", '<div class="trends">']
            for row in _rows(entries, lang, folder, reports_dir, context):
                # the SVG is our own, its text escaped where it was drawn
                body.append(
                    f'<figure class="trend" id="trend-{e(row["rec_id"])}"><figcaption><strong>'
                    f"{e(row['rec_id'])}</strong> {e(row['scenario'])}</figcaption>{row['trend']}</figure>"
                )
            link = context.files.get("history")
            if link:
                body.append(f'</div><p><a href="{e(link)}">{e(ew["history_page"])}</a></p>')
            else:
                body.append("</div>")
    else:
        body.append(f"<p>{e(w['no_drills'])}</p>")
    if context:
        body += _html_sections(context, lang)
    files, found = scan
    scan_text = w["scan_clean"].format(n=files) if not found else w["scan_found"].format(n=found)
    pin = " --public-key KEY.pub" if context and context.signing else ""
    body += [
        f"<h2>{e(w['secret_scan'])}</h2>",
        f'<p class="{"ok" if not found else "bad"}">{e(scan_text)}</p>',
        f"<h2>{e(w['manifest'])}</h2>",
        f"<p>{e(w['verify_with'])}:</p>",
        f"<pre>python -m reports verify {escape(str(folder))}{pin}\n"
        f"cd {escape(str(folder))} &amp;&amp; sha256sum -c {MANIFEST}</pre>",
    ]
    return html_module.page(w["index_title"], lang, "\n".join(body))


def write(
    entries: list[Entry],
    run_id: str,
    lang: str,
    folder: Path,
    reports_dir: Path,
    scan: tuple[int, int],
    context: Context | None = None,
) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    md = folder / "compliance-index.md"
    page = folder / "compliance-index.html"
    md.write_text(
        render_markdown(entries, run_id, lang, folder, reports_dir, scan, context), encoding="utf-8"
    )
    page.write_text(render_html(entries, run_id, lang, folder, reports_dir, scan, context), encoding="utf-8")
    return [md, page]
