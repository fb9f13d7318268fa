"""
Properties of load_config over generated configurations (hypothesis):

- it never raises for any configuration, however broken: problems are
  diagnostics, and a configuration without errors yields a JSON-ready table;
- the order of files does not change the compiled table for configurations
  without first-wins cases (Istio orders only those).
"""

from __future__ import annotations

import copy
import json
import os
import tempfile
from typing import Any

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tsgate.config import ConfigResult, GatewayOptions, load_config, table_to_dict

PORTS = (31400, 443, 9000)
DEST_HOSTS = ("echo", "db.example.com", "ext.example.com")
API = "networking.istio.io/v1beta1"


def _dest(draw: Any, allow_subset: bool) -> dict[str, Any]:
    host = draw(st.sampled_from(DEST_HOSTS))
    dest: dict[str, Any] = {"host": host}
    if host == "db.example.com":
        dest["port"] = {"number": 5432}
    elif draw(st.booleans()):
        dest["port"] = {"number": draw(st.sampled_from((80, 2701)))}
    if host == "echo" and allow_subset and draw(st.booleans()):
        dest["subset"] = draw(st.sampled_from(("v1", "v2")))
    return dest


def _route(draw: Any, allow_subset: bool) -> list[dict[str, Any]]:
    n = draw(st.integers(1, 3))
    route = [{"destination": _dest(draw, allow_subset)} for _ in range(n)]
    if n > 1:
        weights = draw(st.lists(st.integers(0, 100), min_size=n, max_size=n).filter(any))
        for rd, w in zip(route, weights):
            rd["weight"] = w
    return route


@st.composite
def valid_configs(draw: Any) -> dict[str, dict[str, Any]]:
    """Named documents of a valid configuration with no first-wins cases."""
    docs: dict[str, dict[str, Any]] = {}
    n_gateways = draw(st.integers(1, 3))
    servers: dict[str, list[dict[str, Any]]] = {f"g{i}": [] for i in range(n_gateways)}
    bound: list[tuple[str, int, str]] = []  # (gateway, port, kind)
    for port in PORTS:
        layout = draw(st.sampled_from(("none", "tcp", "tls", "both")))
        for kind in ("tcp", "tls"):
            if layout not in (kind, "both"):
                continue
            g = f"g{draw(st.integers(0, n_gateways - 1))}"
            server: dict[str, Any] = {
                "port": {"number": port, "name": f"{kind}-{port}", "protocol": kind.upper()},
                "hosts": ["*"]}
            if kind == "tls":
                server["tls"] = {"mode": "PASSTHROUGH"}
            servers[g].append(server)
            bound.append((g, port, kind))
    for g, srv in servers.items():
        if srv:
            docs[f"gateway-{g}"] = {
                "apiVersion": API, "kind": "Gateway", "metadata": {"name": g},
                "spec": {"selector": {"istio": "ingressgateway"}, "servers": srv}}
    with_dr = draw(st.booleans())
    for g, port, kind in bound:
        if kind == "tcp":
            if draw(st.booleans()):
                docs[f"vs-tcp-{port}"] = {
                    "apiVersion": API, "kind": "VirtualService",
                    "metadata": {"name": f"tcp-{port}"},
                    "spec": {"hosts": ["*"], "gateways": [g],
                             "tcp": [{"match": [{"port": port}],
                                      "route": _route(draw, with_dr)}]}}
            continue
        for j in range(draw(st.integers(0, 3))):
            wildcard = draw(st.booleans())
            sni = f"*.w{port}-{j}.example.com" if wildcard else f"v{port}-{j}.example.com"
            docs[f"vs-tls-{port}-{j}"] = {
                "apiVersion": API, "kind": "VirtualService",
                "metadata": {"name": f"tls-{port}-{j}"},
                "spec": {"hosts": ["*.example.com"], "gateways": [g],
                         "tls": [{"match": [{"port": port, "sniHosts": [sni]}],
                                  "route": _route(draw, with_dr)}]}}
    if draw(st.booleans()):
        docs["se-db"] = {
            "apiVersion": API, "kind": "ServiceEntry", "metadata": {"name": "db"},
            "spec": {"hosts": ["db.example.com"],
                     "ports": [{"number": 5432, "name": "pg", "protocol": "TCP"}],
                     "resolution": "STATIC",
                     "endpoints": [{"address": "10.0.0.1"}, {"address": "10.0.0.2"}]}}
    if draw(st.booleans()):
        docs["se-ext"] = {
            "apiVersion": API, "kind": "ServiceEntry", "metadata": {"name": "ext"},
            "spec": {"hosts": ["ext.example.com"],
                     "ports": [{"number": p, "name": f"p{p}", "protocol": "TCP"}
                               for p in (80, 2701) + PORTS],
                     "resolution": "DNS"}}
    if with_dr:
        docs["dr-echo"] = {
            "apiVersion": API, "kind": "DestinationRule", "metadata": {"name": "echo"},
            "spec": {"host": "echo", "subsets": [{"name": "v1", "labels": {"v": "1"}},
                                                 {"name": "v2", "labels": {"v": "2"}}],
                     "trafficPolicy": {"connectionPool": {"tcp": {
                         "connectTimeout": "2s", "idleTimeout": "5m"}}}}}
    return docs


def load_docs(named: list[tuple[str, Any]], **kwargs: Any) -> ConfigResult:
    """Each document in its own file, in the given order (file names sort in that order)."""
    with tempfile.TemporaryDirectory() as tmp:
        for rank, (name, doc) in enumerate(named):
            with open(os.path.join(tmp, f"{rank:02d}-{name}.yaml"), "w") as f:
                f.write(yaml.safe_dump(doc, sort_keys=False))
        return load_config([tmp], GatewayOptions(**kwargs))


def normalized(result: ConfigResult) -> Any:
    """The table without what depends on file names or listing order."""
    data = table_to_dict(result.table)
    for listener in data["listeners"]:
        listener["protocols"].sort()
        listener["port_names"].sort()
        routes = [c["route"] for c in listener["tls_chains"]] + [listener["tcp_route"]]
        for route in routes:
            if route is not None:
                route.pop("source")
        listener["tls_chains"].sort(key=lambda c: c["server_names"])
    data["clusters"].sort(key=lambda c: c["name"])
    return data


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(valid_configs(), st.randoms(use_true_random=False))
def test_file_order_does_not_change_the_table(docs, rnd):
    items = list(docs.items())
    first = load_docs(items)
    assert first.ok, [str(d) for d in first.errors]
    shuffled = items[:]
    rnd.shuffle(shuffled)
    second = load_docs(shuffled)
    assert second.ok
    assert normalized(first) == normalized(second)
    # and the table is what the documents ask for: one listener per bound port
    for listener in first.table.listeners:
        assert listener.inspect == bool(listener.tls_chains)
        for chain in listener.tls_chains:
            assert all(wc.weight > 0 for wc in chain.route.destinations)


# ------------------------------------------------------------------ chaos

JUNK = st.one_of(
    st.none(), st.booleans(), st.integers(-3, 70000),
    st.sampled_from(["*", "", "TCP", "TLS", "HTTPS", "PASSTHROUGH", "SIMPLE", "STATIC", "DNS",
                     "NONE", "a.example.com", "*.example.com", "ns/gw", "10.0.0.0/8", "1s",
                     "0s", "v1", "bogus value", "unix:///x"]),
    st.text(max_size=8),
    st.lists(st.sampled_from(["*", "a.example.com", 1, None]), max_size=3),
    st.dictionaries(st.sampled_from(["number", "name", "x", "mode", "host"]),
                    st.sampled_from([1, "a", None, 443]), max_size=3),
)


def paths_of(node: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix] if prefix else []
    if isinstance(node, dict):
        for k, v in node.items():
            out.extend(paths_of(v, prefix + (k,)))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            out.extend(paths_of(v, prefix + (i,)))
    return out


@st.composite
def broken_configs(draw: Any) -> list[tuple[str, Any]]:
    docs = draw(valid_configs())
    items = [(name, copy.deepcopy(doc)) for name, doc in docs.items()]
    for _ in range(draw(st.integers(1, 6))):
        if not items:
            break
        name, doc = items[draw(st.integers(0, len(items) - 1))]
        paths = paths_of(doc)
        path = draw(st.sampled_from(paths))
        parent = doc
        for step in path[:-1]:
            parent = parent[step]
        action = draw(st.sampled_from(["replace", "delete", "rename"]))
        if action == "delete" or (action == "rename" and not isinstance(parent, dict)):
            del parent[path[-1]]
        elif action == "rename":
            parent[str(path[-1]) + "x"] = parent.pop(path[-1])
        else:
            parent[path[-1]] = draw(JUNK)
    if draw(st.booleans()):
        items.append(("junk", draw(JUNK)))
    if draw(st.booleans()):
        items.append(items[0] if items else ("empty", {}))  # a duplicate resource
    return items


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(broken_configs(), st.dictionaries(st.sampled_from(["istio", "app"]),
                                         st.sampled_from(["ingressgateway", "x"]), max_size=2))
def test_load_config_never_raises(items, labels):
    result = load_docs(items, gateway_labels=labels)
    for d in result.diagnostics:
        assert d.severity in ("error", "warning", "info")
        assert str(d)
    if result.ok:
        json.dumps(table_to_dict(result.table))
        json.dumps(result.to_dict())
    else:
        assert result.table.listeners == ()
