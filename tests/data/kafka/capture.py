"""
Regenerate the Kafka samples in this folder from a real client.

Kafka is not in Debian, so the *client* is real (kafka-python) and the
broker is a small loopback stand-in that answers ApiVersions, Metadata and
Produce (encoded with kafka-python's own message classes, at the highest
versions both sides know, so most requests use the flexible header v2)
and nothing else. Both directions are recorded exactly as they crossed the
socket.

Usage: ``pip install kafka-python && python3 tests/data/kafka/capture.py``

Files written:

- ``kafka_python_apiversions.bin``: the first request of a connection
  (ApiVersions v4 from kafka-python 3.x: flexible, header v2);
- ``kafka_python_producer_client.bin`` / ``_server.bin`` / ``.trace``: the
  producer's connection to the partition leader: ApiVersions, Metadata,
  Produce with acks=1 (answered);
- ``kafka_python_acks0_*``: the same from a producer with acks=0 (its
  Produce requests are never answered);
- ``kafka_python_legacy_*``: a producer pinned to ``api_version=(2, 0, 0)``:
  no ApiVersions, non-flexible Metadata/Produce (request header v1).
- ``kafka_python_bootstrap_client.bin`` / ``_server.bin`` / ``.trace``: the
  bootstrap connection (ApiVersions, Metadata).

``.trace`` records: one direction byte (``C`` client->server, ``S``
server->client), a big-endian uint32 length, the bytes; in socket order.
"""

from __future__ import annotations

import os
import socket
import struct
import threading
from typing import Any

import kafka
from kafka.protocol.metadata import (
    ApiVersionsRequest,
    ApiVersionsResponse,
    MetadataRequest,
    MetadataResponse,
)
from kafka.protocol.producer import ProduceRequest, ProduceResponse

HERE = os.path.dirname(os.path.abspath(__file__))
TOPIC = "orders"
REQUESTS: dict[int, Any] = {
    cls.API_KEY: cls for cls in (ApiVersionsRequest, MetadataRequest, ProduceRequest)
}


class Broker:
    """Accepts connections; each is answered and recorded by a thread."""

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.traces: list[list[tuple[str, bytes]]] = []
        threading.Thread(target=self.accept, daemon=True).start()

    def accept(self) -> None:
        while True:
            try:
                sock, _ = self.listener.accept()
            except OSError:
                return
            trace: list[tuple[str, bytes]] = []
            self.traces.append(trace)
            threading.Thread(target=self.serve, args=(sock, trace), daemon=True).start()

    def serve(self, sock: socket.socket, trace: list[tuple[str, bytes]]) -> None:
        buf = bytearray()
        try:
            while True:
                while len(buf) < 4 or len(buf) < 4 + struct.unpack_from(">i", buf)[0]:
                    chunk = sock.recv(65536)
                    if not chunk:
                        return
                    trace.append(("C", chunk))
                    buf += chunk
                size = struct.unpack_from(">i", buf)[0]
                frame, buf = bytes(buf[4 : 4 + size]), buf[4 + size :]
                reply = self.answer(frame)
                if reply is not None:
                    trace.append(("S", reply))
                    sock.sendall(reply)
        except OSError:
            return
        finally:
            sock.close()

    def answer(self, frame: bytes) -> bytes | None:
        api_key, version = struct.unpack_from(">hh", frame)
        request = REQUESTS[api_key][version].decode(frame, header=True)
        correlation_id = request.header.correlation_id
        response: Any
        if api_key == ApiVersionsRequest.API_KEY:
            keys = [
                ApiVersionsResponse.ApiVersion(
                    api_key=cls.API_KEY, min_version=0, max_version=cls.max_version
                )
                for cls in REQUESTS.values()
            ]
            response = ApiVersionsResponse[version](error_code=0, api_keys=keys, throttle_time_ms=0)
        elif api_key == MetadataRequest.API_KEY:
            broker = MetadataResponse.MetadataResponseBroker(
                node_id=0, host="127.0.0.1", port=self.port, rack=None
            )
            partition = MetadataResponse.MetadataResponseTopic.MetadataResponsePartition(
                error_code=0,
                partition_index=0,
                leader_id=0,
                leader_epoch=0,
                replica_nodes=[0],
                isr_nodes=[0],
                offline_replicas=[],
            )
            topic = MetadataResponse.MetadataResponseTopic(
                error_code=0, name=TOPIC, is_internal=False, partitions=[partition]
            )
            response = MetadataResponse[version](
                throttle_time_ms=0,
                brokers=[broker],
                cluster_id="tsgate-capture",
                controller_id=0,
                topics=[topic],
            )
        else:
            if request.acks == 0:
                return None
            part = ProduceResponse.TopicProduceResponse.PartitionProduceResponse(
                index=0, error_code=0, base_offset=0
            )
            response = ProduceResponse[version](
                responses=[
                    ProduceResponse.TopicProduceResponse(name=TOPIC, partition_responses=[part])
                ],
                throttle_time_ms=0,
            )
        response.with_header(correlation_id=correlation_id)
        return bytes(response.encode(header=True, framed=True))


def main() -> None:
    print("kafka-python", kafka.__version__)
    broker = Broker()
    bootstrap = f"127.0.0.1:{broker.port}"
    common = {"bootstrap_servers": bootstrap, "enable_idempotence": False}
    producer = kafka.KafkaProducer(client_id="tsgate-capture", acks=1, **common)
    for i in range(3):
        producer.send(TOPIC, f"order {i}".encode()).get(timeout=10)
    producer.close()
    answered = list(broker.traces)
    quiet = kafka.KafkaProducer(client_id="tsgate-fire-and-forget", acks=0, **common)
    quiet.send(TOPIC, b"no ack").get(timeout=10)
    quiet.flush()
    quiet.close()
    unanswered = broker.traces[len(answered) :]
    # api_version pinned to 2.0: no ApiVersions, pre-flexible versions (header v1).
    legacy = kafka.KafkaProducer(client_id="tsgate-legacy", acks=1, api_version=(2, 0, 0), **common)
    legacy.send(TOPIC, b"old style").get(timeout=10)
    legacy.close()
    pinned = broker.traces[len(answered) + len(unanswered) :]
    broker.listener.close()
    first = b"".join(b for d, b in answered[0] if d == "C")
    save("kafka_python_apiversions.bin", first[: 4 + struct.unpack_from(">i", first)[0]])
    write("kafka_python_bootstrap", answered[0])
    write("kafka_python_producer", leader(answered))
    write("kafka_python_acks0", leader(unanswered))
    write("kafka_python_legacy", leader(pinned))


def leader(traces: list[list[tuple[str, bytes]]]) -> list[tuple[str, bytes]]:
    """The connection that carried Produce requests (api_key 0)."""
    for trace in traces:
        stream = b"".join(b for d, b in trace if d == "C")
        pos = 0
        while pos + 6 <= len(stream):
            if stream[pos + 4 : pos + 6] == b"\0\0":
                return trace
            pos += 4 + struct.unpack_from(">i", stream, pos)[0]
    raise SystemExit("no connection carried a Produce request")


def write(name: str, trace: list[tuple[str, bytes]]) -> None:
    save(f"{name}_client.bin", b"".join(b for d, b in trace if d == "C"))
    save(f"{name}_server.bin", b"".join(b for d, b in trace if d == "S"))
    save(f"{name}.trace", b"".join(d.encode() + struct.pack(">I", len(b)) + b for d, b in trace))


def save(filename: str, data: bytes) -> None:
    with open(os.path.join(HERE, filename), "wb") as f:
        f.write(data)
    print(f"{filename}: {len(data)} bytes")


if __name__ == "__main__":
    main()
