"""TimerWheel: deadlines never early, at most one bucket late, one reactor timer."""

from __future__ import annotations

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from tsgate.proxy.timers import TimerWheel


class TimerWheelTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.wheel = TimerWheel(self.clock, resolution=0.1)
        self.fired: list[str] = []

    def at(self, name: str):
        return lambda: self.fired.append(name)

    def test_never_early_at_most_one_bucket_late(self) -> None:
        self.wheel.schedule(1.05, self.at("a"))
        self.clock.advance(1.04)
        self.assertEqual(self.fired, [])
        self.clock.advance(0.07)
        self.assertEqual(self.fired, ["a"])

    def test_order_and_one_reactor_timer(self) -> None:
        for name, delay in (("c", 3.0), ("a", 1.0), ("b", 2.0)):
            self.wheel.schedule(delay, self.at(name))
        self.assertEqual(len(self.clock.getDelayedCalls()), 1)
        self.clock.pump([0.5] * 8)
        self.assertEqual(self.fired, ["a", "b", "c"])
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_cancel(self) -> None:
        timer = self.wheel.schedule(1.0, self.at("x"))
        other = self.wheel.schedule(2.0, self.at("y"))
        timer.cancel()
        self.assertFalse(timer.active())
        self.clock.advance(1.5)
        self.assertEqual(self.fired, [])
        other.cancel()
        self.assertEqual(self.clock.getDelayedCalls(), [], "no reactor timer when empty")
        self.assertEqual(self.wheel.pending, 0)

    def test_earlier_deadline_rearms(self) -> None:
        self.wheel.schedule(3600, self.at("idle"))
        self.wheel.schedule(10, self.at("connect"))
        self.clock.advance(10.1)
        self.assertEqual(self.fired, ["connect"])
        self.clock.advance(3600)
        self.assertEqual(self.fired, ["connect", "idle"])

    def test_callback_may_reschedule_and_errors_do_not_stop_others(self) -> None:
        def boom() -> None:
            raise RuntimeError("connection bug")

        def again() -> None:
            self.fired.append("first")
            self.wheel.schedule(1.0, self.at("second"))

        self.wheel.schedule(1.0, boom)
        self.wheel.schedule(1.0, again)
        self.clock.advance(1.0)
        self.assertEqual(self.fired, ["first"])
        self.clock.advance(1.0)
        self.assertEqual(self.fired, ["first", "second"])
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)
