"""
Load-balancing algorithms over a cluster's hosts, as Envoy does them:
round robin (smooth weighted when weights differ), least request (fewest
active connections; power of two choices over more than two hosts), random
(weighted), ring hash and Maglev keyed by the client's source address.

Pure: hosts are anything with ``address``, ``port``, ``weight`` and
``active``; randomness is an injected ``random.Random``. The hash tables are
built once per host set (config time or a DNS/endpoint change), never per
connection.
"""

from __future__ import annotations

import bisect
import hashlib
import random
from collections.abc import Sequence
from typing import Any, Callable, Optional


def hash64(data: str) -> int:
    """A stable 64-bit hash (Envoy uses xxHash64; any good stable hash will do)."""
    return int.from_bytes(hashlib.blake2b(data.encode(), digest_size=8).digest(), "big")


def host_key(host: Any) -> str:
    return f"{host.address}:{host.port}"


class RoundRobin:
    """Plain rotation when weights are equal; nginx's smooth weighted round robin otherwise."""

    #: all hosts have the same weight (set when the host set is built)
    uniform = True

    def __init__(self) -> None:
        self.index = 0
        self.current: dict[str, int] = {}

    def pick(self, hosts: Sequence[Any]) -> Any:
        if self.uniform:
            host = hosts[self.index % len(hosts)]
            self.index += 1
            return host
        total = 0
        best = None
        best_weight = 0
        current = self.current
        for h in hosts:
            key = host_key(h)
            value = current.get(key, 0) + h.weight
            current[key] = value
            total += h.weight
            if best is None or value > best_weight:
                best, best_weight = h, value
        assert best is not None
        current[host_key(best)] -= total
        return best


class LeastRequest:
    """
    Fewest active connections. Over one or two hosts both are compared
    (ties rotate); over more, two distinct random hosts are compared (Envoy's
    power of two choices). Unequal weights: weighted random by
    ``weight / (active + 1)`` (Envoy's active_request_bias 1.0).
    """

    uniform = True

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.index = 0

    def pick(self, hosts: Sequence[Any]) -> Any:
        n = len(hosts)
        if n == 1:
            return hosts[0]
        if not self.uniform:
            return weighted_random(hosts, self.rng.random, lambda h: h.weight / (h.active + 1))
        if n == 2:
            a, b = hosts
            if a.active != b.active:
                return a if a.active < b.active else b
            self.index += 1
            return hosts[self.index % 2]
        i = self.rng.randrange(n)
        j = self.rng.randrange(n - 1)
        if j >= i:
            j += 1
        a, b = hosts[i], hosts[j]
        return b if b.active < a.active else a


def weighted_random(hosts: Sequence[Any], random_: Callable[[], float],
                    weight: Callable[[Any], float] = lambda h: h.weight) -> Any:
    weights = [weight(h) for h in hosts]
    point = random_() * sum(weights)
    for host, w in zip(hosts, weights):
        point -= w
        if point < 0:
            return host
    return hosts[-1]


class Random:
    uniform = True

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng

    def pick(self, hosts: Sequence[Any]) -> Any:
        if self.uniform:
            return hosts[self.rng.randrange(len(hosts))]
        return weighted_random(hosts, self.rng.random)


class RingHash:
    """
    Envoy's ring hash: each host gets ``ring_size * weight / total`` points
    (at least one) at hash("address:port_i"); a key goes to the first point
    clockwise. An unavailable host's points are skipped (the next host on
    the ring takes its keys), so keys of other hosts do not move.
    """

    def __init__(self, hosts: Sequence[Any], ring_size: int) -> None:
        self.hosts = list(hosts)
        total = sum(h.weight for h in hosts) or 1
        points: list[tuple[int, int]] = []
        for index, h in enumerate(hosts):
            count = max(1, round(ring_size * h.weight / total))
            key = host_key(h)
            points.extend((hash64(f"{key}_{i}"), index) for i in range(count))
        points.sort()
        self.uniform = True
        self.hashes = [p[0] for p in points]
        self.owners = [p[1] for p in points]

    def pick(self, key: str, available: Callable[[Any], bool]) -> Optional[Any]:
        if not self.hashes:
            return None
        start = bisect.bisect_left(self.hashes, hash64(key)) % len(self.hashes)
        seen: set[int] = set()
        n = len(self.hashes)
        for step in range(n):
            owner = self.owners[(start + step) % n]
            if owner in seen:
                continue
            host = self.hosts[owner]
            if available(host):
                return host
            seen.add(owner)
            if len(seen) == len(self.hosts):
                break
        return None


class Maglev:
    """
    Google's Maglev table of ``table_size`` (a prime) entries, weighted as
    Envoy does (a host with half the weight takes a turn every other round),
    built once per host set. A key whose host is unavailable is looked up
    again with a salt (up to 8 times), so only that host's keys move and no
    table is rebuilt on the data path (Envoy rebuilds; in Python a 65537-entry
    table costs a few hundred milliseconds).
    """

    uniform = True

    def __init__(self, hosts: Sequence[Any], table_size: int) -> None:
        # sorted: the table must not depend on the order DNS answered in
        self.hosts = sorted(hosts, key=host_key)
        self.table_size = table_size
        self._tables: dict[tuple[int, ...], list[int]] = {}

    def _build(self, members: tuple[int, ...]) -> list[int]:
        m = self.table_size
        hosts = [self.hosts[i] for i in members]
        top = max(h.weight for h in hosts)
        offsets, skips, weights = [], [], []
        for h in hosts:
            key = host_key(h)
            offsets.append(hash64(key) % m)
            skips.append(hash64(key + "#skip") % (m - 1) + 1 if m > 1 else 1)
            weights.append(h.weight / top)
        nexts = [0] * len(hosts)
        credit = [0.0] * len(hosts)
        table = [-1] * m
        filled = 0
        while filled < m:
            for i in range(len(hosts)):
                credit[i] += weights[i]
                if credit[i] < 1.0:
                    continue
                credit[i] -= 1.0
                offset, skip = offsets[i], skips[i]
                c = (offset + nexts[i] * skip) % m
                while table[c] >= 0:
                    nexts[i] += 1
                    c = (offset + nexts[i] * skip) % m
                table[c] = members[i]
                nexts[i] += 1
                filled += 1
                if filled == m:
                    break
        return table

    def pick(self, key: str, available: Callable[[Any], bool]) -> Optional[Any]:
        if not self.hosts:
            return None
        table = self._tables.get(())
        if table is None:
            table = self._tables[()] = self._build(tuple(range(len(self.hosts))))
        size = self.table_size
        host = self.hosts[table[hash64(key) % size]]
        salt = 0
        while not available(host) and salt < 8:
            salt += 1
            host = self.hosts[table[hash64(f"{key}#{salt}") % size]]
        return host if available(host) else None
