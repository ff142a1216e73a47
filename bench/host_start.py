"""Stack start (until health 200 through nginx over TLS) on the host provider vs the local provider.

Unseeded stacks of the reference app, alternating local / host so that the machine's other load
falls on both alike; the host's image is built (or found) before the first run and not timed. For
the host, where the time goes: the sandbox (everything before the container: TLS, checkout, the
cluster's copy), the container's create+start, PostgreSQL answering (systemd's boot and
pg_ctlcluster), the database set-up (passwords, admin), the backend (its unit installed, enabled,
started, health 200 through nginx). Medians are printed and written as JSON.

    DOCKER_HOST=unix:///run/mks-drill-engine/podman.sock .venv/bin/python bench/host_start.py \
        --runs 3 [--base localhost/debian-base:bookworm] [--json bench/out/host_start.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

from fixtures.stack.composed import StackSettings
from fixtures.stack.container import ContainerSettings
from fixtures.stack.host import HostProvider
from fixtures.stack.local import LocalStack


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--base", default="localhost/debian-base:bookworm")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    settings = StackSettings()
    provider = HostProvider(settings, ContainerSettings(base_image=args.base))
    provider.image(settings)
    times: dict[str, list[float]] = {"local": [], "host": [], "host down": [], "local down": []}
    parts: dict[str, list[float]] = {}
    for n in range(args.runs):
        for kind in ("local", "host") if n % 2 == 0 else ("host", "local"):
            name = f"bench-{kind}"
            stack = LocalStack(settings, name) if kind == "local" else provider.stack(name)
            started = time.monotonic()
            stack.up()
            times[kind].append(time.monotonic() - started)
            if kind == "host":
                timings = dict(stack.runtime.timings)  # type: ignore[attr-defined]
                timings["sandbox"] = times[kind][-1] - sum(timings.values())
                for name, seconds in timings.items():
                    parts.setdefault(name, []).append(seconds)
            started = time.monotonic()
            stack.down()
            times[f"{kind} down"].append(time.monotonic() - started)
    result = {name: round(statistics.median(values), 2) for name, values in times.items()}
    result["host parts"] = {name: round(statistics.median(v), 2) for name, v in parts.items()}
    result["runs"] = args.runs
    print(json.dumps(result, indent=2, ensure_ascii=False))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2, ensure_ascii=False))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
