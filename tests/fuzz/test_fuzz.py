"""
The short fuzz run: every parser's target with hypothesis, random bytes and
mutants of the real captures. ``TSGATE_FUZZ_EXAMPLES`` sets the examples per
target (default 200); the long run (a million each, and the 10 ms budget per
call) is ``python -m tests.fuzz.long_run``, see docs/operations.md.
"""

from __future__ import annotations

import os
import random

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.fuzz.mutate import mutate
from tests.fuzz.targets import targets

TARGETS = targets()
EXAMPLES = int(os.environ.get("TSGATE_FUZZ_EXAMPLES", "200"))

#: Every parser the issue names has a target (plugins found through twisted.plugin).
REQUIRED = {"hint:tls", "hint:postgres", "hint:mongo", "hint:kafka", "hint:redis",
            "preamble:postgres-starttls", "observer:postgres", "observer:mongo",
            "observer:kafka", "observer:redis", "observer:mysql", "proxy-header", "yaml"}


def test_every_parser_has_a_target_and_seeds():
    assert set(TARGETS) >= REQUIRED
    for name, (_, seeds) in TARGETS.items():
        assert seeds, f"{name}: no seed inputs"


def inputs(seeds: list[bytes]) -> st.SearchStrategy[bytes]:
    mutants = st.builds(lambda i, r: mutate(random.Random(r), seeds[i % len(seeds)]),
                        st.integers(0, len(seeds) - 1), st.integers(0, 2**32))
    return st.one_of(st.binary(max_size=2048), mutants, st.sampled_from(seeds))


@pytest.mark.parametrize("name", sorted(TARGETS))
def test_fuzz(name: str) -> None:
    target, seeds = TARGETS[name]

    @settings(max_examples=EXAMPLES, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))
    @given(inputs(seeds))
    def run(data: bytes) -> None:
        target(data)

    run()
