#!/usr/bin/env bash
# The runbook gate as the composite action (action.yml) runs it in the app's repository: the gate on the
# app's runbook with the app's profile, the reports in GATE_REPORTS, the verdict table appended to
# $GITHUB_STEP_SUMMARY. Exit status: the gate's (0 passed, 1 failed, 2 usage).
# Inputs (the action's, as environment): GATE_RUNBOOK (required), GATE_PROFILE, GATE_CHANGED_SINCE,
# GATE_SECTIONS (one per line), GATE_REPORTS (default mks-drill-reports), GATE_LANG (ja), GATE_SERVICE_USER.
# The harness is the action's own checkout (GITHUB_ACTION_PATH, the pinned ref), set up by scripts/setup.sh.
set -uo pipefail
harness="${GITHUB_ACTION_PATH:-$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)}"
python="${MKS_DRILL_PYTHON:-$harness/.venv/bin/python}"
runbook="${GATE_RUNBOOK:?input runbook is required}"
reports="${GATE_REPORTS:-mks-drill-reports}"

args=("$runbook" --reports "$reports" --lang "${GATE_LANG:-ja}")
[ -n "${GATE_PROFILE:-}" ] && args+=(--drill-app "$GATE_PROFILE")
[ -n "${GATE_CHANGED_SINCE:-}" ] && args+=(--changed-since "$GATE_CHANGED_SINCE")
[ -n "${GATE_SERVICE_USER:-}" ] && args+=(--service-user "$GATE_SERVICE_USER")
while IFS= read -r section; do
    [ -n "$section" ] && args+=(--section "$section")
done <<< "${GATE_SECTIONS:-}"

status=0
"$python" -m gate "${args[@]}" || status=$?

report=$(ls -t "$reports"/runbook-gate-*.json 2>/dev/null | head -1)
summary="${GITHUB_STEP_SUMMARY:-/dev/stdout}"
if [ -n "$report" ]; then
    "$python" -m gate.summary "$report" >> "$summary" || status=$((status ? status : 1))
else
    printf '## ❌ Runbook gate: no report (exit %s)\n\nSee the step log.\n' "$status" >> "$summary"
    [ "$status" -eq 0 ] && status=1
fi
exit "$status"
