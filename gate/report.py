"""The gate's verdict, its list of defects, and the report (Markdown and HTML) of every section.

Verdict: PASSED only when no block failed, no procedure left the system unhealthy or its data changed,
every command the sandbox cannot run is marked as such by the runbook (`# gate: skip 理由`), and the
document itself is well formed (no fence left open).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path

from gate.coverage import SectionCoverage
from gate.findings import Card, cards
from gate.page import render
from gate.parser import Runbook
from gate.runner import DOCUMENTED, FAILED, NOT_EXECUTABLE, PASSED
from gate.types import ProcedureOutcome

WRITTEN: list[tuple[str, str, Path]] = []  # (verdict, runbook, html report) for pytest's summary
NOT_SELECTED = "not selected"  # a partial run (--section): the section has commands, none ran
SYMBOL = {PASSED: "✅", FAILED: "❌", NOT_EXECUTABLE: "⚠️", DOCUMENTED: "📄"}


@dataclass
class GateResult:
    runbook: str
    sha256: str
    verdict: str
    defects: list[str]
    procedures: list[ProcedureOutcome]
    coverage: list[SectionCoverage]
    document_problems: list[str]
    events: list[str] = field(default_factory=list)
    seconds: float = 0.0
    made_at: str = field(default_factory=lambda: dt.datetime.now(dt.UTC).isoformat(timespec="seconds"))
    unselected: list[str] = field(default_factory=list)  # sections with commands left out by --section
    cards: list[Card] = field(default_factory=list)  # one per procedure: its defects, each on its own

    @property
    def passed(self) -> bool:
        return self.verdict.startswith("PASSED")

    def section_status(self, key: str) -> str:
        statuses = [b.status for p in self.procedures for b in p.blocks if b.section == key]
        unhealthy = any(key in p.sections and not p.health.ok for p in self.procedures)
        if FAILED in statuses or (statuses and unhealthy):
            return FAILED
        if NOT_EXECUTABLE in statuses:
            return NOT_EXECUTABLE
        if statuses and all(s == DOCUMENTED for s in statuses):
            return DOCUMENTED
        if not statuses and key in self.unselected:
            return NOT_SELECTED
        return PASSED if statuses else "no commands"


def judge(runbook: Runbook, procedures: list[ProcedureOutcome], cover: list[SectionCoverage],
          events: list[str], seconds: float, unselected: list[str] | None = None) -> GateResult:
    defects = [f"document: {p}" for p in runbook.problems]
    for procedure in procedures:
        for block in procedure.blocks:
            for c in block.commands:
                where = f"{block.section} (line {c.line}): `{_short(c.original)}`"
                defects += [f"{where}: {d}" for d in c.defects]
                if c.status == FAILED and not c.defects:
                    reason = c.reason or f"exit status {c.exit_code}"
                    defects.append(f"{where} failed ({reason}): {_last_line(c.output)}")
                elif c.status == NOT_EXECUTABLE:
                    defects.append(f"{where} cannot run in a sandbox and is not marked: {c.reason}")
        verifications = [x for x in procedure.health.problems if x.startswith("verification ")]
        others = [x for x in procedure.health.problems if x not in verifications]
        defects += verifications  # a check that cannot fail is its own defect, not the system's state
        if not procedure.health.ok and (others or not verifications):
            defects.append(f"{procedure.title}: afterwards the system is not healthy or its data changed: "
                           + "; ".join(others))
    data = Path(runbook.path).read_bytes() if Path(runbook.path).exists() else b""
    verdict = "FAILED" if defects else "PASSED"
    if unselected:  # a partial run claims only what it ran
        verdict += f" (partial: {len(unselected)} sections with commands not selected)"
    return GateResult(runbook.path, hashlib.sha256(data).hexdigest(), verdict, defects, procedures, cover,
                      runbook.problems, events, round(seconds, 1), unselected=list(unselected or []),
                      cards=cards(runbook, procedures, runbook.problems))


def write_reports(result: GateResult, folder: Path, stem: str, lang: str = "ja") -> dict[str, Path]:
    """Markdown, HTML (in `lang`: ja, as the REC reports, or en) and JSON."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = {"md": folder / f"{stem}.md", "html": folder / f"{stem}.html", "json": folder / f"{stem}.json"}
    paths["md"].write_text(markdown(result), encoding="utf-8")
    paths["html"].write_text(to_html(result, lang), encoding="utf-8")
    paths["json"].write_text(json.dumps(asdict(result), ensure_ascii=False, indent=1, default=str),
                             encoding="utf-8")
    WRITTEN.append((result.verdict, result.runbook, paths["html"]))
    return paths


def markdown(result: GateResult) -> str:
    out = [f"# Runbook gate: {result.verdict}", "",
           f"- runbook: `{result.runbook}` (sha256 `{result.sha256[:16]}`)",
           f"- checked at: {result.made_at}, in {result.seconds:g} s", ""]
    out += ["## Defects", ""] + ([f"{i}. {d}" for i, d in enumerate(result.defects, 1)] or ["none"]) + [""]
    out += ["## Sections", "", "| section | result | how it was run | after the procedure | covered by |",
            "|---|---|---|---|---|"]
    health = {s: p.health for p in result.procedures for s in p.sections}
    for entry in result.coverage:
        status = result.section_status(entry.section)
        h = health.get(entry.section)
        after = "—" if h is None else ("healthy, data intact" if h.ok else "NOT healthy / data changed")
        names = [d.split("::")[-1] for d in entry.drills]
        drills = ", ".join(names) if len(names) <= 4 else f"{len(names)} drills (their post checks)"
        covered = entry.by + (f" ({drills})" if drills else "")
        mark = SYMBOL.get(status, "")
        out.append(f"| {_cell(entry.section)} | {mark} {status} | {_cell(how_run(result, entry.section))} "
                   f"| {after} | {_cell(covered)} |")
    out += ["", "## Procedures", ""]
    for p in result.procedures:
        how = f"run on a {p.mode}" if p.mode.startswith("healthy") else f"run {p.mode}"
        out += [f"### {p.title}", "", how,
                "", f"stack `{p.stack}`, {p.seconds:g} s; "
                f"afterwards: {'healthy, data intact' if p.health.ok else 'NOT healthy'}", ""]
        out += [f"- {c}" for c in p.health.checks] + [f"- **{x}**" for x in p.health.problems] + [""]
        for block in p.blocks:
            out.append(f"#### {block.section} — block at line {block.line}: {SYMBOL.get(block.status, '')} "
                       f"{block.status}")
            out.append("")
            for c in block.commands:
                out.append(f"- line {c.line} `{_short(c.original)}`: **{c.status}**"
                           + (f" (exit {c.exit_code})" if c.exit_code not in (None, 0) else "")
                           + (f" — {c.reason}" if c.reason else ""))
                out += [f"  - mapped: {n}" for n in c.notes] + [f"  - defect: {d}" for d in c.defects]
                if c.status == FAILED and c.output:
                    shown = [f"  {line}" for line in c.output.splitlines()[-15:]]
                    out += ["", "  ```text", *shown, "  ```"]
            out.append("")
    out += ["## Gate events", ""] + [f"- {e}" for e in result.events] + [""]
    return "\n".join(out)


def to_html(result: GateResult, lang: str = "ja") -> str:
    """The page a runbook author fixes the runbook from (gate.page): a card per procedure."""
    return render(result.runbook, result.verdict, result.passed, result.made_at, result.seconds,
                  bool(result.unselected), result.cards, lang)


def how_run(result: GateResult, section: str) -> str:
    """drilled under fault / run on a healthy system / not run."""
    for p in result.procedures:
        if section in p.sections:
            return p.mode if p.mode.startswith("under fault") else f"run on a {p.mode}"
    return "not run (not selected)" if section in result.unselected else "not run (no shell commands)"


def section_lines(result: GateResult) -> list[str]:
    """One line per section (result, how it was run), each oracle of a drilled procedure, the defects."""
    out = []
    for entry in result.coverage:
        status = result.section_status(entry.section)
        out.append(f"{SYMBOL.get(status, '  ')} {status}: {entry.section} [{how_run(result, entry.section)}]")
    for p in result.procedures:
        if p.mode.startswith("under fault"):
            out.append(f"{p.title}, {p.mode}:")
            out += [f"    {c}" for c in p.health.checks if c.startswith("oracle ")]
    out += ["defects:"] + [f"  {i}. {d}" for i, d in enumerate(result.defects, 1)]
    return out


def _short(text: str, limit: int = 90) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    if lines and lines[0].startswith("#!") and len(lines) > 1:
        lines = [f"{lines[1].lstrip('# ')} (script)"]
    first = lines[0] if lines else ""
    return first if len(first) <= limit else first[: limit - 1] + "…"


def _last_line(output: str) -> str:
    """The line that says what went wrong: the first error-like line, else the last line."""
    lines = [line.strip() for line in output.strip().splitlines() if line.strip()]
    for line in lines:
        if ERROR_LINE.search(line):
            return line[:300]
    return lines[-1][:300] if lines else "(no output)"


ERROR_LINE = re.compile(r"error|No such file|cannot|FATAL|denied|not found|failed|refused", re.IGNORECASE)


def _cell(text: str) -> str:
    return text.replace("|", "\\|")
