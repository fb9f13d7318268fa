"""
Per-source connection limits (Gateway annotations), pure and bounded.

- ``tsgate.io/max-connections-per-ip: "N"``: concurrent connections per
  client address;
- ``tsgate.io/connection-rate-per-ip: "N/s"`` (or ``"N/m"``): new
  connections per client address, a token bucket of N tokens refilled at
  N per second (minute), so a burst of N is allowed;
- ``tsgate.io/max-connections: "N"``: concurrent connections on the
  listener (Envoy's listener connection limit);
- ``tsgate.io/max-inspecting-connections: "N"``: connections still in
  inspection (waiting for their ClientHello, or a PROXY header) on the
  listener; over it, a
  new connection is closed at accept, so silent clients cannot hold the
  inspection buffers and timers of a listener.

The client address is the connection's remote address (the PROXY
protocol's source when a PROXY header came, else the socket peer).

Memory is bounded whatever the number of addresses: the per-address
table holds at most ``capacity`` entries (default 65536, about 10 MiB
worst case). An entry with no open connection is worth keeping only for
its rate bucket; when the table is full the least recently used such entry
is evicted (an address idle the longest has the fullest bucket, so
forgetting it loses the least). An entry with open connections is never
evicted (its count would be lost); if no entry can be evicted among the
oldest few, the new address is refused (``source-table-full``), as nginx's
``limit_conn`` refuses when its zone is full: failing closed is what keeps
a flood of distinct addresses from growing memory or resetting counts.
"""

from __future__ import annotations

import collections
import re
from collections.abc import Iterable
from typing import Any, Optional

import attrs

PREFIX = "tsgate.io/"
MAX_CONNECTIONS_PER_IP = PREFIX + "max-connections-per-ip"
CONNECTION_RATE_PER_IP = PREFIX + "connection-rate-per-ip"
MAX_CONNECTIONS = PREFIX + "max-connections"
MAX_INSPECTING = PREFIX + "max-inspecting-connections"

#: Reasons a connection is refused at accept (access log, counters, status page):
#: the annotation's name, and source-table-full.
REASON_MAX_CONNECTIONS = "max-connections"
REASON_MAX_INSPECTING = "max-inspecting-connections"
REASON_PER_IP = "max-connections-per-ip"
REASON_RATE = "connection-rate-per-ip"
REASON_TABLE_FULL = "source-table-full"

#: Per-address entries kept per listener.
DEFAULT_CAPACITY = 65536
#: How many of the oldest entries an insertion looks at for one to evict.
EVICTION_SCAN = 64
#: Recently refused addresses remembered for the status page, per listener.
RECENT = 256

_RATE = re.compile(r"^\s*(\d+)\s*/\s*(s|m)\s*$")


def parse_count(value: str) -> int:
    text = value.strip()
    if not text.isdigit() or int(text) < 1:
        raise ValueError(f"{value!r} is not a positive whole number")
    return int(text)


def parse_rate(value: str) -> tuple[int, float]:
    """``"10/s"`` -> (burst 10, 10.0 tokens per second); ``"60/m"`` -> (60, 1.0)."""
    m = _RATE.match(value)
    if m is None or int(m.group(1)) < 1:
        raise ValueError(f"{value!r} is not a rate: write N/s or N/m (N >= 1), e.g. 10/s")
    count = int(m.group(1))
    return count, count / (1.0 if m.group(2) == "s" else 60.0)


KNOWN = {
    MAX_CONNECTIONS_PER_IP: parse_count,
    CONNECTION_RATE_PER_IP: parse_rate,
    MAX_CONNECTIONS: parse_count,
    MAX_INSPECTING: parse_count,
}


@attrs.frozen
class Limits:
    per_ip: Optional[int] = None
    rate_burst: Optional[int] = None
    rate_per_second: float = 0.0
    max_connections: Optional[int] = None
    max_inspecting: Optional[int] = None

    @property
    def tracks_sources(self) -> bool:
        return self.per_ip is not None or self.rate_burst is not None

    def describe(self) -> list[str]:
        out = []
        if self.max_connections is not None:
            out.append(f"at most {self.max_connections} connections on the listener")
        if self.max_inspecting is not None:
            out.append(f"at most {self.max_inspecting} connections in inspection")
        if self.per_ip is not None:
            out.append(f"at most {self.per_ip} concurrent connections per client address")
        if self.rate_burst is not None:
            out.append(f"at most {self.rate_per_second:g} new connections/s per client "
                       f"address (burst {self.rate_burst})")
        return out


def limits_from_annotations(annotations: Iterable[tuple[str, str]]) -> Optional[Limits]:
    """The listener's limits, or None when it has none (invalid values are config errors)."""
    values: dict[str, Any] = {}
    for key, value in annotations:
        parser = KNOWN.get(key)
        if parser is None:
            continue
        try:
            values[key] = parser(value)
        except ValueError:
            continue
    if not values:
        return None
    rate = values.get(CONNECTION_RATE_PER_IP)
    return Limits(per_ip=values.get(MAX_CONNECTIONS_PER_IP),
                  rate_burst=None if rate is None else rate[0],
                  rate_per_second=0.0 if rate is None else rate[1],
                  max_connections=values.get(MAX_CONNECTIONS),
                  max_inspecting=values.get(MAX_INSPECTING))


class _Entry:
    __slots__ = ("active", "tokens", "stamp")

    def __init__(self, tokens: float, stamp: float) -> None:
        self.active = 0
        self.tokens = tokens
        self.stamp = stamp


class SourceTracker:
    """
    One listener's counts, kept across reloads (by listener name): open
    connections, connections in inspection, and a bounded table of client
    addresses (open connections and rate bucket each).
    """

    def __init__(self, capacity: int = DEFAULT_CAPACITY) -> None:
        self.capacity = capacity
        self.active = 0
        self.inspecting = 0
        self.sources: collections.OrderedDict[str, _Entry] = collections.OrderedDict()
        #: address -> [refusals, last reason, last time]; the RECENT most recent
        self.refused: collections.OrderedDict[str, list[Any]] = collections.OrderedDict()
        self.refused_total: collections.Counter[str] = collections.Counter()
        #: the gateway log's throttle (tsgate.authz.gate): last line, refusals since
        self.last_logged = float("-inf")
        self.unlogged = 0

    def admit(self, address: str, now: float, limits: Limits, inspecting: bool) -> Optional[str]:
        """Count a new connection in, or the reason it is refused (nothing counted)."""
        reason = self.admit_listener(address, now, limits, inspecting)
        if reason is not None:
            return reason
        reason = self.admit_source(address, now, limits)
        if reason is not None:
            self.release_listener(inspecting)
        return reason

    def admit_listener(self, address: str, now: float, limits: Limits,
                       inspecting: bool) -> Optional[str]:
        """The listener-wide caps (no per-address state): count in, or why not."""
        if limits.max_connections is not None and self.active >= limits.max_connections:
            return self._refuse(address, REASON_MAX_CONNECTIONS, now)
        if inspecting and limits.max_inspecting is not None \
                and self.inspecting >= limits.max_inspecting:
            return self._refuse(address, REASON_MAX_INSPECTING, now)
        self.active += 1
        if inspecting:
            self.inspecting += 1
        return None

    def release_listener(self, inspecting: bool) -> None:
        if self.active > 0:
            self.active -= 1
        if inspecting:
            self.inspected()

    def admit_source(self, address: str, now: float, limits: Limits) -> Optional[str]:
        """The per-address limits: count ``address`` in, or why not (nothing counted)."""
        if limits.tracks_sources:
            entry = self.sources.get(address)
            if entry is None:
                if len(self.sources) >= self.capacity and not self._evict():
                    return self._refuse(address, REASON_TABLE_FULL, now)
                entry = self.sources[address] = _Entry(float(limits.rate_burst or 0), now)
            else:
                self.sources.move_to_end(address)
            if limits.per_ip is not None and entry.active >= limits.per_ip:
                return self._refuse(address, REASON_PER_IP, now)
            if limits.rate_burst is not None:
                tokens = min(float(limits.rate_burst),
                             entry.tokens + (now - entry.stamp) * limits.rate_per_second)
                entry.stamp = now
                if tokens < 1.0:
                    entry.tokens = tokens
                    return self._refuse(address, REASON_RATE, now)
                entry.tokens = tokens - 1.0
            entry.active += 1
        return None

    def _evict(self) -> bool:
        """Drop the least recently used address with no open connection."""
        for _ in range(min(EVICTION_SCAN, len(self.sources))):
            address, entry = next(iter(self.sources.items()))
            if entry.active == 0:
                del self.sources[address]
                return True
            self.sources.move_to_end(address)  # busy: look at the next oldest
        return False

    def _refuse(self, address: str, reason: str, now: float) -> str:
        self.refused_total[reason] += 1
        seen = self.refused.get(address)
        if seen is None:
            if len(self.refused) >= RECENT:
                self.refused.popitem(last=False)
            self.refused[address] = [1, reason, now]
        else:
            seen[0] += 1
            seen[1] = reason
            seen[2] = now
            self.refused.move_to_end(address)
        return reason

    def inspected(self) -> None:
        """A counted connection left inspection."""
        if self.inspecting > 0:
            self.inspecting -= 1

    def release(self, address: str) -> None:
        """A counted connection closed."""
        if self.active > 0:
            self.active -= 1
        self.release_source(address)

    def release_source(self, address: str) -> None:
        entry = self.sources.get(address)
        if entry is not None and entry.active > 0:
            entry.active -= 1


class Guards:
    """Every listener's :class:`SourceTracker` and RBAC denial record, by listener name."""

    def __init__(self, capacity: int = DEFAULT_CAPACITY) -> None:
        self.capacity = capacity
        self.trackers: dict[str, SourceTracker] = {}
        #: (listener, address) -> [denials, policy, time]; the RECENT most recent
        self.denied: collections.OrderedDict[tuple[str, str], list[Any]] = \
            collections.OrderedDict()

    def tracker(self, listener: str) -> SourceTracker:
        tracker = self.trackers.get(listener)
        if tracker is None:
            tracker = self.trackers[listener] = SourceTracker(self.capacity)
        return tracker

    def note_denied(self, listener: str, address: str, policy: str, now: float,
                    shadow: bool = False) -> None:
        key = (listener, address + (" (dry-run)" if shadow else ""))
        seen = self.denied.get(key)
        if seen is None:
            if len(self.denied) >= RECENT:
                self.denied.popitem(last=False)
            self.denied[key] = [1, policy, now]
        else:
            seen[0] += 1
            seen[1] = policy
            seen[2] = now
            self.denied.move_to_end(key)

    def snapshot(self) -> dict[str, Any]:
        """JSON-ready: recent denials and refused (limited) sources, newest first."""
        denied = [{"listener": k[0], "source": k[1], "count": v[0], "policy": v[1] or "none",
                   "last": v[2]} for k, v in reversed(self.denied.items())]
        limited: list[dict[str, Any]] = []
        listeners = {}
        for name, tracker in sorted(self.trackers.items()):
            listeners[name] = {"active": tracker.active, "inspecting": tracker.inspecting,
                               "tracked_sources": len(tracker.sources),
                               "refused": dict(tracker.refused_total)}
            limited.extend({"listener": name, "source": addr, "count": v[0], "reason": v[1],
                            "last": v[2]} for addr, v in reversed(tracker.refused.items()))
        limited.sort(key=lambda d: -d["last"])
        return {"denied": denied, "limited": limited, "listeners": listeners}
