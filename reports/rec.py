"""One REC report per drill record: numbered, masked, and written as Markdown, HTML and JSON.

The runbook's 復旧レポート template (障害概要 / 復旧手順 / 改善点) is the skeleton; the extensions the
design asks for (targets against achieved, forecast, checks, timeline, environment, artifact hashes,
sign-off) follow it. 改善点 are derived from what the record shows happened.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from recovery.archives import sha256_file
from reports import environment, numbering, timeline
from reports.i18n import SCHEDULE, duration, loss_text, words
from reports.model import LEVELS, DrillRecord
from reports.secrets_scan import mask

FORMATS = ("md", "html", "json")
FORECAST_MARGIN = 0.8  # a forecast above this share of the RTO is "close to its limit"
DOMINANT_SHARE = 0.5  # a step taking this share of the recovery time dominates it
SLOW_RTO_SHARE = 0.1  # a step taking this share of the RTO is slow in itself
JST = dt.timezone(dt.timedelta(hours=9), "JST")

IMPROVE = {
    "ja": {
        "failed": "不合格: {reason}",
        "rto_exceeded": "復旧時間 {got} が目標 {target} を超過: 手順の短縮・自動化を検討",
        "forecast_over": "本番規模の予測復旧時間 {got} が目標 {target} を超過 ({p}%): 復旧方式の見直しが必要",
        "forecast_close": "本番規模の予測復旧時間 {got} が目標 {target} の {p}% に達する: 余裕が少ない",
        "no_forecast": "本番規模の予測復旧時間が未算出: 規模を変えた計測で予測を追加",
        "step_failed": "手順 {n}「{title}」が失敗: {error}",
        "step_dominant": "手順 {n}「{title}」が復旧時間の {p}% ({got}) を占める: 短縮を検討",
        "step_slow": "手順 {n}「{title}」に {got} (RTO の {p}%): 短縮を検討",
        "loss_over": "データ損失 {got} が許容値 {target} を超過: バックアップ頻度・WAL アーカイブの見直し",
        "loss": "データ損失 {got} (許容範囲内): バックアップ頻度の見直しを検討",
        "probe": "可用性プローブで {failed}/{total} リクエストが失敗 (利用者から見た停止 {got}): "
        "監視アラートと切替の調整を検討",
        "check_failed": "復旧後の確認「{name}」が失敗: {detail}",
        "warning": "警告: {text}",
        "finding": "発見事項: {text}",
        "check_skipped": "復旧後の確認「{name}」は対象外のため未実施: {detail}",
        "artifact": "成果物 {path} のハッシュが記録と{state}: 証跡の保全を確認",
    },
    "en": {
        "failed": "Failed: {reason}",
        "rto_exceeded": "Recovery time {got} exceeds the target {target}: shorten or automate the procedure",
        "forecast_over": "Forecast recovery time at production size {got} exceeds "
        "the target {target} ({p}%): "
        "the recovery method must change",
        "forecast_close": "Forecast recovery time at production size {got} reaches {p}% of the target "
        "{target}: little margin left",
        "no_forecast": "No forecast for the production size: measure at more scales to add one",
        "step_failed": 'Step {n} "{title}" failed: {error}',
        "step_dominant": 'Step {n} "{title}" takes {p}% of the recovery time ({got}): consider shortening it',
        "step_slow": 'Step {n} "{title}" takes {got} ({p}% of the RTO): consider shortening it',
        "loss_over": "Data loss {got} exceeds the allowance {target}: "
        "revisit backup frequency and WAL archiving",
        "loss": "Data loss {got} (within the allowance): consider more frequent backups",
        "probe": "{failed}/{total} probe requests failed (downtime seen by users {got}): tune monitoring "
        "alerts and failover",
        "check_failed": 'Post-recovery check "{name}" failed: {detail}',
        "warning": "Warning: {text}",
        "finding": "Finding: {text}",
        "check_skipped": 'Post-recovery check "{name}" skipped (does not apply): {detail}',
        "artifact": "Artifact {path}: hash {state} the record: check the evidence's custody",
    },
}


@dataclass
class Improvement:
    severity: str  # high | medium | info
    text: str


@dataclass
class RecReport:
    rec_id: str
    lang: str
    record: DrillRecord  # masked
    source_path: str
    source_sha256: str
    run_id: str
    generated_at: str
    environment: dict[str, str]
    artifact_state: dict[str, str]  # path -> ok | bad | missing
    improvements: list[Improvement]
    files: dict[str, str] = field(default_factory=dict)  # form -> path relative to the reports folder
    source_text: str = field(default="", repr=False)  # the record as read, kept beside the REC

    @property
    def rto(self) -> float:
        return self.record.rto_target_seconds or LEVELS.get(self.record.level, {}).get("rto_seconds", 0)

    @property
    def rpo(self) -> float:
        return self.record.rpo_target_seconds or LEVELS.get(self.record.level, {}).get("rpo_seconds", 0)

    def summary(self) -> dict[str, Any]:
        """The figures every index and table shows."""
        r = self.record
        return {
            "rec_id": self.rec_id,
            "drill_id": r.drill_id,
            "scenario": r.scenario,
            "level": r.level,
            "schedule": r.schedule,
            "verdict": r.verdict,
            "recovery_seconds": r.recovery_seconds,
            "rto_target_seconds": self.rto,
            "forecast_seconds": r.forecast_seconds,
            "forecast_low_seconds": r.forecast_low_seconds,
            "forecast_high_seconds": r.forecast_high_seconds,
            "data_loss_rows": r.data_loss_rows,
            "data_loss_seconds": r.data_loss_seconds,
            "rpo_target_seconds": self.rpo,
            "fault_at": r.fault_at,
            "recovered_at": r.recovered_at,
            "files": self.files,
        }


# ---- formatting shared by every form ------------------------------------------------------------
def when(value: str, lang: str) -> str:
    parsed = timeline.parse_time(value)
    if parsed is None:
        return value or words(lang)["unknown"]
    utc = parsed.astimezone(dt.UTC)
    if lang == "en":
        return utc.strftime("%Y-%m-%d %H:%M:%S UTC")
    return f"{parsed.astimezone(JST):%Y-%m-%d %H:%M:%S} JST ({utc:%H:%M:%S} UTC)"


def data_loss(record: DrillRecord, lang: str) -> str:
    return loss_text(record.data_loss_rows, record.data_loss_seconds, lang)


def allowance(seconds: float, record: DrillRecord, lang: str) -> str:
    if seconds == 0:
        return LEVELS.get(record.level, {}).get("loss_text", "0") if lang == "ja" else "none (minimal)"
    return words(lang)["within"].format(t=duration(seconds, lang))


def forecast_worst(record: DrillRecord) -> float:
    """What the verdict holds to the RTO: the interval's high end, the point where there is none."""
    point = record.forecast_seconds or 0.0
    return point if record.forecast_high_seconds is None else max(point, record.forecast_high_seconds)


def forecast_interval(record: DrillRecord, lang: str) -> str:
    low = record.forecast_low_seconds if record.forecast_low_seconds is not None else record.forecast_seconds
    return words(lang)["forecast_interval"].format(low=duration(low, lang),
                                                   high=duration(record.forecast_high_seconds, lang))


def targets(rec: RecReport) -> list[tuple[str, str, str, bool | None]]:
    """(item, target, achieved, met) rows of 目標と実績."""
    r, lang, w = rec.record, rec.lang, words(rec.lang)
    within = w["within"].format(t=duration(rec.rto, lang))
    rows: list[tuple[str, str, str, bool | None]] = []
    met = None if r.recovery_seconds is None else r.recovery_seconds <= rec.rto
    rows.append((w["rto_row"], within, duration(r.recovery_seconds, lang), met))
    if r.forecast_seconds is not None:
        share = round(100 * r.forecast_seconds / rec.rto) if rec.rto else 0
        got = f"{duration(r.forecast_seconds, lang)} ({w['of_rto'].format(p=share)})"
        if r.forecast_high_seconds is not None:
            got += ", " + forecast_interval(r, lang)
        rows.append((w["forecast_row"], within, got, forecast_worst(r) <= rec.rto))
    else:
        rows.append((w["forecast_row"], within, w["unknown"], None))
    loss_known = r.data_loss_rows is not None or r.data_loss_seconds is not None
    loss_ok = (r.data_loss_seconds or 0) <= rec.rpo and (rec.rpo > 0 or not r.data_loss_rows)
    got = data_loss(r, lang)
    if r.canary is not None:
        got += f" ({w['canary'].format(committed=r.canary.committed, lost=r.canary.lost_rows)})"
    rows.append((w["rpo_row"], allowance(rec.rpo, r, lang), got, loss_ok if loss_known else None))
    if r.probe:
        failed = w["probe_detail"].format(failed=r.probe.failed_requests, total=r.probe.requests)
        got = f"{duration(r.probe.downtime_seconds, lang)} ({failed})"
        rows.append((w["downtime_row"], "—", got, None))
    return rows


def derive_improvements(rec: RecReport) -> list[Improvement]:
    r, lang = rec.record, rec.lang
    say = IMPROVE[lang if lang in IMPROVE else "ja"]
    found: list[Improvement] = []
    if r.verdict == "failed" and r.failure_reason:
        found.append(Improvement("high", say["failed"].format(reason=r.failure_reason)))
    if r.recovery_seconds is not None and rec.rto and r.recovery_seconds > rec.rto:
        found.append(
            Improvement(
                "high",
                say["rto_exceeded"].format(
                    got=duration(r.recovery_seconds, lang), target=duration(rec.rto, lang)
                ),
            )
        )
    if r.forecast_seconds is not None and rec.rto:
        share = forecast_worst(r) / rec.rto
        key = "forecast_over" if share > 1 else "forecast_close" if share > FORECAST_MARGIN else ""
        if key:
            got = duration(r.forecast_seconds, lang)
            if r.forecast_high_seconds is not None:
                got += f" ({forecast_interval(r, lang)})"
            found.append(
                Improvement(
                    "high" if share > 1 else "medium",
                    say[key].format(
                        got=got,
                        target=duration(rec.rto, lang),
                        p=round(100 * share),
                    ),
                )
            )
    elif r.forecast_seconds is None:
        found.append(Improvement("info", say["no_forecast"]))
    for number, step in enumerate(timeline.steps_of(r), 1):
        title, seconds = timeline.step_title(r, step), float(step.get("seconds") or 0)
        if step.get("status") == "failed":
            found.append(
                Improvement(
                    "high", say["step_failed"].format(n=number, title=title, error=step.get("error") or "?")
                )
            )
        elif rec.rto and seconds >= SLOW_RTO_SHARE * rec.rto:
            found.append(
                Improvement(
                    "medium",
                    say["step_slow"].format(
                        n=number, title=title, got=duration(seconds, lang), p=round(100 * seconds / rec.rto)
                    ),
                )
            )
        elif r.recovery_seconds and seconds >= 1.0 and seconds >= DOMINANT_SHARE * r.recovery_seconds:
            found.append(
                Improvement(
                    "info",
                    say["step_dominant"].format(
                        n=number,
                        title=title,
                        got=duration(seconds, lang),
                        p=round(100 * seconds / r.recovery_seconds),
                    ),
                )
            )
    if r.data_loss_rows or r.data_loss_seconds:
        over = (r.data_loss_seconds or 0) > rec.rpo or (rec.rpo == 0 and bool(r.data_loss_rows))
        found.append(
            Improvement(
                "high" if over else "medium",
                say["loss_over" if over else "loss"].format(
                    got=data_loss(r, lang), target=allowance(rec.rpo, r, lang)
                ),
            )
        )
    if r.probe and r.probe.failed_requests:
        found.append(
            Improvement(
                "medium",
                say["probe"].format(
                    failed=r.probe.failed_requests,
                    total=r.probe.requests,
                    got=duration(r.probe.downtime_seconds, lang),
                ),
            )
        )
    for check in r.checks:
        if check.skipped:
            text = say["check_skipped"].format(name=check.name, detail=check.detail)
            found.append(Improvement("info", text))
        elif not check.passed:
            found.append(
                Improvement("high", say["check_failed"].format(name=check.name, detail=check.detail))
            )
    for text in r.warnings:
        found.append(Improvement("medium", say["warning"].format(text=text)))
    for text in r.findings:
        found.append(Improvement("medium", say["finding"].format(text=text)))
    w = words(lang)
    for path, state in rec.artifact_state.items():
        if state != "ok":
            found.append(Improvement("high", say["artifact"].format(path=path, state=w[f"hash_{state}"])))
    return found


def fault_facts(record: DrillRecord, lang: str) -> list[tuple[str, str]]:
    """障害内容 and how the drill confirmed it bit, when the drill recorded them."""
    w, fault = words(lang), record.fault or {}
    facts = []
    if fault.get("label"):
        facts.append((w["fault"], f"{fault['label']} ({fault.get('injector', '')})"))
    if fault.get("evidence"):
        facts.append((w["fault_evidence"], str(fault["evidence"])))
    return facts


def schedule_text(record: DrillRecord, lang: str) -> str:
    names = SCHEDULE.get(lang, SCHEDULE["ja"])
    return ", ".join(names.get(s, s) for s in record.schedule) or "—"


def level_text(record: DrillRecord, lang: str) -> str:
    level = LEVELS.get(record.level)
    if not level:
        return record.level
    rto = duration(level["rto_seconds"], lang)
    loss = level["loss_text"] if lang == "ja" else allowance(level["rpo_seconds"], record, lang)
    if lang == "ja":
        return f"{record.level} (復旧時間目標 {rto}以内 / データ損失許容 {loss})"
    return f"{record.level} (recovery within {rto}; data loss allowed: {loss})"


# ---- building and writing ------------------------------------------------------------------------
def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def check_artifacts(record: DrillRecord, reports_dir: Path) -> dict[str, str]:
    state = {}
    for artifact in record.artifacts:
        path = reports_dir / artifact.path
        if not path.is_file():
            state[artifact.path] = "missing"
        else:
            state[artifact.path] = "ok" if sha256_file(path) == artifact.sha256 else "bad"
    return state


def build(
    record_path: Path,
    reports_dir: Path,
    *,
    lang: str = "ja",
    run_id: str = "",
    known_secrets: Iterable[str] = (),
    runbook: str | None = None,
) -> RecReport:
    """Number the record (idempotent) and make its masked report view; nothing written but the ledger."""
    raw = record_path.read_bytes()
    data = json.loads(raw)
    secrets = list(known_secrets)
    record = DrillRecord.from_dict(mask(data, secrets))
    source_sha = sha256_bytes(raw)
    try:
        shown = str(record_path.resolve().relative_to(reports_dir.resolve()))
    except ValueError:
        shown = record_path.name
    now = dt.datetime.now(dt.UTC)
    year = numbering.year_of(record.started_at or record.fault_at, now.year)
    rec_id, _ = numbering.allocate(reports_dir, year, source_sha, record.drill_id, run_id, shown)
    rec = RecReport(
        rec_id=rec_id,
        lang=lang,
        record=record,
        source_path=shown,
        source_sha256=source_sha,
        source_text=raw.decode("utf-8", errors="replace"),
        run_id=run_id,
        generated_at=now.isoformat(timespec="seconds"),
        environment=mask(environment.complete(record.environment, runbook), secrets),
        artifact_state=check_artifacts(record, reports_dir),
        improvements=[],
    )
    rec.improvements = derive_improvements(rec)
    return rec


def to_json(rec: RecReport) -> str:
    document = {
        "rec_id": rec.rec_id,
        "lang": rec.lang,
        "generated_at": rec.generated_at,
        "run_id": rec.run_id,
        "source": {"path": rec.source_path, "sha256": rec.source_sha256},
        "summary": rec.summary(),
        "improvements": [{"severity": i.severity, "text": i.text} for i in rec.improvements],
        "environment": rec.environment,
        "artifact_state": rec.artifact_state,
        "record": rec.record.to_dict(),
    }
    return json.dumps(document, ensure_ascii=False, indent=2)
