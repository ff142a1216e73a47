#!/usr/bin/env bash
# The slow, exhaustive checks that CI runs only a sample of (CI's whole .ci/run stays under 25 min on
# two cores). Each part alone, or all of them in turn (exit 1 when any failed):
#
#   bash scripts/exhaustive.sh gate        # the tests marked exhaustive: the gate on the whole original
#                                          # runbook with its full defect list (~6 min); CI runs a sample
#   bash scripts/exhaustive.sh mutants     # the gate's mutation self-test on every mutant of the
#                                          # corrected runbook (hours); CI runs a sample
#   bash scripts/exhaustive.sh third-app   # every drill on the Wagtail site nobody here wrote (~7 min)
#   bash scripts/exhaustive.sh host        # every drill on the production-shaped host, both apps (needs
#                                          # a Docker-API engine: scripts/container-engine.sh start)
#   bash scripts/exhaustive.sh all
#
# The flake budget of the whole suite is a bench script of its own (bench/flake_check.py --suite).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$here"
bash scripts/setup.sh
py="${MKS_DRILL_VENV:-$here/.venv}/bin/python"
export PYTHONDONTWRITEBYTECODE=1
part() {
    case "$1" in
        gate) bash scripts/test.sh -m exhaustive -p no:cacheprovider ;;
        mutants) "$py" -m gate "docs/15_復旧手順(Recovery-Procedures).md" --mutants ;;
        third-app) bash scripts/test.sh -m quarterly --drill-app=fixtures/apps/wagtail/profile.yml \
                       -p no:cacheprovider scenarios/test_drills.py ;;
        host) bash scripts/host-drills.sh full ;;
        *) echo "usage: scripts/exhaustive.sh gate|mutants|third-app|host|all" >&2; return 2 ;;
    esac
}
if [ "${1:-all}" = all ]; then
    status=0
    for name in gate third-app mutants host; do
        echo "== exhaustive: $name"
        part "$name" || status=1
    done
    exit "$status"
fi
part "$1"
