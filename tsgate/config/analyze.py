"""
istioctl analyze's cross-resource checks for the L4 kinds, with its codes.

The validation webhook (``validate``) looks at one object; ``istioctl
analyze`` looks at them together and reports, among others, conflicting
Gateways (IST0145), references to missing objects (IST0101) and client TLS
without server verification (IST0128/IST0129). Istio accepts all of these
configurations (the webhook admits them and the proxies serve what they
can), so tsgate reports them as warnings with Istio's code; ``tsgate
validate --strict`` turns them into errors. Checks that need the compiled
view (which VirtualService binds where) stay in the compiler, which tags
its diagnostics with the same codes.
"""

from __future__ import annotations

from collections.abc import Iterable

from tsgate.config import hosts as H
from tsgate.config.diagnostics import WARNING, Diagnostic
from tsgate.config.model import DestinationRule, Gateway, Meta, Resource, VirtualService

REFERENCED_RESOURCE_NOT_FOUND = "IST0101"
NO_CA_DESTINATION_LEVEL = "IST0128"
NO_CA_PORT_LEVEL = "IST0129"
HOST_NOT_FOUND_IN_GATEWAY = "IST0132"
CONFLICTING_GATEWAYS = "IST0145"


def _diag(meta: Meta, path: str, message: str, code: str) -> Diagnostic:
    return Diagnostic(WARNING, message, meta.file, meta.line_of(path) if path else meta.line,
                      meta.ref, path, code)


def conflicting_gateways(gateways: Iterable[Gateway]) -> list[Diagnostic]:
    """IST0145: Gateways with the same selector share a port and a host (and bind)."""
    gateways = list(gateways)
    out: list[Diagnostic] = []
    # (selector, port) -> gateway key -> {host: bind}
    known: dict[tuple[str, int], dict[tuple[str, str], dict[str, str]]] = {}
    for gw in gateways:
        selector = ",".join(f"{k}={v}" for k, v in sorted(gw.selector))
        for server in gw.servers:
            if server.port is None or server.port.number is None:
                continue
            hosts = known.setdefault((selector, server.port.number), {}).setdefault(
                gw.meta.key[1:], {})
            for host in server.hosts:
                hosts[host] = server.bind
    for gw in gateways:
        selector = ",".join(f"{k}={v}" for k, v in sorted(gw.selector))
        for i, server in enumerate(gw.servers):
            if server.port is None or server.port.number is None:
                continue
            others = known.get((selector, server.port.number), {})
            names = sorted(f"{ns}/{name}" for (ns, name), hb in others.items()
                           if (ns, name) != gw.meta.key[1:]
                           and any(hb.get(h, None) == server.bind for h in server.hosts))
            if names:
                out.append(_diag(
                    gw.meta, f"spec.servers[{i}]",
                    f"Conflict with gateways {','.join(names)} (workload selector "
                    f"{selector}, port {server.port.number}, hosts {','.join(server.hosts)}); "
                    "the oldest (first loaded) server on the port wins",
                    CONFLICTING_GATEWAYS))
    return out


def missing_subsets(virtual_services: Iterable[VirtualService],
                    rules: list[DestinationRule], skip: set[tuple[str, str, str]]) -> \
        list[Diagnostic]:
    """IST0101 for destinations naming a subset no DestinationRule defines."""
    out: list[Diagnostic] = []
    for vs in virtual_services:
        if vs.meta.key in skip:
            continue
        for kind, routes in (("tcp", vs.tcp), ("tls", vs.tls)):
            for i, rule in enumerate(routes):
                for j, rd in enumerate(rule.route):
                    d = rd.destination
                    if not d.subset or not d.host:
                        continue
                    fqdn = H.fqdn(d.host, vs.meta.namespace)
                    found = any(
                        s.name == d.subset for dr in rules if dr.host
                        and (H.fqdn(dr.host, dr.meta.namespace) == fqdn
                             or H.subset_of(fqdn, H.fqdn(dr.host, dr.meta.namespace)))
                        for s in dr.subsets)
                    if not found:
                        out.append(_diag(
                            vs.meta, f"spec.{kind}[{i}].route[{j}].destination.subset",
                            f"Referenced host+subset in destinationrule not found: "
                            f"\"{fqdn}+{d.subset}\"", REFERENCED_RESOURCE_NOT_FOUND))
    return out


def _unverified(mode: object, fields: tuple[str, ...], selector: bool) -> bool:
    return mode in ("SIMPLE", "MUTUAL") and "caCertificates" not in fields and \
        not ("credentialName" in fields and selector)


def client_tls_without_ca(rules: Iterable[DestinationRule]) -> list[Diagnostic]:
    """IST0128/IST0129: SIMPLE/MUTUAL origination that does not verify the server."""
    out: list[Diagnostic] = []
    for dr in rules:
        tp = dr.traffic_policy
        if tp is None:
            continue
        selector = dr.workload_selector is not None
        if _unverified(tp.tls_mode, tp.tls_fields, selector):
            out.append(_diag(
                dr.meta, "spec.trafficPolicy.tls",
                f"DestinationRule {dr.meta.name} in namespace {dr.meta.namespace} has TLS mode "
                f"set to {tp.tls_mode} but no caCertificates are set to validate server "
                f"identity for host: {dr.host}", NO_CA_DESTINATION_LEVEL))
        for i, (number, level) in enumerate(tp.port_level):
            if _unverified(level.tls_mode, level.tls_fields, selector):
                out.append(_diag(
                    dr.meta, f"spec.trafficPolicy.portLevelSettings[{i}].tls",
                    f"DestinationRule {dr.meta.name} in namespace {dr.meta.namespace} has TLS "
                    f"mode set to {level.tls_mode} but no caCertificates are set to validate "
                    f"server identity for host: {dr.host} at port number:{number}",
                    NO_CA_PORT_LEVEL))
    return out


def analyze(resources: list[Resource], bound: set[tuple[str, str, str]]) -> list[Diagnostic]:
    """Every analyzer finding; ``bound`` VirtualServices are checked by the compiler."""
    gateways = [r for r in resources if isinstance(r, Gateway)]
    rules = [r for r in resources if isinstance(r, DestinationRule)]
    virtual_services = [r for r in resources if isinstance(r, VirtualService)]
    out = conflicting_gateways(gateways)
    out.extend(missing_subsets(virtual_services, rules, bound))
    out.extend(client_tls_without_ca(rules))
    return out
