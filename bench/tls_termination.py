#!/usr/bin/env python3
"""
TLS termination benchmark: tsgate (SIMPLE termination, plaintext to the
backend) against HAProxy (``bind ... ssl crt``) and nginx (stream ``listen
... ssl``), in one run, on loopback.

    python bench/tls_termination.py            # 3 rounds
    python bench/tls_termination.py --quick    # 2 rounds, shorter runs
    python bench/tls_termination.py --profile py-spy   # tsgate's handshake phase profiled
    python bench/tls_termination.py --profile cprofile

Workloads (each proxy freshly started, measured in the same round):

- **handshakes/s**: ``bench/tlsload.c`` (C, OpenSSL) with 50 connections in
  flight: connect, a full TLS 1.3 handshake (SNI a or b, the certificate
  verified against the CA and the name), close. No session resumption. The
  client's close follows its Finished at once: HAProxy then never dials the
  plaintext backend (``bench/backend.c``; strace: 0.02 connect/handshake),
  nor does tsgate (a close that comes with the Finished, before any data:
  docs/tls.md); nginx does.
- **handshakes + exchange/s**: the same, then one byte written and read back
  through the echo backend before the close: every proxy dials and relays.
- **s_time**: ``openssl s_time -new`` (one connection at a time: connect,
  handshake, close; no SNI, so tsgate's server also has the catch-all host
  ``*``): new connections per wall-clock second (``--no-stime`` to skip).
- **bulk Gbit/s**: one Python ``ssl`` client streams 512 MiB (``--quick``:
  256 MiB) of zeros through the terminating proxy to the backend's sink;
  time from the first byte until the last is written (the proxy's buffers
  hold at most a few hundred KiB of it, so this is the relay rate).

One certificate (ECDSA P-256 by default, ``--key rsa``) covers both names
for every proxy, so the crypto is the same. The proxy runs on CPU 0, the
clients and backend on CPU 1 (``--no-pin`` to disable). Results are printed
and written to ``bench/results/tls-termination-<UTC>.txt``.
"""

from __future__ import annotations

import argparse
import datetime
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from relay import (
    RESULTS,
    BenchError,
    Proc,
    command_output,
    cpu_ns,
    free_port,
    parse_kv,
    wait_connectable,
)

HERE = Path(__file__).resolve().parent
HOSTS = ("a.bench.test", "b.bench.test")
PROXIES = ("haproxy", "nginx", "tsgate")
#: also accepted by --proxies: tsgate with Twisted's TLS layer (TSGATE_TLS=twisted)
EXTRA_PROXIES = ("tsgate-twisted-tls",)

HAPROXY = """\
global
    nbthread 1
    maxconn 9000
defaults
    mode tcp
    maxconn 9000
    timeout connect 5s
    timeout client 30s
    timeout server 30s
frontend tls
    bind 127.0.0.1:{port} ssl crt {pem}
    default_backend plain
backend plain
    server b 127.0.0.1:{backend}
"""

NGINX = """\
load_module /usr/lib/nginx/modules/ngx_stream_module.so;
worker_processes 1;
master_process off;
daemon off;
error_log {workdir}/nginx-error.log warn;
pid {workdir}/nginx.pid;
events {{ worker_connections 9000; }}
stream {{
    server {{
        listen 127.0.0.1:{port} ssl backlog=1024;
        ssl_certificate {cert};
        ssl_certificate_key {key};
        ssl_protocols TLSv1.2 TLSv1.3;
        proxy_pass 127.0.0.1:{backend};
    }}
}}
"""

TSGATE = """\
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {{name: bench-tls}}
spec:
  selector: {{istio: ingressgateway}}
  servers:
  - port: {{number: 8443, name: tls, protocol: TLS}}
    hosts: [a.bench.test, b.bench.test, '*']
    tls: {{mode: SIMPLE, serverCertificate: {cert}, privateKey: {key}}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: bench-tls}}
spec:
  hosts: ['*']
  gateways: [bench-tls]
  tcp:
  - route: [{{destination: {{host: plain.bench.local, port: {{number: 9000}}}}}}]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: plain}}
spec:
  hosts: [plain.bench.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{{number: 9000, name: tcp, protocol: TCP, targetPort: {backend}}}]
  endpoints: [{{address: 127.0.0.1}}]
"""


def certificates(workdir: Path, key_type: str) -> dict[str, Path]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec, rsa
    from cryptography.x509.oid import NameOID

    def key() -> Any:
        if key_type == "rsa":
            return rsa.generate_private_key(public_exponent=65537, key_size=2048)
        return ec.generate_private_key(ec.SECP256R1())

    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key = key()
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "tsgate bench CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
          .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
          .not_valid_before(now - datetime.timedelta(hours=1))
          .not_valid_after(now + datetime.timedelta(days=2))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .sign(ca_key, hashes.SHA256()))
    leaf_key = key()
    leaf = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, HOSTS[0])]))
            .issuer_name(ca_name).public_key(leaf_key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(hours=1))
            .not_valid_after(now + datetime.timedelta(days=2))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(h) for h in HOSTS]),
                           critical=False)
            .sign(ca_key, hashes.SHA256()))
    pem = serialization.Encoding.PEM
    key_pem = leaf_key.private_bytes(pem, serialization.PrivateFormat.PKCS8,
                                     serialization.NoEncryption())
    files = {"ca": workdir / "ca.pem", "cert": workdir / "leaf.pem",
             "key": workdir / "leaf-key.pem", "combined": workdir / "combined.pem"}
    files["ca"].write_bytes(ca.public_bytes(pem))
    files["cert"].write_bytes(leaf.public_bytes(pem))
    files["key"].write_bytes(key_pem)
    files["combined"].write_bytes(leaf.public_bytes(pem) + key_pem)
    return files


BULK_CLIENT = r"""
import socket, ssl, sys, time
port, ca, total = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])
ctx = ssl.create_default_context(cafile=ca)
raw = socket.create_connection(("127.0.0.1", port))
s = ctx.wrap_socket(raw, server_hostname="a.bench.test")
block = b"\0" * (1 << 20)
start = time.monotonic()
sent = 0
while sent < total:
    s.sendall(block)
    sent += len(block)
elapsed = time.monotonic() - start
print(f"bytes={sent} seconds={elapsed:.4f} gbit_s={sent * 8 / elapsed / 1e9:.4f}")
s.close()
"""


def busy_stacks(collapsed: Path) -> Path:
    """
    A copy of py-spy's collapsed stacks without the samples waiting in
    ``epoll_wait``: with ``--native`` py-spy samples the idle event loop too,
    and a share of all samples times CPU µs would overstate every function.
    """
    out = collapsed.with_suffix(".busy")
    kept = [line for line in collapsed.read_text().splitlines()
            if "epoll_wait" not in line.rpartition(" ")[0].rsplit(";", 1)[-1]]
    out.write_text("\n".join(kept) + "\n")
    return out


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.workdir = Path(tempfile.mkdtemp(prefix="tsgate-tls-bench-"))
        self.procs: list[Proc] = []
        self.seconds = args.seconds or (2.0 if args.quick else 4.0)
        self.bulk_bytes = (256 if args.quick else 512) << 20

    def pin(self, cpu: str, argv: list[str]) -> list[str]:
        return argv if self.args.no_pin else ["taskset", "-c", cpu, *argv]

    def build(self) -> None:
        for name, libs in (("tlsload", ["-lssl", "-lcrypto"]), ("backend", [])):
            subprocess.run(["gcc", "-O2", "-o", str(self.workdir / name), str(HERE / f"{name}.c"),
                            *libs], check=True, timeout=120, capture_output=True)

    def setup(self) -> None:
        self.files = certificates(self.workdir, self.args.key)
        backend = Proc("backend", self.pin("1", [str(self.workdir / "backend")]))
        self.procs.append(backend)
        self.backend_port = int(backend.wait_for(r"^READY (\d+)", 10).group(1))

    def start(self, name: str, runner: tuple[str, ...] = ("-m", "twisted")) -> tuple[Proc, int]:
        port = free_port()
        if name == "haproxy":
            cfg = self.workdir / "haproxy.cfg"
            cfg.write_text(HAPROXY.format(port=port, pem=self.files["combined"],
                                          backend=self.backend_port))
            proc = Proc(name, self.pin("0", ["haproxy", "-db", "-f", str(cfg)]))
        elif name == "nginx":
            cfg = self.workdir / "nginx.conf"
            cfg.write_text(NGINX.format(port=port, cert=self.files["cert"],
                                        key=self.files["key"], backend=self.backend_port,
                                        workdir=self.workdir))
            proc = Proc(name, self.pin("0", ["nginx", "-e", "stderr", "-c", str(cfg),
                                             "-p", str(self.workdir)]))
        else:
            cfg = self.workdir / "tsgate.yaml"
            cfg.write_text(TSGATE.format(cert=self.files["cert"], key=self.files["key"],
                                         backend=self.backend_port))
            # tsgate-twisted-tls: Twisted's TLSMemoryBIOProtocol instead of
            # tsgate.tls.transport (the fallback), for a same-run comparison
            env = {"TSGATE_TLS": "twisted"} if name == "tsgate-twisted-tls" else None
            proc = Proc(name, self.pin("0", [
                sys.executable, *runner, "--log-format=text", "tsgate", "--config",
                str(cfg), "--endpoint", f"8443=tcp:{port}:interface=127.0.0.1",
                "--admin", "none", "--readiness", "none", "--metrics", "none",
                "--access-log", "none"]), env=env)
        wait_connectable(port, 30)
        return proc, port

    def handshakes(self, port: int, seconds: float, exchange: bool = False) -> dict[str, float]:
        argv = self.pin("1", [str(self.workdir / "tlsload"), "client", str(self.files["ca"]),
                              str(port), str(port), "50", str(seconds), "1" if exchange else "0"])
        done = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 30)
        if done.returncode != 0:
            raise BenchError(f"tlsload failed: {done.stderr or done.stdout}")
        return parse_kv(done.stdout.strip().splitlines()[-1])

    def stime(self, port: int, seconds: int) -> dict[str, float]:
        """``openssl s_time -new``: sequential new connections; rate per wall second."""
        argv = self.pin("1", ["openssl", "s_time", "-connect", f"127.0.0.1:{port}", "-new",
                              "-time", str(seconds), "-CAfile", str(self.files["ca"])])
        start = time.monotonic()
        done = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True, timeout=seconds + 30)
        wall = time.monotonic() - start
        found = re.search(r"^(\d+) connections in [\d.]+s;", done.stdout, re.M)
        if done.returncode != 0 or found is None or "ERROR" in done.stdout:
            raise BenchError(f"openssl s_time failed: {done.stdout[-400:]}")
        count = int(found.group(1))
        return {"done": float(count), "rate": count / wall}

    def bulk(self, port: int) -> dict[str, float]:
        argv = self.pin("1", [sys.executable, "-c", BULK_CLIENT, str(port),
                              str(self.files["ca"]), str(self.bulk_bytes)])
        done = subprocess.run(argv, capture_output=True, text=True, timeout=120)
        if done.returncode != 0:
            raise BenchError(f"bulk client failed: {done.stderr}")
        return parse_kv(done.stdout.strip().splitlines()[-1])

    def measure(self, name: str) -> dict[str, float]:
        proc, port = self.start(name)
        try:
            self.handshakes(port, 0.5)  # warm-up
            before = cpu_ns(proc.pid)
            hs = self.handshakes(port, self.seconds)
            hs_cpu_s = (cpu_ns(proc.pid) - before) / 1e9
            before = cpu_ns(proc.pid)
            hsx = self.handshakes(port, self.seconds, exchange=True)
            hsx_cpu_s = (cpu_ns(proc.pid) - before) / 1e9
            if self.args.no_stime:
                st, st_cpu_s = {"done": 0.0, "rate": 0.0}, 0.0
            else:
                before = cpu_ns(proc.pid)
                st = self.stime(port, max(2, int(self.seconds)))
                st_cpu_s = (cpu_ns(proc.pid) - before) / 1e9
            if self.args.no_bulk:
                bulk, bulk_cpu_s = {"gbit_s": 0.0, "bytes": 0.0}, 1.0
            else:
                before = cpu_ns(proc.pid)
                bulk = self.bulk(port)
                bulk_cpu_s = (cpu_ns(proc.pid) - before) / 1e9
            return {"hs_s": hs["rate"], "errors": hs["errors"] + hsx["errors"],
                    "p50_ms": hs["p50_ms"],
                    "cpu_us_hs": hs_cpu_s * 1e6 / max(1.0, hs["done"]),
                    "hsx_s": hsx["rate"], "hsx_errors": hsx["errors"],
                    "cpu_us_hsx": hsx_cpu_s * 1e6 / max(1.0, hsx["done"]),
                    "stime_s": st["rate"], "cpu_us_stime": st_cpu_s * 1e6 / max(1.0, st["done"]),
                    "gbit_s": bulk["gbit_s"],
                    "gbit_per_cpu_s": bulk["bytes"] * 8 / 1e9 / max(bulk_cpu_s, 1e-9)}
        except BenchError as exc:
            exited = proc.popen.poll()
            tail = "\n".join(list(proc.tail)[-20:])
            raise BenchError(f"{name}: {exc}\n{name} exit status {exited}; its last lines:\n"
                             f"{tail}") from None
        finally:
            proc.stop()

    def profile(self, tool: str) -> list[Path]:
        """tsgate under py-spy (--native) or cProfile during the handshake phase."""
        stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H%MZ")
        RESULTS.mkdir(exist_ok=True)
        base = RESULTS / f"tls-profile-{stamp}-{tool}{'-exchange' if self.args.exchange else ''}"
        seconds = max(self.seconds, 6.0)
        if tool == "py-spy":
            from relay import summarize_collapsed

            proc, port = self.start("tsgate")
            try:
                self.handshakes(port, 0.5)  # warm-up
                out = base.with_suffix(".collapsed")
                spy = Proc("py-spy", self.pin("1", [
                    "py-spy", "record", "--pid", str(proc.pid), "--rate", "250", "--native",
                    "--format", "raw", "--output", str(out),
                    "--duration", str(int(seconds) + 1)]))
                try:
                    before = cpu_ns(proc.pid)
                    hs = self.handshakes(port, seconds, exchange=self.args.exchange)
                    cpu_us = (cpu_ns(proc.pid) - before) / 1e3 / max(1.0, hs["done"])
                    spy.wait_for(r"Wrote", seconds + 30)
                finally:
                    spy.stop()
            finally:
                proc.stop()
            summary = Path(f"{base}-summary.txt")
            busy = busy_stacks(out)
            summary.write_text(
                f"tsgate under py-spy --native (--rate 250) for {seconds:.0f} s of "
                f"terminated TLS 1.3 handshakes{' + exchange' if self.args.exchange else ''} "
                f"(key {self.args.key}): {hs['rate']:,.0f} hs/s, "
                f"{hs['done']:,.0f} handshakes, {cpu_us:,.0f} CPU µs/handshake (under the "
                f"profiler); load {os.getloadavg()}\n"
                f"µs/hs = share of busy samples × measured CPU µs per handshake (samples "
                f"waiting in epoll_wait left out: py-spy --native counts them)\n"
                f"collapsed stacks: {out.name}\n\n"
                + summarize_collapsed(busy, cpu_us, "hs", top=45) + "\n")
            busy.unlink()
            return [out, summary]
        prof = self.workdir / "tsgate.prof"
        proc, port = self.start("tsgate", ("-m", "cProfile", "-o", str(prof), "-m", "twisted"))
        try:
            self.handshakes(port, 0.5)
            hs = self.handshakes(port, seconds, exchange=self.args.exchange)
        finally:
            proc.stop()
        import io
        import pstats

        text = io.StringIO()
        stats = pstats.Stats(str(prof), stream=text)
        stats.sort_stats("tottime").print_stats(45)
        stats.sort_stats("cumulative").print_stats(60)
        summary = Path(f"{base}.txt")
        summary.write_text(
            f"tsgate under cProfile for {seconds:.0f} s of terminated TLS 1.3 handshakes (key "
            f"{self.args.key}): {hs['rate']:,.0f} hs/s, {hs['done']:,.0f} handshakes (cProfile "
            f"slows every Python call; the whole process run, start-up included)\n\n"
            + text.getvalue())
        return [summary]

    def close(self) -> None:
        for proc in self.procs:
            proc.stop()
        shutil.rmtree(self.workdir, ignore_errors=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--rounds", type=int, default=0)
    parser.add_argument("--key", choices=("ec", "rsa"), default="ec")
    parser.add_argument("--proxies", default=",".join(PROXIES))
    parser.add_argument("--no-pin", action="store_true")
    parser.add_argument("--no-save", action="store_true")
    parser.add_argument("--no-bulk", action="store_true", help="handshakes only")
    parser.add_argument("--no-stime", action="store_true", help="no openssl s_time workload")
    parser.add_argument("--exchange", action="store_true",
                        help="--profile: the handshake + one-byte exchange workload")
    parser.add_argument("--seconds", type=float, default=0.0,
                        help="seconds of handshakes per measurement (default 4; --quick 2)")
    parser.add_argument("--profile", choices=("py-spy", "cprofile"),
                        help="profile tsgate's handshake phase instead of the comparison")
    parser.add_argument("--summarize", nargs=2, metavar=("COLLAPSED", "CPU_US"),
                        help="rewrite the summary of a saved py-spy profile (busy samples)")
    args = parser.parse_args()
    if args.summarize:
        from relay import summarize_collapsed

        collapsed = Path(args.summarize[0])
        busy = busy_stacks(collapsed)
        print(summarize_collapsed(busy, float(args.summarize[1]), "hs", top=45))
        busy.unlink()
        return 0
    if args.profile:
        bench = Bench(args)
        try:
            bench.build()
            bench.setup()
            for path in bench.profile(args.profile):
                print(f"wrote {path}")
        finally:
            bench.close()
        return 0
    names = [n for n in args.proxies.split(",") if n]
    rounds = args.rounds or (2 if args.quick else 3)
    bench = Bench(args)
    results: dict[str, list[dict[str, float]]] = {n: [] for n in names}
    try:
        bench.build()
        bench.setup()
        for r in range(rounds):
            for name in names:
                results[name].append(bench.measure(name))
                print(f"round {r + 1} {name}: {results[name][-1]}", flush=True)
    finally:
        bench.close()

    def median(values: list[float]) -> float:
        values = sorted(values)
        mid = len(values) // 2
        return values[mid] if len(values) % 2 else (values[mid - 1] + values[mid]) / 2

    lines = [f"# TLS termination, {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%dT%H%MZ}"
             f", key {args.key}, {rounds} rounds (medians; ratio = per-round ratio to HAProxy)",
             f"# load before: {os.getloadavg()}; haproxy "
             f"{command_output(['haproxy', '-v']).split()[2] if shutil.which('haproxy') else '-'}",
             "# handshake: connect, TLS 1.3 handshake, close (HAProxy and tsgate then never dial "
             "the backend, nginx does); + exchange: then one byte to the echo backend and back "
             "(every proxy dials and relays); s_time: openssl s_time -new, one connection at a "
             "time, no SNI",
             "", "| proxy | TLS 1.3 handshakes/s | errors (both) | p50 ms | proxy CPU µs/handshake "
             "| handshake + exchange/s | proxy CPU µs/(handshake + exchange) "
             "| s_time conn/s | proxy CPU µs/s_time conn "
             "| bulk Gbit/s | bulk Gbit per proxy CPU-s |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for name in names:
        rows = results[name]
        cells = []
        for key, fmt in (("hs_s", "{:,.0f}"), ("errors", "{:.0f}"), ("p50_ms", "{:.1f}"),
                         ("cpu_us_hs", "{:,.0f}"), ("hsx_s", "{:,.0f}"),
                         ("cpu_us_hsx", "{:,.0f}"), ("stime_s", "{:,.0f}"),
                         ("cpu_us_stime", "{:,.0f}"), ("gbit_s", "{:.2f}"),
                         ("gbit_per_cpu_s", "{:.2f}")):
            value = fmt.format(median([row[key] for row in rows]))
            if key in ("hs_s", "gbit_s", "cpu_us_hs", "hsx_s", "cpu_us_hsx", "stime_s",
                       "cpu_us_stime", "gbit_per_cpu_s") and name != "haproxy" \
                    and "haproxy" in results:
                ratios = [row[key] / ref[key] for row, ref in zip(rows, results["haproxy"])
                          if ref[key]]
                if ratios:
                    value += f" ({median(ratios):.2f}×)"
            cells.append(value)
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines += ["", "raw: " + repr(results)]
    text = "\n".join(lines)
    print(text)
    if not args.no_save:
        RESULTS.mkdir(exist_ok=True)
        stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H%MZ")
        (RESULTS / f"tls-termination-{stamp}.txt").write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
