"""
DNS refresh (tsgate/upstream/dns.py), what ``/debug`` and the log show of
it: the per-name view, the counters, the change callback, the log lines, and
the edge cases of the resolver itself (Envoy's STRICT_DNS/LOGICAL_DNS
clusters keep the last good answer across failures). Each test names the
mutants of ``mutmut`` it was written to kill.
"""

from __future__ import annotations

from typing import Any, cast

import pytest
from twisted.internet import defer
from twisted.internet.task import Clock
from twisted.logger import Logger, formatEvent

from tests.upstream.test_dns import Resolver
from tsgate.upstream import dns as dns_module
from tsgate.upstream.dns import DnsRefresher, names_resolver, system_lookup


@pytest.fixture
def logged(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    lines: list[str] = []
    monkeypatch.setattr(dns_module, "log",
                        Logger(namespace="tsgate.dns",
                               observer=cast(Any, lambda e: lines.append(formatEvent(e)))))
    return lines


def test_view_counts_refreshes_failures_and_ttl(logged: list[str]) -> None:
    """Kills _Entry.__init__ 2/4/5/9/11, view 1-9, _resolved 4-10/36-42, _failed 1-7."""
    clock, resolver = Clock(), Resolver()
    changes: list[tuple[str, tuple[str, ...]]] = []
    dns = DnsRefresher(clock, resolver, refresh_rate=60,
                       on_change=lambda n, a: changes.append((n, a)))
    dns.addresses("a.example")
    empty: dict[str, Any] = {"addresses": [], "ttl": None, "refreshes": 0, "failures": 0,
                             "last_error": None}
    assert dns.view() == {"a.example": empty}
    resolver.answer(["10.0.0.1", "10.0.0.1", "10.0.0.2"], ttl=30)
    assert dns.view()["a.example"] == {"addresses": ["10.0.0.1", "10.0.0.2"], "ttl": 30,
                                       "refreshes": 1, "failures": 0, "last_error": None}
    assert changes == [("a.example", ("10.0.0.1", "10.0.0.2"))]
    assert logged == []  # the first answer is not a change worth a line
    clock.advance(30)
    resolver.fail()
    assert logged == ["dns: resolving a.example failed (SERVFAIL); keeping 10.0.0.1, 10.0.0.2"]
    clock.advance(5)
    resolver.fail()  # the same run of failures: one line
    assert len(logged) == 1
    assert dns.view()["a.example"]["failures"] == 2
    clock.advance(5)
    resolver.answer([], ttl=None)
    view = dns.view()["a.example"]
    assert (view["failures"], view["last_error"], view["refreshes"], view["ttl"]) == (
        3, "empty answer", 2, None)
    clock.advance(60)
    assert resolver.calls == ["a.example"] * 5  # each refresh asks for the same name
    resolver.answer(["10.0.0.3", "10.0.0.4"], ttl=300)
    assert dns.view()["a.example"]["last_error"] is None
    assert logged[1:] == ["dns: a.example now resolves to 10.0.0.3, 10.0.0.4"]
    assert changes[-1] == ("a.example", ("10.0.0.3", "10.0.0.4"))


def test_failure_before_any_answer_keeps_nothing(logged: list[str]) -> None:
    """Kills _failed 10/21-25 (the error's type when it has no message; "nothing")."""
    clock, resolver = Clock(), Resolver()
    dns = DnsRefresher(clock, resolver)
    dns.addresses("b.example")
    resolver.pending.pop(0).errback(LookupError())
    assert dns.view()["b.example"]["last_error"] == "LookupError"
    assert logged == ["dns: resolving b.example failed (LookupError); keeping nothing"]


def test_a_resolver_that_raises_is_a_failure() -> None:
    """Kills _resolve 7 (the synchronous error turned into a failed Deferred)."""
    clock = Clock()

    def broken(name: str) -> Any:
        raise OSError("no resolver")

    dns = DnsRefresher(clock, broken)
    assert dns.addresses("c.example") == ()
    assert dns.view()["c.example"]["last_error"] == "no resolver"
    assert len(clock.getDelayedCalls()) == 1  # retried


def test_no_second_query_while_one_is_pending() -> None:
    """Kills _resolve 1/3/4 (pending guards against a second query for the same name)."""
    clock, resolver = Clock(), Resolver()
    dns = DnsRefresher(clock, resolver)
    dns.addresses("d.example")
    dns._resolve("d.example", dns.entries["d.example"])
    assert resolver.calls == ["d.example"]


def test_stop_while_pending_then_the_answer_schedules_nothing() -> None:
    """Kills _resolve 2, stop 1-3/5 (no timer; twice; a late answer)."""
    clock, resolver = Clock(), Resolver()
    dns = DnsRefresher(clock, resolver)
    dns.addresses("e.example")
    dns.stop()
    dns.stop()
    resolver.answer(["10.0.0.1"])
    assert clock.getDelayedCalls() == []
    assert dns.addresses("f.example") == () and resolver.calls == ["e.example"]


def test_system_lookup_returns_each_address_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """Kills system_lookup 1-10 (the name, SOCK_STREAM: one entry per address, no TTL)."""
    from twisted.internet import threads

    monkeypatch.setattr(threads, "deferToThread", lambda f: defer.maybeDeferred(f))
    got: list[Any] = []
    system_lookup("127.0.0.1").addCallback(got.append)
    assert got == [(["127.0.0.1"], None)]


def test_names_resolver_defaults_to_the_system_resolver(monkeypatch: pytest.MonkeyPatch) -> None:
    """Kills names_resolver 2 (no resolver given: twisted.names' client resolver)."""
    from twisted.names import client, dns

    class Fake:
        def lookupAddress(self, name: str) -> Any:
            rr = dns.RRHeader(name, dns.A, ttl=9, payload=dns.Record_A("10.9.9.9", 9))
            return defer.succeed(([rr], [], []))

    monkeypatch.setattr(client, "getResolver", Fake)
    got: list[Any] = []
    names_resolver(fallback=None)("g.example").addCallback(got.append)
    assert got == [(["10.9.9.9"], 9.0)]


def test_names_resolver_without_records_or_fallback() -> None:
    """Kills names_resolver 19 (no records of the kind: no TTL, not min() of nothing)."""
    from twisted.names import dns

    class OnlyCname:
        def lookup(self, name: str) -> Any:
            rr = dns.RRHeader(name, dns.CNAME, payload=dns.Record_CNAME(b"x"))
            return defer.succeed(([rr], [], []))

        lookupAddress = lookupIPV6Address = lookup

    failed: list[Any] = []
    names_resolver(OnlyCname(), fallback=None)("h.example").addErrback(failed.append)
    assert failed[0].check(LookupError)
    assert failed[0].getErrorMessage() == "no A or AAAA records for h.example"
