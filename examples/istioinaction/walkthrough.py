"""Istio in Action, chapter 4, on a laptop: one command starts the backends and the gateway.

    python examples/istioinaction/walkthrough.py [--workdir DIR] [--port 31400]

What it does, in the book's order:

1. writes fresh certificates for ``simple-sni-1`` and ``simple-sni-2`` into
   ``DIR/simple-sni-N/`` (the book's layout, see ``certs.py``);
2. starts the go-echo compatible echo server on 127.0.0.1:2701 with the banner
   variables a pod would have (``tcp-echo-service``);
3. starts two fake-service compatible HTTPS servers on 127.0.0.1:9081 and :9082
   (``simple-tls-service-1`` and ``-2``), each with its host's leaf certificate;
4. waits until each backend listens, then runs the gateway in the foreground --
   ``twistd -n tsgate --config ... --inspect-timeout 1 --bind 127.0.0.1`` -- with
   the book's YAML plus ``local/serviceentries.yaml``, which points the book's
   service names at those local ports (the gateway's admin and readiness
   endpoints keep their defaults, 127.0.0.1:15000 and :15021, and its metrics
   listener is on 127.0.0.1:15090; pass
   ``--gateway-arg=--admin=none`` and the like to change them);
5. prints the book's commands with local paths: ``telnet localhost 31400`` and
   the two ``curl --cacert ... --resolve ...`` lines.

Ctrl-C (or SIGTERM/SIGHUP) stops everything; children are killed and reaped
before it exits, and on Linux they also die if this process is killed with
SIGKILL (``PR_SET_PDEATHSIG``), so no server is left holding a port.

The inspection timeout is 1 s instead of Envoy's 15 s because port 31400 ends
up carrying both the TCP echo route and the TLS routes (tsgate compiles TCP and
TLS servers on one port in any order, unlike Istio): ``telnet`` sends nothing
until you type, so the gateway waits that long for a ClientHello before it
falls back to the TCP route and the echo banner appears.

``--no-gateway`` starts only the backends (used by the tests);
``--echo-port``/``--service-ports`` move the backends and ``--port`` the gateway --
the YAML is then rewritten into ``DIR/config/`` with those ports, since the
book's files name 31400, 2701 and the service entries' ports literally.
Backend logs go to ``DIR/logs/``; the gateway's access log to this terminal.
"""

from __future__ import annotations

import argparse
import errno
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Optional

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import certs  # noqa: E402  (a sibling module, not an installed package)

GATEWAY_PORT = 31400
ECHO_PORT = 2701
SERVICE_PORTS = (9081, 9082)
HOSTS = certs.WALKTHROUGH_HOSTS
INSPECT_TIMEOUT = "1"

# The book's manifests (copied verbatim) plus the ServiceEntries for local backends.
CONFIG_FILES = (
    "echo.yaml",
    "gateway-tcp.yaml",
    "echo-vs.yaml",
    "sni/passthrough-sni-gateway-both.yaml",
    "sni/passthrough-sni-vs-1.yaml",
    "sni/passthrough-sni-vs-2.yaml",
    "local/serviceentries.yaml",
)

# What a pod of the book's echo Deployment sees through the downward API.
ECHO_ENV = {
    "NODE_NAME": "minikube",
    "POD_NAME": "tcp-echo-deployment-local",
    "POD_NAMESPACE": "istioinaction",
    "POD_IP": "127.0.0.1",
    "SERVICE_ACCOUNT": "default",
}

_STOP_GRACE_SECONDS = 10.0
_READY_TIMEOUT_SECONDS = 15.0


class Stop(Exception):
    """Raised in the main loop by SIGTERM/SIGHUP, like KeyboardInterrupt for SIGINT."""


def _die_with_parent() -> None:
    """In the child before exec: get SIGTERM when the walkthrough dies, even by SIGKILL."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        pr_set_pdeathsig = 1
        libc.prctl(pr_set_pdeathsig, signal.SIGTERM)
    except (OSError, AttributeError):
        pass  # not Linux: Ctrl-C/SIGTERM handling still stops the children


class Children:
    """The processes started here; :meth:`stop_all` ends and reaps every one."""

    def __init__(self) -> None:
        self.procs: list[tuple[str, subprocess.Popen[bytes]]] = []

    def start(self, name: str, argv: list[str], env: dict[str, str], log: Optional[Path]) -> Any:
        out: Any = None
        if log is not None:
            log.parent.mkdir(parents=True, exist_ok=True)
            out = open(log, "ab")
        try:
            proc = subprocess.Popen(
                argv,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT if out is not None else None,
                preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None,
            )
        finally:
            if out is not None:
                out.close()  # the child has its own copy
        self.procs.append((name, proc))
        return proc

    def exited(self) -> Optional[tuple[str, int]]:
        for name, proc in self.procs:
            code = proc.poll()
            if code is not None:
                return name, code
        return None

    def stop_all(self) -> None:
        for _, proc in self.procs:
            if proc.poll() is None:
                try:
                    proc.send_signal(signal.SIGTERM)
                except ProcessLookupError:
                    pass
        deadline = time.monotonic() + _STOP_GRACE_SECONDS
        for _, proc in self.procs:
            try:
                proc.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def port_in_use(port: int) -> bool:
    """Whether some socket is bound to 127.0.0.1:port (or the wildcard address).

    Asked by trying to bind it, not by connecting: a probe connection would be
    the first line of the gateway's access log and of the echo server's log.
    SO_REUSEADDR makes leftover TIME_WAIT connections not count.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", port))
        except OSError as e:
            if e.errno == errno.EADDRINUSE:
                return True
            raise
    return False


def wait_for_port(port: int, proc: subprocess.Popen[bytes], name: str, timeout: float) -> None:
    """Return once ``proc`` listens on 127.0.0.1:port; fail if it exits or time runs out.

    The port was free before ``proc`` started (see :func:`run`), so once it is
    taken, ``proc`` holds it; the process is checked for an early exit too.
    """
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"{name} exited with status {proc.returncode} before listening")
        if port_in_use(port):
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"{name} is not listening on 127.0.0.1:{port} after {timeout:.0f}s")
        time.sleep(0.05)


def rewrite_configs(
    sources: Sequence[Path], out_dir: Path, port_map: dict[int, int], gateway_port: int,
    base: Path = HERE,
) -> list[Path]:
    """Copy the YAML with the gateway and backend ports moved; return the new paths.

    Gateway server ports and VirtualService match ports 31400 become
    ``gateway_port``; in ServiceEntries, endpoint ports and ``targetPort``
    values found in ``port_map`` are replaced, and a port whose number is a
    default backend port with no target gets ``targetPort`` so the
    VirtualService's destination port still names it.
    """
    import yaml

    written = []
    for src in sources:
        docs = [d for d in yaml.safe_load_all(src.read_text(encoding="utf-8"))]
        for doc in docs:
            if isinstance(doc, dict):
                _rewrite_doc(doc, port_map, gateway_port)
        dst = out_dir / (src.relative_to(base) if src.is_relative_to(base) else src.name)
        dst.parent.mkdir(parents=True, exist_ok=True)
        dst.write_text(yaml.safe_dump_all(docs, sort_keys=False), encoding="utf-8")
        written.append(dst)
    return written


def _rewrite_doc(doc: dict[str, Any], port_map: dict[int, int], gateway_port: int) -> None:
    kind, spec = doc.get("kind"), doc.get("spec") or {}
    if kind == "Gateway":
        for server in spec.get("servers") or []:
            port = server.get("port") or {}
            if port.get("number") == GATEWAY_PORT:
                port["number"] = gateway_port
        for listener in spec.get("listeners") or []:  # the Kubernetes Gateway API's
            if listener.get("port") == GATEWAY_PORT:
                listener["port"] = gateway_port
    elif kind in ("TCPRoute", "TLSRoute"):
        for ref in spec.get("parentRefs") or []:
            if ref.get("port") == GATEWAY_PORT:
                ref["port"] = gateway_port
    elif kind == "VirtualService":
        for section in ("tcp", "tls"):
            for rule in spec.get(section) or []:
                for match in rule.get("match") or []:
                    if match.get("port") == GATEWAY_PORT:
                        match["port"] = gateway_port
    elif kind == "ServiceEntry":
        for port in spec.get("ports") or []:
            if port.get("targetPort") in port_map:
                port["targetPort"] = port_map[port["targetPort"]]
            elif "targetPort" not in port and port.get("number") in port_map:
                port["targetPort"] = port_map[port["number"]]
        for endpoint in spec.get("endpoints") or []:
            ports = endpoint.get("ports") or {}
            for name, number in ports.items():
                if number in port_map:
                    ports[name] = port_map[number]


def book_commands(workdir: Path, gateway_port: int) -> str:
    lines = [
        f"telnet localhost {gateway_port}        # banner, then type: hello Sam",
    ]
    for host in HOSTS:
        chain = certs.layout(workdir, host).ca_chain
        lines.append(
            f"curl https://{host}:{gateway_port}/ --cacert {chain} "
            f"--resolve {host}:{gateway_port}:127.0.0.1"
        )
    return "\n".join(lines)


def _say(text: str) -> None:
    print(text, flush=True)


def run(args: argparse.Namespace, config_files: Sequence[str] = CONFIG_FILES,
        base: Path = HERE) -> int:
    """The walkthrough; ``config_files`` (relative to ``base``) are the gateway's YAML."""
    workdir = Path(args.workdir).resolve()
    echo_port = args.echo_port
    service_ports = tuple(args.service_ports)
    config_paths = [(base / name).resolve() for name in config_files]
    if not args.no_gateway:
        missing = [str(p) for p in config_paths if not p.is_file()]
        if missing:
            _say("missing config files: " + ", ".join(missing))
            return 2

    wanted = [echo_port, *service_ports] + ([] if args.no_gateway else [args.port])
    if len(set(wanted)) != len(wanted):
        _say(f"the ports must all differ, got {wanted}")
        return 2
    busy = [port for port in wanted if port_in_use(port)]
    if busy:
        ports = ", ".join(map(str, busy))
        _say(f"port(s) {ports} on 127.0.0.1 already in use (another walkthrough still running?)")
        return 1

    _say(f"Writing certificates under {workdir}")
    chains = [certs.generate(workdir, host) for host in HOSTS]

    children = Children()
    base_env = dict(os.environ)
    logs = workdir / "logs"
    try:
        echo_env = dict(base_env, TCP_PORT=str(echo_port), BIND_ADDR="127.0.0.1", **ECHO_ENV)
        echo = children.start(
            "tcp-echo-service",
            [sys.executable, str(HERE / "backends" / "echo_server.py")],
            echo_env,
            logs / "tcp-echo-service.log",
        )
        started = [("tcp-echo-service", echo, echo_port)]
        for n, (paths, port) in enumerate(zip(chains, service_ports), start=1):
            name = f"simple-tls-service-{n}"
            env = dict(
                base_env,
                LISTEN_ADDR=f"127.0.0.1:{port}",
                TLS_CERT_LOCATION=str(paths.leaf_cert),
                TLS_KEY_LOCATION=str(paths.leaf_key),
                NAME=name,
                MESSAGE=f"Hello from {name}!!!",
            )
            proc = children.start(
                name,
                [sys.executable, str(HERE / "backends" / "fake_service.py")],
                env,
                logs / f"{name}.log",
            )
            started.append((name, proc, port))
        for name, proc, port in started:
            wait_for_port(port, proc, name, _READY_TIMEOUT_SECONDS)
            _say(f"{name}: pid {proc.pid}, listening on 127.0.0.1:{port}")
        _say(f"Backend logs: {logs}")

        gateway = None
        if not args.no_gateway:
            port_map = {ECHO_PORT: echo_port, **dict(zip(SERVICE_PORTS, service_ports))}
            if args.port != GATEWAY_PORT or any(k != v for k, v in port_map.items()):
                config_paths = rewrite_configs(
                    config_paths, workdir / "config", port_map, args.port, base
                )
            argv = ["twistd", "-n", "--pidfile=", "tsgate"]
            for path in config_paths:
                argv += ["--config", str(path)]
            # Loopback only, like the backends: the book's commands use 127.0.0.1.
            argv += ["--inspect-timeout", INSPECT_TIMEOUT, "--bind", "127.0.0.1",
                     "--metrics", "tcp:15090:interface=127.0.0.1"]
            argv += args.gateway_arg
            _say("Starting the gateway: " + " ".join(argv))
            # The same twistd, run by this interpreter (no reliance on PATH).
            launcher = [sys.executable, "-c", "from twisted.scripts.twistd import run; run()"]
            gateway = children.start("gateway", launcher + argv[1:], base_env, None)
            wait_for_port(args.port, gateway, "gateway", _READY_TIMEOUT_SECONDS)
            _say(f"gateway: pid {gateway.pid}, listening on 127.0.0.1:{args.port}")

        _say("")
        if gateway is not None:
            _say("The book's commands, with local paths:")
            _say(book_commands(workdir, args.port))
        else:
            _say("Backends only (--no-gateway). Talk to them directly:")
            _say(f"telnet localhost {echo_port}")
            for host, paths, port in zip(HOSTS, chains, service_ports):
                _say(
                    f"curl https://{host}:{port}/ --cacert {paths.ca_chain} "
                    f"--resolve {host}:{port}:127.0.0.1"
                )
        _say("Press Ctrl-C to stop.")

        while True:
            gone = children.exited()
            if gone is not None:
                _say(f"{gone[0]} exited with status {gone[1]}; stopping everything")
                return gone[1] or 1
            time.sleep(0.2)
    except (KeyboardInterrupt, Stop):
        _say("Stopping.")
        return 0
    except RuntimeError as e:
        _say(f"error: {e}")
        return 1
    finally:
        # A second Ctrl-C or SIGTERM must not cut the clean-up short.
        for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(signum, signal.SIG_IGN)
        children.stop_all()


def _raise_stop(signum: int, frame: object) -> None:
    raise Stop(signal.Signals(signum).name)


def main(argv: Optional[Sequence[str]] = None, config_files: Sequence[str] = CONFIG_FILES,
         base: Path = HERE,
         description: str = "Run Istio in Action ch.4 locally: backends + tsgate with the "
                            "book's YAML") -> int:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument(
        "--workdir",
        default=os.path.join("run", "istioinaction"),
        help="where certificates, logs and rewritten configs go (default: ./run/istioinaction)",
    )
    parser.add_argument(
        "--port", type=int, default=GATEWAY_PORT, help=f"gateway port (default {GATEWAY_PORT})"
    )
    parser.add_argument(
        "--echo-port", type=int, default=ECHO_PORT, help=f"echo server port (default {ECHO_PORT})"
    )
    parser.add_argument(
        "--service-ports",
        type=int,
        nargs=2,
        default=list(SERVICE_PORTS),
        metavar=("PORT1", "PORT2"),
        help="ports of simple-tls-service-1 and -2 (default 9081 9082)",
    )
    parser.add_argument(
        "--no-gateway", action="store_true", help="start only the backends (for tests)"
    )
    parser.add_argument(
        "--gateway-arg",
        action="append",
        default=[],
        metavar="ARG",
        help="extra option for twistd tsgate, repeatable (e.g. --gateway-arg=--admin=none)",
    )
    args = parser.parse_args(argv)
    for port in (args.port, args.echo_port, *args.service_ports):
        if not 0 < port < 65536:
            parser.error(f"ports must be 1-65535 (the walkthrough prints them), got {port}")
    # SIGINT explicitly too: a shell without job control starts background
    # commands with SIGINT ignored, and Python keeps an ignored SIGINT ignored,
    # so `kill -INT` would otherwise do nothing there.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, _raise_stop)
    signal.signal(signal.SIGHUP, _raise_stop)
    return run(args, config_files, base)


if __name__ == "__main__":
    sys.exit(main())
