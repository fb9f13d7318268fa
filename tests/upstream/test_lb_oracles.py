"""
The pickers of tsgate.upstream.lb against independent oracles: nginx's
published smooth weighted round robin sequence, the Maglev paper's table
population re-stated here, a brute-force ring lookup, and exact expectations
for least request. Each test states the planted bugs (mutants of
docs/mutation-report.md, "data path") it catches.
"""

from __future__ import annotations

import hashlib
import random
from collections import Counter

import attrs

from tsgate.upstream.lb import LeastRequest, Maglev, Random, RingHash, RoundRobin


@attrs.define
class Host:
    address: str
    port: int = 80
    weight: int = 1
    active: int = 0


def h64(text: str) -> int:
    """The stable 64-bit hash lb.py documents (blake2b, 8 bytes, big-endian)."""
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "big")


def test_smooth_weighted_round_robin_is_nginxs_sequence() -> None:
    """nginx's example: weights a=5, b=1, c=1 give a a b a c a a, then again."""
    a, b, c = Host("a", weight=5), Host("b", weight=1), Host("c", weight=1)
    rr = RoundRobin()
    rr.uniform = False
    names = [rr.pick([a, b, c]).address for _ in range(14)]
    assert "".join(names) == "aabacaa" * 2


def test_plain_round_robin_rotates_in_order() -> None:
    hosts = [Host("a"), Host("b"), Host("c")]
    rr = RoundRobin()
    assert [rr.pick(hosts).address for _ in range(7)] == list("abcabca")


def test_least_request_exact_choices() -> None:
    """
    One host: it. Two: the one with fewer active, ties alternate. More: two
    distinct hosts drawn, the one with fewer active wins, so the busiest
    never does and the idle one wins every draw it is in.
    """
    lr = LeastRequest(random.Random(7))
    only = Host("only", active=9)
    assert lr.pick([only]) is only
    a, b = Host("a", active=3), Host("b", active=1)
    assert lr.pick([a, b]) is b and lr.pick([b, a]) is b
    a.active = b.active = 2
    assert [lr.pick([a, b]).address for _ in range(4)] in (list("abab"), list("baba"))
    hosts = [Host("idle", active=0), Host("mid", active=5), Host("busy", active=10)]
    picks = Counter(lr.pick(hosts).address for _ in range(600))
    assert picks["busy"] == 0
    # the idle host is in 2 of the 3 possible pairs and wins each of them
    assert 340 < picks["idle"] < 460 and picks["mid"] == 600 - picks["idle"]


def test_least_request_with_weights_prefers_weight_over_load() -> None:
    """Unequal weights: chances ``weight / (active + 1)``."""
    lr = LeastRequest(random.Random(3))
    lr.uniform = False
    heavy, light = Host("heavy", weight=3, active=0), Host("light", weight=1, active=0)
    picks = Counter(lr.pick([heavy, light]).address for _ in range(2000))
    assert 1350 < picks["heavy"] < 1650
    heavy.active = 5  # 3 / 6 = 0.5 against 1 / 1
    picks = Counter(lr.pick([heavy, light]).address for _ in range(2000))
    assert 540 < picks["heavy"] < 790


def test_random_respects_weights() -> None:
    r = Random(random.Random(5))
    r.uniform = False
    picks = Counter(r.pick([Host("a", weight=9), Host("b", weight=1)]).address
                    for _ in range(2000))
    assert 1700 < picks["a"] < 1900


def ring_oracle(hosts: list[Host], ring_size: int, key: str) -> str:
    """Brute force: every host's points, the first at or after the key's hash, else the first."""
    total = sum(h.weight for h in hosts)
    points = sorted((h64(f"{h.address}:{h.port}_{i}"), h.address) for h in hosts
                    for i in range(max(1, round(ring_size * h.weight / total))))
    k = h64(key)
    after = [p for p in points if p[0] >= k]
    return (after[0] if after else points[0])[1]


def test_ring_hash_against_a_brute_force_ring() -> None:
    hosts = [Host("10.0.0.1", weight=1), Host("10.0.0.2", weight=2), Host("10.0.0.3", weight=1)]
    ring = RingHash(hosts, 64)
    assert len(ring.hashes) == 16 + 32 + 16
    for i in range(200):
        key = f"198.51.100.{i}"
        picked = ring.pick(key, lambda h: True)
        assert picked is not None and picked.address == ring_oracle(hosts, 64, key)
    # a host that is down: its keys go to the next host clockwise, others stay
    down = hosts[1]
    for i in range(100):
        key = f"203.0.113.{i}"
        before = ring.pick(key, lambda h: True)
        after = ring.pick(key, lambda h: h is not down)
        assert after is not down
        if before is not down:
            assert after is before
    assert ring.pick("x", lambda h: False) is None
    assert RingHash([], 8).pick("x", lambda h: True) is None


def maglev_oracle(hosts: list[Host], m: int) -> list[str]:
    """The Maglev paper's population (equal weights), hosts in address:port order."""
    names = sorted(f"{h.address}:{h.port}" for h in hosts)
    perms = [(h64(n) % m, h64(n + "#skip") % (m - 1) + 1) for n in names]
    nexts = [0] * len(names)
    table: list[str] = [""] * m
    filled = 0
    while True:
        for i, (offset, skip) in enumerate(perms):
            c = (offset + nexts[i] * skip) % m
            while table[c]:
                nexts[i] += 1
                c = (offset + nexts[i] * skip) % m
            table[c] = names[i]
            nexts[i] += 1
            filled += 1
            if filled == m:
                return table


def test_maglev_table_is_the_papers_and_lookups_use_it() -> None:
    hosts = [Host("10.0.0.3"), Host("10.0.0.1"), Host("10.0.0.2")]
    m = 31
    expected = maglev_oracle(hosts, m)
    maglev = Maglev(hosts, m)
    for i in range(150):
        key = f"192.0.2.{i}"
        picked = maglev.pick(key, lambda h: True)
        assert picked is not None
        assert f"{picked.address}:{picked.port}" == expected[h64(key) % m]
    counts = Counter(expected)
    assert sorted(counts.values()) == [10, 10, 11]


def test_maglev_weights_and_salted_retries() -> None:
    """
    Weight 2 against 1: about two thirds of the table. A key whose host is
    down is looked up again with a salt (up to 8 times), so it lands on a
    live host unless all nine lookups hit the down one ((2/3)^9, about 3%);
    keys of live hosts do not move.
    """
    big, small = Host("10.0.0.1", weight=2), Host("10.0.0.2", weight=1)
    maglev = Maglev([big, small], 101)
    picks = Counter(maglev.pick(f"k{i}", lambda h: True).address  # type: ignore[union-attr]
                    for i in range(3000))
    assert 1800 < picks["10.0.0.1"] < 2200
    lost = 0
    for i in range(400):
        key = f"k{i}"
        before = maglev.pick(key, lambda h: True)
        after = maglev.pick(key, lambda h: h is not big)
        assert after is small or after is None
        lost += after is None
        if before is small:
            assert after is before
    assert lost < 40
    assert maglev.pick("k", lambda h: False) is None
    assert Maglev([], 7).pick("k", lambda h: True) is None


def weighted_maglev_oracle(hosts: list[Host], m: int) -> list[str]:
    """
    Envoy's weighted Maglev population re-stated: each round every host
    earns weight / max weight; one with a whole credit places its next
    permutation entry (the paper's table when weights are equal).
    """
    ordered = sorted(hosts, key=lambda h: f"{h.address}:{h.port}")
    names = [f"{h.address}:{h.port}" for h in ordered]
    top = max(h.weight for h in ordered)
    perms = [(h64(n) % m, h64(n + "#skip") % (m - 1) + 1) for n in names]
    nexts, credit = [0] * len(names), [0.0] * len(names)
    table: list[str] = [""] * m
    filled = 0
    while True:
        for i, (offset, skip) in enumerate(perms):
            credit[i] += ordered[i].weight / top
            if credit[i] < 1.0:
                continue
            credit[i] -= 1.0
            c = (offset + nexts[i] * skip) % m
            while table[c]:
                nexts[i] += 1
                c = (offset + nexts[i] * skip) % m
            table[c] = names[i]
            nexts[i] += 1
            filled += 1
            if filled == m:
                return table


def test_weighted_maglev_table_and_its_salted_lookups() -> None:
    """
    Weights 3:2:1 fill the table as Envoy does; a key whose host is down is
    looked up again as ``key#1`` … ``key#8`` in turn, then given up (planted:
    credits, the salt's start or the number of retries changed).
    """
    hosts = [Host("10.0.0.1", weight=3), Host("10.0.0.2", weight=2), Host("10.0.0.3", weight=1)]
    m = 53
    table = weighted_maglev_oracle(hosts, m)
    maglev = Maglev(hosts, m)
    down = "10.0.0.1:80"
    checked_salted = 0
    for i in range(400):
        key = f"10.9.{i // 200}.{i % 200}"
        got = maglev.pick(key, lambda h: True)
        assert got is not None and f"{got.address}:{got.port}" == table[h64(key) % m]
        expected = table[h64(key) % m]
        for salt in range(1, 9):
            if expected != down:
                break
            expected = table[h64(f"{key}#{salt}") % m]
        live = maglev.pick(key, lambda h: f"{h.address}:{h.port}" != down)
        if expected == down:
            assert live is None
        else:
            assert live is not None and f"{live.address}:{live.port}" == expected
            checked_salted += table[h64(key) % m] == down
    assert checked_salted > 50


def test_a_key_every_lookup_of_which_is_down_is_given_up_after_eight_salts() -> None:
    """Find a key whose 9 lookups all hit the down host but whose 10th would not: None."""
    big, small = Host("10.0.0.1", weight=1), Host("10.0.0.2", weight=1)
    m = 7
    maglev = Maglev([big, small], m)
    table = maglev_oracle([big, small], m)
    for i in range(200000):
        key = f"k{i}"
        lookups = [table[h64(key) % m]] + [table[h64(f"{key}#{s}") % m] for s in range(1, 10)]
        if all(x == "10.0.0.1:80" for x in lookups[:9]) and lookups[9] != "10.0.0.1:80":
            break
    else:
        raise AssertionError("no such key among 200000")
    assert maglev.pick(key, lambda h: h is not big) is None


def test_a_one_entry_maglev_table() -> None:
    only = Host("10.0.0.1")
    assert Maglev([only], 1).pick("k", lambda h: True) is only


def test_ring_hash_gives_a_down_hosts_keys_to_the_next_live_point() -> None:
    """Clockwise to the next point of a live host, never None while one lives."""
    hosts = [Host("10.0.0.1"), Host("10.0.0.2"), Host("10.0.0.3")]
    ring = RingHash(hosts, 30)
    points = sorted((h64(f"{h.address}:{h.port}_{i}"), h.address) for h in hosts
                    for i in range(10))
    down = "10.0.0.2"
    for i in range(300):
        key = f"198.18.{i // 100}.{i % 100}"
        k = h64(key)
        ordered = [p for p in points if p[0] >= k] + [p for p in points if p[0] < k]
        expected = next(addr for _, addr in ordered if addr != down)
        got = ring.pick(key, lambda h: h.address != down)
        assert got is not None and got.address == expected


def test_ring_hash_small_ring_gives_a_light_host_one_point() -> None:
    light, heavy = Host("10.0.0.1", weight=1), Host("10.0.0.2", weight=10)
    ring = RingHash([light, heavy], 4)
    assert len(ring.hashes) == 1 + 4


def test_weighted_random_edges() -> None:
    """A draw of 0 skips a zero weight; a draw at the very top (rounding) takes the last host."""
    from tsgate.upstream.lb import weighted_random

    a, b, c = Host("a", weight=0), Host("b", weight=1), Host("c", weight=1)
    assert weighted_random([a, b, c], lambda: 0.0) is b
    assert weighted_random([a, b, c], lambda: 1.0) is c


def test_uniform_random_covers_every_host() -> None:
    r = Random(random.Random(11))
    hosts = [Host("a"), Host("b"), Host("c")]
    assert {r.pick(hosts).address for _ in range(60)} == {"a", "b", "c"}


def test_least_request_ties_start_with_the_second_host() -> None:
    lr = LeastRequest(random.Random(1))
    a, b = Host("a", active=1), Host("b", active=1)
    assert [lr.pick([a, b]).address for _ in range(4)] == list("baba")
