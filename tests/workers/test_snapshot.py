"""Adding workers' numbers up: counters and gauges summed, histograms merged exactly."""

from __future__ import annotations

import json

from tsgate.stats import Stats
from tsgate.workers.snapshot import add_json, merged, stats_to_json


def worker_stats(connections: int, durations: list[float]) -> Stats:
    s = Stats()
    s.inc("listener.downstream_cx_total", connections, listener="0.0.0.0_7500")
    s.inc("config.reload_success", 3)
    s.gauge_add("listener.downstream_cx_active", 2, listener="0.0.0.0_7500")
    for d in durations:
        s.observe("listener.downstream_cx_length_seconds", d, listener="0.0.0.0_7500")
    return s


def test_round_trip_through_json_is_exact() -> None:
    s = worker_stats(5, [0.002, 0.2, 7.0])
    data = json.loads(json.dumps(stats_to_json(s)))
    back = Stats()
    add_json(back, data)
    assert back.counters == s.counters
    assert back.gauges == s.gauges
    (key, hist), = back.histograms["listener.downstream_cx_length_seconds"].items()
    orig = s.histograms["listener.downstream_cx_length_seconds"][key]
    assert (hist.buckets, hist.counts, hist.sum, hist.count) == \
        (orig.buckets, orig.counts, orig.sum, orig.count)


def test_merged_sums_workers_and_keeps_exited_workers_counters() -> None:
    own = Stats()
    own.inc("config.reload_success", 1)
    retired = Stats()
    add_json(retired, stats_to_json(worker_stats(7, [0.5])), gauges=False)
    w1 = stats_to_json(worker_stats(10, [0.002, 0.002]))
    w2 = stats_to_json(worker_stats(4, [60.0]))
    total = merged(own, retired, [w1, w2])
    assert total.get("listener.downstream_cx_total", listener="0.0.0.0_7500") == 21
    # gauges: only live workers (the exited one's connections are gone)
    assert total.get("listener.downstream_cx_active", listener="0.0.0.0_7500") == 4
    # a reload is the supervisor's count, not one per worker
    assert total.get("config.reload_success") == 1
    (hist,) = total.histograms["listener.downstream_cx_length_seconds"].values()
    assert hist.count == 4
    assert abs(hist.sum - 60.504) < 1e-9
    assert sum(hist.counts) == 4
    assert hist.counts[0] == 0 and hist.counts[1] == 2  # 0.002 s falls in (0.001, 0.005]


def test_histograms_with_other_bounds_keep_count_and_sum() -> None:
    a, b = Stats(), Stats()
    a.observe("h", 0.5, buckets=(1.0,))
    b.observe("h", 3.0, buckets=(2.0, 4.0))
    total = Stats()
    add_json(total, stats_to_json(a))
    add_json(total, stats_to_json(b))
    (hist,) = total.histograms["h"].values()
    assert hist.count == 2 and hist.sum == 3.5 and sum(hist.counts) == 2
