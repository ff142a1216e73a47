"""The words of the reports: Japanese (the runbook's language, default) and English.

Only the report's own words are translated; what a drill recorded (the scenario, the runbook's step
titles, command output) is shown as recorded.
"""

from __future__ import annotations

import math

LANGS = ("ja", "en")

TEXT: dict[str, dict[str, str]] = {
    "ja": {
        "title": "復旧レポート",
        "verdict": "判定",
        "passed": "合格",
        "failed": "不合格",
        "pending": "未確定",
        "summary": "障害概要",
        "scenario": "シナリオ",
        "level": "復旧レベル",
        "runbook_section": "復旧手順書の該当箇所",
        "schedule": "実施区分 (復旧テスト)",
        "drill_id": "ドリル ID",
        "fault_at": "発生日時",
        "recovered_at": "復旧日時",
        "recovery_time": "復旧時間",
        "data_loss": "データ損失",
        "none": "なし",
        "unknown": "未計測",
        "rows": "{n} 行",
        "seconds_of": "{t}分のデータ",
        "targets": "目標と実績",
        "item": "項目",
        "target": "目標",
        "achieved": "実績",
        "result": "結果",
        "rto_row": "復旧時間 (RTO)",
        "forecast_row": "本番規模の予測復旧時間",
        "rpo_row": "データ損失 (RPO)",
        "downtime_row": "利用者から見た停止時間",
        "within": "{t}以内",
        "of_rto": "RTO の {p}%",
        "forecast_interval": "範囲 {low}〜{high}",
        "probe_detail": "{failed}/{total} リクエスト失敗",
        "forecast_basis": "予測の根拠",
        "timeline": "可用性タイムライン",
        "availability": "可用性 (HTTP)",
        "offset": "経過",
        "event": "出来事",
        "kind": "種別",
        "steps": "復旧手順",
        "step_status": "状態",
        "duration": "所要時間",
        "commands": "実行コマンド",
        "checks": "復旧後の確認",
        "check": "確認項目",
        "detail": "詳細",
        "improvements": "改善点",
        "no_improvements": "特記事項なし (失敗・遅延・警告・データ損失はありませんでした)",
        "environment": "実施環境",
        "artifacts": "成果物 (SHA-256)",
        "path": "ファイル",
        "bytes": "サイズ (バイト)",
        "hash_ok": "一致",
        "hash_bad": "不一致",
        "hash_missing": "ファイルなし",
        "no_artifacts": "成果物はありません",
        "signoff": "承認",
        "signoff_roles": "実施者|確認者|承認者",
        "name": "氏名",
        "date": "日付",
        "signature": "署名",
        "generated": "作成日時",
        "failure_reason": "不合格の理由",
        "warnings": "警告",
        "kind_baseline": "ベースライン",
        "kind_fault": "障害発生",
        "kind_detected": "障害検知",
        "kind_step": "復旧手順",
        "kind_healthy": "正常化",
        "kind_check": "確認",
        "kind_verdict": "判定",
        "ok": "成功",
        "step_failed": "失敗",
        "skipped": "省略",
        "planned": "計画のみ",
        "source": "元の記録",
        "yes": "はい",
        "no": "いいえ",
        "index_title": "復旧テスト実施記録 (コンプライアンス索引)",
        "run": "実行",
        "evidences": "証跡となる管理策",
        "report": "レポート",
        "manifest": "マニフェスト",
        "verify_with": "改ざん検知: 次のコマンドで全成果物のハッシュを検証できます",
        "secret_scan": "秘密情報スキャン",
        "scan_clean": "検出なし ({n} ファイル)",
        "scan_found": "{n} 件検出",
        "drills": "ドリル",
        "no_drills": "この実行ではドリルは記録されませんでした",
        "fault": "障害内容",
        "fault_evidence": "障害の確認",
        "canary": "カナリア書き込み {committed} 件中 {lost} 件消失",
        "diffs": "ベースラインとの差異",
    },
    "en": {
        "title": "Recovery report",
        "verdict": "Verdict",
        "passed": "PASSED",
        "failed": "FAILED",
        "pending": "pending",
        "summary": "Incident summary",
        "scenario": "Scenario",
        "level": "Recovery level",
        "runbook_section": "Runbook section",
        "schedule": "Schedule (recovery tests)",
        "drill_id": "Drill id",
        "fault_at": "Failure at",
        "recovered_at": "Recovered at",
        "recovery_time": "Recovery time",
        "data_loss": "Data loss",
        "none": "none",
        "unknown": "not measured",
        "rows": "{n} rows",
        "seconds_of": "{t} of data",
        "targets": "Targets and achieved",
        "item": "Item",
        "target": "Target",
        "achieved": "Achieved",
        "result": "Result",
        "rto_row": "Recovery time (RTO)",
        "forecast_row": "Forecast recovery time at production size",
        "rpo_row": "Data loss (RPO)",
        "downtime_row": "Downtime seen by users",
        "within": "within {t}",
        "of_rto": "{p}% of the RTO",
        "forecast_interval": "interval {low} to {high}",
        "probe_detail": "{failed}/{total} requests failed",
        "forecast_basis": "Forecast basis",
        "timeline": "Availability timeline",
        "availability": "Availability (HTTP)",
        "offset": "Offset",
        "event": "Event",
        "kind": "Kind",
        "steps": "Recovery steps",
        "step_status": "Status",
        "duration": "Duration",
        "commands": "Commands",
        "checks": "Post-recovery checks",
        "check": "Check",
        "detail": "Detail",
        "improvements": "Improvements",
        "no_improvements": "Nothing to note (no failure, slow step, warning or data loss)",
        "environment": "Environment",
        "artifacts": "Artifacts (SHA-256)",
        "path": "File",
        "bytes": "Size (bytes)",
        "hash_ok": "matches",
        "hash_bad": "MISMATCH",
        "hash_missing": "missing",
        "no_artifacts": "No artifacts",
        "signoff": "Sign-off",
        "signoff_roles": "Performed by|Reviewed by|Approved by",
        "name": "Name",
        "date": "Date",
        "signature": "Signature",
        "generated": "Generated",
        "failure_reason": "Why it failed",
        "warnings": "Warnings",
        "kind_baseline": "baseline",
        "kind_fault": "failure",
        "kind_detected": "detected",
        "kind_step": "recovery step",
        "kind_healthy": "healthy again",
        "kind_check": "check",
        "kind_verdict": "verdict",
        "ok": "ok",
        "step_failed": "failed",
        "skipped": "skipped",
        "planned": "planned",
        "source": "Source record",
        "yes": "yes",
        "no": "no",
        "index_title": "Recovery test evidence (compliance index)",
        "run": "Run",
        "evidences": "Evidence for",
        "report": "Report",
        "manifest": "Manifest",
        "verify_with": "Tamper check: this command verifies the hash of every artifact",
        "secret_scan": "Secret scan",
        "scan_clean": "nothing found ({n} files)",
        "scan_found": "{n} findings",
        "drills": "Drills",
        "no_drills": "No drill was recorded in this run",
        "fault": "Injected failure",
        "fault_evidence": "Failure confirmed by",
        "canary": "canary: {lost} of {committed} committed rows lost",
        "diffs": "Differences from the baseline",
    },
}

SCHEDULE = {
    "ja": {
        "weekly": "毎週: 自動復旧テスト",
        "monthly": "毎月: コンポーネント復旧テスト",
        "quarterly": "毎四半期: 完全復旧テスト",
    },
    "en": {
        "weekly": "weekly: automatic recovery test",
        "monthly": "monthly: component recovery test",
        "quarterly": "quarterly: full recovery test",
    },
}


def words(lang: str) -> dict[str, str]:
    return TEXT[lang if lang in TEXT else "ja"]


def duration(seconds: float | None, lang: str) -> str:
    """A human duration: 0.42秒, 1分12秒, 2時間5分 (or 0.42 s, 1 min 12 s, 2 h 5 min)."""
    if seconds is None or (isinstance(seconds, float) and math.isnan(seconds)):
        return words(lang)["unknown"]
    ja = lang != "en"
    if seconds < 60:
        shown = f"{seconds:.2f}" if seconds < 10 else f"{seconds:.1f}"
        return f"{shown}秒" if ja else f"{shown} s"
    minutes, secs = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    if hours:
        if not minutes:
            return f"{hours}時間" if ja else f"{hours} h"
        return f"{hours}時間{minutes}分" if ja else f"{hours} h {minutes} min"
    if not secs:
        return f"{minutes}分" if ja else f"{minutes} min"
    return f"{minutes}分{secs}秒" if ja else f"{minutes} min {secs} s"


def loss_text(rows: int | None, seconds: float | None, lang: str) -> str:
    """データ損失 in words: unknown, none, or rows and the span of data lost."""
    w = words(lang)
    if rows is None and seconds is None:
        return w["unknown"]
    if not rows and not seconds:
        return w["none"]
    parts = [w["rows"].format(n=rows)] if rows else []
    if seconds:
        parts.append(w["seconds_of"].format(t=duration(seconds, lang)))
    return ", ".join(parts)


ENVIRONMENT = {
    "ja": {
        "os": "OS",
        "kernel": "カーネル",
        "python": "Python",
        "postgresql": "PostgreSQL",
        "nginx": "nginx",
        "harness_revision": "ハーネスのリビジョン",
        "runbook": "復旧手順書",
        "runbook_revision": "手順書のリビジョン",
        "runbook_sha256": "手順書の SHA-256",
        "host": "ホスト",
        "stack": "スタック",
        "scale": "シード規模",
        "provider": "スタック提供方式",
    },
    "en": {
        "os": "OS",
        "kernel": "Kernel",
        "python": "Python",
        "postgresql": "PostgreSQL",
        "nginx": "nginx",
        "harness_revision": "Harness revision",
        "runbook": "Runbook",
        "runbook_revision": "Runbook revision",
        "runbook_sha256": "Runbook SHA-256",
        "host": "Host",
        "stack": "Stack",
        "scale": "Seed scale",
        "provider": "Stack provider",
    },
}


def environment_label(key: str, lang: str) -> str:
    return ENVIRONMENT.get(lang, ENVIRONMENT["ja"]).get(key, key)


# the run's coverage, history, signature and machine-readable outputs (compliance index, history page)
EVIDENCE = {
    "ja": {
        "coverage": "この実行の対象",
        "selected": "選択された実施区分 (-m)",
        "all": "すべて",
        "none_selected": "なし (個別指定)",
        "claimed": "この実行が証跡とする実施区分",
        "claims_none": "なし",
        "partial": "部分実行: 選択した実施区分のすべてのドリルが実施・合格したわけではありません。"
        "証跡とするのは上記の実施区分だけです。",
        "complete": "完全実行: 選択した実施区分のすべてのドリルが実施され、合格しました。",
        "ad_hoc": "個別指定 (-k またはテスト ID) による実行です。",
        "schedule": "実施区分",
        "drills_ran": "実施 / 必要",
        "passed": "合格",
        "missing": "未実施",
        "failed": "不合格",
        "evidenced": "証跡",
        "yes": "あり",
        "no": "なし",
        "ran_under": "実施区分 (この実行)",
        "ad_hoc_drill": "個別指定",
        "trend": "推移",
        "regression": "回帰: 直近の合格 5 回の中央値 {m} の {f} 倍を超えました",
        "proven": "最終実証日",
        "section": "復旧手順書の該当箇所",
        "last": "最終実証",
        "overdue": "期限超過",
        "due": "期限",
        "partial_col": "部分実行",
        "state": "状態",
        "every": "{n}日ごと",
        "on_time": "期限内",
        "never": "未実証",
        "history": "履歴",
        "history_title": "復旧テストの履歴",
        "history_file": "履歴データベース",
        "runs": "実行",
        "run": "実行",
        "when": "日時",
        "signature": "署名",
        "signed": "この実行のマニフェストは Ed25519 で署名されています。",
        "unsigned": "未署名: 署名鍵 (--drill-signing-key) なしで実行されました。"
        "ハッシュは改ざんの検知にのみ使えます。",
        "public_key": "公開鍵",
        "fingerprint": "フィンガープリント",
        "machine": "機械可読な成果物",
        "oscal": "OSCAL Assessment Results",
        "plan": "OSCAL Assessment Plan",
        "metrics": "Prometheus メトリクス",
        "history_page": "履歴ページ",
        "drill": "ドリル",
    },
    "en": {
        "coverage": "What this run covered",
        "selected": "Schedules selected (-m)",
        "all": "all",
        "none_selected": "none (picked by hand)",
        "claimed": "Schedules this run evidences",
        "claims_none": "none",
        "partial": "Partial run: not every drill of the selected schedules ran and passed. "
        "It evidences only the schedules above.",
        "complete": "Complete run: every drill of the selected schedules ran and passed.",
        "ad_hoc": "The drills were picked by hand (-k or test ids).",
        "schedule": "Schedule",
        "drills_ran": "ran / required",
        "passed": "passed",
        "missing": "not run",
        "failed": "failed",
        "evidenced": "Evidenced",
        "yes": "yes",
        "no": "no",
        "ran_under": "Ran under",
        "ad_hoc_drill": "picked by hand",
        "trend": "Trend",
        "regression": "Regression: over {f} times the median {m} of the last five passing runs",
        "proven": "Last proven",
        "section": "Runbook section",
        "last": "Last proven",
        "overdue": "overdue",
        "due": "due",
        "partial_col": "partial",
        "state": "State",
        "every": "every {n} days",
        "on_time": "on time",
        "never": "never",
        "history": "History",
        "history_title": "Recovery test history",
        "history_file": "History database",
        "runs": "Runs",
        "run": "Run",
        "when": "When",
        "signature": "Signature",
        "signed": "This run's manifest is signed with Ed25519.",
        "unsigned": "Unsigned: the run had no signing key (--drill-signing-key). The hashes only show "
        "changes made after the manifest was written.",
        "public_key": "Public key",
        "fingerprint": "Fingerprint",
        "machine": "Machine-readable outputs",
        "oscal": "OSCAL Assessment Results",
        "plan": "OSCAL Assessment Plan",
        "metrics": "Prometheus metrics",
        "history_page": "History page",
        "drill": "Drill",
    },
}


def evidence_words(lang: str) -> dict[str, str]:
    return EVIDENCE[lang if lang in EVIDENCE else "ja"]
