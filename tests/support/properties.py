"""
The properties every hint parser and observer must have, as helpers the
protocol test modules drive with hypothesis.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from tsgate.interfaces import NEED_MORE, Hint, HintParseError, NeedMore, NotMine


def parse_as_delivered(parser: Any, sample: bytes, cuts: Sequence[int]) -> Any:
    """
    Call ``parser.parse`` the way the data path does when ``sample``
    arrives in reads ending at ``cuts``: with everything so far, until the
    answer is not NEED_MORE.
    """
    ends = sorted({c for c in cuts if 0 < c < len(sample)} | {len(sample)})
    result: Any = NEED_MORE
    for end in ends:
        result = parser.parse(sample[:end])
        if not isinstance(result, NeedMore):
            return result
    return result


def check_truncated_with_garbage(parser: Any, prefix: bytes, garbage: bytes) -> Any:
    """
    Whatever follows a truncated valid sample, the parser answers NEED_MORE,
    NotMine or a hint (a few protocols decide early), or raises only
    HintParseError; NEED_MORE only below ``max_bytes``.
    """
    data = prefix + garbage
    try:
        result = parser.parse(data)
    except HintParseError:
        return None
    assert isinstance(result, (NeedMore, NotMine, Hint)) or type(result).__name__ == "Preamble"
    if isinstance(result, NeedMore):
        assert len(data) < parser.max_bytes
    return result
