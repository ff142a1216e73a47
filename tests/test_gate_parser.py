"""Unit tests of the runbook gate's parser and command mapping, on small synthetic runbooks (no stack)."""

from __future__ import annotations

from pathlib import Path

from gate.mapping import SandboxInfo, map_command, map_paths
from gate.parser import parse
from gate.report import _last_line
from gate.runner import MARK, _split_output

INFO = SandboxInfo(root=Path("/sb/r1"), backend_port=41000, pg_major=15, service_account="postgres",
                   renew_command="python -m fixtures.stack.tls renew /sb/r1", old_root=Path("/sb/old"))

RUNBOOK = """# 手順書

## サービス復旧手順

### 1. バックエンド
#### 自動復旧
```bash
# コメントだけの行
systemctl status mks-backend

kill -9 <PID>  # 強制終了
```

#### 確認
```
psql -U mks_user -d mks_db -c "
SELECT 1;
"
TOKEN=$(curl -X POST http://localhost:5100/api/v1/auth/login \\
  -d '{"a": 1}' \\
  | jq -r '.token')
cat > /var/lib/postgresql/13/main/recovery.conf << END
restore_command = 'cp /backup/mks/wal/%f %p'
END
if [ -n "$X" ]; then echo yes; fi
```

<!-- gate: skip サンドボックスでは実行しない -->
```bash
apt install -y nginx
```

### 2. スクリプト
```bash
#!/bin/bash
while true; do
  exit 0
done
```

```markdown
## 復旧レポート: REC-2024-001
```

### 3. 開いたまま
```sh
# gate: skip ホストの変更
apt update
echo never closed
"""


def book_commands(title: str) -> list:
    return [c for b in parse(RUNBOOK).section(title).blocks for c in b.commands]


def test_sections_have_japanese_titles_and_paths():
    book = parse(RUNBOOK)
    keys = [s.key for s in book.sections]
    assert "サービス復旧手順 > 1. バックエンド > 自動復旧" in keys
    assert book.section("自動復旧").level == 4
    assert book.section("2. スクリプト").path == ("手順書", "サービス復旧手順", "2. スクリプト")


def test_comment_only_lines_are_not_commands_and_placeholders_stay_visible():
    commands = book_commands("自動復旧")
    assert [c.text for c in commands] == ["systemctl status mks-backend", "kill -9 <PID>  # 強制終了"]
    assert commands[0].line == 9


def test_multi_line_commands_are_grouped_as_bash_would():
    texts = [c.text for c in parse(RUNBOOK).section("確認").blocks[0].commands]
    assert len(texts) == 4
    assert texts[0].count("\n") == 2  # the open double quote
    assert texts[1].startswith("TOKEN=$(curl") and texts[1].endswith("jq -r '.token')")
    assert texts[2].endswith("\nEND")  # the here-document
    assert texts[3].startswith("if ") and texts[3].endswith("fi")


def test_block_marker_and_line_marker_skip_with_their_reason():
    book = parse(RUNBOOK)
    blocks = book.section("確認").blocks
    assert blocks[0].skip_reason is None
    assert blocks[-1].skip_reason == "サンドボックスでは実行しない"
    opened = book.section("3. 開いたまま").blocks[0]
    assert opened.commands[0].skip_reason == "ホストの変更"
    assert opened.commands[1].skip_reason is None


def test_scripts_are_one_command_and_markdown_is_not_shell():
    script, template = parse(RUNBOOK).section("2. スクリプト").blocks
    assert script.is_script and len(script.commands) == 1
    assert not template.is_shell and template.commands == []


def test_a_fence_left_open_runs_to_the_end_and_is_reported():
    book = parse(RUNBOOK)
    block = book.section("3. 開いたまま").blocks[0]
    assert not block.closed
    assert [c.text for c in block.commands][-1] == "echo never closed"
    assert any("never closed" in p for p in book.problems)


def test_closing_fence_must_stand_alone():
    book = parse("## a\n```bash\necho 1\n```not a close\necho 2\n```\n")
    assert [c.text for c in book.sections[0].blocks[0].commands] == ["echo 1", "```not a close", "echo 2"]


def test_paths_map_by_prefix_and_urls_do_not():
    root = Path("/sb/r1")
    assert map_paths("tar -xzf /backup/mks/u.tar.gz -C /", root) == \
        "tar -xzf /sb/r1/backup/mks/u.tar.gz -C /sb/r1/"
    assert map_paths("curl http://localhost:5100/api/v1/health", root) == "curl http://localhost:5100/api/v1/health"
    assert map_paths("ls /usr/bin /dev/null", root) == "ls /usr/bin /dev/null"


def test_backend_port_versions_and_tail_follow_are_mapped():
    mapped = map_command("tail -f /var/log/postgresql/postgresql-13-main.log", INFO)
    assert mapped.text == "tail -n 50 /sb/r1/var/log/postgresql/postgresql-15-main.log"
    assert mapped.defects and "PostgreSQL 13" in mapped.defects[0]
    assert map_command("netstat -tlnp | grep 5100", INFO).text == "netstat -tlnp | grep 41000"
    assert map_command("chown -R mks:mks /opt/mks/uploads/", INFO).text == \
        "chown -R postgres:postgres /sb/r1/opt/mks/uploads/"


def test_not_executable_lines_say_why():
    for text, why in (("kill -9 <PID>", "placeholder <PID>"),
                      ("apt install -y postgresql", "packages"),
                      ("git clone https://github.com/your-org/x.git mks", "placeholder URL"),
                      ("pip install -r requirements.txt", "Python packages"),
                      ("cat /etc/systemd/system/mks-backend.service", "unit file")):
        mapped = map_command(text, INFO)
        assert not mapped.executable and why in (mapped.reason or ""), text
    declared = map_command("apt update", INFO, skip_reason="ホスト")
    assert declared.declared and "ホスト" in (declared.reason or "")


def test_scp_copies_from_the_old_server_and_certbot_renews_from_the_sandbox_ca():
    assert map_command("scp user@old-server:/backup/mks/latest.dump /tmp/", INFO).text == \
        "cp -p /sb/old/backup/mks/latest.dump /sb/r1/tmp/"
    assert map_command("scp -p 'u@old:/backup/mks/db_*.dump' /var/tmp/x/", INFO).text == \
        "cp -p /sb/old/backup/mks/db_*.dump /sb/r1/var/tmp/x/"
    assert map_command("certbot renew --quiet", INFO).text == INFO.renew_command
    without_old = SandboxInfo(INFO.root, 1, 15, "postgres")
    assert not map_command("scp a@b:/x /tmp/", without_old).executable


def test_heredoc_bodies_are_data_and_literal_passwords_are_defects():
    assert map_command("cat > /tmp/x << END\nkill <PID>\nEND", INFO).executable
    login = map_command("""curl -d '{"username":"admin","password":"password"}' x""", INFO)
    assert login.defects and "literal password" in login.defects[0]
    assert not map_command("""jq -n '{password: env.P}'""", INFO).defects


def test_output_is_split_per_command_and_the_telling_line_is_chosen():
    out = f"\n{MARK} 0@@\nfirst\n{MARK} 3@@\nsecond\nmore\n"
    assert _split_output(out) == {0: "first", 3: "second\nmore"}
    line = _last_line("ok\ntar (child): x: Cannot open: No such file or directory\ntar: exiting")
    assert line.startswith("tar (child)")


def test_coverage_reads_the_drill_catalogue_and_test_names(tmp_path):
    from gate.coverage import coverage

    (tmp_path / "drills.py").write_text(
        'SERVICE = "サービス復旧手順 > 1. バックエンド"\n'
        'A = Drill("crash", "s", "RTO-1", "weekly", f"{SERVICE} > 自動復旧", None, None)\n'
        'B = Drill("both", "s", "RTO-1", "monthly", f"{SERVICE} > 確認 / 自動復旧", None, None)\n',
        encoding="utf-8")
    (tmp_path / "test_more.py").write_text(
        "def test_uploads_come_back():\n    pass\n\ndef test_x_drill(drill_runner):\n    pass\n",
        encoding="utf-8")
    book = parse(RUNBOOK)
    table = {e.section: e for e in coverage(book, [], tmp_path)}
    auto = table["サービス復旧手順 > 1. バックエンド > 自動復旧"]
    assert auto.drills == ["crash (weekly)", "both (monthly)"]
    assert table["サービス復旧手順 > 1. バックエンド > 確認"].drills == ["both (monthly)"]
    assert table["サービス復旧手順 > 2. スクリプト"].by == "nothing"


def test_a_partial_run_says_which_sections_it_left_out_and_claims_only_what_it_ran():
    from gate.report import how_run, judge

    runbook = parse(RUNBOOK, "runbook.md")
    with_commands = [s.key for s in runbook.sections if s.shell_blocks]
    left_out = with_commands[0]
    result = judge(runbook, [], [], [], 0.0, unselected=[left_out])
    whole = judge(runbook, [], [], [], 0.0)
    assert result.verdict == f"{whole.verdict} (partial: 1 sections with commands not selected)"
    assert result.passed == whole.passed
    assert result.section_status(left_out) == "not selected"
    assert how_run(result, left_out) == "not run (not selected)"
    assert whole.section_status(left_out) == "no commands" and how_run(whole, left_out).endswith("commands)")
