"""
What a worker tells the supervisor, as JSON-ready values, and how the
supervisor adds the workers' numbers up.

Counters and gauges are summed label set by label set; histograms are merged
bucket by bucket (every worker uses the same bucket bounds, so the merge is
exact). A worker that exits leaves its counters and histograms behind in a
"retired" registry, so totals never go backwards when a worker is replaced
(its gauges go with it: the connections they counted are gone).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from tsgate.stats import Histogram, LabelKey, Stats

JSONStats = dict[str, list[Any]]


def _labels(key: LabelKey) -> list[list[str]]:
    return [[k, v] for k, v in key]


def _key(labels: Iterable[Iterable[str]]) -> LabelKey:
    return tuple(sorted((str(k), str(v)) for k, v in labels))


def stats_to_json(stats: Stats) -> JSONStats:
    """Every series of a registry, exactly (counts, sums, bucket bounds)."""
    return {
        "counters": [[name, _labels(key), value]
                     for name, series in stats.counters.items()
                     for key, value in series.items()],
        "gauges": [[name, _labels(key), value]
                   for name, series in stats.gauges.items()
                   for key, value in series.items()],
        "histograms": [[name, _labels(key), list(h.buckets), list(h.counts), h.sum, h.count]
                       for name, series in stats.histograms.items()
                       for key, h in series.items()],
    }


#: Series a worker keeps about itself that the supervisor counts for the whole
#: gateway (a reload is one reload, not one per worker).
SUPERVISOR_SERIES = ("config.", "server.days_until_first_cert_expiring")


def add_json(into: Stats, data: Mapping[str, Any], *, gauges: bool = True,
             skip: tuple[str, ...] = ()) -> None:
    """Add one worker's series (from :func:`stats_to_json`) into ``into``."""
    for name, labels, value in data.get("counters", ()):
        if skip and name.startswith(skip):
            continue
        series = into.counters.setdefault(name, {})
        key = _key(labels)
        series[key] = series.get(key, 0) + value
    if gauges:
        for name, labels, value in data.get("gauges", ()):
            if skip and name.startswith(skip):
                continue
            series = into.gauges.setdefault(name, {})
            key = _key(labels)
            series[key] = series.get(key, 0) + value
    for name, labels, buckets, counts, total, count in data.get("histograms", ()):
        hseries = into.histograms.setdefault(name, {})
        key = _key(labels)
        hist = hseries.get(key)
        if hist is None:
            hist = hseries[key] = Histogram(tuple(buckets))
        if list(hist.buckets) != list(buckets) or len(hist.counts) != len(counts):
            # Different bounds cannot be merged exactly; keep count and sum right.
            hist.counts[-1] += sum(counts)
        else:
            for i, c in enumerate(counts):
                hist.counts[i] += c
        hist.sum += total
        hist.count += count


def add_stats(into: Stats, other: Stats) -> None:
    """Add a live registry (the supervisor's own counters) into ``into``."""
    add_json(into, stats_to_json(other))


def merged(own: Stats, retired: Stats, workers: Iterable[Mapping[str, Any]]) -> Stats:
    """The whole gateway's numbers: the supervisor's, exited workers', live workers'."""
    total = Stats()
    add_stats(total, own)
    add_json(total, stats_to_json(retired), gauges=False, skip=SUPERVISOR_SERIES)
    for data in workers:
        add_json(total, data, skip=SUPERVISOR_SERIES)
    return total
