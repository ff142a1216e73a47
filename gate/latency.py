"""A slow backend for the checks that claim to measure response time: a TCP relay on 127.0.0.1 that
holds every new connection for a fixed delay before it passes it on to the backend.

The delay is the wrong state itself (every answer comes late, as from an overloaded server), not a
wait of the gate's: a timing that has no threshold prints the slow number and exits 0.
"""

from __future__ import annotations

import socket
import socketserver
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress


class _Relay(socketserver.BaseRequestHandler):
    server: _Server

    def handle(self) -> None:
        time.sleep(self.server.delay)
        try:
            upstream = socket.create_connection(("127.0.0.1", self.server.upstream), timeout=30)
        except OSError:
            return  # the backend is down: the client sees its connection closed, as it would
        with upstream:
            pump = threading.Thread(target=_copy, args=(upstream, self.request), daemon=True)
            pump.start()
            _copy(self.request, upstream)
            pump.join(timeout=30)


class _Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, upstream: int, delay: float):
        self.upstream, self.delay = upstream, delay
        super().__init__(("127.0.0.1", 0), _Relay)


def _copy(source: socket.socket, dest: socket.socket) -> None:
    """Bytes from source to dest until source closes; then dest's writing side is closed."""
    with suppress(OSError):
        while data := source.recv(65536):
            dest.sendall(data)
    with suppress(OSError):
        dest.shutdown(socket.SHUT_WR)


@contextmanager
def delayed(upstream_port: int, delay: float) -> Iterator[int]:
    """A port on 127.0.0.1 that answers as `upstream_port` does, each connection `delay` seconds late."""
    server = _Server(upstream_port, delay)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.2}, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
