"""
(Re)capture the protocol samples in ``tests/data/{postgres,redis,mysql}/``
from real clients talking to real servers through a :class:`RecordingRelay`.

    python tests/support/capture_samples.py postgres|redis|mysql ...

Each sample is a whole conversation (``<name>.cap``, see ``capture.py``);
a few first-message samples are also cut out as ``<name>.bin`` (the
client's first message, byte for byte as the client sent it).
``samples.json`` in each folder records the command and versions behind
every file. The files are committed: tests never need to recapture.

Needs: PostgreSQL (any installed version) + psql, redis-server + redis-cli + redis-benchmark,
``apt-get install mariadb-server mariadb-client``, and
``pip install -e ".[capture]"`` (psycopg, PyMySQL, mysql-connector-python).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

ROOT = Path(__file__).resolve().parents[2]
# Run as a script, this folder is sys.path[0]; the repository root must win.
sys.path[0:1] = [str(ROOT)]

from tests.support.capture import (  # noqa: E402
    Record,
    RecordingRelay,
    write_capture,
)
from tests.support.net import free_port  # noqa: E402

DATA = ROOT / "tests" / "data"


def _version(argv: list[str]) -> str:
    try:
        return subprocess.run(argv, capture_output=True, text=True, timeout=10).stdout.strip()
    except OSError:
        return "?"


class Manifest:
    def __init__(self, folder: Path) -> None:
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        self.path = folder / "samples.json"
        self.entries: dict[str, Any] = (
            json.loads(self.path.read_text()) if self.path.exists() else {}
        )

    def save(self, name: str, records: list[Record], how: str, **extra: Any) -> None:
        write_capture(self.folder / f"{name}.cap", records)
        self.entries[f"{name}.cap"] = {"how": how, **extra}
        print(f"{self.folder.name}/{name}.cap: {len(records)} reads, "
              f"{sum(len(d) for _, d in records)} bytes")

    def save_bin(self, name: str, data: bytes, how: str) -> None:
        (self.folder / f"{name}.bin").write_bytes(data)
        self.entries[f"{name}.bin"] = {"how": how}
        print(f"{self.folder.name}/{name}.bin: {len(data)} bytes")

    def write(self) -> None:
        self.path.write_text(json.dumps(self.entries, indent=2, sort_keys=True) + "\n")


def _relayed(upstream_port: int, client: Callable[[int], None]) -> list[list[Record]]:
    with RecordingRelay(("127.0.0.1", upstream_port)) as relay:
        client(relay.port)
        time.sleep(0.3)
        relay.wait_idle(10)
        return [list(c) for c in relay.connections]


def _first(records: list[Record], direction: str) -> bytes:
    return next(d for dd, d in records if dd == direction)


# -- PostgreSQL ---------------------------------------------------------------


def capture_postgres() -> None:
    from tests.support.postgres import PG_BIN, SCRAM_PASSWORD, SCRAM_USER, start_postgres

    m = Manifest(DATA / "postgres")
    versions = {
        "psql": _version(["psql", "--version"]),
        "server": _version([str(PG_BIN / "postgres"), "--version"]),
    }
    tmp = Path(tempfile.mkdtemp())
    pg = start_postgres(tmp, free_port(), "pg1.example.test")
    try:

        def psql(port: int, conninfo: str, *sql: str) -> None:
            argv = ["psql", "-X", "-A", "-t", f"host=127.0.0.1 port={port} {conninfo}"]
            for s in sql:
                argv += ["-c", s]
            subprocess.run(argv, capture_output=True, timeout=30)

        conns = _relayed(pg.port, lambda p: psql(
            p, "user=postgres dbname=postgres sslmode=disable gssencmode=disable "
            "application_name=tsgate-capture",
            "SELECT name FROM whoami", "SELECT 1/0", "SELECT * FROM no_such_table",
        ))
        m.save("psql_plain", conns[0], "psql sslmode=disable: simple queries, two errors",
               **versions)
        m.save_bin("psql_startup", _first(conns[0], "c"),
                   "first client message of psql_plain.cap (StartupMessage)")

        conns = _relayed(pg.port, lambda p: psql(
            p, "user=postgres dbname=postgres sslmode=require gssencmode=disable",
            "SELECT name FROM whoami",
        ))
        m.save("psql_ssl", conns[0], "psql sslmode=require: SSLRequest, 'S', then TLS",
               **versions)
        m.save_bin("psql_sslrequest", _first(conns[0], "c"),
                   "first client message of psql_ssl.cap (SSLRequest)")

        conns = _relayed(pg.port, lambda p: psql(
            p, "user=postgres dbname=no_such_db sslmode=disable gssencmode=disable",
            "SELECT 1",
        ))
        m.save("psql_no_such_db", conns[0], "psql to a missing database: FATAL 3D000",
               **versions)

        import psycopg

        def psycopg_session(port: int) -> None:
            with psycopg.connect(
                host="127.0.0.1", port=port, user=SCRAM_USER, password=SCRAM_PASSWORD,
                dbname="postgres", sslmode="disable", gssencmode="disable",
                application_name="psycopg-capture",
            ) as conn:
                conn.execute("SELECT name FROM whoami WHERE name = %s", ("pg1",)).fetchall()
                conn.execute("SELECT %s::int + 1", (41,), prepare=True).fetchall()
                conn.execute("SELECT %s::int + 1", (1,), prepare=True).fetchall()
                try:
                    conn.execute("SELECT %s::int", ("nope",))
                except psycopg.Error:
                    conn.rollback()
                conn.commit()

        conns = _relayed(pg.port, psycopg_session)
        m.save("psycopg_extended", conns[0],
               "psycopg 3 (libpq) with SCRAM auth, extended protocol, prepared, one error",
               psycopg=psycopg.__version__, libpq=str(psycopg.pq.version()), **versions)

        def cancelled(port: int) -> None:
            # Ctrl-C in psql: libpq sends a CancelRequest on a new connection.
            proc = subprocess.Popen(
                ["psql", "-X", f"host=127.0.0.1 port={port} user=postgres dbname=postgres "
                 "sslmode=disable gssencmode=disable", "-c", "SELECT pg_sleep(5)"],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            )
            time.sleep(1.0)
            proc.send_signal(signal.SIGINT)
            proc.wait(10)

        conns = _relayed(pg.port, cancelled)
        cancel = next(c for c in conns if len(_first(c, "c")) == 16)
        session = next(c for c in conns if c is not cancel)
        m.save("psql_cancelled", session, "psql: pg_sleep cancelled by Ctrl-C (SIGINT)", **versions)
        m.save_bin("cancel_request", _first(cancel, "c"),
                   "the CancelRequest libpq sent on its own connection (psql on SIGINT)")
    finally:
        pg.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    m.write()


# -- Redis --------------------------------------------------------------------


def capture_redis() -> None:
    m = Manifest(DATA / "redis")
    versions = {
        "redis-server": _version(["redis-server", "--version"]),
        "redis-cli": _version(["redis-cli", "--version"]),
    }
    port = free_port()
    tmp = Path(tempfile.mkdtemp())
    server = subprocess.Popen(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
         "--appendonly", "no", "--dir", str(tmp)],
        stdout=subprocess.DEVNULL,
    )
    try:
        _wait_port(port)

        def cli(p: int) -> None:
            for args in (
                ["PING"], ["SET", "greeting", "hello"], ["GET", "greeting"],
                ["INCR", "greeting"], ["AUTH", "not-the-password"], ["HELLO", "3"],
                ["LPUSH", "list", "a", "b", "c"], ["LRANGE", "list", "0", "-1"],
            ):
                subprocess.run(["redis-cli", "-p", str(p), *args], capture_output=True,
                               timeout=10)

        conns = _relayed(port, cli)
        everything: list[Record] = [r for c in conns for r in c]
        m.save("redis_cli", everything,
               "redis-cli, one connection per command (PING SET GET INCR-error AUTH-error "
               "HELLO 3 LPUSH LRANGE), connections concatenated", **versions)

        conns = _relayed(port, lambda p: subprocess.run(
            ["redis-benchmark", "-p", str(p), "-n", "200", "-c", "1", "-P", "7", "-q",
             "-t", "ping,set,get,incr,lpush,rpush,lpop,rpop,sadd,hset,spop"],
            capture_output=True, timeout=60))
        # One connection per test; RESP carries no per-connection state here
        # (no HELLO 3), so the connections concatenated are one valid stream.
        bench = [r for c in conns for r in c]
        m.save("redis_benchmark", bench,
               "redis-benchmark -n 200 -c 1 -P 7 (pipelined), its connections concatenated",
               benchmark=_version(["redis-benchmark", "--version"]), **versions)
        m.save_bin("redis_benchmark_client", b"".join(d for dd, d in bench if dd == "c"),
                   "client direction of redis_benchmark.cap")

        def inline(p: int) -> None:
            # What a person types at `nc`/`telnet` (Redis inline commands).
            subprocess.run(["nc", "-q", "1", "127.0.0.1", str(p)],
                           input=b"PING\r\nset inline  value\r\nget inline\r\nNOSUCH x\r\n"
                                 b"QUIT\r\n",
                           capture_output=True, timeout=10)

        conns = _relayed(port, inline)
        m.save("inline_nc", conns[0], "inline commands typed through nc", **versions)
    finally:
        server.terminate()
        server.wait(10)
        shutil.rmtree(tmp, ignore_errors=True)
    m.write()


def _wait_port(port: int, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"nothing listening on {port}")


# -- MySQL (MariaDB) ----------------------------------------------------------


def capture_mysql() -> None:
    from tests.support.mariadb import start_mariadb

    m = Manifest(DATA / "mysql")
    versions = {
        "server": _version(["mariadbd", "--version"]),
        "client": _version(["mariadb", "--version"]),
    }
    tmp = Path(tempfile.mkdtemp())
    db = start_mariadb(tmp, free_port())
    try:

        def cli(p: int, *extra: str, sql: str) -> None:
            subprocess.run(
                ["mariadb", "--no-defaults", "-h", "127.0.0.1", "-P", str(p), "-u", "tsgate",
                 "-ptsgate-secret", *extra, "-e", sql],
                capture_output=True, timeout=30,
            )

        conns = _relayed(db.port, lambda p: cli(
            p, "--skip-ssl", "-D", "shop",
            sql="SELECT name FROM whoami; SELECT 1/0; SELECT * FROM no_such_table; "
                "SELECT @@version",
        ))
        m.save("mariadb_cli", conns[0], "mariadb client, no TLS: queries and an error",
               **versions)
        m.save_bin("mysql_greeting", _first(conns[0], "s"),
                   "first server packet of mariadb_cli.cap (handshake v10)")

        conns = _relayed(db.port, lambda p: cli(p, "--ssl", sql="SELECT 1"))
        m.save("mariadb_cli_ssl", conns[0], "mariadb client --ssl: SSLRequest then TLS",
               **versions)

        import pymysql

        def pymysql_session(p: int) -> None:
            conn = pymysql.connect(host="127.0.0.1", port=p, user="tsgate",
                                   password="tsgate-secret", database="shop",
                                   program_name="pymysql-capture", ssl_disabled=True)
            with conn.cursor() as cur:
                cur.execute("SELECT name FROM whoami WHERE name = %s", ("db1",))
                cur.fetchall()
                cur.execute("INSERT INTO whoami VALUES (%s)", ("x",))
            conn.rollback()
            conn.ping()
            conn.select_db("mysql")
            conn.close()

        conns = _relayed(db.port, pymysql_session)
        m.save("pymysql", conns[0], "PyMySQL: query, insert, rollback, ping, select_db, quit",
               pymysql=pymysql.__version__, **versions)

        import mysql.connector

        def prepared_session(p: int) -> None:
            conn = mysql.connector.connect(
                host="127.0.0.1", port=p, user="tsgate", password="tsgate-secret",
                database="shop", ssl_disabled=True, use_pure=True,
            )
            cur = conn.cursor(prepared=True)
            cur.execute("SELECT name FROM whoami WHERE name = %s", ("db1",))
            cur.fetchall()
            cur.execute("SELECT name FROM whoami WHERE name = %s", ("nobody",))
            cur.fetchall()
            cur.close()
            conn.close()

        conns = _relayed(db.port, prepared_session)
        m.save("connector_prepared", conns[0],
               "mysql-connector-python (pure), server-side prepared statement run twice",
               connector=mysql.connector.__version__, **versions)
    finally:
        db.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    m.write()


CAPTURES = {"postgres": capture_postgres, "redis": capture_redis, "mysql": capture_mysql}

if __name__ == "__main__":
    for which in sys.argv[1:] or list(CAPTURES):
        CAPTURES[which]()
    os._exit(0)
