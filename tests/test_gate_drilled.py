"""The gate's own machinery without stacks: a verdict instead of a crash, summaries, mutants, the CLI."""

from __future__ import annotations

from pathlib import Path

from gate.__main__ import main
from gate.mutants import make_mutants
from gate.orchestrator import Gate, summarise
from gate.parser import parse_file
from gate.report import judge

CORRECTED = Path(__file__).parent.parent / "docs/15_復旧手順(Recovery-Procedures).md"
DB = "データ復旧手順 > 1. データベースバックアップからの復旧"
UPLOADS = "データ復旧手順 > 2. アップロードファイル復旧"
PITR = "完全システム復旧 > 2. ポイントインタイムリカバリ"


def test_an_error_inside_a_procedure_is_that_procedures_failure_and_the_gate_goes_on():
    def broken_stacks(name, seed_scale=None):
        raise RuntimeError(f"no stack for {name} today")

    gate = Gate(parse_file(CORRECTED), broken_stacks)
    outcomes = gate.run(lambda title: title in (DB, "サービス復旧手順 > 2. データベース復旧"))
    assert [o.title for o in outcomes] == ["サービス復旧手順 > 2. データベース復旧", DB]  # both judged
    for outcome in outcomes:
        assert not outcome.health.ok
        assert outcome.health.problems[0].startswith(
            "the procedure could not be judged: RuntimeError: no stack")
    result = judge(gate.runbook, outcomes, [], gate.events, 0.0)
    assert result.verdict == "FAILED"
    assert all("could not be judged" in d for d in result.defects)


def test_long_lists_become_a_count_and_the_first_few():
    lines = [f"file missing: {i}.pdf" for i in range(400)] + ["users: 3 rows before, 0 after"]
    out = summarise(lines)
    assert out == ["file missing: 400 (first 3: 0.pdf, 1.pdf, 2.pdf)", "users: 3 rows before, 0 after"]


def test_mutants_of_the_drilled_procedures():
    mutants = make_mutants(CORRECTED.read_text(encoding="utf-8"), str(CORRECTED))
    scripts = {"復旧自動化スクリプト > 自動復旧スクリプト", "復旧自動化スクリプト > 完全復旧スクリプト"}
    assert {m.procedure for m in mutants} == {DB, UPLOADS, PITR, *scripts}  # only drilled procedures
    kinds = {m.kind for m in mutants}
    for kind in ("command deleted", "newest -> oldest (ls -t -> ls -tr)",
                 "first -> last (head -1 -> tail -1)", "recovery_target_time dropped",
                 "--exit-on-error dropped", "ON_ERROR_STOP dropped", "curl -f dropped"):
        assert kind in kinds
    original = CORRECTED.read_text(encoding="utf-8").splitlines()
    for m in mutants:  # each mutant changes one thing: a deleted command, or one changed or deleted line
        changed = m.text.splitlines()
        removed = len(original) - len(changed)
        assert changed != original
        assert removed >= 1 if m.kind == "command deleted" else removed in (0, 1)
    target = next(m for m in mutants if m.kind == "recovery_target_time dropped")
    assert "recovery_target_time = '$TARGET_TIME'" not in target.text
    assert any(m.display_only for m in mutants) and not all(m.display_only for m in mutants)


def test_cli_usage_errors_exit_2(tmp_path, capsys):
    assert main([str(tmp_path / "missing.md")]) == 2
    assert "no such file" in capsys.readouterr().err
    assert main(["--no-such-option", str(CORRECTED)]) == 2
    assert main([]) == 2


def test_server_fatal_is_the_servers_own_line_not_a_clients(tmp_path):
    """The race of the original's PITR check: a refused login (`user@db FATAL`) written after the
    server's own FATAL must not be taken for why the server is down."""
    from gate.drilled import server_fatal

    log = tmp_path / "postgresql.log"
    server = ('2026-12-03 15:00:00.100 UTC [41] FATAL:  using recovery command file "recovery.conf" '
              "is not supported")
    log.write_text("\n".join([
        "2026-12-03 15:00:00.000 UTC [41] LOG:  starting PostgreSQL 15",
        server,
        "2026-12-03 15:00:00.200 UTC [52] mks_user@mks_db FATAL:  the database system is shutting down",
        "2026-12-03 15:00:00.300 UTC [53] postgres@postgres FATAL:  the database system is starting up",
    ]) + "\n")
    assert server_fatal(log) == server
    log.write_text("2026-12-03 15:00:00.300 UTC [53] postgres@postgres FATAL:  password authentication\n")
    assert server_fatal(log) is None
    assert server_fatal(tmp_path / "missing.log") is None


def test_a_verification_section_is_judged_by_its_exit_status_its_output_or_what_it_only_shows():
    """Fakes the block outcomes (the stacks' runs are in test_gate_runbook.py)."""
    from gate.runner import FAILED, PASSED, BlockOutcome, CommandOutcome
    from gate.verification import CAN_FAIL, CANNOT_FAIL, NUMBERS_ONLY, judge

    def block(*commands):
        return [BlockOutcome("s", 1, PASSED, [CommandOutcome(i, c, c, s, code, out)
                                             for i, (c, s, code, out) in enumerate(commands, 1)])]

    counts = ('psql -U mks_user -d mks_db -c "\nSELECT COUNT(*) FROM projects;\n"', PASSED, 0, " 10\n")
    assert judge("s", "w", "rows", block(counts)).result == NUMBERS_ONLY
    failing = ('test "$(psql -Atc "SELECT 1")" = 0', FAILED, 1, "")
    assert judge("s", "w", "rows", block(counts, failing)).result == CAN_FAIL
    said = ("curl http://localhost:5100/api/v1/health", PASSED, 0, '{"status": "unhealthy"}')
    assert judge("s", "w", "503", block(said)).result == CAN_FAIL
    quiet = ("curl http://localhost:5100/api/v1/health", PASSED, 0, '{"status": "ok"}')
    verdict = judge("s", "w", "the database stopped", block(quiet))
    assert verdict.result == CANNOT_FAIL and "missed: the database stopped" in verdict.evidence


def test_members_escaping_the_uploads_are_found_where_gnu_tar_put_them(tmp_path):
    """A real GNU tar extracts the escaping archive with `-C /` (the sandbox root here): the absolute
    member lands outside the folder, the link out stays; both are named."""
    import subprocess
    import tarfile

    from gate import badbackups as bad

    root = tmp_path / "root"
    uploads = root / "opt/mks/uploads"
    uploads.mkdir(parents=True)
    (root / "etc/mks").mkdir(parents=True)
    archive = tmp_path / "uploads.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        link = tarfile.TarInfo(bad.LINK)
        link.type, link.linkname = tarfile.SYMTYPE, bad.LINK_TARGET
        tar.addfile(link)
        for name in bad.ESCAPES:
            bad._add(tar, name, b"x\n")
    assert bad.escaped(root, uploads) == []
    subprocess.run(["tar", "-xzf", str(archive), "-C", str(root)], capture_output=True, check=False)
    found = bad.escaped(root, uploads)
    assert "/etc/mks/gate-escape-absolute.txt" in found
    assert any(f.startswith("a link /opt/mks/uploads/gate-escape-link") for f in found)
