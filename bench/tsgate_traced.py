"""
tsgate (``python -m twisted`` = twist) with ``tracemalloc`` on, for
``bench/relay.py --profile --profile-workload idle``.

Each SIGUSR1 writes a tracemalloc snapshot to ``$TSGATE_BENCH_SNAPSHOT.<n>``
(n = 0, 1, ...; written under a temporary name and renamed, so a file that
exists is complete). The benchmark takes one before and one after opening the
idle connections and compares them: Python memory per connection by the line
that allocated it. tsgate itself is not changed; this only wraps its runner.

Usage: python bench/tsgate_traced.py [twist options] tsgate [tsgate options]
"""

from __future__ import annotations

import os
import signal
import sys
import tracemalloc
from typing import Any


def main() -> None:
    out = os.environ["TSGATE_BENCH_SNAPSHOT"]
    tracemalloc.start(int(os.environ.get("TSGATE_BENCH_FRAMES", "12")))
    taken = [0]

    def dump(signum: int, frame: Any) -> None:
        path = f"{out}.{taken[0]}"
        taken[0] += 1
        tracemalloc.take_snapshot().dump(path + ".tmp")
        os.rename(path + ".tmp", path)

    signal.signal(signal.SIGUSR1, dump)
    from twisted.application.twist._twist import Twist

    Twist.main(sys.argv)


if __name__ == "__main__":
    main()
