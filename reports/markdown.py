"""The REC report as Markdown: the runbook's own template first, then its extensions."""

from __future__ import annotations

from reports import rec as rec_module
from reports import timeline
from reports.i18n import duration, environment_label, words
from reports.rec import RecReport


def cell(value: object) -> str:
    return str(value).replace("|", "\\|").replace("\n", " ").strip() or "—"


def table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return lines


def mark(met: bool | None) -> str:
    return "—" if met is None else ("✅" if met else "❌")


def step_status(status: str, lang: str) -> str:
    w = words(lang)
    return {"ok": w["ok"], "failed": w["step_failed"], "skipped": w["skipped"], "planned": w["planned"]}.get(
        status, status
    )


def render(rec: RecReport) -> str:
    r, lang = rec.record, rec.lang
    w = words(lang)
    verdict = w.get(r.verdict, r.verdict)
    out = [
        f"## {w['title']}: {rec.rec_id}",
        "",
        f"**{w['verdict']}: {'✅' if r.verdict == 'passed' else '❌'} {verdict}**",
        "",
        f"- **{w['scenario']}**: {r.scenario}",
        f"- **{w['level']}**: {rec_module.level_text(r, lang)}",
        f"- **{w['schedule']}**: {rec_module.schedule_text(r, lang)}",
        f"- **{w['runbook_section']}**: {r.runbook_section or '—'}",
        f"- **{w['drill_id']}**: `{r.drill_id}`",
    ]
    if r.failure_reason:
        out.append(f"- **{w['failure_reason']}**: {r.failure_reason}")
    out += [
        "",
        f"### {w['summary']}",
        f"- **{w['fault_at']}**: {rec_module.when(r.fault_at, lang)}",
        f"- **{w['recovered_at']}**: {rec_module.when(r.recovered_at, lang)}",
        f"- **{w['recovery_time']}**: {duration(r.recovery_seconds, lang)}",
        f"- **{w['data_loss']}**: {rec_module.data_loss(r, lang)}",
        *[f"- **{k}**: {v}" for k, v in rec_module.fault_facts(r, lang)],
        "",
        f"### {w['steps']}",
    ]
    steps = timeline.steps_of(r)
    for number, step in enumerate(steps, 1):
        title = timeline.step_title(r, step)
        status = step_status(str(step.get("status", "")), lang)
        line = f"{number}. {title} — {status}, {duration(float(step.get('seconds') or 0), lang)}"
        if step.get("error"):
            line += f" — {cell(step['error'])}"
        out.append(line)
    if not steps:
        out.append("—")
    out += ["", f"### {w['improvements']}"]
    if rec.improvements:
        icon = {"high": "🔴", "medium": "🟠", "info": "🔵"}
        out += [f"- {icon.get(i.severity, '')} {i.text}" for i in rec.improvements]
    else:
        out.append(f"- {w['no_improvements']}")
    out += ["", f"### {w['targets']}"]
    out += table(
        [w["item"], w["target"], w["achieved"], w["result"]],
        [[a, b, c, mark(m)] for a, b, c, m in rec_module.targets(rec)],
    )
    if r.forecast_basis:
        basis = ", ".join(f"{k}={v}" for k, v in r.forecast_basis.items())
        out += ["", f"{w['forecast_basis']}: {basis}"]
    out += ["", f"### {w['timeline']}", ""]
    out += table([w["offset"], w["kind"], w["event"]], [list(row) for row in timeline.rows(r, lang)])
    out += ["", f"### {w['checks']}", ""]
    out += (
        table([w["check"], w["result"], w["detail"]],
              [[c.name, mark(None if c.skipped else c.passed), c.detail] for c in r.checks])
        if r.checks
        else ["—"]
    )
    if r.fingerprint_diffs:
        out += ["", f"{w['diffs']}:", *[f"- {d}" for d in r.fingerprint_diffs]]
    out += ["", f"### {w['environment']}", ""]
    out += table(
        [w["item"], w["detail"]], [[environment_label(k, lang), v] for k, v in rec.environment.items()]
    )
    out += ["", f"### {w['artifacts']}", ""]
    if r.artifacts:
        out += table(
            [w["path"], w["bytes"], "SHA-256", w["result"]],
            [
                [
                    f"`{a.path}`",
                    str(a.bytes),
                    f"`{a.sha256}`",
                    w[f"hash_{rec.artifact_state.get(a.path, 'missing')}"],
                ]
                for a in r.artifacts
            ],
        )
    else:
        out.append(w["no_artifacts"])
    out += ["", f"{w['source']}: `{rec.source_path}` (SHA-256 `{rec.source_sha256}`)", ""]
    out += [f"### {w['signoff']}", ""]
    out += table([w["item"], w["name"], w["date"], w["signature"]], [])
    out += [f"| {role} | &nbsp; | &nbsp; | &nbsp; |" for role in w["signoff_roles"].split("|")]
    out += ["", f"<sub>{w['generated']}: {rec_module.when(rec.generated_at, lang)} · {rec.rec_id}</sub>", ""]
    return "\n".join(out)
