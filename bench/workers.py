#!/usr/bin/env python3
"""
Multi-core benchmark: ``tsgate --workers N`` against HAProxy ``nbthread N``, in one run.

    python bench/workers.py            # 3 rounds, about 3 minutes
    python bench/workers.py --quick    # 1 round, shorter workloads
    python bench/workers.py --profile  # one worker of --workers 2 under py-spy --native

Workloads (the C clients and backend of bench/relay.py):

- **conn/s**: 50 concurrent clients, each connection sends 100 B, reads the
  echo and closes; with tsgate ``--workers 1`` and ``--workers 2`` and HAProxy
  ``nbthread 1`` and ``nbthread 2``, plus a direct run (the ceiling). CPU
  µs per connection adds up every process of the proxy (supervisor and workers).
- **spread**: how the connections of the conn/s run divided over the workers
  (from the supervisor's ``/workers``), for ``--worker-sockets reuseport`` and
  ``shared``.
- **held**: 10,000 concurrent idle connections opened through ``--workers 2``;
  how many opened, and how they divided over the workers.

Nothing is pinned: N workers need N cores and this kind of machine has two,
shared with the client and the backend, so the ratios are what to read
(same round, same machine). The "CPU-bound ratio" is the conn/s ratio the
same round's CPU µs per connection (proxy, client, backend) give when CPU is
the only limit; it holds when other jobs load the machine, conn/s does not.
``--baseline TREE`` adds another commit's tsgate (``git archive`` of it) to
every round. Every wait is bounded.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any, Optional

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import relay  # noqa: E402  (bench/relay.py: processes, C load generator, backend)

HAPROXY_CONFIG = """\
global
    nbthread {threads}
    maxconn 9000

defaults
    mode tcp
    maxconn 9000
    timeout connect 5s
    timeout client 1h
    timeout server 1h

listen bench
    bind 127.0.0.1:{port}
    server backend 127.0.0.1:{backend_port}
"""


#: cores of the machine: the proxy, the load generator and the backend share them
CORES = os.cpu_count() or 1


def tree_cpu_ns(pid: int) -> int:
    """On-CPU time of ``pid`` and its children (a supervisor and its workers)."""
    total = 0
    todo = [pid]
    while todo:
        p = todo.pop()
        try:
            total += relay.cpu_ns(p)
            for task in Path(f"/proc/{p}/task").iterdir():
                children = (task / "children").read_text().split()
                todo.extend(int(c) for c in children)
        except (OSError, ValueError):
            pass
    return total


class Run:
    def __init__(self, args: argparse.Namespace) -> None:
        ns = argparse.Namespace(quick=args.quick, rounds=args.rounds, no_pin=True)
        self.bench = relay.Bench(ns)
        self.seconds = 2.0 if args.quick else 5.0
        #: another tsgate tree (a checkout of an older commit) measured in the same rounds
        self.baseline: Optional[Path] = Path(args.baseline).resolve() if args.baseline else None
        self.held = args.held
        self.notes: list[str] = []

    def start_haproxy(self, threads: int) -> tuple[relay.Proc, int]:
        port = relay.free_port()
        cfg = self.bench.workdir / f"haproxy-{threads}.cfg"
        cfg.write_text(HAPROXY_CONFIG.format(threads=threads, port=port,
                                             backend_port=self.bench.backend_port))
        proc = relay.Proc(f"haproxy-{threads}", ["haproxy", "-db", "-f", str(cfg)])
        relay.wait_connectable(port, 10)
        return proc, port

    def start_tsgate(self, workers: int, sockets: str = "reuseport",
                     tree: Optional[Path] = None) -> tuple[relay.Proc, int, int]:
        config = self.bench.workdir / "tsgate-bench.yaml"
        config.write_text(relay.TSGATE_CONFIG.format(backend_port=self.bench.backend_port))
        admin = relay.free_port()
        argv = [sys.executable, "-m", "twisted", "--log-format=text", "tsgate",
                "--config", str(config),
                "--endpoint", "7000=tcp:0:interface=127.0.0.1:backlog=4096",
                "--admin", f"tcp:{admin}:interface=127.0.0.1", "--readiness", "none",
                "--metrics", "none", "--access-log", "none", "--workers", str(workers),
                "--worker-sockets", sockets]
        env = None
        if tree is not None:  # that tree's tsgate package first on the path
            env = {"PYTHONPATH": os.pathsep.join(filter(None, [
                str(tree), os.environ.get("PYTHONPATH", "")]))}
        proc = relay.Proc(f"tsgate-{workers}", argv, cwd=self.bench.workdir, env=env)
        port = int(proc.wait_for(r"tsgate listening: \S+ on 127\.0\.0\.1:(\d+)", 60).group(1))
        if workers > 1:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                try:
                    with urllib.request.urlopen(f"http://127.0.0.1:{admin}/workers",
                                                timeout=5) as r:
                        ws = json.load(r)["workers"]
                    if len(ws) == workers and all(w["ready"] for w in ws):
                        break
                except OSError:
                    pass
                time.sleep(0.2)
        relay.wait_connectable(port, 30)
        return proc, port, admin

    def per_worker(self, admin: int) -> list[int]:
        time.sleep(1.2)  # workers push their numbers every 0.5 s
        with urllib.request.urlopen(f"http://127.0.0.1:{admin}/workers", timeout=5) as r:
            ws = json.load(r)["workers"]
        return [int(sum(v for k, v in w["counters"].items()
                        if k.endswith("downstream_cx_total"))) for w in ws]

    def conn(self, port: int, pid: Optional[int]) -> dict[str, float]:
        before = tree_cpu_ns(pid) if pid else 0
        client = self.bench.client_cpu_s()
        result = self.bench.loadgen("conn", port, 50, self.seconds, timeout=self.seconds + 30)
        if result["done"]:
            # the load generator and the backend: on this machine they share the cores
            result["client_cpu_us_per_conn"] = ((self.bench.client_cpu_s() - client) * 1e6
                                                / result["done"])
        if pid and result["done"]:
            result["cpu_us_per_conn"] = (tree_cpu_ns(pid) - before) / 1e3 / result["done"]
        return result

    def round(self) -> dict[str, Any]:
        out: dict[str, Any] = {"load average": os.getloadavg()[0]}
        out["direct"] = self.conn(self.bench.backend_port, None)
        for threads in (1, 2):
            proc, port = self.start_haproxy(threads)
            try:
                out[f"haproxy nbthread {threads}"] = self.conn(port, proc.pid)
            finally:
                proc.stop()
        runs: list[tuple[int, str, Optional[Path]]] = [
            (1, "reuseport", None), (2, "reuseport", None), (2, "shared", None)]
        if self.baseline is not None:
            runs += [(1, "reuseport", self.baseline), (2, "reuseport", self.baseline)]
        for workers, sockets, tree in runs:
            proc, port, admin = self.start_tsgate(workers, sockets, tree)
            try:
                name = (f"tsgate --workers {workers}"
                        + (" (shared socket)" if sockets == "shared" else "")
                        + (" (baseline)" if tree is not None else ""))
                before = self.per_worker(admin) if workers > 1 else []
                out[name] = self.conn(port, proc.pid)
                if workers > 1:
                    after = self.per_worker(admin)
                    out[name]["spread"] = [b - a for a, b in zip(before, after)]
            finally:
                proc.stop()
        out["load average"] = [out["load average"], os.getloadavg()[0]]
        return out

    def held_connections(self) -> dict[str, Any]:
        proc, port, admin = self.start_tsgate(2)
        loadgen = str(self.bench.workdir / "loadgen")
        gen = relay.Proc("idle", [loadgen, "idle", str(port), str(self.held), "60"], stdin=True)
        try:
            opened = relay.parse_kv(gen.wait_for(r"^OPEN", 90).string)
            spread = self.per_worker(admin)
            with urllib.request.urlopen(f"http://127.0.0.1:{admin}/workers", timeout=10) as r:
                active = [w["active_connections"] for w in json.load(r)["workers"]]
            gen.send("\n")
            gen.wait_for(r"^CLOSED", 60)
        finally:
            gen.stop()
            proc.stop()
        return {"wanted": self.held, "opened": opened.get("open"),
                "seconds": opened.get("seconds"), "errors": opened.get("errors", 0),
                "accepted_per_worker": spread, "active_per_worker": active}


def tree_commit() -> str:
    import subprocess

    try:
        done = subprocess.run(["git", "-C", str(HERE), "describe", "--always", "--dirty"],
                              capture_output=True, text=True, timeout=10)
        return f"commit {done.stdout.strip()}" if done.returncode == 0 else "no git"
    except OSError:
        return "no git"


def worker_pids(admin: int) -> list[int]:
    with urllib.request.urlopen(f"http://127.0.0.1:{admin}/workers", timeout=5) as r:
        return [int(w["pid"]) for w in json.load(r)["workers"]]


def profile(run: Run, workers: int, stamp: str, label: str) -> list[Path]:
    """
    One worker of ``--workers N`` (or the single process for N = 1) under
    ``py-spy record --native`` during conn/s; CPU µs per connection of every
    process, each worker's from its own connection count.
    """
    import subprocess

    seconds = run.seconds
    proc, port, admin = run.start_tsgate(workers)
    try:
        pids = worker_pids(admin) if workers > 1 else [proc.pid]
        run.bench.loadgen("conn", port, 50, 1.0, timeout=30)  # warm up
        counts = run.per_worker(admin) if workers > 1 else []
        base = relay.RESULTS / f"workers-profile-{stamp}-{label}"
        out = base.with_suffix(".collapsed")
        relay.RESULTS.mkdir(exist_ok=True)
        spy = subprocess.Popen(
            ["py-spy", "record", "--pid", str(pids[0]), "--native", "--rate", "250",
             "--format", "raw", "--output", str(out),
             "--duration", str(int(seconds))],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        load = os.getloadavg()[0]
        cpu = {p: relay.cpu_ns(p) for p in [proc.pid, *pids]}
        r = run.bench.loadgen("conn", port, 50, seconds, timeout=seconds + 30)
        cpu = {p: relay.cpu_ns(p) - v for p, v in cpu.items()}
        spy.wait(seconds + 60)
        if workers > 1:
            counts = [b - a for a, b in zip(counts, run.per_worker(admin))]
        else:
            counts = [int(r["done"])]
        per_own = [cpu[p] / 1e3 / max(1, n) for p, n in zip(pids, counts)]
        total = sum(cpu.values()) / 1e3 / max(1.0, r["done"])
    finally:
        proc.stop()
    head = [
        f"tsgate --workers {workers} ({label}): {r['rate']:,.0f} conn/s, {r['done']:,.0f} "
        f"connections in {seconds:.0f} s, 50 concurrent; load average {load:.1f} (2 cores)",
        f"CPU µs per connection, every tsgate process: {total:.1f}; each worker per connection "
        f"it accepted: {', '.join(f'{x:.1f}' for x in per_own)} (connections {counts})",
        f"py-spy record --native --rate 250 on pid {pids[0]} "
        f"({'worker 1' if workers > 1 else 'the single process'}); stacks: {out.name}",
        "",
    ]
    summary = base.with_suffix(".txt")
    summary.write_text("\n".join(head) + relay.summarize_collapsed(out, per_own[0]) + "\n")
    print(summary.read_text())
    return [out, summary]


def render(rounds: list[dict[str, Any]], held: Optional[dict[str, Any]]) -> str:
    names = [n for n in rounds[0] if n != "load average"]
    key = "rate"  # loadgen conn: connections per second
    med = {n: statistics.median(r[n][key] for r in rounds) for n in names}

    def ratio(a: str, b: str) -> float:
        return statistics.median(r[a][key] / r[b][key] for r in rounds if r[b][key])

    def cpu_bound(a: str, b: str) -> Optional[float]:
        """a's conn/s over b's if CPU were the only limit (see the note under the table)."""
        def rate(r: dict[str, Any], n: str) -> float:
            proxy, client = r[n]["cpu_us_per_conn"], r[n]["client_cpu_us_per_conn"]
            cores = 1 if ("--workers 1" in n or "nbthread 1" in n) else 2
            return min(cores * 1e6 / proxy, CORES * 1e6 / (proxy + client))

        ratios = [rate(r, a) / rate(r, b) for r in rounds
                  if all(k in r[n] for n in (a, b)
                         for k in ("cpu_us_per_conn", "client_cpu_us_per_conn"))]
        return statistics.median(ratios) if ratios else None

    lines = ["| proxy | conn/s | ratio to HAProxy, same threads | CPU-bound ratio | "
             "CPU µs/conn | client + backend µs/conn | spread |",
             "|---|---|---|---|---|---|---|"]
    for n in names:
        cpu = [r[n]["cpu_us_per_conn"] for r in rounds if "cpu_us_per_conn" in r[n]]
        peer = None
        if n.startswith("tsgate"):
            peer = "haproxy nbthread 2" if "--workers 2" in n else "haproxy nbthread 1"
        client = [r[n]["client_cpu_us_per_conn"] for r in rounds
                  if "client_cpu_us_per_conn" in r[n]]
        spread = rounds[-1][n].get("spread")
        bound = cpu_bound(n, peer) if peer else None
        lines.append(
            f"| {n} | {med[n]:,.0f} | {f'{ratio(n, peer):.2f}×' if peer else '—'} | "
            f"{f'{bound:.2f}×' if bound else '—'} | "
            f"{f'{statistics.median(cpu):.0f}' if cpu else '—'} | "
            f"{f'{statistics.median(client):.0f}' if client else '—'} | "
            f"{'/'.join(map(str, spread)) if spread else '—'} |")
    lines.append("")
    lines.append(f"CPU-bound ratio: the conn/s ratio if CPU were the only limit, from the "
                 f"same round's CPU µs per connection: each proxy's rate is the lower of "
                 f"its threads' bound (threads × 1 s / proxy µs) and the machine's "
                 f"({CORES} cores × 1 s / (proxy + client + backend µs)), since the load "
                 f"generator and backend share the cores. Unlike conn/s it does not depend "
                 f"on how much CPU other jobs on the machine took during the run.")
    lines.append("")
    lines.append(f"Scaling, tsgate 1 → 2 workers: {ratio('tsgate --workers 2', 'tsgate --workers 1'):.2f}×; "
                 f"HAProxy 1 → 2 threads: {ratio('haproxy nbthread 2', 'haproxy nbthread 1'):.2f}×; "
                 f"direct (the client's ceiling): {med['direct']:,.0f} conn/s.")
    loads = [x for r in rounds for x in r.get("load average", ())]
    if loads:
        lines.append("")
        lines.append(f"Load average (1 min) at the start and end of each round: "
                     f"{', '.join(f'{x:.1f}' for x in loads)} (2 cores; other jobs ran too).")
    if held:
        lines.append("")
        lines.append(f"Held: {held['opened']:.0f} of {held['wanted']} concurrent connections "
                     f"opened through --workers 2 in {held['seconds']:.1f} s "
                     f"({held['errors']:.0f} errors); accepted per worker "
                     f"{held['accepted_per_worker']}, active per worker {held['active_per_worker']}.")
    return "\n".join(lines)


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--rounds", type=int, default=0)
    parser.add_argument("--held", type=int, default=10000)
    parser.add_argument("--no-save", action="store_true")
    parser.add_argument("--baseline", default="",
                        help="a tree of another tsgate commit (git worktree or archive) whose "
                             "--workers 1 and 2 are measured in the same rounds")
    parser.add_argument("--profile", action="store_true",
                        help="profile one worker of --workers 2 and the single process instead")
    parser.add_argument("--label", default="", help="with --profile: a word for the file names")
    args = parser.parse_args(argv)
    run = Run(args)
    if args.profile:
        stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H%MZ")
        try:
            run.bench.build()
            run.bench.start_backend()
            for workers in (2, 1):
                label = f"{args.label + '-' if args.label else ''}workers{workers}"
                for path in profile(run, workers, stamp, label):
                    print(f"saved {path}", file=sys.stderr)
        finally:
            run.bench.close()
        return 0
    rounds_n = args.rounds or (1 if args.quick else 3)
    try:
        run.bench.build()
        run.bench.start_backend()
        rounds = []
        for i in range(rounds_n):
            print(f"round {i + 1}/{rounds_n}", file=sys.stderr)
            rounds.append(run.round())
        held = run.held_connections() if args.held else None
    finally:
        run.bench.close()
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H%MZ")
    report = "\n".join([
        f"# tsgate --workers, {stamp}",
        "",
        f"Machine: {platform.platform()}, {os.cpu_count()} CPUs, Python {platform.python_version()}, "
        f"{relay.haproxy_version()}; {rounds_n} round(s), medians; nothing pinned.",
        f"tsgate: this tree ({tree_commit()})"
        + (f"; baseline rows: {run.baseline}" if run.baseline else "") + ".",
        "",
        render(rounds, held),
        "",
        "Raw rounds:",
        "",
        "```",
        json.dumps(rounds, indent=1, default=str),
        "```",
        "",
    ])
    print(report)
    if not args.no_save:
        relay.RESULTS.mkdir(exist_ok=True)
        path = relay.RESULTS / f"workers-{stamp}.txt"
        path.write_text(report)
        print(f"saved {path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
