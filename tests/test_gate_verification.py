"""The verification oracle: what `--section` selects (and so checks), which wrong states a verification
section is held to, and a timing without a threshold reported as a check that cannot fail."""

from __future__ import annotations

import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from threading import Thread

import pytest

from gate.__main__ import main
from gate.latency import delayed
from gate.orchestrator import Gate, selected
from gate.parser import parse, parse_file
from gate.verification import CAN_FAIL, CANNOT_FAIL, WRONG_STATES, Verdict, _what_it_catches

ROOT = Path(__file__).parent.parent
CORRECTED = ROOT / "docs/15_復旧手順(Recovery-Procedures).md"
ORIGINAL = ROOT / "tests/data/runbook-original.md"
DB = "データ復旧手順 > 1. データベースバックアップからの復旧"
PERFORMANCE = "復旧後の確認手順 > 2. パフォーマンス確認"
SLOW = next(s for s in WRONG_STATES if s.name == "slow responses")


def test_section_selects_the_procedure_of_a_verification_section_it_names():
    runbook = parse_file(str(CORRECTED))
    assert selected(runbook, ["リストア確認"]) == [DB]
    assert selected(runbook, ["PITR実行"]) == ["完全システム復旧 > 2. ポイントインタイムリカバリ"]
    assert selected(runbook, ["パフォーマンス確認", "リストア確認"]) == [DB, PERFORMANCE]
    assert selected(runbook, ["no such section"]) == []


def test_a_section_that_selects_nothing_is_a_usage_error_not_a_pass(capsys):
    assert main([str(CORRECTED), "--section", "存在しない手順"]) == 2
    assert "no procedure or section" in capsys.readouterr().err


def test_a_section_is_held_to_the_states_its_title_or_its_comments_name():
    text = """# 手順
## 確認
### 1. 応答確認
```bash
# 応答時間を確認
curl -s http://localhost:5100/api/v1/health
```
### 2. パフォーマンス確認
```bash
top -b -n1 | head -3
```
### 3. リストア確認
```bash
# 件数
psql -c "SELECT 1"
```
"""
    sections = {s.path[-1]: s for s in parse(text, "<t>").sections if s.shell_blocks}
    assert SLOW.applies(sections["1. 応答確認"]) and SLOW.applies(sections["2. パフォーマンス確認"])
    assert not SLOW.applies(sections["3. リストア確認"])
    stopped = next(s for s in WRONG_STATES if s.name == "database stopped")
    assert stopped.applies(sections["2. パフォーマンス確認"]) and not stopped.applies(sections["1. 応答確認"])


def test_a_miss_says_what_the_section_does_catch():
    verdicts = [Verdict("X > パフォーマンス確認", "database stopped", CAN_FAIL, "line 3 exits 7"),
                Verdict("X > パフォーマンス確認", "slow responses", CANNOT_FAIL, "it missed: slow")]
    _what_it_catches(verdicts)
    assert verdicts[1].evidence.endswith("it fails under database stopped, not under this")
    assert verdicts[0].evidence == "line 3 exits 7"


def test_the_slow_state_holds_each_connection_and_passes_the_answer_on():
    class Answer(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Answer)
    Thread(target=server.serve_forever, daemon=True).start()
    try:
        with delayed(server.server_address[1], 0.6) as port:
            started = time.monotonic()
            assert urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=10).read() == b"ok"
            assert time.monotonic() - started >= 0.6
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.runbook
@pytest.mark.stack
@pytest.mark.parametrize("runbook", [ORIGINAL, CORRECTED], ids=["original", "corrected"])
def test_a_timing_without_a_threshold_is_a_check_that_cannot_fail(runbook, stack_factory):
    """パフォーマンス確認 claims to measure response time: the original's `time curl` (no threshold) exits 0
    with every answer 5 s late, though its psql fails with the database stopped; the corrected one fails."""
    gate = Gate(parse_file(str(runbook)), stack_factory, variants=False)
    [outcome] = gate.run(lambda title: title == PERFORMANCE)
    checks = "\n".join(outcome.health.checks)
    assert "パフォーマンス確認 against database stopped: can fail" in checks, checks
    missed = [p for p in outcome.health.problems if "against slow responses" in p]
    if runbook == ORIGINAL:
        assert missed and CANNOT_FAIL in missed[0], outcome.health.problems
        assert "it fails under database stopped, not under this" in missed[0]
    else:
        assert "パフォーマンス確認 against slow responses: can fail" in checks, checks
        assert outcome.ok, outcome.health.problems
