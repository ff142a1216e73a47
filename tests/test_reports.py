"""REC reports: from a real drill run checked field by field, numbering under concurrency, derived
改善点, the secret scan and masking, the compliance index, the manifest catching a changed report,
and the pytest plugin in a child session under pytest-xdist with pytest-html."""

from __future__ import annotations

import datetime as dt
import hashlib
import html
import json
import multiprocessing
import os
import re
import subprocess
import sys
from pathlib import Path

import jwt

from fixtures.engine.drill import DrillSettings, run_drill
from fixtures.stack.local import StackSecrets
from recovery.commands import run
from reports import markdown, numbering, session
from reports import rec as rec_module
from reports.i18n import duration
from reports.model import Artifact, CheckResult, DrillRecord, ProbeSummary, TimelineEvent
from reports.secrets_scan import MASK, scan_files, scan_text
from scenarios.drills import BACKEND_MASTER

PROJECT = Path(__file__).resolve().parents[1]
SEED_RUNBOOK = Path("/work/shared/seed/15_復旧手順(Recovery-Procedures).md")
T0 = dt.datetime(2026, 3, 9, 1, 0, 0, tzinfo=dt.UTC)


def at(seconds: float) -> str:
    return (T0 + dt.timedelta(seconds=seconds)).isoformat(timespec="milliseconds")


def sample_record(drill_id: str = "scenarios/test_x.py::test_sample", **changes: object) -> DrillRecord:
    """A complete record in the shape the drill suite writes (for the tests that need no stack)."""
    step = {
        "action": "service-auto-recover",
        "name": "attempt-1",
        "title": "復旧実行 (1/3)",
        "started_at": at(1.2),
        "ended_at": at(1.8),
        "seconds": 0.6,
        "status": "ok",
        "commands": [
            {
                "argv": ["supervisorctl", "restart", "mks-backend"],
                "returncode": 0,
                "seconds": 1.0,
                "stdout": "mks-backend: started",
                "stderr": "",
            }
        ],
        "details": {"health": "200"},
        "error": None,
    }
    record = DrillRecord(
        drill_id=drill_id,
        scenario="サービス停止テスト: mks-backend 強制終了",
        schedule=["weekly", "monthly", "quarterly"],
        level="RTO-1",
        runbook_section="サービス復旧手順 > 1. バックエンドサービス復旧 > 自動復旧",
        started_at=at(0),
        fault_at=at(1.0),
        recovered_at=at(3.4),
        ended_at=at(5.0),
        recovery_seconds=2.4,
        rto_target_seconds=3600.0,
        forecast_seconds=600.0,
        data_loss_rows=0,
        data_loss_seconds=0.0,
        verdict="passed",
        steps=[step],
        journals=[{"action": "service-auto-recover", "title": "自動復旧", "steps": [step]}],
        checks=[CheckResult("health", True, "HTTP 200"), CheckResult("login", True, "HTTP 200")],
        probe=ProbeSummary(0.1, 50, 0, 0.0, [(i * 0.1, True, 200, 4.0) for i in range(50)]),
        timeline=[
            TimelineEvent(0.0, at(0), "baseline", "ベースライン確認"),
            TimelineEvent(1.0, at(1.0), "fault", "障害注入"),
            TimelineEvent(1.1, at(1.1), "detected", "障害確認"),
            TimelineEvent(3.3, at(3.3), "step", "復旧実行"),
            TimelineEvent(3.4, at(3.4), "healthy", "復旧確認"),
            TimelineEvent(5.0, at(5.0), "verdict", "判定: passed"),
        ],
    )
    for key, value in changes.items():
        setattr(record, key, value)
    return record


def write_record(folder: Path, record: DrillRecord, name: str = "sample") -> Path:
    (folder / "records").mkdir(parents=True, exist_ok=True)
    path = folder / "records" / f"{name}.json"
    path.write_text(record.to_json(), encoding="utf-8")
    return path


# ---- a real drill, field by field -----------------------------------------------------------------


def test_rec_from_a_real_drill_run(stack, tmp_path):
    reports = tmp_path / "reports"
    drill_id = "tests/test_reports.py::real-backend-crash"
    record = run_drill(BACKEND_MASTER, stack, DrillSettings(reports_dir=reports), drill_id)
    source = reports / "records" / (re.sub(r"[^A-Za-z0-9_.-]", "_", drill_id) + ".json")
    assert source.is_file() and record.verdict == "passed"
    runbook = str(SEED_RUNBOOK) if SEED_RUNBOOK.is_file() else None

    summary = session.render_one(
        source, reports, lang="ja", run_id="test-run", secrets=stack.secrets.values(), runbook=runbook
    )
    year = int(record.started_at[:4])
    assert summary["rec_id"] == f"REC-{year}-001" and summary["scan_findings"] == 0
    md = (reports / summary["files"]["md"]).read_text(encoding="utf-8")
    page = (reports / summary["files"]["html"]).read_text(encoding="utf-8")
    document = json.loads((reports / summary["files"]["json"]).read_text(encoding="utf-8"))

    # the runbook's template, in its order, filled from the record
    expected = [
        f"## 復旧レポート: REC-{year}-001",
        "### 障害概要",
        f"- **発生日時**: {rec_module.when(record.fault_at, 'ja')}",
        f"- **復旧日時**: {rec_module.when(record.recovered_at, 'ja')}",
        f"- **復旧時間**: {duration(record.recovery_seconds, 'ja')}",
        "- **データ損失**: なし",
        "### 復旧手順",
        "### 改善点",
    ]
    positions = [md.index(line) for line in expected]
    assert positions == sorted(positions)
    steps = md.split("### 復旧手順\n", 1)[1].split("\n\n", 1)[0].splitlines()
    assert len(steps) == len(record.steps)
    for number, (line, step) in enumerate(zip(steps, record.steps, strict=True), 1):
        assert line.startswith(f"{number}. ") and step["title"] in line and "成功" in line
    for text in (
        record.scenario,
        "RTO-1 (復旧時間目標 1時間以内 / データ損失許容 最小限)",
        "毎週: 自動復旧テスト",
        record.runbook_section,
        record.fault["label"],
        str(record.fault["evidence"]),
    ):
        assert text in md and text in html.unescape(page)
    probe = record.probe
    assert probe is not None and probe.requests > 0
    assert (f"{probe.failed_requests}/{probe.requests} リクエスト" in md) == bool(probe.failed_requests)
    for check in record.checks:
        assert f"| {check.name} | ✅ |" in md
    assert f"カナリア書き込み {record.canary.committed} 件中 0 件消失" in md

    # the JSON form carries the same figures and the masked record
    assert document["summary"]["recovery_seconds"] == record.recovery_seconds
    assert document["summary"]["data_loss_rows"] == 0 and document["summary"]["verdict"] == "passed"
    assert document["record"]["timeline"] == [dict(vars(e)) for e in record.timeline]
    assert document["source"]["sha256"] == hashlib.sha256(source.read_bytes()).hexdigest()
    assert (reports / summary["files"]["record"]).read_bytes() == source.read_bytes()

    # environment: versions of this machine, the harness revision, the runbook's hash
    env = document["environment"]
    assert f"PostgreSQL) {stack.pg.install.major}" in env["postgresql"]
    assert env["nginx"].startswith("nginx/") and sys.version.split()[0] in env["python"]
    assert re.match(r"^[0-9a-f]{40}", env["harness_revision"])
    if runbook:
        assert env["runbook_sha256"] == hashlib.sha256(SEED_RUNBOOK.read_bytes()).hexdigest()

    # self-contained HTML: the timeline as inline SVG, a mark per phase, nothing fetched
    assert page.count("<svg") == 1 and 'class="mark-fault"' in page and 'class="mark-healthy"' in page
    assert page.count('class="step"') == len(record.steps)
    assert ('class="probe-fail"' in page) == bool(probe.failed_requests) and 'class="probe-ok"' in page
    assert not re.search(r"<script|<link|<img|\bsrc=|url\(|@import", page)
    for secret in stack.secrets.values():
        assert secret not in md + page + json.dumps(document)

    # English on request, same number (numbering is idempotent per record)
    english = rec_module.build(source, reports, lang="en", run_id="test-run", runbook=runbook)
    assert english.rec_id == summary["rec_id"]
    text = markdown.render(english)
    assert f"## Recovery report: REC-{year}-001" in text and "### Incident summary" in text
    assert f"- **Recovery time**: {duration(record.recovery_seconds, 'en')}" in text


# ---- numbering ------------------------------------------------------------------------------------


def _allocate_many(folder: str, worker: int, count: int) -> list[str]:
    return [
        numbering.allocate(Path(folder), 2026, f"{worker}-{i}", f"d{worker}", "r", "x")[0]
        for i in range(count)
    ]


def test_rec_numbers_never_collide_across_processes(tmp_path):
    context = multiprocessing.get_context("spawn")
    with context.Pool(4) as pool:
        results = pool.starmap(_allocate_many, [(str(tmp_path), w, 15) for w in range(4)])
    numbers = sorted(n for batch in results for n in batch)
    assert numbers == [f"REC-2026-{i:03d}" for i in range(1, 61)]
    # the same record keeps its number; another year counts on its own
    assert numbering.allocate(tmp_path, 2026, "0-0", "d0", "r", "x") == (results[0][0], False)
    assert numbering.allocate(tmp_path, 2027, "new", "d", "r", "x") == ("REC-2027-001", True)
    # a lost counter file never makes a number again: the highest REC on disk wins
    (tmp_path / "rec" / "REC-2026-075.html").write_text("")
    (tmp_path / "rec" / numbering.COUNTER_FILE).unlink()
    assert numbering.allocate(tmp_path, 2026, "later", "d", "r", "x") == ("REC-2026-076", True)


# ---- 改善点 ---------------------------------------------------------------------------------------


def test_improvements_are_derived_from_what_happened(tmp_path):
    clean = rec_module.build(write_record(tmp_path, sample_record()), tmp_path)
    assert clean.improvements == []
    assert "特記事項なし" in markdown.render(clean)

    troubled = sample_record(
        forecast_seconds=3300.0,
        data_loss_rows=3,
        data_loss_seconds=0.4,
        warnings=["stale pid file"],
        checks=[CheckResult("upload", False, "HTTP 500")],
        verdict="failed",
        failure_reason="post checks failed",
        probe=ProbeSummary(
            0.1, 40, 7, 0.8, [(i * 0.1, i > 6, 200 if i > 6 else None, 3.0) for i in range(40)]
        ),
        artifacts=[Artifact("logs/missing.log", "0" * 64, 10)],
    )
    troubled.steps = [
        *troubled.steps,
        {"name": "restore", "title": "pg_restore", "seconds": 400.0, "status": "ok"},
        {
            "name": "reload",
            "title": "nginx reload",
            "seconds": 0.1,
            "status": "failed",
            "error": "nginx: [emerg] bad config",
        },
    ]
    rec = rec_module.build(write_record(tmp_path, troubled, "troubled"), tmp_path)
    texts = "\n".join(f"{i.severity}: {i.text}" for i in rec.improvements)
    for expected in (
        "high: 不合格: post checks failed",
        "medium: 本番規模の予測復旧時間 55分 が目標 1時間 の 92%",
        "medium: 手順 2「pg_restore」に 6分40秒 (RTO の 11%)",
        "high: 手順 3「nginx reload」が失敗: nginx: [emerg] bad config",
        "high: データ損失 3 行, 0.40秒分のデータ が許容値 最小限 を超過",
        "medium: 可用性プローブで 7/40 リクエストが失敗",
        "high: 復旧後の確認「upload」が失敗: HTTP 500",
        "medium: 警告: stale pid file",
        "high: 成果物 logs/missing.log のハッシュが記録とファイルなし",
    ):
        assert expected in texts, texts


# ---- secrets ----------------------------------------------------------------------------------------


def test_seeded_secrets_are_caught_by_the_scan_and_masked_by_the_renderer(tmp_path):
    secrets = StackSecrets.generate()
    token = jwt.encode({"sub": "admin", "exp": 4102444800}, secrets.jwt_secret, algorithm="HS256")
    record = sample_record()
    step = record.steps[0]
    step["commands"][0]["stdout"] = (
        f"connected postgresql://mks:{secrets.app_password}@127.0.0.1/mks_db\n"
        f"Authorization: Bearer {token}\nPGPASSWORD={secrets.superuser_password}"
    )
    step["details"] = {"jwt_secret": secrets.jwt_secret, "login": {"password": secrets.admin_password}}
    record.warnings = [f"token {token} seen in the log"]
    record.failure_reason = "-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBg\n-----END PRIVATE KEY-----"
    source = write_record(tmp_path, record)

    findings = scan_files([source], secrets.values(), tmp_path)
    kinds = {f.kind for f in findings}
    assert {"known-secret", "jwt", "url-credentials", "bearer", "assignment", "private-key"} <= kinds
    assert all(s not in f.excerpt for f in findings for s in [*secrets.values(), token])
    # by shape alone (no known values), the JWT and the credentials are still found
    assert {"jwt", "url-credentials", "assignment"} <= {f.kind for f in scan_text(source.read_text(), "r")}

    summary = session.render_one(source, tmp_path, lang="ja", run_id="r", secrets=secrets.values())
    produced = [tmp_path / f for f in summary["files"].values()]
    assert summary["scan_findings"] == len(findings)  # the source record itself still holds them
    assert scan_files(produced, secrets.values(), tmp_path) == []
    html_text = produced[1].read_text(encoding="utf-8")
    assert MASK in html_text and token not in html_text and "postgresql://mks:********@" in html_text
    # even without the known values, the renderer masks every secret-shaped string
    blind = session.render_one(source, tmp_path / "blind", lang="en", run_id="r")
    assert scan_files([tmp_path / "blind" / f for f in blind["files"].values()], secrets.values()) == []


# ---- the run: compliance index and manifest -----------------------------------------------------


def _run_with_two_drills(reports: Path) -> session.RunResult:
    ok = write_record(reports, sample_record("scenarios/test_weekly.py::test_a"), "a")
    restore = sample_record(
        "scenarios/test_monthly.py::test_restore",
        level="RTO-4",
        verdict="failed",
        failure_reason="data differs",
        schedule=["monthly", "quarterly"],
        runbook_section="データ復旧手順 > 1. データベースバックアップからの復旧",
        data_loss_rows=12,
        data_loss_seconds=30.0,
        started_at=at(10),
    )
    failed = write_record(reports, restore, "b")
    ids = [session.render_one(p, reports, lang="ja", run_id="run-1")["rec_id"] for p in (ok, failed)]
    return session.finish_run(reports, "run-1", ids)


def test_compliance_index_lists_every_drill_with_what_it_evidences(tmp_path):
    result = _run_with_two_drills(tmp_path)
    md = result.index[0].read_text(encoding="utf-8")
    rows = [line for line in md.splitlines() if line.startswith("| [REC-")]
    assert len(rows) == 2
    assert (
        "[REC-2026-001](../../rec/REC-2026-001.html)" in rows[0]
        and "| 合格 | RTO-1 | 個別指定 | 2.40秒 (目標 1時間以内), 予測 10分 |" in rows[0]
    )
    assert "A.5.30" in rows[0] and "SOC 2 A1.3" in rows[0]
    assert "毎週" not in rows[0]  # not a catalogue drill: no schedule claimed (tests/test_evidence.py)
    assert "A.8.13" not in rows[0]
    assert (
        "| 不合格 | RTO-4 |" in rows[1] and "12 行, 30.0秒分のデータ" in rows[1] and "是正が必要" in rows[1]
    )
    assert result.entries[1].backup_related and "検出なし" in md
    page = result.index[1].read_text(encoding="utf-8")
    assert 'href="../../rec/REC-2026-002.html"' in page and "<script" not in page


def test_the_manifest_catches_a_changed_report(tmp_path):
    result = _run_with_two_drills(tmp_path)
    listed = result.manifest.read_text().splitlines()
    # per REC three forms and its copy of the record; the index twice; OSCAL results and plan, metrics,
    # the history page
    assert len(listed) == 2 * 4 + 2 + 4
    assert not any(" ../../records/" in line for line in listed)  # the drills' own files change per run
    verify = [sys.executable, "-m", "reports", "verify"]
    good = run([*verify, str(result.folder)], timeout=60, cwd=PROJECT, check=False)
    assert good.returncode == 0 and "OK" in good.stdout
    assert run(["sha256sum", "-c", "--quiet", result.manifest.name], timeout=30, cwd=result.folder).ok

    report = tmp_path / "rec" / "REC-2026-001.html"
    report.write_text(report.read_text(encoding="utf-8").replace("合格", "不合格", 1), encoding="utf-8")
    (tmp_path / "rec" / "REC-2026-002.md").unlink()
    bad = run([*verify, str(tmp_path)], timeout=60, cwd=PROJECT, check=False)  # a reports folder: every run
    assert bad.returncode == 1
    assert "CHANGED  ../../rec/REC-2026-001.html" in bad.stdout
    assert "MISSING  ../../rec/REC-2026-002.md" in bad.stdout


# ---- the pytest plugin, in a child session with xdist and pytest-html -----------------------------

CHILD_TESTS = """
import json, os, pathlib
RECORD = json.loads(os.environ["SAMPLE_RECORD"])

def _write(request, reports):
    record = dict(RECORD, drill_id=request.node.nodeid)
    folder = pathlib.Path(reports) / "records"
    folder.mkdir(parents=True, exist_ok=True)
    name = "".join(c if c.isalnum() else "_" for c in request.node.nodeid)
    (folder / f"{name}.json").write_text(json.dumps(record, ensure_ascii=False))

def test_drill_a(request, reports_dir): _write(request, reports_dir)
def test_drill_b(request, reports_dir): _write(request, reports_dir)
def test_drill_c(request, reports_dir): _write(request, reports_dir)
def test_drill_d(request, reports_dir): _write(request, reports_dir)
def test_not_a_drill(): pass
"""


def test_plugin_renders_every_record_of_a_session_under_xdist(tmp_path):
    (tmp_path / "test_child_drills.py").write_text(CHILD_TESTS)
    (tmp_path / "pytest.ini").write_text("[pytest]\n")
    reports = tmp_path / "out"
    env = {
        "SAMPLE_RECORD": sample_record().to_json(),
        "PYTHONPATH": str(PROJECT),
        "PYTHONDONTWRITEBYTECODE": "1",
    }
    argv = [
        sys.executable,
        "-m",
        "pytest",
        "-q",
        "-p",
        "no:cacheprovider",
        "-p",
        "fixtures.stack.plugin",
        "-p",
        "reports.pytest_plugin",
        "-n",
        "2",
        "--drill-reports",
        str(reports),
        "--html",
        str(tmp_path / "html" / "report.html"),
        "--self-contained-html",
        str(tmp_path),
    ]
    child = subprocess.run(
        argv, cwd=tmp_path, env={**os.environ, **env}, capture_output=True, text=True, timeout=180
    )
    assert child.returncode == 0, child.stdout + child.stderr
    assert "5 passed" in child.stdout and "REC reports" in child.stdout

    made = sorted(p.name for p in (reports / "rec").glob("REC-*[0-9].json"))
    assert made == [f"REC-2026-{i:03d}.json" for i in range(1, 5)]
    drills = {json.loads((reports / "rec" / n).read_text())["summary"]["drill_id"] for n in made}
    assert drills == {f"test_child_drills.py::test_drill_{x}" for x in "abcd"}
    (run_dir,) = (reports / "runs").iterdir()
    assert run([sys.executable, "-m", "reports", "verify", str(run_dir)], timeout=60, cwd=PROJECT).ok
    assert (run_dir / "compliance-index.md").read_text().count("| [REC-2026-") == 4

    page = (tmp_path / "html" / "report.html").read_text(encoding="utf-8")
    assert "<th>REC</th>" in page and "drill-summary" in page and "col-rec" in page
    assert page.count("../out/rec/REC-2026-00") >= 8  # the row link and the summary link of each drill
    assert "drill-timeline" in page and "mark-fault" in page

    # a later session (another run of drill a: a new record) numbers on; nothing else is rendered again
    env["SAMPLE_RECORD"] = sample_record(started_at=at(60), fault_at=at(61)).to_json()
    again = subprocess.run(
        [*argv[:-1], f"{tmp_path}/test_child_drills.py::test_drill_a"],
        cwd=tmp_path,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert again.returncode == 0, again.stdout + again.stderr
    assert sorted(p.name for p in (reports / "rec").glob("REC-*[0-9].json"))[-1] == "REC-2026-005.json"
    assert "REC-2026-005" in again.stdout and "REC-2026-001" not in again.stdout
