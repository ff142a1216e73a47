"""The run as NIST OSCAL Assessment Results (JSON), with the small assessment plan it imports.

One observation per post-recovery check of each drill, its evidence the drill's REC files (relative
path, and their SHA-256 in the back matter), with the drill's recovery time forecast (its point and
interval) as properties; one finding per control the run evidences
(ISO/IEC 27001:2022 A.5.30, A.8.13; SOC 2 A1.3: the IDs only), satisfied when every drill that
evidences it passed. UUIDs are uuid5 of the run id and what they name, and every time comes from
the records, so the same run gives the same documents. Written as plain JSON; the tests validate it
with compliance-trestle's OSCAL models.
"""

from __future__ import annotations

import json
import os
import uuid
from pathlib import Path
from typing import Any

from recovery.archives import sha256_file

RESULTS_FILE = "assessment-results.json"
PLAN_FILE = "assessment-plan.json"
OSCAL_VERSION = "1.1.2"
NS = "https://github.com/mks-drill/ns/oscal"
NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, NS)
CONTROLS = {  # control id -> the framework it belongs to (the standards' text is not reproduced)
    "A.5.30": "ISO/IEC 27001:2022",
    "A.8.13": "ISO/IEC 27001:2022",
    "A1.3": "SOC 2 (2017 TSC)",
}
BACKUP_CONTROL = "A.8.13"


def uid(run_id: str, *parts: str) -> str:
    return str(uuid.uuid5(NAMESPACE, "/".join((run_id, *parts))))


def controls_of(backup_related: bool) -> list[str]:
    return [c for c in CONTROLS if backup_related or c != BACKUP_CONTROL]


def _prop(name: str, value: str) -> dict[str, str]:
    return {"name": name, "ns": NS, "value": value}


def _metadata(title: str, when: str, run_id: str) -> dict[str, Any]:
    return {"title": title, "last-modified": when, "version": run_id, "oscal-version": OSCAL_VERSION}


def _reviewed(ids: list[str]) -> dict[str, Any]:
    return {"control-selections": [{"include-controls": [{"control-id": c} for c in ids]}]}


def forecast_props(summary: dict[str, Any], record: dict[str, Any]) -> list[dict[str, str]]:
    """The drill's recovery time forecast at production size on each of its observations: the point,
    the interval from the calibration's spread, and whether the interval's high end is within the
    target (what the verdict holds it to). None without a forecast."""
    point = record.get("forecast_seconds")
    if point is None:
        return []
    low, high = record.get("forecast_low_seconds"), record.get("forecast_high_seconds")
    low, high = (point if low is None else low), (point if high is None else high)
    target = summary.get("rto_target_seconds") or record.get("rto_target_seconds") or 0
    within = bool(target) and max(point, high) <= target
    return [_prop("forecast-seconds", f"{point:g}"), _prop("forecast-low-seconds", f"{low:g}"),
            _prop("forecast-high-seconds", f"{high:g}"),
            _prop("forecast-within-target", "true" if within else "false")]


def build(
    run_id: str, documents: list[tuple[dict[str, Any], bool]], folder: Path, reports_dir: Path
) -> tuple[dict[str, Any], dict[str, Any]]:
    """(assessment results, assessment plan) for the run's REC documents with their backup flag."""
    starts = sorted(d["record"].get("started_at") or d["record"].get("fault_at", "") for d, _ in documents)
    ends = sorted(d["record"].get("ended_at") or d["record"].get("fault_at", "") for d, _ in documents)
    start, end = (starts[0], ends[-1]) if documents else ("1970-01-01T00:00:00+00:00",) * 2
    reviewed = sorted({c for _, backup in documents for c in controls_of(backup)}, key=list(CONTROLS).index)
    resources, observations = [], []
    by_control: dict[str, list[tuple[str, bool]]] = {c: [] for c in reviewed}
    for document, backup in documents:
        summary, record = document["summary"], document["record"]
        rec_id = summary["rec_id"]
        evidence = []
        for form, relative in sorted(summary["files"].items()):
            path = reports_dir / relative
            resource = uid(run_id, "resource", rec_id, form)
            href = os.path.relpath(path, folder)
            rlink: dict[str, Any] = {"href": href}
            if path.is_file():
                rlink["hashes"] = [{"algorithm": "SHA-256", "value": sha256_file(path)}]
            resources.append({"uuid": resource, "title": f"{rec_id} ({form})", "rlinks": [rlink]})
            evidence.append(
                {
                    "href": href,
                    "description": f"{rec_id} {form}",
                    "links": [{"href": f"#{resource}", "rel": "evidence"}],
                }
            )
        passed = summary.get("verdict") == "passed"
        forecast = forecast_props(summary, record)
        for n, check in enumerate(record.get("checks", [])):  # a name may come twice
            ident = uid(run_id, "observation", rec_id, str(n), check["name"])
            observations.append(
                {
                    "uuid": ident,
                    "title": f"{rec_id}: {check['name']}",
                    "description": f"{summary.get('scenario', '')}: {check['name']}: "
                    f"{check.get('detail') or '-'}",
                    "props": [
                        _prop("result", "pass" if check["passed"] else "fail"),
                        _prop("drill-id", summary["drill_id"]),
                        _prop("drill-verdict", summary["verdict"]),
                        *forecast,
                    ],
                    "methods": ["TEST"],
                    "types": ["control-objective"],
                    "relevant-evidence": evidence,
                    "collected": record.get("ended_at") or end,
                }
            )
            for control in controls_of(backup):
                by_control[control].append((ident, passed))
        for control in controls_of(backup):
            if not record.get("checks"):  # a drill that stopped before its checks still counts, failed
                by_control[control].append(("", passed))
    findings = []
    for control in reviewed:
        related = by_control[control]
        satisfied = bool(related) and all(ok for _, ok in related)
        findings.append(
            {
                "uuid": uid(run_id, "finding", control),
                "title": f"{CONTROLS[control]} {control}",
                "description": f"{len({i for i, _ in related if i})} checks of the run's drills; "
                f"{'every drill passed' if satisfied else 'a drill failed: see its REC'}",
                "target": {
                    "type": "objective-id",
                    "target-id": control,
                    "props": [_prop("framework", CONTROLS[control])],
                    "status": {"state": "satisfied" if satisfied else "not-satisfied"},
                },
                "related-observations": [{"observation-uuid": i} for i, _ in related if i] or None,
            }
        )
        if findings[-1]["related-observations"] is None:
            del findings[-1]["related-observations"]
    system = uid(run_id, "resource", "system")
    plan = {
        "assessment-plan": {
            "uuid": uid(run_id, "plan"),
            "metadata": _metadata(f"Recovery drill plan, run {run_id}", end, run_id),
            "import-ssp": {"href": f"#{system}"},
            "reviewed-controls": _reviewed(reviewed or list(CONTROLS)),
            "back-matter": {
                "resources": [
                    {
                        "uuid": system,
                        "title": "The MKS system as the recovery runbook describes it (no SSP is kept)",
                    }
                ]
            },
        }
    }
    results = {
        "assessment-results": {
            "uuid": uid(run_id, "results"),
            "metadata": _metadata(f"Recovery drill results, run {run_id}", end, run_id),
            "import-ap": {"href": PLAN_FILE},
            "results": [
                {
                    "uuid": uid(run_id, "result"),
                    "title": f"Recovery drills, run {run_id}",
                    "description": f"{len(documents)} drills, "
                    f"{sum(d['summary'].get('verdict') == 'passed' for d, _ in documents)} passed",
                    "start": start,
                    "end": end,
                    "reviewed-controls": _reviewed(reviewed or list(CONTROLS)),
                    **({"observations": observations} if observations else {}),
                    **({"findings": findings} if findings else {}),
                }
            ],
            **({"back-matter": {"resources": resources}} if resources else {}),
        }
    }
    return results, plan


def write(
    run_id: str, documents: list[tuple[dict[str, Any], bool]], folder: Path, reports_dir: Path
) -> list[Path]:
    results, plan = build(run_id, documents, folder, reports_dir)
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for name, document in ((PLAN_FILE, plan), (RESULTS_FILE, results)):
        path = folder / name
        path.write_text(json.dumps(document, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
        out.append(path)
    return out
