"""
Same-round A/B of tsgate trees (and HAProxy) on the SNI workload of bench/sni.py.

    python bench/ab_sni.py 4 before=/path/to/old/tree after=$PWD [--mode tls|replay|both]
    python bench/ab_sni.py 1 after=$PWD --calls --mode replay   # Python calls per connection

Each ``name=tree`` runs ``python -m twisted tsgate`` with ``PYTHONPATH=tree``
(a checkout or ``git archive`` of another commit); the order alternates per
round; CPU µs per connection and the per-round ratio to HAProxy are printed,
then medians. ``--calls`` runs each tree under cProfile and prints how many
Python calls (builtins included) each connection cost, by function, with
the start-up and a warm-up run subtracted.
"""
import argparse
import os
import pstats
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import relay
import sni

p = argparse.ArgumentParser()
p.add_argument("rounds", type=int)
p.add_argument("trees", nargs="+")
p.add_argument("--mode", default="both", choices=("both", "tls", "replay"))
p.add_argument("--calls", action="store_true", help="cProfile call counts per conn")
p.add_argument("--seconds", type=float, default=2.0)
p.add_argument("--no-haproxy", action="store_true")
a = p.parse_args()


def PROFILED(prof: Path) -> list[str]:  # noqa: N802
    return ["-m", "cProfile", "-o", str(prof), "-m", "twisted"]


def short(path: str) -> str:
    return path.split("site-packages/")[-1]


def load() -> str:
    return Path("/proc/loadavg").read_text().split()[0]



args = argparse.Namespace(quick=True, rounds=None, seconds=a.seconds, no_pin=False, key="ec",
                          replay=True, nice=-10, profile=False)
relay.PRIORITY = -10
bench = sni.Bench(args)
bench.build()
bench.setup()
trees = [t.split("=", 1) for t in a.trees]
modes = {"both": (False, True), "tls": (False,), "replay": (True,)}[a.mode]
res = {}
try:
    if a.calls:
        for name, tree in trees:
            os.environ["PYTHONPATH"] = tree
            prof = bench.workdir / f"{name}.prof"
            for replay in modes:
                ports = proxy = None
                for _ in range(5):
                    try:
                        proxy = sni.Tsgate(bench, runner=PROFILED(prof))
                        ports = proxy.start(bench.replay_backends if replay else bench.tls_backends)
                        break
                    except relay.BenchError as e:
                        print("retry", str(e)[:200])
                w1 = bench.client(ports, 0.3, replay)
                proxy.stop()
                base = pstats.Stats(str(prof)).stats
                base_calls = {k: v[1] for k, v in base.items()}
                ports = proxy = None
                for _ in range(5):
                    try:
                        proxy = sni.Tsgate(bench, runner=PROFILED(prof))
                        ports = proxy.start(bench.replay_backends if replay else bench.tls_backends)
                        break
                    except relay.BenchError as e:
                        print("retry", str(e)[:200])
                w = bench.client(ports, 0.3, replay)
                r = bench.client(ports, a.seconds, replay)
                proxy.stop()
                st = pstats.Stats(str(prof)).stats
                n = r["done"]
                # subtract startup + warm-up: approximate by warm-up run scaled
                rows = []
                for k, v in st.items():
                    c = v[1] - base_calls.get(k, 0)
                    rows.append((c, k))
                total = sum(c for c, _ in rows)
                done = n + w["done"] - w1["done"]
                print(f"== {name} {'replay' if replay else 'tls'}: {done:.0f} conns, "
                      f"{total/done:.1f} Python calls/conn")
                rows.sort(reverse=True)
                for c, k in rows[:400]:
                    if c / done >= 0.2:
                        print(f"  {c/done:7.2f}  {short(k[0])}:{k[1]}({k[2]})")
        sys.exit(0)
    for rnd in range(a.rounds):
        order = list(trees)
        if not a.no_haproxy:
            order.append(("haproxy", None))
        if rnd % 2:
            order.reverse()
        for name, tree in order:
            for replay in modes:
                if tree is None:
                    proxy = sni.HAProxy(bench)
                else:
                    os.environ["PYTHONPATH"] = tree
                    proxy = sni.Tsgate(bench)
                try:
                    ports = proxy.start(bench.replay_backends if replay else bench.tls_backends)
                    bench.client(ports, 0.3, replay)
                    r = bench.handshakes(ports, proxy.pid, replay=replay)
                finally:
                    proxy.stop()
                key = (name, "replay" if replay else "tls")
                res.setdefault(key, []).append(r)
                print(f"r{rnd} {name:10s} {key[1]:6s} rate={r['rate']:7.0f} "
                      f"cpu/conn={r['cpu_us_per_conn']:6.1f} "
                      f"user={r['user_us_per_conn']:6.1f} sys={r['sys_us_per_conn']:6.1f} "
                      f"others={r.get('others_cpu0_pct', 0):.0f}% load={load()}",
                      flush=True)
    print("medians:")
    for replay in ("tls", "replay"):
        for name, _ in trees + ([] if a.no_haproxy else [("haproxy", None)]):
            rs = res.get((name, replay))
            if not rs:
                continue
            cpu = statistics.median(r["cpu_us_per_conn"] for r in rs)
            ratio = ""
            if not a.no_haproxy and name != "haproxy":
                ratios = [r["cpu_us_per_conn"] / h["cpu_us_per_conn"]
                          for r, h in zip(rs, res[("haproxy", replay)])]
                each = ", ".join(f"{x:.2f}" for x in ratios)
                ratio = f" ratio={statistics.median(ratios):.2f} ({each})"
            user = statistics.median(r["user_us_per_conn"] for r in rs)
            print(f"  {replay:6s} {name:10s} cpu/conn={cpu:6.1f} user={user:6.1f}"
                  f" sys={statistics.median(r['sys_us_per_conn'] for r in rs):6.1f}{ratio}")
finally:
    bench.close()
