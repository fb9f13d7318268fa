"""
TimerWheel details the connection timeouts rely on: where the one reactor
timer sits, the pending count, cancellation from inside a callback, a
bucket emptied by cancellation. Each test states the planted bug (a mutant
of docs/mutation-report.md, "data path") it catches.
"""

from __future__ import annotations

from typing import Any, Callable

import pytest
from twisted.internet.task import Clock
from twisted.logger import Logger

from tsgate.proxy import timers
from tsgate.proxy.timers import RESOLUTION, TimerWheel


def wheel(resolution: float = 0.1) -> tuple[Clock, TimerWheel, list[str]]:
    clock = Clock()
    return clock, TimerWheel(clock, resolution=resolution), []


def note(fired: list[str], name: str) -> Callable[[], None]:
    return lambda: fired.append(name)


def test_the_reactor_timer_is_at_the_end_of_the_deadlines_bucket() -> None:
    """One DelayedCall, at the bucket's end; an earlier deadline moves it (reset, not a second)."""
    clock, w, fired = wheel(resolution=1.0)
    assert RESOLUTION == 0.1 and TimerWheel(clock).resolution == RESOLUTION
    clock.advance(10)
    w.schedule(2.5, note(fired, "late"))
    (call,) = clock.getDelayedCalls()
    assert call.getTime() == 13.0
    w.schedule(0.2, note(fired, "early"))
    (call2,) = clock.getDelayedCalls()
    assert call2 is call and call.getTime() == 11.0
    w.schedule(5, note(fired, "later"))  # a later deadline leaves it alone
    assert clock.getDelayedCalls() == [call] and call.getTime() == 11.0
    clock.advance(0.99)
    assert fired == []
    clock.advance(0.01)
    assert fired == ["early"]
    assert [c.getTime() for c in clock.getDelayedCalls()] == [13.0]


def test_a_past_deadline_fires_at_the_next_turn() -> None:
    """A negative delay is now, not in the past or never."""
    clock, w, fired = wheel()
    clock.advance(5)
    w.schedule(-3, note(fired, "now"))
    (call,) = clock.getDelayedCalls()
    assert call.getTime() == pytest.approx(5.0)
    clock.advance(0)
    assert fired == ["now"]


def test_pending_counts_scheduled_timers_once() -> None:
    """pending: +1 per schedule, -1 per fire or cancel, never twice for one timer."""
    clock, w, fired = wheel()
    a = w.schedule(1, note(fired, "a"))
    w.schedule(1, note(fired, "b"))
    w.schedule(2, note(fired, "c"))
    assert w.pending == 3
    a.cancel()
    a.cancel()
    assert w.pending == 2 and not a.active()
    clock.advance(1.1)
    assert fired == ["b"] and w.pending == 1
    clock.advance(1)
    assert fired == ["b", "c"] and w.pending == 0
    assert clock.getDelayedCalls() == []


def test_a_callback_may_cancel_another_timer_of_its_bucket() -> None:
    """
    A connection closing inside one deadline cancels its other deadlines of
    the same bucket: they do not fire, and the count stays right.
    """
    clock, w, fired = wheel()
    timers_: dict[str, Any] = {}

    def first() -> None:
        fired.append("first")
        timers_["second"].cancel()

    timers_["first"] = w.schedule(1, first)
    timers_["second"] = w.schedule(1, note(fired, "second"))
    w.schedule(1, note(fired, "after"))  # same bucket, after the cancelled one
    w.schedule(3, note(fired, "third"))
    clock.advance(1.1)
    assert fired == ["first", "after"]
    assert w.pending == 1
    clock.advance(2)
    assert fired == ["first", "after", "third"] and w.pending == 0


def test_cancel_from_a_callback_that_refilled_its_own_bucket(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """
    A callback schedules a deadline that lands in the bucket being fired
    (delay 0), then cancels a sibling: the count stays right and the later
    deadline still fires (planted: a missing timer counted as dropped, or
    raising).
    """
    events: list[dict[str, Any]] = []
    observer: Any = events.append
    monkeypatch.setattr(timers, "log", Logger(namespace="tsgate.timers", observer=observer))
    clock, w, fired = wheel(resolution=1.0)
    timers_: dict[str, Any] = {}

    def first() -> None:
        fired.append("first")
        w.schedule(0, note(fired, "now"))
        timers_["second"].cancel()

    w.schedule(1, first)
    timers_["second"] = w.schedule(1, note(fired, "second"))
    w.schedule(5, note(fired, "later"))
    clock.advance(1)
    assert fired == ["first", "now"]
    assert events == []
    assert w.pending == 1
    clock.advance(4)
    assert fired == ["first", "now", "later"] and w.pending == 0


def test_the_next_bucket_does_not_fire_early() -> None:
    """Firing one bucket leaves the next alone (planted: the current bucket computed one ahead)."""
    clock, w, fired = wheel(resolution=1.0)
    w.schedule(1, note(fired, "one"))
    w.schedule(2, note(fired, "two"))
    clock.advance(1)
    assert fired == ["one"]
    clock.advance(0.99)
    assert fired == ["one"]
    clock.advance(0.01)
    assert fired == ["one", "two"]


def test_an_emptied_bucket_after_the_fired_one_is_dropped() -> None:
    """A cancelled bucket right after the one fired is skipped when re-arming."""
    clock, w, fired = wheel()
    w.schedule(1, note(fired, "a"))
    b = w.schedule(2, note(fired, "b"))
    w.schedule(3, note(fired, "c"))
    b.cancel()
    clock.advance(1.1)
    assert fired == ["a"]
    assert [round(c.getTime(), 6) for c in clock.getDelayedCalls()] == [3.0]
    clock.advance(2)
    assert fired == ["a", "c"]


def test_a_bucket_emptied_by_cancellation_is_skipped() -> None:
    """The earliest bucket cancelled while later ones stay: the timer moves to the next."""
    clock, w, fired = wheel()
    early = w.schedule(1, note(fired, "early"))
    w.schedule(2, note(fired, "mid"))
    w.schedule(3, note(fired, "late"))
    early.cancel()
    clock.advance(2.1)
    assert fired == ["mid"]
    assert [round(c.getTime(), 6) for c in clock.getDelayedCalls()] == [3.0]
    clock.advance(1)
    assert fired == ["mid", "late"]


def test_everything_cancelled_then_scheduled_again() -> None:
    """After the wheel emptied by cancels, a new deadline arms a fresh reactor timer."""
    clock, w, fired = wheel()
    w.schedule(5, note(fired, "x")).cancel()
    assert clock.getDelayedCalls() == [] and w.pending == 0
    w.schedule(1, note(fired, "y"))
    assert len(clock.getDelayedCalls()) == 1
    clock.advance(1.1)
    assert fired == ["y"]


def test_a_failing_callback_is_logged(monkeypatch: pytest.MonkeyPatch) -> None:
    events: list[dict[str, Any]] = []
    observer: Any = events.append
    monkeypatch.setattr(timers, "log", Logger(namespace="tsgate.timers", observer=observer))
    clock, w, fired = wheel()

    def boom() -> None:
        raise RuntimeError("bug")

    w.schedule(1, boom)
    w.schedule(1, note(fired, "other"))
    clock.advance(1.1)
    assert fired == ["other"]
    assert [e["log_format"] for e in events] == ["timer callback failed"]
