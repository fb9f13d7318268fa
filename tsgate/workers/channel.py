"""
The worker's end of the supervisor channel.

A worker is an ordinary ``twistd tsgate`` started by the supervisor with
``--worker-channel FD``: it reads commands on its standard input and writes
JSON lines on ``FD``. Commands (one line each):

- ``connections ID``: answer ``{"t": "connections", "id": ID, "items": [...]}``;
- ``reload``: reload the configuration, answer ``{"t": "reload", "ok": ..}``;
- ``drain SECONDS``: stop accepting, let connections finish for that long,
  close the rest and exit (the supervisor retires old workers this way);
- end of input: the supervisor is gone; drain and exit.

Every :data:`PUSH_INTERVAL` seconds the worker pushes its numbers
(``{"t": "stats", ...}``), which the supervisor adds up for its admin server.
"""

from __future__ import annotations

import json
import os
import socket
from typing import Any, Optional

import attrs
from twisted.internet import stdio
from twisted.internet.protocol import connectionDone
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.protocols.basic import LineOnlyReceiver
from twisted.python.failure import Failure

from tsgate.workers.snapshot import stats_to_json

log = Logger(namespace="tsgate.worker")

#: Seconds between two pushes of a worker's numbers to the supervisor.
PUSH_INTERVAL = 0.5


def connection_dict(info: Any) -> dict[str, Any]:
    if attrs.has(type(info)):
        return attrs.asdict(info)
    return {name: getattr(info, name, None) for name in (
        "listener", "route", "cluster", "upstream", "downstream", "sni", "started",
        "bytes_received", "bytes_sent", "state")}


class WorkerChannel(LineOnlyReceiver):
    """Commands from the supervisor in, numbers and answers out."""

    delimiter = b"\n"
    MAX_LENGTH = 1 << 16

    def __init__(self, gateway: Any, worker_id: int, reactor: Any) -> None:
        self.gateway = gateway
        self.worker_id = worker_id
        self.reactor = reactor
        self._pusher = LoopingCall(self.push)
        self._pusher.clock = reactor
        self._stopping = False

    def connectionMade(self) -> None:
        self.send({"t": "hello", "worker": self.worker_id, "pid": os.getpid()})
        self._pusher.start(PUSH_INTERVAL, now=True)

    def send(self, message: dict[str, Any]) -> None:
        if self.transport is not None:
            self.transport.write(json.dumps(message, separators=(",", ":")).encode() + b"\n")

    def push(self) -> None:
        self.send({
            "t": "stats",
            "ready": bool(self.gateway.ready),
            "draining": bool(self.gateway.draining),
            "active": len(self.gateway.ctx.connections),
            "stats": stats_to_json(self.gateway.stats),
        })

    def lineReceived(self, line: bytes) -> None:  # noqa: N802
        command, _, argument = line.decode("ascii", "replace").strip().partition(" ")
        if command == "connections":
            items = [connection_dict(c) for c in self.gateway.connections()]
            self.send({"t": "connections", "id": argument, "items": items})
        elif command == "reload":
            result = self.gateway.reload()
            ok = bool(getattr(result, "ok", False))
            self.send({"t": "reload", "ok": ok,
                       "errors": [str(d) for d in getattr(result, "errors", ()) or ()]})
            self.push()
        elif command == "drain":
            self.retire(float(argument) if argument else None)
        else:
            log.warn("worker {id}: unknown supervisor command {command!r}",
                     id=self.worker_id, command=command)

    def retire(self, period: Optional[float]) -> None:
        """Stop accepting, drain, then stop the process."""
        if self._stopping:
            return
        self._stopping = True
        d = self.gateway.drain(period)

        def stop(_: Any) -> None:
            self.push()
            if self.reactor.running:
                self.reactor.stop()

        def failed(f: Failure) -> None:
            log.failure("worker drain failed", f)
            stop(None)

        d.addCallbacks(stop, failed)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        if self._pusher.running:
            self._pusher.stop()
        # The supervisor is gone (or closed our input): nobody will stop us.
        self.retire(None)


def start_listening(first_fd: int, channel_fd: int) -> None:
    """
    ``listen()`` on the sockets the supervisor handed over (descriptors
    ``first_fd`` up to the channel's), right before the gateway adopts them.
    An ``SO_REUSEPORT`` socket joins its port's group only now, when this
    worker has loaded everything and is about to run its reactor, so no
    connection waits long in the queue of a worker that is still starting.
    (A socket that listens already, shared by all workers, is unchanged.)
    """
    from tsgate.proxy.listen import max_backlog

    backlog = max_backlog()
    for fd in range(first_fd, channel_fd):
        sock = socket.socket(fileno=fd)
        try:
            if sock.type == socket.SOCK_STREAM:
                sock.listen(backlog)
        except OSError as exc:
            log.error("worker: cannot listen on descriptor {fd}: {why}", fd=fd, why=exc)
        finally:
            sock.detach()


def attach(gateway: Any, worker_id: int, channel_fd: int, reactor: Any) -> WorkerChannel:
    """Connect a worker's gateway to the supervisor (stdin in, ``channel_fd`` out)."""
    gateway.announce_reloads = False
    channel = WorkerChannel(gateway, worker_id, reactor)
    # (mypy reads the Windows signature of StandardIO, which has no stdin/stdout)
    stdio.StandardIO(channel, stdin=0, stdout=channel_fd, reactor=reactor)  # type: ignore[call-arg]
    return channel
