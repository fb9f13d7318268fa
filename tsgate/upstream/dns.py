"""
Live DNS for ``resolution: DNS`` / ``DNS_ROUND_ROBIN`` clusters (and hosts
with no ServiceEntry, resolved as written).

A name is resolved when a cluster first needs it, then again every
``--dns-refresh-rate`` seconds (Istio's default 60 s), or sooner when the
answer's TTL is shorter. Resolution is asynchronous (``twisted.names``): the
reactor never blocks. A failed refresh keeps the last good addresses and is
retried sooner. Until a name's first answer arrives, connections go to the
name itself (Twisted resolves it at connect time, off the reactor thread).

``generation`` changes whenever any name's addresses change, so the balancer
rebuilds a cluster's hosts only then.
"""

from __future__ import annotations

import socket
from typing import Any, Callable, Optional

from twisted.internet import defer
from twisted.logger import Logger

log = Logger(namespace="tsgate.dns")

#: Istio's default DNS refresh rate.
DEFAULT_REFRESH_RATE = 60.0
#: never refresh more often than this, whatever the TTL says
MIN_REFRESH = 1.0
#: retry a failed refresh after this long (or the refresh rate, if shorter)
FAILURE_RETRY = 5.0

#: resolver(name) -> Deferred firing with (addresses in answer order, min TTL or None)
Resolver = Callable[[str], "defer.Deferred[tuple[list[str], Optional[float]]]"]


def system_lookup(name: str) -> defer.Deferred[tuple[list[str], Optional[float]]]:
    """getaddrinfo in the reactor's thread pool (search domains apply; no TTL)."""
    from twisted.internet import threads

    def lookup() -> tuple[list[str], Optional[float]]:
        infos = socket.getaddrinfo(name, None, type=socket.SOCK_STREAM)
        return [str(info[4][0]) for info in infos], None

    return threads.deferToThread(lookup)


def names_resolver(resolver: Any = None,
                   fallback: Optional[Resolver] = system_lookup) -> Resolver:
    """
    A Resolver over ``twisted.names`` (resolv.conf and /etc/hosts): A, else
    AAAA, with their TTLs. A name it cannot answer (a short Kubernetes name
    that needs resolv.conf's search domains, which ``twisted.names`` does not
    apply) goes to ``fallback``: getaddrinfo off the reactor thread.
    """
    from twisted.names import client, dns

    if resolver is None:
        resolver = client.getResolver()

    def records(result: Any, kind: int) -> tuple[list[str], Optional[float]]:
        answers = result[0]
        out: list[str] = []
        ttls: list[float] = []
        for rr in answers:
            if rr.type != kind:
                continue
            if kind == dns.A:
                out.append(rr.payload.dottedQuad())
            else:
                out.append(socket.inet_ntop(socket.AF_INET6, rr.payload.address))
            ttls.append(float(rr.ttl))
        return out, (min(ttls) if ttls else None)

    @defer.inlineCallbacks
    def resolve(name: str) -> Any:
        try:
            v4 = yield resolver.lookupAddress(name)
            found = records(v4, dns.A)
            if found[0]:
                return found
        except Exception:  # NXDOMAIN for A may still have AAAA
            pass
        try:
            v6 = yield resolver.lookupIPV6Address(name)
            found = records(v6, dns.AAAA)
            if found[0]:
                return found
        except Exception:
            if fallback is None:
                raise
        if fallback is None:
            raise LookupError(f"no A or AAAA records for {name}")
        found = yield fallback(name)
        if not found[0]:
            raise LookupError(f"no addresses for {name}")
        return found

    return resolve


class _Entry:
    __slots__ = ("addresses", "ttl", "call", "last_error", "resolved_at", "refreshes",
                 "failures", "pending")

    def __init__(self) -> None:
        self.addresses: tuple[str, ...] = ()
        self.ttl: Optional[float] = None
        self.call: Any = None
        self.last_error = ""
        self.resolved_at = 0.0
        self.refreshes = 0
        self.failures = 0
        self.pending = False


class DnsRefresher:
    def __init__(self, reactor: Any, resolver: Optional[Resolver] = None,
                 refresh_rate: float = DEFAULT_REFRESH_RATE,
                 on_change: Optional[Callable[[str, tuple[str, ...]], None]] = None) -> None:
        self.reactor = reactor
        self._resolver = resolver
        self.refresh_rate = refresh_rate
        self.on_change = on_change
        self.generation = 0
        self.entries: dict[str, _Entry] = {}
        self.stopped = False

    @property
    def resolver(self) -> Resolver:
        if self._resolver is None:
            self._resolver = names_resolver()
        return self._resolver

    def addresses(self, name: str) -> tuple[str, ...]:
        """The last good addresses of ``name`` (empty until answered); starts refreshing it."""
        entry = self.entries.get(name)
        if entry is None:
            entry = self.entries[name] = _Entry()
            self._resolve(name, entry)
        return entry.addresses

    def _resolve(self, name: str, entry: _Entry) -> None:
        if self.stopped or entry.pending:
            return
        entry.call = None
        entry.pending = True
        try:
            d = self.resolver(name)
        except Exception as exc:
            d = defer.fail(exc)
        d.addCallbacks(self._resolved, self._failed, callbackArgs=(name, entry),
                       errbackArgs=(name, entry))

    def _resolved(self, result: tuple[list[str], Optional[float]], name: str,
                  entry: _Entry) -> None:
        entry.pending = False
        addresses, ttl = result
        entry.refreshes += 1
        entry.resolved_at = self.reactor.seconds()
        entry.ttl = ttl
        entry.last_error = ""
        found = tuple(dict.fromkeys(addresses))  # answer order, no duplicates
        if found and found != entry.addresses:
            previous = entry.addresses
            entry.addresses = found
            self.generation += 1
            if previous:
                log.info("dns: {name} now resolves to {addresses}", name=name,
                         addresses=", ".join(found))
            if self.on_change is not None:
                self.on_change(name, found)
        elif not found:
            entry.failures += 1
            entry.last_error = "empty answer"
        delay = self.refresh_rate
        if ttl is not None:
            delay = min(delay, max(MIN_REFRESH, ttl))
        self._schedule(name, entry, delay)

    def _failed(self, failure: Any, name: str, entry: _Entry) -> None:
        entry.pending = False
        entry.failures += 1
        first = not entry.last_error  # log once per run of failures
        entry.last_error = failure.getErrorMessage() or type(failure.value).__name__
        if first:
            log.warn(
                "dns: resolving {name} failed ({why}); keeping {addresses}", name=name,
                why=entry.last_error, addresses=", ".join(entry.addresses) or "nothing")
        self._schedule(name, entry, min(self.refresh_rate, FAILURE_RETRY))

    def _schedule(self, name: str, entry: _Entry, delay: float) -> None:
        if self.stopped:
            return
        entry.call = self.reactor.callLater(max(MIN_REFRESH, delay), self._resolve, name, entry)

    def stop(self) -> None:
        self.stopped = True
        for entry in self.entries.values():
            if entry.call is not None and entry.call.active():
                entry.call.cancel()
            entry.call = None

    def view(self) -> dict[str, Any]:
        return {
            name: {"addresses": list(e.addresses), "ttl": e.ttl, "refreshes": e.refreshes,
                   "failures": e.failures, "last_error": e.last_error or None}
            for name, e in sorted(self.entries.items())
        }
