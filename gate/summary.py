"""The gate's verdict table for a CI job summary (GitHub's $GITHUB_STEP_SUMMARY), from the JSON report:
the verdict, one row per procedure (its verdict, what it ran under, its defects by kind), then each
defect with its line and repair, as in the HTML report.

    python -m gate.summary reports/runbook-gate-15_復旧手順.json >> "$GITHUB_STEP_SUMMARY"
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from gate.findings import KINDS

MARK = {"passed": "✅", "failed": "❌"}


def job_summary(report: dict[str, Any]) -> str:
    cards = report.get("cards", [])
    passed = str(report.get("verdict", "")).startswith("PASSED")
    count = sum(len(c["findings"]) for c in cards)
    out = [f"## {MARK['passed' if passed else 'failed']} Runbook gate: {report.get('verdict', '?')}", "",
           f"`{Path(str(report.get('runbook', ''))).name}` · {report.get('seconds', 0):g} s · "
           f"{count} defect{'s' if count != 1 else ''}", "",
           "| procedure | verdict | ran under | defects |", "|---|---|---|---|"]
    for card in cards:
        kinds = [f"{n} {k}" for k in KINDS if (n := sum(1 for f in card["findings"] if f["kind"] == k))]
        out.append(f"| {_cell(card['procedure'])} | {MARK.get(card['verdict'], '')} {card['verdict']} | "
                   f"{_cell(card['ran_under'])} | {_cell(', '.join(kinds)) or '—'} |")
    defects = [(card["procedure"], f) for card in cards for f in card["findings"]]
    if defects:
        out += ["", "<details><summary>defects</summary>", ""]
        for procedure, f in defects:
            where = f"line {f['line']}" if f.get("line") else f["section"]
            behind = " (behind the first defect)" if f.get("behind_first") else ""
            out.append(f"- **{f['kind']}**{behind} · {procedure} · {where}: {_one_line(f['observed'])}  ")
            out.append(f"  repair: {_one_line(f['repair'])}")
        out += ["", "</details>"]
    return "\n".join(out) + "\n"


def _cell(text: str) -> str:
    return _one_line(text).replace("|", "\\|")


def _one_line(text: str, limit: int = 300) -> str:
    flat = " ".join(str(text).split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m gate.summary REPORT.json", file=sys.stderr)
        return 2
    try:
        report = json.loads(Path(args[0]).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        print(f"python -m gate.summary: {args[0]}: {exc}", file=sys.stderr)
        return 2
    sys.stdout.write(job_summary(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
