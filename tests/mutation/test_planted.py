"""
The CI subset of the mutation run: each bug of ``planted.CI`` is planted in a
copy of the repository and the unit tests named for it must fail (about a
minute on two busy cores). The full runs are ``tests/mutation/run`` (mutmut)
and ``python3 -m tests.mutation.plant --all``; see docs/testing.md.
"""

from __future__ import annotations

import io

from tests.mutation.plant import check
from tests.mutation.planted import CI, DATAPATH


def test_every_planted_bug_is_caught():
    out = io.StringIO()
    results = check(CI, out)
    missed = [f"{plant.name}: {outcome}" for plant, outcome in results if outcome != "caught"]
    assert not missed, "\n".join(missed) + "\n" + out.getvalue()
    assert len(results) == len(CI) >= 10


def test_plants_are_one_change_each_with_tests():
    names = [plant.name for plant in CI + DATAPATH]
    assert len(names) == len(set(names))
    for plant in CI + DATAPATH:
        assert plant.old != plant.new and plant.tests, plant.name
