#!/usr/bin/env bash
# The test command: set up what is missing, then run the harness's own tests and the drills.
# Extra arguments go to pytest, e.g.: bash scripts/test.sh -x -k stack
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$here/scripts/setup.sh"
cd "$here"
export PYTHONDONTWRITEBYTECODE=1
exec "${MKS_DRILL_VENV:-$here/.venv}/bin/python" -m pytest "$@"
