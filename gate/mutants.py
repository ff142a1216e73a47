"""The gate proves itself by mutation: small, plausible breakages of a runbook's drilled procedures,
each run through that procedure's drill only; a mutant the gate still passes is a survivor.

Mutants (one change each):
- every command of a drilled procedure deleted (all of its lines);
- the backup choice reversed: `ls -t` <-> `ls -tr`, `head -1` <-> `tail -1`;
- the `recovery_target_time` line dropped;
- the safety nets dropped: `--exit-on-error`, `set -e`, `-v ON_ERROR_STOP=1`, curl's `-f`.

A survivor is either a line that does not change the outcome (shown as such: a display-only command,
useful to the runbook's author) or a sign that an oracle is too weak.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gate.orchestrator import Gate, procedures
from gate.parser import Runbook, parse
from gate.plans import drill_plan_for, plan_for
from gate.runner import DISPLAY_ONLY, FAILED
from gate.types import ProcedureOutcome

# (kind, pattern, replacement): applied to one line at a time; None deletes the line
OPERATORS: tuple[tuple[str, re.Pattern[str], str | None], ...] = (
    ("newest -> oldest (ls -t -> ls -tr)", re.compile(r"\bls -t(?=\s)"), "ls -tr"),
    ("oldest -> newest (ls -tr -> ls -t)", re.compile(r"\bls -tr(?=\s)"), "ls -t"),
    ("first -> last (head -1 -> tail -1)", re.compile(r"\bhead -(?:n ?)?1\b"), "tail -1"),
    ("last -> first (tail -1 -> head -1)", re.compile(r"\btail -(?:n ?)?1\b"), "head -1"),
    ("recovery_target_time dropped", re.compile(r"^\s*recovery_target_time\s*=.*$"), None),
    ("--exit-on-error dropped", re.compile(r" --exit-on-error\b"), ""),
    ("set -e dropped", re.compile(r"^\s*set -e\w*\s*$"), None),
    ("ON_ERROR_STOP dropped", re.compile(r" -v ON_ERROR_STOP=1\b"), ""),
    ("curl -f dropped", re.compile(r"(\bcurl\s+-)f(\w*)"), r"\1\2"),
)
FALLBACK = re.compile(r'^\s*\w+="\$\{\w+:-\$\(')
# Survivors that cannot change what a procedure leaves, each with why (kind, the line as written, why).
# A mutant matched here still counts as killed when the gate kills it; only a survivor is excused.
EQUIVALENT: tuple[tuple[str, re.Pattern[str], str], ...] = (
    ("command deleted", re.compile(r"^\s*[A-Z_]+=no\s*$"),
     "sets a flag to its default: a fresh shell has it unset, and the later test reads unset as not yes"),
    ("command deleted", re.compile(r"^\s*pg_restore --list .*&& echo"),
     "only prints: the blocks run without set -e, so its failure stops nothing (the restore beside with "
     "--exit-on-error is the check that counts)"),
    ("ON_ERROR_STOP dropped", re.compile(r"^\s*psql\b(?!.*\s-c\s.*\s-c\s)[^;]*\s-c\s\"[^\"]*\";?"
                                        r"\s*(?:\|\|\s*exit\s+\d+\s*)?$"),
     "a single -c statement: psql exits non-zero on its error with or without ON_ERROR_STOP"),
    ("--exit-on-error dropped", re.compile(r"pg_restore .*&& \w+=yes"),
     "pg_restore without it goes on after an error but still exits non-zero at the end, so the flag "
     "stays unset; the restore is into the database beside, not the live one"),
    ("command deleted", re.compile(r"^\s*psql .*GRANT ALL PRIVILEGES ON ALL (?:TABLES|SEQUENCES)"),
     "the dump restores its owner (mks_user) and grants: after this restore the GRANT changes nothing"),
    ("command deleted", re.compile(r"^\s*chmod -R u=rwX,g=rX,o= "),
     "the archive's modes are the backup's (files 640, folders 750): the chmod changes nothing"),
    ("command deleted", re.compile(r"^\s*curl -fsS --retry"),
     "the procedure's own last health check: the gate checks health itself after the procedure (a "
     "person reading the block loses the check, the end state does not change)"),
    ("curl -f dropped", re.compile(r"^\s*curl -fsS --retry"),
     "the procedure's own last health check: the gate checks health itself after the procedure"),
    ("command deleted", re.compile(r"^\s*TARGET_TIME=\"\$\{TARGET_TIME:\?"),
     "only refuses to run without TARGET_TIME; the gate always gives it"),
    ("command deleted", re.compile(r"^\s*test \"\$PITR_OK\" = yes"),
     "the refusal is said already under the missing WAL segment: PostgreSQL's start fails when its recovery "
     "stops short before it accepts connections; the test says it when the server stops later"),
    ("command deleted", re.compile(r"^\s*sudo -u postgres tar -xzf \S*pg_wal\.tar\.gz"),
     "the base backup's WAL is in the archive as well: restore_command fetches it"),
    ("command deleted", re.compile(r"^\s*if psql -U postgres -Atc \"SELECT 1 FROM pg_database .*pg_dump"),
     "a second copy: the swap keeps the live database itself (renamed mks_db_before_restore)"),
    ("command deleted", re.compile(r"^\s*test \"\$COUNTS_OK\" = yes"),
     "the loop before it prints ERROR for each table that differs: the verification fails by its output "
     "either way; the test only turns it into the exit status"),
    ("script line deleted", re.compile(r"^\s*exit 0\s*$"),
     "a retried check: the loop's next check finds the service healthy and exits 0 itself"),
    ("--exit-on-error dropped", re.compile(r"pg_restore .*\|\| exit 1"),
     "pg_restore without it goes on after an error but still exits non-zero at the end, and `|| exit 1` "
     "still stops the script"),
    ("script line deleted", re.compile(r"^\s*set -u\s*$"),
     "no variable of the script is ever unset: every one is set on an earlier line"),
    ("script line deleted", re.compile(r"^\s*pg_restore --list "),
     "reads only the dump's table of contents (a truncated dump passes it): the restore with "
     "--exit-on-error is the check that counts"),
    ("script line deleted", re.compile(r"^\s*chown -R mks:mks "),
     "the archive's files already belong to the service account (its tar ran as that account)"),
    ("script line deleted", re.compile(r"^\s*exit 1\s*$"),
     "only when no backup is found: the gate always has backups"),
    ("script line deleted", re.compile(r"^\s*curl -fsS --retry"),
     "the script's own last health check: in every state the gate makes, the steps before it fail on their "
     "own when the system cannot become healthy"),
    ("curl -f dropped", re.compile(r"^\s*curl -fsS --retry .*\|\| exit 1"),
     "the script's own last health check: in every state the gate makes, the steps before it fail on their "
     "own when the system cannot become healthy"),
    ("script line deleted", re.compile(r"^\s*break\s*$"),
     "a retried check: it only saves time; without it the remaining attempts fail the same way and the "
     "script still exits 1"),
    *((kind, FALLBACK, "a fallback for running the verification alone: in the procedure the variable is "
       "set already by its backup selection") for kind in
      ("command deleted", "newest -> oldest (ls -t -> ls -tr)", "first -> last (head -1 -> tail -1)")),
)
# reasons that are about a bad backup: such a survivor is run once more under the variants
CHECK_UNDER_VARIANTS = ("only prints", "a single -c statement", "pg_restore without it", "a retried check",
                        "only when", "the script's own")


@dataclass
class Mutant:
    ident: str
    procedure: str
    line: int  # in the runbook file
    kind: str
    original: str  # the line (or command) as written
    text: str  # the whole mutated runbook

    @property
    def display_only(self) -> bool:
        return self.kind in ("command deleted", "script line deleted") \
            and bool(DISPLAY_ONLY.match(self.original))

    @property
    def equivalent(self) -> str | None:
        """Why this mutant cannot change the outcome (display only, or a listed reason), or None."""
        if self.display_only:
            return "display only: does not change the outcome"
        return next((why for kind, pattern, why in EQUIVALENT
                     if kind == self.kind and pattern.search(self.original)), None)


@dataclass
class MutantResult:
    mutant: Mutant
    killed: bool
    evidence: str
    seconds: float
    details: list[str] = field(default_factory=list)  # every problem and failed command of the run


@dataclass
class MutationReport:
    runbook: str
    results: list[MutantResult] = field(default_factory=list)
    not_drilled: list[str] = field(default_factory=list)  # procedures without a drill: no mutants
    seconds: float = 0.0

    @property
    def killed(self) -> int:
        return sum(r.killed for r in self.results)

    @property
    def survivors(self) -> list[MutantResult]:
        return [r for r in self.results if not r.killed]

    @property
    def outcome_changing(self) -> int:
        """Mutants that can change the outcome: all but the deleted display-only commands."""
        return sum(1 for r in self.results if r.killed or not r.mutant.equivalent)

    @property
    def score(self) -> float:
        return self.killed / self.outcome_changing if self.outcome_changing else 1.0

    def lines(self) -> list[str]:
        out = [f"mutation score: {self.killed} killed of {len(self.results)} mutants; "
               f"{self.killed}/{self.outcome_changing} = {self.score:.0%} of those that can change "
               f"the outcome ({self.seconds:.0f}s)"]
        for r in self.survivors:
            why = r.mutant.equivalent or "SURVIVED: the gate did not notice"
            out.append(f"  survivor {r.mutant.ident}: {r.mutant.procedure}, line {r.mutant.line} "
                       f"[{r.mutant.kind}] `{r.mutant.original.strip()[:90]}`: {why}")
        out += [f"  not drilled (no mutants): {p}" for p in self.not_drilled]
        return out


def drilled_procedures(runbook: Runbook) -> list[tuple[str, list[Any]]]:
    return [(title, sections) for title, sections in procedures(runbook)
            if plan_for(title)]


# a script's line that only opens, closes or continues a compound command: deleting it is a syntax error
STRUCTURE = re.compile(r"^\s*(?:#|$|(?:if|elif|while|until|for|case)\b"
                       r"|(?:then|else|fi|do|done|esac|[{}])\s*$)")


def script_line_mutants(block: Any, title: str, lines: list[str], text: str) -> list[Mutant]:
    """Each command line of a script deleted, one at a time (the script runs as one command)."""
    found = []
    for offset, line in enumerate(block.text.splitlines()):
        if STRUCTURE.match(line):
            continue
        number = block.line + 1 + offset
        found.append(Mutant(f"L{number}-delete", title, number, "script line deleted", line,
                            _join(lines[:number - 1] + lines[number:], text)))
    return found


def make_mutants(text: str, path: str = "<runbook>") -> list[Mutant]:
    runbook = parse(text, path)
    lines = text.splitlines()
    found: list[Mutant] = []
    for title, sections in drilled_procedures(runbook):
        for section in sections:
            for block in section.shell_blocks:
                if block.skip_reason:
                    continue
                if block.is_script:
                    found += script_line_mutants(block, title, lines, text)
                for command in block.commands:
                    if command.skip_reason:
                        continue
                    count = len(command.text.splitlines())
                    start = command.line - 1
                    mutated = lines[:start] + lines[start + count:]
                    found.append(Mutant(f"L{command.line}-delete", title, command.line, "command deleted",
                                        command.first_line, _join(mutated, text)))
                first = block.line  # the fence; its body follows
                for offset, line in enumerate(block.text.splitlines()):
                    number = first + 1 + offset
                    if line.lstrip().startswith("#"):
                        continue
                    for kind, pattern, replacement in OPERATORS:
                        if not pattern.search(line):
                            continue
                        changed = lines[:number - 1] + lines[number:] if replacement is None else \
                            [*lines[:number - 1], pattern.sub(replacement, line, count=1), *lines[number:]]
                        short = kind.split(" (")[0].replace(" ", "-").replace(">", "")
                        found.append(Mutant(f"L{number}-{short}", title, number, kind, line,
                                            _join(changed, text)))
    return found


def _join(lines: list[str], original: str) -> str:
    return "\n".join(lines) + ("\n" if original.endswith("\n") else "")


def killed_by(outcome: ProcedureOutcome) -> str | None:
    """Why the gate fails this procedure, or None when it passes."""
    if outcome.health.problems:
        return outcome.health.problems[0][:200]
    for block in outcome.blocks:
        for command in block.commands:
            if command.status == FAILED:
                return f"line {command.line} `{command.original.splitlines()[0][:60]}` failed " \
                       f"({command.reason or f'exit {command.exit_code}'})"
    if not outcome.health.ok:
        return "not healthy"
    return None


def details_of(outcome: ProcedureOutcome) -> list[str]:
    found = list(outcome.health.problems)
    for block in outcome.blocks:
        found += [f"line {c.line} failed: {c.output[-300:]}" for c in block.commands if c.status == FAILED]
    return found


def run_mutants(runbook_path: str, make_stack: Callable[..., Any], reports_dir: Path | None = None,
                select: Callable[[Mutant], bool] | None = None, limit: int | None = None,
                seed_scale: float = 0.2, budget_seconds: float = 3600.0) -> MutationReport:
    """Run each mutant's procedure under its drill (sequentially: one stack at a time, ~10 s each)."""
    text = Path(runbook_path).read_text(encoding="utf-8")
    started = time.monotonic()
    report = MutationReport(runbook_path)
    book = parse(text, runbook_path)
    report.not_drilled = [t for t, _ in procedures(book) if not drill_plan_for(t)]
    chosen: Iterable[Mutant] = [m for m in make_mutants(text, runbook_path) if select is None or select(m)]
    for mutant in list(chosen)[:limit]:
        if time.monotonic() - started > budget_seconds:
            break
        # first under the drill's own fault only; a survivor once more with the bad-backup variants
        result = _run_one(mutant, runbook_path, make_stack, reports_dir, seed_scale, variants=False)
        excuse = mutant.equivalent
        if not result.killed and (not excuse or excuse.startswith(CHECK_UNDER_VARIANTS)):
            again = _run_one(mutant, runbook_path, make_stack, reports_dir, seed_scale, variants=True)
            again.seconds += result.seconds
            result = again
        report.results.append(result)
    report.seconds = round(time.monotonic() - started, 1)
    return report


def _run_one(mutant: Mutant, runbook_path: str, make_stack: Callable[..., Any], reports_dir: Path | None,
             seed_scale: float, variants: bool) -> MutantResult:
    t0 = time.monotonic()
    gate = Gate(parse(mutant.text, f"{runbook_path} [{mutant.ident}]"), make_stack, seed_scale=seed_scale,
                reports_dir=reports_dir / "mutants" if reports_dir else None, variants=variants,
                verify=variants)  # a survivor's second run: bad backups, and its checks against wrong states
    outcomes = gate.run(lambda title: title == mutant.procedure)
    why = killed_by(outcomes[0]) if outcomes else "the mutated procedure is gone"
    if why and variants:
        why = "on the second run (bad backups, verifications against wrong states): " + why
    return MutantResult(mutant, why is not None, why or "passed the gate", round(time.monotonic() - t0, 1),
                        details_of(outcomes[0]) if outcomes else [])


def write_mutation_report(report: MutationReport, folder: Path) -> Path:
    """Markdown: the score, then every mutant with its result and the evidence."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "runbook-gate-mutants.md"
    out = ["# Runbook gate: mutation self-test", "", f"- runbook: `{report.runbook}`", ""]
    out += [f"- {line.strip()}" for line in report.lines()]
    out += ["", "| mutant | procedure | kind | line | result |", "|---|---|---|---|---|"]
    for r in report.results:
        verdict = "killed: " + r.evidence if r.killed else (f"survived ({r.mutant.equivalent})"
                                                            if r.mutant.equivalent else "SURVIVED")
        cells = [r.mutant.ident, r.mutant.procedure, r.mutant.kind, f"`{r.mutant.original.strip()[:80]}`",
                 verdict]
        out.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    path.write_text("\n".join(out) + "\n", encoding="utf-8")
    return path
