"""Run a procedure's shell blocks, as written, in one bash session in a sandbox (as an operator would in
one terminal: variables and `cd` carry from block to block), and record each command's fate.

bash runs without `set -e` or `pipefail` (the runbook's blocks are not strict), as the sandbox's service
account, with the shims first on PATH and the PostgreSQL client environment of the sandbox. Markers
printed between commands split the output; a status file records each command's exit code. The whole
session runs under `timeout`, which kills its process group, so nothing it starts can hang the gate.
"""

from __future__ import annotations

import logging
import re
import shlex
import time
from dataclasses import dataclass, field
from pathlib import Path

from gate.mapping import Mapped, SandboxInfo, map_command
from gate.parser import Block, Section
from recovery.commands import RunAs, run
from recovery.errors import CommandError

log = logging.getLogger(__name__)

MARK = "@@GATE-BEGIN"
MARK_RE = re.compile(rf"\n?{MARK} (\d+)@@\n")
OUTPUT_LIMIT = 6000

PASSED, FAILED, NOT_EXECUTABLE, DOCUMENTED, NOT_RUN = (
    "passed", "failed", "not executable", "documented only", "not run")

# commands that only show something: deleting one cannot change what a procedure does, and a check made
# of them only prints what a person must compare
DISPLAY_ONLY = re.compile(
    r"^\s*(?:sudo\s+(?:-u\s+\S+\s+)?)?(?:(?:ls|echo|cat|du|grep|tail|head|printf|ps|journalctl)\b"
    r"|systemctl\s+status\b|find\s+\S+\s+-type\s+f\s*\|"
    r"|psql\b[^|]*-c\s+\"(?:\\d|SELECT\b(?![^\"]*pg_(?:reload_conf|switch_wal|terminate))))")


@dataclass
class CommandOutcome:
    line: int
    original: str
    ran: str | None
    status: str
    exit_code: int | None = None
    output: str = ""
    reason: str | None = None
    notes: list[str] = field(default_factory=list)
    defects: list[str] = field(default_factory=list)


@dataclass
class BlockOutcome:
    section: str
    line: int
    status: str
    commands: list[CommandOutcome]

    @property
    def output(self) -> str:
        return "\n".join(f"$ {c.original.splitlines()[0]}\n{c.output}".rstrip() for c in self.commands
                         if c.ran is not None)


@dataclass
class SessionEnv:
    """Where and as whom a session runs."""

    info: SandboxInfo
    bin_dir: Path
    work_dir: Path  # scripts and status files (inside the sandbox)
    home: Path
    run_as: RunAs | None
    env: dict[str, str]
    secrets: list[str]
    timeout_per_block: float = 90.0


def redact(text: str, secrets: list[str]) -> str:
    for value in secrets:
        if value:
            text = text.replace(value, "[REDACTED]")
    return text


def run_session(sections: list[Section], session: SessionEnv, name: str) -> list[BlockOutcome]:
    """Run every shell block of the sections in one bash session; return one outcome per block."""
    planned: list[tuple[Section, Block, list[tuple[int, Mapped]]]] = []
    script = ["exec 2>&1", "exec </dev/null",
              f"__gate_status={shlex.quote(str(session.work_dir / (name + '.status')))}",
              ': > "$__gate_status"']
    index = 0
    for section in sections:
        for block in section.shell_blocks:
            mapped_block: list[tuple[int, Mapped]] = []
            for command in block.commands:
                skip = command.skip_reason or block.skip_reason
                mapped = map_command(command.text, session.info, skip)
                if mapped.executable and block.is_script:
                    path = session.work_dir / f"{name}-script-{index}.sh"
                    path.write_text(mapped.text + "\n", encoding="utf-8")
                    _give(path, session.run_as)
                    mapped.text = f"bash {shlex.quote(str(path))}"
                    mapped.notes.append(f"the script is run from a file with bash ({path.name})")
                if mapped.executable:
                    script += [f"printf '\\n{MARK} {index}@@\\n'", mapped.text,
                               f'printf "%s %s\\n" {index} "$?" >> "$__gate_status"']
                mapped_block.append((index, mapped))
                index += 1
            planned.append((section, block, mapped_block))
    script_path = session.work_dir / f"{name}.sh"
    script_path.write_text("\n".join(script) + "\n", encoding="utf-8")
    _give(script_path, session.run_as)
    timeout = max(30.0, session.timeout_per_block * max(1, len(planned)))
    output, timed_out = _execute(script_path, session, timeout)
    codes = _read_status(session.work_dir / (name + ".status"))
    pieces = _split_output(redact(output, session.secrets))
    return [_judge(section, block, mapped, codes, pieces, timed_out, timeout)
            for section, block, mapped in planned]


def _execute(script: Path, session: SessionEnv, timeout: float) -> tuple[str, bool]:
    argv = ["timeout", "-k", "5", f"{timeout:g}", "bash", str(script)]
    started = time.monotonic()
    try:
        result = run(argv, timeout=timeout + 20, run_as=session.run_as, env=session.env,
                     cwd=session.home, input_text="", check=False)
    except CommandError as exc:  # the outer timeout: `timeout` itself did not return
        return exc.stdout + exc.stderr, True
    log.info("session %s ran in %.1fs (exit %s)", script.name, time.monotonic() - started, result.returncode)
    return result.stdout + result.stderr, result.returncode in (124, 137)


def _read_status(path: Path) -> dict[int, int]:
    codes: dict[int, int] = {}
    if path.exists():
        for line in path.read_text().splitlines():
            parts = line.split()
            if len(parts) == 2 and parts[0].isdigit():
                codes[int(parts[0])] = int(parts[1])
    return codes


def _split_output(output: str) -> dict[int, str]:
    pieces: dict[int, str] = {}
    parts = MARK_RE.split(output)
    for i in range(1, len(parts) - 1, 2):
        text = parts[i + 1].strip("\n")
        if len(text) > OUTPUT_LIMIT:
            text = text[:OUTPUT_LIMIT // 2] + "\n[... output shortened ...]\n" + text[-OUTPUT_LIMIT // 2:]
        pieces[int(parts[i])] = text
    return pieces


def _judge(section: Section, block: Block, mapped: list[tuple[int, Mapped]], codes: dict[int, int],
           pieces: dict[int, str], timed_out: bool, timeout: float) -> BlockOutcome:
    outcomes: list[CommandOutcome] = []
    for index, m in mapped:
        first_line = block.commands[len(outcomes)].line
        outcome = CommandOutcome(first_line, m.original, m.text, NOT_RUN, reason=m.reason, notes=m.notes,
                                 defects=list(m.defects))
        if not m.executable:
            outcome.status = DOCUMENTED if m.declared else NOT_EXECUTABLE
        elif index in codes:
            outcome.exit_code = codes[index]
            outcome.output = pieces.get(index, "")
            outcome.status = PASSED if codes[index] == 0 and not m.defects else FAILED
        elif index in pieces:
            outcome.output = pieces[index]
            outcome.status = FAILED
            outcome.reason = f"timed out (the session's limit is {timeout:g}s)" if timed_out else \
                "the session ended during this command"
        outcomes.append(outcome)
    statuses = {o.status for o in outcomes}
    if FAILED in statuses:
        status = FAILED
    elif statuses <= {NOT_EXECUTABLE, DOCUMENTED}:
        status = DOCUMENTED if statuses == {DOCUMENTED} else NOT_EXECUTABLE
    elif NOT_RUN in statuses:
        status = NOT_RUN
    elif NOT_EXECUTABLE in statuses:
        status = NOT_EXECUTABLE  # part of it ran and passed, part could not run
    else:
        status = PASSED
    return BlockOutcome(section.key, block.line, status, outcomes)


def _give(path: Path, run_as: RunAs | None) -> None:
    import os

    if run_as is not None and not run_as.is_current:
        os.chown(path, run_as.uid, run_as.gid)
