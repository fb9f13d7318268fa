"""
``tls.mode: AUTO_PASSTHROUGH``: route by an SNI that names the cluster.

Istio's multi-network gateways (the east-west gateway of the multi-cluster
samples) do not use VirtualServices: the client's SNI is the cluster name,
``outbound_.<port>_.<subset>_.<host>``, and the gateway forwards the TLS
bytes untouched to that cluster. istiod builds one filter chain per
*registry* service and port (and per DestinationRule subset), for the
services whose host falls under a server host, skipping MESH_EXTERNAL ones
(``builtAutoPassthroughFilterChains`` in pilot's gateway.go). tsgate does
the same with its registry, the ServiceEntries (and the WorkloadEntries they
select): every chain is an exact SNI name computed here at configuration
time, so a name not in the registry matches no chain and the connection is
closed. There is no way to reach an arbitrary host: no open relay.

Not done: Istio also requires one of the Istio mTLS ALPNs (``istio``,
``istio-peer-exchange``, ``istio-http/1.1``, ...) on these chains; tsgate
routes on the SNI alone.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from tsgate.config import hosts as H
from tsgate.config.diagnostics import INFO, WARNING
from tsgate.config.model import Destination, VirtualService
from tsgate.routing import Route, SniChain, SourceRef, WeightedCluster

if TYPE_CHECKING:
    from tsgate.config.compiler import Compiler, _ServerRef

#: weight of the one cluster of an auto-passthrough chain
FULL_WEIGHT = 100


def sni_name(port: int, subset: str, fqdn: str) -> str:
    """Istio's BuildDNSSrvSubsetKey: ``outbound_.2701_.v1_.echo.ns.svc.cluster.local``."""
    return f"outbound_.{port}_.{subset}_.{fqdn}"


def chains(compiler: Compiler, refs: list[_ServerRef], taken: set[str]) -> list[SniChain]:
    """The SNI chains of the AUTO_PASSTHROUGH servers ``refs`` of one listener."""
    from tsgate.config.compiler import visible

    out: list[SniChain] = []
    for ref in refs:
        gw = ref.gateway
        viewer = compiler.proxy_namespace(gw)
        # The gateway's own meta stands in for a VirtualService when clusters are built
        # (diagnostics then point at the Gateway).
        owner = VirtualService(gw.meta)
        server_hosts = [h.rpartition("/")[2] for h in ref.server.hosts]
        found = 0
        for se in compiler.service_entries:
            if se.location != "MESH_INTERNAL":
                continue  # Istio skips MeshExternal services here
            if not visible(se.export_to, se.meta.namespace, viewer):
                continue
            for host in se.hosts:
                if "*" in host:
                    continue  # a wildcard names no one cluster
                fqdn = H.fqdn(host, se.meta.namespace)
                if not any(H.subset_of(fqdn, H.fqdn(h, gw.meta.namespace)) for h in server_hosts):
                    continue
                if se.resolution in ("NONE", "DYNAMIC_DNS"):
                    compiler.report(INFO, se.meta, "spec.resolution",
                                    f"not reachable through AUTO_PASSTHROUGH on "
                                    f"{ref.describe()}: resolution {se.resolution} has no "
                                    "endpoints for tsgate to connect to",
                                    once=("auto-res", se.meta.key, ref.key, ref.index))
                    continue
                dr = compiler.destination_rule(fqdn, viewer, gw.meta, ref.path)
                subsets = [""] + [s.name for s in (dr.subsets if dr else ()) if s.name]
                for port in se.ports:
                    if port.number is None or port.protocol == "UDP":
                        continue
                    for subset in subsets:
                        name = sni_name(port.number, subset, fqdn)
                        if name in taken:
                            continue
                        dest = Destination(host=fqdn, subset=subset, port=port.number)
                        cluster, _ = compiler.cluster(owner, dest, f"{ref.path}.tls",
                                                      port.number)
                        if cluster is None:
                            continue
                        taken.add(name)
                        found += 1
                        route = Route(
                            name=f"{gw.meta.namespace}/{gw.meta.name}#auto_passthrough",
                            destinations=(WeightedCluster(cluster, FULL_WEIGHT),),
                            source=SourceRef(gw.meta.file, gw.meta.line_of(ref.path),
                                             gw.meta.ref, ref.path))
                        out.append(SniChain((name,), route))
        if not found:
            compiler.report(WARNING, gw.meta, ref.path,
                            "AUTO_PASSTHROUGH server: no MESH_INTERNAL ServiceEntry host falls "
                            "under its hosts (" + ", ".join(ref.server.hosts) + "), so no SNI "
                            "is routed and every connection is closed")
    return out
