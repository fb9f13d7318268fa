"""Per-source limits: parsing, the token bucket, concurrency, caps, bounded memory."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tsgate.authz.limits import (
    CONNECTION_RATE_PER_IP,
    MAX_CONNECTIONS,
    MAX_CONNECTIONS_PER_IP,
    MAX_INSPECTING,
    REASON_MAX_CONNECTIONS,
    REASON_MAX_INSPECTING,
    REASON_PER_IP,
    REASON_RATE,
    REASON_TABLE_FULL,
    Guards,
    Limits,
    SourceTracker,
    limits_from_annotations,
    parse_rate,
)
from tsgate.config import knobs


def test_parse_rate() -> None:
    assert parse_rate("10/s") == (10, 10.0)
    assert parse_rate(" 60 / m ") == (60, 1.0)
    for bad in ("10", "0/s", "10/h", "x/s", "-1/s", ""):
        with pytest.raises(ValueError):
            parse_rate(bad)


def test_annotations_are_known_knobs_and_checked() -> None:
    for key in (MAX_CONNECTIONS_PER_IP, CONNECTION_RATE_PER_IP, MAX_CONNECTIONS, MAX_INSPECTING):
        assert knobs.unknown(key) is None
    assert knobs.check(MAX_CONNECTIONS_PER_IP, "0") is not None
    assert knobs.check(CONNECTION_RATE_PER_IP, "5/h") is not None
    assert knobs.check(MAX_CONNECTIONS, "100") is None
    limits = limits_from_annotations(((MAX_CONNECTIONS_PER_IP, "3"),
                                      (CONNECTION_RATE_PER_IP, "120/m"),
                                      (MAX_INSPECTING, "7"), ("tsgate.io/observers", "none")))
    assert limits == Limits(per_ip=3, rate_burst=120, rate_per_second=2.0, max_inspecting=7)
    assert limits_from_annotations((("tsgate.io/observers", "none"),)) is None


def test_per_ip_concurrency_counts_and_releases() -> None:
    t = SourceTracker()
    limits = Limits(per_ip=2)
    assert t.admit("a", 0.0, limits, False) is None
    assert t.admit("a", 0.0, limits, False) is None
    assert t.admit("a", 0.0, limits, False) == REASON_PER_IP
    assert t.admit("b", 0.0, limits, False) is None  # another address is not affected
    t.release("a")
    assert t.admit("a", 0.0, limits, False) is None
    assert t.active == 3
    assert t.refused_total[REASON_PER_IP] == 1
    assert list(t.refused) == ["a"]


def test_token_bucket_burst_then_rate() -> None:
    t = SourceTracker()
    limits = Limits(rate_burst=3, rate_per_second=3.0)
    admitted = [t.admit("a", 0.0, limits, False) for _ in range(5)]
    assert admitted == [None, None, None, REASON_RATE, REASON_RATE]
    assert t.admit("b", 0.0, limits, False) is None
    assert t.admit("a", 0.2, limits, False) == REASON_RATE  # 0.6 token
    assert t.admit("a", 0.34, limits, False) is None  # 1.02 tokens
    assert t.admit("a", 0.34, limits, False) == REASON_RATE
    assert t.admit("a", 100.0, limits, False) is None  # refilled, capped at the burst
    assert [t.admit("a", 100.0, limits, False) for _ in range(3)] == [None, None, REASON_RATE]


def test_listener_and_inspection_caps() -> None:
    t = SourceTracker()
    limits = Limits(max_connections=3, max_inspecting=2)
    assert t.admit("a", 0, limits, True) is None
    assert t.admit("b", 0, limits, True) is None
    assert t.admit("c", 0, limits, True) == REASON_MAX_INSPECTING
    t.inspected()  # one ClientHello arrived
    assert t.admit("c", 0, limits, True) is None
    assert t.admit("d", 0, limits, False) == REASON_MAX_CONNECTIONS
    t.release("a")
    assert t.admit("d", 0, limits, False) is None


def test_table_is_bounded_evicting_idle_sources_first() -> None:
    t = SourceTracker(capacity=4)
    limits = Limits(per_ip=1, rate_burst=1, rate_per_second=0.001)
    for i in range(4):
        assert t.admit(f"busy{i}" if i < 2 else f"idle{i}", 0, limits, False) is None
    t.release("idle2")
    t.release("idle3")
    assert t.admit("new1", 1, limits, False) is None  # evicts idle2, the least recently used
    assert "idle2" not in t.sources and len(t.sources) == 4
    assert t.admit("new2", 1, limits, False) is None  # evicts idle3
    # all four entries now have open connections: nothing can be evicted, refuse
    assert t.admit("new3", 1, limits, False) == REASON_TABLE_FULL
    assert len(t.sources) == 4
    # an evicted address comes back with a fresh entry
    t.release("busy0")
    assert t.admit("idle2", 2, limits, False) is None


@given(st.lists(st.tuples(st.integers(0, 500), st.booleans()), max_size=400))
def test_memory_bounded_and_counts_consistent(ops: list[tuple[int, bool]]) -> None:
    t = SourceTracker(capacity=32)
    limits = Limits(per_ip=2, rate_burst=5, rate_per_second=1.0, max_connections=50)
    open_conns: list[str] = []
    now = 0.0
    for source, close in ops:
        now += 0.1
        if close and open_conns:
            t.release(open_conns.pop(0))
        else:
            address = f"10.0.{source // 256}.{source % 256}"
            if t.admit(address, now, limits, False) is None:
                open_conns.append(address)
        assert len(t.sources) <= 32
        assert len(t.refused) <= 256
        assert t.active == len(open_conns) <= 50
        for address in set(open_conns):
            assert t.sources[address].active == open_conns.count(address) <= 2


def test_guards_snapshot() -> None:
    g = Guards()
    tracker = g.tracker("0.0.0.0_31400")
    assert g.tracker("0.0.0.0_31400") is tracker
    tracker.admit("a", 5.0, Limits(per_ip=1), False)
    tracker.admit("a", 6.0, Limits(per_ip=1), False)
    g.note_denied("0.0.0.0_31400", "127.0.0.5", "ns[a]-policy[b]-rule[0]", 7.0)
    g.note_denied("0.0.0.0_31400", "127.0.0.5", "ns[a]-policy[b]-rule[0]", 8.0)
    snap = g.snapshot()
    assert snap["denied"] == [{"listener": "0.0.0.0_31400", "source": "127.0.0.5", "count": 2,
                               "policy": "ns[a]-policy[b]-rule[0]", "last": 8.0}]
    assert snap["limited"] == [{"listener": "0.0.0.0_31400", "source": "a", "count": 1,
                                "reason": REASON_PER_IP, "last": 6.0}]
    assert snap["listeners"]["0.0.0.0_31400"]["refused"] == {REASON_PER_IP: 1}
