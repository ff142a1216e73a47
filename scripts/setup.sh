#!/usr/bin/env bash
# Set-up for mks-drill on Debian/Ubuntu: system packages, the virtual environment, Python packages.
# Idempotent and quick when everything is there already. Sourced or run by scripts/test.sh and
# scripts/drill.sh; run it alone with: bash scripts/setup.sh
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${MKS_DRILL_VENV:-$here/.venv}"
packages=(postgresql nginx-light git strace pigz python3-venv python3-dev ca-certificates chromium fonts-ipafont-gothic)

missing=()
for pkg in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if [ "${#missing[@]}" -gt 0 ]; then
    echo "mks-drill set-up: installing system packages: ${missing[*]}"
    if [ "$(id -u)" -eq 0 ]; then sudo=(); elif command -v sudo >/dev/null; then sudo=(sudo); else
        echo "mks-drill set-up: need root (or sudo) to install: ${missing[*]}" >&2; exit 1
    fi
    export DEBIAN_FRONTEND=noninteractive
    "${sudo[@]}" apt-get update -qq
    "${sudo[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    # Debian starts the freshly installed servers where an init system runs; the drills use their own
    if command -v service >/dev/null; then
        "${sudo[@]}" service postgresql stop >/dev/null 2>&1 || true
        "${sudo[@]}" service nginx stop >/dev/null 2>&1 || true
    fi
fi

# When root runs the drills, the servers run as an unprivileged account that must be able to
# execute the venv's interpreter: a Python under /root would not do, Debian's /usr/bin/python3 does.
if [ "$(id -u)" -eq 0 ] && [ -x /usr/bin/python3 ]; then python=/usr/bin/python3; else python="$(command -v python3)"; fi
if [ ! -x "$venv/bin/python" ]; then
    echo "mks-drill set-up: creating virtual environment $venv with $python"
    "$python" -m venv "$venv"
fi
# The container provider's packages (testcontainers, pytest-docker, docker) too: a few small wheels,
# and its tests then say "no engine" rather than "package missing" where no engine runs.
extras=test,containers
stamp="$venv/.mks-drill-installed"
if [ ! -f "$stamp" ] || [ "$here/pyproject.toml" -nt "$stamp" ] || ! grep -qx "$extras" "$stamp"; then
    echo "mks-drill set-up: installing Python packages ($extras) into $venv"
    "$venv/bin/python" -m pip install -q --upgrade pip
    "$venv/bin/python" -m pip install -q -e "$here[$extras]"
    echo "$extras" > "$stamp"
fi
