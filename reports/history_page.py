"""The history page of a run (runs/<run id>/history.html): every drill's trend and its results over
the last runs, and the runs themselves with what each claimed, from history.sqlite."""

from __future__ import annotations

import os
from pathlib import Path

from reports import html as html_module
from reports import trends
from reports.compliance import HistoryView, is_self_test, schedule_name
from reports.i18n import duration, evidence_words, words

FILE = "history.html"


def render_history(view: HistoryView, run_id: str, lang: str, folder: Path, reports_dir: Path) -> str:
    """Every drill's trend and results, the last-proven tables and the runs, from the history."""
    w = words(lang)
    ew = evidence_words(lang)
    e = html_module.e
    where = e(str(view.path)) if view.path else "-"
    body = [
        f'<header class="rec"><div><h1>{e(ew["history_title"])}</h1>'
        f'<div class="sub">{e(w["run"])}: <code>{e(run_id)}</code> · {e(ew["history_file"])}: '
        f"<code>{where}</code></div></div></header>"
    ]
    for drill_id, results in sorted(view.series.items()):
        if is_self_test(drill_id):
            continue
        latest = results[-1]
        body.append(f"<h2>{e(latest.scenario or drill_id)}</h2><p><code>{e(drill_id)}</code></p>")
        body.append(trends.svg(results, lang, set(view.regressions)))
        rows = []
        for r in results[-trends.LAST_RUNS :]:
            rec = reports_dir / "rec" / f"{r.rec_id}.html"
            link = (
                f'<a href="{e(os.path.relpath(rec, folder))}">{e(r.rec_id)}</a>'
                if rec.is_file()
                else e(r.rec_id)
            )
            rows.append(
                [
                    link,
                    f"<code>{e(r.run_id)}</code>",
                    e(schedule_name(r.ran_under, lang)),
                    e(w.get(r.verdict, r.verdict)),
                    e(duration(r.recovery_seconds, lang)),
                    e(duration(r.downtime_seconds, lang)),
                    e("-" if r.data_loss_rows is None else str(r.data_loss_rows)),
                ]
            )
        body.append(
            html_module.rows(
                [
                    e(x)
                    for x in (
                        "REC",
                        ew["run"],
                        ew["ran_under"],
                        w["verdict"],
                        w["recovery_time"],
                        w["downtime_row"],
                        w["data_loss"],
                    )
                ],
                rows,
                "history",
            )
        )
    body.append(f"<h2>{e(ew['runs'])}</h2>")
    runs = [
        [
            f"<code>{e(r['run_id'])}</code>",
            e(r.get("finished_at") or r["started_at"]),
            e(r.get("markexpr") or "-"),
            e(", ".join(schedule_name(s, lang) for s in r["claimed"]) or "-"),
            e(ew["yes"] if r["partial"] else ew["no"]),
            e(r.get("provider", "")),
            e(r.get("scale", "")),
            e((r.get("harness_revision") or "")[:12]),
        ]
        for r in reversed(view.runs)
    ]
    body.append(
        html_module.rows(
            [
                e(x)
                for x in (
                    ew["run"],
                    ew["when"],
                    "-m",
                    ew["claimed"],
                    ew["partial_col"],
                    "provider",
                    "scale",
                    "harness",
                )
            ],
            runs,
            "runs",
        )
    )
    return html_module.page(ew["history_title"], lang, "\n".join(body))


def write(view: HistoryView, run_id: str, lang: str, folder: Path, reports_dir: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    page = folder / FILE
    page.write_text(render_history(view, run_id, lang, folder, reports_dir), encoding="utf-8")
    return page
