"""recovery/levels.py is the runbook's 復旧レベル定義, and the one table its readers use."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from recovery import backups, levels
from reports import model

RUNBOOK = Path(__file__).resolve().parents[1] / "docs/15_復旧手順(Recovery-Procedures).md"


def runbook_table() -> list[list[str]]:
    rows = [line.strip().strip("|").split("|") for line in RUNBOOK.read_text(encoding="utf-8").splitlines()
            if line.startswith("| RTO-")]
    return [[cell.strip() for cell in row] for row in rows]


def test_the_table_says_what_the_runbook_says():
    table = runbook_table()
    assert [row[0] for row in table] == list(levels.NAMES) == ["RTO-1", "RTO-4", "RTO-24"]
    for name, description, rto_text, loss_text in table:
        level = levels.LEVELS[name]
        assert (level.description, level.rto_text, level.loss_text) == (description, rto_text, loss_text)
        assert level.rto == dt.timedelta(hours=int(name.removeprefix("RTO-")))


def test_its_readers_take_it_from_the_one_table():
    assert model.LEVELS["RTO-4"] == {"rto_seconds": 4 * 3600, "rpo_seconds": 3600, "loss_text": "1時間分"}
    assert model.LEVELS["RTO-1"]["rpo_seconds"] == 0
    hour, day = dt.timedelta(hours=1), dt.timedelta(days=1)
    max_ages = backups.LEVEL_MAX_AGE
    assert max_ages == {"RTO-1": None, "RTO-4": hour, "RTO-24": day}
    assert backups.max_age_for("RTO-24") == dt.timedelta(days=1)
