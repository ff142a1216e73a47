"""The composite GitHub Action (action.yml) that gates the app's runbook in the app's own CI: its wiring
read as GitHub reads it, and its script run here as the action runs it (GITHUB_STEP_SUMMARY a temp file,
the harness this checkout), with the job summary's Markdown checked."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from gate.summary import job_summary

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "scripts/gate-action.sh"

RUNBOOK = """# 復旧手順
## サービス復旧手順
### 3. Webサーバー復旧
#### 設定確認
```bash
# Nginx設定テスト
sudo nginx -t
```
### 4. 壊れた手順
#### 確認
```bash
ls /opt/mks/no-such-file
```
"""


def test_the_action_runs_the_script_with_every_input_it_declares():
    action = yaml.safe_load((ROOT / "action.yml").read_text(encoding="utf-8"))
    assert action["runs"]["using"] == "composite"
    steps = action["runs"]["steps"]
    assert 'scripts/setup.sh' in steps[0]["run"] and "GITHUB_ACTION_PATH" in steps[0]["run"]
    gate = next(s for s in steps if "gate-action.sh" in s.get("run", ""))
    script = SCRIPT.read_text(encoding="utf-8")
    for name, value in gate["env"].items():  # each input reaches the script under the name it reads
        assert name in script, name
        declared = name.removeprefix("GATE_").lower().replace("_", "-")
        assert value == "${{ inputs." + declared + " }}", name
    assert set(re.findall(r"GATE_[A-Z_]+", script)) == set(gate["env"])
    upload = steps[-1]
    assert upload["uses"].startswith("actions/upload-artifact@") and upload["if"] == "always()"
    assert upload["with"]["path"] == "${{ inputs.reports }}"


def test_the_example_workflow_pins_the_action_and_gates_what_a_pull_request_changed():
    workflow = yaml.safe_load((ROOT / "examples/app-runbook-gate.yml").read_text(encoding="utf-8"))
    steps = workflow["jobs"]["gate"]["steps"]
    gate = next(s for s in steps if "mks-drill@" in s.get("uses", ""))
    assert re.fullmatch(r"[\w-]+/mks-drill@[0-9a-f]{40}", gate["uses"]), "pinned to a commit"
    assert gate["with"]["runbook"].startswith("docs/15_") and "base_ref" in gate["with"]["changed-since"]
    checkout = next(s for s in steps if s.get("uses", "").startswith("actions/checkout@"))
    assert checkout["with"]["fetch-depth"] == 0


def test_the_job_summary_is_a_verdict_table_and_each_defect_with_its_repair():
    report = {"verdict": "FAILED", "runbook": "/x/docs/15_復旧手順.md", "seconds": 12.5, "cards": [
        {"procedure": "A > 1. 手順", "verdict": "passed", "ran_under": "healthy system", "findings": []},
        {"procedure": "A > 2. 手順|x", "verdict": "failed", "ran_under": "under fault: drill d", "findings": [
            {"kind": "destroys data", "section": "A > 2. 手順 > 実行", "line": 40, "observed": "dropped\nit",
             "repair": "the corrected runbook's lines 10–20", "behind_first": False}]}]}
    text = job_summary(report)
    assert text.startswith("## ❌ Runbook gate: FAILED")
    assert "| A > 1. 手順 | ✅ passed | healthy system | — |" in text
    assert "| A > 2. 手順\\|x | ❌ failed | under fault: drill d | 1 destroys data |" in text
    assert "- **destroys data** · A > 2. 手順|x · line 40: dropped it" in text
    assert "repair: the corrected runbook's lines 10–20" in text


@pytest.mark.runbook
@pytest.mark.stack
def test_the_actions_script_gates_a_runbook_and_writes_the_job_summary(tmp_path, stack_settings):
    """As the action runs it: a passing and a failing procedure; exit 1, reports written, the summary's
    table has both with their verdicts and the failing line."""
    runbook = tmp_path / "app/docs/15_復旧手順.md"
    runbook.parent.mkdir(parents=True)
    runbook.write_text(RUNBOOK, encoding="utf-8")
    summary = tmp_path / "step-summary.md"
    summary.write_text("earlier step\n", encoding="utf-8")
    env = {**os.environ, "GITHUB_ACTION_PATH": str(ROOT), "GITHUB_STEP_SUMMARY": str(summary),
           "MKS_DRILL_PYTHON": sys.executable, "GATE_RUNBOOK": "docs/15_復旧手順.md",
           "GATE_REPORTS": str(tmp_path / "reports"), "GATE_SECTIONS": "Webサーバー\n壊れた手順\n"}
    if stack_settings.service_user:
        env["GATE_SERVICE_USER"] = stack_settings.service_user
    done = subprocess.run(["bash", str(SCRIPT)], cwd=tmp_path / "app", env=env, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 1, done.stdout[-2000:] + done.stderr[-2000:]
    written = sorted(p.suffix for p in (tmp_path / "reports").glob("runbook-gate-*"))
    assert written == [".html", ".json", ".md"], written
    text = summary.read_text(encoding="utf-8")
    assert text.startswith("earlier step\n## ❌ Runbook gate: FAILED"), text
    assert "| サービス復旧手順 > 3. Webサーバー復旧 | ✅ passed |" in text, text
    assert "| サービス復旧手順 > 4. 壊れた手順 | ❌ failed |" in text and "1 cannot run as written" in text
    assert re.search(r"\*\*cannot run as written\*\* · サービス復旧手順 > 4. 壊れた手順 · line 12: "
                     r"`ls /opt/mks/no-such-file` failed", text), text
