"""recovery.actions: the one way to write an action, and the command line built from its registry."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from recovery import actions
from recovery.__main__ import ACTIONS, main, run_action
from recovery.actions import action, option
from recovery.journal import ActionFailed, Journal
from recovery.target import PathsTarget, Target


def sandbox_target(root: Path) -> Target:
    paths = PathsTarget(**{name: str(root) + value for name, value in vars(PathsTarget()).items()})
    return Target(name="unit", paths=paths)


def _write_then_divide(journal: Journal, target: Target, divisor: int = 0) -> None:
    with journal.step("write", "書き込み") as step:
        marker = Path(target.paths.scratch_dir) / "written"
        marker.parent.mkdir(parents=True, exist_ok=True)
        marker.write_text("the body ran")
        step.note("marker", str(marker))
    with journal.step("divide", "割り算") as step:
        step.note("result", 1 / divisor)


# declared without a CLI name: not registered, not on the command line
DIVIDE = action("unit-divide", "テスト動作", plan=(("write", "書き込み", "a marker file"),
                                                   ("divide", "割り算", "1 / divisor")),
                help="a test action", options=(option("--divisor", type=int),))(_write_then_divide)


def test_an_action_that_raises_ends_as_a_failed_journal_at_its_step(tmp_path):
    target = sandbox_target(tmp_path)
    with pytest.raises(ActionFailed, match=r"unit-divide failed at step divide .*division by zero") as caught:
        DIVIDE(target)
    journal = caught.value.journal
    assert journal.status == "failed" and journal.action == "unit-divide" and journal.title == "テスト動作"
    assert [(s.name, s.status) for s in journal.steps] == [("write", "ok"), ("divide", "failed")]
    assert "division by zero" in (journal.steps[1].error or "")
    assert isinstance(caught.value.__cause__, ZeroDivisionError), "the cause is kept"
    assert DIVIDE(target, divisor=2).status == "succeeded"


def test_the_command_line_turns_a_raising_action_into_exit_1_with_its_journal(tmp_path):
    target = sandbox_target(tmp_path)
    journal, status, message = run_action(DIVIDE, target, argparse.Namespace(dry_run=False, divisor=None))
    assert status == 1 and journal is not None and journal.status == "failed"
    assert "failed at step divide" in message
    journal, status, message = run_action(DIVIDE, target, argparse.Namespace(dry_run=False, divisor=4))
    assert (status, message) == (0, "") and journal is not None and journal.status == "succeeded"


def test_a_dry_run_records_the_plan_and_never_calls_the_body(tmp_path):
    target = sandbox_target(tmp_path)
    plan = DIVIDE(target, dry_run=True)
    assert plan.status == "planned" and [(s.name, s.status) for s in plan.steps] == [
        ("write", "planned"), ("divide", "planned")]
    assert plan.steps[1].details == {"what": "1 / divisor"}
    assert not (tmp_path / "var/tmp/mks-recovery/written").exists()
    assert list(tmp_path.iterdir()) == []


def test_a_plan_that_raises_is_a_failed_journal_not_a_planned_one(tmp_path):
    def broken_plan(journal: Journal, target: Target) -> None:
        journal.plan("first", "一", what="fine")
        raise KeyError("no such setting")

    spec = action("unit-broken-plan", "計画失敗", plan=broken_plan)(_write_then_divide)
    with pytest.raises(ActionFailed, match="no such setting") as caught:
        spec(sandbox_target(tmp_path), dry_run=True)
    assert caught.value.journal.status == "failed"


def test_two_actions_cannot_share_a_command_line_name():
    taken = ACTIONS[0].cli
    with pytest.raises(ValueError, match=f"two actions named {taken}"):
        action("unit-duplicate", "重複", cli=taken)(_write_then_divide)
    assert next(a for a in actions.registered() if a.cli == taken) is ACTIONS[0], "the first one stays"


def test_every_registered_action_is_on_the_command_line_with_its_options(capsys):
    assert sorted(a.cli for a in actions.registered()) == sorted(a.cli for a in ACTIONS)
    assert len(ACTIONS) == 22
    assert main(["--help"]) == 0
    overview = " ".join(capsys.readouterr().out.split())  # argparse wraps long help lines
    for spec in ACTIONS:
        assert spec.cli in overview and spec.help in overview, spec.cli
        assert main(["--target", "unused.yml", spec.cli, "--help"]) == 0
        usage = capsys.readouterr().out
        for flag in (o.flags[0] for o in spec.options):
            assert flag in usage, (spec.cli, flag)


def test_an_option_that_cannot_be_read_is_a_usage_error(tmp_path, capsys):
    target_file = tmp_path / "target.yml"
    target_file.write_text(sandbox_target(tmp_path).to_yaml())
    missing = tmp_path / "no-password-here"
    assert main(["--target", str(target_file), "post-checks", "--password-file", str(missing)]) == 2
    assert f"{missing}: No such file or directory" in capsys.readouterr().err


def test_post_checks_on_the_command_line_fail_with_exit_1_and_a_step_per_check(tmp_path, capsys):
    target = Target(name="nothing-listens", backend_url="http://127.0.0.1:9",
                    paths=sandbox_target(tmp_path).paths)
    target_file = tmp_path / "target.yml"
    target_file.write_text(target.to_yaml())
    secret = tmp_path / "password"
    secret.write_text("unit-login-secret\n")
    assert main(["--target", str(target_file), "--json", "post-checks", "--password-file", str(secret)]) == 1
    out = capsys.readouterr()
    journal = json.loads(out.out)
    assert journal["action"] == "post-checks" and journal["status"] == "failed"
    # the health probe answers "no answer" itself; the login's request then fails, and says so
    assert [s["name"] for s in journal["steps"]] == ["health", "login"]
    assert all(s["status"] == "failed" for s in journal["steps"])
    assert journal["steps"][1]["details"]["detail"].startswith("expected an HTTP answer; seen ConnectError")
    assert "unit-login-secret" not in out.out + out.err
