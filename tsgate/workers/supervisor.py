"""
``--workers N``: one supervisor process and N worker processes.

The supervisor loads and validates the configuration once (errors are
reported once), binds every listener's socket itself and hands the sockets to
its workers the way systemd hands sockets to a service (``LISTEN_FDS``,
``LISTEN_FDNAMES``, ``LISTEN_PID``; each worker gets
``--endpoint PORT=systemd:domain=…:index=I``), so all workers accept on the
same sockets and the kernel gives each connection to one of them. The
supervisor itself never accepts a connection: its copies of the sockets only
keep them open for workers it starts later.

It restarts a worker that dies (after 0.1 s, doubling up to 5 s while workers
keep dying young), forwards reloads (SIGHUP, file changes, ``POST /reload``),
and on SIGTERM tells every worker to drain and exits 0 when all have. A
reload that changes the set of listening sockets binds the new ones and
starts a new generation of workers; the old generation stops accepting and
finishes its connections, as nginx's reload does.

One admin server, readiness and metrics for the whole gateway:
:class:`Aggregate` adds up the numbers each worker pushes over its channel
(see :mod:`tsgate.workers.channel`).
"""

from __future__ import annotations

import itertools
import json
import math
import os
import socket
import sys
import time
from collections import deque
from collections.abc import Iterable, Sequence
from typing import Any, Callable, Optional

import attrs
from twisted.application import service
from twisted.internet import defer, endpoints, error
from twisted.internet.protocol import Factory, ProcessProtocol, Protocol
from twisted.logger import Logger
from twisted.python.failure import Failure

from tsgate.config.options import OPTION_NAMES as GATEWAY_OPTIONS
from tsgate.routing import RouteTable
from tsgate.stats import Stats
from tsgate.workers.snapshot import add_json, merged

log = Logger(namespace="tsgate.supervisor")

#: The worker's end of its channel to the supervisor (after the listening sockets).
FIRST_LISTEN_FD = 3

#: Restart delays: first, factor, ceiling; a worker that lived this long resets them.
RESTART_FIRST = 0.1
RESTART_MAX = 5.0
RESTART_RESET_AFTER = 10.0

#: How long a retired generation may take to finish its connections after a reload.
RETIRE_PERIOD = 24 * 3600.0

#: Options a worker must not inherit: the supervisor serves them for everyone.
SUPERVISOR_ONLY = {"admin": "none", "readiness": "none", "metrics": "none",
                   "watch-interval": "0"}

_BOOTSTRAP = (
    "import os, sys\n"
    "os.environ['LISTEN_PID'] = str(os.getpid())\n"
    "sys.argv[0] = 'twistd'\n"
    "from twisted.scripts.twistd import run\n"
    "run()\n"
)


def usable_cores() -> int:
    """CPUs this process may use: its affinity, bounded by a cgroup v2 CPU limit (a pod's)."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cores = os.cpu_count() or 1
    try:
        with open("/sys/fs/cgroup/cpu.max", encoding="ascii") as f:
            quota, period = f.read().split()[:2]
        if quota != "max":
            cores = min(cores, max(1, math.ceil(int(quota) / int(period))))
    except (OSError, ValueError):
        pass
    return max(1, cores)


def parse_workers(value: str) -> int:
    """``--workers``: a positive count, or ``auto``."""
    if value == "auto":
        return usable_cores()
    try:
        n = int(value)
    except ValueError:
        raise ValueError(f"--workers wants a number or 'auto', not {value!r}") from None
    if n < 1:
        raise ValueError("--workers must be at least 1")
    return n


def _cancel_then_pass(result: Any, call: Any) -> Any:
    if call.active():
        call.cancel()
    return result


# ---------------------------------------------------------------------------------------------
# listening sockets


class _NeverAccepts(Factory):
    noisy = False

    def buildProtocol(self, addr: Any) -> Optional[Protocol]:
        return None


@attrs.define
class HeldSocket:
    """
    What the supervisor holds for one listener.

    For TCP, a bound (never listening) ``SO_REUSEPORT`` anchor that keeps the
    port, and one socket per worker slot bound to the same address. A worker
    calls ``listen()`` on its slot's socket only once it has loaded (see
    :func:`tsgate.workers.channel.start_listening`), so the kernel spreads
    connections evenly over the workers that are ready. The supervisor keeps
    each slot's socket open: when a worker dies, connections the kernel had
    already queued on its socket are not reset, they wait there for the
    replacement, which takes the same socket. For other endpoints
    (systemd-activated, unix) one listening socket shared by all workers.
    """

    key: tuple[str, int]  # the listener's (bind, port)
    description: str  # the endpoint string it was bound from
    domain: str  # INET, INET6 or UNIX, for the worker's systemd: endpoint
    shared: Any = None  # a Twisted port, not reading, shared by every worker
    anchor: Optional[socket.socket] = None  # SO_REUSEPORT: bound, keeps the port
    slots: dict[int, socket.socket] = attrs.field(factory=dict)  # worker id -> its socket

    def worker_socket(self, worker_id: int) -> int:
        """The descriptor worker ``worker_id`` accepts on (its slot's, made on first use)."""
        if self.shared is not None:
            return int(self.shared.fileno())
        assert self.anchor is not None
        sock = self.slots.get(worker_id)
        if sock is None:
            sock = self.slots[worker_id] = reuseport_socket(
                self.anchor.family, self.anchor.getsockname()[:2])
        return sock.fileno()

    def address(self) -> str:
        """``host:port``, ``[v6]:port``, or a unix socket's path, for the logs."""
        if self.shared is not None:
            address = self.shared.getHost()
            host, port = getattr(address, "host", None), getattr(address, "port", None)
            if host is None:  # a unix socket (Twisted keeps its path as bytes)
                name = getattr(address, "name", address)
                return name.decode(errors="replace") if isinstance(name, bytes) else str(name)
        else:
            assert self.anchor is not None
            host, port = self.anchor.getsockname()[:2]
        return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"

    def close(self) -> None:
        if self.shared is not None:
            self.shared.stopListening()
        for sock in self.slots.values():
            sock.close()
        self.slots.clear()
        if self.anchor is not None:
            self.anchor.close()


def _domain(port: Any) -> str:
    family = port.socket.family if hasattr(port, "socket") else socket.AF_INET
    return {socket.AF_INET6: "INET6", socket.AF_UNIX: "UNIX"}.get(family, "INET")


def tcp_address(description: str) -> Optional[tuple[int, str, int]]:
    """``(family, host, port)`` of a plain ``tcp:``/``tcp6:`` endpoint string, else None."""
    from tsgate.gateway import plain_tcp

    plain = plain_tcp(description)
    if plain is None:
        return None
    port, host, _backlog = plain
    family = socket.AF_INET6 if description.startswith("tcp6:") or ":" in host \
        else socket.AF_INET
    return family, host, port


def reuseport_socket(family: int, address: tuple[str, int]) -> socket.socket:
    """A socket bound to ``address`` with SO_REUSEPORT, not listening yet."""
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind(address)
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock


def hold_socket(reactor: Any, key: tuple[str, int], description: str, name: str,
                shared: bool = False) -> HeldSocket:
    """Bind and listen on ``description``, but let no one accept here (the workers will)."""
    from tsgate.gateway import ListenError

    tcp = tcp_address(description) if hasattr(socket, "SO_REUSEPORT") else None
    if tcp is not None and not shared:
        family, host, port = tcp
        try:
            anchor = reuseport_socket(family, (host, port))
        except OSError as exc:
            raise ListenError(f"cannot listen for {name} on {description}: "
                              f"{exc.strerror or exc}") from None
        held = HeldSocket(key, description, "INET6" if family == socket.AF_INET6 else "INET",
                          anchor=anchor)
        how = "SO_REUSEPORT, a socket per worker"
    else:
        try:
            endpoint = endpoints.serverFromString(reactor, description)
        except Exception as exc:
            raise ListenError(f"cannot listen for {name} on {description}: "
                              f"{type(exc).__name__}: {exc or 'no such socket'}") from None
        result: list[Any] = []
        endpoint.listen(_NeverAccepts()).addBoth(result.append)
        if not result or isinstance(result[0], Failure):
            why = result[0].getErrorMessage() if result else "listen did not complete"
            raise ListenError(f"cannot listen for {name} on {description}: {why}")
        port = result[0]
        port.stopReading()
        held = HeldSocket(key, description, _domain(port), shared=port)
        how = "one socket shared by the workers"
    log.info("tsgate listening: {listener} on {address} ({how})",
             listener=name, address=held.address(), how=how)
    return held


# ---------------------------------------------------------------------------------------------
# workers


@attrs.define(eq=False)
class Worker:
    """One worker process as the supervisor knows it."""

    id: int
    generation: int
    started: float
    process: Any = None
    pid: Optional[int] = None
    ready: bool = False
    draining: bool = False
    active: int = 0
    stats: dict[str, Any] = attrs.field(factory=dict)
    exited: Optional[str] = None
    connections_waiters: dict[str, defer.Deferred[Any]] = attrs.field(factory=dict)

    def send(self, line: str) -> None:
        if self.process is not None and self.exited is None:
            try:
                self.process.writeToChild(0, line.encode("ascii") + b"\n")
            except (OSError, KeyError, error.ProcessDone):
                pass


class WorkerProcess(ProcessProtocol):
    """Reads a worker's channel; tells the supervisor when the worker ends."""

    def __init__(self, supervisor: Supervisor, worker: Worker, channel_fd: int) -> None:
        self.supervisor = supervisor
        self.worker = worker
        self.channel_fd = channel_fd
        self._buffer = b""

    def childDataReceived(self, fd: int, data: bytes) -> None:  # noqa: N802
        if fd != self.channel_fd:
            return
        self._buffer += data
        *lines, self._buffer = self._buffer.split(b"\n")
        for line in lines:
            try:
                message = json.loads(line)
            except ValueError:
                log.warn("worker {id}: unreadable channel line", id=self.worker.id)
                continue
            self.supervisor.message(self.worker, message)

    def processEnded(self, reason: Failure) -> None:  # noqa: N802
        self.supervisor.worker_ended(self.worker, reason)


@attrs.frozen
class WorkerConnection:
    """A live connection as one worker reported it, with that worker's id."""

    worker: int
    listener: str
    downstream: str
    started: float
    route: Optional[str] = None
    cluster: Optional[str] = None
    upstream: Optional[str] = None
    sni: Optional[str] = None
    bytes_received: int = 0
    bytes_sent: int = 0
    state: Optional[str] = None

    @classmethod
    def from_dict(cls, worker: int, item: dict[str, Any]) -> WorkerConnection:
        known = {a.name for a in attrs.fields(cls)}
        return cls(worker=worker, **{k: v for k, v in item.items() if k in known and k != "worker"})


class Supervisor(service.Service):
    """Starts, watches, reloads and stops the workers; holds the sockets."""

    def __init__(
        self,
        reactor: Any,
        count: int,
        load: Callable[[], Any],
        endpoints_for: Callable[[RouteTable], dict[tuple[str, int], tuple[int, str]]],
        worker_args: Callable[[dict[int, str]], list[str]],
        *,
        initial: Any,
        drain_period: float = 5.0,
        stats: Optional[Stats] = None,
        executable: str = sys.executable,
        shared_sockets: bool = False,
    ) -> None:
        self.reactor = reactor
        #: one listening socket shared by all workers instead of SO_REUSEPORT
        self.shared_sockets = shared_sockets
        self.count = count
        self._load = load
        self._endpoints_for = endpoints_for
        self._worker_args = worker_args
        self.config = initial
        self.table: RouteTable = initial.table
        self.drain_period = drain_period
        self.stats = stats if stats is not None else Stats()
        self.executable = executable
        self.sockets: dict[tuple[str, int], HeldSocket] = {}
        self.workers: list[Worker] = []  # current generation
        self.retiring: list[Worker] = []
        self.retired = Stats()  # counters of workers that have exited
        self.generation = 0
        self.draining = False
        self.stopping = False
        self.recent_errors: deque[tuple[float, str]] = deque(maxlen=50)
        self._quick_deaths = 0
        self._ids = itertools.count(1)
        self._requests = itertools.count(1)
        self._all_ended: list[defer.Deferred[Any]] = []
        self._reload_pending: set[Worker] = set()
        self._retire_when_ready: list[Worker] = []
        self._reload_announce: Optional[int] = None
        for name in ("workers.started", "workers.restarted",
                     "workers.exited", "config.reload_success", "config.reload_failed"):
            self.stats.declare(name)

    # -- sockets ---------------------------------------------------------------------------

    def bind(self, table: RouteTable) -> dict[tuple[str, int], HeldSocket]:
        """Hold a socket for every listener of ``table`` not held yet; all or nothing."""
        from tsgate.gateway import ListenError

        wanted = self._endpoints_for(table)
        new: dict[tuple[str, int], HeldSocket] = {}
        try:
            for key, (_, description) in wanted.items():
                if key not in self.sockets:
                    name = f"{key[0]}_{key[1]}"
                    new[key] = hold_socket(self.reactor, key, description, name,
                                           self.shared_sockets)
        except ListenError:
            for held in new.values():
                held.close()
            raise
        return new

    def bound_addresses(self) -> dict[str, str]:
        """Listener name -> the address of the socket its workers accept on."""
        names = {(li.bind, li.port): li.name for li in self.table.listeners}
        return {names.get(key, f"{key[0]}_{key[1]}"): held.address()
                for key, held in sorted(self.sockets.items())}

    def privilegedStartService(self) -> None:
        self.sockets.update(self.bind(self.table))
        super().privilegedStartService()  # type: ignore[no-untyped-call]

    # -- workers -----------------------------------------------------------------------------

    def _fd_layout(self, worker_id: int) -> tuple[dict[int, Any], dict[int, str],
                                                  dict[str, str], int]:
        """A worker's childFDs, --endpoint overrides, LISTEN_* variables, channel fd."""
        child_fds: dict[int, Any] = {0: "w", 1: 1, 2: 2}
        overrides: dict[int, str] = {}
        names = []
        for index, (key, held) in enumerate(sorted(self.sockets.items())):
            child_fds[FIRST_LISTEN_FD + index] = held.worker_socket(worker_id)
            overrides[key[1]] = f"systemd:domain={held.domain}:index={index}"
            names.append(f"tsgate-{key[1]}")
        channel = FIRST_LISTEN_FD + len(self.sockets)
        child_fds[channel] = "r"
        env = {"LISTEN_FDS": str(len(names)), "LISTEN_FDNAMES": ":".join(names)}
        return child_fds, overrides, env, channel

    def spawn(self, worker_id: Optional[int] = None) -> Worker:
        worker = Worker(id=worker_id or next(self._ids), generation=self.generation,
                        started=self.reactor.seconds())
        child_fds, overrides, listen_env, channel = self._fd_layout(worker.id)
        args = [self.executable, "-c", _BOOTSTRAP, *self._worker_args(overrides),
                "--worker-id", str(worker.id), "--worker-channel", str(channel)]
        env = {k: v for k, v in os.environ.items() if not k.startswith("LISTEN_")}
        env.update(listen_env)
        env["PYTHONUNBUFFERED"] = "1"
        protocol = WorkerProcess(self, worker, channel)
        worker.process = self.reactor.spawnProcess(
            protocol, self.executable, args, env=env, path=os.getcwd(), childFDs=child_fds)
        worker.pid = worker.process.pid
        self.workers.append(worker)
        self.stats.inc("workers.started")
        log.info("worker {id} started (pid {pid}, generation {gen})",
                 id=worker.id, pid=worker.pid, gen=worker.generation)
        return worker

    def startService(self) -> None:
        if not self.sockets:
            self.sockets.update(self.bind(self.table))
        super().startService()  # type: ignore[no-untyped-call]
        for _ in range(self.count):
            self.spawn()

    def message(self, worker: Worker, message: dict[str, Any]) -> None:
        kind = message.get("t")
        if kind == "stats":
            worker.stats = message.get("stats") or {}
            worker.ready = bool(message.get("ready"))
            worker.draining = bool(message.get("draining"))
            worker.active = int(message.get("active") or 0)
        elif kind == "connections":
            waiter = worker.connections_waiters.pop(str(message.get("id")), None)
            if waiter is not None:
                waiter.callback([WorkerConnection.from_dict(worker.id, item)
                                 for item in message.get("items") or ()])
        elif kind == "reload":
            if not message.get("ok"):
                for line in message.get("errors") or ():
                    log.error("worker {id}: reload rejected: {line}", id=worker.id, line=line)
                self.error(f"worker {worker.id}: reload rejected")
            self._reload_done(worker)
        if kind == "stats" and worker.ready and worker.generation == self.generation:
            self._reload_done(worker)
            self._retire_old_generation()

    def _reload_done(self, worker: Worker) -> None:
        """One worker switched tables; once all have, the reload is announced (once)."""
        if worker not in self._reload_pending:
            return
        self._reload_pending.discard(worker)
        if not self._reload_pending:
            self._announce_reload()

    def _announce_reload(self) -> None:
        if self._reload_announce is not None:
            listeners, self._reload_announce = self._reload_announce, None
            log.info("configuration reloaded: {n} listener(s), {w} worker(s)",
                     n=listeners, w=self.count)

    def worker_ended(self, worker: Worker, reason: Failure) -> None:
        code = getattr(reason.value, "exitCode", None)
        sig = getattr(reason.value, "signal", None)
        worker.exited = f"signal {sig}" if sig else f"exit {code}"
        worker.ready = False
        for waiter in worker.connections_waiters.values():
            waiter.callback([])
        worker.connections_waiters.clear()
        add_json(self.retired, worker.stats, gauges=False)
        worker.stats = {}
        self.stats.inc("workers.exited")
        current = worker in self.workers
        self._reload_done(worker)
        if current:
            self.workers.remove(worker)
        elif worker in self.retiring:
            self.retiring.remove(worker)
        if current and not (self.stopping or self.draining):
            lived = self.reactor.seconds() - worker.started
            self._quick_deaths = 0 if lived >= RESTART_RESET_AFTER else self._quick_deaths + 1
            delay = min(RESTART_MAX, RESTART_FIRST * (2 ** max(0, self._quick_deaths - 1)))
            log.warn("worker {id} (pid {pid}) ended ({how}); restarting in {delay}s",
                     id=worker.id, pid=worker.pid, how=worker.exited, delay=delay)
            self.error(f"worker {worker.id} ended ({worker.exited}); restarted")
            self.reactor.callLater(delay, self._restart, worker.id)
        else:
            log.info("worker {id} (pid {pid}) exited ({how})",
                     id=worker.id, pid=worker.pid, how=worker.exited)
        self._check_all_ended()

    def _restart(self, worker_id: int) -> None:
        if self.stopping or self.draining:
            return
        self.stats.inc("workers.restarted")
        self.spawn(worker_id)

    def everyone(self) -> list[Worker]:
        return [*self.workers, *self.retiring]

    # -- what the admin server calls ----------------------------------------------------

    def error(self, message: str) -> None:
        self.recent_errors.append((time.time(), message))

    @property
    def ready(self) -> bool:
        return (not self.draining and not self.stopping and len(self.workers) == self.count
                and all(w.ready for w in self.workers))

    def merged_stats(self) -> Stats:
        return merged(self.stats, self.retired, (w.stats for w in self.everyone()))

    def fetch_connections(self, timeout: float = 2.0) -> defer.Deferred[Any]:
        """Every worker's live connections (a worker that does not answer in time: none)."""
        waits = []
        for worker in self.everyone():
            request = str(next(self._requests))
            d: defer.Deferred[Any] = defer.Deferred()
            worker.connections_waiters[request] = d

            def expire(worker: Worker = worker, request: str = request) -> None:
                late = worker.connections_waiters.pop(request, None)
                if late is not None:
                    late.callback([])

            call = self.reactor.callLater(timeout, expire)
            d.addBoth(_cancel_then_pass, call)
            worker.send(f"connections {request}")
            waits.append(d)
        return defer.gatherResults(waits).addCallback(
            lambda lists: [c for items in lists for c in items])

    def reload(self) -> Any:
        """Validate once; then every worker reloads (or a new generation takes over)."""
        try:
            result = self._load()
        except Exception as exc:
            self.stats.inc("config.reload_failed")
            self.error(f"reload failed: {exc}")
            log.error("reload failed: {error}", error=exc)
            return None
        if not result.ok:
            self.stats.inc("config.reload_failed")
            for diagnostic in result.errors:
                log.error("reload rejected: {diagnostic}", diagnostic=str(diagnostic))
            self.error(f"reload rejected: {len(result.errors)} error(s)")
            return result
        wanted = set(self._endpoints_for(result.table))
        if wanted == set(self.sockets):
            self._reload_pending = set(self.workers)
            for worker in self.workers:
                worker.send("reload")
        else:
            from tsgate.gateway import ListenError

            try:
                new = self.bind(result.table)
            except ListenError as exc:
                self.stats.inc("config.reload_failed")
                self.error(str(exc))
                log.error("reload rejected: {error}", error=str(exc))
                return result
            self._new_generation(new, wanted)
            self._reload_pending = set(self.workers)
        self.config = result
        self.table = result.table
        self.stats.inc("config.reload_success")
        # Announced once every worker has switched (see _reload_done), so that a
        # client that waits for the line finds every worker on the new table.
        self._reload_announce = len(result.table.listeners)
        if not self._reload_pending:
            self._announce_reload()
        return result

    def _new_generation(self, new: dict[tuple[str, int], HeldSocket],
                        wanted: set[tuple[str, int]]) -> None:
        """Listening sockets changed: new workers on the new set, the old ones drain."""
        gone = [key for key in self.sockets if key not in wanted]
        self.sockets.update(new)
        for key in gone:
            self.sockets.pop(key).close()
        old, self.workers = self.workers, []
        self.generation += 1
        for worker in old:
            self.spawn(worker.id)
        # The old generation keeps accepting until the new one is ready (no gap).
        self.retiring.extend(old)
        self._retire_when_ready.extend(old)
        log.info("listeners changed: generation {gen} starting; {n} old worker(s) will "
                 "drain once it is ready", gen=self.generation, n=len(old))

    def _retire_old_generation(self) -> None:
        if not self._retire_when_ready or not all(w.ready for w in self.workers):
            return
        old, self._retire_when_ready = self._retire_when_ready, []
        for worker in old:
            worker.send(f"drain {RETIRE_PERIOD}")

    def drain(self, period: Optional[float] = None) -> defer.Deferred[Any]:
        """Stop accepting everywhere; workers finish their connections, then exit."""
        if not self.draining:
            self.draining = True
            self._release_sockets()
            period = self.drain_period if period is None else period
            for worker in self.everyone():
                worker.send(f"drain {period}")
        return self._when_all_ended()

    # -- stopping ------------------------------------------------------------------------

    def _release_sockets(self) -> None:
        for held in self.sockets.values():
            held.close()
        self.sockets.clear()

    def _when_all_ended(self) -> defer.Deferred[Any]:
        d: defer.Deferred[Any] = defer.Deferred()
        self._all_ended.append(d)
        self._check_all_ended()
        return d

    def _check_all_ended(self) -> None:
        if self.everyone() or not (self.stopping or self.draining):
            return
        waiters, self._all_ended = self._all_ended, []
        for d in waiters:
            d.callback(None)

    def stopService(self) -> defer.Deferred[Any]:
        """SIGTERM: every worker drains (its drain period) and exits; then we do."""
        super().stopService()  # type: ignore[no-untyped-call]
        self.stopping = True
        self._release_sockets()
        for worker in self.everyone():
            if worker.process is not None and worker.exited is None:
                try:
                    worker.process.signalProcess("TERM")
                except error.ProcessExitedAlready:
                    pass
        ended = self._when_all_ended()
        # A worker that ignores SIGTERM past its drain period is killed.
        kill = self.reactor.callLater(self.drain_period + 10.0, self._kill_stragglers)
        ended.addBoth(_cancel_then_pass, kill)
        return ended

    def reopen_access_logs(self) -> None:
        """SIGUSR1 to the supervisor: every worker reopens its access-log file."""
        log.info("SIGUSR1: asking {n} worker(s) to reopen the access log",
                 n=len(self.everyone()))
        for worker in self.everyone():
            try:
                worker.process.signalProcess("USR1")
            except (error.ProcessExitedAlready, AttributeError):
                pass

    def _kill_stragglers(self) -> None:
        for worker in self.everyone():
            log.warn("worker {id} (pid {pid}) did not stop: killing it",
                     id=worker.id, pid=worker.pid)
            try:
                worker.process.signalProcess("KILL")
            except (error.ProcessExitedAlready, AttributeError):
                pass


class Aggregate:
    """The whole gateway as the admin server sees it (:class:`tsgate.admin.state.GatewayState`)."""

    def __init__(self, supervisor: Supervisor) -> None:
        self.supervisor = supervisor
        self.last_connections: list[WorkerConnection] = []

    def __getattr__(self, name: str) -> Any:
        # What the admin views read besides the GatewayState protocol
        # (started_at, last_reload, ...) is the supervisor's.
        if name.startswith("__"):
            raise AttributeError(name)
        return getattr(self.supervisor, name)

    @property
    def stats(self) -> Stats:
        return self.supervisor.merged_stats()

    @property
    def config(self) -> Any:
        return self.supervisor.config

    @property
    def table(self) -> RouteTable:
        return self.supervisor.table

    @property
    def ready(self) -> bool:
        return self.supervisor.ready

    @property
    def draining(self) -> bool:
        return self.supervisor.draining

    @property
    def recent_errors(self) -> Sequence[tuple[float, str]]:
        return list(self.supervisor.recent_errors)

    def connections(self) -> Iterable[Any]:
        return list(self.last_connections)

    def refresh_connections(self) -> defer.Deferred[Any]:
        def keep(items: list[WorkerConnection]) -> list[WorkerConnection]:
            self.last_connections = items
            return items

        return self.supervisor.fetch_connections().addCallback(keep)

    def drain(self) -> defer.Deferred[Any]:
        return self.supervisor.drain()

    def reload(self) -> Any:
        return self.supervisor.reload()

    def extend_site(self, option: str, site: Any) -> None:
        """The admin site of a supervisor: ``/connections`` asks every worker; ``/workers``."""
        if option != "admin":
            return
        from tsgate.workers.resources import ConnectionsResource, WorkersResource

        site.resource.putChild(b"connections", ConnectionsResource(self))
        site.resource.putChild(b"workers", WorkersResource(self))

    def workers_view(self) -> list[dict[str, Any]]:
        now = self.supervisor.reactor.seconds()
        out = []
        for worker in sorted(self.supervisor.everyone(), key=lambda w: (w.generation, w.id)):
            counters: dict[str, float] = {}
            for name, _labels, value in worker.stats.get("counters", ()):
                if name.endswith(("downstream_cx_total", "bytes_total")):
                    counters[name] = counters.get(name, 0) + value
            out.append({
                "id": worker.id, "pid": worker.pid, "generation": worker.generation,
                "retiring": worker in self.supervisor.retiring,
                "uptime": round(now - worker.started, 3), "ready": worker.ready,
                "draining": worker.draining, "active_connections": worker.active,
                "counters": counters,
            })
        return out


def worker_arguments(options: Any, option_table: Sequence[Any],
                     flags: Sequence[Any] = ()) -> Callable[[dict[int, str]], list[str]]:
    """
    The ``twistd tsgate`` command line of a worker: the supervisor's own
    options, except what only the supervisor serves (admin, readiness,
    metrics, file watching) and the listening sockets, which are its own.
    """
    parent = getattr(options, "parent", None) or {}
    twistd = ["--nodaemon", "--pidfile="]
    logfile = parent.get("logfile") if hasattr(parent, "get") else None
    if logfile:
        twistd.append(f"--logfile={logfile}")

    def build(overrides: dict[int, str]) -> list[str]:
        args = [*twistd, "tsgate", "--workers", "1"]
        for path in options["config"]:
            args += ["--config", path]
        args += options["gateway"].arguments()  # labels, namespaces, classes, credentials
        for port, description in sorted(overrides.items()):
            args += ["--endpoint", f"{port}={description}"]
        for row in option_table:
            name = row[0]
            if name in ("workers", "worker-id", "worker-channel", "worker-sockets") \
                    or name in GATEWAY_OPTIONS:
                continue
            value = SUPERVISOR_ONLY.get(name, options.get(name))
            if value is None:
                continue
            args += [f"--{name}", str(value)]
        for row in flags:
            if options.get(row[0]):
                args.append(f"--{row[0]}")
        return args

    return build


def build_supervisor(options: Any, reactor: Any,
                     option_table: Sequence[Any]) -> tuple[Supervisor, Aggregate]:
    """The supervisor for parsed options (config loaded and checked once, here)."""
    from tsgate.gateway import listener_endpoint
    from tsgate.tap import config_loader

    load, result = config_loader(options)
    bind_override = options.get("bind")
    overrides = dict(options.get("endpoints") or {})

    def endpoints_for(table: RouteTable) -> dict[tuple[str, int], tuple[int, str]]:
        return {(listener.bind, listener.port):
                (listener.port, listener_endpoint(listener, bind_override, overrides))
                for listener in table.listeners}

    supervisor = Supervisor(
        reactor, options["workers"], load, endpoints_for,
        worker_arguments(options, option_table),
        initial=result, drain_period=options.get("drain-period") or 0.0,
        shared_sockets=options.get("worker-sockets") == "shared",
    )
    return supervisor, Aggregate(supervisor)
