"""
The gateway's stats registry: counters, gauges and histograms by name and labels.

Names follow Envoy's ``<component>.<outcome>`` (``tls_inspector.sni_found``,
``listener.no_filter_chain_match``); labels carry what Envoy puts in the
name (listener, cluster, route). The exposition formats (Envoy's ``/stats``
text and Prometheus) are in ``tsgate.admin``; this module only counts, and
counting must stay cheap: it runs per connection on the data path.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterator
from typing import Optional

LabelKey = tuple[tuple[str, str], ...]

#: Default buckets for connection durations, in seconds.
DURATION_BUCKETS = (0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 60.0, 300.0, 3600.0)


def _key(labels: dict[str, str]) -> LabelKey:
    return tuple(sorted(labels.items())) if labels else ()


class Histogram:
    """Cumulative-bucket histogram in the Prometheus sense."""

    __slots__ = ("buckets", "counts", "sum", "count")

    def __init__(self, buckets: tuple[float, ...] = DURATION_BUCKETS) -> None:
        self.buckets = buckets
        self.counts = [0] * (len(buckets) + 1)  # last one is +Inf
        self.sum = 0.0
        self.count = 0

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.buckets, value)] += 1
        self.sum += value
        self.count += 1


class Stats:
    """
    A process-wide registry. One instance lives in the gateway service and
    is handed to everything that counts (passed in, never a global).
    """

    def __init__(self) -> None:
        self.counters: dict[str, dict[LabelKey, float]] = {}
        self.gauges: dict[str, dict[LabelKey, float]] = {}
        self.histograms: dict[str, dict[LabelKey, Histogram]] = {}

    def inc(self, name: str, amount: float = 1, **labels: str) -> None:
        """Add ``amount`` to a counter (created at 0 on first use)."""
        series = self.counters.setdefault(name, {})
        key = _key(labels)
        series[key] = series.get(key, 0) + amount

    @staticmethod
    def label_key(**labels: str) -> LabelKey:
        """A label set in the registry's form, to build once and reuse with inc_key."""
        return _key(labels)

    def inc_key(self, name: str, key: LabelKey, amount: float = 1) -> None:
        """``inc`` with a prebuilt label key: no sorting on the hot path."""
        series = self.counters.get(name)
        if series is None:  # (not setdefault: that builds a dict on every call)
            series = self.counters[name] = {}
        series[key] = series.get(key, 0) + amount

    def gauge_add_key(self, name: str, key: LabelKey, delta: float) -> None:
        series = self.gauges.get(name)
        if series is None:
            series = self.gauges[name] = {}
        series[key] = series.get(key, 0) + delta

    def observe_key(
        self, name: str, key: LabelKey, value: float, buckets: Optional[tuple[float, ...]] = None
    ) -> None:
        series = self.histograms.setdefault(name, {})
        hist = series.get(key)
        if hist is None:
            hist = series[key] = Histogram(buckets or DURATION_BUCKETS)
        hist.observe(value)

    def declare(self, name: str, **labels: str) -> None:
        """Make a counter visible at 0 before anything happens."""
        self.counters.setdefault(name, {}).setdefault(_key(labels), 0)

    def gauge_add(self, name: str, delta: float, **labels: str) -> None:
        series = self.gauges.setdefault(name, {})
        key = _key(labels)
        series[key] = series.get(key, 0) + delta

    def gauge_set(self, name: str, value: float, **labels: str) -> None:
        self.gauges.setdefault(name, {})[_key(labels)] = value

    def observe(
        self, name: str, value: float, buckets: Optional[tuple[float, ...]] = None, **labels: str
    ) -> None:
        series = self.histograms.setdefault(name, {})
        key = _key(labels)
        hist = series.get(key)
        if hist is None:
            hist = series[key] = Histogram(buckets or DURATION_BUCKETS)
        hist.observe(value)

    def get(self, name: str, **labels: str) -> float:
        """A counter's or gauge's current value (0 if never touched)."""
        key = _key(labels)
        if name in self.counters:
            return self.counters[name].get(key, 0)
        return self.gauges.get(name, {}).get(key, 0)

    def total(self, name: str) -> float:
        """A counter summed over all its label sets."""
        return sum(self.counters.get(name, {}).values())

    def iter_counters(self) -> Iterator[tuple[str, LabelKey, float]]:
        for name in sorted(self.counters):
            for key, value in sorted(self.counters[name].items()):
                yield name, key, value
