"""
(Re)capture the named ClientHello samples in this folder from real clients.

A loopback TCP server accepts one connection, records what the client sends
until it falls silent (a TLS client sends its hello and then waits for the
server), and closes; each client below is run against it and its bytes are
saved as ``<name>.bin``. ``samples.json`` records the command and tool
versions behind each file. The clients fail (the server never answers):
that is expected. Three samples are real non-TLS first bytes (HTTP, a
PostgreSQL SSLRequest, an SSH banner) from curl, psql and ssh. For the
openssl samples, ``<name>.trace.txt`` keeps OpenSSL's own decoding
(``-trace``) of the very hello in ``<name>.bin``.

The .bin files are committed so the tests never need to recapture; run
this only to refresh them (it needs python3, openssl, curl, psql, ssh):

    python tests/data/tls/capture.py [NAME ...]

Derived samples (fragmented, split, too large, not TLS, ...) are not here:
``tests/hints/tls_samples.py`` builds them from these real ones.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
from pathlib import Path

HERE = Path(__file__).resolve().parent
IDLE_SECONDS = 0.5
CLIENT_TIMEOUT = 10.0

#: Python's ssl module as a client: ``{sni!r}``, ``{alpn!r}``, ``{tls12}``.
_PYTHON_CLIENT = """
import socket, ssl, sys
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
ctx.check_hostname = False
ctx.verify_mode = ssl.CERT_NONE
if {tls12}:
    ctx.maximum_version = ssl.TLSVersion.TLSv1_2
if {alpn!r}:
    ctx.set_alpn_protocols({alpn!r})
sock = socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=5)
try:
    ctx.wrap_socket(sock, server_hostname={sni!r})
except (OSError, ssl.SSLError):
    pass
"""


def _python(sni: str | None, alpn: list[str] | None = None, tls12: bool = False) -> list[str]:
    code = _PYTHON_CLIENT.format(sni=sni, alpn=alpn or [], tls12=tls12)
    return [sys.executable, "-c", code, "{port}"]


def _openssl(*args: str) -> list[str]:
    # -trace: OpenSSL's own decoding of the hello it sent, saved beside the
    # bytes so the tests can check the parser against an independent decoder.
    return ["openssl", "s_client", "-trace", "-connect", "127.0.0.1:{port}", *args]


def _curl(host: str, *args: str) -> list[str]:
    return [
        "curl",
        "-sk",
        "--max-time",
        "5",
        "--resolve",
        f"{host}:{{port}}:127.0.0.1",
        *args,
        f"https://{host}:{{port}}/",
    ]


#: name -> (what it shows, command); ``{port}`` is replaced by the server's.
CLIENTS: dict[str, tuple[str, list[str]]] = {
    "valid_sni_python": (
        "Python ssl, TLS 1.3 default, SNI",
        _python("valid.example.test"),
    ),
    "no_sni": (
        "Python ssl connecting by IP with server_hostname=None: no server_name",
        _python(None),
    ),
    "alpn_h2": (
        "Python ssl with ALPN h2,http/1.1 and SNI",
        _python("alpn.example.test", ["h2", "http/1.1"]),
    ),
    "python_tls12": (
        "Python ssl limited to TLS 1.2 (no supported_versions extension)",
        _python("tls12.example.test", tls12=True),
    ),
    "openssl_sni": (
        "openssl s_client -servername",
        _openssl("-servername", "openssl.example.test"),
    ),
    "openssl_no_sni": (
        "openssl s_client -noservername",
        _openssl("-noservername"),
    ),
    "openssl_alpn": (
        "openssl s_client -alpn h2,http/1.1",
        _openssl("-servername", "alpn.openssl.example.test", "-alpn", "h2,http/1.1"),
    ),
    "openssl_tls12": (
        "openssl s_client -tls1_2",
        _openssl("-tls1_2", "-servername", "tls12.openssl.example.test"),
    ),
    "openssl_tls13": (
        "openssl s_client -tls1_3",
        _openssl("-tls1_3", "-servername", "tls13.openssl.example.test"),
    ),
    "openssl_trailing_dot": (
        "openssl s_client with a mixed-case SNI with a trailing dot",
        _openssl("-servername", "Mixed.Example.TEST."),
    ),
    "valid_sni_curl": (
        "curl --resolve: SNI and ALPN h2,http/1.1",
        _curl("curl.example.test"),
    ),
    "curl_tls12": (
        "curl limited to TLS 1.2",
        _curl("curl12.example.test", "--tlsv1.2", "--tls-max", "1.2", "--http1.1"),
    ),
    # Not TLS at all: what other clients send first on a TLS port.
    "not_tls_http": (
        "curl speaking plain HTTP/1.1",
        ["curl", "-s", "--max-time", "5", "http://127.0.0.1:{port}/"],
    ),
    "not_tls_postgres_sslrequest": (
        "psql sslmode=require: PostgreSQL SSLRequest",
        [
            "psql",
            "-w",
            "host=127.0.0.1 port={port} user=probe dbname=probe sslmode=require"
            " gssencmode=disable connect_timeout=5",
        ],
    ),
    "not_tls_ssh": (
        "ssh client identification banner",
        [
            "ssh",
            "-p",
            "{port}",
            "-o",
            "BatchMode=yes",
            "-o",
            "StrictHostKeyChecking=no",
            "-o",
            "UserKnownHostsFile=/dev/null",
            "-o",
            "ConnectTimeout=5",
            "probe@127.0.0.1",
            "true",
        ],
    ),
}


def _record_first_bytes(server: socket.socket, out: list[bytes]) -> None:
    conn, _ = server.accept()
    with conn:
        conn.settimeout(IDLE_SECONDS)
        chunks = []
        while True:
            try:
                chunk = conn.recv(65536)
            except socket.timeout:
                break
            if not chunk:
                break
            chunks.append(chunk)
        out.append(b"".join(chunks))


def capture(command: list[str]) -> tuple[bytes, str]:
    """
    Run ``command`` against a one-shot recording server; return the bytes it
    sent and what it printed on stdout.
    """
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(1)
        server.settimeout(CLIENT_TIMEOUT)
        port = server.getsockname()[1]
        got: list[bytes] = []
        recorder = threading.Thread(target=_record_first_bytes, args=(server, got))
        recorder.start()
        argv = [arg.replace("{port}", str(port)) for arg in command]
        done = subprocess.run(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            timeout=CLIENT_TIMEOUT,
            check=False,
        )
        recorder.join(CLIENT_TIMEOUT)
    if not got or not got[0]:
        raise RuntimeError(f"nothing captured from {argv}")
    return got[0], done.stdout.decode("utf-8", "replace")


def hello_trace(stdout: str) -> str:
    """The first ``Sent Record`` block of ``openssl s_client -trace``: the hello."""
    blocks = stdout.split("Sent Record\n")
    if len(blocks) < 2 or "ClientHello" not in blocks[1]:
        raise RuntimeError("no ClientHello in the openssl trace")
    return "Sent Record\n" + blocks[1].rstrip() + "\n"


def _versions() -> dict[str, str]:
    def first_line(argv: list[str]) -> str:
        done = subprocess.run(argv, capture_output=True, text=True, check=False)
        return done.stdout.splitlines()[0] if done.stdout else ""

    import ssl

    return {
        "python": sys.version.split()[0] + " / " + ssl.OPENSSL_VERSION,
        "openssl": first_line(["openssl", "version"]),
        "curl": first_line(["curl", "--version"]),
        "psql": first_line(["psql", "--version"]),
        "ssh": subprocess.run(["ssh", "-V"], capture_output=True, text=True).stderr.strip(),
    }


def main(names: list[str]) -> None:
    manifest_path = HERE / "samples.json"
    manifest = json.loads(manifest_path.read_text()) if manifest_path.exists() else {}
    versions = _versions()
    for name in names or list(CLIENTS):
        what, command = CLIENTS[name]
        data, stdout = capture(command)
        (HERE / f"{name}.bin").write_bytes(data)
        if command[0] == "openssl":
            (HERE / f"{name}.trace.txt").write_text(hello_trace(stdout))
        tool = "python" if command[0] == sys.executable else command[0]
        manifest[name] = {
            "what": what,
            "command": ["python3" if a == sys.executable else a for a in command],
            "tool": versions[tool],
            "bytes": len(data),
        }
        print(f"{name}: {len(data)} bytes")
    manifest_path.write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")


if __name__ == "__main__":
    main(sys.argv[1:])
