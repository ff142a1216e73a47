"""Stack start (until the first healthy response through nginx over TLS) and teardown, harness vs floor.

The floor is the same servers started directly, in the same run: initdb, postgres, gunicorn (the
reference backend) and nginx, each waited for with a real request, then stopped and removed. The
harness is `LocalStack(...).up()` and `.down()` (unseeded). Runs alternate; medians and their ratio
are printed and written as JSON.

    .venv/bin/python bench/stack_start.py --runs 5 [--json bench/out/stack_start.json]
"""

from __future__ import annotations

import argparse
import json
import shutil
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import psycopg
import trustme

from fixtures.apps.reference import BACKEND_DIR as REFERENCE_BACKEND
from fixtures.stack.composed import reference_profile
from fixtures.stack.local import LocalStack, StackSettings
from fixtures.stack.nginx import find_nginx
from fixtures.stack.ports import PortLease
from fixtures.stack.postgres import find_install
from fixtures.stack.readiness import wait_until
from fixtures.stack.sandbox import default_base_dir
from recovery import health
from recovery.commands import RunAs, run, spawn

HEALTH = reference_profile().http.health.path

SUPERUSER_SECRET = "floor-bench-superuser-secret"  # a throwaway cluster that lives for seconds


def _run_as() -> RunAs:
    return StackSettings().service_account()


def floor_once(base: Path, ca: trustme.CA) -> tuple[float, float]:
    """Start the bare servers directly; return (start seconds, teardown seconds)."""
    run_as = _run_as()
    install = find_install()
    nginx = find_nginx()
    top = Path(tempfile.mkdtemp(prefix="floor-", dir=base))
    top.chmod(0o755)
    data, sock, tmp = top / "data", top / "sock", top / "tmp"
    for d in (sock, tmp, top / "logs", top / "uploads"):
        d.mkdir()
    pwfile = top / "pw"
    pwfile.write_text(SUPERUSER_SECRET + "\n")
    leaf = ca.issue_cert("127.0.0.1")
    leaf.private_key_and_cert_chain_pem.write_to_path(top / "server.pem")
    ports = PortLease(base)
    pg_port, app_port, https_port = (ports.take() for _ in range(3))
    (top / "config.yml").write_text(
        f"database: {{host: 127.0.0.1, port: {pg_port}, name: postgres, user: postgres,"
        f" password: {SUPERUSER_SECRET}}}\nuploads: {{dir: {top / 'uploads'}}}\n"
        f"auth: {{jwt_secret: {'x' * 40}, token_ttl_seconds: 60}}\n"
    )
    (top / "nginx.conf").write_text(
        f"pid {top}/nginx.pid; error_log {top}/logs/error.log; events {{}}\n"
        f"http {{ access_log off; client_body_temp_path {tmp}/b; proxy_temp_path {tmp}/p;"
        f" fastcgi_temp_path {tmp}/f; uwsgi_temp_path {tmp}/u; scgi_temp_path {tmp}/s;\n"
        f" server {{ listen 127.0.0.1:{https_port} ssl; ssl_certificate {top}/server.pem;"
        f" ssl_certificate_key {top}/server.pem;"
        f" location / {{ proxy_pass http://127.0.0.1:{app_port}; }} }} }}\n"
    )
    subprocess.run(["chown", "-R", f"{run_as.uid}:{run_as.gid}", str(top)], check=True)
    procs = []
    started = time.monotonic()
    run(
        [
            install.tool("initdb"),
            "-D",
            str(data),
            "-U",
            "postgres",
            f"--pwfile={pwfile}",
            "--auth=scram-sha-256",
            "-E",
            "UTF8",
            "--no-locale",
            "--no-sync",
        ],
        timeout=120,
        run_as=run_as,
    )
    procs.append(
        spawn(
            [
                install.tool("postgres"),
                "-D",
                str(data),
                "-p",
                str(pg_port),
                "-c",
                "listen_addresses=127.0.0.1",
                "-c",
                f"unix_socket_directories={sock}",
            ],
            run_as=run_as,
        )
    )
    conninfo = f"host=127.0.0.1 port={pg_port} user=postgres password={SUPERUSER_SECRET} dbname=postgres"

    def pg_ready() -> bool:
        with psycopg.connect(conninfo, connect_timeout=2) as conn:
            conn.execute("SELECT 1")
        return True

    wait_until("floor postgres to answer", pg_ready, timeout=60, interval=0.05)
    procs.append(
        spawn(
            [
                sys.executable,
                "-m",
                "gunicorn",
                "--chdir",
                str(REFERENCE_BACKEND),
                "--bind",
                f"127.0.0.1:{app_port}",
                "--workers",
                "2",
                "--preload",
                "--worker-tmp-dir",
                str(tmp),
                "--control-socket",
                str(tmp / "g.ctl"),
                "mks_backend.wsgi:app",
            ],
            run_as=run_as,
            env={
                "MKS_CONFIG": str(top / "config.yml"),
                "PYTHONPATH": str(REFERENCE_BACKEND),
                "PYTHONDONTWRITEBYTECODE": "1",
                "HOME": str(tmp),
            },
        )
    )
    procs.append(
        spawn(
            [
                nginx,
                "-p",
                f"{top}/",
                "-e",
                f"{top}/logs/error.log",
                "-c",
                str(top / "nginx.conf"),
                "-g",
                "daemon off;",
            ],
            run_as=run_as,
        )
    )
    context = ssl.create_default_context()
    ca.configure_trust(context)
    with httpx.Client(base_url=f"https://127.0.0.1:{https_port}", verify=context, timeout=3) as client:
        wait_until("floor health 200", lambda: health.probe(client, HEALTH), timeout=60,
                   interval=0.05)
    start_seconds = time.monotonic() - started
    started = time.monotonic()
    for proc in reversed(procs):
        proc.terminate()
    for proc in procs:
        proc.wait(timeout=60)
    shutil.rmtree(top)
    ports.release()
    return start_seconds, time.monotonic() - started


def harness_once(use_template: bool = True) -> tuple[float, float]:
    started = time.monotonic()
    stack = LocalStack(StackSettings(use_template=use_template), "bench").up()
    start_seconds = time.monotonic() - started
    started = time.monotonic()
    stack.down()
    return start_seconds, time.monotonic() - started


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    base = default_base_dir()
    base.mkdir(parents=True, exist_ok=True, mode=0o711)
    ca = trustme.CA()
    # "harness" copies the migrated cluster template (the default); "harness_initdb" makes each
    # cluster with initdb and migrates it, as the first stack on a machine does
    results: dict[str, list[tuple[float, float]]] = {"floor": [], "harness": [], "harness_initdb": []}
    harness_once()  # warm the page cache (and build the template) for all sides alike
    for n in range(args.runs):
        results["floor"].append(floor_once(base, ca))
        results["harness"].append(harness_once())
        results["harness_initdb"].append(harness_once(use_template=False))
        print(
            f"run {n + 1}/{args.runs}: start floor {results['floor'][-1][0]:.2f}s, harness "
            f"{results['harness'][-1][0]:.2f}s, harness with initdb {results['harness_initdb'][-1][0]:.2f}s",
            flush=True,
        )
    summary = {}
    for side, rows in results.items():
        summary[side] = {
            "start_median_s": round(statistics.median(r[0] for r in rows), 3),
            "teardown_median_s": round(statistics.median(r[1] for r in rows), 3),
            "total_median_s": round(statistics.median(r[0] + r[1] for r in rows), 3),
        }
    for side in ("harness", "harness_initdb"):
        for key in ("start_median_s", "teardown_median_s", "total_median_s"):
            summary.setdefault(f"ratio_{side}", {})[key] = round(
                summary[side][key] / summary["floor"][key], 2
            )
    summary["runs"] = args.runs
    print(json.dumps(summary, indent=2))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"summary": summary, "raw": results}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
