"""
The Mongo and Kafka observers inside the real gateway. No MongoDB or Kafka
server is packaged for Debian, so each test replays a conversation recorded
from a real client (pymongo, kafka-python; tests/data/) through the gateway:
the test's client side sends the client's records and waits for the
server's, a backend does the opposite, record by record in socket order.
The counters the admin /stats serves must be the ones the unit tests expect
from the same conversation.
"""

from __future__ import annotations

import socket
import threading
from pathlib import Path

import pytest

from tests.e2e.test_protocol_observers import stats, tcp_gateway
from tests.plugins.test_kafka import TRACES as KAFKA_COUNTERS
from tests.plugins.test_mongo import SESSION_COUNTERS as MONGO_COUNTERS
from tests.support.gateway import GatewayProcess, free_port, wait_for_port, write_service_entries
from tests.support.traces import DATA, Trace, read_trace

pytestmark = pytest.mark.e2e


def recv_exactly(sock: socket.socket, n: int) -> bytes:
    got = b""
    while len(got) < n:
        chunk = sock.recv(n - len(got))
        if not chunk:
            raise ConnectionError(f"closed after {len(got)} of {n} bytes")
        got += chunk
    return got


def play(sock: socket.socket, trace: Trace, me: str) -> None:
    """Send my records, expect the other side's, in the recorded order."""
    for side, data in trace:
        if side == me:
            sock.sendall(data)
        else:
            assert recv_exactly(sock, len(data)) == data


class ReplayBackend:
    def __init__(self, trace: Trace) -> None:
        self.trace = trace
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.errors: list[BaseException] = []
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        conn, _ = self.sock.accept()
        with conn:
            conn.settimeout(20)
            try:
                play(conn, self.trace, "S")
            except BaseException as exc:  # reported by the test
                self.errors.append(exc)

    def close(self) -> None:
        self.thread.join(20)
        self.sock.close()


@pytest.mark.parametrize("protocol,port_name,trace_file,expected", [
    ("mongo", "mongo-db", "mongo/pymongo_session.trace", MONGO_COUNTERS),
    ("kafka", "kafka-broker", "kafka/kafka_python_producer.trace",
     KAFKA_COUNTERS["kafka_python_producer.trace"]),
])
def test_replayed_conversation_is_counted_by_the_gateway(
        tmp_path: Path, protocol: str, port_name: str, trace_file: str,
        expected: dict[str, int]) -> None:
    trace = read_trace(DATA / trace_file)
    backend = ReplayBackend(trace)
    admin = free_port()
    try:
        routes = tcp_gateway(tmp_path / "gw.yaml", 9092, port_name, "backend", 9000)
        entries = write_service_entries(tmp_path / "se.yaml", {"backend": (9000, backend.port)})
        with GatewayProcess([str(routes), str(entries)], [9092],
                            extra=["--admin", f"tcp:{admin}:interface=127.0.0.1"]) as gw:
            wait_for_port(admin)
            with socket.create_connection(("127.0.0.1", gw.port(9092)), timeout=20) as s:
                try:
                    play(s, trace, "C")
                except ConnectionError as exc:
                    raise AssertionError(gw.text()) from exc
            backend.close()
            assert backend.errors == []
            line = gw.wait_access_lines(1)[-1]
            counts = stats(admin, protocol)
        for name, value in expected.items():
            assert counts.get(name) == value, (name, counts)
        assert "decode_error" not in counts
        assert line.split()[9] == str(sum(len(d) for side, d in trace if side == "C"))
    finally:
        backend.sock.close()
