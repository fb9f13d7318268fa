"""
Hand-picked one-line bugs ("planted mutants") and the tests that must catch them.

Each :class:`Plant` replaces ``old`` by ``new`` in one file of a copy of the
repository and runs ``tests``; the plant is *caught* when they fail. Run
them with ``python3 -m tests.mutation.plant`` (see docs/testing.md).

``DATAPATH`` are the bugs issue #17 found uncaught, in the data path and
gateway service; they are checked by end-to-end tests and are run on demand
(the data path is being rewritten; after that, update ``old``/``new`` here
and redo the mutmut run over ``tsgate/proxy/``). ``CI`` is the short subset
that ``tests/mutation/test_planted.py`` runs with the suite: logic bugs in
routing, the TLS hint parser, the balancer and the config compiler, caught by
unit tests in seconds.
"""

from __future__ import annotations

import attrs


@attrs.frozen
class Plant:
    name: str
    path: str
    old: str
    new: str
    tests: tuple[str, ...]
    #: how many times ``old`` occurs (all are replaced)
    count: int = 1


CLOSE = "tests/e2e/test_close_paths.py"
PG_N = "tests/e2e/test_postgres_sni.py::test_server_answering_n_gets_no_client_hello"
CONNECTION = "tsgate/proxy/connection.py"

DATAPATH: tuple[Plant, ...] = (
    Plant("postgres N answer relays on", CONNECTION,
          "if reply[: len(want)] != want:", "if False:", (PG_N,)),
    Plant("maxConnections disabled", CONNECTION,
          "state.active >= cluster.max_connections:", "False:",
          (f"{CLOSE}::test_max_connections_overflow_is_uo",)),
    Plant("maxConnections off by one (>)", CONNECTION,
          "state.active >= cluster.max_connections:", "state.active > cluster.max_connections:",
          (f"{CLOSE}::test_max_connections_overflow_is_uo",)),
    Plant("maxConnections off by one (max - 1)", CONNECTION,
          "state.active >= cluster.max_connections:",
          "state.active >= cluster.max_connections - 1:",
          (f"{CLOSE}::test_max_connections_overflow_is_uo",)),
    Plant("upstream bytes not activity", CONNECTION,
          "        down.last_activity = down._now()\n", "", (
              f"{CLOSE}::test_server_only_traffic_is_activity",), count=2),
    Plant("--connect-timeout ignored (data path)", CONNECTION,
          "timeout = ctx.settings.connect_timeout or cluster.connect_timeout",
          "timeout = cluster.connect_timeout",
          (f"{CLOSE}::test_connect_timeout_option_is_honoured",)),
    Plant("--connect-timeout ignored (options)", "tsgate/tap.py",
          'connect_timeout=options["connect-timeout"],', "connect_timeout=None,",
          (f"{CLOSE}::test_connect_timeout_option_is_honoured",)),
    Plant("reload_failed counts successes", "tsgate/gateway.py",
          'self.stats.inc("config.reload_success")', 'self.stats.inc("config.reload_failed")',
          (f"{CLOSE}::test_reload_failed_counts_failures_only",)),
    Plant("access log local/remote swapped", CONNECTION,
          "local, remote = format_address(transport.getHost()), "
          "format_address(transport.getPeer())",
          "remote, local = format_address(transport.getHost()), "
          "format_address(transport.getPeer())",
          (f"{CLOSE}::test_access_log_with_asymmetric_traffic",)),
    Plant("access log duration in seconds", CONNECTION,
          "record.duration_ms = int(duration * 1000)", "record.duration_ms = int(duration)",
          (f"{CLOSE}::test_access_log_with_asymmetric_traffic",)),
    Plant("access log bytes_sent is bytes_received", CONNECTION,
          "record.bytes_sent = self.bytes_sent", "record.bytes_sent = self.bytes_received",
          (f"{CLOSE}::test_access_log_with_asymmetric_traffic",)),
    Plant("Istio sent/received byte counters swapped", CONNECTION,
          'stats.inc_key("istio_tcp_received_bytes_total", key, received)',
          'stats.inc_key("istio_tcp_received_bytes_total", key, sent)',
          (f"{CLOSE}::test_metrics_with_asymmetric_traffic",)),
    Plant("periodic byte-counter flush does nothing", "tsgate/gateway.py",
          "            conn.flush_byte_counters()", "            pass",
          (f"{CLOSE}::test_byte_counters_move_while_the_connection_is_open",)),
    Plant("failed connections not counted closed", CONNECTION,
          "        self._count_closed(record.response_flags)\n",
          "        if self.upstream is not None:\n"
          "            self._count_closed(record.response_flags)\n",
          (f"{CLOSE}::test_every_close_is_counted_with_its_response_flags",)),
)

CI: tuple[Plant, ...] = ()
