#!/usr/bin/env bash
# CI set-up for the container provider: a Docker-API engine (podman) and a local base image, as in
# shared/notes/container-engine.md. Runs as root in CI and writes system paths (/etc/containers,
# /var/lib/containers); the harness itself never does. Idempotent; every slow step is time-bounded.
#
#   bash scripts/container-engine.sh start   # install, base image, API service; prints DOCKER_HOST=...
#   bash scripts/container-engine.sh stop    # stops the API service started by "start"
#   bash scripts/container-engine.sh status
#
# Environment: MKS_DRILL_ENGINE_DIR (socket, pid file, log; default /run/mks-drill-engine),
# MKS_DRILL_BASE_IMAGE (default localhost/debian-base:bookworm), MKS_DRILL_DEBIAN_MIRROR.
set -euo pipefail

action="${1:-start}"
dir="${MKS_DRILL_ENGINE_DIR:-/run/mks-drill-engine}"
base_image="${MKS_DRILL_BASE_IMAGE:-localhost/debian-base:bookworm}"
mirror="${MKS_DRILL_DEBIAN_MIRROR:-http://deb.debian.org/debian}"
sock="$dir/podman.sock"
pidfile="$dir/podman.pid"
docker_host="unix://$sock"

say() { echo "container-engine: $*" >&2; }

need_root() {
    if [ "$(id -u)" -ne 0 ]; then say "must run as root (CI set-up)"; exit 1; fi
}

service_running() {
    [ -f "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null && [ -S "$sock" ]
}

install_packages() {
    local missing=()
    for pkg in podman runc debootstrap; do
        dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
    done
    if [ "${#missing[@]}" -gt 0 ]; then
        say "installing ${missing[*]}"
        export DEBIAN_FRONTEND=noninteractive
        timeout 300 apt-get update -qq
        timeout 600 apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    fi
}

write_config() {
    # containers here may not raise resource limits, and crun fails on this cgroup layout
    local conf=/etc/containers/containers.conf
    local want
    want=$'[containers]\ndefault_ulimits = ["nofile=1024:1024", "nproc=1024:1024"]\n[engine]\nruntime = "runc"\n'
    if [ ! -f "$conf" ] || [ "$(cat "$conf")"$'\n' != "$want" ]; then
        mkdir -p /etc/containers
        if [ -f "$conf" ] && [ ! -f "$conf.mks-drill-orig" ]; then cp "$conf" "$conf.mks-drill-orig"; fi
        printf '%s' "$want" > "$conf"
        say "wrote $conf"
    fi
}

make_base_image() {
    if podman image exists "$base_image"; then return; fi
    local tree
    tree="$(mktemp -d /var/tmp/mks-drill-debootstrap.XXXXXX)"
    say "debootstrap bookworm (minbase) into $tree"
    if ! timeout 600 debootstrap --variant=minbase bookworm "$tree" "$mirror" >"$tree.log" 2>&1; then
        tail -20 "$tree.log" >&2; rm -rf "$tree" "$tree.log"; say "debootstrap failed"; exit 1
    fi
    # smaller image: no apt lists or caches in the base
    rm -rf "$tree"/var/cache/apt/archives/*.deb "$tree"/var/lib/apt/lists/*
    tar -C "$tree" -c . | timeout 300 podman import - "$base_image" >/dev/null
    rm -rf "$tree" "$tree.log"
    say "imported $base_image"
}

start_service() {
    if service_running; then return; fi
    mkdir -p "$dir"
    rm -f "$sock"
    # setsid: the service must outlive this script and not share the caller's process group
    setsid podman system service --time=0 "$docker_host" >"$dir/podman.log" 2>&1 < /dev/null &
    echo $! > "$pidfile"
    for _ in $(seq 1 100); do
        if [ -S "$sock" ] && DOCKER_HOST="$docker_host" timeout 5 docker version >/dev/null 2>&1; then
            return
        fi
        sleep 0.2
    done
    say "the API service did not answer on $sock within 20 s"; tail -20 "$dir/podman.log" >&2; exit 1
}

stop_service() {
    if [ -f "$pidfile" ]; then
        local pid
        pid="$(cat "$pidfile")"
        if kill -0 "$pid" 2>/dev/null; then
            kill -TERM "$pid"
            for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
            kill -0 "$pid" 2>/dev/null && kill -KILL "$pid" 2>/dev/null || true
        fi
        rm -f "$pidfile" "$sock"
        say "stopped"
    fi
}

case "$action" in
    start)
        need_root
        install_packages
        write_config
        make_base_image
        start_service
        echo "DOCKER_HOST=$docker_host"
        ;;
    stop)
        stop_service
        ;;
    status)
        if service_running; then echo "DOCKER_HOST=$docker_host"; else echo "not running"; exit 1; fi
        ;;
    *)
        say "usage: $0 start|stop|status"; exit 2
        ;;
esac
