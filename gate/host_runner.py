"""The runbook's shell blocks run verbatim on a host of the host provider: no shims, no path rewriting.

    python -m gate.host_runner RUNBOOK [--base IMAGE] [--engine-url URL] [--only TEXT] [--out DIR]

A new module beside the sandbox gate (gate/orchestrator.py), which it does not change: it shows
which of the runbook's lines run for real on a host shaped like production (systemd as PID 1,
Debian's PostgreSQL, the app's unit, sudo) and which cannot, and why. It does not judge a section's
outcome with oracles: each command's exit status and last output lines are the evidence.

Each section with shell blocks gets a fresh host (fixtures/stack/host.py, seeded); each block runs
as one script of a login shell of the host as root (`bash -l`, from /root, stdin closed), its
commands in order with each one's exit status recorded after it, bounded by a timeout. A command is
not run when the gate's convention marks it documentation only (`# gate: skip ...`), or when it holds
a placeholder no host can fill (`<PID>`, `your-org`): the report says which. The report names the
provider that judged it: `host`.
"""

from __future__ import annotations

import argparse
import io
import json
import re
import sys
import tarfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from gate import GateError
from gate.parser import Block, Command, Section, parse_file

PROVIDER = "host"
SHELLS = ("bash", "sh", "shell", "")
PLACEHOLDER = re.compile(r"<[A-Za-z_][A-Za-z_ -]*>|\byour-[a-z]+\b")
MARK = "__mks_gate_rc__"
BLOCK_TIMEOUT = 120
SCRIPT = "/root/.mks-gate-block.sh"


@dataclass
class CommandOutcome:
    line: int
    command: str
    outcome: str  # ran | failed | not-run | timed-out
    exit_code: int | None = None
    detail: str = ""


@dataclass
class SectionOutcome:
    title: str
    line: int
    commands: list[CommandOutcome] = field(default_factory=list)


def not_run_reason(command: Command) -> str | None:
    if command.skip_reason is not None:
        return f"gate: skip {command.skip_reason}".strip()
    found = PLACEHOLDER.search(command.text)
    if found:
        return f"placeholder {found.group(0)!r}: no host can fill it"
    return None


def block_script(commands: list[Command]) -> str:
    """The block as one script: each command as written, then its exit status on a line of its own."""
    lines = ["cd /root"]
    for n, command in enumerate(commands):
        lines += [command.text, f'echo "{MARK} {n} $?"']
    return "\n".join(lines) + "\n"


def parse_output(output: str, commands: list[Command]) -> list[tuple[int | None, str]]:
    """(exit status, the output before it) per command; None for a command the script never finished."""
    results: list[tuple[int | None, str]] = [(None, "")] * len(commands)
    chunk: list[str] = []
    for raw in output.splitlines():
        match = re.match(rf"^{MARK} (\d+) (\d+)$", raw)
        if match:
            results[int(match[1])] = (int(match[2]), "\n".join(chunk[-5:]))
            chunk = []
        else:
            chunk.append(raw)
    return results


def run_block(container: object, block: Block, timeout: int = BLOCK_TIMEOUT) -> list[CommandOutcome]:
    from fixtures.stack.host_services import exec_in

    outcomes: dict[int, CommandOutcome] = {}
    runnable = []
    for command in block.commands:
        reason = not_run_reason(command)
        if reason:
            outcomes[id(command)] = CommandOutcome(command.line, command.text, "not-run", detail=reason)
        else:
            runnable.append(command)
    if runnable:
        data = block_script(runnable).encode()
        buffer = io.BytesIO()
        with tarfile.open(fileobj=buffer, mode="w") as tar:
            info = tarfile.TarInfo(SCRIPT.lstrip("/"))
            info.size, info.mode, info.mtime = len(data), 0o700, int(time.time())
            tar.addfile(info, io.BytesIO(data))
        container.put_archive("/", buffer.getvalue())  # type: ignore[attr-defined]
        code, output = exec_in(container, ["timeout", str(timeout), "bash", "-l", SCRIPT])  # stdin closed
        for command, (status, tail) in zip(runnable, parse_output(output, runnable), strict=True):
            if status is None:
                outcome = "timed-out" if code == 124 else "failed"
                detail = f"the block stopped before this command ended (exit {code}): {output[-300:]}"
            else:
                outcome, detail = ("ran" if status == 0 else "failed"), tail
            outcomes[id(command)] = CommandOutcome(command.line, command.text, outcome, status, detail)
    return [outcomes[id(c)] for c in block.commands]


def mask(text: str, secrets: list[str]) -> str:
    for secret in secrets:
        text = text.replace(secret, "********")
    return text


def shell_sections(sections: list[Section], only: str | None) -> list[Section]:
    return [s for s in sections if any(b.lang in SHELLS and b.commands for b in s.blocks)
            and (only is None or only in " > ".join(s.path))]


def run_runbook(path: Path, provider: object, only: str | None = None, seed_scale: float = 0.2) -> dict:
    """Every shell section of the runbook on a fresh seeded host; the outcomes as a JSON-able dict."""
    from fixtures.apps.seeding import seed_stack

    runbook = parse_file(path)
    results: list[SectionOutcome] = []
    for section in shell_sections(runbook.sections, only):
        stack = provider.stack(f"gate-host-{len(results)}")  # type: ignore[attr-defined]
        try:
            stack.up()
            seed_stack(stack, seed_scale)
            container = stack.services.container()
            outcome = SectionOutcome(" > ".join(section.path), section.line)
            for block in section.blocks:
                if block.lang in SHELLS:
                    outcome.commands += run_block(container, block)
            for command in outcome.commands:  # `cat /etc/mks/config.yml` prints the stack's secrets
                command.detail = mask(command.detail, stack.secrets.values())
            results.append(outcome)
        finally:
            stack.down()
    counts: dict[str, int] = {}
    for section_outcome in results:
        for command in section_outcome.commands:
            counts[command.outcome] = counts.get(command.outcome, 0) + 1
    return {"runbook": str(path), "provider": PROVIDER, "counts": counts,
            "sections": [asdict(s) for s in results]}


def markdown(result: dict) -> str:
    lines = [f"# Runbook run verbatim on a host — {Path(result['runbook']).name}", "",
             f"provider: **{result['provider']}** (systemd as PID 1, Debian's PostgreSQL 15, the app's unit)",
             "", "counts: " + ", ".join(f"{k} {v}" for k, v in sorted(result["counts"].items())), ""]
    for section in result["sections"]:
        lines += [f"## {section['title']} (line {section['line']})", "",
                  "| line | command | outcome | exit | detail |", "|---|---|---|---|---|"]
        for c in section["commands"]:
            text = c["command"].splitlines()[0].replace("|", "\\|")
            detail = " ".join(c["detail"].split())[:160].replace("|", "\\|")
            lines.append(f"| {c['line']} | `{text}` | {c['outcome']} | {c['exit_code']} | {detail} |")
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    from fixtures.stack.composed import StackSettings
    from fixtures.stack.container import ContainerSettings
    from fixtures.stack.container_engine import EngineUnavailable
    from fixtures.stack.host import HostProvider

    parser = argparse.ArgumentParser(prog="python -m gate.host_runner", description=__doc__.split("\n")[0])
    parser.add_argument("runbook", type=Path)
    parser.add_argument("--base", default="localhost/debian-base:bookworm")
    parser.add_argument("--engine-url", default=None)
    parser.add_argument("--only", default=None, help="only sections whose heading path contains this")
    parser.add_argument("--out", type=Path, default=Path("reports/out/gate-host"))
    args = parser.parse_args(argv)
    settings = StackSettings()
    provider = HostProvider(settings, ContainerSettings(base_image=args.base, engine_url=args.engine_url))
    try:
        result = run_runbook(args.runbook, provider, args.only)
    except EngineUnavailable as exc:
        print(f"host provider: {exc.reason}", file=sys.stderr)
        return 3
    except GateError as exc:
        print(f"gate: {exc}", file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "host-verbatim.json").write_text(json.dumps(result, ensure_ascii=False, indent=2))
    (args.out / "host-verbatim.md").write_text(markdown(result), encoding="utf-8")
    print(markdown(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
