"""
Envoy's plain ``/stats`` view of a :class:`tsgate.stats.Stats`.

Envoy writes the listener, cluster or stat prefix *inside* the dotted name
(``cluster.outbound|2701||tcp-echo-service.upstream_cx_connect_fail: 3``),
and operators grep for exactly that. tsgate keeps those as labels in the
registry (cheaper, and Prometheus wants them as labels anyway), so this
module puts them back into the name. Labels that Envoy has no place for
(the Istio metrics' labels) are printed Prometheus-style in braces.
"""

from __future__ import annotations

import re
from typing import Any, Optional

from tsgate.stats import LabelKey, Stats

#: Labels folded into the dotted name, in the order tried; at most one is.
NAME_TAGS = ("listener", "cluster", "stat_prefix", "route")


def flat_name(stat: str, key: LabelKey) -> str:
    """``cluster.upstream_cx_active`` + cluster=c -> ``cluster.c.upstream_cx_active``."""
    labels = dict(key)
    if "." in stat:
        for tag in NAME_TAGS:
            if tag in labels:
                head, rest = stat.split(".", 1)
                stat = f"{head}.{labels.pop(tag)}.{rest}"
                break
    if labels:
        inner = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
        stat = f"{stat}{{{inner}}}"
    return stat


def _fmt(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:g}"


def rows(stats: Stats) -> list[tuple[str, float]]:
    """Counters and gauges as ``(flat name, value)``, sorted by name."""
    out = [(flat_name(n, k), v) for n, series in stats.counters.items() for k, v in series.items()]
    out += [(flat_name(n, k), v) for n, series in stats.gauges.items() for k, v in series.items()]
    return sorted(out)


def render_text(stats: Stats, filter_re: Optional[str] = None, used_only: bool = False) -> str:
    """
    ``name: value`` lines, then histograms as
    ``name: count=N sum=S P50=.. P90=.. P99=..`` (quantiles estimated from the
    bucket bounds, as Envoy's ``/stats`` does).
    """
    pattern = re.compile(filter_re) if filter_re else None
    lines = []
    for name, value in rows(stats):
        if used_only and not value:
            continue
        if pattern is None or pattern.search(name):
            lines.append(f"{name}: {_fmt(value)}")
    for stat in sorted(stats.histograms):
        for key, hist in sorted(stats.histograms[stat].items(), key=lambda kv: kv[0]):
            name = flat_name(stat, key)
            if used_only and not hist.count:
                continue
            if pattern is not None and not pattern.search(name):
                continue
            qs = " ".join(
                f"P{int(q * 100)}={_fmt(quantile(hist.buckets, hist.counts, q))}"
                for q in (0.5, 0.9, 0.99)
            )
            lines.append(f"{name}: count={hist.count} sum={_fmt(hist.sum)} {qs}")
    return "\n".join(lines) + ("\n" if lines else "")


def render_json(stats: Stats, filter_re: Optional[str] = None, used_only: bool = False) -> Any:
    pattern = re.compile(filter_re) if filter_re else None
    plain = [
        {"name": name, "value": value}
        for name, value in rows(stats)
        if (pattern is None or pattern.search(name)) and (value or not used_only)
    ]
    hists = []
    for stat in sorted(stats.histograms):
        for key, hist in sorted(stats.histograms[stat].items(), key=lambda kv: kv[0]):
            name = flat_name(stat, key)
            if (pattern is not None and not pattern.search(name)) or (used_only and not hist.count):
                continue
            cumulative, buckets = 0, []
            for bound, count in zip(list(hist.buckets) + [float("inf")], hist.counts):
                cumulative += count
                buckets.append({"le": "+Inf" if bound == float("inf") else bound,
                                "count": cumulative})
            hists.append({"name": name, "count": hist.count, "sum": hist.sum, "buckets": buckets})
    return {"stats": plain, "histograms": hists}


def quantile(bounds: tuple[float, ...], counts: list[int], q: float) -> float:
    """
    The upper bound of the bucket holding the q-quantile (0 if empty);
    for the +Inf bucket, the largest finite bound. Coarse on purpose: it is
    for a human glancing at ``/stats``, Prometheus computes its own.
    """
    total = sum(counts)
    if not total:
        return 0.0
    rank = q * total
    running = 0
    for bound, count in zip(bounds, counts):
        running += count
        if running >= rank:
            return bound
    return bounds[-1] if bounds else 0.0
