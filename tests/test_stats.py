"""tsgate.stats: the counting registry the data path writes into."""

from __future__ import annotations

from tsgate.stats import DURATION_BUCKETS, Histogram, Stats


def test_counters_by_name_and_labels_and_label_order() -> None:
    stats = Stats()
    stats.inc("cx", listener="a", cluster="c")
    stats.inc("cx", 2, cluster="c", listener="a")  # label order does not matter
    stats.inc("cx", listener="b")
    assert stats.get("cx", listener="a", cluster="c") == 3
    assert stats.get("cx", listener="b") == 1
    assert stats.get("cx", listener="z") == 0
    assert stats.get("never") == 0
    assert stats.total("cx") == 4


def test_inc_key_is_inc_with_a_prebuilt_key() -> None:
    stats = Stats()
    key = Stats.label_key(listener="a", cluster="c")
    assert key == (("cluster", "c"), ("listener", "a"))
    stats.inc_key("cx", key)
    stats.inc("cx", listener="a", cluster="c")
    assert stats.get("cx", cluster="c", listener="a") == 2
    assert Stats.label_key() == ()


def test_declare_shows_a_counter_at_zero_and_keeps_its_value() -> None:
    stats = Stats()
    stats.declare("nr", listener="a")
    assert list(stats.iter_counters()) == [("nr", (("listener", "a"),), 0)]
    stats.inc("nr", listener="a")
    stats.declare("nr", listener="a")
    assert stats.get("nr", listener="a") == 1


def test_gauges_add_and_set() -> None:
    stats = Stats()
    stats.gauge_add("active", 1, listener="a")
    stats.gauge_add_key("active", Stats.label_key(listener="a"), 2)
    stats.gauge_add("active", -1, listener="a")
    assert stats.get("active", listener="a") == 2
    stats.gauge_set("active", 7, listener="a")
    assert stats.get("active", listener="a") == 7


def test_a_counter_name_wins_over_a_gauge_of_the_same_name() -> None:
    stats = Stats()
    stats.gauge_set("x", 5)
    assert stats.get("x") == 5
    stats.inc("x")
    assert stats.get("x") == 1


def test_iter_counters_sorted_by_name_then_labels() -> None:
    stats = Stats()
    stats.inc("b", listener="2")
    stats.inc("b", listener="1")
    stats.inc("a")
    assert [(n, k) for n, k, _ in stats.iter_counters()] == [
        ("a", ()),
        ("b", (("listener", "1"),)),
        ("b", (("listener", "2"),)),
    ]


def test_histogram_buckets_are_upper_bounds_with_an_inf_bucket() -> None:
    hist = Histogram((0.1, 1.0))
    for value in (0.05, 0.1, 0.5, 1.0, 5.0):
        hist.observe(value)
    # a value equal to a bound falls in that bound's bucket (le="0.1")
    assert hist.counts == [2, 2, 1]
    assert hist.count == 5
    assert hist.sum == 0.05 + 0.1 + 0.5 + 1.0 + 5.0


def test_observe_creates_one_histogram_per_label_set() -> None:
    stats = Stats()
    stats.observe("duration", 0.002, listener="a")
    stats.observe_key("duration", Stats.label_key(listener="a"), 4000.0)
    stats.observe("duration", 0.5, buckets=(1.0,), listener="b")
    a = stats.histograms["duration"][(("listener", "a"),)]
    b = stats.histograms["duration"][(("listener", "b"),)]
    assert a.buckets == DURATION_BUCKETS and a.count == 2 and a.counts[-1] == 1
    assert b.buckets == (1.0,) and b.counts == [1, 0]
