#!/usr/bin/env python3
"""
Relay benchmark: tsgate against a direct connection, Twisted's portforward and
HAProxy, in one run, on loopback.

    python bench/relay.py             # 3 rounds, about 3-4 minutes
    python bench/relay.py --quick     # 2 rounds, shorter workloads, about a minute
    python bench/relay.py --profile   # tsgate under py-spy (or cProfile) on conn/s

Why it is built this way (see bench/README.md for the columns):

- The clients and the backend are C (bench/loadgen.c, bench/backend.c),
  compiled here with gcc -O2, so that the client is never what limits a
  proxy: a direct connection must reach well above every proxy.
- Proxies run on CPU 0, the load generator and the backend on CPU 1
  (``taskset``), so every proxy gets one core, like HAProxy ``nbthread 1``.
- Absolute numbers move with the machine's load (it is shared); ratios to
  HAProxy measured in the same round are what to compare. Each figure is the
  median of the rounds; each ratio is the median of per-round ratios.
- Every wait is bounded: subprocesses have timeouts, workloads have maximum
  durations, and a proxy that fails to start is reported, not waited for.
"""

from __future__ import annotations

import argparse
import collections
import datetime
import json
import os
import platform
import queue
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Callable, Optional

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
RESULTS = HERE / "results"
PROXY_CPU = "0"
CLIENT_CPU = "1"

#: Workload sizes: (default run, --quick run).
SIZES = {
    "default": dict(
        rounds=3, bulk_bytes=2 << 30, bulk_max=8.0, conn_seconds=5.0, concurrency=50,
        lat_rounds=20000, lat_max=4.0, idle_count=5000, idle_max=40.0, profile_seconds=10.0,
    ),
    "quick": dict(
        rounds=2, bulk_bytes=1 << 30, bulk_max=2.0, conn_seconds=2.0, concurrency=50,
        lat_rounds=5000, lat_max=2.0, idle_count=5000, idle_max=30.0, profile_seconds=5.0,
    ),
}

PROXIES = ("direct", "haproxy", "nginx", "tsgate", "tsgate-twisted", "portforward")
LABELS = {
    "direct": "direct (no proxy: the ceiling)",
    "haproxy": "HAProxy {version}, mode tcp, nbthread 1",
    "nginx": "nginx stream, one worker",
    "tsgate": "tsgate (this tree, lean transport)",
    "tsgate-twisted": "tsgate (this tree, TSGATE_TRANSPORT=twisted: Twisted's tcp transports)",
    "portforward": "Twisted `portforward` (epoll)",
}

NGINX_CONFIG = """\
# Written by bench/relay.py: nginx's stream module, one worker, like HAProxy's one thread.
load_module /usr/lib/nginx/modules/ngx_stream_module.so;
daemon off;
master_process off;
worker_processes 1;
worker_rlimit_nofile 20000;
error_log {workdir}/nginx-error.log warn;
pid {workdir}/nginx.pid;
events {{ worker_connections 12000; }}
stream {{
    server {{
        listen 127.0.0.1:{port} backlog=4096;
        proxy_pass 127.0.0.1:{backend_port};
        proxy_timeout 1h;
        proxy_connect_timeout 5s;
    }}
}}
"""

TSGATE_CONFIG = """\
# Written by bench/relay.py: one plain TCP route, port 7000 -> the C backend.
apiVersion: networking.istio.io/v1beta1
kind: Gateway
metadata:
  name: bench-gateway
spec:
  selector:
    istio: ingressgateway
  servers:
  - port:
      number: 7000
      name: tcp
      protocol: TCP
    hosts: ["*"]
---
apiVersion: networking.istio.io/v1beta1
kind: VirtualService
metadata:
  name: bench
spec:
  hosts: ["*"]
  gateways: [bench-gateway]
  tcp:
  - match:
    - port: 7000
    route:
    - destination:
        host: bench-backend
        port:
          number: 9000
---
apiVersion: networking.istio.io/v1beta1
kind: ServiceEntry
metadata:
  name: bench-backend
spec:
  hosts: [bench-backend]
  location: MESH_INTERNAL
  resolution: STATIC
  ports:
  - number: 9000
    name: tcp
    protocol: TCP
    targetPort: {backend_port}
  endpoints:
  - address: 127.0.0.1
"""

HAPROXY_CONFIG = """\
# Written by bench/relay.py. One thread; maxconn sized for the 5,000 idle
# connections (two sockets each) under the 20,000 file descriptor limit.
global
    nbthread 1
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


# --------------------------------------------------------------- processes


class BenchError(Exception):
    """A step of the benchmark failed (reported, the run goes on where it can)."""


class Proc:
    """A child process whose merged output is drained by a thread (never blocks)."""

    def __init__(self, name: str, argv: list[str], cwd: Optional[Path] = None,
                 stdin: bool = False, env: Optional[dict[str, str]] = None) -> None:
        self.name = name
        self.argv = argv
        self.popen = subprocess.Popen(
            argv, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            stdin=subprocess.PIPE if stdin else subprocess.DEVNULL,
            text=True, bufsize=1, preexec_fn=_child_setup,
            env={**os.environ, **env} if env else None,
        )
        self.pid = self.popen.pid  # taskset execs: the same pid is the program's
        self.lines: queue.Queue[str] = queue.Queue()
        self.tail: collections.deque[str] = collections.deque(maxlen=60)
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.popen.stdout is not None
        for line in self.popen.stdout:
            self.tail.append(line.rstrip("\n"))
            self.lines.put(line)

    def wait_for(self, pattern: str, timeout: float) -> re.Match[str]:
        """The first output line matching ``pattern``, within ``timeout`` seconds."""
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            exited = self.popen.poll() is not None
            if exited:
                self._reader.join(2)  # its last lines are queued once it ends
            try:
                line = self.lines.get(timeout=min(left, 0.2))
            except queue.Empty:
                if exited:
                    break
                continue
            found = regex.search(line)
            if found:
                return found
        raise BenchError(
            f"{self.name}: no line matching {pattern!r} within {timeout:.0f}s "
            f"(exit code {self.popen.poll()}); last output:\n  " + "\n  ".join(self.tail)
        )

    def send(self, text: str) -> None:
        assert self.popen.stdin is not None
        self.popen.stdin.write(text)
        self.popen.stdin.flush()

    def stop(self, timeout: float = 10.0) -> Optional[int]:
        """SIGTERM, then SIGKILL after ``timeout``; only this process, by its pid."""
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(5)
        self._reader.join(2)
        return self.popen.returncode


#: Priority of every child (set from --nice): a nice value, applied to a fresh
#: autogroup too, because with autogroup scheduling (the default on desktop and
#: many cloud kernels) nice only ranks processes within one session.
PRIORITY = 0


def _child_setup() -> None:
    """In each child before exec: die with the benchmark, and run at PRIORITY."""
    try:
        import ctypes

        # PR_SET_PDEATHSIG: SIGTERM when the benchmark dies, however it dies.
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM, 0, 0, 0)
    except (OSError, AttributeError):
        pass
    if PRIORITY:
        try:
            os.setsid()  # its own session, so its own autogroup
            with open("/proc/self/autogroup", "w") as group:
                group.write(str(PRIORITY))
        except OSError:
            pass  # no autogroups: nice alone does it
        try:
            os.setpriority(os.PRIO_PROCESS, 0, PRIORITY)
        except OSError:
            pass


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_connectable(port: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise BenchError(f"nothing listening on 127.0.0.1:{port} after {timeout:.0f}s")


def cpu_ns(pid: int) -> int:
    """On-CPU time of every thread of ``pid``, in ns (from /proc/PID/task/*/schedstat)."""
    total = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            total += int((task / "schedstat").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            pass  # a thread that just ended
    return total


def user_sys_s(pid: int) -> tuple[float, float]:
    """User and system CPU seconds of ``pid`` (all threads; /proc/PID/stat, tick resolution)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    tick = os.sysconf("SC_CLK_TCK")
    return int(fields[11]) / tick, int(fields[12]) / tick


def cpu_busy_s(cpu: str) -> float:
    """Busy seconds of one CPU since boot, every process counted (/proc/stat)."""
    for line in Path("/proc/stat").read_text().splitlines():
        fields = line.split()
        if fields[0] == f"cpu{cpu}":
            user, nice, system, _idle, _iowait, irq, softirq, steal = map(int, fields[1:9])
            return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")
    return 0.0


def memory_kb(pid: int) -> dict[str, int]:
    """Rss and Pss of ``pid`` in KiB (/proc/PID/smaps_rollup)."""
    found = {}
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        key, _, rest = line.partition(":")
        if key in ("Rss", "Pss"):
            found[key.lower()] = int(rest.split()[0])
    return found


def parse_kv(line: str) -> dict[str, float]:
    return {k: float(v) for k, v in re.findall(r"(\w+)=([-\d.]+)", line)}


# ------------------------------------------------------------------ proxies


class Proxy:
    """A proxy under test: ``start()`` returns the port clients connect to."""

    name = ""
    proc: Optional[Proc] = None

    def __init__(self, bench: Bench) -> None:
        self.bench = bench

    @property
    def pid(self) -> Optional[int]:
        return self.proc.pid if self.proc is not None else None

    def start(self) -> int:
        raise NotImplementedError

    def launch(self, argv: list[str], env: Optional[dict[str, str]] = None) -> Proc:
        """The proxy's process, on the proxy CPU, in the scratch directory."""
        bench = self.bench
        return Proc(self.name, bench.pinned(bench.proxy_cpu, argv), cwd=bench.workdir, env=env)

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.stop()
            self.proc = None


class Direct(Proxy):
    name = "direct"

    def start(self) -> int:
        return self.bench.backend_port


class HAProxy(Proxy):
    name = "haproxy"

    def start(self) -> int:
        port = free_port()
        cfg = self.bench.workdir / "haproxy.cfg"
        cfg.write_text(HAPROXY_CONFIG.format(port=port, backend_port=self.bench.backend_port))
        argv = ["haproxy", "-db", "-f", str(cfg)]
        self.proc = self.launch(argv)
        wait_connectable(port, 10)
        return port


class Nginx(Proxy):
    name = "nginx"

    def start(self) -> int:
        port = free_port()
        cfg = self.bench.workdir / "nginx.conf"
        cfg.write_text(NGINX_CONFIG.format(port=port, backend_port=self.bench.backend_port,
                                           workdir=self.bench.workdir))
        workdir = str(self.bench.workdir)
        self.proc = self.launch(["nginx", "-e", "stderr", "-c", str(cfg), "-p", workdir])
        wait_connectable(port, 10)
        return port


class PortForward(Proxy):
    name = "portforward"

    def start(self) -> int:
        argv = [sys.executable, str(HERE / "portforward_proxy.py"), str(self.bench.backend_port)]
        self.proc = self.launch(argv)
        return int(self.proc.wait_for(r"^PORT (\d+)", 20).group(1))


def tsgate_argv(config: Path, runner: Optional[list[str]] = None) -> list[str]:
    # ``python -m twisted`` is twist (foreground, no pidfile); it takes no
    # --nodaemon/--pidfile, which are twistd's.
    return [
        sys.executable, *(runner or ["-m", "twisted"]), "--log-format=text", "tsgate",
        "--config", str(config), "--endpoint", "7000=tcp:0:interface=127.0.0.1:backlog=1024",
        "--admin", "none", "--readiness", "none", "--access-log", "none",
        # no metrics listener: its fixed port (15090) may be taken on a shared machine
        "--metrics", "none",
    ]


class Tsgate(Proxy):
    name = "tsgate"

    def __init__(self, bench: Bench, runner: Optional[list[str]] = None,
                 env: Optional[dict[str, str]] = None) -> None:
        super().__init__(bench)
        self.runner = runner  # what runs twist: default "-m twisted"; cProfile, tracemalloc
        self.env = env

    def start(self) -> int:
        config = self.bench.workdir / "tsgate-bench.yaml"
        config.write_text(TSGATE_CONFIG.format(backend_port=self.bench.backend_port))
        self.proc = self.launch(tsgate_argv(config, self.runner), self.env)
        found = self.proc.wait_for(r"tsgate listening: \S+ on 127\.0\.0\.1:(\d+)", 60)
        return int(found.group(1))


# -------------------------------------------------------------------- bench


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.sizes = SIZES["quick" if args.quick else "default"]
        if args.rounds:
            self.sizes = dict(self.sizes, rounds=args.rounds)
        self.proxy_cpu: Optional[str] = None if args.no_pin else PROXY_CPU
        self.client_cpu: Optional[str] = None if args.no_pin else CLIENT_CPU
        self.workdir = Path(tempfile.mkdtemp(prefix="tsgate-bench-"))
        self.backend: Optional[Proc] = None
        self.backend_port = 0
        self.notes: list[str] = []

    def pinned(self, cpu: Optional[str], argv: list[str]) -> list[str]:
        """``argv`` on one CPU (taskset execs it: the pid stays the program's)."""
        return ["taskset", "-c", cpu, *argv] if cpu is not None else argv

    # -- setup ------------------------------------------------------------

    def build(self) -> None:
        for name in ("backend", "loadgen"):
            subprocess.run(
                ["gcc", "-O2", "-Wall", "-o", str(self.workdir / name), str(HERE / f"{name}.c")],
                check=True, timeout=120,
            )

    def start_backend(self) -> None:
        argv = [str(self.workdir / "backend"), "0"]
        self.backend = Proc("backend", self.pinned(self.client_cpu, argv))
        self.backend_port = int(self.backend.wait_for(r"^READY (\d+)", 10).group(1))

    def close(self) -> None:
        if self.backend is not None:
            self.backend.stop()
        shutil.rmtree(self.workdir, ignore_errors=True)

    # -- workloads ----------------------------------------------------------

    def loadgen(self, *args: Any, timeout: float) -> dict[str, float]:
        argv = self.pinned(self.client_cpu, [str(self.workdir / "loadgen"), *map(str, args)])
        done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout,
                              preexec_fn=_child_setup)
        if done.returncode != 0:
            raise BenchError(f"loadgen {args[0]} failed ({done.returncode}): "
                             f"{done.stderr.strip() or done.stdout.strip()}")
        return parse_kv(done.stdout.strip().splitlines()[-1])

    def client_cpu_s(self) -> float:
        """CPU seconds used so far by the backend and by finished loadgen runs."""
        import resource

        children = resource.getrusage(resource.RUSAGE_CHILDREN)
        backend = cpu_ns(self.backend.pid) / 1e9 if self.backend is not None else 0.0
        return children.ru_utime + children.ru_stime + backend

    def bulk(self, port: int, pid: Optional[int]) -> dict[str, float]:
        s = self.sizes
        before = cpu_ns(pid) if pid else 0
        result = self.loadgen("bulk", port, s["bulk_bytes"], s["bulk_max"],
                              timeout=s["bulk_max"] + 60)
        if pid:
            # The rate the proxy would reach with its core to itself.
            result["gbps_per_cpu"] = result["bytes"] * 8 / 1e9 / ((cpu_ns(pid) - before) / 1e9)
        return result

    def bulk_many(self, port: int, pid: Optional[int], n: int = 8) -> dict[str, float]:
        """``n`` bulk connections at once (``bulk_bytes`` in all): aggregate Gbit/s."""
        s = self.sizes
        before = cpu_ns(pid) if pid else 0
        argv = self.pinned(self.client_cpu, [str(self.workdir / "loadgen"), "bulk", str(port),
                                             str(s["bulk_bytes"] // n), str(s["bulk_max"])])
        # Wall time from the first start to the last finish: the clients share
        # one core, so each one's own duration would overstate the aggregate.
        start = time.monotonic()
        procs = [subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                  text=True, preexec_fn=_child_setup) for _ in range(n)]
        results = []
        for proc in procs:
            out, err = proc.communicate(timeout=s["bulk_max"] + 60)
            if proc.returncode != 0:
                raise BenchError(f"loadgen bulk x{n} failed: {err.strip() or out.strip()}")
            results.append(parse_kv(out.strip().splitlines()[-1]))
        seconds = time.monotonic() - start
        total = sum(r["bytes"] for r in results)
        result = {"gbps": total * 8 / 1e9 / seconds, "bytes": total}
        if pid:
            result["gbps_per_cpu"] = total * 8 / 1e9 / ((cpu_ns(pid) - before) / 1e9)
        return result

    def conn(self, port: int, pid: Optional[int], seconds: Optional[float] = None,
             ) -> dict[str, float]:
        s = self.sizes
        seconds = seconds or s["conn_seconds"]
        before = cpu_ns(pid) if pid else 0
        user_before, sys_before = user_sys_s(pid) if pid else (0.0, 0.0)
        cpu = self.proxy_cpu
        busy_before, wall_before = (cpu_busy_s(cpu), time.monotonic()) if cpu else (0.0, 0.0)
        client_before = self.client_cpu_s()
        result = self.loadgen("conn", port, s["concurrency"], seconds, timeout=seconds + 30)
        # Near 100%: the client side (loadgen + backend) limits this run.
        result["client_cpu_pct"] = ((self.client_cpu_s() - client_before) * 100
                                    / (time.monotonic() - wall_before))
        proxy_s = (cpu_ns(pid) - before) / 1e9 if pid else 0.0
        if pid and result["done"]:
            result["cpu_us_per_conn"] = proxy_s * 1e6 / result["done"]
            user_after, sys_after = user_sys_s(pid)
            result["user_us_per_conn"] = (user_after - user_before) * 1e6 / result["done"]
            result["sys_us_per_conn"] = (sys_after - sys_before) * 1e6 / result["done"]
        if cpu:
            # How much of the proxy's core other processes took: the noise gauge.
            others = cpu_busy_s(cpu) - busy_before - proxy_s
            result["others_cpu0_pct"] = max(0.0, others) * 100 / (time.monotonic() - wall_before)
        return result

    def latency(self, port: int) -> dict[str, float]:
        s = self.sizes
        return self.loadgen("latency", port, s["lat_rounds"], s["lat_max"],
                            timeout=s["lat_max"] + 30)

    def idle(self, port: int, pid: int) -> dict[str, float]:
        """Proxy memory for ``idle_count`` idle proxied connections (fresh proxy)."""
        s = self.sizes
        loadgen = str(self.workdir / "loadgen")
        # Warm up: 50 connections opened and closed, so lazily built state
        # (imports, pools) is counted in "before", not per connection.
        argv = [loadgen, "idle", str(port), "50", "10"]
        warm = Proc("idle-warmup", self.pinned(self.client_cpu, argv), stdin=True)
        try:
            warm.wait_for(r"^OPEN", 20)
            warm.send("\n")
            warm.wait_for(r"^CLOSED", 10)
        finally:
            warm.stop()
        time.sleep(0.5)
        before = memory_kb(pid)
        argv = [loadgen, "idle", str(port), str(s["idle_count"]), str(s["idle_max"])]
        gen = Proc("idle", self.pinned(self.client_cpu, argv), stdin=True)
        try:
            opened = parse_kv(gen.wait_for(r"^OPEN", s["idle_max"] + 20).string)
            time.sleep(0.5)
            after = memory_kb(pid)
            gen.send("\n")
            gen.wait_for(r"^CLOSED", 30)
        finally:
            gen.stop()
        count = opened["open"]
        if count < s["idle_count"]:
            raise BenchError(f"only {count:.0f} of {s['idle_count']} idle connections opened "
                             f"({opened.get('errors', 0):.0f} errors)")
        return {
            "open": count,
            "open_seconds": opened["seconds"],
            "pss_before_kb": before["pss"],
            "pss_after_kb": after["pss"],
            "pss_kb_per_conn": (after["pss"] - before["pss"]) / count,
            "rss_kb_per_conn": (after["rss"] - before["rss"]) / count,
        }

    # -- one proxy, one round ------------------------------------------------

    def proxy(self, name: str) -> Proxy:
        if name == "tsgate":
            return Tsgate(self, env=self.tsgate_env())
        if name == "tsgate-twisted":
            proxy = Tsgate(self, env=dict(self.tsgate_env(), TSGATE_TRANSPORT="twisted"))
            proxy.name = name
            return proxy
        return {"direct": Direct, "haproxy": HAProxy, "nginx": Nginx,
                "portforward": PortForward}[name](self)

    def tsgate_env(self) -> dict[str, str]:
        """--tsgate-env KEY=VALUE settings (experiments, e.g. MALLOC_MMAP_THRESHOLD_)."""
        return dict(item.partition("=")[::2] for item in self.args.tsgate_env or [])

    def measure(self, name: str, log: Callable[[str], None]) -> dict[str, float]:
        """bulk, conn/s, latency on one proxy process; idle memory on a fresh one."""
        result: dict[str, float] = {}
        proxy = self.proxy(name)
        try:
            port = proxy.start()
            time.sleep(0.2)
            r = self.bulk(port, proxy.pid)
            result["bulk_gbps"] = r["gbps"]
            result["bulk_gib"] = r["bytes"] / (1 << 30)
            if "gbps_per_cpu" in r:
                result["bulk_gbps_per_cpu"] = r["gbps_per_cpu"]
            r = self.bulk_many(port, proxy.pid)
            result["bulk8_gbps"] = r["gbps"]
            r = self.conn(port, proxy.pid)
            result["conn_s"] = r["rate"]
            result["conn_errors"] = r["errors"]
            for key in ("cpu_us_per_conn", "user_us_per_conn", "sys_us_per_conn",
                        "others_cpu0_pct", "client_cpu_pct"):
                if key in r:
                    result[key] = r[key]
            if "cpu_us_per_conn" in r:
                result["conn_s_per_cpu"] = 1e6 / r["cpu_us_per_conn"]
            r = self.latency(port)
            result["p50_us"], result["p99_us"] = r["p50_us"], r["p99_us"]
        finally:
            proxy.stop()
        if name != "direct":
            proxy = self.proxy(name)
            try:
                port = proxy.start()
                assert proxy.pid is not None
                r = self.idle(port, proxy.pid)
                result["kb_per_conn"] = r["pss_kb_per_conn"]
                result["rss_kb_per_conn"] = r["rss_kb_per_conn"]
                result["idle_open_s"] = r["open_seconds"]
            finally:
                proxy.stop()
        log("  " + name + ": " + ", ".join(f"{k}={v:.4g}" for k, v in result.items()))
        return result


# ------------------------------------------------------------------ report

COLUMNS = [  # key, header, format, higher is better
    ("bulk_gbps", "bulk 1 conn Gbit/s", "{:.2f}"),
    ("bulk8_gbps", "bulk 8 conns Gbit/s", "{:.2f}"),
    ("conn_s", "conn/s", "{:,.0f}"),
    ("added_p50_us", "added p50 µs", "{:.0f}"),
    ("added_p99_us", "added p99 µs", "{:.0f}"),
    ("kb_per_conn", "KB/conn (PSS)", "{:.1f}"),
    ("cpu_us_per_conn", "CPU µs/conn", "{:.0f}"),
]
DETAIL = [
    ("bulk_gbps_per_cpu", "bulk Gbit/s per CPU-s", "{:.2f}"),
    ("conn_s_per_cpu", "conn/s per CPU-s", "{:,.0f}"),
    ("user_us_per_conn", "user µs/conn", "{:.0f}"),
    ("sys_us_per_conn", "sys µs/conn", "{:.0f}"),
    ("p50_us", "p50 µs", "{:.1f}"),
    ("p99_us", "p99 µs", "{:.1f}"),
    ("rss_kb_per_conn", "KB/conn (RSS)", "{:.1f}"),
    ("conn_errors", "conn errors", "{:.0f}"),
    ("idle_open_s", "open 5k idle s", "{:.2f}"),
    ("others_cpu0_pct", "others on CPU 0 %", "{:.0f}"),
    ("client_cpu_pct", "client CPU %", "{:.0f}"),
]


def per_round(rounds: list[dict[str, dict[str, float]]]) -> None:
    """Derived per-round figures: added latency over direct in the same round."""
    for values in rounds:
        for pct in ("p50", "p99"):
            direct = values.get("direct", {}).get(f"{pct}_us")
            for name, v in values.items():
                if name != "direct" and direct is not None and f"{pct}_us" in v:
                    v[f"added_{pct}_us"] = v[f"{pct}_us"] - direct


def median_of(rounds: list[dict[str, dict[str, float]]], name: str, key: str,
              over: Optional[str] = None) -> Optional[float]:
    """Median over rounds of a value, or of its per-round ratio to proxy ``over``."""
    seen = []
    for values in rounds:
        v = values.get(name, {}).get(key)
        if v is None:
            continue
        if over is not None:
            base = values.get(over, {}).get(key)
            if not base or base <= 0:
                continue
            v = v / base
        seen.append(v)
    return statistics.median(seen) if seen else None


def render(rounds: list[dict[str, dict[str, float]]], names: list[str],
           failures: dict[str, str], haproxy_version: str) -> str:
    per_round(rounds)
    out = []
    head = ["proxy"] + [c[1] for c in COLUMNS]
    out.append("| " + " | ".join(head) + " |")
    out.append("|" + "---|" * len(head))
    for name in names:
        label = LABELS[name].format(version=haproxy_version)
        if name in failures:
            out.append(f"| {label} | failed: {failures[name].splitlines()[0][:160]} |")
            continue
        cells = [label]
        for key, _, fmt in COLUMNS:
            value = median_of(rounds, name, key)
            if value is None:
                cells.append("—")
                continue
            cell = fmt.format(value)
            ratio = median_of(rounds, name, key, over="haproxy")
            if name != "haproxy" and ratio is not None and key in (
                    "bulk_gbps", "bulk8_gbps", "conn_s", "cpu_us_per_conn", "added_p50_us",
                    "added_p99_us", "kb_per_conn"):
                cell += f" ({ratio:.2f}×)"
            cells.append(cell)
        out.append("| " + " | ".join(cells) + " |")
    out.append("")
    head = ["proxy"] + [c[1] for c in DETAIL]
    out.append("| " + " | ".join(head) + " |")
    out.append("|" + "---|" * len(head))
    for name in names:
        if name in failures:
            continue
        cells = [name]
        for key, _, fmt in DETAIL:
            value = median_of(rounds, name, key)
            cell = "—" if value is None else fmt.format(value)
            ratio = median_of(rounds, name, key, over="haproxy")
            if name != "haproxy" and ratio is not None and key.endswith("_per_cpu"):
                cell += f" ({ratio:.2f}×)"
            cells.append(cell)
        out.append("| " + " | ".join(cells) + " |")
    return "\n".join(out)


def goals(rounds: list[dict[str, dict[str, float]]]) -> str:
    """The project's goals (PERF-ANCHORS.md), as ratios measured in this run."""
    checks = [  # issue 8's goals
        ("bulk ≥ 1.3× HAProxy", median_of(rounds, "tsgate", "bulk_gbps", over="haproxy"),
         lambda r: r >= 1.3),
        ("conn/s ≥ 0.6× HAProxy", median_of(rounds, "tsgate", "conn_s", over="haproxy"),
         lambda r: r >= 0.6),
        ("CPU µs/conn ≤ 2× HAProxy's", median_of(rounds, "tsgate", "cpu_us_per_conn",
                                                  over="haproxy"), lambda r: r <= 2.0),
        ("added p50 ≤ 1.5× HAProxy's", median_of(rounds, "tsgate", "added_p50_us",
                                                  over="haproxy"), lambda r: r <= 1.5),
        ("KB/conn ≤ HAProxy's", median_of(rounds, "tsgate", "kb_per_conn", over="haproxy"),
         lambda r: r <= 1.0),
        ("conn/s ≥ 1.5× portforward", median_of(rounds, "tsgate", "conn_s", over="portforward"),
         lambda r: r >= 1.5),
    ]
    lines = ["| goal (tsgate, median of per-round ratios) | measured | met |", "|---|---|---|"]
    for text, ratio, ok in checks:
        if ratio is None:
            lines.append(f"| {text} | — | — |")
        else:
            lines.append(f"| {text} | {ratio:.2f}× | {'yes' if ok(ratio) else 'NO'} |")
    return "\n".join(lines)


def raw_rounds(rounds: list[dict[str, dict[str, float]]]) -> str:
    lines = []
    for i, values in enumerate(rounds, 1):
        for name, v in values.items():
            lines.append(f"round {i} {name}: " + ", ".join(f"{k}={x:.4g}" for k, x in v.items()))
    return "\n".join(lines)


def command_output(argv: list[str]) -> str:
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=20, cwd=REPO)
        return (done.stdout or done.stderr).strip()
    except (OSError, subprocess.TimeoutExpired):
        return "?"


def environment(sizes: dict[str, Any], pinned_: bool, nice: int,
                tsgate_env: Optional[list[str]] = None) -> str:
    import twisted

    cpu = "?"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    dirty = command_output(["git", "status", "--porcelain", "--", "tsgate"])
    haproxy = "no haproxy"
    if shutil.which("haproxy"):
        haproxy = command_output(["haproxy", "-v"]).splitlines()[0]
    return "\n".join([
        f"started: {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M:%S} UTC",
        f"machine: {platform.node()} {platform.release()}, {os.cpu_count()} CPUs ({cpu})",
        f"python {platform.python_version()}, twisted {twisted.__version__}, {haproxy}",
        f"tsgate: HEAD {command_output(['git', 'rev-parse', '--short', 'HEAD'])}, last "
        f"tsgate/ commit {command_output(['git', 'log', '-1', '--format=%h', '--', 'tsgate'])}"
        + (f"; uncommitted: {' '.join(line.split(maxsplit=1)[-1] for line in dirty.splitlines())}"
           if dirty and dirty != "?" else ""),
        f"pinning: {'proxy on CPU 0, loadgen + backend on CPU 1 (taskset)' if pinned_ else 'none'}"
        f"; nice {nice}",
        "sizes: " + ", ".join(f"{k}={v}" for k, v in sizes.items()),
        *([f"tsgate environment: {' '.join(tsgate_env)}"] if tsgate_env else []),
    ])


# ----------------------------------------------------------------- profile


def summarize_collapsed(path: Path, cpu_us_per_unit: Optional[float], unit: str = "conn",
                        top: int = 30) -> str:
    """Self, inclusive and tsgate-attributed time per function from py-spy's collapsed stacks."""
    self_counts: collections.Counter[str] = collections.Counter()
    incl_counts: collections.Counter[str] = collections.Counter()
    file_counts: collections.Counter[str] = collections.Counter()
    tsgate_counts: collections.Counter[str] = collections.Counter()
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        total += count
        with_lines = [f for f in stack.split(";") if "(" in f]  # drop process/thread names
        if not with_lines:
            continue
        frames = [re.sub(r":\d+\)$", ")", f) for f in with_lines]
        self_counts[frames[-1]] += count
        file_counts[_short_file(frames[-1])] += count
        for frame in set(frames):
            incl_counts[frame] += count
        # The innermost tsgate frame: the tsgate code line that paid for this sample.
        owner = next((f for f in reversed(with_lines) if re.search(r"[(/]tsgate/", f)),
                     "(no tsgate frame: reactor, accept, timers)")
        tsgate_counts[owner] += count
    if not total:
        return "no samples"

    def table(counter: collections.Counter[str], title: str, skip_above: float = 1.0,
              ) -> list[str]:
        lines = [title, f"{'% busy':>7} {'µs/' + unit:>8}  function (file)"]
        shown = 0
        for frame, count in counter.most_common():
            share = count / total
            if share > skip_above:
                continue
            cost = f"{share * cpu_us_per_unit:8.1f}" if cpu_us_per_unit else f"{'':8}"
            lines.append(f"{share * 100:6.1f}% {cost}  {_shorten(frame)}")
            shown += 1
            if shown >= top:
                break
        return lines

    out = [f"{total} samples while tsgate was on CPU"
           + (f"; {cpu_us_per_unit:.1f} CPU µs per {unit}" if cpu_us_per_unit else "")]
    out += [""] + table(tsgate_counts, "By the innermost tsgate line on the stack (what tsgate "
                        "code paid for, Twisted and logging included):")
    out += [""] + table(self_counts, "Self time (where the CPU is):")
    out += [""] + table(incl_counts, "Inclusive time, event-loop frames above 75% left out:",
                        skip_above=0.75)
    out += [""] + table(file_counts, "Self time by file:")
    return "\n".join(out)


def _short_file(frame: str) -> str:
    found = re.search(r"\(([^()]*)\)$", frame)
    return _shorten(found.group(1)) if found else frame


def _shorten(text: str) -> str:
    for marker in ("site-packages/", "/lib/python3", str(REPO) + "/"):
        if marker in text:
            head, _, rest = text.partition(marker)
            prefix = head[: head.rfind("(") + 1] if "(" in head else ""
            text = prefix + (rest.split("/", 1)[1] if marker == "/lib/python3" else rest)
    return text


def profile_workload(bench: Bench, port: int, pid: int, seconds: float,
                     ) -> tuple[str, Optional[float], str]:
    """Run the profiled workload: (description, CPU µs per unit, unit)."""
    if bench.args.profile_workload == "bulk":
        before = cpu_ns(pid)
        r = bench.loadgen("bulk", port, 1 << 40, seconds, timeout=seconds + 60)
        mib = r["bytes"] / (1 << 20)
        per_mib = (cpu_ns(pid) - before) / 1e3 / mib if mib else None
        return (f"bulk: {r['gbps']:.2f} Gbit/s, {mib:,.0f} MiB in {r['seconds']:.1f} s",
                per_mib, "MiB")
    r = bench.conn(port, pid, seconds=seconds)
    return (f"conn/s: {r['rate']:,.0f} conn/s, {r['done']:,.0f} connections",
            r.get("cpu_us_per_conn"), "conn")


def memory_profile(bench: Bench, log: Callable[[str], None], top: int = 25) -> str:
    """Python memory per idle proxied connection, by allocating line (tracemalloc)."""
    import tracemalloc

    count = bench.sizes["idle_count"]
    snap = bench.workdir / "tsgate.snapshot"
    runner = [str(HERE / "tsgate_traced.py")]
    proxy = Tsgate(bench, runner=runner,
                   env={**bench.tsgate_env(), "TSGATE_BENCH_SNAPSHOT": str(snap)})

    def snapshot(n: int) -> tracemalloc.Snapshot:
        assert proxy.pid is not None
        os.kill(proxy.pid, signal.SIGUSR1)
        path = Path(f"{snap}.{n}")
        deadline = time.monotonic() + 60
        while not path.exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        return tracemalloc.Snapshot.load(str(path))

    loadgen = str(bench.workdir / "loadgen")
    try:
        port = proxy.start()
        assert proxy.pid is not None
        warm = Proc("idle-warmup", bench.pinned(bench.client_cpu, [loadgen, "idle", str(port),
                                                                  "50", "10"]), stdin=True)
        try:
            warm.wait_for(r"^OPEN", 20)
            warm.send("\n")
            warm.wait_for(r"^CLOSED", 10)
        finally:
            warm.stop()
        time.sleep(0.5)
        before, kb_before = snapshot(0), memory_kb(proxy.pid)
        gen = Proc("idle", bench.pinned(bench.client_cpu, [
            loadgen, "idle", str(port), str(count), str(bench.sizes["idle_max"])]), stdin=True)
        try:
            opened = parse_kv(gen.wait_for(r"^OPEN", bench.sizes["idle_max"] + 20).string)
            time.sleep(0.5)
            after, kb_after = snapshot(1), memory_kb(proxy.pid)
            gen.send("\n")
            gen.wait_for(r"^CLOSED", 30)
        finally:
            gen.stop()
    finally:
        proxy.stop()
    n = opened["open"] or 1
    filters = [tracemalloc.Filter(False, tracemalloc.__file__)]
    before, after = before.filter_traces(filters), after.filter_traces(filters)
    total = sum(d.size_diff for d in after.compare_to(before, "filename"))
    out = [
        f"tsgate with tracemalloc, {n:.0f} idle proxied connections (each exchanged 1 byte)",
        f"process PSS: {(kb_after['pss'] - kb_before['pss']) / n:.2f} KB/conn "
        f"(tracemalloc itself inflates it); Python heap traced: {total / n / 1024:.2f} KB/conn",
        "",
        "By allocating line:",
        f"{'B/conn':>8} {'objs/conn':>9}  line",
    ]
    for diff in after.compare_to(before, "lineno")[:top]:
        frame = diff.traceback[0]
        out.append(f"{diff.size_diff / n:8.0f} {diff.count_diff / n:9.2f}  "
                   f"{_shorten(frame.filename)}:{frame.lineno}")
    out += ["", "Largest by full traceback (innermost last):"]
    for diff in after.compare_to(before, "traceback")[:8]:
        out.append(f"{diff.size_diff / n:8.0f} B/conn {diff.count_diff / n:6.2f} objs/conn")
        for frame in diff.traceback[-6:]:
            out.append(f"           {_shorten(frame.filename)}:{frame.lineno}")
    log(f"profiled idle memory: {total / n / 1024:.2f} KB/conn of Python heap")
    return "\n".join(out)


def profile(bench: Bench, stamp: str, log: Callable[[str], None]) -> list[Path]:
    """tsgate under a profiler for one workload; returns the files written."""
    seconds = bench.sizes["profile_seconds"]
    workload = bench.args.profile_workload
    tool = bench.args.profiler
    if tool == "auto":
        tool = "py-spy" if shutil.which("py-spy") else "cprofile"
    RESULTS.mkdir(exist_ok=True)
    base = f"profile-{stamp}-{workload}"
    env = environment(bench.sizes, not bench.args.no_pin, bench.args.nice,
                      bench.args.tsgate_env)
    if workload == "idle":
        summary = RESULTS / f"{base}-tracemalloc.txt"
        summary.write_text(memory_profile(bench, log) + "\n" + env + "\n")
        return [summary]
    if tool == "py-spy":
        proxy = Tsgate(bench, env=bench.tsgate_env())
        try:
            port = proxy.start()
            assert proxy.pid is not None
            bench.conn(port, proxy.pid, seconds=1.0)  # warm up
            out = RESULTS / f"{base}.collapsed"
            spy = Proc("py-spy", bench.pinned(bench.client_cpu, [
                "py-spy", "record", "--pid", str(proxy.pid), "--rate", "250", "--nonblocking",
                "--format", "raw", "--output", str(out), "--duration", str(int(seconds) + 1),
            ]))
            try:
                time.sleep(0.5)
                what, per_unit, unit = profile_workload(bench, port, proxy.pid, seconds)
                spy.wait_for(r"Wrote", seconds + 30)
            finally:
                spy.stop()
        finally:
            proxy.stop()
        log(f"profiled {what} under py-spy; {per_unit or 0:.0f} CPU µs/{unit}")
        summary = RESULTS / f"{base}-summary.txt"
        summary.write_text(
            f"tsgate under py-spy (--rate 250 --nonblocking) for {seconds:.0f} s of {what}\n"
            f"µs/{unit} = share of busy samples × measured CPU µs per {unit}\n"
            f"collapsed stacks: {out.name} (flamegraph.pl or speedscope.app read it)\n"
            + env + "\n\n" + summarize_collapsed(out, per_unit, unit) + "\n"
        )
        return [out, summary]
    prof = bench.workdir / "tsgate.prof"
    proxy = Tsgate(bench, runner=["-m", "cProfile", "-o", str(prof), "-m", "twisted"],
                   env=bench.tsgate_env())
    try:
        port = proxy.start()
        assert proxy.pid is not None
        what, per_unit, unit = profile_workload(bench, port, proxy.pid, seconds)
    finally:
        proxy.stop()
    import io
    import pstats

    text = io.StringIO()
    stats = pstats.Stats(str(prof), stream=text)
    stats.sort_stats("tottime").print_stats(40)
    stats.sort_stats("cumulative").print_stats(40)
    summary = RESULTS / f"{base}-cprofile.txt"
    summary.write_text(
        f"tsgate under cProfile for {seconds:.0f} s of {what} (cProfile slows every "
        f"Python call: rates are not comparable with the table)\n" + env + "\n\n"
        + text.getvalue()
    )
    shutil.copy(prof, RESULTS / f"{base}.prof")
    return [summary, RESULTS / f"{base}.prof"]


# -------------------------------------------------------------------- main



def haproxy_version() -> str:
    """The installed HAProxy's major.minor, for the table's heading."""
    if not shutil.which("haproxy"):
        return "2.6"
    found = re.search(r"version (\d+\.\d+)", command_output(["haproxy", "-v"]))
    return found.group(1) if found else "?"


def run_rounds(
    bench: Any, names: list[str], count: int, log: Callable[[str], None]
) -> tuple[list[dict[str, dict[str, float]]], dict[str, str]]:
    """
    ``count`` rounds of ``bench.measure(name, log)`` over ``names``; a proxy
    that fails once is dropped from the later rounds, its error kept.
    """
    rounds: list[dict[str, dict[str, float]]] = []
    failures: dict[str, str] = {}
    for i in range(count):
        log(f"round {i + 1}/{count}")
        values: dict[str, dict[str, float]] = {}
        # Rotate the order each round so slow drifts of the machine's load
        # do not always fall on the same proxy.
        order = names[i % len(names):] + names[: i % len(names)]
        for name in order:
            if name in failures:
                continue
            try:
                values[name] = bench.measure(name, log)
            except (BenchError, subprocess.SubprocessError, OSError, KeyError) as exc:
                failures[name] = str(exc)[:2000]
                log(f"  {name}: FAILED: {exc}")
        rounds.append(values)
    return rounds, failures


def save_report(report: str, name: str, no_save: bool, log: Callable[[str], None],
                data: Optional[dict[str, Any]] = None) -> None:
    """
    Print the report and, unless told not to, keep it as results/<name>.txt
    (and the raw rounds as results/<name>.json, for bench/run.py's chart).
    """
    print("\n" + report)
    if not no_save:
        RESULTS.mkdir(exist_ok=True)
        path = RESULTS / f"{name}.txt"
        path.write_text(report + "\n")
        log(f"\nwrote {path}")
        if data is not None:
            (RESULTS / f"{name}.json").write_text(json.dumps(data, indent=1) + "\n")

def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="2 rounds, shorter workloads (~1 min)")
    parser.add_argument("--rounds", type=int, help="rounds (default 3; --quick 2)")
    parser.add_argument("--proxies", default=",".join(PROXIES),
                        help="comma-separated subset of " + ",".join(PROXIES))
    parser.add_argument("--profile", action="store_true",
                        help="only profile tsgate on the conn/s workload")
    parser.add_argument("--profiler", choices=("auto", "py-spy", "cprofile"), default="auto")
    parser.add_argument("--profile-workload", choices=("conn", "bulk", "idle"), default="conn",
                        help="what --profile runs: conn/s (default), bulk, or idle (memory per "
                        "idle connection by allocating line, with tracemalloc)")
    parser.add_argument("--no-pin", action="store_true", help="do not pin with taskset")
    parser.add_argument("--nice", type=int, default=-10 if os.geteuid() == 0 else 0,
                        help="nice value of proxies and clients, each in its own autogroup "
                        "(default -10 as root, so other jobs on a shared machine take less of "
                        "the proxy's core; 0: off)")
    parser.add_argument("--no-save", action="store_true", help="do not write bench/results/")
    parser.add_argument("--tsgate-env", action="append", metavar="KEY=VALUE",
                        help="environment variable for tsgate only (repeatable), for "
                        "experiments such as MALLOC_MMAP_THRESHOLD_=1048576")
    args = parser.parse_args(argv)

    names = [n.strip() for n in args.proxies.split(",") if n.strip()]
    unknown = set(names) - set(PROXIES)
    if unknown:
        parser.error(f"unknown proxies: {', '.join(sorted(unknown))}")
    if "haproxy" in names and not shutil.which("haproxy"):
        print("haproxy not installed (apt-get install -y haproxy): skipping it", file=sys.stderr)
        names.remove("haproxy")
    if not args.no_pin and (os.cpu_count() or 1) < 2:
        args.no_pin = True
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H%MZ")

    def log(text: str) -> None:
        print(text, flush=True)

    def terminated(signum: int, frame: Any) -> None:
        raise SystemExit(128 + signum)  # run the finally blocks: stop every child

    signal.signal(signal.SIGTERM, terminated)
    global PRIORITY
    PRIORITY = args.nice
    bench = Bench(args)
    started = time.monotonic()
    try:
        bench.build()
        bench.start_backend()
        if args.profile:
            for path in profile(bench, stamp, log):
                log(f"wrote {path}")
            return 0
        version = haproxy_version()
        # the tree and settings as run
        env = environment(bench.sizes, not args.no_pin, args.nice, args.tsgate_env)
        load_before = Path("/proc/loadavg").read_text().split()[:3]
        rounds, failures = run_rounds(bench, names, int(bench.sizes["rounds"]), log)
        load_after = Path("/proc/loadavg").read_text().split()[:3]
        report = "\n\n".join([
            "# tsgate relay benchmark" + (" (--quick)" if args.quick else ""),
            env
            + f"\nload average before: {' '.join(load_before)}; after: {' '.join(load_after)}"
            + f"\nrun time: {time.monotonic() - started:.0f} s",
            f"Medians of {len(rounds)} round(s); (×) = ratio to HAProxy in the same round "
            "(median of per-round ratios); added p50 = p50 through the proxy minus direct p50.",
            render(rounds, names, failures, version),
            goals(rounds) if "tsgate" in names else "",
            "Per round:\n" + raw_rounds(rounds),
            *[f"{name} failed:\n{text}" for name, text in failures.items()],
        ])
        save_report(report, f"relay-{stamp}{'-quick' if args.quick else ''}", args.no_save, log,
                    {"rounds": rounds, "failures": failures, "stamp": stamp})
        return 1 if failures else 0
    finally:
        bench.close()


if __name__ == "__main__":
    sys.exit(main())
