"""The REC report as one self-contained HTML page: inline CSS, the timeline as inline SVG, no scripts,
nothing fetched. It prints well too (the command details are hidden on paper)."""

from __future__ import annotations

import json
from html import escape
from pathlib import Path

from reports import rec as rec_module
from reports import timeline
from reports.i18n import duration, environment_label, words
from reports.markdown import step_status
from reports.rec import RecReport

CSS_FILE = Path(__file__).with_name("templates") / "rec.css"


def css() -> str:
    return CSS_FILE.read_text(encoding="utf-8")


def e(value: object) -> str:
    return escape(str(value), quote=True)


def mark(met: bool | None) -> str:
    if met is None:
        return '<span class="na">—</span>'
    return '<span class="ok">✔</span>' if met else '<span class="bad">✘</span>'


def page(title: str, lang: str, body: str) -> str:
    return (
        f'<!DOCTYPE html>\n<html lang="{e(lang)}">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{e(title)}</title>\n<style>\n{css()}</style>\n</head>\n<body>\n<main>\n{body}\n</main>\n"
        "</body>\n</html>\n"
    )


def rows(header: list[str], body: list[list[str]], cls: str = "") -> str:
    head = "".join(f"<th>{h}</th>" for h in header)
    lines = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in body)
    return f'<table class="{cls}"><thead><tr>{head}</tr></thead><tbody>{lines}</tbody></table>'


def kpi(label: str, value: str, ident: str, state: str = "") -> str:
    return (
        f'<div class="kpi {state}{" time" if ident.endswith("-at") else ""}">'
        f'<div class="label">{e(label)}</div>'
        f'<div class="value" id="{ident}">{e(value)}</div></div>'
    )


def _step(step: dict[str, object], title: str, lang: str) -> str:
    w = words(lang)
    status = str(step.get("status", ""))
    seconds = float(step.get("seconds") or 0)  # type: ignore[arg-type]
    out = [
        f'<li class="step-{e(status)}"><strong>{e(title)}</strong>'
        f'<span class="meta">{e(step_status(status, lang))} · {e(duration(seconds, lang))}</span>'
    ]
    if step.get("error"):
        out.append(f'<div class="error">{e(step["error"])}</div>')
    commands = step.get("commands") or []
    details = step.get("details") or {}
    if commands or details:
        inner = []
        for command in commands:  # type: ignore[union-attr]
            argv = " ".join(str(a) for a in command.get("argv", []))
            text = f"$ {argv}  # rc={command.get('returncode')} {command.get('seconds', 0)}s"
            output = (command.get("stdout", "") + command.get("stderr", "")).strip()
            inner.append(f"<pre>{e(text)}{chr(10) + e(output[-1500:]) if output else ''}</pre>")
        if details:
            inner.append(f"<pre>{e(json.dumps(details, ensure_ascii=False, indent=1)[:3000])}</pre>")
        label = f"{w['commands']} ({len(commands)})" if commands else w["detail"]  # type: ignore[arg-type]
        out.append(f"<details><summary>{e(label)}</summary>{''.join(inner)}</details>")
    out.append("</li>")
    return "".join(out)


def render(rec: RecReport) -> str:
    r, lang = rec.record, rec.lang
    w = words(lang)
    verdict = w.get(r.verdict, r.verdict)
    title = f"{w['title']}: {rec.rec_id}"
    facts = [
        (w["scenario"], r.scenario),
        (w["level"], rec_module.level_text(r, lang)),
        (w["schedule"], rec_module.schedule_text(r, lang)),
        (w["runbook_section"], r.runbook_section or "—"),
        (w["drill_id"], r.drill_id),
        *rec_module.fault_facts(r, lang),
    ]
    if r.failure_reason:
        facts.append((w["failure_reason"], r.failure_reason))
    loss_text = rec_module.data_loss(r, lang)
    target_rows = rec_module.targets(rec)
    rto_met, loss_met = target_rows[0][3], next(t[3] for t in target_rows if t[0] == w["rpo_row"])
    body = [
        f'<header class="rec"><div><h1 id="rec-id">{e(title)}</h1>'
        f'<div class="sub">{e(r.scenario)}</div></div>'
        f'<span id="verdict" class="badge {e(r.verdict)}" data-verdict="{e(r.verdict)}">{e(w["verdict"])}: '
        f"{e(verdict)}</span></header>",
        '<dl class="facts">' + "".join(f"<dt>{e(k)}</dt><dd>{e(v)}</dd>" for k, v in facts) + "</dl>",
        f"<h2>{e(w['summary'])}</h2>",
        '<div class="kpis">'
        + kpi(w["fault_at"], rec_module.when(r.fault_at, lang), "fault-at")
        + kpi(w["recovered_at"], rec_module.when(r.recovered_at, lang), "recovered-at")
        + kpi(
            w["recovery_time"],
            duration(r.recovery_seconds, lang),
            "recovery-time",
            "" if rto_met is None else "good" if rto_met else "bad",
        )
        + kpi(
            w["data_loss"], loss_text, "data-loss", "" if loss_met is None else "good" if loss_met else "bad"
        )
        + "</div>",
        f"<h2>{e(w['steps'])}</h2>",
        '<ol class="steps" id="steps">'
        + "".join(_step(s, timeline.step_title(r, s), lang) for s in timeline.steps_of(r))
        + "</ol>",
        f"<h2>{e(w['improvements'])}</h2>",
        '<ul class="improvements" id="improvements">'
        + (
            "".join(f'<li class="{e(i.severity)}">{e(i.text)}</li>' for i in rec.improvements)
            or f'<li class="none">{e(w["no_improvements"])}</li>'
        )
        + "</ul>",
        f"<h2>{e(w['targets'])}</h2>",
        rows(
            [e(w["item"]), e(w["target"]), e(w["achieved"]), e(w["result"])],
            [[e(a), e(b), e(c), mark(m)] for a, b, c, m in target_rows],
        ),
    ]
    if r.forecast_basis:
        basis = ", ".join(f"{k}={v}" for k, v in r.forecast_basis.items())
        body.append(f'<p class="na">{e(w["forecast_basis"])}: <code>{e(basis)}</code></p>')
    legend = (
        f'<div class="legend"><span><i style="background:#7cc49a"></i>{e(w["availability"])} OK</span>'
        f'<span><i style="background:#d64545"></i>{e(w["kind_fault"])} / NG</span>'
        f'<span><i style="background:#e08a1e"></i>{e(w["kind_detected"])}</span>'
        f'<span><i style="background:#3b6fd8"></i>{e(w["kind_step"])}</span>'
        f'<span><i style="background:#2e9e5b"></i>{e(w["kind_healthy"])}</span></div>'
    )
    body += [
        f"<h2>{e(w['timeline'])}</h2>",
        f'<figure class="timeline" id="timeline">{timeline.svg(r, lang)}'
        f"<figcaption>{legend}</figcaption></figure>",
        f"<h2>{e(w['checks'])}</h2>",
        rows(
            [e(w["check"]), e(w["result"]), e(w["detail"])],
            [[e(c.name), mark(None if c.skipped else c.passed), e(c.detail)] for c in r.checks],
        )
        if r.checks
        else "<p>—</p>",
        (
            f"<p><strong>{e(w['diffs'])}</strong></p><ul>"
            + "".join(f"<li>{e(d)}</li>" for d in r.fingerprint_diffs)
            + "</ul>"
        )
        if r.fingerprint_diffs
        else "",
        f"<h2>{e(w['environment'])}</h2>",
        rows(
            [e(w["item"]), e(w["detail"])],
            [
                [e(environment_label(k, lang)), f'<span class="mono">{e(v)}</span>']
                for k, v in rec.environment.items()
            ],
            "env",
        ),
        f"<h2>{e(w['artifacts'])}</h2>",
    ]
    if r.artifacts:
        states = {"ok": "ok", "bad": "bad", "missing": "bad"}
        body.append(
            rows(
                [e(w["path"]), e(w["bytes"]), "SHA-256", e(w["result"])],
                [
                    [
                        f"<code>{e(a.path)}</code>",
                        f"{a.bytes:,}",
                        f"<code>{e(a.sha256)}</code>",
                        f'<span class="{states[rec.artifact_state.get(a.path, "missing")]}">'
                        f"{e(w['hash_' + rec.artifact_state.get(a.path, 'missing')])}</span>",
                    ]
                    for a in r.artifacts
                ],
                "artifacts",
            )
        )
    else:
        body.append(f"<p>{e(w['no_artifacts'])}</p>")
    body += [
        f'<p class="na">{e(w["source"])}: <code>{e(rec.source_path)}</code> (SHA-256 <code>'
        f"{e(rec.source_sha256)}</code>)</p>",
        f"<h2>{e(w['signoff'])}</h2>",
        rows(
            [e(w["item"]), e(w["name"]), e(w["date"]), e(w["signature"])],
            [[e(role), "", "", ""] for role in w["signoff_roles"].split("|")],
            "signoff",
        ),
        f"<footer>{e(w['generated'])}: {e(rec_module.when(rec.generated_at, lang))} · {e(rec.rec_id)}"
        f"{' · run ' + e(rec.run_id) if rec.run_id else ''}</footer>",
    ]
    return page(title, lang, "\n".join(body))
