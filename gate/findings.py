"""The gate's defects as a runbook author fixes them: one finding per defect, each with its kind, the
runbook line it is about (with the lines around it), what the gate observed, and the repair (the
corrected runbook's lines for that section, and the recovery action that does it right).

The findings are grouped in one card per procedure (its verdict and the fault it ran under); the HTML,
the JSON and the job summary are all made from these cards.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from gate.parser import Runbook, Section, parse_file
from gate.runner import FAILED, NOT_EXECUTABLE, BlockOutcome, CommandOutcome
from gate.types import ProcedureOutcome

CORRECTED = Path(__file__).resolve().parent.parent / "docs/15_復旧手順(Recovery-Procedures).md"

DESTROYS, UNSAFE, CANNOT_RUN, CANNOT_FAIL, WORDING = (
    "destroys data", "unsafe under a bad backup", "cannot run as written", "check that cannot fail",
    "wording")
KINDS = (DESTROYS, UNSAFE, CANNOT_RUN, CANNOT_FAIL, WORDING)

DATA_WORDS = re.compile(r"(?i)restored|rows|files?\b|stale|executable|kept|lost|data:|data changed|mks_db "
                        r"cannot|point in time|deleted by mistake|after the target")
# the command a harm is about, by what the harm says (the first such command of the procedure)
HARM_LINES = (
    (re.compile(r"dropped the live database|database kept|replaced the live database"),
     re.compile(r"DROP DATABASE|--clean|dropdb")),
    (re.compile(r"removed the uploads|uploads as they were|stale file"), re.compile(r"rm -rf|-delete\b")),
    (re.compile(r"wrote outside|escaping|made executable"), re.compile(r"\btar\b[^|]*-x|chmod")),
    (re.compile(r"started the service|did not say|refusal|promoted"),
     re.compile(r"systemctl start|pg_ctl|promote|exit 0")),
    (re.compile(r"data directory"), re.compile(r"rm -rf /var/lib/postgresql|mv /var/lib/postgresql")),
    (re.compile(r"recovery settings|restore_command"),
     re.compile(r"recovery\.(?:conf|signal)|restore_command")),
    (re.compile(r"backend was stopped|backend ran"), re.compile(r"\btar\b|pg_restore|rsync|cp ")),
)
ACTIONS = (  # procedure title word -> the recovery action that does it right (python -m recovery ...)
    ("データベースバックアップ", "db-restore"), ("アップロードファイル", "uploads-restore"),
    ("設定ファイル", "config-restore / config-git-restore"), ("ポイントインタイム", "pitr"),
    ("バックエンドサービス", "service-manual-recover"), ("Webサーバー", "nginx-test, nginx-reload"),
    ("自動復旧スクリプト", "service-auto-recover"), ("完全復旧スクリプト", "db-restore, uploads-restore"),
    ("新規サーバー", "db-restore, uploads-restore"),
)


@dataclass
class Finding:
    kind: str
    section: str
    line: int | None
    context: list[tuple[int, str]]  # (line number, text) around `line`
    observed: str
    repair: str
    repair_lines: list[tuple[int, str]] = field(default_factory=list)  # the corrected runbook's block
    behind_first: bool = False  # found behind the first defect of its section


@dataclass
class Card:
    procedure: str
    verdict: str  # "passed" / "failed"
    ran_under: str
    seconds: float
    findings: list[Finding] = field(default_factory=list)


def cards(runbook: Runbook, procedures: list[ProcedureOutcome], document: list[str]) -> list[Card]:
    lines = _lines(runbook.path)
    corrected = _corrected(runbook.path)
    sections = {s.key: s for s in runbook.sections}
    out = []
    for p in procedures:
        found: list[Finding] = []
        for block in p.blocks:
            found += _command_findings(block, lines, corrected, p.title)
        own = [sections[k] for k in p.sections if k in sections]
        for problem in p.health.problems:
            found.append(_problem_finding(problem, p, own, lines, corrected))
        found = _unique(found)
        out.append(Card(p.title, "passed" if p.ok and not found else "failed", p.mode, p.seconds, found))
    if document:
        out.insert(0, Card("document", "failed", "read", 0.0,
                           _unique([_document_finding(text, lines) for text in document])))
    return out


def _command_findings(block: BlockOutcome, lines: list[str],
                      corrected: dict[str, Section], title: str) -> list[Finding]:
    out = []
    repair, repair_lines = _repair(block.section, title, corrected)

    def finding(kind: str, c: CommandOutcome, observed: str) -> Finding:
        return Finding(kind, block.section, c.line, _around(lines, c.line), f"`{_first(c)}`{observed}",
                       repair, repair_lines)

    for c in block.commands:
        for defect in c.defects:
            out.append(finding(WORDING if re.search(r"(?i)password|marked|comment", defect) else CANNOT_RUN,
                               c, f": {defect}"))
        if c.status == FAILED and not c.defects:
            why = c.reason or f"exit {c.exit_code}"
            out.append(finding(CANNOT_RUN, c, f" failed ({why}): {_telling(c.output)}"))
        elif c.status == NOT_EXECUTABLE:  # a placeholder cannot run anywhere; a host-only step wants its mark
            kind = CANNOT_RUN if "placeholder" in (c.reason or "") else WORDING
            out.append(finding(kind, c, f" cannot run in a sandbox and is not marked (`# gate: skip`): "
                               f"{c.reason}"))
    return out


def _problem_finding(problem: str, p: ProcedureOutcome, own: list[Section], lines: list[str],
                     corrected: dict[str, Section]) -> Finding:
    if problem.startswith("verification "):
        kind = CANNOT_FAIL
        key = problem.removeprefix("verification ").split(" against ", 1)[0]
        section = next((s for s in own if s.key == key), own[-1] if own else None)
    else:
        kind = UNSAFE if problem.startswith("variant ") else DESTROYS if DATA_WORDS.search(problem) \
            else CANNOT_RUN
        section = None
    line, section = _harm_line(problem, own) if section is None else (_first_line(section), section)
    key = section.key if section is not None else p.title
    return Finding(kind, key, line, _around(lines, line), problem, *_repair(key, p.title, corrected))


def _document_finding(text: str, lines: list[str]) -> Finding:
    found = re.search(r"line (\d+)", text)
    line = int(found.group(1)) if found else None
    return Finding(WORDING, "document", line, _around(lines, line), text,
                   "close the fence (```) where the block ends; mark documentation blocks with "
                   "`<!-- gate: skip reason -->`")


def _harm_line(problem: str, own: list[Section]) -> tuple[int | None, Section | None]:
    for said, command in HARM_LINES:
        if said.search(problem):
            for section in own:
                for block in section.shell_blocks:
                    for offset, text in enumerate(block.text.splitlines()):
                        if command.search(text) and not text.lstrip().startswith("#"):
                            return block.line + 1 + offset, section
    first = next((s for s in own if s.shell_blocks), None)
    return (_first_line(first) if first else None), first


def _repair(key: str, title: str, corrected: dict[str, Section]) -> tuple[str, list[tuple[int, str]]]:
    action = next((a for word, a in ACTIONS if word in title), None)
    doing = f"`python -m recovery {action}` does it right" if action else ""
    section = corrected.get(key)
    if section is None or not section.shell_blocks:
        return doing or "see the corrected runbook", []
    block = section.shell_blocks[0]
    body = block.text.splitlines()
    said = f"the corrected runbook's {key}, lines {block.line + 1}–{block.line + len(body)}"
    return said + (f"; {doing}" if doing else ""), [(block.line + 1 + i, text) for i, text in enumerate(body)]


def _corrected(path: str) -> dict[str, Section]:
    if not CORRECTED.is_file():
        return {}
    return {s.key: s for s in parse_file(str(CORRECTED)).sections}


def _lines(path: str) -> list[str]:
    try:
        return Path(path).read_text(encoding="utf-8").splitlines()
    except OSError:
        return []


def _around(lines: list[str], line: int | None, before: int = 2, after: int = 2) -> list[tuple[int, str]]:
    if line is None or not lines:
        return []
    return [(n, lines[n - 1]) for n in range(max(1, line - before), min(len(lines), line + after) + 1)]


def _first_line(section: Section) -> int | None:
    return section.shell_blocks[0].line if section.shell_blocks else section.line


def _first(c: CommandOutcome) -> str:
    first = c.original.strip().splitlines()[0] if c.original.strip() else ""
    return first if len(first) <= 90 else first[:89] + "…"


def _telling(output: str) -> str:
    lines = [line.strip() for line in output.strip().splitlines() if line.strip()]
    bad = [line for line in lines if TELLING.search(line)]
    return (bad or lines or ["(no output)"])[0][:300]


TELLING = re.compile(r"(?i)error|no such|cannot|fatal|denied|not found|failed")


def _unique(found: list[Finding]) -> list[Finding]:
    """The same defect once (the same kind, line and observation), in the order found."""
    seen, out = set(), []
    for f in found:
        key = (f.kind, f.line, f.observed)
        if key not in seen:
            seen.add(key)
            out.append(f)
    return out
