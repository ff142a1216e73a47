"""The gate proves itself by mutation, on real stacks: a handful of mutants here (each must be killed,
for the right reason); the whole set with --runbook-mutants."""

from __future__ import annotations

from pathlib import Path

import pytest

from gate.mutants import Mutant, run_mutants, write_mutation_report

pytestmark = [pytest.mark.runbook, pytest.mark.stack]

CORRECTED = Path(__file__).parent.parent / "docs/15_復旧手順(Recovery-Procedures).md"

# (how the mutant is recognised, what the gate must say when it kills it)
SAMPLE = (
    (lambda m: m.kind.startswith("newest -> oldest") and m.original.startswith("LATEST_BACKUP=$(ls -t"),
     "oracle newest backup restored"),
    (lambda m: m.kind == "command deleted"
     and m.original.startswith("pg_restore -U postgres -d mks_db_restore"), "リストア失敗"),
    (lambda m: m.kind == "recovery_target_time dropped", "oracle rows deleted by mistake are back"),
    (lambda m: m.kind.startswith("first -> last") and m.original.startswith("LATEST_UPLOADS=$(ls -t"),
     "oracle newest uploads backup restored"),
    (lambda m: m.kind == "script line deleted" and m.original.startswith("HEALTH_URL="),
     "oracle exit status tells the truth"),
)


def sample(mutant: Mutant) -> bool:
    return any(match(mutant) for match, _ in SAMPLE)


def test_a_sample_of_mutants_is_killed_for_the_right_reason(stack_factory, reports_dir):
    report = run_mutants(str(CORRECTED), stack_factory, reports_dir, select=sample)
    assert len(report.results) == len(SAMPLE)
    for result in report.results:
        expected = next(why for match, why in SAMPLE if match(result.mutant))
        assert result.killed, f"{result.mutant.ident} survived: {result.evidence}"
        evidence = result.evidence + " " + " ".join(result.details)
        assert expected in evidence, f"{result.mutant.ident}: killed, but by {result.evidence}"


def test_whole_mutation_self_test(pytestconfig, runbook_path, stack_factory, reports_dir):
    if not pytestconfig.getoption("runbook_mutants"):
        pytest.skip("the whole mutation self-test runs with --runbook-mutants")
    report = run_mutants(str(runbook_path), stack_factory, reports_dir)
    path = write_mutation_report(report, reports_dir)
    unexplained = [r for r in report.survivors if not r.mutant.display_only]
    assert report.score >= 0.9, "\n".join(report.lines()) + f"\nreport: {path}"
    print("\n".join(report.lines()), f"\n{len(unexplained)} survivors need a reason", f"\nreport: {path}")
