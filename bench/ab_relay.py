"""
Same-round A/B of tsgate trees (and HAProxy) on bench/relay.py's conn/s workload.

    python bench/ab_relay.py 4 before=/path/to/old/tree after=$PWD [--bulk]
    python bench/ab_relay.py 1 after=$PWD --calls   # Python calls per connection

As bench/ab_sni.py: ``name=tree`` is a ``PYTHONPATH``; CPU µs per connection,
conn/s and (``--bulk``) one bulk stream per round, ratios to HAProxy per
round, medians at the end.
"""
import argparse
import os
import pstats
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import relay

p = argparse.ArgumentParser()
p.add_argument("rounds", type=int)
p.add_argument("trees", nargs="+")
p.add_argument("--calls", action="store_true")
p.add_argument("--bulk", action="store_true")
p.add_argument("--seconds", type=float, default=3.0)
p.add_argument("--no-haproxy", action="store_true")
a = p.parse_args()


def short(path: str) -> str:
    return path.split("site-packages/")[-1]


def load() -> str:
    return Path("/proc/loadavg").read_text().split()[0]


args = argparse.Namespace(quick=True, rounds=None, no_pin=False, nice=-10, tsgate_env=None,
                          proxies="")
relay.PRIORITY = -10
bench = relay.Bench(args)
bench.build()
bench.start_backend()
trees = [t.split("=", 1) for t in a.trees]
res = {}


def start(name, tree, runner=None):
    if tree is None:
        proxy = relay.HAProxy(bench)
    else:
        os.environ["PYTHONPATH"] = tree
        proxy = relay.Tsgate(bench, runner=runner)
    for _ in range(5):
        try:
            return proxy, proxy.start()
        except relay.BenchError as e:
            print("retry", str(e)[:100])
    raise SystemExit("no start")


try:
    if a.calls:
        for name, tree in trees:
            prof = bench.workdir / f"{name}.prof"
            proxy, port = start(name, tree, ["-m", "cProfile", "-o", str(prof), "-m", "twisted"])
            w1 = bench.conn(port, None, 0.5)
            proxy.stop()
            base = {k: v[1] for k, v in pstats.Stats(str(prof)).stats.items()}
            proxy, port = start(name, tree, ["-m", "cProfile", "-o", str(prof), "-m", "twisted"])
            w2 = bench.conn(port, None, 0.5)
            r = bench.conn(port, None, a.seconds)
            proxy.stop()
            st = pstats.Stats(str(prof)).stats
            done = r["done"] + w2["done"] - w1["done"]
            rows = sorted(((v[1] - base.get(k, 0), k) for k, v in st.items()), reverse=True)
            total = sum(c for c, _ in rows)
            print(f"== {name}: {done:.0f} conns, {total/done:.1f} Python calls/conn")
            for c, k in rows[:300]:
                if c / done >= 0.2:
                    print(f"  {c/done:7.2f}  {short(k[0])}:{k[1]}({k[2]})")
        sys.exit(0)
    for rnd in range(a.rounds):
        order = list(trees) + ([] if a.no_haproxy else [("haproxy", None)])
        if rnd % 2:
            order.reverse()
        for name, tree in order:
            proxy, port = start(name, tree)
            try:
                bench.conn(port, proxy.pid, 0.3)
                r = bench.conn(port, proxy.pid, a.seconds)
                if a.bulk:
                    b = bench.bulk(port, proxy.pid)
                    r["gbps"] = b["gbps"]
                    r["gbps_per_cpu"] = b["gbps_per_cpu"]
            finally:
                proxy.stop()
            res.setdefault(name, []).append(r)
            extra = f" bulk={r['gbps']:.2f}Gb/s per-cpu={r['gbps_per_cpu']:.2f}" if a.bulk else ""
            print(f"r{rnd} {name:8s} conn/s={r['rate']:7.0f} cpu/conn={r['cpu_us_per_conn']:6.1f} "
                  f"user={r['user_us_per_conn']:5.1f} sys={r['sys_us_per_conn']:5.1f} "
                  f"others={r.get('others_cpu0_pct', 0):.0f}%{extra} load={load()}", flush=True)
    print("medians:")
    names = [n for n, _ in trees] + ([] if a.no_haproxy else ["haproxy"])
    for name in names:
        rs = res[name]
        line = (f"  {name:8s} conn/s={statistics.median(r['rate'] for r in rs):7.0f} "
                f"cpu/conn={statistics.median(r['cpu_us_per_conn'] for r in rs):6.1f}")
        if not a.no_haproxy and name != "haproxy":
            h = res["haproxy"]
            cr = [r["cpu_us_per_conn"] / x["cpu_us_per_conn"] for r, x in zip(rs, h)]
            rr = [r["rate"] / x["rate"] for r, x in zip(rs, h)]
            line += f" cpu-ratio={statistics.median(cr):.2f} rate-ratio={statistics.median(rr):.2f}"
            if a.bulk:
                br = [r["gbps"] / x["gbps"] for r, x in zip(rs, h)]
                bc = [r["gbps_per_cpu"] / x["gbps_per_cpu"] for r, x in zip(rs, h)]
                line += (f" bulk-ratio={statistics.median(br):.2f}"
                         f" bulk/cpu-ratio={statistics.median(bc):.2f}")
        print(line)
finally:
    bench.close()
