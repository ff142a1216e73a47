"""The runbook's scripts under their faults (gate/scripted.py): the exit-status oracle, the test procedure
without production, and the scripts' mutants. The whole runbooks' runs are in test_gate_runbook.py."""

from __future__ import annotations

from pathlib import Path

import pytest

from gate.mutants import make_mutants
from gate.plans import script_plan_for as plan_for
from gate.runner import FAILED, NOT_RUN, PASSED, BlockOutcome, CommandOutcome
from gate.scripted import TRUTH, judge_exit, reads_production

CORRECTED = Path(__file__).parent.parent / "docs/15_復旧手順(Recovery-Procedures).md"
AUTO = "復旧自動化スクリプト > 自動復旧スクリプト"
FULL = "復旧自動化スクリプト > 完全復旧スクリプト"


def script(code: int | None, output: str, status: str = PASSED) -> CommandOutcome:
    return CommandOutcome(1, "#!/bin/bash\n...", "bash s.sh", status, code, output,
                          reason=None if code is not None else "timed out (the session's limit is 180s)")


def test_exit_status_must_tell_the_truth():
    said = "Attempt 3 of 3\nAuto recovery failed, manual intervention required"
    failed_then_0 = judge_exit(script(0, said), False, "503")
    assert not failed_then_0.ok and failed_then_0.name == TRUTH
    assert "printed failure and exited 0" in failed_then_0.detail
    running_but_503 = judge_exit(script(0, "Attempt 1 of 3\nService is running"), False, "503 unhealthy")
    assert not running_but_503.ok and "reported success (exit 0" in running_but_503.detail
    false_alarm = judge_exit(script(1, "Auto recovery failed"), True, "")
    assert not false_alarm.ok and "false alarm" in false_alarm.detail
    hung = judge_exit(script(None, "Attempt 2 of 3", FAILED), False, "503")
    assert not hung.ok and "did not end" in hung.detail
    assert not judge_exit(None, True, "").ok
    assert not judge_exit(script(None, "", NOT_RUN), True, "").ok
    assert judge_exit(script(1, "Auto recovery failed, manual intervention required"), False, "503").ok
    assert judge_exit(script(0, "Recovery successful"), True, "").ok


def test_a_test_procedure_that_reads_production_is_found():
    def run(*statuses: str) -> list[BlockOutcome]:
        commands = [CommandOutcome(i, text, text, s, 0 if s == PASSED else 7)
                    for i, (text, s) in enumerate(zip(("cp -r /opt/mks /opt/mks_test",
                                                       "curl -f http://localhost:5100/api/v1/health"),
                                                      statuses, strict=True), 1)]
        return [BlockOutcome("復旧テスト > テスト手順", 1, PASSED, commands)]

    verdict = reads_production(run(PASSED, PASSED), run(PASSED, FAILED))
    assert not verdict.ok
    assert "reads the production instance: line 2 `curl -f http://localhost:5100" in verdict.detail
    assert reads_production(run(PASSED, PASSED), run(PASSED, PASSED)).ok
    assert reads_production(run(PASSED, FAILED), run(PASSED, FAILED)).ok  # failing anyway: not production's


def test_a_refusal_must_be_said():
    """The PITR that puts the old cluster back under a missing WAL segment must still fail a command."""
    from gate.scripted import refusal_reported
    from gate.types import Context

    ctx = Context()
    ctx.blocks = [BlockOutcome("PITR実行", 1, PASSED, [CommandOutcome(1, "mv a b", "mv a b", PASSED, 0)])]
    [silent] = refusal_reported(None, ctx)  # type: ignore[arg-type]
    assert not silent.ok and "every command exited 0" in silent.detail
    ctx.blocks[0].commands.append(CommandOutcome(9, 'test "$PITR_OK" = yes', "test", FAILED, 1))
    [said] = refusal_reported(None, ctx)  # type: ignore[arg-type]
    assert said.ok and "line 9" in said.detail


def test_the_scripts_are_planned_and_mutated_line_by_line():
    assert plan_for(AUTO) and plan_for(FULL) and plan_for("データ復旧手順 > 1. 何か") is None
    mutants = [m for m in make_mutants(CORRECTED.read_text(encoding="utf-8"), str(CORRECTED))
               if m.procedure in (AUTO, FULL)]
    lines = {(m.procedure, m.kind, m.original.strip()) for m in mutants}
    assert (AUTO, "script line deleted", "exit 1") in lines
    assert (AUTO, "script line deleted", "systemctl restart $SERVICE") in lines
    assert (FULL, "script line deleted", "find /opt/mks/uploads -mindepth 1 -delete") in lines
    assert not any(m.original.strip() in ("fi", "done", "then")
                   or m.original.lstrip().startswith(("if ", "#"))
                   for m in mutants if m.kind == "script line deleted")
    echo = next(m for m in mutants if m.original.strip().startswith('echo "Attempt '))
    assert echo.display_only
    second_exit = [m for m in mutants if m.original.strip() == "exit 0"]
    assert second_exit
    assert all(m.equivalent and m.equivalent.startswith("a retried check") for m in second_exit)


RUNBOOK = """# 復旧手順

## 復旧自動化スクリプト

### 自動復旧スクリプト
```bash
#!/bin/bash
# scripts/auto-recovery.sh
echo "Attempting recovery..."
echo "Auto recovery failed, manual intervention required"
```
"""


@pytest.mark.runbook
@pytest.mark.stack
def test_a_script_that_prints_failure_and_exits_0_fails_under_its_fault(tmp_path, stack_factory):
    from gate.orchestrator import Gate
    from gate.parser import parse_file

    path = tmp_path / "runbook.md"
    path.write_text(RUNBOOK, encoding="utf-8")
    gate = Gate(parse_file(str(path)), stack_factory, variants=False, verify=False)
    [outcome] = gate.run()
    assert outcome.mode.startswith("under fault: drill auto-recovery-script"), outcome.mode
    problems = "\n".join(outcome.health.problems)
    assert f"oracle {TRUTH}: printed failure and exited 0 (`Auto recovery failed" in problems, problems
    assert "oracle every service runs again: mks-backend is" in problems, problems
