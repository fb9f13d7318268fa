#!/usr/bin/env python3
"""
SNI passthrough benchmark: full TLS 1.3 handshakes per second through tsgate,
HAProxy and a direct connection, in one run, on loopback.

    python bench/sni.py             # 5 rounds, about 2 minutes
    python bench/sni.py --quick     # 3 rounds, shorter runs, about 45 s
    python bench/sni.py --profile   # tsgate under py-spy (or cProfile) on this workload

The workload of PERF-ANCHORS.md's "SNI passthrough" table: two TLS backends
with distinct certificates (``a.bench.test``, ``b.bench.test``, from a CA
made here with ``cryptography``); 50 concurrent clients, each in a loop:
connect, a full TLS 1.3 handshake with SNI a or b alternately, the
certificate verified against the CA and its name against the SNI (a
misrouted connection is an error), close. On two cores the TLS endpoints'
crypto limits that workload for every proxy (see bench/README.md), so each
proxy also runs "replayed handshakes": the same connections carrying a real
recorded ClientHello and TLS-sized flights without crypto, where the proxy
is the limit.

Built like bench/relay.py (and reusing its process helpers): the clients and
backends are C with OpenSSL (bench/tlsload.c, compiled here), the proxy runs
on CPU 0 and everything else on CPU 1, every proxy is measured in the same
round, figures are medians of the rounds and ratios are medians of
per-round ratios to HAProxy. Every wait is bounded.
"""

from __future__ import annotations

import argparse
import datetime
import os
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Optional

sys.path.insert(0, str(Path(__file__).resolve().parent))

import relay  # noqa: E402  (bench/relay.py: processes, CPU accounting, reports)
from relay import (  # noqa: E402
    RESULTS,
    BenchError,
    Proc,
    command_output,
    cpu_busy_s,
    cpu_ns,
    environment,
    free_port,
    median_of,
    parse_kv,
    summarize_collapsed,
    user_sys_s,
    wait_connectable,
)

HERE = Path(__file__).resolve().parent
PROXY_CPU = "0"
CLIENT_CPU = "1"
HOSTS = ("a.bench.test", "b.bench.test")

#: (default run, --quick run)
SIZES = {
    "default": dict(rounds=5, seconds=4.0, replay_seconds=3.0, warmup=0.5, concurrency=50,
                    profile_seconds=10.0),
    "quick": dict(rounds=3, seconds=2.0, replay_seconds=1.5, warmup=0.3, concurrency=50,
                  profile_seconds=5.0),
}

PROXIES = ("direct", "haproxy", "nginx", "tsgate")
LABELS = {
    "direct": "direct (no proxy: the ceiling)",
    "haproxy": "HAProxy {version} (`req.ssl_sni`), nbthread 1",
    "nginx": "nginx stream (`ssl_preread`), one worker",
    "tsgate": "tsgate (this tree)",
}

NGINX_CONFIG = """\
# Written by bench/sni.py: SNI passthrough with ssl_preread, one worker.
load_module /usr/lib/nginx/modules/ngx_stream_module.so;
daemon off;
master_process off;
worker_processes 1;
worker_rlimit_nofile 20000;
error_log {workdir}/nginx-sni-error.log warn;
pid {workdir}/nginx-sni.pid;
events {{ worker_connections 12000; }}
stream {{
    map $ssl_preread_server_name $backend {{
        a.bench.test 127.0.0.1:{port_a};
        b.bench.test 127.0.0.1:{port_b};
    }}
    server {{
        listen 127.0.0.1:{port} backlog=4096;
        ssl_preread on;
        proxy_pass $backend;
        proxy_connect_timeout 5s;
    }}
}}
"""

TSGATE_CONFIG = """\
# Written by bench/sni.py: TLS passthrough on 8443, routed by SNI to two backends.
apiVersion: networking.istio.io/v1beta1
kind: Gateway
metadata:
  name: bench-sni-gateway
spec:
  selector:
    istio: ingressgateway
  servers:
  - port:
      number: 8443
      name: tls-sni
      protocol: TLS
    hosts: [a.bench.test, b.bench.test]
    tls:
      mode: PASSTHROUGH
---
apiVersion: networking.istio.io/v1beta1
kind: VirtualService
metadata:
  name: bench-sni
spec:
  hosts: [a.bench.test, b.bench.test]
  gateways: [bench-sni-gateway]
  tls:
  - match:
    - port: 8443
      sniHosts: [a.bench.test]
    route:
    - destination:
        host: a-backend
        port:
          number: 443
  - match:
    - port: 8443
      sniHosts: [b.bench.test]
    route:
    - destination:
        host: b-backend
        port:
          number: 443
---
apiVersion: networking.istio.io/v1beta1
kind: ServiceEntry
metadata:
  name: a-backend
spec:
  hosts: [a-backend]
  location: MESH_INTERNAL
  resolution: STATIC
  ports:
  - number: 443
    name: tls
    protocol: TLS
    targetPort: {port_a}
  endpoints:
  - address: 127.0.0.1
---
apiVersion: networking.istio.io/v1beta1
kind: ServiceEntry
metadata:
  name: b-backend
spec:
  hosts: [b-backend]
  location: MESH_INTERNAL
  resolution: STATIC
  ports:
  - number: 443
    name: tls
    protocol: TLS
    targetPort: {port_b}
  endpoints:
  - address: 127.0.0.1
"""

HAPROXY_CONFIG = """\
# Written by bench/sni.py: SNI passthrough, one thread.
global
    nbthread 1
    maxconn 9000

defaults
    mode tcp
    maxconn 9000
    timeout connect 5s
    timeout client 30s
    timeout server 30s

frontend sni
    bind 127.0.0.1:{port}
    tcp-request inspect-delay 5s
    tcp-request content accept if {{ req_ssl_hello_type 1 }}
    use_backend a if {{ req.ssl_sni -i a.bench.test }}
    use_backend b if {{ req.ssl_sni -i b.bench.test }}

backend a
    server a 127.0.0.1:{port_a}

backend b
    server b 127.0.0.1:{port_b}
"""


# -------------------------------------------------------------- certificates


def make_certificates(workdir: Path, key_type: str) -> dict[str, Path]:
    """A CA and a leaf per host (SAN and CN = the host), as PEM files in ``workdir``."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec, rsa
    from cryptography.x509.oid import NameOID

    def new_key() -> Any:
        if key_type == "ec":
            return ec.generate_private_key(ec.SECP256R1())
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)

    now = datetime.datetime.now(datetime.timezone.utc)

    def cert(subject: str, key: Any, issuer: Optional[tuple[str, Any]], ca: bool) -> Any:
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
        issuer_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer[0])]) \
            if issuer else name
        builder = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(issuer_name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(hours=1))
            .not_valid_after(now + datetime.timedelta(days=2))
            .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        )
        if not ca:
            builder = builder.add_extension(
                x509.SubjectAlternativeName([x509.DNSName(subject)]), critical=False)
        return builder.sign(issuer[1] if issuer else key, hashes.SHA256())

    def write(path: Path, data: bytes) -> Path:
        path.write_bytes(data)
        return path

    pem = serialization.Encoding.PEM
    ca_key = new_key()
    ca_cert = cert("tsgate bench CA", ca_key, None, ca=True)
    files = {"ca": write(workdir / "ca.pem", ca_cert.public_bytes(pem))}
    for host in HOSTS:
        key = new_key()
        leaf = cert(host, key, ("tsgate bench CA", ca_key), ca=False)
        label = host.split(".")[0]
        files[f"{label}_cert"] = write(workdir / f"{label}.pem", leaf.public_bytes(pem))
        files[f"{label}_key"] = write(workdir / f"{label}-key.pem", key.private_bytes(
            pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    return files


# ------------------------------------------------------------------ proxies


class Proxy:
    """A proxy under test: ``start()`` returns the ports for SNI a and SNI b."""

    name = ""
    proc: Optional[Proc] = None

    def __init__(self, bench: Bench) -> None:
        self.bench = bench

    @property
    def pid(self) -> Optional[int]:
        return self.proc.pid if self.proc is not None else None

    def start(self, backends: tuple[int, int]) -> tuple[int, int]:
        """Route SNI a to port ``backends[0]``, b to ``backends[1]``; the client's ports."""
        raise NotImplementedError

    def launch(self, argv: list[str]) -> Proc:
        bench = self.bench
        return Proc(self.name, bench.pinned(bench.proxy_cpu, argv), cwd=bench.workdir)

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.stop()
            self.proc = None


class Direct(Proxy):
    """No proxy: each SNI goes straight to its own backend's port."""

    name = "direct"

    def start(self, backends: tuple[int, int]) -> tuple[int, int]:
        return backends


class HAProxy(Proxy):
    name = "haproxy"

    def start(self, backends: tuple[int, int]) -> tuple[int, int]:
        port = free_port()
        cfg = self.bench.workdir / "haproxy-sni.cfg"
        cfg.write_text(HAPROXY_CONFIG.format(port=port, port_a=backends[0],
                                             port_b=backends[1]))
        self.proc = self.launch(["haproxy", "-db", "-f", str(cfg)])
        wait_connectable(port, 10)
        return port, port


class Nginx(Proxy):
    name = "nginx"

    def start(self, backends: tuple[int, int]) -> tuple[int, int]:
        port = free_port()
        workdir = self.bench.workdir
        cfg = workdir / "nginx-sni.conf"
        cfg.write_text(NGINX_CONFIG.format(port=port, port_a=backends[0], port_b=backends[1],
                                           workdir=workdir))
        self.proc = self.launch(["nginx", "-e", "stderr", "-c", str(cfg), "-p", str(workdir)])
        wait_connectable(port, 10)
        return port, port


def tsgate_argv(config: Path, runner: Optional[list[str]] = None) -> list[str]:
    return [
        sys.executable, *(runner or ["-m", "twisted"]), "--log-format=text", "tsgate",
        "--config", str(config), "--endpoint", "8443=tcp:0:interface=127.0.0.1:backlog=1024",
        "--admin", "none", "--readiness", "none", "--access-log", "none",
        # no metrics listener: its fixed port (15090) may be taken on a shared machine
        "--metrics", "none",
    ]


class Tsgate(Proxy):
    name = "tsgate"

    def __init__(self, bench: Bench, runner: Optional[list[str]] = None) -> None:
        super().__init__(bench)
        self.runner = runner  # what runs twist: default "-m twisted"; cProfile

    def start(self, backends: tuple[int, int]) -> tuple[int, int]:
        config = self.bench.tsgate_config(backends)
        self.proc = self.launch(tsgate_argv(config, self.runner))
        found = self.proc.wait_for(r"tsgate listening: \S+ on 127\.0\.0\.1:(\d+)", 60)
        port = int(found.group(1))
        return port, port


# -------------------------------------------------------------------- bench


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.sizes = SIZES["quick" if args.quick else "default"]
        if args.rounds:
            self.sizes = dict(self.sizes, rounds=args.rounds)
        if args.seconds:
            self.sizes = dict(self.sizes, seconds=args.seconds)
        self.proxy_cpu: Optional[str] = None if args.no_pin else PROXY_CPU
        self.client_cpu: Optional[str] = None if args.no_pin else CLIENT_CPU
        self.workdir = Path(tempfile.mkdtemp(prefix="tsgate-sni-bench-"))
        self.backends: dict[str, Proc] = {}
        self.ports: dict[str, int] = {}
        self.files: dict[str, Path] = {}

    def pinned(self, cpu: Optional[str], argv: list[str]) -> list[str]:
        return ["taskset", "-c", cpu, *argv] if cpu is not None else argv

    def build(self) -> None:
        try:
            subprocess.run(
                ["gcc", "-O2", "-Wall", "-o", str(self.workdir / "tlsload"),
                 str(HERE / "tlsload.c"), "-lssl", "-lcrypto"],
                check=True, timeout=120, capture_output=True, text=True,
            )
        except subprocess.CalledProcessError as exc:
            raise BenchError(f"building tlsload.c failed (OpenSSL headers: apt-get install -y "
                             f"libssl-dev):\n{exc.stderr}") from exc

    def setup(self) -> None:
        """Certificates; the TLS and replay backends on the client CPU; tsgate validates."""
        self.files = make_certificates(self.workdir, self.args.key)
        tlsload = str(self.workdir / "tlsload")
        for label, host in zip(("a", "b"), HOSTS):
            for name, argv in (
                (label, [tlsload, "server", str(self.files[f"{label}_cert"]),
                         str(self.files[f"{label}_key"])]),
                (f"replay_{label}", [tlsload, "replay-server", host]),
            ):
                proc = Proc(f"backend-{name}", self.pinned(self.client_cpu, argv))
                self.backends[name] = proc
                self.ports[name] = int(proc.wait_for(r"^READY (\d+)", 10).group(1))
        config = self.tsgate_config(self.tls_backends)
        done = subprocess.run([sys.executable, "-m", "tsgate", "validate", str(config)],
                              capture_output=True, text=True, timeout=60)
        if done.returncode != 0:
            raise BenchError(f"tsgate validate failed:\n{done.stdout}{done.stderr}")

    @property
    def tls_backends(self) -> tuple[int, int]:
        return self.ports["a"], self.ports["b"]

    @property
    def replay_backends(self) -> tuple[int, int]:
        return self.ports["replay_a"], self.ports["replay_b"]

    def tsgate_config(self, backends: tuple[int, int]) -> Path:
        path = self.workdir / f"tsgate-sni-{backends[0]}-{backends[1]}.yaml"
        path.write_text(TSGATE_CONFIG.format(port_a=backends[0], port_b=backends[1]))
        return path

    def close(self) -> None:
        for proc in self.backends.values():
            proc.stop()
        shutil.rmtree(self.workdir, ignore_errors=True)

    def client(self, ports: tuple[int, int], seconds: float, replay: bool = False,
               ) -> dict[str, float]:
        mode = ["replay"] if replay else ["client", str(self.files["ca"])]
        argv = self.pinned(self.client_cpu, [
            str(self.workdir / "tlsload"), *mode, str(ports[0]), str(ports[1]),
            str(self.sizes["concurrency"]), str(seconds)])
        done = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 30,
                              preexec_fn=relay._child_setup)
        if done.returncode != 0:
            raise BenchError(f"tlsload client failed ({done.returncode}): "
                             f"{done.stderr.strip() or done.stdout.strip()}")
        result = parse_kv(done.stdout.strip().splitlines()[-1])
        if done.stderr.strip():
            result["_stderr"] = done.stderr.strip()  # type: ignore[assignment]
        return result

    def client_cpu_s(self) -> float:
        """CPU seconds of the backends and of finished client runs."""
        children = resource.getrusage(resource.RUSAGE_CHILDREN)
        backends = sum(cpu_ns(p.pid) for p in self.backends.values()) / 1e9
        return children.ru_utime + children.ru_stime + backends

    def handshakes(self, ports: tuple[int, int], pid: Optional[int],
                   seconds: Optional[float] = None, replay: bool = False) -> dict[str, float]:
        """The measured run, with the proxy's and the client side's CPU."""
        seconds = seconds or self.sizes["replay_seconds" if replay else "seconds"]
        before = cpu_ns(pid) if pid else 0
        user_before, sys_before = user_sys_s(pid) if pid else (0.0, 0.0)
        cpu = self.proxy_cpu
        busy_before = cpu_busy_s(cpu) if cpu else 0.0
        wall_before = time.monotonic()
        client_before = self.client_cpu_s()
        result = self.client(ports, seconds, replay)
        wall = time.monotonic() - wall_before
        result["client_cpu_pct"] = (self.client_cpu_s() - client_before) * 100 / wall
        proxy_s = (cpu_ns(pid) - before) / 1e9 if pid else 0.0
        if pid and result["done"]:
            result["cpu_us_per_conn"] = proxy_s * 1e6 / result["done"]
            user_after, sys_after = user_sys_s(pid)
            result["user_us_per_conn"] = (user_after - user_before) * 1e6 / result["done"]
            result["sys_us_per_conn"] = (sys_after - sys_before) * 1e6 / result["done"]
            result["hs_per_cpu_s"] = result["done"] / proxy_s if proxy_s else 0.0
        if cpu:
            others = cpu_busy_s(cpu) - busy_before - proxy_s
            result["others_cpu0_pct"] = max(0.0, others) * 100 / wall
        return result

    def proxy(self, name: str) -> Proxy:
        return {"direct": Direct, "haproxy": HAProxy, "nginx": Nginx,
                "tsgate": Tsgate}[name](self)

    def run_one(self, name: str, replay: bool) -> dict[str, float]:
        """One workload on a freshly started proxy: warm-up, then the measured run."""
        proxy = self.proxy(name)
        try:
            ports = proxy.start(self.replay_backends if replay else self.tls_backends)
            self.client(ports, self.sizes["warmup"], replay)  # warm-up, not counted
            return self.handshakes(ports, proxy.pid, replay=replay)
        finally:
            proxy.stop()

    def measure(self, name: str, log: Callable[[str], None]) -> dict[str, float]:
        """Real handshakes, then (unless --no-replay) replayed ones, on one proxy."""
        result: dict[str, float] = {}
        for replay in (False, True) if self.args.replay else (False,):
            r = self.run_one(name, replay)
            stderr = r.pop("_stderr", None)
            prefix = "replay_" if replay else ""
            result[prefix + "hs_s"] = r["rate"]
            for key in ("errors", "misrouted", "timeouts", "p50_ms", "p99_ms", "done",
                        "cpu_us_per_conn", "user_us_per_conn", "sys_us_per_conn",
                        "hs_per_cpu_s", "others_cpu0_pct", "client_cpu_pct"):
                if key in r:
                    result[prefix + key] = r[key]
            if stderr:
                log(f"    {prefix}client: " + str(stderr).replace("\n", "\n    client: ")[:1500])
        log("  " + name + ": " + ", ".join(f"{k}={v:.4g}" for k, v in result.items()))
        return result


# ------------------------------------------------------------------ report

COLUMNS = [
    ("hs_s", "handshakes/s", "{:,.0f}"),
    ("cpu_us_per_conn", "proxy CPU µs/conn", "{:.0f}"),
    ("errors", "errors", "{:.0f}"),
    ("replay_hs_s", "replayed hs/s (proxy-bound)", "{:,.0f}"),
    ("replay_cpu_us_per_conn", "CPU µs/replayed conn", "{:.0f}"),
    ("replay_errors", "replay errors", "{:.0f}"),
]
RATIO_KEYS = ("hs_s", "replay_hs_s", "hs_per_cpu_s", "replay_hs_per_cpu_s")
TOTAL_KEYS = ("errors", "replay_errors", "misrouted", "replay_misrouted", "timeouts",
              "replay_timeouts")
DETAIL = [
    ("hs_per_cpu_s", "hs/s per proxy CPU-s", "{:,.0f}"),
    ("user_us_per_conn", "user µs/conn", "{:.0f}"),
    ("sys_us_per_conn", "sys µs/conn", "{:.0f}"),
    ("p50_ms", "handshake p50 ms", "{:.2f}"),
    ("p99_ms", "handshake p99 ms", "{:.2f}"),
    ("misrouted", "misrouted", "{:.0f}"),
    ("timeouts", "timeouts", "{:.0f}"),
    ("others_cpu0_pct", "others on CPU 0 %", "{:.0f}"),
    ("client_cpu_pct", "client CPU %", "{:.0f}"),
]
DETAIL_REPLAY = [("replay_" + key, head, fmt) for key, head, fmt in DETAIL]


def render(rounds: list[dict[str, dict[str, float]]], names: list[str],
           failures: dict[str, str], haproxy_version: str) -> str:
    out = []
    head = ["SNI passthrough"] + [c[1] for c in COLUMNS]
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
            cells.append(_cell(rounds, name, key, fmt, value))
        out.append("| " + " | ".join(cells) + " |")
    for title, columns in (("real handshakes", DETAIL), ("replayed handshakes", DETAIL_REPLAY)):
        if not any(median_of(rounds, n, columns[0][0]) is not None for n in names):
            continue
        out.append("")
        head = [f"proxy ({title})"] + [c[1] for c in columns]
        out.append("| " + " | ".join(head) + " |")
        out.append("|" + "---|" * len(head))
        for name in names:
            if name in failures:
                continue
            cells = [name]
            for key, _, fmt in columns:
                value = median_of(rounds, name, key)
                cells.append("—" if value is None else _cell(rounds, name, key, fmt, value))
            out.append("| " + " | ".join(cells) + " |")
    return "\n".join(out)


def _cell(rounds: list[dict[str, dict[str, float]]], name: str, key: str, fmt: str,
          value: float) -> str:
    """A median (a total for error counts: every error counts), with its ratio to HAProxy."""
    if key in TOTAL_KEYS:
        return f"{sum(v.get(name, {}).get(key, 0) for v in rounds):.0f}"
    cell = fmt.format(value)
    ratio = median_of(rounds, name, key, over="haproxy")
    if name != "haproxy" and ratio is not None and key in RATIO_KEYS:
        cell += f" ({ratio:.2f}×)"
    return cell


def goals(rounds: list[dict[str, dict[str, float]]]) -> str:
    """The project's SNI goal (PERF-ANCHORS.md), and the same ratio where the proxy is the limit."""
    checks = [
        ("SNI handshakes/s ≥ 0.95× HAProxy (issue 8)", "hs_s"),
        ("same, replayed handshakes (the proxy is the limit)", "replay_hs_s"),
        ("(for information) real handshakes per proxy CPU-s", "hs_per_cpu_s"),
    ]
    lines = ["| goal (tsgate, median of per-round ratios) | measured | met |", "|---|---|---|"]
    for text, key in checks:
        ratio = median_of(rounds, "tsgate", key, over="haproxy")
        if ratio is None:
            lines.append(f"| {text} | — | — |")
        else:
            met = "—" if key == "hs_per_cpu_s" else ("yes" if ratio >= 0.95 else "NO")
            lines.append(f"| {text} | {ratio:.2f}× | {met} |")
    return "\n".join(lines)


def raw_rounds(rounds: list[dict[str, dict[str, float]]]) -> str:
    lines = []
    for i, values in enumerate(rounds, 1):
        for name, v in values.items():
            lines.append(f"round {i} {name}: " + ", ".join(f"{k}={x:.4g}" for k, x in v.items()))
    return "\n".join(lines)


# ----------------------------------------------------------------- profile


def profile(bench: Bench, stamp: str, log: Callable[[str], None]) -> list[Path]:
    """tsgate under py-spy (or cProfile) for the real or the replayed handshakes."""
    seconds = bench.sizes["profile_seconds"]
    replay = bench.args.profile_workload == "replay"
    backends = bench.replay_backends if replay else bench.tls_backends
    tool = bench.args.profiler
    if tool == "auto":
        tool = "py-spy" if shutil.which("py-spy") else "cprofile"
    RESULTS.mkdir(exist_ok=True)
    base = f"sni-profile-{stamp}-{bench.args.profile_workload}"
    env = environment(bench.sizes, not bench.args.no_pin, bench.args.nice)
    if tool == "py-spy":
        proxy = Tsgate(bench)
        try:
            ports = proxy.start(backends)
            assert proxy.pid is not None
            bench.client(ports, 1.0, replay)  # warm-up
            out = RESULTS / f"{base}.collapsed"
            spy = Proc("py-spy", bench.pinned(bench.client_cpu, [
                "py-spy", "record", "--pid", str(proxy.pid), "--rate", "250", "--nonblocking",
                "--format", "raw", "--output", str(out), "--duration", str(int(seconds) + 1),
            ]))
            try:
                time.sleep(0.5)
                r = bench.handshakes(ports, proxy.pid, seconds, replay)
                spy.wait_for(r"Wrote", seconds + 30)
            finally:
                spy.stop()
        finally:
            proxy.stop()
        what = (f"{r['rate']:,.0f} {'replayed ' if replay else ''}handshakes/s, "
                f"{r['done']:,.0f} connections")
        per_conn = r.get("cpu_us_per_conn")
        log(f"profiled {what} under py-spy; {per_conn or 0:.0f} CPU µs/conn")
        summary = RESULTS / f"{base}-summary.txt"
        summary.write_text(
            f"tsgate under py-spy (--rate 250 --nonblocking) for {seconds:.0f} s of SNI "
            f"passthrough: {what}\nµs/conn = share of busy samples × measured CPU µs per conn\n"
            f"collapsed stacks: {out.name}\n" + env + "\n\n"
            + summarize_collapsed(out, per_conn, "conn") + "\n")
        return [out, summary]
    prof = bench.workdir / "tsgate.prof"
    proxy = Tsgate(bench, runner=["-m", "cProfile", "-o", str(prof), "-m", "twisted"])
    try:
        ports = proxy.start(backends)
        assert proxy.pid is not None
        r = bench.handshakes(ports, proxy.pid, seconds, replay)
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
        f"tsgate under cProfile for {seconds:.0f} s of SNI passthrough: {r['rate']:,.0f} "
        f"{'replayed ' if replay else ''}handshakes/s, {r['done']:,.0f} connections "
        "(cProfile slows every Python call: rates are not comparable with the table)\n"
        + env + "\n\n" + text.getvalue())
    return [summary]


# -------------------------------------------------------------------- main


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="3 rounds of 2 s (~40 s)")
    parser.add_argument("--rounds", type=int, help="rounds (default 5; --quick 3)")
    parser.add_argument("--seconds", type=float, help="seconds per measured run (default 4)")
    parser.add_argument("--proxies", default=",".join(PROXIES),
                        help="comma-separated subset of " + ",".join(PROXIES))
    parser.add_argument("--key", choices=("ec", "rsa"), default="ec",
                        help="certificate keys: ec (P-256, default: the cheapest handshake, so "
                        "the client side limits the run least) or rsa (2048)")
    parser.add_argument("--profile", action="store_true",
                        help="only profile tsgate on this workload")
    parser.add_argument("--profiler", choices=("auto", "py-spy", "cprofile"), default="auto")
    parser.add_argument("--profile-workload", choices=("tls", "replay"), default="tls",
                        help="what --profile runs: real handshakes (default) or replayed ones "
                        "(the proxy is the limit)")
    parser.add_argument("--no-replay", dest="replay", action="store_false",
                        help="skip the replayed-handshake workload")
    parser.add_argument("--no-pin", action="store_true", help="do not pin with taskset")
    parser.add_argument("--nice", type=int, default=-10 if os.geteuid() == 0 else 0,
                        help="nice value of every child, each in its own autogroup "
                        "(default -10 as root; 0: off)")
    parser.add_argument("--no-save", action="store_true", help="do not write bench/results/")
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
    relay.PRIORITY = args.nice
    bench = Bench(args)
    started = time.monotonic()
    try:
        bench.build()
        bench.setup()
        if args.profile:
            for path in profile(bench, stamp, log):
                log(f"wrote {path}")
            return 0
        version = relay.haproxy_version()
        env = environment(bench.sizes, not args.no_pin, args.nice)
        openssl = command_output(["openssl", "version"])
        load_before = Path("/proc/loadavg").read_text().split()[:3]
        rounds, failures = relay.run_rounds(bench, names, int(bench.sizes["rounds"]), log)
        load_after = Path("/proc/loadavg").read_text().split()[:3]
        report = "\n\n".join([
            "# tsgate SNI passthrough benchmark" + (" (--quick)" if args.quick else ""),
            env + f"\n{openssl}; keys: {'RSA 2048' if args.key == 'rsa' else 'ECDSA P-256'}"
            "; TLS 1.3 only, no tickets, no resumption (every handshake full)"
            + f"\nload average before: {' '.join(load_before)}; after: {' '.join(load_after)}"
            + f"\nrun time: {time.monotonic() - started:.0f} s",
            f"Medians of {len(rounds)} round(s) of {bench.sizes['seconds']:g} s, "
            f"{bench.sizes['concurrency']} concurrent clients; (×) = ratio to HAProxy in the "
            "same round (median of per-round ratios); errors = total over the rounds "
            "(misrouted ones included).",
            render(rounds, names, failures, version),
            goals(rounds) if "tsgate" in names else "",
            "Per round:\n" + raw_rounds(rounds),
            *[f"{name} failed:\n{text}" for name, text in failures.items()],
        ])
        relay.save_report(report, f"sni-{stamp}{'-quick' if args.quick else ''}", args.no_save,
                          log, {"rounds": rounds, "failures": failures, "stamp": stamp})
        return 1 if failures else 0
    finally:
        bench.close()


if __name__ == "__main__":
    sys.exit(main())
