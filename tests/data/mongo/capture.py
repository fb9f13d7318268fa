"""
Regenerate the MongoDB samples in this folder from a real client.

MongoDB's server is not in Debian, so the *client* is real (pymongo) and the
server is a small loopback stand-in that answers just enough for pymongo to
carry on: hello/isMaster, insert, find/getMore (with a cursor over what was
inserted), update, delete, count (aggregate), drop, endSessions, and
``CommandNotFound`` for the rest. Both directions are recorded exactly as
they crossed the socket (read boundaries included).

Usage: ``pip install pymongo && python3 tests/data/mongo/capture.py`` (pymongo
4: OP_MSG handshake, plus a zlib-compressed session) and, for the legacy
OP_QUERY/OP_REPLY handshake, Debian's pymongo 3.11: ``apt-get install
python3-pymongo && /usr/bin/python3 tests/data/mongo/capture.py``.

Files written (``<name>`` is ``pymongo_session``, ``pymongo_zlib`` or
``pymongo3_session``):

- ``<name>_client.bin`` / ``<name>_server.bin``: each direction's bytes;
- ``<name>.trace``: the interleaving, records of one direction byte
  (``C`` client->server, ``S`` server->client), a big-endian uint32 length
  and the bytes, in the order they crossed the socket;
- ``pymongo_hello.bin`` / ``pymongo3_hello.bin``: the first client message
  of the session (the handshake, OP_MSG or OP_QUERY, with client metadata).
"""

from __future__ import annotations

import datetime
import os
import socket
import struct
import threading
import zlib
from typing import Any

import bson
import pymongo

HERE = os.path.dirname(os.path.abspath(__file__))
OP_REPLY, OP_QUERY, OP_COMPRESSED, OP_MSG = 1, 2004, 2012, 2013


class Connection(threading.Thread):
    """One accepted connection: answer requests, record both directions."""

    def __init__(self, server: CaptureServer, sock: socket.socket, number: int) -> None:
        super().__init__(daemon=True)
        self.server, self.sock, self.number = server, sock, number
        self.trace: list[tuple[str, bytes]] = []
        self.next_id = 1000 * number

    def recv_exact(self, buf: bytearray, n: int) -> bool:
        while len(buf) < n:
            chunk = self.sock.recv(65536)
            if not chunk:
                return False
            self.trace.append(("C", chunk))
            buf += chunk
        return True

    def run(self) -> None:
        buf = bytearray()
        try:
            while True:
                if not self.recv_exact(buf, 16):
                    return
                (length,) = struct.unpack_from("<i", buf)
                if not self.recv_exact(buf, length):
                    return
                message, buf = bytes(buf[:length]), buf[length:]
                reply = self.answer(message)
                if reply is not None:
                    self.trace.append(("S", reply))
                    self.sock.sendall(reply)
        except OSError:
            return
        finally:
            self.sock.close()

    def answer(self, message: bytes) -> bytes | None:
        _length, request_id, _to, op = struct.unpack_from("<iiii", message)
        compressed = op == OP_COMPRESSED
        if compressed:
            op, _size, _compressor = struct.unpack_from("<iiB", message, 16)
            body = zlib.decompress(message[25:])
        else:
            body = message[16:]
        if op == OP_QUERY:
            ns_end = body.index(b"\0", 4)
            query = bson.decode(body[ns_end + 9 :])
            doc = self.server.command(query.get("$query", query), self)
            payload = struct.pack("<iqii", 8, 0, 0, 1) + bson.encode(doc)
            return self.frame(OP_REPLY, request_id, payload, compressed)
        if op != OP_MSG:
            return None
        (flags,) = struct.unpack_from("<I", body)
        pos, end = 4, len(body) - (4 if flags & 1 else 0)
        command: dict[str, Any] = {}
        while pos < end:
            kind = body[pos]
            pos += 1
            (n,) = struct.unpack_from("<i", body, pos)
            if kind == 0:
                command.update(bson.decode(body[pos : pos + n]))
            else:
                ident_end = body.index(b"\0", pos + 4)
                ident = body[pos + 4 : ident_end].decode()
                command[ident] = list(bson.decode_all(body[ident_end + 1 : pos + n]))
            pos += n
        doc = self.server.command(command, self)
        if flags & 2:  # moreToCome: the client expects no reply
            return None
        payload = struct.pack("<I", 0) + b"\0" + bson.encode(doc)
        return self.frame(OP_MSG, request_id, payload, compressed)

    def frame(self, op: int, response_to: int, payload: bytes, compressed: bool) -> bytes:
        self.next_id += 1
        if compressed:
            payload = struct.pack("<iiB", op, len(payload), 2) + zlib.compress(payload)
            op = OP_COMPRESSED
        return struct.pack("<iiii", 16 + len(payload), self.next_id, response_to, op) + payload


class CaptureServer:
    """Accept loop plus the in-memory 'database' the answers come from."""

    def __init__(self, compression: bool) -> None:
        self.compression = compression
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.connections: list[Connection] = []
        self.collections: dict[str, list[dict[str, Any]]] = {}
        self.cursors: dict[int, list[dict[str, Any]]] = {}
        self.lock = threading.Lock()
        threading.Thread(target=self.accept, daemon=True).start()

    def accept(self) -> None:
        while True:
            try:
                sock, _ = self.listener.accept()
            except OSError:
                return
            conn = Connection(self, sock, len(self.connections) + 1)
            self.connections.append(conn)
            conn.start()

    def command(self, cmd: dict[str, Any], conn: Connection) -> dict[str, Any]:
        name = next(iter(cmd))
        with self.lock:
            return self._command(name, cmd, conn)

    def _command(self, name: str, cmd: dict[str, Any], conn: Connection) -> dict[str, Any]:
        ok = {"ok": 1.0}
        if name.lower() in ("hello", "ismaster"):
            reply = {
                "isWritablePrimary": True,
                "ismaster": True,
                "maxBsonObjectSize": 16777216,
                "maxMessageSizeBytes": 48000000,
                "maxWriteBatchSize": 100000,
                "localTime": datetime.datetime.now(datetime.timezone.utc),
                "logicalSessionTimeoutMinutes": 30,
                "connectionId": conn.number,
                "minWireVersion": 0,
                "maxWireVersion": 21,
                "readOnly": False,
            }
            if self.compression and "zlib" in cmd.get("compression", []):
                reply["compression"] = ["zlib"]
            return {**reply, **ok}
        coll = f"{cmd.get('$db')}.{cmd.get(name)}"
        if name == "insert":
            docs = cmd.get("documents", [])
            self.collections.setdefault(coll, []).extend(docs)
            return {"n": len(docs), **ok}
        if name == "find":
            docs = list(self.collections.get(coll, []))
            size = cmd.get("batchSize", len(docs)) or len(docs)
            cursor_id = 0
            if len(docs) > size:
                cursor_id = 7700 + len(self.cursors)
                self.cursors[cursor_id] = docs[size:]
            return {"cursor": {"id": cursor_id, "ns": coll, "firstBatch": docs[:size]}, **ok}
        if name == "getMore":
            rest = self.cursors.pop(cmd["getMore"], [])
            ns = f"{cmd.get('$db')}.{cmd.get('collection')}"
            return {"cursor": {"id": 0, "ns": ns, "nextBatch": rest}, **ok}
        if name == "aggregate":  # count_documents
            count = len(self.collections.get(coll, []))
            batch = [{"_id": 1, "n": count}] if count else []
            return {"cursor": {"id": 0, "ns": coll, "firstBatch": batch}, **ok}
        if name in ("update", "delete"):
            return {"n": 1, "nModified": 1, **ok} if name == "update" else {"n": 1, **ok}
        if name == "drop":
            if self.collections.pop(coll, None) is None:
                return {
                    "ok": 0.0,
                    "errmsg": "ns not found",
                    "code": 26,
                    "codeName": "NamespaceNotFound",
                }
            return {"ns": coll, **ok}
        if name in ("endSessions", "ping"):
            return ok
        return {
            "ok": 0.0,
            "errmsg": f"no such command: '{name}'",
            "code": 59,
            "codeName": "CommandNotFound",
        }


def exercise(client: pymongo.MongoClient) -> None:
    """What an application does: writes, reads with a getMore, errors."""
    db = client["shop"]
    db.users.insert_one({"name": "ada", "age": 36})
    db.users.insert_many([{"name": f"user{i}", "age": 20 + i} for i in range(5)])
    list(db.users.find({"age": {"$gt": 21}}, batch_size=2))
    db.users.update_one({"name": "ada"}, {"$set": {"age": 37}})
    db.users.delete_one({"name": "user0"})
    db.users.count_documents({})
    db.get_collection("audit", write_concern=pymongo.WriteConcern(w=0)).insert_one({"e": 1})
    try:
        db.command("noSuchCommand")
    except pymongo.errors.OperationFailure:
        pass
    db.users.drop()
    db.missing.drop()  # the server answers NamespaceNotFound; pymongo ignores it
    db.command("ping")


def capture(name: str, compression: bool) -> None:
    server = CaptureServer(compression)
    options: dict[str, Any] = {"compressors": "zlib"} if compression else {}
    client: pymongo.MongoClient = pymongo.MongoClient(
        "127.0.0.1",
        server.port,
        directConnection=True,
        appName="tsgate-capture",
        serverSelectionTimeoutMS=5000,
        heartbeatFrequencyMS=500,
        **options,
    )
    exercise(client)
    client.close()
    server.listener.close()
    for conn in server.connections:
        conn.join(5)
    # The application's connection is the one that carried the inserts.
    session = max(server.connections, key=lambda c: sum(len(b) for d, b in c.trace if d == "C"))
    write(name, session.trace)
    if not compression:
        client_bytes = b"".join(b for d, b in session.trace if d == "C")
        (first_len,) = struct.unpack_from("<i", client_bytes)
        save(name.replace("_session", "_hello.bin"), client_bytes[:first_len])


def write(name: str, trace: list[tuple[str, bytes]]) -> None:
    save(f"{name}_client.bin", b"".join(b for d, b in trace if d == "C"))
    save(f"{name}_server.bin", b"".join(b for d, b in trace if d == "S"))
    save(
        f"{name}.trace",
        b"".join(d.encode() + struct.pack(">I", len(b)) + b for d, b in trace),
    )


def save(filename: str, data: bytes) -> None:
    with open(os.path.join(HERE, filename), "wb") as f:
        f.write(data)
    print(f"{filename}: {len(data)} bytes")


if __name__ == "__main__":
    print("pymongo", pymongo.version)
    if pymongo.version_tuple[0] >= 4:
        capture("pymongo_session", compression=False)
        capture("pymongo_zlib", compression=True)
    else:  # 3.x: the handshake is a legacy OP_QUERY isMaster answered by OP_REPLY
        capture("pymongo3_session", compression=False)
