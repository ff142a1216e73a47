"""Evidence for auditors and their tools (issue 15): truthful schedule claims, the SQLite history
(concurrent writers in real processes, a foreign or newer file refused), trends, regressions and
overdue flags, Ed25519 signatures checked by `python -m reports verify`, OSCAL validated with
compliance-trestle's models, metrics parsed with prometheus_client's parser, and a real weekly drill
session run twice in a child pytest.

The unit tests use drill records in the shape the drill suite writes (tests/test_reports.py's
sample_record) instead of real drills; the last test runs real ones.
"""

from __future__ import annotations

import datetime as dt
import html
import json
import multiprocessing
import os
import re
import sqlite3
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families
from trestle.oscal.assessment_plan import AssessmentPlan
from trestle.oscal.assessment_results import AssessmentResults

from recovery.archives import sha256_file
from reports import history, oscal, schedules, session, signing
from reports.secrets_scan import scan_files
from scenarios.drills import BACKEND_MASTER, BACKEND_WORKERS, DB_RESTORE, FULL_RECOVERY
from tests import test_reports_browser as browser
from tests.test_reports import PROJECT, at, sample_record, write_record

NOW = dt.datetime(2026, 3, 12, 0, 0, tzinfo=dt.UTC)


def node(drill, kind: str = "weekly") -> str:
    return f"scenarios/test_drills.py::test_{kind}_drill[{drill.name}]"


def drill_record(drill, kind: str = "weekly", offset: float = 0.0, **changes):
    """A sample record of a catalogue drill, ending `offset` seconds after the sample's start."""
    base = {
        "scenario": drill.scenario,
        "schedule": drill.schedules(),
        "level": drill.level,
        "runbook_section": drill.runbook_section,
        "started_at": at(offset),
        "fault_at": at(offset + 1),
        "ended_at": at(offset + 5),
    }
    return sample_record(node(drill, kind), **{**base, **changes})


def close(
    reports: Path, run_id: str, records: list, markexpr: str | None = "weekly", **options
) -> session.RunResult:
    ids = []
    for n, record in enumerate(records):
        path = write_record(reports, record, f"{run_id}-{n}")
        ids.append(session.render_one(path, reports, lang="ja", run_id=run_id)["rec_id"])
    opts = session.RunOptions(markexpr=markexpr, now=options.pop("now", NOW), **options)
    return session.finish_run(reports, run_id, ids, options=opts)


def index_rows(result: session.RunResult) -> list[str]:
    return [
        line
        for line in result.index[0].read_text(encoding="utf-8").splitlines()
        if line.startswith("| [REC-")
    ]


# ---- schedule claims --------------------------------------------------------------------------------


def test_the_schedules_a_mark_expression_selects():
    assert schedules.selected(None) == ["weekly", "monthly", "quarterly"]
    assert schedules.selected("weekly") == ["weekly"]
    assert schedules.selected("quarterly and stack") == ["quarterly"]
    assert schedules.selected("weekly or monthly") == ["weekly", "monthly"]
    assert schedules.selected("not quarterly") == ["weekly", "monthly"]
    assert schedules.selected("runbook") == []
    assert schedules.selected(None, ad_hoc=True) == []  # test ids picked by hand: no schedule
    assert schedules.selected("weekly", ad_hoc=True) == ["weekly"]


def test_a_weekly_run_claims_the_weekly_schedule_only(tmp_path):
    result = close(tmp_path, "w1", [drill_record(BACKEND_MASTER), drill_record(BACKEND_WORKERS)])
    assert result.coverage.claimed == ["weekly"] and not result.coverage.partial
    rows = index_rows(result)
    assert len(rows) == 2
    for row in rows:
        cells = row.strip("| ").split(" | ")
        assert cells[4] == "毎週: 自動復旧テスト"  # ran under
        assert "復旧手順書 復旧テスト: 毎週: 自動復旧テスト" in cells[-1]
        assert "毎月" not in cells[-1] and "毎四半期" not in cells[-1]
    md = result.index[0].read_text(encoding="utf-8")
    assert "完全実行" in md and "| 毎週: 自動復旧テスト | 2 / 2 | - | - | あり |" in md
    quarterly = sum("quarterly" in drill.schedules() for drill in schedules.catalogue().values())
    assert f"| 毎四半期: 完全復旧テスト | 2 / {quarterly} |" in md
    assert "| 毎週: 自動復旧テスト | 7日ごと | 2026-03-12 00:00 UTC | 期限内 |" in md
    assert "| 毎月: コンポーネント復旧テスト | 31日ごと | 未実証 | 期限超過 |" in md
    pitr = (
        "| 完全システム復旧 > 2. ポイントインタイムリカバリ | 毎四半期: 完全復旧テスト (92日ごと) | 未実証 |"
    )
    assert pitr in md  # a section no drill has proven yet is listed, overdue


def test_a_partial_or_failed_run_claims_nothing_more(tmp_path):
    one = close(tmp_path / "k", "k1", [drill_record(BACKEND_MASTER)], ad_hoc=True)
    assert one.coverage.claimed == [] and one.coverage.partial and one.coverage.ad_hoc
    md = one.index[0].read_text(encoding="utf-8")
    assert "部分実行" in md and "毎週: 自動復旧テスト | 1 / 2 | backend-crash-workers |" in md
    assert "復旧手順書 復旧テスト" not in md

    failed = drill_record(BACKEND_WORKERS, verdict="failed", failure_reason="recovery failed")
    two = close(tmp_path / "f", "f1", [drill_record(BACKEND_MASTER), failed])
    assert two.coverage.claimed == [] and two.coverage.partial
    assert "| 毎週: 自動復旧テスト | 2 / 2 | - | backend-crash-workers | なし |" in two.index[0].read_text()

    # a quarterly run that only got as far as the weekly drills: weekly evidenced, the quarter not
    quarter = [drill_record(d, "quarterly") for d in (BACKEND_MASTER, BACKEND_WORKERS)]
    three = close(tmp_path / "q", "q1", [*quarter, drill_record(FULL_RECOVERY, "quarterly", 10)], "quarterly")
    assert three.coverage.claimed == ["weekly"] and three.coverage.partial
    assert three.coverage.ran_under == dict.fromkeys(three.coverage.ran_under, "quarterly")
    rows = index_rows(three)
    assert "| 毎四半期: 完全復旧テスト |" in rows[0] and "復旧テスト: 毎週: 自動復旧テスト" in rows[0]
    assert "復旧テスト: 毎四半期" not in "".join(rows)


# ---- history ----------------------------------------------------------------------------------------


def _result(
    run: str, n: int, seconds: float = 1.0, verdict: str = "passed", drill: str = "d"
) -> history.Result:
    return history.Result(
        run, f"REC-{n}", drill, "s", "sec", "weekly", "weekly", verdict, seconds, 0.5, 0, at(n), at(n + 1)
    )


def _write_many(path: str, writer: int, count: int) -> None:
    store = history.History(Path(path))
    for i in range(count):
        store.add_results([_result(f"run-{writer}", i), _result(f"run-{writer}", i + 1000)], writer)
    store.add_run(
        {"run_id": f"run-{writer}", "started_at": at(writer), "claimed": ["weekly"]},
        [_result(f"run-{writer}", 5000)],
        writer,
    )


def test_concurrent_writers_lose_nothing(tmp_path):
    """Six processes (as xdist workers and two sessions would) write into a new history at once."""
    path = tmp_path / "history.sqlite"
    context = multiprocessing.get_context("spawn")
    with context.Pool(6) as pool:
        pool.starmap(_write_many, [(str(path), w, 40) for w in range(6)])
    store = history.History(path)
    assert store.count() == 6 * (2 * 40 + 1)
    assert sorted(r["run_id"] for r in store.runs()) == [f"run-{w}" for w in range(6)]
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        assert db.execute("PRAGMA user_version").fetchone()[0] == history.SCHEMA_VERSION
    _write_many(str(path), 0, 3)  # the same rows again: written once
    assert store.count() == 6 * 81


@pytest.mark.parametrize("kind", ["newer", "foreign", "not-sqlite"])
def test_a_history_of_another_schema_is_refused_and_left_alone(tmp_path, kind):
    path = tmp_path / "history.sqlite"
    if kind == "not-sqlite":
        path.write_text("these are my notes\n" * 200)
    else:
        with sqlite3.connect(path) as db:
            db.execute("CREATE TABLE results (x)" if kind == "newer" else "CREATE TABLE notes (t TEXT)")
            if kind == "newer":
                db.execute("PRAGMA user_version = 9")
    before = path.read_bytes()
    with pytest.raises(history.HistoryError) as caught:
        history.History(path).add_results([_result("r", 1)], 1)
    expected = {
        "newer": "schema version 9 is newer",
        "foreign": "not a drill history (tables notes",
        "not-sqlite": "is not a drill history",
    }[kind]
    assert expected in str(caught.value) and "left as it is" in str(caught.value)
    assert path.read_bytes() == before

    # the run still gets its reports; the refusal is an error of the run, named
    result = close(tmp_path / "reports", "r1", [drill_record(BACKEND_MASTER)], history=path)
    assert result.errors and expected in result.errors[0] and result.index[1].is_file()
    assert path.read_bytes() == before


def test_regressions_against_the_median_of_the_last_five_passing_runs():
    earlier = [_result("r", n, s) for n, s in enumerate([10, 11, 12, 10, 11, 30])]  # the 30 drops out
    earlier.insert(2, _result("r", 99, 500, "failed"))  # failed runs do not count
    assert history.regression(_result("x", 100, 17.0), earlier[1:]) == 11
    assert history.regression(_result("x", 100, 16.0), earlier[1:]) is None
    assert history.regression(_result("x", 100, 17.0), earlier[1:], factor=2.0) is None
    assert history.regression(_result("x", 100, 99.0), earlier[:2]) is None  # too little history
    assert history.regression(_result("x", 100, 99.0, "failed"), earlier) is None


def test_trends_regressions_and_overdue_flags_in_the_index(tmp_path):
    for n, seconds in enumerate([2.0, 2.2, 2.1, 2.4, 2.0]):
        close(tmp_path, f"run-{n}", [drill_record(BACKEND_MASTER, offset=100 * n, recovery_seconds=seconds)])
    slow = close(
        tmp_path,
        "run-5",
        [drill_record(BACKEND_MASTER, offset=600, recovery_seconds=4.0)],
        regression_factor=1.5,
    )
    page = slow.index[1].read_text(encoding="utf-8")
    assert "回帰: 直近の合格 5 回の中央値 2.10秒 の 1.5 倍を超えました" in page
    trend = re.search(r'<svg class="trend".*?</svg>', page, re.S).group(0)
    assert trend.count('<circle class="recovery"') == 6 and 'stroke="#d64545"' in trend  # the flagged point
    relaxed = close(
        tmp_path,
        "run-6",
        [drill_record(BACKEND_MASTER, offset=700, recovery_seconds=4.0)],
        regression_factor=3,
    )
    assert "回帰" not in relaxed.index[1].read_text(encoding="utf-8")

    # the records ended on 2026-03-09: on the 12th the weekly section is on time, on the 20th overdue;
    # the weekly schedule was never evidenced (one of its two drills only)
    md = slow.index[0].read_text(encoding="utf-8")
    assert f"| {BACKEND_MASTER.runbook_section} | 毎週: 自動復旧テスト (7日ごと) | 2026-03-09 01:" in md
    assert "| 期限内 |" in md and "| 毎週: 自動復旧テスト | 7日ごと | 未実証 | 期限超過 |" in md
    later = close(
        tmp_path, "run-7", [drill_record(BACKEND_MASTER, offset=800)], now=NOW + dt.timedelta(days=8)
    )
    overdue = f"| {BACKEND_MASTER.runbook_section} | 毎週: 自動復旧テスト (7日ごと) | 2026-03-09 01:13 UTC |"
    overdue += " 期限超過 |"
    assert overdue in later.index[0].read_text(encoding="utf-8")
    history_page = (later.folder / "history.html").read_text(encoding="utf-8")
    assert history_page.count("<code>run-") >= 16 and "<script" not in history_page

    store = history.History(tmp_path / "history.sqlite")
    assert [r["run_id"] for r in store.runs()] == [f"run-{n}" for n in range(8)]
    assert len(store.results(node(BACKEND_MASTER))) == 8


def test_bad_settings_are_usage_errors(tmp_path):
    reports = tmp_path / "out"
    key, _ = signing.keygen(reports / "keys" / "drill.key")
    (tmp_path / "pytest.ini").write_text("[pytest]\n")
    base = [
        sys.executable,
        "-m",
        "pytest",
        "--co",
        "-q",
        "-p",
        "no:cacheprovider",
        "-p",
        "fixtures.stack.plugin",
        "-p",
        "reports.pytest_plugin",
        "--drill-reports",
        str(reports),
    ]
    env = {**os.environ, "PYTHONPATH": str(PROJECT), "PYTHONDONTWRITEBYTECODE": "1"}
    for extra, message in (
        (["--drill-signing-key", str(key)], "is inside the reports folder"),
        (["--drill-signing-key", str(tmp_path / "none.key")], "cannot read the signing key"),
        (["--drill-regression-factor", "fast"], "--drill-regression-factor must be a number above 0"),
    ):
        child = subprocess.run(
            [*base, *extra, str(tmp_path)], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120
        )
        assert child.returncode == 4 and message in child.stderr, child.stderr


# ---- signing and verify -----------------------------------------------------------------------------


def verify(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "reports", "verify", *args],
        cwd=PROJECT,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_keygen_makes_an_owner_only_key_and_never_overwrites(tmp_path):
    made = subprocess.run(
        [sys.executable, "-m", "reports", "keygen", str(tmp_path / "keys" / "drill.key")],
        cwd=PROJECT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert made.returncode == 0, made.stderr
    private = tmp_path / "keys" / "drill.key"
    assert stat.S_IMODE(private.stat().st_mode) == 0o600
    assert (tmp_path / "keys" / "drill.key.pub").read_text().startswith("-----BEGIN PUBLIC KEY-----")
    key = signing.load_private(private)
    assert f"fingerprint: {key.fingerprint}" in made.stdout and "PRIVATE" not in made.stdout
    again = subprocess.run(
        [sys.executable, "-m", "reports", "keygen", str(private)],
        cwd=PROJECT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert again.returncode == 2 and "exists already" in again.stderr
    with pytest.raises(signing.SigningError, match="inside the reports folder"):
        signing.load_private(private, tmp_path)


def test_verify_catches_a_changed_report_manifest_and_key(tmp_path):
    key_file, public = signing.keygen(tmp_path / "keys" / "drill.key")
    other, other_public = signing.keygen(tmp_path / "keys" / "other.key")
    key = signing.load_private(key_file)
    reports = tmp_path / "reports"
    result = close(
        reports, "s1", [drill_record(BACKEND_MASTER), drill_record(BACKEND_WORKERS)], signing_key=key
    )
    assert result.signature and result.signature.name == "MANIFEST.sha256.sig"

    good = verify(str(result.folder), "--public-key", str(public))
    assert (
        good.returncode == 0
        and f"VALID  MANIFEST.sha256: signature valid, key {key.fingerprint} (pinned)" in (good.stdout)
    )
    page = result.index[1].read_text(encoding="utf-8")
    assert key.fingerprint in page and public.read_text().strip().splitlines()[1] in page

    # the private key is in no artifact, and the scan knows it when it would be
    private_text = key_file.read_text()
    body = private_text.splitlines()[1]
    every = [p for p in reports.rglob("*") if p.is_file()]
    assert not [p for p in every if p.suffix != ".sqlite" and body in p.read_text(errors="replace")]
    leak = reports / "rec" / "leak.txt"
    leak.write_text(f"oops {body}\n")
    assert {f.kind for f in scan_files([leak], key.secrets(), reports)} == {"known-secret"}
    leak.unlink()

    # one word of a REC
    md = reports / "rec" / "REC-2026-001.md"
    original = md.read_text(encoding="utf-8")
    md.write_text(original.replace("合格", "不合格", 1), encoding="utf-8")
    changed = verify(str(result.folder), "--public-key", str(public))
    assert changed.returncode == 1 and "CHANGED  ../../rec/REC-2026-001.md" in changed.stdout
    md.write_text(original, encoding="utf-8")

    # the manifest itself: a line dropped, so every listed hash still matches
    manifest = result.manifest.read_text()
    result.manifest.write_text("".join(manifest.splitlines(keepends=True)[1:]))
    dropped = verify(str(result.folder))
    assert dropped.returncode == 1 and "INVALID  MANIFEST.sha256: signature does not match" in dropped.stdout
    result.manifest.write_text(manifest)

    # a wrong public key
    wrong = verify(str(result.folder), "--public-key", str(other_public))
    assert (
        wrong.returncode == 1
        and "MANIFEST.sha256.sig: signed by" in wrong.stdout
        and "wrong key" in wrong.stdout
    )

    # the same run re-signed by another key passes only unpinned, and says so
    signing.sign(result.manifest, signing.load_private(other))
    assert verify(str(result.folder), "--public-key", str(public)).returncode == 1
    assert "pin it with --public-key" in verify(str(result.folder)).stdout


def test_an_unsigned_run_is_marked_and_verify_says_so(tmp_path):
    _, public = signing.keygen(tmp_path / "drill.key")
    result = close(tmp_path / "reports", "u1", [drill_record(BACKEND_MASTER)])
    assert result.signature is None and "未署名" in result.index[1].read_text(encoding="utf-8")
    plain = verify(str(result.folder))
    assert plain.returncode == 0 and "UNSIGNED" in plain.stdout
    pinned = verify(str(result.folder), "--public-key", str(public))
    assert pinned.returncode == 1 and "UNSIGNED" in pinned.stdout and "FAILED" in pinned.stdout


# ---- OSCAL and metrics ------------------------------------------------------------------------------


def test_oscal_assessment_results_validate_and_link_their_evidence(tmp_path):
    restore = drill_record(DB_RESTORE, "monthly", 20, verdict="failed", failure_reason="data differs")
    result = close(tmp_path, "o1", [drill_record(BACKEND_MASTER), restore], "monthly")
    results_file, plan_file = result.outputs["oscal"], result.outputs["plan"]
    document = json.loads(results_file.read_text(encoding="utf-8"))
    parsed = AssessmentResults.parse_obj(document["assessment-results"])
    AssessmentPlan.parse_obj(json.loads(plan_file.read_text(encoding="utf-8"))["assessment-plan"])
    assert parsed.import_ap.href == plan_file.name

    (run,) = parsed.results
    assert len(run.observations) == 4  # two checks of each drill
    resources = {r.uuid: r for r in parsed.back_matter.resources}
    for observation in run.observations:
        for evidence in observation.relevant_evidence:
            (rlink,) = resources[evidence.links[0].href[1:]].rlinks
            assert rlink.href == evidence.href
            assert rlink.hashes[0].value == sha256_file(results_file.parent / evidence.href)
    states = {f.target.target_id: f.target.status.state.value for f in run.findings}
    # A.8.13 only from the backup drill, which failed
    assert states == {"A.5.30": "not-satisfied", "A.8.13": "not-satisfied", "A1.3": "not-satisfied"}
    backup = next(f for f in run.findings if f.target.target_id == "A.8.13")
    assert len(backup.related_observations) == 2
    assert "情報のバックアップ" not in results_file.read_text(encoding="utf-8")

    uuids = re.findall(r'"uuid": "([0-9a-f-]{36})"', results_file.read_text(encoding="utf-8"))
    # the document, its result, four observations, three findings, a resource per REC file
    assert len(uuids) == len(set(uuids)) == 1 + 1 + 4 + 3 + len(resources)
    # the same run gives the same documents
    again = oscal.build(
        "o1",
        [(session.load_rec(tmp_path, r.summary["rec_id"]), r.backup_related) for r in result.entries],
        result.folder,
        tmp_path,
    )
    assert again[0] == document

    passing = close(tmp_path / "p", "o2", [drill_record(BACKEND_MASTER)])
    doc = json.loads(passing.outputs["oscal"].read_text(encoding="utf-8"))["assessment-results"]
    assert {
        f["target"]["target-id"]: f["target"]["status"]["state"] for f in doc["results"][0]["findings"]
    } == {"A.5.30": "satisfied", "A1.3": "satisfied"}


def test_metrics_parse_with_prometheus_clients_parser(tmp_path):
    close(tmp_path, "m0", [drill_record(BACKEND_WORKERS, offset=0), drill_record(DB_RESTORE, "monthly", 0)])
    failed = drill_record(
        BACKEND_WORKERS, offset=100, verdict="failed", recovery_seconds=None, data_loss_rows=3
    )
    result = close(tmp_path, "m1", [drill_record(BACKEND_MASTER, offset=100, recovery_seconds=2.5), failed])
    text = result.outputs["metrics"].read_text()
    families = {f.name: f for f in text_string_to_metric_families(text)}
    value = {
        (f, s.labels["drill"]): s.value
        for f, fam in families.items()
        for s in fam.samples
        if "drill" in s.labels
    }
    assert families["mks_drill_run_info"].samples[0].labels == {"run_id": "m1"}
    master, workers = node(BACKEND_MASTER), node(BACKEND_WORKERS)
    assert value[("mks_drill_verdict", master)] == 1 and value[("mks_drill_verdict", workers)] == 0
    assert value[("mks_drill_recovery_seconds", master)] == 2.5
    assert ("mks_drill_recovery_seconds", workers) not in value
    assert value[("mks_drill_downtime_seconds", master)] == 0.0
    assert value[("mks_drill_data_loss_rows", workers)] == 3
    # the failed drill's last success is the earlier run's
    assert (
        value[("mks_drill_last_success_timestamp_seconds", workers)]
        == dt.datetime.fromisoformat(at(5)).timestamp()
    )
    assert (
        value[("mks_drill_last_success_timestamp_seconds", master)]
        == dt.datetime.fromisoformat(at(105)).timestamp()
    )
    assert next(iter(families["mks_drill_verdict"].samples)).labels["schedule"] == "weekly"
    # a drill not in this run: its last success still, no figures of this run
    restore = node(DB_RESTORE, "monthly")
    assert (
        value[("mks_drill_last_success_timestamp_seconds", restore)]
        == dt.datetime.fromisoformat(at(5)).timestamp()
    )
    assert ("mks_drill_verdict", restore) not in value
    assert (tmp_path / "metrics.prom").read_text() == text  # the latest run's copy for node_exporter


# ---- a real weekly session, twice ----------------------------------------------------------------------

CHILD = """
import pytest
from scenarios.drills import BACKEND_MASTER, BACKEND_WORKERS, param

@pytest.mark.parametrize("drill", [param(d) for d in (BACKEND_MASTER, BACKEND_WORKERS)])
def test_weekly_drill(drill, stack, drill_runner):
    assert drill_runner(drill, stack).verdict == "passed"
"""
MARKERS = "[pytest]\nmarkers =\n    weekly\n    monthly\n    quarterly\n    stack\n"


def test_two_real_weekly_sessions_make_a_history(tmp_path):
    (tmp_path / "test_child_weekly.py").write_text(CHILD)
    (tmp_path / "pytest.ini").write_text(MARKERS)
    reports, keys = tmp_path / "out", tmp_path / "keys"
    _, public = signing.keygen(keys / "drill.key")
    plugins = (
        "-q -p no:cacheprovider -p fixtures.stack.plugin -p fixtures.engine.plugin -p reports.pytest_plugin"
    )
    argv = [sys.executable, "-m", "pytest", *plugins.split(), "--drill-reports", str(reports)]
    argv += ["--drill-signing-key", str(keys / "drill.key"), "-m", "weekly", str(tmp_path)]
    env = {**os.environ, "PYTHONPATH": str(PROJECT), "PYTHONDONTWRITEBYTECODE": "1"}

    # the first under xdist: each worker writes the results it rendered into the history
    first = subprocess.run(
        [*argv, "-n", "2"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900
    )
    assert first.returncode == 0, first.stdout + first.stderr
    assert "claims: weekly; selected: weekly" in first.stdout
    with sqlite3.connect(reports / "history.sqlite") as db:
        writers = {pid for (pid,) in db.execute("SELECT written_by FROM results")}
    assert len(writers) == 2 and first.returncode == 0
    second = subprocess.run(
        [*argv, "-k", "master"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900
    )
    assert second.returncode == 0, second.stdout + second.stderr
    assert "claims: no schedule (partial run)" in second.stdout

    store = history.History(reports / "history.sqlite")
    runs = store.runs()
    assert len(runs) == 2 and runs[0]["claimed"] == ["weekly"] and runs[1]["claimed"] == []
    assert runs[1]["partial"] and runs[0]["harness_revision"] and runs[0]["provider"] == "local"
    assert len(runs[0]["runbook_sha256"]) == 64 and runs[0]["scale"] == "1" and runs[0]["app_profile"]
    master = store.results("test_child_weekly.py::test_weekly_drill[backend-crash-master]")
    assert [r.verdict for r in master] == ["passed", "passed"] and all(
        r.ran_under == "weekly" for r in master
    )
    assert all(r.recovery_seconds and r.recovery_seconds > 0 for r in master)

    folders = sorted((reports / "runs").iterdir(), key=lambda p: p.stat().st_mtime)
    latest = folders[-1] / "compliance-index.html"
    page = latest.read_text(encoding="utf-8")
    trend = re.search(r'<svg class="trend".*?</svg>', page, re.S).group(0)
    assert trend.count('<circle class="recovery"') == 2  # this run and the one before
    assert "部分実行" in page and "復旧手順書 復旧テスト: 毎週" not in page
    md = (folders[0] / "compliance-index.md").read_text(encoding="utf-8")
    assert md.count(
        "復旧手順書 復旧テスト: 毎週: 自動復旧テスト"
    ) == 2 and "毎四半期: 完全復旧テスト" not in (
        "".join(line for line in md.splitlines() if line.startswith("| [REC-"))
    )
    for folder in folders:
        checked = verify(str(folder), "--public-key", str(public))
        assert checked.returncode == 0 and "VALID" in checked.stdout, checked.stdout
        AssessmentResults.parse_obj(
            json.loads((folder / "assessment-results.json").read_text())["assessment-results"]
        )
        families = {f.name for f in text_string_to_metric_families((folder / "metrics.prom").read_text())}
        assert "mks_drill_last_success_timestamp_seconds" in families


def test_render_index_from_the_command_line_is_ad_hoc_and_can_sign(tmp_path):
    key, public = signing.keygen(tmp_path / "keys" / "drill.key")
    reports = tmp_path / "out"
    records = [write_record(reports, drill_record(d), d.name) for d in (BACKEND_MASTER, BACKEND_WORKERS)]
    made = subprocess.run(
        [sys.executable, "-m", "reports", "render", *map(str, records), "--index", "--signing-key", str(key)],
        cwd=PROJECT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert made.returncode == 0, made.stderr
    (folder,) = (reports / "runs").iterdir()
    md = (folder / "compliance-index.md").read_text(encoding="utf-8")
    # picked by hand: run under no schedule, but both weekly drills passed, so the weekly schedule holds
    assert (
        "選択された実施区分 (-m): なし (個別指定)" in md and "証跡とする実施区分: 毎週: 自動復旧テスト" in md
    )
    assert "部分実行" in md and "| 個別指定 |" in md
    checked = verify(str(folder), "--public-key", str(public))
    assert checked.returncode == 0 and "VALID" in checked.stdout


@pytest.mark.skipif(
    browser.CHROMIUM is None, reason="chromium is not installed (scripts/setup.sh installs it)"
)
def test_the_index_with_its_trends_renders_in_chromium(tmp_path):
    key = signing.load_private(signing.keygen(tmp_path / "keys" / "drill.key")[0])
    for n, seconds in enumerate([2.0, 2.3, 2.1]):
        runs = [
            drill_record(BACKEND_MASTER, offset=100 * n, recovery_seconds=seconds),
            drill_record(BACKEND_WORKERS),
        ]
        result = close(tmp_path / "out", f"run-{n}", runs, signing_key=key)
    dom = html.unescape(browser.chromium(tmp_path, "--dump-dom", result.index[1].as_uri()))
    assert dom.count('<svg class="trend"') == 2 and dom.count('class="recovery"') >= 4
    assert key.fingerprint in dom and "完全実行" in dom
    shot = tmp_path / "index.png"
    browser.chromium(
        tmp_path,
        "--window-size=1100,1600",
        "--hide-scrollbars",
        f"--screenshot={shot}",
        result.index[1].as_uri(),
    )
    width, _, pixels = browser.png_pixels(shot)
    assert width == 1100 and len(set(pixels)) > 100
