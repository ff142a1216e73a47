"""The gate's report as findings: each defect its own item with a kind, the runbook line in context,
what was observed and the repair; one card per procedure; Japanese by default, English on request.
Unit tests: outcomes made by hand (no stack)."""

from __future__ import annotations

import json
from dataclasses import asdict

from gate.findings import CANNOT_FAIL, CANNOT_RUN, DESTROYS, UNSAFE, WORDING, cards
from gate.page import render
from gate.parser import parse_file
from gate.runner import FAILED, PASSED, BlockOutcome, CommandOutcome
from gate.types import Health, ProcedureOutcome

TITLE = "データ復旧手順 > 1. データベースバックアップからの復旧"
RUN = f"{TITLE} > リストア実行"
CHECK = f"{TITLE} > リストア確認"
RUNBOOK = """# 復旧手順
## データ復旧手順
### 1. データベースバックアップからの復旧
#### リストア実行
```bash
sudo systemctl stop mks-backend
psql -U postgres -c "DROP DATABASE IF EXISTS mks_db;"
pg_restore -U postgres -d mks_db /backup/mks/latest.dump
```
#### リストア確認
```bash
psql -U mks_user -d mks_db -c "SELECT COUNT(*) FROM users;"
```
"""


def _outcome() -> ProcedureOutcome:
    restore = CommandOutcome(8, "pg_restore -U postgres -d mks_db /backup/mks/latest.dump", "pg_restore ...",
                             FAILED, 1, "pg_restore: error: could not open input file: No such file")
    password = CommandOutcome(6, "sudo systemctl stop mks-backend", "...", PASSED, 0,
                              defects=["a literal password in the command"])
    blocks = [BlockOutcome(RUN, 5, FAILED, [password, restore])]
    problems = [
        "variant truncated newest dump: dropped the live database before the backup was known to restore "
        "(0 documents rows left of 113)",
        "oracle newest backup restored: the row written after a and before b is missing",
        f"verification {CHECK} against rows missing: only prints numbers for a person to compare (exit 0)",
        "oracle newest backup restored: the row written after a and before b is missing",  # said twice
    ]
    return ProcedureOutcome(TITLE, "drill-1", [RUN, CHECK], blocks, Health(False, [], problems), 12.0,
                            mode="under fault: drill database-restore (データベース消失)")


def test_each_defect_is_its_own_finding_with_its_kind_line_context_and_repair(tmp_path):
    path = tmp_path / "runbook.md"
    path.write_text(RUNBOOK, encoding="utf-8")
    [card] = cards(parse_file(str(path)), [_outcome()], [])
    assert (card.procedure, card.verdict) == (TITLE, "failed") and card.ran_under.startswith("under fault")
    kinds = [(f.kind, f.line) for f in card.findings]
    assert kinds == [(WORDING, 6), (CANNOT_RUN, 8), (UNSAFE, 7), (DESTROYS, 5), (CANNOT_FAIL, 11)], kinds
    unsafe = card.findings[2]
    assert (7, 'psql -U postgres -c "DROP DATABASE IF EXISTS mks_db;"') in unsafe.context
    assert [n for n, _ in unsafe.context] == [5, 6, 7, 8, 9]
    assert "dropped the live database" in unsafe.observed
    assert unsafe.repair.startswith(f"the corrected runbook's {RUN}, lines ")
    assert "python -m recovery db-restore" in unsafe.repair
    assert any("mks_db_restore" in text for _, text in unsafe.repair_lines)
    assert "could not open input file" in card.findings[1].observed


def test_the_page_is_japanese_by_default_and_english_on_request_and_the_json_has_the_cards(tmp_path):
    path = tmp_path / "runbook.md"
    path.write_text(RUNBOOK, encoding="utf-8")
    found = cards(parse_file(str(path)), [_outcome()], ["line 3: a fence is never closed"])
    ja = render(str(path), "FAILED", False, "2026-12-07T10:00:00+00:00", 12.0, False, found)
    assert "<html lang='ja'>" in ja and "不合格" in ja and "データを失う" in ja and "失敗し得ない確認" in ja
    assert ja.count("class='defect'") == 6 and ja.count("class='card ") == 2  # the document's card too
    en = render(str(path), "FAILED", False, "2026-12-07T10:00:00+00:00", 12.0, False, found, lang="en")
    assert "<html lang='en'>" in en and "unsafe under a bad backup" in en and "Repair" in en
    data = json.loads(json.dumps([asdict(c) for c in found], ensure_ascii=False))
    assert data[1]["findings"][2]["kind"] == UNSAFE and data[1]["findings"][2]["line"] == 7
