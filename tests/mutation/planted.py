"""
Hand-picked one-line bugs ("planted mutants") and the tests that must catch them.

Each :class:`Plant` replaces ``old`` by ``new`` in one file of a copy of the
repository and runs ``tests``; the plant is *caught* when they fail. Run
them with ``python3 -m tests.mutation.plant`` (see docs/testing.md).

``DATAPATH`` are the bugs issue #17 found uncaught, in the data path and
gateway service; they are checked by end-to-end tests and are run on demand.
They are aimed at the staged data path (``tsgate/proxy/connection.py``,
``upstream.py``, ``relay.py``, ``record.py``). ``CI`` is the short subset
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
# The data path is a pipeline of stage modules (tsgate/proxy/stages.py): the
# accept stage, the upstream connect (with STARTTLS negotiation), the relay and
# the close record each live in their own module.
CONNECTION = "tsgate/proxy/connection.py"
UPSTREAM = "tsgate/proxy/upstream.py"
RELAY = "tsgate/proxy/relay.py"
RECORD = "tsgate/proxy/record.py"

DATAPATH: tuple[Plant, ...] = (
    Plant("postgres N answer relays on", UPSTREAM,
          "if reply[: len(want)] != want:", "if False:", (PG_N,)),
    Plant("maxConnections disabled", UPSTREAM,
          "state.active >= cluster.max_connections:", "False:",
          (f"{CLOSE}::test_max_connections_overflow_is_uo",)),
    Plant("maxConnections off by one (>)", UPSTREAM,
          "state.active >= cluster.max_connections:", "state.active > cluster.max_connections:",
          (f"{CLOSE}::test_max_connections_overflow_is_uo",)),
    Plant("maxConnections off by one (max - 1)", UPSTREAM,
          "state.active >= cluster.max_connections:",
          "state.active >= cluster.max_connections - 1:",
          (f"{CLOSE}::test_max_connections_overflow_is_uo",)),
    Plant("upstream bytes not activity", RELAY,
          "        self.bytes_sent += len(data)\n        self.last_activity = self.now()\n",
          "        self.bytes_sent += len(data)\n",
          (f"{CLOSE}::test_server_only_traffic_is_activity",)),
    Plant("--connect-timeout ignored (data path)", UPSTREAM,
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
          "downstream_local_address=local, downstream_remote_address=remote",
          "downstream_local_address=remote, downstream_remote_address=local",
          (f"{CLOSE}::test_access_log_with_asymmetric_traffic",)),
    Plant("access log duration in seconds", RECORD,
          "record.duration_ms = int(duration * 1000)", "record.duration_ms = int(duration)",
          (f"{CLOSE}::test_access_log_with_asymmetric_traffic",)),
    Plant("access log bytes_sent is bytes_received", RECORD,
          "record.bytes_sent = self.bytes_sent", "record.bytes_sent = self.bytes_received",
          (f"{CLOSE}::test_access_log_with_asymmetric_traffic",)),
    Plant("Istio sent/received byte counters swapped", RECORD,
          'stats.inc_key("istio_tcp_received_bytes_total", key, received)',
          'stats.inc_key("istio_tcp_received_bytes_total", key, sent)',
          (f"{CLOSE}::test_metrics_with_asymmetric_traffic",)),
    Plant("periodic byte-counter flush does nothing", "tsgate/gateway.py",
          "            conn.flush_byte_counters()", "            pass",
          (f"{CLOSE}::test_byte_counters_move_while_the_connection_is_open",)),
    Plant("failed connections not counted closed (unit)", RECORD,
          "        self.count_closed(record.response_flags)\n",
          "        if self.upstream is not None:\n"
          "            self.count_closed(record.response_flags)\n",
          ("tests/proxy/test_close_metrics.py",)),
    Plant("failed connections not counted closed (e2e)", RECORD,
          "        self.count_closed(record.response_flags)\n",
          "        if self.upstream is not None:\n"
          "            self.count_closed(record.response_flags)\n",
          (f"{CLOSE}::test_every_close_is_counted_with_its_response_flags",)),
)

ROUTING_TESTS = ("tests/test_routing.py", "tests/config/test_config_sni_index.py")
TLS_TESTS = ("tests/hints/test_tls.py",)
# test_balancer.py: the load-balancing policies (tsgate/upstream/lb.py);
# test_balancer_picks.py: the weighted cluster pick and the Istio labels.
BALANCER_TESTS = ("tests/upstream/test_balancer.py", "tests/upstream/test_balancer_picks.py")
COMPILER_TESTS = ("tests/config/test_config_compiler.py",)

CI: tuple[Plant, ...] = (
    Plant("SNI exact names ignored", "tsgate/routing.py",
          "hit = index.exact.get(sni)", "hit = None", ROUTING_TESTS),
    Plant("SNI shortest wildcard suffix wins (inverted precedence)", "tsgate/routing.py",
          "hit = index.wildcard.get(sni[i:])\n"
          "                    if hit is not None:\n"
          "                        break\n",
          "hit = index.wildcard.get(sni[i:]) or hit\n", ROUTING_TESTS),
    Plant("SNI: the last chain naming a name wins", "tsgate/routing.py",
          "self.exact.setdefault(lowered, (chain, pattern))",
          "self.exact[lowered] = (chain, pattern)", ROUTING_TESTS),
    Plant("SNI compared case-sensitively", "tsgate/routing.py",
          'sni = sni.lower().rstrip(".")', 'sni = sni.rstrip(".")', ROUTING_TESTS),
    Plant("ClientHello SNI keeps its trailing dot", "tsgate/hints/tls.py",
          'return name[:-1] if name.endswith(".") else name', "return name", TLS_TESTS),
    Plant("ClientHello server_name types not checked", "tsgate/hints/tls.py",
          "if name_type == 0:", "if True:", TLS_TESTS),
    Plant("ClientHello second host_name accepted", "tsgate/hints/tls.py",
          "            if host is not None:\n"
          '                raise HintParseError("more than one host_name in server_name")\n',
          "", TLS_TESTS),
    Plant("ClientHello session id of 33 bytes accepted", "tsgate/hints/tls.py",
          "if sid_len > 32:", "if sid_len > 33:", TLS_TESTS),
    Plant("weighted pick: a boundary goes to the earlier cluster", "tsgate/upstream/balancer.py",
          "if point < 0:", "if point <= 0:", BALANCER_TESTS),
    Plant("round robin stuck on the first endpoint", "tsgate/upstream/lb.py",
          "            self.index += 1\n            return host\n",
          "            self.index += 0\n            return host\n", BALANCER_TESTS),
    Plant("Istio namespace label from the wrong label", "tsgate/upstream/balancer.py",
          'namespace = parts[1] if len(parts) >= 3 and parts[2] == "svc" else "unknown"',
          'namespace = parts[0] if len(parts) >= 3 and parts[2] == "svc" else "unknown"',
          BALANCER_TESTS),
    Plant("DestinationRule maxConnections dropped", "tsgate/config/compiler.py",
          "max_connections=tcp.max_connections if tcp is not None else None,",
          "max_connections=None,", COMPILER_TESTS),
    Plant("DestinationRule connectTimeout ignored", "tsgate/config/compiler.py",
          "connect_timeout=(tcp.connect_timeout if tcp is not None",
          "connect_timeout=(DEFAULT_CONNECT_TIMEOUT if tcp is not None", COMPILER_TESTS),
    Plant("DestinationRule idleTimeout ignored", "tsgate/config/compiler.py",
          "idle = tcp.idle_timeout if tcp.idle_timeout is not None else DEFAULT_IDLE_TIMEOUT",
          "idle = DEFAULT_IDLE_TIMEOUT", COMPILER_TESTS),
    Plant("a zero weight still gets traffic", "tsgate/config/compiler.py",
          "if cluster is not None and weight > 0:", "if cluster is not None and weight >= 0:",
          COMPILER_TESTS),
)
