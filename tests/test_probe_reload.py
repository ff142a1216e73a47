"""The availability probe across nginx's graceful reloads: no failure a user would see.

A graceful reload (HUP) makes nginx's old workers close their idle kept-alive connections; a request
sent on one as the close arrives fails ("Server disconnected without sending a response"). A browser
retries it on a new connection, so it is no downtime; a probe that kept its connection alive counted
it as a failed request (the nginx-config drill's "failed_requests == 0" failed once in 20 quarterly
runs). Kept-alive clients run beside the probes to show the race is there while the probes miss it.
Every probe sends a request between two reloads, however busy the host.
"""

from __future__ import annotations

import random
import ssl
import threading
import time

import httpx

from fixtures.engine.probes import AvailabilityProbe
from recovery import health
from recovery.waiting import Observation, wait_until

RELOADS = 100
PROBES = 8


def test_the_probe_sees_no_failure_across_graceful_reloads(stack):
    endpoint = (stack.https_url, str(stack.ca_file))
    path = stack.app.http.health.path
    probes = [AvailabilityProbe(lambda: endpoint, time.monotonic(), interval=0.02, path=path,
                                max_seconds=120).start() for _ in range(PROBES)]
    kept_alive: list[str] = []
    stop = threading.Event()

    def keep_alive_client() -> None:
        context = ssl.create_default_context(cafile=endpoint[1])
        with httpx.Client(base_url=endpoint[0], verify=context, timeout=0.5) as client:
            while not stop.is_set():
                answer = health.probe(client, path)
                if answer.status != 200:
                    kept_alive.append(answer.detail)
                stop.wait(0.02)

    controls = [threading.Thread(target=keep_alive_client, daemon=True) for _ in range(2)]
    for thread in controls:
        thread.start()
    def every_probe_sent_one_since(marks: list[int]) -> None:
        # a busy host slows the probes: each reload waits for every probe to have tried once since
        # the last, instead of assuming a pause is long enough for that
        def sent() -> Observation:
            behind = sum(len(probe.samples) <= mark for probe, mark in zip(probes, marks, strict=True))
            return Observation(behind == 0, f"{behind} of {PROBES} probes have sent nothing since")

        wait_until("every probe to send a request", sent, timeout=30, interval=0.01)

    try:
        every_probe_sent_one_since([0] * PROBES)
        for _ in range(RELOADS):
            marks = [len(probe.samples) for probe in probes]
            stack.services.reload("nginx")
            time.sleep(random.uniform(0.03, 0.09))  # where the reload falls among the requests
            every_probe_sent_one_since(marks)
    finally:
        stop.set()
        summaries = [probe.stop() for probe in probes]
        for thread in controls:
            thread.join(timeout=5)
    requests = sum(s.requests for s in summaries)
    failed = [sample for s in summaries for sample in s.samples if not sample[1]]
    assert requests > RELOADS * PROBES, f"the probes sent only {requests} requests"
    assert not failed, (f"{len(failed)} of {requests} probe requests failed across {RELOADS} reloads "
                        f"(kept-alive clients beside them: {len(kept_alive)} failed, e.g. {kept_alive[:1]})")
