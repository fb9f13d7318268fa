"""
Per-connection timeouts on one reactor timer.

Every proxied connection has up to three deadlines (inspection, connect,
idle) and most of them are cancelled long before they fire. As Twisted
``DelayedCall``s each costs an object, a heap push with Python-level
comparisons (slower as thousands of idle connections fill the heap) and a
cancellation the reactor cleans up later. A :class:`TimerWheel` keeps the
deadlines in buckets of ``resolution`` seconds instead, each bucket a dict,
and drives them all with one ``DelayedCall`` for the earliest bucket:
scheduling and cancelling are a dict insert and a dict delete.

The price is precision: a deadline fires up to ``resolution`` late (never
early), which is far below what L4 timeouts (seconds to an hour) care about.
The clock is injected, so tests drive it with ``twisted.internet.task.Clock``.
"""

from __future__ import annotations

import heapq
import math
from typing import Any, Callable, Optional

from twisted.logger import Logger

log = Logger(namespace="tsgate.timers")

#: Default bucket width, in seconds.
RESOLUTION = 0.1


class Timer:
    """A scheduled deadline; ``cancel()`` and ``active()`` as on a DelayedCall."""

    __slots__ = ("_wheel", "bucket", "callback")

    def __init__(self, wheel: TimerWheel, bucket: int, callback: Callable[[], Any]) -> None:
        self._wheel = wheel
        self.bucket = bucket
        self.callback: Optional[Callable[[], Any]] = callback

    def active(self) -> bool:
        return self.callback is not None

    def cancel(self) -> None:
        if self.callback is not None:
            self.callback = None
            self._wheel.forget(self)


class TimerWheel:
    """Deadlines in ``resolution``-second buckets, driven by one reactor timer."""

    def __init__(self, clock: Any, resolution: float = RESOLUTION) -> None:
        self.clock = clock
        self.resolution = resolution
        self._buckets: dict[int, dict[Timer, None]] = {}
        self._order: list[int] = []  # heap of bucket numbers present in _buckets
        self._call: Any = None  # the DelayedCall for the earliest bucket
        self._call_bucket: Optional[int] = None
        self.pending = 0

    def schedule(self, delay: float, callback: Callable[[], Any]) -> Timer:
        """Call ``callback()`` once, ``delay`` seconds from now (up to one bucket late)."""
        bucket = math.ceil((self.clock.seconds() + max(delay, 0.0)) / self.resolution)
        timer = Timer(self, bucket, callback)
        timers = self._buckets.get(bucket)
        if timers is None:
            timers = self._buckets[bucket] = {}
            heapq.heappush(self._order, bucket)
        timers[timer] = None
        self.pending += 1
        if self._call_bucket is None or bucket < self._call_bucket:
            self._arm(bucket)
        return timer

    def forget(self, timer: Timer) -> None:
        """Drop a cancelled timer (``Timer.cancel`` calls this)."""
        timers = self._buckets.get(timer.bucket)
        if timers is not None and timers.pop(timer, 0) is None:
            self.pending -= 1
            if not timers:
                del self._buckets[timer.bucket]
        if self.pending == 0 and self._call is not None:
            self._call.cancel()
            self._call = self._call_bucket = None
            self._order.clear()

    def _arm(self, bucket: int) -> None:
        delay = max(0.0, bucket * self.resolution - self.clock.seconds())
        if self._call is not None and self._call.active():
            self._call.reset(delay)
        else:
            self._call = self.clock.callLater(delay, self._fire)
        self._call_bucket = bucket

    def _fire(self) -> None:
        self._call = self._call_bucket = None
        now_bucket = math.floor(self.clock.seconds() / self.resolution + 1e-9)
        order = self._order
        while order and order[0] <= now_bucket:
            bucket = heapq.heappop(order)
            timers = self._buckets.pop(bucket, None)
            if not timers:
                continue
            for timer in list(timers):
                callback, timer.callback = timer.callback, None
                self.pending -= 1
                if callback is None:
                    continue
                try:
                    callback()
                except Exception:  # one connection's bug must not stop the others' timers
                    log.failure("timer callback failed")
        while order and order[0] not in self._buckets:
            heapq.heappop(order)  # buckets emptied by cancellations
        if order:
            self._arm(order[0])
