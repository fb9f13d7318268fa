#!/usr/bin/env python3
"""
Every benchmark of issue 8 in one command, and the chart.

    python bench/run.py            # relay (3 rounds) + SNI (5 rounds), ~10 min on a quiet machine
    python bench/run.py --quick    # 2 + 3 shorter rounds
    python bench/run.py --chart-only bench/results/relay-X.json bench/results/sni-Y.json

Runs bench/relay.py (bulk with 1 and 8 connections, conn/s at 50 concurrent
clients, CPU µs per connection, 64 B ping-pong added p50/p99, PSS of 5,000
idle connections; HAProxy, nginx stream, tsgate on its lean transport and on
Twisted's, Twisted portforward) and bench/sni.py (full TLS 1.3 handshakes
with SNI over two TLS backends; HAProxy, nginx ``ssl_preread``, tsgate),
each proxy measured in the same round as HAProxy so that the ratios hold on
a machine shared with other jobs. Then draws ``bench/results/chart-<stamp>.png``
(tsgate's, nginx's and portforward's ratios to HAProxy per workload, the
issue's goal marked) and copies it to ``bench/chart.png`` (bench/README.md
shows it). Needs matplotlib (``pip install matplotlib``) for the chart only.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
from pathlib import Path
from typing import Any, Optional

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import relay  # noqa: E402
import sni  # noqa: E402

#: (source, key, label, goal for tsgate/HAProxy, higher is better)
WORKLOADS = [
    ("relay", "bulk_gbps", "bulk, 1 conn", 1.3, True),
    ("relay", "bulk8_gbps", "bulk, 8 conns", None, True),
    ("relay", "conn_s", "conn/s (50 conc.)", 0.6, True),
    ("relay", "cpu_us_per_conn", "CPU µs / conn", 2.0, False),
    ("relay", "added_p50_us", "added p50", 1.5, False),
    ("relay", "added_p99_us", "added p99", None, False),
    ("relay", "kb_per_conn", "PSS / idle conn", 1.0, False),
    ("sni", "hs_s", "SNI handshakes/s", 0.95, True),
    ("sni", "cpu_us_per_conn", "CPU µs / SNI conn", 1.5, False),
]
SERIES = ["tsgate", "tsgate-twisted", "nginx", "portforward"]


def ratios(data: dict[str, Any], name: str, key: str) -> Optional[float]:
    """Median over rounds of ``name``'s value over HAProxy's in the same round."""
    rounds = data["rounds"]
    relay.per_round(rounds)  # added_p50_us / added_p99_us
    seen = []
    for values in rounds:
        v, base = values.get(name, {}).get(key), values.get("haproxy", {}).get(key)
        if v is not None and base:
            seen.append(v / base)
    return statistics.median(seen) if seen else None


def chart(relay_json: Path, sni_json: Optional[Path], out: Path) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sources = {"relay": json.loads(relay_json.read_text())}
    if sni_json is not None:
        sources["sni"] = json.loads(sni_json.read_text())
    rows = [w for w in WORKLOADS if w[0] in sources]
    fig, ax = plt.subplots(figsize=(11, 5))
    width = 0.8 / len(SERIES)
    table = ["| workload | goal | " + " | ".join(SERIES) + " |",
             "|---|---|" + "---|" * len(SERIES)]
    for s, name in enumerate(SERIES):
        values = [ratios(sources[src], name, key) for src, key, *_ in rows]
        xs = [i + (s - (len(SERIES) - 1) / 2) * width for i in range(len(rows))]
        ax.bar(xs, [v or 0 for v in values], width, label=name)
    for i, (src, key, label, goal, higher) in enumerate(rows):
        if goal is not None:
            ax.hlines(goal, i - 0.45, i + 0.45, colors="black", linestyles="dashed")
        cells = []
        for name in SERIES:
            v = ratios(sources[src], name, key)
            cells.append("—" if v is None else f"{v:.2f}×")
        arrow = "≥" if higher else "≤"
        table.append(f"| {label} | {'' if goal is None else f'{arrow} {goal}×'} | "
                     + " | ".join(cells) + " |")
    ax.axhline(1.0, color="grey", linewidth=0.8)
    ax.set_xticks(range(len(rows)))
    ax.set_xticklabels([f"{r[2]}\n({'higher' if r[4] else 'lower'} is better)" for r in rows],
                       fontsize=8)
    ax.set_ylabel("ratio to HAProxy 2.6 in the same round")
    ax.set_title("tsgate and peers relative to HAProxy (dashed: issue 8's goal for tsgate)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=90)
    plt.close(fig)
    return "\n".join(table)


def newest(pattern: str) -> Optional[Path]:
    found = sorted(relay.RESULTS.glob(pattern), key=lambda p: p.stat().st_mtime)
    return found[-1] if found else None


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--no-sni", action="store_true", help="skip bench/sni.py")
    parser.add_argument("--chart-only", nargs="+", type=Path, metavar="JSON",
                        help="draw the chart from saved relay (and sni) results")
    args = parser.parse_args(argv)
    status = 0
    if args.chart_only:
        relay_json = args.chart_only[0]
        sni_json = args.chart_only[1] if len(args.chart_only) > 1 else None
    else:
        quick = ["--quick"] if args.quick else []
        status |= relay.main(quick)
        relay_json = newest("relay-*.json")
        sni_json = None
        if not args.no_sni:
            status |= sni.main(quick)
            sni_json = newest("sni-*.json")
        if relay_json is None:
            print("no relay results to chart", file=sys.stderr)
            return 1
    stamp = json.loads(relay_json.read_text()).get("stamp", "latest")
    out = relay.RESULTS / f"chart-{stamp}.png"
    table = chart(relay_json, sni_json, out)
    shutil.copyfile(out, HERE / "chart.png")
    summary = relay.RESULTS / f"summary-{stamp}.md"
    summary.write_text(
        f"# Ratios to HAProxy, same rounds ({relay_json.name}"
        + (f", {sni_json.name}" if sni_json else "") + ")\n\n" + table + "\n")
    print(table)
    print(f"wrote {out}, {HERE / 'chart.png'} and {summary}")
    return status


if __name__ == "__main__":
    sys.exit(main())
