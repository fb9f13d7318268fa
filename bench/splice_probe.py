#!/usr/bin/env python3
"""
Probe: what ``os.splice`` through a pipe saves a Python relay on one bulk stream.

    python bench/splice_probe.py recv splice recv splice

One process relays 2 GiB from a loopback socket to another, pinned to CPU 0
(a writer and a sink process on CPU 1): ``recv`` is tsgate's relay loop
(256 KiB ``recv``, ``send`` until sent), ``splice`` moves the same chunks
socket → pipe (1 MiB) → socket without copying them through Python. Prints
Gbit/s of wall time and per CPU-second of the relaying process (the second
is what matters on a shared machine). Not part of bench/run.py: the numbers
are in bench/results/notes-2026-12-02.md.
"""

from __future__ import annotations

import fcntl
import os
import resource
import socket
import sys
import time

TOTAL = 2 << 30
CHUNK = 256 * 1024
F_SETPIPE_SZ = 1031


def writer(port: int) -> None:
    s = socket.create_connection(("127.0.0.1", port))
    buf = b"\0" * (1 << 20)
    n = 0
    while n < TOTAL:
        s.sendall(buf)
        n += len(buf)
    s.close()
    os._exit(0)


def sink(listening: socket.socket) -> None:
    conn, _ = listening.accept()
    buf = bytearray(1 << 20)
    while conn.recv_into(buf):
        pass
    os._exit(0)


def run(mode: str) -> None:
    lin = socket.socket()
    lin.bind(("127.0.0.1", 0))
    lin.listen(1)
    lout = socket.socket()
    lout.bind(("127.0.0.1", 0))
    lout.listen(1)
    if os.fork() == 0:
        os.sched_setaffinity(0, {1})
        sink(lout)
    out = socket.create_connection(lout.getsockname())
    if os.fork() == 0:
        os.sched_setaffinity(0, {1})
        writer(lin.getsockname()[1])
    inn, _ = lin.accept()
    os.sched_setaffinity(0, {0})
    r0 = resource.getrusage(resource.RUSAGE_SELF)
    t0 = time.perf_counter()
    n = 0
    if mode == "recv":
        recv, send = inn.recv, out.send
        while True:
            data = recv(CHUNK)
            if not data:
                break
            n += len(data)
            while data:
                data = data[send(data):]
    else:
        pr, pw = os.pipe()
        try:
            fcntl.fcntl(pw, F_SETPIPE_SZ, 1 << 20)
        except OSError:
            pass
        a, b = inn.fileno(), out.fileno()
        splice = os.splice
        while True:
            k = splice(a, pw, CHUNK)
            if not k:
                break
            n += k
            while k:
                k -= splice(pr, b, k)
    out.close()
    inn.close()
    wall = time.perf_counter() - t0
    r1 = resource.getrusage(resource.RUSAGE_SELF)
    user, system = r1.ru_utime - r0.ru_utime, r1.ru_stime - r0.ru_stime
    os.wait()
    os.wait()
    print(f"{mode:7s} {n * 8 / wall / 1e9:6.2f} Gbit/s wall, "
          f"{n * 8 / (user + system) / 1e9:6.2f} Gbit/s per CPU-s "
          f"(user {user:.2f} s, sys {system:.2f} s)", flush=True)


if __name__ == "__main__":
    for name in sys.argv[1:] or ["recv", "splice"]:
        run(name)
