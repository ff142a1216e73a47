"""The compliance index of a run: every drill, its verdict and figures, and what it evidences.

Written as Markdown and HTML into runs/<run id>/ beside the run's manifest. A failed drill is listed
(its REC says why) but marked as not evidencing its controls until it passes again.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from html import escape
from pathlib import Path
from typing import Any

from reports import html as html_module
from reports.i18n import SCHEDULE, duration, loss_text, words
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


def evidences(entry: Entry, lang: str) -> list[str]:
    ids = ["A.5.30", "A1.3"] + (["A.8.13"] if entry.backup_related else [])
    names = [CONTROLS[i][lang if lang in ("ja", "en") else "ja"] for i in sorted(ids)]
    schedules = SCHEDULE.get(lang, SCHEDULE["ja"])
    runbook = "復旧手順書 復旧テスト" if lang == "ja" else "Runbook recovery tests"
    names += [f"{runbook}: {schedules.get(s, s)}" for s in entry.summary.get("schedule", [])]
    return names


def _loss(summary: dict[str, Any], lang: str) -> str:
    return loss_text(summary.get("data_loss_rows"), summary.get("data_loss_seconds"), lang)


def _rows(entries: list[Entry], lang: str, folder: Path, reports_dir: Path) -> list[dict[str, Any]]:
    w = words(lang)
    out = []
    for entry in entries:
        s = entry.summary
        link = os.path.relpath(reports_dir / s["files"]["html"], folder) if s.get("files") else ""
        target = w["target"] + " " + w["within"].format(t=duration(s.get("rto_target_seconds"), lang))
        rto = f"{duration(s.get('recovery_seconds'), lang)} ({target})"
        if s.get("forecast_seconds") is not None:
            rto += f", {'予測' if lang == 'ja' else 'forecast'} {duration(s['forecast_seconds'], lang)}"
        controls = evidences(entry, lang)
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
            }
        )
    return out


def render_markdown(
    entries: list[Entry], run_id: str, lang: str, folder: Path, reports_dir: Path, scan: tuple[int, int]
) -> str:
    w = words(lang)
    lines = [
        f"# {w['index_title']}",
        "",
        f"- **{w['run']}**: `{run_id}`",
        f"- **{w['drills']}**: {len(entries)} ({w['passed']} "
        f"{sum(e.summary.get('verdict') == 'passed' for e in entries)})",
        "",
    ]
    if entries:
        lines += [
            f"| REC | {w['scenario']} | {w['verdict']} | {w['level']} | {w['recovery_time']} | "
            f"{w['data_loss']} | {w['evidences']} |",
            "|---|---|---|---|---|---|---|",
        ]
        for row in _rows(entries, lang, folder, reports_dir):
            cells = [
                f"[{row['rec_id']}]({row['link']})",
                row["scenario"],
                row["verdict_text"],
                row["level"],
                row["rto"],
                row["loss"],
                "; ".join(row["controls"]),
            ]
            lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    else:
        lines.append(w["no_drills"])
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
        f"python -m reports verify {folder}",
        f"cd {folder} && sha256sum -c {MANIFEST}",
        "```",
        "",
    ]
    return "\n".join(lines)


def render_html(
    entries: list[Entry], run_id: str, lang: str, folder: Path, reports_dir: Path, scan: tuple[int, int]
) -> str:
    w = words(lang)
    e = html_module.e
    body = [
        f'<header class="rec"><div><h1>{e(w["index_title"])}</h1>'
        f'<div class="sub">{e(w["run"])}: <code>{e(run_id)}</code></div></div></header>'
    ]
    if entries:
        table_rows = []
        for row in _rows(entries, lang, folder, reports_dir):
            badge = (
                f'<span class="badge {e(row["verdict"])}" style="font-size:12px;padding:2px 10px">'
                f"{e(row['verdict_text'])}</span>"
            )
            table_rows.append(
                [
                    f'<a href="{e(row["link"])}">{e(row["rec_id"])}</a>',
                    f"{e(row['scenario'])}<br><code>{e(row['drill_id'])}</code>",
                    badge,
                    e(row["level"]),
                    e(row["rto"]),
                    e(row["loss"]),
                    '<ul class="controls">' + "".join(f"<li>{e(c)}</li>" for c in row["controls"]) + "</ul>",
                ]
            )
        body.append(
            html_module.rows(
                [
                    e(w[k])
                    for k in (
                        "report",
                        "scenario",
                        "verdict",
                        "level",
                        "recovery_time",
                        "data_loss",
                        "evidences",
                    )
                ],
                table_rows,
                "index",
            )
        )
    else:
        body.append(f"<p>{e(w['no_drills'])}</p>")
    files, found = scan
    scan_text = w["scan_clean"].format(n=files) if not found else w["scan_found"].format(n=found)
    body += [
        f"<h2>{e(w['secret_scan'])}</h2>",
        f'<p class="{"ok" if not found else "bad"}">{e(scan_text)}</p>',
        f"<h2>{e(w['manifest'])}</h2>",
        f"<p>{e(w['verify_with'])}:</p>",
        f"<pre>python -m reports verify {escape(str(folder))}\n"
        f"cd {escape(str(folder))} &amp;&amp; sha256sum -c {MANIFEST}</pre>",
    ]
    return html_module.page(w["index_title"], lang, "\n".join(body))


def write(
    entries: list[Entry], run_id: str, lang: str, folder: Path, reports_dir: Path, scan: tuple[int, int]
) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    md = folder / "compliance-index.md"
    page = folder / "compliance-index.html"
    md.write_text(render_markdown(entries, run_id, lang, folder, reports_dir, scan), encoding="utf-8")
    page.write_text(render_html(entries, run_id, lang, folder, reports_dir, scan), encoding="utf-8")
    return [md, page]
