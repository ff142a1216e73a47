"""bench/flake_check.py finds every failure of a run in its JUnit file, with the reason, and sums a
flake budget up: every test that failed at least once, and each run's time and load."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from bench.flake_check import failures_in, flaky_tests, main, markdown, skipped_in

FLAKY = '''
def test_passes():
    pass

def test_fails():
    assert 1 == 2, "the reason it failed"

def test_errs(missing_fixture):
    pass
'''


def test_failures_and_errors_are_found_with_their_reasons(tmp_path: Path):
    (tmp_path / "test_sample.py").write_text(FLAKY)
    junit = tmp_path / "junit.xml"
    subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "-c", "/dev/null",
                    "--rootdir", str(tmp_path), str(tmp_path / "test_sample.py"), "--junitxml", str(junit)],
                   cwd=tmp_path, capture_output=True, timeout=120, check=False)
    count, failures = failures_in(junit)
    assert count == 3
    assert [(f["kind"], f["test"].rsplit("::", 1)[1]) for f in failures] == [("failure", "test_fails"),
                                                                              ("error", "test_errs")]
    assert "the reason it failed" in failures[0]["reason"]
    assert "missing_fixture" in failures[1]["reason"]


def _junit(path: Path, cases: str) -> Path:
    path.write_text(f'<?xml version="1.0" encoding="utf-8"?><testsuites><testsuite name="pytest">{cases}'
                    "</testsuite></testsuites>")
    return path


def test_the_budget_lists_every_test_that_failed_once_with_its_runs_and_each_run_s_time(tmp_path: Path):
    """The suite mode's summary, from JUnit files written here (no suite is run)."""
    passed = '<testcase classname="tests.test_a" name="test_ok"/>'
    skipped = '<testcase classname="tests.test_a" name="test_skip"><skipped message="no engine"/></testcase>'
    reason = "ServiceError: cannot reload nginx: it is not active (STARTING)"
    reload_race = ('<testcase classname="tests.test_probe_reload" name="test_reloads">'
                   f'<failure message="{reason}">trace</failure></testcase>')
    files = [_junit(tmp_path / "1.xml", passed + skipped + reload_race),
             _junit(tmp_path / "2.xml", passed + skipped + passed.replace("test_ok", "test_reloads")),
             _junit(tmp_path / "3.xml", passed + skipped + reload_race)]
    runs = []
    for number, junit in enumerate(files, 1):
        tests, failures = failures_in(junit)
        runs.append({"run": number, "hog": number == 3, "seconds": 600.0 + number, "pytest_seconds": 61.5,
                     "exit": 1 if failures else 0, "tests": tests, "skipped": skipped_in(junit),
                     "failures": failures})
    assert flaky_tests(runs) == {"tests.test_probe_reload::test_reloads": [(1, reason), (3, reason)]}
    text = markdown(runs, "Flake budget of the suite", {"commit": "abc123"})
    assert "- runs: 3 (1 under a CPU hog on one core); failed runs: 2; budget 0: missed" in text, text
    assert "| 2 | no | 10 min 2 s | 1 min 2 s | 3 | 1 | 0 | 0 |" in text, text
    assert "| 3 | yes | 10 min 3 s | 1 min 2 s | 3 | 1 | 1 | 1 |" in text, text
    assert f"| `tests.test_probe_reload::test_reloads` | 1, 3 | {reason} |" in text, text
    clean = markdown(runs[1:2], "Flake budget of the suite", {})
    assert "budget 0: met" in clean and "## Tests that failed at least once\n\nNone." in clean, clean


def test_a_cpu_hog_goes_with_the_suite_only():
    with pytest.raises(SystemExit) as refused:
        main(["-m", "weekly", "--hog"])
    assert refused.value.code == 2
