"""`--changed-since REF`: the procedures whose blocks changed since a git ref, and those that use a
variable or a file one of them makes. Unit tests on a runbook in a git repository of their own."""

from __future__ import annotations

import subprocess
from pathlib import Path

from gate.__main__ import main
from gate.changes import changed, runbook_at
from gate.parser import parse_file

RUNBOOK = """# 手順
## 復旧
### 1. 取得
```bash
# 最新を選ぶ
LATEST=$(ls -t /backup/mks/db_*.dump | head -1)
pg_dump -Fc -f /backup/mks/before_$(date +%s).dump mks_db
```
### 2. 利用
```bash
echo "$LATEST"
```
### 3. 退避の確認
```bash
ls /backup/mks/before_*.dump
```
### 4. 無関係
```bash
# 設定
chmod u=rwX /opt/mks/uploads
psql -v ON_ERROR_STOP=1 -c "SELECT 1"
```
"""
FIRST, SECOND, THIRD, FOURTH = (f"復旧 > {n}" for n in ("1. 取得", "2. 利用", "3. 退避の確認", "4. 無関係"))


def _git(repo: Path, *args: str) -> None:
    subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True)


def _repo(tmp_path: Path) -> Path:
    _git(tmp_path, "init", "-q")
    _git(tmp_path, "config", "user.email", "gate@example.invalid")
    _git(tmp_path, "config", "user.name", "gate")
    path = tmp_path / "runbook.md"
    path.write_text(RUNBOOK, encoding="utf-8")
    _git(tmp_path, "add", "runbook.md")
    _git(tmp_path, "commit", "-qm", "runbook")
    return path


def test_a_changed_procedure_brings_those_that_use_its_variable_or_its_file(tmp_path):
    path = _repo(tmp_path)
    assert changed(parse_file(str(path)), runbook_at(path, "HEAD")) == ([], [])
    path.write_text(RUNBOOK.replace("head -1)", "head -n 1)"), encoding="utf-8")
    assert changed(parse_file(str(path)), runbook_at(path, "HEAD")) == ([FIRST], [SECOND, THIRD])


def test_prose_does_not_count_and_a_flag_is_not_a_variable(tmp_path):
    path = _repo(tmp_path)
    path.write_text(RUNBOOK.replace("### 2. 利用\n", "### 2. 利用\n説明の文。\n")
                    .replace("chmod u=rwX", "chmod u=rX"), encoding="utf-8")
    assert changed(parse_file(str(path)), runbook_at(path, "HEAD")) == ([FOURTH], [])


def test_a_runbook_new_at_the_ref_is_all_changed_and_a_bad_ref_is_a_usage_error(tmp_path, capsys):
    path = _repo(tmp_path)
    other = tmp_path / "new.md"
    other.write_text(RUNBOOK, encoding="utf-8")
    direct, behind = changed(parse_file(str(other)), runbook_at(other, "HEAD"))
    assert direct == [FIRST, SECOND, THIRD, FOURTH] and behind == []
    assert main([str(path), "--changed-since", "no-such-ref"]) == 2
    assert "not a commit" in capsys.readouterr().err
