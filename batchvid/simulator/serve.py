"""Serving the simulator over TCP with uvicorn: blocking (the CLI) or in a thread (tests)."""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import uvicorn

from batchvid.errors import UsageError
from batchvid.simulator.app import SimulatedConnectionReset, Simulator
from batchvid.simulator.config import SimulatorConfig


class _QuietFaults(logging.Filter):
    """Drops uvicorn's error records about connections the simulator drops on purpose."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        return not isinstance(exc, SimulatedConnectionReset)


_QUIET = _QuietFaults()


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    # Inherited by accepted sockets. uvicorn writes headers and body separately; without this,
    # Nagle's algorithm and the client's delayed ACK add ~40 ms to every kept-alive request.
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise UsageError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from exc
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def _base_url(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def _server(simulator: Simulator, log_level: str) -> uvicorn.Server:
    config = uvicorn.Config(
        simulator.app,
        log_level=log_level,
        access_log=False,
        lifespan="off",
        http="h11",
        interface="asgi3",
        proxy_headers=False,
        timeout_keep_alive=30,
    )
    logging.getLogger("uvicorn.error").addFilter(_QUIET)
    return uvicorn.Server(config)


def serve(
    config: SimulatorConfig | None = None,
    host: str = "127.0.0.1",
    port: int = 0,
    *,
    simulator: Simulator | None = None,
    on_ready: Callable[[str], None] | None = None,
    log_level: str = "warning",
) -> None:
    """Serve the simulator until interrupted (Ctrl-C). Binds to loopback unless told otherwise.

    ``port=0`` picks a free port; ``on_ready`` receives the base URL (``http://HOST:PORT``)
    once the socket is bound, so the caller can show it.
    """
    simulator = simulator or Simulator(config)
    sock = _bind(host, port)
    try:
        server = _server(simulator, log_level)
        if on_ready is not None:
            on_ready(_base_url(sock))
        server.run(sockets=[sock])
    finally:
        sock.close()


@dataclass(frozen=True, slots=True)
class RunningSimulator:
    """A simulator served on loopback by a background thread."""

    base_url: str
    """``http://127.0.0.1:PORT``; providers live under it at their prefixes."""
    simulator: Simulator
    thread: threading.Thread

    def cpu_seconds(self) -> float:
        """CPU time the serving thread has used so far (Linux and other POSIX systems)."""
        ident = self.thread.ident
        assert ident is not None
        return time.clock_gettime(time.pthread_getcpuclockid(ident))


@contextmanager
def running_simulator(
    config: SimulatorConfig | None = None,
    *,
    simulator: Simulator | None = None,
    host: str = "127.0.0.1",
    startup_timeout: float = 10.0,
) -> Iterator[RunningSimulator]:
    """Serve a simulator on a free loopback port in a thread for the duration of the block."""
    simulator = simulator or Simulator(config)
    sock = _bind(host, 0)
    server = _server(simulator, "warning")
    thread = threading.Thread(
        target=server.run, kwargs={"sockets": [sock]}, name="batchvid-simulator", daemon=True
    )
    thread.start()
    try:
        deadline = time.monotonic() + startup_timeout
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the simulator server did not start")
            time.sleep(0.005)
        yield RunningSimulator(_base_url(sock), simulator, thread)
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()
