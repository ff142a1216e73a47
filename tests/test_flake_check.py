"""bench/flake_check.py finds every failure of a run in its JUnit file, with the reason."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from bench.flake_check import failures_in

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
