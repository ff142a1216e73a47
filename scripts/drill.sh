#!/usr/bin/env bash
# The main job: the recovery drills on the embedded stack, writing reports to reports/out.
# Default marker: quarterly (the full schedule); pass another, e.g.: bash scripts/drill.sh weekly
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
marker="${1:-quarterly}"
shift || true
bash "$here/scripts/setup.sh"
cd "$here"
export PYTHONDONTWRITEBYTECODE=1
exec "${MKS_DRILL_VENV:-$here/.venv}/bin/python" -m pytest scenarios -m "$marker" "$@"
