"""
The ``mysql`` observer on conversations captured between real clients
(mariadb CLI, PyMySQL, mysql-connector-python) and a real MariaDB 10.11
(``tests/data/mysql/``, see samples.json).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.support.capture import observe, read_capture, rechunk
from tsgate.hints.mysql import MysqlObserver
from tsgate.plugins import load_plugins
from tsgate.plugins.mysql import mysql_observer

DATA = Path(__file__).resolve().parents[1] / "data" / "mysql"
SERVER_VERSION = "5.5.5-10.11.19-MariaDB-0+deb12u1"


def capture(name: str) -> list[tuple[str, bytes]]:
    return read_capture(DATA / name)


CASES = {
    "mariadb_cli.cap": (
        {"sessions": 1, "login_attempts": 1, "commands": 4, "command.com_query": 3,
         "command.com_quit": 1, "errors": 1, "errors.sqlstate_class.42": 1},
        {"user": "tsgate", "database": "shop", "tls": "false", "client": "libmariadb",
         "app_name": "mysql", "last_error": "42S02"},
    ),
    "pymysql.cap": (
        {"sessions": 1, "login_attempts": 1, "commands": 8, "command.com_query": 5,
         "command.com_ping": 1, "command.com_init_db": 1, "command.com_quit": 1},
        {"user": "tsgate", "database": "shop", "tls": "false", "client": "pymysql",
         "app_name": "pymysql-capture"},
    ),
    "connector_prepared.cap": (
        {"sessions": 1, "login_attempts": 1, "commands": 10, "command.com_query": 2,
         "command.com_ping": 1, "command.com_stmt_prepare": 1, "command.com_stmt_execute": 2,
         "command.com_stmt_reset": 2, "command.com_stmt_close": 1, "command.com_quit": 1},
        {"user": "tsgate", "database": "shop", "tls": "false",
         "client": "mysql-connector-python"},
    ),
    "mariadb_cli_ssl.cap": ({"sessions": 1, "upgraded_to_ssl": 1}, {"tls": "true"}),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_observer_real_conversation(name):
    """Exact counters and attributes of each real conversation; no decode error."""
    counts, attributes = observe(mysql_observer, capture(name))
    expected_counts, expected_attributes = CASES[name]
    assert counts == expected_counts
    assert attributes["server_version"] == SERVER_VERSION
    assert int(attributes["connection_id"]) > 0
    assert int(attributes["capabilities"], 16) & 0x800  # the server offers TLS
    for key, value in expected_attributes.items():
        assert attributes[key] == value, key


def test_greeting_sample_alone():
    """The saved greeting alone: server facts, and waiting for the client."""
    greeting = (DATA / "mysql_greeting.bin").read_bytes()
    counts, attributes = observe(mysql_observer, [("s", greeting)])
    assert counts == {}
    assert attributes["server_version"] == SERVER_VERSION


def test_password_never_in_attributes():
    """The client's auth response (a scrambled password) is skipped, not kept."""
    _, attributes = observe(mysql_observer, capture("pymysql.cap"))
    assert set(attributes) <= {"server_version", "connection_id", "capabilities", "user",
                               "database", "tls", "client", "app_name", "last_error"}


@given(name=st.sampled_from(sorted(CASES)), cuts=st.lists(st.integers(0, 4096), max_size=30))
def test_any_chunking_same_counters(name, cuts):
    """Packets split anywhere (inside headers too) give the same counters."""
    records = capture(name)
    assert observe(mysql_observer, list(rechunk(records, cuts))) == observe(
        mysql_observer, records
    )


@given(name=st.sampled_from(sorted(CASES)), cut=st.integers(0, 4096),
       garbage=st.binary(max_size=256))
def test_truncation_plus_garbage_only_decode_error(name, cut, garbage):
    """A real conversation cut anywhere then garbage: at most one decode_error, no exception."""
    records = list(rechunk(capture(name), []))
    flat = [(d, bytes([b])) for d, data in records for b in data][: cut]
    counts, _ = observe(mysql_observer, [*flat, ("c", garbage), ("s", garbage)])
    assert counts.get("decode_error", 0) <= 1


def _session() -> tuple[dict[str, int], MysqlObserver]:
    """An observer that has seen the greeting, the login and the OK of pymysql.cap."""
    counts: dict[str, int] = {}
    obs = MysqlObserver(lambda n, a: counts.__setitem__(n, counts.get(n, 0) + a))
    for direction, data in capture("pymysql.cap")[:3]:
        (obs.client_data if direction == "c" else obs.server_data)(data)
    return counts, obs


def test_memory_bounded_by_huge_query():
    """A 64 MiB COM_QUERY (four max-size packets and a tail) is skipped and counted once."""
    counts, obs = _session()
    size = 64 << 20
    peak = 0
    seq = 0
    remaining = size
    while remaining >= 0:
        n = min(remaining, 0xFFFFFF)
        header = n.to_bytes(3, "little") + bytes([seq])
        body = (b"\x03" if seq == 0 else b"") + b"x" * (n - (1 if seq == 0 else 0))
        obs.client_data(header)
        for i in range(0, len(body), 1 << 20):
            obs.client_data(body[i : i + (1 << 20)])
            peak = max(peak, obs.buffered())
        remaining -= n
        seq += 1
        if n < 0xFFFFFF:
            break
    obs.client_data(b"\x01\x00\x00\x00\x0e")  # COM_PING
    assert peak == 0
    assert counts["command.com_query"] == 1
    assert counts["command.com_ping"] == 1
    assert "decode_error" not in counts


def test_oversized_handshake_is_a_decode_error_not_a_buffer():
    """A 'greeting' announcing 10 MiB is refused at once, nothing buffered."""
    counts: dict[str, int] = {}
    obs = MysqlObserver(lambda n, a: counts.__setitem__(n, counts.get(n, 0) + a))
    obs.server_data((10 << 20).to_bytes(3, "little") + b"\x00\x0a")
    assert counts == {"decode_error": 1}
    assert obs.buffered() == 0


def test_quiet_after_decode_error():
    """A client talking before the greeting: decode_error once, then silence."""
    counts: dict[str, int] = {}
    obs = MysqlObserver(lambda n, a: counts.__setitem__(n, counts.get(n, 0) + a))
    obs.client_data(b"\x01\x00\x00\x00\x0e")
    for direction, data in capture("pymysql.cap"):
        (obs.client_data if direction == "c" else obs.server_data)(data)
    assert counts == {"decode_error": 1}


def test_login_failure_counted():
    """An ERR in the auth phase is a login failure (and an error with its SQLSTATE)."""
    records = capture("pymysql.cap")
    counts: dict[str, int] = {}
    obs = MysqlObserver(lambda n, a: counts.__setitem__(n, counts.get(n, 0) + a))
    for direction, data in records[:2]:
        (obs.client_data if direction == "c" else obs.server_data)(data)
    err = b"\xff\x15\x04#28000Access denied for user 'tsgate'@'localhost'"
    obs.server_data(len(err).to_bytes(3, "little") + b"\x02" + err)
    assert counts["login_failures"] == 1
    assert counts["errors.sqlstate_class.28"] == 1


def test_selected_by_istio_protocol_and_port_name():
    """port.protocol MYSQL or a mysql-* port name selects this observer."""
    plugins = load_plugins()
    assert mysql_observer in plugins.observers_for("MYSQL", "tcp-db")
    assert mysql_observer in plugins.observers_for("TCP", "mysql-primary")
    assert mysql_observer not in plugins.observers_for("TCP", "tcp-db")
