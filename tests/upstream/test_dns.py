"""Live DNS refresh with an injected resolver and clock (no network)."""

from __future__ import annotations

from typing import Any, Optional

from twisted.internet import defer
from twisted.internet.task import Clock

from tsgate.upstream.dns import DnsRefresher, names_resolver


class Resolver:
    def __init__(self) -> None:
        self.calls: list[str] = []
        self.pending: list[defer.Deferred] = []

    def __call__(self, name: str) -> defer.Deferred:
        self.calls.append(name)
        d: defer.Deferred = defer.Deferred()
        self.pending.append(d)
        return d

    def answer(self, addresses: list[str], ttl: Optional[float] = None) -> None:
        self.pending.pop(0).callback((addresses, ttl))

    def fail(self) -> None:
        self.pending.pop(0).errback(LookupError("SERVFAIL"))


def test_first_use_resolves_then_refreshes_at_the_rate() -> None:
    clock, resolver = Clock(), Resolver()
    dns = DnsRefresher(clock, resolver, refresh_rate=60)
    assert dns.addresses("db.example") == ()  # not yet: callers connect by name meanwhile
    assert resolver.calls == ["db.example"]
    resolver.answer(["10.0.0.1", "10.0.0.2"], ttl=300)
    assert dns.addresses("db.example") == ("10.0.0.1", "10.0.0.2")
    assert dns.generation == 1
    clock.advance(59)
    assert len(resolver.calls) == 1
    clock.advance(1)
    assert len(resolver.calls) == 2
    resolver.answer(["10.0.0.1", "10.0.0.2"], ttl=300)
    assert dns.generation == 1  # same answer: nothing to rebuild
    clock.advance(60)
    resolver.answer(["10.0.0.3"], ttl=300)
    assert dns.addresses("db.example") == ("10.0.0.3",)
    assert dns.generation == 2


def test_a_shorter_ttl_refreshes_sooner() -> None:
    clock, resolver = Clock(), Resolver()
    dns = DnsRefresher(clock, resolver, refresh_rate=60)
    dns.addresses("a.example")
    resolver.answer(["10.0.0.1"], ttl=5)
    clock.advance(5)
    assert len(resolver.calls) == 2


def test_failed_refresh_keeps_the_last_good_addresses_and_retries() -> None:
    clock, resolver = Clock(), Resolver()
    dns = DnsRefresher(clock, resolver, refresh_rate=60)
    dns.addresses("a.example")
    resolver.answer(["10.0.0.1"])
    clock.advance(60)
    resolver.fail()
    assert dns.addresses("a.example") == ("10.0.0.1",)
    assert dns.view()["a.example"]["last_error"] == "SERVFAIL"
    clock.advance(5)  # retried sooner than the refresh rate
    assert len(resolver.calls) == 3
    resolver.answer([])  # an empty answer is a failure too
    assert dns.addresses("a.example") == ("10.0.0.1",)


def test_stop_cancels_refreshes() -> None:
    clock, resolver = Clock(), Resolver()
    dns = DnsRefresher(clock, resolver, refresh_rate=60)
    dns.addresses("a.example")
    resolver.answer(["10.0.0.1"])
    dns.stop()
    assert clock.getDelayedCalls() == []


def test_names_resolver_reads_a_and_aaaa_records() -> None:
    from twisted.names import dns

    class Fake:
        def lookupAddress(self, name: str) -> Any:
            if name == "v6only":
                return defer.fail(LookupError("no A"))
            rr = dns.RRHeader(name, dns.A, ttl=42, payload=dns.Record_A("10.1.2.3", 42))
            cname = dns.RRHeader(name, dns.CNAME, payload=dns.Record_CNAME(b"x"))
            return defer.succeed(([cname, rr], [], []))

        def lookupIPV6Address(self, name: str) -> Any:
            rr = dns.RRHeader(name, dns.AAAA, ttl=7, payload=dns.Record_AAAA("2001:db8::1", 7))
            return defer.succeed(([rr], [], []))

    resolve = names_resolver(Fake())
    got: list[Any] = []
    resolve("v4").addCallback(got.append)
    resolve("v6only").addCallback(got.append)
    assert got == [(["10.1.2.3"], 42.0), (["2001:db8::1"], 7.0)]


def test_names_resolver_falls_back_to_the_system_for_short_names() -> None:
    class Nothing:
        def lookupAddress(self, name: str) -> Any:
            return defer.fail(LookupError("NXDOMAIN"))

        def lookupIPV6Address(self, name: str) -> Any:
            return defer.fail(LookupError("NXDOMAIN"))

    def system(name: str) -> defer.Deferred:
        return defer.succeed(([f"10.0.0.{len(name)}"], None))

    got: list[Any] = []
    names_resolver(Nothing(), fallback=system)("echo").addCallback(got.append)
    assert got == [(["10.0.0.4"], None)]
    failed: list[Any] = []
    names_resolver(Nothing(), fallback=None)("echo").addErrback(failed.append)
    assert failed and failed[0].check(LookupError)
