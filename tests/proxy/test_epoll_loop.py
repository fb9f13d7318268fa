"""
The epoll loop's rules one by one (tsgate.proxy.poller): a real epoll set and
real socketpairs, the loop's ``doRead`` called by the test (the reactor's
part), every ``epoll_ctl`` recorded. Events the kernel will not produce on
demand (a hang-up without readability while reading) are scripted. Each
test's docstring names the bug it catches.
"""

from __future__ import annotations

import select
import socket
from collections.abc import Iterator
from typing import Any, Callable, Optional

import pytest
from twisted.internet import error
from twisted.python.failure import Failure

from tests.proxy.test_transport import SelectReactor
from tsgate.proxy import poller
from tsgate.proxy.poller import EpollLoop, ReactorLoop, close_soon, loop_for

pytestmark = pytest.mark.skipif(not hasattr(select, "epoll"), reason="epoll is Linux's")

IN, OUT = select.EPOLLIN, select.EPOLLOUT


class Epoll:
    """The real epoll set, each control call recorded; ``script`` replaces one poll's answer."""

    def __init__(self, real: Any) -> None:
        self.real = real
        self.ops: list[tuple[str, int, int]] = []
        self.script: Optional[list[tuple[int, int]]] = None
        self.poll_error: Optional[BaseException] = None
        self.unregister_error: Optional[OSError] = None
        self.closed = False

    def register(self, fd: int, mask: int) -> None:
        self.ops.append(("register", fd, mask))
        self.real.register(fd, mask)

    def modify(self, fd: int, mask: int) -> None:
        self.ops.append(("modify", fd, mask))
        self.real.modify(fd, mask)

    def unregister(self, fd: int) -> None:
        self.ops.append(("unregister", fd, 0))
        if self.unregister_error is not None:
            raise self.unregister_error
        self.real.unregister(fd)

    def poll(self, timeout: float) -> Any:
        assert timeout == 0
        if self.poll_error is not None:
            raise self.poll_error
        if self.script is not None:
            script, self.script = self.script, None
            return script
        return self.real.poll(0)

    def close(self) -> None:
        self.closed = True
        self.real.close()


class Reactor:
    def __init__(self) -> None:
        self.readers: list[Any] = []
        self.calls: list[tuple[Callable[..., Any], tuple[Any, ...]]] = []

    def addReader(self, d: Any) -> None:
        self.readers.append(d)

    def callLater(self, delay: float, f: Callable[..., Any], *args: Any) -> None:
        assert delay == 0
        self.calls.append((f, args))


class Handler:
    """A lean socket's part the loop calls; ``on_read`` runs inside doRead."""

    def __init__(self, sock: socket.socket, log: list[str], name: str) -> None:
        self.sock = sock
        self.fd = sock.fileno()
        self.log = log
        self.name = name
        self.on_read: Optional[Callable[[], None]] = None
        self.on_write: Optional[Callable[[], None]] = None
        self.lost_error: Optional[Exception] = None

    def doRead(self) -> None:
        self.log.append(f"{self.name}:read")
        try:
            self.sock.recv(65536)
        except OSError:
            pass
        if self.on_read is not None:
            self.on_read()

    def doWrite(self) -> None:
        self.log.append(f"{self.name}:write")
        if self.on_write is not None:
            self.on_write()

    def connectionLost(self, reason: Failure) -> None:
        self.log.append(f"{self.name}:lost:{type(reason.value).__name__}")
        if self.lost_error is not None:
            raise self.lost_error


@pytest.fixture
def env() -> Iterator[Any]:
    reactor = Reactor()
    loop = EpollLoop(reactor)
    epoll = Epoll(loop.epoll)
    loop.epoll = epoll  # type: ignore[assignment]
    socks: list[socket.socket] = []
    log: list[str] = []

    def handler(name: str) -> tuple[Handler, socket.socket]:
        a, b = socket.socketpair()
        a.setblocking(False)
        socks.extend((a, b))
        return Handler(a, log, name), b

    class Env:
        pass

    e = Env()
    e.reactor, e.loop, e.epoll, e.log, e.handler = reactor, loop, epoll, log, handler  # type: ignore[attr-defined]
    yield e
    for s in socks:
        s.close()
    if not epoll.closed:
        epoll.close()


def test_the_loop_is_one_reader_of_the_reactor(env: Any) -> None:
    """Catches: the loop not registered with the reactor; its descriptor not the epoll set's."""
    assert env.reactor.readers == [env.loop]
    assert env.loop.fileno() == env.loop.fd == env.epoll.real.fileno()
    assert env.loop.logPrefix() == "tsgate-epoll" and not env.loop.dispatching


def test_interest_is_one_register_then_modifies_and_nothing_when_unchanged(env: Any) -> None:
    """Catches: ADD instead of MOD on a change; a syscall when nothing changes; wrong masks."""
    h, _ = env.handler("h")
    env.loop.addReader(h)
    env.loop.addReader(h)
    env.loop.addWriter(h)
    env.loop.addWriter(h)
    env.loop.removeReader(h)
    env.loop.removeReader(h)
    env.loop.removeWriter(h)
    env.loop.removeWriter(h)
    env.loop.addWriter(h)
    assert env.epoll.ops == [("register", h.fd, IN), ("modify", h.fd, IN | OUT),
                             ("modify", h.fd, OUT), ("modify", h.fd, 0),
                             ("modify", h.fd, OUT)]
    assert env.loop.kernel[h.fd] == OUT and env.loop.wanted[h.fd] == OUT


def test_a_writer_first_then_a_reader(env: Any) -> None:
    """Catches: addWriter's mask for a new descriptor or its OR with the read bit."""
    h, _ = env.handler("h")
    env.loop.addWriter(h)
    env.loop.addReader(h)
    assert env.epoll.ops == [("register", h.fd, OUT), ("modify", h.fd, IN | OUT)]


def test_removing_what_was_never_asked_changes_nothing(env: Any) -> None:
    """Catches: remove on a descriptor never added (or another's number) touching the set."""
    h, _ = env.handler("h")
    other = Handler(h.sock, env.log, "other")  # the same number, another owner
    env.loop.removeReader(h)
    env.loop.removeWriter(h)
    env.loop.addReader(h)
    env.loop.addWriter(h)
    env.loop.removeReader(other)
    env.loop.removeWriter(other)
    env.loop.discard(other)
    assert env.loop.wanted[h.fd] == IN | OUT and env.loop.handlers[h.fd] is h
    assert [op for op, _, _ in env.epoll.ops] == ["register", "modify"]


def test_events_reach_the_handler_by_interest(env: Any) -> None:
    """Catches: events delivered for interest not asked; read and write swapped."""
    h, peer = env.handler("h")
    env.loop.addReader(h)
    env.loop.doRead()
    assert env.log == []
    peer.sendall(b"x")
    env.loop.doRead()
    assert env.log == ["h:read"]
    env.loop.addWriter(h)
    env.loop.removeReader(h)
    peer.sendall(b"y")
    env.loop.doRead()
    assert env.log == ["h:read", "h:write"]
    # the kernel reports OUT, but the handler no longer wants it: no doWrite
    env.epoll.script = [(h.fd, OUT | IN)]
    env.loop.wanted[h.fd] = IN
    env.loop.doRead()
    assert env.log == ["h:read", "h:write", "h:read"]


def test_changes_inside_a_batch_are_applied_once_at_its_end(env: Any) -> None:
    """Catches: epoll_ctl within the batch; a pause and resume in one batch costing a syscall."""
    h, peer = env.handler("h")
    env.loop.addReader(h)

    def pause_and_resume() -> None:
        env.loop.removeReader(h)
        env.loop.addReader(h)
        env.loop.addWriter(h)
        assert env.loop.dispatching and env.epoll.ops == [("register", h.fd, IN)]

    h.on_read = pause_and_resume
    peer.sendall(b"x")
    env.loop.doRead()
    assert env.epoll.ops == [("register", h.fd, IN), ("modify", h.fd, IN | OUT)]
    assert not env.loop.dispatching and env.loop.dirty == set()


def test_a_descriptor_closed_earlier_in_the_batch_gets_no_event(env: Any) -> None:
    """Catches: events for a descriptor discarded in the same batch still dispatched."""
    a, pa = env.handler("a")
    b, pb = env.handler("b")
    for h in (a, b):
        env.loop.addReader(h)
    a.on_read = lambda: env.loop.discard(b)
    b.on_read = lambda: env.loop.discard(a)
    pa.sendall(b"x")
    pb.sendall(b"x")
    env.loop.doRead()
    assert env.log in (["a:read"], ["b:read"])
    assert env.loop.stale == set() and not env.loop.dispatching


def test_a_stale_number_reused_in_the_batch_is_skipped(env: Any) -> None:
    """Catches: the ``stale`` check dropped (a closed socket's event reaching its heir)."""
    a, _ = env.handler("a")
    b, _ = env.handler("b")
    heir = Handler(b.sock, env.log, "heir")
    for h in (a, b):
        env.loop.addReader(h)
    env.loop.addWriter(b)

    def replace() -> None:
        env.loop.discard(b)
        env.loop.addReader(heir)  # the same number, a new owner, in this batch

    a.on_read = replace
    env.epoll.script = [(a.fd, IN), (b.fd, IN | OUT)]
    env.loop.doRead()
    assert env.log == ["a:read"]
    assert env.loop.handlers[b.fd] is heir and env.loop.stale == set()


def test_no_write_after_the_read_closed_or_handed_over_the_socket(env: Any) -> None:
    """Catches: doWrite called on a handler that its own doRead discarded."""
    h, _ = env.handler("h")
    env.loop.addReader(h)
    env.loop.addWriter(h)
    h.on_read = lambda: env.loop.discard(h)
    env.epoll.script = [(h.fd, IN | OUT)]
    env.loop.doRead()
    assert env.log == ["h:read"]
    g, _ = env.handler("g")
    env.loop.addReader(g)
    env.loop.addWriter(g)
    g.on_read = lambda: env.loop.removeWriter(g)
    env.epoll.script = [(g.fd, IN | OUT)]
    env.loop.doRead()
    assert env.log == ["h:read", "g:read"]


def test_hang_up_while_reading_is_done_while_writing_only_is_lost(env: Any) -> None:
    """Catches: Twisted's rule inverted (CONNECTION_DONE vs CONNECTION_LOST) or HUP ignored."""
    r, _ = env.handler("r")
    w, _ = env.handler("w")
    env.loop.addReader(r)
    env.loop.addWriter(w)
    env.epoll.script = [(r.fd, select.EPOLLHUP), (w.fd, select.EPOLLERR | OUT)]
    env.loop.doRead()
    assert env.log == ["r:lost:ConnectionDone", "w:lost:ConnectionLost"]


def test_a_real_hang_up_of_a_writer_is_lost(env: Any) -> None:
    """Catches: EPOLLHUP/EPOLLERR masks wrong (the kernel's own hang-up event not seen)."""
    w, peer = env.handler("w")
    env.loop.addWriter(w)
    env.loop.doRead()
    assert env.log == ["w:write"]
    peer.close()
    env.loop.doRead()
    assert env.log == ["w:write", "w:lost:ConnectionLost"]


def test_a_hang_up_while_nothing_is_asked_unwatches_until_asked_again(env: Any) -> None:
    """Catches: a hang-up of an idle socket reported, or left in the set (a busy loop)."""
    h, peer = env.handler("h")
    env.loop.addReader(h)
    env.loop.removeReader(h)
    peer.close()
    env.loop.doRead()
    assert env.log == [] and h.fd not in env.loop.kernel
    assert env.epoll.ops[-1] == ("unregister", h.fd, 0)
    env.loop.doRead()
    assert env.log == []
    env.loop.addReader(h)  # asked again: back in the set (ADD), EOF read
    assert env.epoll.ops[-1] == ("register", h.fd, IN)
    env.loop.doRead()
    assert env.log == ["h:read"]


def test_a_hang_up_for_a_descriptor_not_in_the_set_does_not_unregister(env: Any) -> None:
    """Catches: unregister without the kernel entry; its OSError escaping."""
    h, _ = env.handler("h")
    env.loop.handlers[h.fd] = h
    env.epoll.script = [(h.fd, select.EPOLLHUP)]
    env.loop.doRead()
    assert env.epoll.ops == [] and env.log == []
    env.loop.addReader(h)
    env.loop.removeReader(h)
    env.epoll.unregister_error = OSError(9, "bad")
    env.epoll.script = [(h.fd, select.EPOLLHUP)]
    env.loop.doRead()
    assert h.fd not in env.loop.kernel and env.log == []


def test_a_handler_raising_is_lost_with_that_error_and_the_batch_goes_on(env: Any) -> None:
    """Catches: a handler's exception escaping the loop (stopping every other socket)."""
    a, pa = env.handler("a")
    b, pb = env.handler("b")
    for h in (a, b):
        env.loop.addReader(h)

    def boom() -> None:
        raise RuntimeError("boom")

    a.on_read = boom
    a.lost_error = RuntimeError("again")
    env.epoll.script = [(a.fd, IN), (b.fd, IN)]
    env.loop.doRead()
    assert env.log == ["a:read", "a:lost:RuntimeError", "b:read"]
    assert not env.loop.dispatching


def test_an_interrupted_poll_is_no_batch(env: Any) -> None:
    """Catches: EINTR escaping, or leaving the loop marked as dispatching."""
    env.epoll.poll_error = InterruptedError()
    env.loop.doRead()
    assert not env.loop.dispatching


class Closing:
    def __init__(self, loop: Any, reactor: Any, log: list[str], name: str,
                 then: Optional[Any] = None, fails: bool = False) -> None:
        self.loop, self.reactor, self.log, self.name = loop, reactor, log, name
        self.then, self.fails = then, fails

    def close_if_flushed(self) -> None:
        self.log.append(f"close:{self.name}")
        if self.then is not None:
            close_soon(self.then)  # a close that asks for another
        if self.fails:
            raise RuntimeError("close failed")


def test_closes_asked_in_a_batch_run_at_its_end_even_chained(env: Any) -> None:
    """Catches: closes deferred to a later turn; a close asked by a close lost; errors escaping."""
    h, peer = env.handler("h")
    env.loop.addReader(h)
    second = Closing(env.loop, env.reactor, env.log, "second")
    first = Closing(env.loop, env.reactor, env.log, "first", then=second, fails=True)
    h.on_read = lambda: close_soon(first)
    peer.sendall(b"x")
    env.loop.doRead()
    assert env.log == ["h:read", "close:first", "close:second"]
    assert env.reactor.calls == [] and env.loop.closing == []


def test_closes_asked_outside_a_batch_share_one_call_on_the_next_turn() -> None:
    """Catches: one timer per close; the due list not emptied; a close done at once."""
    reactor = Reactor()
    loop = ReactorLoop(SelectReactor())
    log: list[str] = []
    a, b = (Closing(loop, reactor, log, name) for name in "ab")
    close_soon(a)
    close_soon(b)
    assert log == [] and len(reactor.calls) == 1 and loop.due == [a, b]
    f, args = reactor.calls.pop()
    f(*args)
    assert log == ["close:a", "close:b"] and loop.due == []
    close_soon(a)
    assert len(reactor.calls) == 1


def test_a_socket_handed_over_while_still_in_the_set(env: Any) -> None:
    """Catches: FileExistsError (a connector's socket given to its transport) escaping."""
    old, peer = env.handler("old")
    env.loop.addWriter(old)
    env.loop.discard(old)  # handed over: no syscall, still in the epoll set
    new = Handler(old.sock, env.log, "new")
    env.loop.addReader(new)
    assert env.epoll.ops == [("register", old.fd, OUT), ("register", old.fd, IN),
                             ("modify", old.fd, IN)]
    peer.sendall(b"x")
    env.loop.doRead()
    assert env.log == ["new:read"]


def test_a_descriptor_the_set_lost_is_registered_again(env: Any) -> None:
    """Catches: FileNotFoundError on modify escaping (a socket that left the set)."""
    h, _ = env.handler("h")
    env.loop.addReader(h)
    env.epoll.real.unregister(h.fd)  # behind the loop's back
    env.loop.addWriter(h)
    assert env.epoll.ops[-2:] == [("modify", h.fd, IN | OUT), ("register", h.fd, IN | OUT)]
    env.loop.doRead()
    assert env.log == ["h:write"]


def test_discard_forgets_and_applying_a_discarded_descriptor_does_nothing(env: Any) -> None:
    """Catches: discard leaving interest behind; _apply re-adding a discarded descriptor."""
    h, _ = env.handler("h")
    env.loop.addReader(h)
    env.loop.discard(h)
    assert h.fd not in env.loop.handlers and h.fd not in env.loop.wanted
    assert h.fd not in env.loop.kernel and env.loop.stale == set()
    env.loop._apply(h.fd)
    env.loop.removeReader(h)
    assert env.epoll.ops == [("register", h.fd, IN)]


def test_reactor_shutdown_loses_every_socket_and_the_loop(env: Any) -> None:
    """Catches: a socket missed at shutdown; one failing stopping the rest; the epoll set kept."""
    a, _ = env.handler("a")
    b, _ = env.handler("b")
    env.loop.addReader(a)
    env.loop.addWriter(b)
    a.lost_error = RuntimeError("boom")
    poller._LOOPS[id(env.reactor)] = env.loop
    env.loop.connectionLost(Failure(error.ConnectionLost()))
    assert sorted(env.log) == ["a:lost:ConnectionLost", "b:lost:ConnectionLost"]
    assert env.loop.handlers == {} and env.loop.wanted == {} and env.loop.kernel == {}
    assert env.epoll.closed and id(env.reactor) not in poller._LOOPS


def test_loop_for_makes_one_loop_per_reactor_of_the_right_kind(monkeypatch: Any) -> None:
    """Catches: a loop per call; an id reused by another reactor getting the old loop."""
    from twisted.internet.epollreactor import EPollReactor

    real = EPollReactor()
    try:
        loop = loop_for(real)
        assert isinstance(loop, EpollLoop) and loop_for(real) is loop
        fake = SelectReactor()
        other = loop_for(fake)
        assert isinstance(other, ReactorLoop) and loop_for(fake) is other
        poller._LOOPS[id(fake)] = loop  # as if fake took a dead reactor's id
        assert loop_for(fake) is not loop and loop_for(fake).reactor is fake
        monkeypatch.delattr(select, "epoll")
        poller._LOOPS.pop(id(real))
        assert isinstance(loop_for(real), ReactorLoop)
    finally:
        poller._LOOPS.pop(id(real), None)
        loop.epoll.close()


def test_the_reactor_loop_is_the_reactors_own_fd_set() -> None:
    """Catches: ReactorLoop's methods not the reactor's; discard leaving reader or writer."""
    reactor = SelectReactor()
    loop = ReactorLoop(reactor)
    d = object()
    loop.addReader(d)
    loop.addWriter(d)
    assert reactor.readers == {d} and reactor.writers == {d}
    loop.removeReader(d)
    loop.removeWriter(d)
    assert reactor.readers == set() and reactor.writers == set()
    loop.addReader(d)
    loop.addWriter(d)
    loop.discard(d)
    assert reactor.readers == set() and reactor.writers == set()
    assert loop.due == [] and loop.dispatching is False and loop.reactor is reactor


@pytest.mark.parametrize("before,change,after", [
    (OUT, "addReader", IN | OUT), (IN | OUT, "removeReader", OUT),
    (IN, "addWriter", IN | OUT), (IN | OUT, "removeWriter", IN),
])
def test_each_change_inside_a_batch_is_applied_at_its_end(env: Any, before: int, change: str,
                                                          after: int) -> None:
    """Catches: a change of interest made during a batch never reaching the epoll set."""
    h, peer = env.handler("h")
    g, _ = env.handler("g")
    env.loop.addReader(h)
    if before & IN:
        env.loop.addReader(g)
    if before & OUT:
        env.loop.addWriter(g)
    done = len(env.epoll.ops)
    h.on_read = lambda: getattr(env.loop, change)(g)
    peer.sendall(b"x")
    env.loop.doRead()
    assert env.epoll.ops[done:] == [("modify", g.fd, after)]


def test_a_pause_and_resume_in_one_batch_cost_nothing(env: Any) -> None:
    """Catches: _apply's "nothing changed" test (``or`` → ``and``): a MOD per batch."""
    h, peer = env.handler("h")
    g, _ = env.handler("g")
    env.loop.addReader(h)

    def toggle() -> None:
        env.loop.removeReader(h)
        env.loop.addReader(h)
        env.loop.addReader(g)  # a new socket asked for, then given up, in the batch
        env.loop.removeReader(g)

    h.on_read = toggle
    peer.sendall(b"x")
    env.loop.doRead()
    assert env.epoll.ops == [("register", h.fd, IN)]


def test_each_event_of_a_batch_is_handled_whatever_came_before(env: Any) -> None:
    """
    Catches: ``continue`` → ``break`` (an unknown descriptor, an idle hang-up
    or a lost socket ending the batch); ``stale or`` for ``stale and`` (one
    closed socket skipping every later one, reads or writes).
    """
    a, _ = env.handler("a")
    b, _ = env.handler("b")
    idle, _ = env.handler("idle")
    lost, _ = env.handler("lost")
    c, _ = env.handler("c")
    env.loop.addReader(a)
    env.loop.addReader(b)
    env.loop.addReader(idle)
    env.loop.removeReader(idle)
    env.loop.addReader(lost)
    env.loop.addReader(c)
    env.loop.addWriter(c)
    a.on_read = lambda: env.loop.discard(b)
    env.epoll.script = [(a.fd, IN), (999, IN), (idle.fd, select.EPOLLHUP),
                        (lost.fd, select.EPOLLHUP), (b.fd, IN), (c.fd, IN | OUT)]
    env.loop.doRead()
    assert env.log == ["a:read", "lost:lost:ConnectionDone", "c:read", "c:write"]


def test_only_the_events_asked_for_are_dispatched(env: Any) -> None:
    """Catches: ``mask | _IN`` / ``event | _OUT`` (a read or write the socket did not ask for)."""
    w, _ = env.handler("w")
    r, _ = env.handler("r")
    env.loop.addWriter(w)
    env.loop.addReader(r)
    env.loop.addWriter(r)
    env.epoll.script = [(w.fd, IN | OUT), (r.fd, IN)]
    env.loop.doRead()
    assert env.log == ["w:write", "r:read"]


def test_discard_after_an_idle_hang_up_unwatched_it(env: Any) -> None:
    """Catches: discard's ``kernel.pop`` without its default (KeyError for an unwatched socket)."""
    h, peer = env.handler("h")
    env.loop.addReader(h)
    env.loop.removeReader(h)
    peer.close()
    env.loop.doRead()
    assert h.fd not in env.loop.kernel
    env.loop.discard(h)
    assert h.fd not in env.loop.handlers


def test_failures_are_logged_with_what_failed(env: Any, monkeypatch: Any) -> None:
    """Catches: the error lines' messages lost or changed (what an operator greps for)."""
    from twisted.logger import Logger

    events: list[dict[str, Any]] = []
    observer: Any = events.append
    monkeypatch.setattr(poller, "log", Logger(namespace="tsgate.proxy", observer=observer))
    h, peer = env.handler("h")
    env.loop.addReader(h)

    def boom() -> None:
        raise RuntimeError("boom")

    h.on_read = boom
    h.lost_error = RuntimeError("again")
    failing = Closing(env.loop, env.reactor, [], "x", fails=True)
    h.on_write = None
    env.epoll.script = [(h.fd, IN)]
    env.loop.closing.append(failing)
    env.loop.doRead()
    env.loop.connectionLost(Failure(error.ConnectionLost()))
    assert [e["log_format"] for e in events] == [
        "lean socket event failed", "connectionLost failed", "close failed",
        "connectionLost failed"]


def test_shutdown_of_a_loop_never_registered_per_reactor(env: Any) -> None:
    """Catches: ``_LOOPS.pop`` without its default (KeyError at the reactor's shutdown)."""
    poller._LOOPS.pop(id(env.reactor), None)
    env.loop.connectionLost(Failure(error.ConnectionDone()))
    assert env.epoll.closed
