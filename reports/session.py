"""What a run does with its drill records: find them, render each into a REC, and close the run with
its compliance index, secret scan and manifest. Used by the pytest plugin and by the CLI."""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from reports import (
    compliance,
    environment,
    history_page,
    manifest,
    metrics,
    numbering,
    oscal,
    schedules,
    signing,
)
from reports import history as history_module
from reports.rec_files import render_file
from reports.secrets_scan import Finding, scan_files

log = logging.getLogger(__name__)

RECORDS_DIR = "records"
RUNS_DIR = "runs"


def new_run_id() -> str:
    return f"{dt.datetime.now(dt.UTC):%Y%m%dT%H%M%SZ}-{os.getpid()}"


def record_files(reports_dir: Path, since: float = 0.0) -> list[Path]:
    """Drill records in <reports>/records/ written at or after `since` (a time.time() value)."""
    folder = reports_dir / RECORDS_DIR
    if not folder.is_dir():
        return []
    found = []
    for path in folder.glob("*.json"):
        try:
            if path.stat().st_mtime >= since:
                found.append(path)
        except OSError:
            continue
    return sorted(found, key=lambda p: (p.stat().st_mtime, p.name))


def drill_id_of(path: Path) -> str | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data.get("drill_id") if isinstance(data, dict) else None


def rendered_sources(reports_dir: Path) -> set[str]:
    return {entry.record_sha256 for entry in numbering.read_ledger(reports_dir)}


def render_one(
    path: Path,
    reports_dir: Path,
    *,
    lang: str,
    run_id: str,
    secrets: Iterable[str] = (),
    runbook: str | None = None,
) -> dict[str, Any]:
    """Render one record and scan what was written (with the secrets known here); the REC's summary."""
    known = list(secrets)
    rec = render_file(path, reports_dir, lang=lang, run_id=run_id, known_secrets=known, runbook=runbook)
    files = [reports_dir / f for f in rec.files.values()] + [path]
    findings = scan_files(files, known, reports_dir)
    for finding in findings:
        log.error("secret-like text in %s:%d (%s)", finding.path, finding.line, finding.kind)
    return {**rec.summary(), "scan_findings": len(findings)}


@dataclass
class RunOptions:
    """What a run's close needs besides its RECs: the selection, the history, the signing key."""

    markexpr: str | None = None  # the run's -m
    ad_hoc: bool = False  # -k or node ids picked the drills
    history: Path | None = None  # default <reports>/history.sqlite
    regression_factor: float = history_module.REGRESSION_FACTOR
    signing_key: signing.SigningKey | None = None
    identity: dict[str, str] = field(default_factory=dict)  # provider, app_profile, scale
    started_at: str = ""
    runbook: str | None = None  # --drill-runbook, for the revision when no REC recorded it
    now: dt.datetime | None = None  # for overdue flags (tests fix it)


@dataclass
class RunResult:
    folder: Path
    manifest: Path
    index: list[Path]
    entries: list[compliance.Entry]
    findings: list[Finding] = field(default_factory=list)
    files: int = 0
    coverage: schedules.Coverage | None = None
    errors: list[str] = field(default_factory=list)  # history refused, ...
    signature: Path | None = None
    outputs: dict[str, Path] = field(default_factory=dict)  # oscal, plan, metrics, history page


def load_rec(reports_dir: Path, rec_id: str) -> dict[str, Any]:
    path = numbering.rec_folder(reports_dir) / f"{rec_id}.json"
    return json.loads(path.read_text(encoding="utf-8"))


def history_path(reports_dir: Path, configured: Path | None = None) -> Path:
    return configured if configured is not None else reports_dir / history_module.DEFAULT_NAME


def record_results(reports_dir: Path, run_id: str, recs: list[dict[str, Any]], options: RunOptions) -> None:
    """Write the results of RECs rendered in this process (an xdist worker, as each test ends)."""
    known = schedules.catalogue()
    chosen = schedules.selected(options.markexpr, options.ad_hoc)
    rows = []
    for rec in recs:
        ran = schedules.ran_under(schedules.drill_of(rec, known), chosen)
        rows.append(history_module.result_from(run_id, load_rec(reports_dir, rec["rec_id"]), ran))
    history_module.History(history_path(reports_dir, options.history)).add_results(rows, os.getpid())


IDENTITY = ("harness_revision", "runbook_revision", "runbook_sha256", "provider", "app_profile", "scale")


def run_identity(documents: list[dict[str, Any]], options: RunOptions) -> dict[str, str]:
    """What the run ran: as its RECs' environments recorded it (the first REC that says), else this
    machine and the run's settings."""
    found = {**environment.machine(options.runbook), **options.identity}
    out = {}
    for key in IDENTITY:
        recorded = [str(d.get("environment", {}).get(key) or "") for d in documents]
        out[key] = next((v for v in recorded if v), str(found.get(key) or ""))
    return out


def _history(
    reports_dir: Path,
    run_id: str,
    results: list[history_module.Result],
    coverage: schedules.Coverage,
    options: RunOptions,
    now: dt.datetime,
    documents: list[dict[str, Any]],
) -> compliance.HistoryView:
    store = history_module.History(history_path(reports_dir, options.history))
    started = (
        options.started_at or min((r.fault_at for r in results if r.fault_at), default="") or now.isoformat()
    )
    run = {
        "run_id": run_id,
        "started_at": started,
        "finished_at": now.isoformat(timespec="seconds"),
        **run_identity(documents, options),
        "markexpr": options.markexpr or "",
        "claimed": coverage.claimed,
        "partial": coverage.partial,
    }
    store.add_run(run, results, os.getpid())
    everything = store.results()
    series: dict[str, list[history_module.Result]] = {}
    for r in everything:
        series.setdefault(r.drill_id, []).append(r)
    regressions = {}
    for r in results:
        earlier = [e for e in series.get(r.drill_id, []) if e.run_id != run_id and e.ended_at < r.ended_at]
        median = history_module.regression(r, earlier, options.regression_factor)
        if median is not None:
            regressions[r.rec_id] = median
    last_success = {
        drill: max(r.ended_at for r in rows if r.verdict == "passed")
        for drill, rows in series.items()
        if any(r.verdict == "passed" for r in rows)
    }
    return compliance.HistoryView(
        series=series,
        regressions=regressions,
        factor=options.regression_factor,
        sections=history_module.last_proven_sections(
            everything, now, schedules.sections(schedules.catalogue())
        ),
        schedules=history_module.last_proven_schedules(store.runs(), now),
        runs=store.runs(),
        last_success=last_success,
        path=store.path,
    )


def finish_run(
    reports_dir: Path,
    run_id: str,
    rec_ids: list[str],
    *,
    lang: str = "ja",
    secrets: Iterable[str] = (),
    earlier_findings: int = 0,
    options: RunOptions | None = None,
) -> RunResult:
    """Write runs/<run id>/: the compliance index with the run's coverage, trends and last-proven
    dates, the history page, OSCAL results and plan, metrics, the manifest of every artifact of the
    run, and the manifest's signature when a key is given."""
    options = options or RunOptions()
    now = options.now or dt.datetime.now(dt.UTC)
    folder = reports_dir / RUNS_DIR / run_id
    entries, artifacts, scanned_only, documents = [], [], [], []
    for rec_id in dict.fromkeys(rec_ids):  # each once, in order
        document = load_rec(reports_dir, rec_id)
        summary = document["summary"]
        artifacts += [reports_dir / f for f in summary["files"].values()]
        # the drill's own files change with the next run of the drill: scanned, listed in the REC with
        # their hashes, but not in the run's manifest (the REC's copy of the record is)
        declared = [document["source"]["path"], *(a["path"] for a in document["record"].get("artifacts", []))]
        scanned_only += [reports_dir / p for p in declared if (reports_dir / p).is_file()]
        entries.append(compliance.Entry(summary, compliance.backup_related(document["record"])))
        documents.append(document)
    evidence = [
        (d, e)
        for d, e in zip(documents, entries, strict=True)
        if not compliance.is_self_test(e.summary.get("drill_id", ""))
    ]
    coverage = schedules.coverage([e.summary for _, e in evidence], options.markexpr, options.ad_hoc)
    for entry in entries:
        entry.ran_under = coverage.ran_under.get(entry.summary["rec_id"])
    results = [
        history_module.result_from(run_id, d, coverage.ran_under.get(d["summary"]["rec_id"]))
        for d in documents
    ]
    errors: list[str] = []
    try:
        view = _history(reports_dir, run_id, results, coverage, options, now, documents)
    except history_module.HistoryError as exc:
        errors.append(f"history: {exc}")
        view = compliance.HistoryView.alone(results, options.regression_factor, now)
    outputs = dict(
        zip(
            ("plan", "oscal"),
            oscal.write(run_id, [(d, e.backup_related) for d, e in evidence], folder, reports_dir),
            strict=True,
        )
    )
    measured = [r for r in results if not compliance.is_self_test(r.drill_id)]
    earlier = [rows[-1] for drill, rows in view.series.items() if not compliance.is_self_test(drill)]
    outputs["metrics"] = metrics.write(folder, measured, view.last_success, run_id, earlier)
    # the latest run's copy, where node_exporter's textfile collector can be pointed
    metrics.write(reports_dir, measured, view.last_success, run_id, earlier)
    outputs["history"] = history_page.write(view, run_id, lang, folder, reports_dir)
    key = options.signing_key
    signed = compliance.Signing(signing.public_pem(key.public), key.fingerprint) if key else None
    context = compliance.Context(coverage, view, signed, {k: p.name for k, p in outputs.items()})
    known = [*secrets, *(key.secrets() if key else [])]
    findings = scan_files([*artifacts, *scanned_only, *outputs.values()], known, reports_dir)
    total = earlier_findings + len(findings)
    scanned = len(artifacts) + len(scanned_only) + len(outputs) + 2
    index = compliance.write(entries, run_id, lang, folder, reports_dir, (scanned, total), context)
    findings += scan_files(index, known, reports_dir)
    listed = manifest.write(folder, [*artifacts, *index, *outputs.values()])
    signature = signing.sign(listed, key) if key else None
    for finding in findings:
        log.error("secret-like text in %s:%d (%s)", finding.path, finding.line, finding.kind)
    return RunResult(
        folder,
        listed,
        index,
        entries,
        findings,
        len(artifacts) + len(index) + len(outputs),
        coverage,
        errors,
        signature,
        outputs,
    )
