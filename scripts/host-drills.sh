#!/usr/bin/env bash
# The host provider's drills (--drill-provider=host: one Debian host per stack, systemd as PID 1).
# Needs a Docker-API engine: `bash scripts/container-engine.sh start` prints DOCKER_HOST=...
#
#   bash scripts/host-drills.sh full [PYTEST ARGS]     # every drill on the reference app and on kiroku,
#                                                      # the host-only drills, the provider's tests (~15 min)
#   bash scripts/host-drills.sh sample [PYTEST ARGS]   # CI's sample (1.8 min with the images cached,
#                                                      # about 2.5 min more when both are built)
#
# The sample: the provider's tests (systemd's Restart=always after a SIGKILL, a failing unit, a
# SIGKILLed harness), the full recovery and PITR, and the host-only drills that show something no
# other provider can (PostgreSQL late at a reboot, on the reference and on kiroku; a full backup
# volume).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$here"
set_="${1:-sample}"
shift || true
base="${MKS_DRILL_BASE_IMAGE:-localhost/debian-base:bookworm}"
py="${MKS_DRILL_VENV:-$here/.venv}/bin/python"
export PYTHONDONTWRITEBYTECODE=1
common=(-p no:cacheprovider -rs -n 0 --drill-provider=host --drill-container-base="$base" --drill-forecast=off)
case "$set_" in
    sample)
        exec "$py" -m pytest "${common[@]}" "$@" \
            tests/test_host_provider.py \
            "scenarios/test_drills.py::test_quarterly_drill[full-recovery]" \
            "scenarios/test_drills.py::test_quarterly_drill[point-in-time-recovery]" \
            "scenarios/test_host_drills.py::test_host_drill[host-reboot-db-late]" \
            "scenarios/test_host_drills.py::test_kiroku_degraded_health_is_a_finding[host-reboot-db-late]" \
            "scenarios/test_host_drills.py::test_backup_on_a_full_backup_volume"
        ;;
    full)
        status=0
        "$py" -m pytest "${common[@]}" "$@" -k "not test_container_drill" \
            tests/test_host_provider.py scenarios/test_drills.py scenarios/test_host_drills.py || status=$?
        "$py" -m pytest "${common[@]}" "$@" -k "not test_container_drill" \
            --drill-app=fixtures/apps/kiroku/profile.yml scenarios/test_drills.py || status=$?
        exit "$status"
        ;;
    *)
        echo "usage: $0 sample|full [pytest args]" >&2; exit 2
        ;;
esac
