"""The runbook's 復旧レベル定義, once: recovery time target and data loss allowed per level.

| レベル | 説明 | 復旧時間目標 | データ損失許容 |
is read by the drills' verdict and the reports (reports.model.LEVELS), the backups' age rule
(recovery.backups.max_age_for) and the CLI's --level choices.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass


@dataclass(frozen=True)
class Level:
    name: str
    description: str  # 説明
    rto: dt.timedelta  # 復旧時間目標
    rto_text: str
    data_loss: dt.timedelta  # データ損失許容 (RTO-1: none may be lost)
    loss_text: str

    @property
    def backup_max_age(self) -> dt.timedelta | None:
        """The oldest backup a restore may use: the data loss allowed. RTO-1 ("最小限") restores
        no backup by default, so it sets no age; the caller decides."""
        return self.data_loss or None


LEVELS: dict[str, Level] = {level.name: level for level in (
    Level("RTO-1", "1時間以内の復旧", dt.timedelta(hours=1), "1時間以内", dt.timedelta(0), "最小限"),
    Level("RTO-4", "4時間以内の復旧", dt.timedelta(hours=4), "4時間以内", dt.timedelta(hours=1), "1時間分"),
    Level("RTO-24", "24時間以内の復旧", dt.timedelta(hours=24), "24時間以内", dt.timedelta(days=1), "1日分"),
)}
NAMES = tuple(LEVELS)
