"""Byte mutations of seeds, shared by the hypothesis strategies and the long run."""

from __future__ import annotations

import random

INTERESTING = (b"\x00", b"\xff", b"\x7f", b"\x80", b"\x00\x00\x00\x00", b"\xff\xff\xff\xff",
               b"\x7f\xff\xff\xff", b"\x80\x00\x00\x00", b"\r\n", b"*", b"$-1\r\n",
               b": ", b"\n- ", b"{", b"[", b"&a ", b"*a", b"!!binary ", b"~", b"'", b'"')


def mutate(rng: random.Random, seed: bytes, rounds: int = 0) -> bytes:
    """One mutant of ``seed``: flips, overwrites, inserts, deletes, splices, truncation."""
    data = bytearray(seed)
    for _ in range(rounds or 1 + rng.randrange(8)):
        op = rng.randrange(7)
        pos = rng.randrange(len(data) + 1)
        if op == 0 and data:
            data[min(pos, len(data) - 1)] ^= 1 << rng.randrange(8)
        elif op == 1 and data:
            data[min(pos, len(data) - 1)] = rng.randrange(256)
        elif op == 2:
            data[pos:pos] = rng.choice(INTERESTING)
        elif op == 3 and data:
            del data[pos: pos + 1 + rng.randrange(16)]
        elif op == 4:
            data[pos:pos] = bytes(rng.randrange(256) for _ in range(1 + rng.randrange(16)))
        elif op == 5 and data:  # a length field made huge or negative
            width = rng.choice((1, 2, 4))
            data[pos: pos + width] = rng.choice((b"\xff", b"\x7f", b"\x80", b"\x00")) * width
        elif op == 6 and len(data) > 1:
            data = data[: rng.randrange(len(data))]
    return bytes(data)
