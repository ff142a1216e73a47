"""The drill record: everything a drill produced, in one JSON-able structure.

Drills (scenarios/, through fixtures/engine/drill.py) fill it; every report form (REC Markdown, HTML, the
JSON journal, the pytest-html row, the compliance index) is rendered from it and from nothing else.
Times are ISO 8601 in UTC; offsets are seconds from the drill's start.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

from recovery import levels

# the runbook's 復旧レベル定義 (recovery/levels.py): recovery time target and data loss allowed, in seconds
LEVELS = {
    level.name: {"rto_seconds": int(level.rto.total_seconds()),
                 "rpo_seconds": int(level.data_loss.total_seconds()), "loss_text": level.loss_text}
    for level in levels.LEVELS.values()
}


@dataclass
class TimelineEvent:
    offset_seconds: float
    at: str
    kind: str  # baseline | fault | detected | step | healthy | check | verdict
    label: str  # the runbook's words where it has them


@dataclass
class ProbeSummary:
    interval_seconds: float
    requests: int
    failed_requests: int
    downtime_seconds: float  # user-visible: first failure .. last failure before the final recovery
    samples: list[tuple[float, bool, int | None, float]] = field(default_factory=list)
    # (offset seconds, ok, HTTP status or None, latency ms)


@dataclass
class CanarySummary:
    """The canary writer's rows: committed before the fault, and found missing after the recovery."""

    interval_seconds: float
    committed: int  # rows whose COMMIT returned before the fault
    failed_writes: int
    first_committed_at: str = ""
    last_committed_at: str = ""
    lost_rows: int = 0
    lost_seconds: float = 0.0  # the fault time minus the commit time of the oldest lost row
    lost_ids: list[int] = field(default_factory=list)  # the first few, for the report


@dataclass
class CheckResult:
    name: str
    passed: bool
    detail: str = ""
    skipped: bool = False  # does not apply to this app (detail says why): neither passed nor failed


@dataclass
class Artifact:
    path: str  # relative to the reports folder
    sha256: str
    bytes: int


@dataclass
class DrillRecord:
    drill_id: str  # the pytest node id
    scenario: str  # 障害概要 in the runbook's words, e.g. "サービス停止テスト: mks-backend 強制終了"
    schedule: list[str]  # weekly | monthly | quarterly
    level: str  # RTO-1 | RTO-4 | RTO-24
    runbook_section: str  # e.g. "サービス復旧手順 > 1. バックエンドサービス復旧 > 自動復旧"
    started_at: str = ""
    fault_at: str = ""  # 発生日時
    recovered_at: str = ""  # 復旧日時: every post check passed
    ended_at: str = ""
    recovery_seconds: float | None = None  # 復旧時間, measured
    rto_target_seconds: float = 0.0
    forecast_seconds: float | None = None  # the recovery time forecast for the production size
    # its interval from the calibration's spread: the verdict holds the high end to the RTO
    forecast_low_seconds: float | None = None
    forecast_high_seconds: float | None = None
    forecast_basis: dict[str, Any] = field(default_factory=dict)
    data_loss_rows: int | None = None  # データ損失
    data_loss_seconds: float | None = None
    rpo_target_seconds: float = 0.0
    verdict: str = "pending"  # passed | failed
    failure_reason: str = ""
    steps: list[dict[str, Any]] = field(default_factory=list)  # recovery journal steps (recovery.journal)
    journals: list[dict[str, Any]] = field(default_factory=list)  # whole recovery journals
    checks: list[CheckResult] = field(default_factory=list)
    probe: ProbeSummary | None = None
    timeline: list[TimelineEvent] = field(default_factory=list)
    environment: dict[str, str] = field(default_factory=dict)
    artifacts: list[Artifact] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    findings: list[str] = field(default_factory=list)  # what the drill found wrong with the app itself
    # added by the drill suite
    fault: dict[str, Any] = field(default_factory=dict)  # injector, what it did, the evidence it bit
    canary: CanarySummary | None = None
    fingerprint_diffs: list[str] = field(default_factory=list)  # baseline vs after, canary excluded
    wall_seconds: float | None = None  # the whole drill, baseline to verdict

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), ensure_ascii=False, indent=2)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DrillRecord:
        data = dict(data)
        data["checks"] = [CheckResult(**c) for c in data.get("checks", [])]
        data["timeline"] = [TimelineEvent(**e) for e in data.get("timeline", [])]
        data["artifacts"] = [Artifact(**a) for a in data.get("artifacts", [])]
        if data.get("canary"):
            data["canary"] = CanarySummary(**data["canary"])
        if data.get("probe"):
            probe = dict(data["probe"])
            probe["samples"] = [tuple(s) for s in probe.get("samples", [])]
            data["probe"] = ProbeSummary(**probe)
        return cls(**data)
