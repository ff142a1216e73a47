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

from reports import compliance, manifest, numbering
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
class RunResult:
    folder: Path
    manifest: Path
    index: list[Path]
    entries: list[compliance.Entry]
    findings: list[Finding] = field(default_factory=list)
    files: int = 0


def load_rec(reports_dir: Path, rec_id: str) -> dict[str, Any]:
    path = numbering.rec_folder(reports_dir) / f"{rec_id}.json"
    return json.loads(path.read_text(encoding="utf-8"))


def finish_run(
    reports_dir: Path,
    run_id: str,
    rec_ids: list[str],
    *,
    lang: str = "ja",
    secrets: Iterable[str] = (),
    earlier_findings: int = 0,
) -> RunResult:
    """Write runs/<run id>/: the compliance index and the manifest of every artifact of the run."""
    folder = reports_dir / RUNS_DIR / run_id
    entries, artifacts, scanned_only = [], [], []
    for rec_id in dict.fromkeys(rec_ids):  # each once, in order
        document = load_rec(reports_dir, rec_id)
        summary = document["summary"]
        artifacts += [reports_dir / f for f in summary["files"].values()]
        # the drill's own files change with the next run of the drill: scanned, listed in the REC with
        # their hashes, but not in the run's manifest (the REC's copy of the record is)
        declared = [document["source"]["path"], *(a["path"] for a in document["record"].get("artifacts", []))]
        scanned_only += [reports_dir / p for p in declared if (reports_dir / p).is_file()]
        entries.append(compliance.Entry(summary, compliance.backup_related(document["record"])))
    known = list(secrets)
    findings = scan_files([*artifacts, *scanned_only], known, reports_dir)
    total = earlier_findings + len(findings)
    scanned = len(artifacts) + len(scanned_only) + 2
    index = compliance.write(entries, run_id, lang, folder, reports_dir, (scanned, total))
    findings += scan_files(index, known, reports_dir)
    listed = manifest.write(folder, [*artifacts, *index])
    for finding in findings:
        log.error("secret-like text in %s:%d (%s)", finding.path, finding.line, finding.kind)
    return RunResult(folder, listed, index, entries, findings, len(artifacts) + len(index))
