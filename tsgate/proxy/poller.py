"""
Where the lean sockets wait for readiness: one ``epoll`` of our own, or the reactor.

Through the reactor, each readiness event of a relayed socket costs Twisted's
dispatch (``_doReadOrWrite`` under ``log.callWithLogger`` and a context
push: about 4 µs in Python), and each change of interest an
``epoll_ctl`` ``DEL`` or ``ADD`` with the reactor's bookkeeping (7 µs for an
add and a remove): a short proxied connection has 6-10 of each
(bench/results/notes-2026-12-02.md). :class:`EpollLoop` keeps the lean
sockets in an epoll instance of its own, registered with the reactor as
*one* reader (``IReactorFDSet.addReader``): when the reactor finds it
readable, it collects the ready sockets with ``epoll_wait(0)`` and calls
their ``doRead``/``doWrite``/``connectionLost`` directly, in Twisted's order
and with Twisted's disconnect rules. A change of interest is one
``EPOLL_CTL_MOD``; a closed socket leaves the epoll set with its ``close``
(no ``DEL``).

It needs ``select.epoll`` (Linux) and a reactor that is one of Twisted's own
poll-style reactors; anything else (fakes in tests, other platforms) gets a
:class:`ReactorLoop`: the reactor's own ``addReader``/``addWriter``.
Descriptors given to a loop have an ``fd`` attribute (their ``fileno()``).
"""

from __future__ import annotations

import select
from typing import Any

from twisted.internet.main import CONNECTION_DONE, CONNECTION_LOST
from twisted.logger import Logger
from twisted.python.failure import Failure

log = Logger(namespace="tsgate.proxy")

_IN: int = getattr(select, "EPOLLIN", 1)
_OUT: int = getattr(select, "EPOLLOUT", 4)
_DISCONNECTED: int = getattr(select, "EPOLLHUP", 16) | getattr(select, "EPOLLERR", 8)


class ReactorLoop:
    """The reactor's own ``IReactorFDSet`` (descriptors are the reactor's selectables)."""

    __slots__ = ("reactor", "addReader", "removeReader", "addWriter", "removeWriter", "due")

    #: never inside a batch of its own (closes wait for the reactor's next turn)
    dispatching = False

    def __init__(self, reactor: Any) -> None:
        self.reactor = reactor
        #: transports to close on the reactor's next turn (close_soon)
        self.due: list[Any] = []
        self.addReader = reactor.addReader
        self.removeReader = reactor.removeReader
        self.addWriter = reactor.addWriter
        self.removeWriter = reactor.removeWriter

    def discard(self, descriptor: Any) -> None:
        """Stop watching ``descriptor`` for good (its socket is about to close)."""
        self.removeReader(descriptor)
        self.removeWriter(descriptor)


class EpollLoop:
    """The lean sockets' own epoll set, one reader of the reactor (module docstring)."""

    def __init__(self, reactor: Any) -> None:
        self.reactor = reactor
        self.epoll = select.epoll()
        self.fd = self.epoll.fileno()
        #: fd -> the descriptor watching it
        self.handlers: dict[int, Any] = {}
        #: fd -> the events asked for; fd -> the events the epoll set has
        #: (absent: not in the set)
        self.wanted: dict[int, int] = {}
        self.kernel: dict[int, int] = {}
        #: while a batch of events is handled, changes of interest wait in
        #: ``dirty`` until its end (a pause and a resume in one batch, as a
        #: connection that decides and connects at once does, cost nothing);
        #: descriptors closed meanwhile go to ``stale`` (their numbers may be
        #: reused by sockets opened in the same batch)
        self.dirty: set[int] = set()
        self.stale: set[int] = set()
        #: transports whose close (``loseConnection`` with nothing to flush)
        #: was asked for in this batch: done at its end, not a turn later
        self.closing: list[Any] = []
        #: ... and those asked for outside a batch: on the reactor's next turn
        self.due: list[Any] = []
        self.dispatching = False
        reactor.addReader(self)

    # -- IReactorFDSet (the part the lean sockets use) ---------------------------

    def addReader(self, descriptor: Any) -> None:
        fd = descriptor.fd
        if self.handlers.get(fd) is not descriptor:
            # new here, or a socket handed over (a connector's to its transport)
            self.handlers[fd] = descriptor
            mask = _IN
        else:
            old = self.wanted.get(fd, 0)
            if old & _IN:
                return
            mask = old | _IN
        self.wanted[fd] = mask
        if self.dispatching:
            self.dirty.add(fd)
        else:
            self._apply(fd)

    def addWriter(self, descriptor: Any) -> None:
        fd = descriptor.fd
        if self.handlers.get(fd) is not descriptor:
            # new here, or a socket handed over (a connector's to its transport)
            self.handlers[fd] = descriptor
            mask = _OUT
        else:
            old = self.wanted.get(fd, 0)
            if old & _OUT:
                return
            mask = old | _OUT
        self.wanted[fd] = mask
        if self.dispatching:
            self.dirty.add(fd)
        else:
            self._apply(fd)

    def removeReader(self, descriptor: Any) -> None:
        fd = descriptor.fd
        old = self.wanted.get(fd, 0)
        if old & _IN and self.handlers.get(fd) is descriptor:
            self.wanted[fd] = old & ~_IN
            if self.dispatching:
                self.dirty.add(fd)
            else:
                self._apply(fd)

    def removeWriter(self, descriptor: Any) -> None:
        fd = descriptor.fd
        old = self.wanted.get(fd, 0)
        if old & _OUT and self.handlers.get(fd) is descriptor:
            self.wanted[fd] = old & ~_OUT
            if self.dispatching:
                self.dirty.add(fd)
            else:
                self._apply(fd)

    def discard(self, descriptor: Any) -> None:
        """
        Forget ``descriptor``, whose socket is about to close (or to be handed
        over): the close takes it out of the epoll set, no system call here.
        """
        fd = descriptor.fd
        if self.handlers.get(fd) is descriptor:
            del self.handlers[fd]
            self.wanted.pop(fd, None)
            self.kernel.pop(fd, None)
            if self.dispatching:
                self.stale.add(fd)

    def _apply(self, fd: int) -> None:
        """Bring the epoll set in line with what ``fd``'s descriptor asks for."""
        mask = self.wanted.get(fd)
        if mask is None:
            return  # discarded since
        have = self.kernel.get(fd)
        if have == mask or (have is None and not mask):
            return
        self.kernel[fd] = mask
        try:
            if have is None:
                self.epoll.register(fd, mask)
            else:
                self.epoll.modify(fd, mask)
        except FileExistsError:  # handed over: still in the set under the old owner
            self.epoll.modify(fd, mask)
        except FileNotFoundError:  # left the set (a hang-up while unwatched)
            self.epoll.register(fd, mask)

    # -- the reactor's reader -------------------------------------------------------

    def fileno(self) -> int:
        return self.fd

    def logPrefix(self) -> str:
        return "tsgate-epoll"

    def doRead(self) -> None:
        """Some lean sockets are ready: handle each event as the reactor would."""
        try:
            events = self.epoll.poll(0)
        except InterruptedError:
            return None
        handlers = self.handlers
        wanted = self.wanted
        stale = self.stale
        self.dispatching = True
        try:
            for fd, event in events:
                handler: Any = handlers.get(fd)
                if handler is None or (stale and fd in stale):
                    continue
                mask = wanted.get(fd, 0)
                try:
                    if event & _DISCONNECTED and not event & _IN:
                        if not mask:
                            # Hung up while nothing is asked of it: out of the set
                            # (as the reactor would not watch it) until asked again.
                            if self.kernel.pop(fd, None) is not None:
                                try:
                                    self.epoll.unregister(fd)
                                except OSError:
                                    pass
                            continue
                        # Reading: a clean close; else an error (Twisted's rule).
                        handler.connectionLost(Failure(
                            CONNECTION_DONE if mask & _IN else CONNECTION_LOST))
                        continue
                    if event & _IN and mask & _IN:
                        handler.doRead()
                    if event & _OUT and wanted.get(fd, 0) & _OUT:
                        still = handlers.get(fd)  # not closed or handed over by doRead
                        if still is handler and not (stale and fd in stale):
                            still.doWrite()
                except Exception:
                    log.failure("lean socket event failed")
                    try:
                        handler.connectionLost(Failure())
                    except Exception:
                        log.failure("connectionLost failed")
        finally:
            while self.closing:
                closing, self.closing = self.closing, []
                for transport in closing:
                    try:
                        transport.close_if_flushed()
                    except Exception:
                        log.failure("close failed")
            self.dispatching = False
            if stale:
                stale.clear()
            dirty = self.dirty
            if dirty:
                for fd in dirty:
                    self._apply(fd)
                dirty.clear()
        return None

    def connectionLost(self, reason: Failure) -> None:
        """The reactor is shutting down (``removeAll``): every lean socket with it."""
        handlers, self.handlers = self.handlers, {}
        self.wanted, self.kernel = {}, {}
        self.dirty.clear()
        for handler in handlers.values():
            try:
                handler.connectionLost(reason)
            except Exception:
                log.failure("connectionLost failed")
        try:
            self.epoll.close()
        except OSError:
            pass
        _LOOPS.pop(id(self.reactor), None)


#: one loop per reactor (a process has one)
_LOOPS: dict[int, Any] = {}


def _own_epoll(reactor: Any) -> bool:
    """Whether the reactor is one of Twisted's poll-style reactors and epoll exists."""
    if not hasattr(select, "epoll"):
        return False
    try:
        from twisted.internet.posixbase import _PollLikeMixin
    except ImportError:  # pragma: no cover
        return False
    return isinstance(reactor, _PollLikeMixin)


def loop_for(reactor: Any) -> Any:
    """The loop lean sockets of ``reactor`` register with (made on first use)."""
    loop = _LOOPS.get(id(reactor))
    if loop is None or loop.reactor is not reactor:
        loop = EpollLoop(reactor) if _own_epoll(reactor) else ReactorLoop(reactor)
        _LOOPS[id(reactor)] = loop
    return loop


def close_soon(transport: Any) -> None:
    """
    ``transport.close_if_flushed()`` at the end of the epoll loop's batch of
    events when one is being handled, else on the reactor's next turn together
    with every other close asked for in this turn (one timer call for all of
    them); never within the caller's own call, no writability event per socket.
    """
    loop = transport.loop
    if loop.dispatching:
        loop.closing.append(transport)
        return
    if not loop.due:
        transport.reactor.callLater(0, _close_due, loop)
    loop.due.append(transport)


def _close_due(loop: Any) -> None:
    due, loop.due = loop.due, []
    for transport in due:
        transport.close_if_flushed()
