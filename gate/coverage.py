"""Which runbook sections the drills exercise, which the gate's block execution, which nothing.

The drill side is read from scenarios/ at run time, so drills added later count without touching the gate:
- the drill catalogue (scenarios/drills.py): every `Drill(name, scenario, level, schedule, runbook_section,
  ...)` found in its source, with runbook_section evaluated against the module's constants; every drill
  also runs the post checks (機能テスト, データ整合性確認);
- other tests in scenarios/: a static map from words in their file and test names to sections.
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass, field
from pathlib import Path

from gate.parser import Runbook
from gate.runner import PASSED, BlockOutcome

# words in a drill -> runbook section titles (or title fragments) it exercises
DRILL_KEYWORDS: tuple[tuple[str, tuple[str, ...]], ...] = (
    (r"auto.?recover|自動復旧|crash", ("自動復旧", "自動復旧スクリプト")),
    (r"manual.?recover|手動復旧|stuck|port", ("手動復旧",)),
    (r"service.?config|check_service_config", ("1. バックエンドサービス復旧 > 設定確認",)),
    (r"restart_database|database.?restart|connection|postgres.*(down|stop|kill)", ("接続確認", "再起動手順")),
    (r"config_check|pg.?config", ("2. データベース復旧 > 設定確認",)),
    (r"nginx|webserver|reload", ("3. Webサーバー復旧",)),
    (r"certificate|cert|ssl|tls", ("SSL証明書確認",)),
    (r"restore_database|database.?restore|db.?restore|backup", ("1. データベースバックアップからの復旧",)),
    (r"upload", ("2. アップロードファイル復旧",)),
    (r"config.?(restore|files)|git", ("3. 設定ファイル復旧",)),
    (r"migrat|new.?server|full.?recover|完全", ("1. 新規サーバーへの移行復旧", "完全復旧スクリプト")),
    (r"pitr|point.?in.?time", ("2. ポイントインタイムリカバリ",)),
    (r"performance|latency", ("パフォーマンス確認",)),
)


@dataclass
class SectionCoverage:
    section: str
    drills: list[str] = field(default_factory=list)
    executed: bool = False  # the gate ran at least one of its commands and it passed
    has_commands: bool = False

    @property
    def by(self) -> str:
        parts = []
        if self.drills:
            parts.append("drills")
        if self.executed:
            parts.append("gate")
        return " + ".join(parts) or "nothing"


def drill_names(scenarios: Path) -> dict[str, str]:
    """drill id (file::test) -> the words that describe it (names, markers, docstrings)."""
    found: dict[str, str] = {}
    for path in sorted(scenarios.glob("test_*.py")):
        try:
            tree = ast.parse(path.read_text(encoding="utf-8"))
        except SyntaxError:  # a drill being written right now
            continue
        module_words = f"{path.stem} {_first_line(ast.get_docstring(tree))}"
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.name.startswith("test_") \
                    and "drill_runner" not in {a.arg for a in node.args.args}:  # catalogue drills: see below
                words = f"{module_words} {node.name} {_first_line(ast.get_docstring(node))}"
                found[f"{path.name}::{node.name}"] = words
    return found


POST_CHECK_SECTIONS = ("復旧後の確認手順 > 1. 機能テスト", "復旧後の確認手順 > 3. データ整合性確認")


def catalogue(scenarios: Path) -> list[tuple[str, str, list[str]]]:
    """(drill name, schedule, runbook section patterns) of every Drill(...) in scenarios/drills.py."""
    path = scenarios / "drills.py"
    if not path.is_file():
        return []
    try:
        tree = ast.parse(path.read_text(encoding="utf-8"))
    except SyntaxError:
        return []
    constants: dict[str, object] = {}
    for node in tree.body:  # the module's plain string constants (SERVICE = "...")
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant) \
                and isinstance(node.value.value, str):
            constants.update({t.id: node.value.value for t in node.targets if isinstance(t, ast.Name)})
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "Drill" and len(node.args) >= 5:
            try:
                name, _, _, schedule, section = (_evaluate(a, constants) for a in node.args[:5])
            except ValueError:
                continue
            found.append((name, schedule, section_patterns(section)))
    return found


def _evaluate(node: ast.expr, constants: dict[str, object]) -> str:
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.JoinedStr):
        parts = []
        for value in node.values:
            if isinstance(value, ast.FormattedValue):
                parts.append(_evaluate(value.value, constants))
            else:
                parts.append(_evaluate(value, constants))
        return "".join(parts)
    if isinstance(node, ast.Name) and isinstance(constants.get(node.id), str):
        return str(constants[node.id])
    raise ValueError("not a constant string")


def section_patterns(section: str) -> list[str]:
    """"A > B > x / y" -> ["A > B > x", "A > B > y"]; "A / y" -> ["A", "y"]."""
    head, _, last = section.rpartition(" > ")
    return [f"{head} > {alt.strip()}" if head else alt.strip() for alt in last.split(" / ")]


def _covers(pattern: str, key: str, title: str) -> bool:
    """A full section path covers its subsections; a bare title covers only the section of that title."""
    return key == pattern or title == pattern or (" > " in pattern and key.startswith(pattern + " > "))


def coverage(runbook: Runbook, blocks: list[BlockOutcome], scenarios: Path) -> list[SectionCoverage]:
    drills = drill_names(scenarios) if scenarios.is_dir() else {}
    listed = catalogue(scenarios)
    result = []
    keys = [s.key for s in runbook.sections]
    for section in runbook.sections:
        is_parent = any(k.startswith(section.key + " > ") for k in keys)
        if (section.level < 3 or is_parent) and not section.blocks:
            continue
        entry = SectionCoverage(section.key, has_commands=bool(section.shell_blocks))
        for name, schedule, patterns in listed:
            covered = any(_covers(p, section.key, section.title) for p in patterns)
            if covered or section.key in POST_CHECK_SECTIONS:
                entry.drills.append(f"{name} ({schedule})")
        for drill, words in drills.items():
            for pattern, titles in DRILL_KEYWORDS:
                if re.search(pattern, words, re.IGNORECASE) and any(t in section.key for t in titles):
                    entry.drills.append(drill)
                    break
        entry.executed = any(b.section == section.key and any(c.status == PASSED for c in b.commands)
                             for b in blocks)
        result.append(entry)
    return result


def _first_line(doc: str | None) -> str:
    return doc.strip().splitlines()[0] if doc and doc.strip() else ""
