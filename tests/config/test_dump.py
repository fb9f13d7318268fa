"""
The route table's one dict form (tsgate.config.dump.table_to_dict): what
``tsgate routes --json``, ``tsgate validate --json`` and ``/config_dump``
print. Built from the table's model (``RouteTable.routes`` / ``clusters``):
clusters listed once, in order of first use, chains in the listener's order,
TLS facts where they are.
"""

from __future__ import annotations

import json
from typing import Any

import attrs

from tsgate.config.dump import table_to_dict
from tsgate.routing import (
    Cluster,
    Endpoint,
    Listener,
    Route,
    RouteTable,
    SniChain,
    SourceRef,
    WeightedCluster,
)


@attrs.frozen
class Facts:
    """A termination or origination as far as the dump sees it: its ``to_dict``."""

    mode: str

    def to_dict(self) -> dict[str, Any]:
        return {"mode": self.mode}


SHARED = Cluster(name="outbound|80||shared", host="shared", port=80,
                 endpoints=(Endpoint("10.0.0.1", 8080, labels=(("v", "1"),)),))
TLS_UP = Cluster(name="outbound|443||tls-up", host="tls-up", port=443, resolution="DNS",
                 tls=Facts("SIMPLE"))
MISSING = Cluster(name="outbound|80|v9|shared", host="shared", port=80, subset="v9",
                  missing=True)
SOURCE = SourceRef("vs.yaml", 7, "VirtualService default/a", "spec.tls[0]")
A = Route("default/a#tls[0]", (WeightedCluster(TLS_UP, 75), WeightedCluster(SHARED, 25)),
          source=SOURCE)
B = Route("default/b#tls[0]", (WeightedCluster(SHARED, 1),), idle_timeout=0.0)
C = Route("default/c#tcp[0]", (WeightedCluster(MISSING, 1), WeightedCluster(SHARED, 1)),
          max_connection_duration=30.0)
TABLE = RouteTable((
    Listener("0.0.0.0", 443,
             tls_chains=(SniChain(("a.example.com",), A, termination=Facts("MUTUAL")),
                         SniChain((), B)),
             tcp_route=C, protocols=("TLS", "TCP"), port_names=("tls", "tcp"),
             annotations=(("tsgate.io/inspect-timeout", "2s"),)),
    Listener("127.0.0.1", 9000, tcp_route=B, protocols=("TCP",)),
))


def test_listeners_refer_to_clusters_by_name_in_chain_order() -> None:
    first, second = table_to_dict(TABLE)["listeners"]
    assert {k: first[k] for k in ("name", "bind", "port", "inspect", "protocols", "port_names",
                                  "annotations")} == {
        "name": "0.0.0.0_443", "bind": "0.0.0.0", "port": 443, "inspect": True,
        "protocols": ["TLS", "TCP"], "port_names": ["tls", "tcp"],
        "annotations": {"tsgate.io/inspect-timeout": "2s"}}
    assert [c["server_names"] for c in first["tls_chains"]] == [["a.example.com"], ["*"]]
    assert first["tls_chains"][0]["route"] == {
        "name": "default/a#tls[0]", "stat_prefix": "default/a#tls[0]",
        "destinations": [{"cluster": "outbound|443||tls-up", "weight": 75},
                         {"cluster": "outbound|80||shared", "weight": 25}],
        "idle_timeout": 3600.0, "max_connection_duration": None,
        "source": {"file": "vs.yaml", "line": 7, "resource": "VirtualService default/a",
                   "path": "spec.tls[0]"}}
    assert first["tcp_route"]["max_connection_duration"] == 30.0
    assert (second["inspect"], second["tls_chains"], second["tcp_route"]["name"]) == (
        False, [], "default/b#tls[0]")


def test_tls_facts_are_where_they_were() -> None:
    data = table_to_dict(TABLE)
    chains = data["listeners"][0]["tls_chains"]
    # a terminating chain carries its termination; a passthrough chain has no such key
    assert chains[0]["termination"] == {"mode": "MUTUAL"} and "termination" not in chains[1]
    clusters = {c["name"]: c for c in data["clusters"]}
    assert clusters["outbound|443||tls-up"]["tls"] == {"mode": "SIMPLE"}
    assert clusters["outbound|80||shared"]["tls"] is None
    # authorization is the /authz view's, not the table dump's
    assert "authz" not in data["listeners"][0]


def test_a_shared_cluster_is_listed_once_in_order_of_first_use() -> None:
    clusters = table_to_dict(TABLE)["clusters"]
    assert [c["name"] for c in clusters] == [
        "outbound|443||tls-up", "outbound|80||shared", "outbound|80|v9|shared"]
    shared = clusters[1]
    assert shared == {
        "name": "outbound|80||shared", "host": "shared", "port": 80, "subset": "",
        "resolution": "STATIC",
        "endpoints": [{"address": "10.0.0.1", "port": 8080, "weight": 1, "labels": {"v": "1"}}],
        "connect_timeout": 10.0, "lb_policy": "LEAST_REQUEST", "max_connections": None,
        "tls": None, "policy": [], "missing": False}
    assert clusters[2]["missing"] is True and clusters[2]["endpoints"] == []


def test_the_dict_form_is_stable_and_json_ready() -> None:
    assert json.dumps(table_to_dict(TABLE)) == json.dumps(table_to_dict(TABLE))
    assert list(table_to_dict(TABLE)) == ["listeners", "clusters"]
    assert table_to_dict(RouteTable()) == {"listeners": [], "clusters": []}


def test_the_routes_text_renders_the_same_model() -> None:
    from tsgate.cli import format_table

    text = format_table(TABLE)
    # every chain in the listener's order, each route with its clusters and shares
    assert [line.strip() for line in text.splitlines() if line.strip().startswith("chain")] == [
        "chain sni a.example.com", "chain sni * (catch-all, also no SNI)",
        "chain tcp (fallback: no matching SNI, or not TLS)", "chain tcp"]
    assert "-> outbound|443||tls-up 75% DNS (no endpoints)" in text
    assert "-> outbound|80|v9|shared 50% STATIC (cluster not found: connections closed, NC)" \
        in text
    assert "no TCP route" not in text
    only_sni = RouteTable((Listener("0.0.0.0", 1, tls_chains=(SniChain(("x",), B),)),))
    assert "no TCP route: connections matching no SNI chain are closed (NR)" \
        in format_table(only_sni)
