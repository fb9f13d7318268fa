"""
(Re)capture the MQTT CONNECT samples from a real client (paho-mqtt).

A loopback server accepts one connection, records what the client sends
until it falls silent (an MQTT client sends CONNECT and waits for CONNACK),
and closes. Run: ``python samples/capture.py`` (needs ``pip install paho-mqtt``).
"""

from __future__ import annotations

import socket
import threading
from pathlib import Path

import paho.mqtt.client as mqtt

HERE = Path(__file__).resolve().parent


def record_one(listener: socket.socket, out: list[bytes]) -> None:
    conn, _ = listener.accept()
    conn.settimeout(1.0)
    data = b""
    try:
        while True:
            chunk = conn.recv(65536)
            if not chunk:
                break
            data += chunk
    except socket.timeout:
        pass
    conn.close()
    out.append(data)


def capture(name: str, protocol: int, client_id: str, **kwargs: object) -> None:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    out: list[bytes] = []
    t = threading.Thread(target=record_one, args=(listener, out))
    t.start()
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id,
                         protocol=protocol)
    if kwargs.get("username"):
        client.username_pw_set(str(kwargs["username"]), "not-logged")
    client.connect("127.0.0.1", listener.getsockname()[1], keepalive=30)
    client.loop(timeout=1.5)
    t.join()
    client.socket() and client.disconnect()
    listener.close()
    (HERE / f"{name}.bin").write_bytes(out[0])
    print(name, len(out[0]), out[0][:40])


if __name__ == "__main__":
    capture("paho_v311_connect", mqtt.MQTTv311, "sensor-42")
    capture("paho_v5_connect", mqtt.MQTTv5, "sensor-5", username="meter")
