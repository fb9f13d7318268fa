"""
Recorded two-way conversations (``tests/data/<protocol>/*.trace``) and a sink
to replay them through an observer, shared by the plugin tests and the
end-to-end replays.
"""

from __future__ import annotations

import struct
from collections import Counter
from pathlib import Path
from typing import Any

DATA = Path(__file__).resolve().parents[1] / "data"

#: (``C`` for client-to-server or ``S`` for server-to-client, bytes), in socket order
Trace = list[tuple[str, bytes]]


def read_trace(path: Path) -> Trace:
    """A ``.trace`` file: records of a direction byte, a big-endian length, the bytes."""
    data, out, pos = path.read_bytes(), [], 0
    while pos < len(data):
        (n,) = struct.unpack_from(">I", data, pos + 1)
        out.append((chr(data[pos]), data[pos + 5 : pos + 5 + n]))
        pos += 5 + n
    return out


class Recorder:
    """An emit/observe sink and a clock the test moves."""

    def __init__(self) -> None:
        self.counters: Counter[str] = Counter()
        self.samples: list[tuple[str, float]] = []
        self.now = 0.0

    def emit(self, name: str, amount: int) -> None:
        assert isinstance(name, str) and isinstance(amount, int)
        self.counters[name] += amount

    def observe(self, name: str, value: float) -> None:
        self.samples.append((name, value))

    def clock(self) -> float:
        return self.now


def replay(records: Trace, factory: Any) -> Recorder:
    """Feed a two-way capture through a fresh timed observer, one tick per read."""
    rec = Recorder()
    observer = factory.new_timed_observer(rec.emit, rec.observe, rec.clock)
    for direction, data in records:
        rec.now += 1.0
        (observer.client_data if direction == "C" else observer.server_data)(data)
    return rec
