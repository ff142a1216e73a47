"""Procedure under drill: the data sections of a runbook run as the recovery of their drills (real stacks)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from gate import run_gate

pytestmark = [pytest.mark.runbook, pytest.mark.stack]

ORIGINAL = Path(__file__).parent / "data/runbook-original.md"
CORRECTED = Path(__file__).parent.parent / "docs/15_復旧手順(Recovery-Procedures).md"


def drilled_only(title: str) -> bool:
    wanted = os.environ.get("GATE_ONLY", "")
    return ("データベースバックアップ" in title or "アップロード" in title or "ポイントインタイム" in title) \
        and (not wanted or wanted in title)


@pytest.mark.parametrize("book", [CORRECTED, ORIGINAL], ids=["corrected", "original"])
def test_drilled_sections(book, stack_factory, reports_dir):
    result = run_gate(str(book), stack_factory, reports_dir, only=drilled_only)
    for p in result.procedures:
        print("\n==", p.title, p.mode, p.health.ok, p.seconds)
        for c in p.health.checks:
            print("   ", c)
        for x in p.health.problems:
            print("  !", x)
        for b in p.blocks:
            for c in b.commands:
                if c.status != "passed":
                    print("   cmd", c.line, c.status, c.original.splitlines()[0][:80], c.reason,
                          c.output[-300:])
