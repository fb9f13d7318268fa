"""
Istio's validation rules (istio/istio pkg/config/validation; the API reference at
https://istio.io/latest/docs/reference/config/networking/) over the model.

What ``istioctl validate`` / the admission webhook would reject is an error
here; what Istio accepts but that cannot do what the author meant (a rule
after a match-all rule, certificates on a passthrough server) is a warning.
Rules about how resources combine (same-port conflicts, subsets that must
exist, gateway selection) live in the compiler, which sees them together.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Optional

from tsgate.config import hosts as H
from tsgate.config import knobs
from tsgate.config.diagnostics import ERROR, INFO, WARNING, Diagnostic
from tsgate.config.loader import join_path
from tsgate.config.model import (
    DestinationRule,
    Gateway,
    L4Match,
    L4Route,
    Meta,
    Resource,
    RouteDestination,
    ServiceEntry,
    TrafficPolicy,
    VirtualService,
    WorkloadEntry,
    WorkloadSpec,
)
from tsgate.config.schema import parse_duration
from tsgate.upstream.truth import unapplied

#: Istio protocol names (case-insensitive in Istio; the model upper-cases).
PROTOCOLS = ("HTTP", "HTTPS", "GRPC", "GRPC-WEB", "HTTP2", "MONGO", "TCP", "TLS",
             "REDIS", "MYSQL", "HTTP_PROXY", "UDP")
HTTP_FAMILY = ("HTTP", "HTTP2", "GRPC", "GRPC-WEB", "HTTP_PROXY")
TLS_PROTOCOLS = ("HTTPS", "TLS")
TLS_MODES = ("PASSTHROUGH", "SIMPLE", "MUTUAL", "AUTO_PASSTHROUGH", "ISTIO_MUTUAL",
             "OPTIONAL_MUTUAL")
TLS_VERSIONS = ("TLS_AUTO", "TLSV1_0", "TLSV1_1", "TLSV1_2", "TLSV1_3")
LOCATIONS = ("MESH_EXTERNAL", "MESH_INTERNAL")
RESOLUTIONS = ("NONE", "STATIC", "DNS", "DNS_ROUND_ROBIN", "DYNAMIC_DNS")
LB_SIMPLE = ("UNSPECIFIED", "LEAST_CONN", "RANDOM", "PASSTHROUGH", "ROUND_ROBIN", "LEAST_REQUEST")
CLIENT_TLS_MODES = ("DISABLE", "SIMPLE", "MUTUAL", "ISTIO_MUTUAL")
MAX_INT32 = 2**31 - 1
MAX_UINT32 = 2**32 - 1
MIN_DURATION = 0.001


#: istioctl's codes for what the validation webhook reports
SCHEMA_ERROR = "IST0106"  # SchemaValidationError
SCHEMA_WARNING = "IST0133"  # SchemaWarning
UNREACHABLE_RULE = "IST0130"  # VirtualServiceUnreachableRule
INEFFECTIVE_MATCH = "IST0131"  # VirtualServiceIneffectiveMatch
ADDRESSES_REQUIRED = "IST0134"  # ServiceEntryAddressesRequired


class Reporter:
    """Collects diagnostics about one resource."""

    def __init__(self, meta: Meta, out: list[Diagnostic]) -> None:
        self.meta = meta
        self.out = out

    def add(self, severity: str, path: str, message: str, code: str = "") -> None:
        self.out.append(Diagnostic(severity, message, self.meta.file, self.meta.line_of(path),
                                   self.meta.ref, path, code))

    def error(self, path: str, message: str, code: str = SCHEMA_ERROR) -> None:
        """What Istio's validation rejects."""
        self.add(ERROR, path, message, code)

    def warn(self, path: str, message: str, code: str = SCHEMA_WARNING) -> None:
        """What Istio's validation warns about."""
        self.add(WARNING, path, message, code)

    def unserved(self, path: str, message: str) -> None:
        """Valid Istio that tsgate does not serve: a warning saying what it does instead."""
        self.add(WARNING, path, message)


def validate(resources: Iterable[Resource]) -> list[Diagnostic]:
    """Every finding of Istio's per-resource rules, in resource order."""
    out: list[Diagnostic] = []
    for res in resources:
        r = Reporter(res.meta, out)
        _validate_meta(res, r)
        if isinstance(res, Gateway):
            validate_gateway(res, r)
        elif isinstance(res, VirtualService):
            validate_virtual_service(res, r)
        elif isinstance(res, ServiceEntry):
            validate_service_entry(res, r)
        elif isinstance(res, DestinationRule):
            validate_destination_rule(res, r)
        elif isinstance(res, WorkloadEntry):
            _validate_workload(res.spec, "spec", r, None, fqdn=True)
        for path, message in unapplied(res):  # fields tsgate reads but does not apply
            r.warn(path, message)
    return out


def _validate_meta(res: Resource, r: Reporter) -> None:
    meta = res.meta
    if isinstance(res, Gateway):
        problem = H.label_error(meta.name)
        if problem:
            r.error("metadata.name", f"Gateway name {problem} (no dots allowed)")
    else:
        problem = H.subdomain_error(meta.name)
        if problem:
            r.error("metadata.name", f"name {problem}")
    problem = H.label_error(meta.namespace)
    if problem:
        r.error("metadata.namespace", f"namespace {problem}")
    for key, value in meta.annotations:
        if key.startswith(knobs.PREFIX):
            problem = knobs.check(key, value)
            warning = knobs.unknown(key)
            if problem:
                r.error(f'metadata.annotations["{key}"]', problem)
            elif warning:
                r.unserved(f'metadata.annotations["{key}"]', warning)
            elif knobs.kind_of(key) != meta.kind:
                r.unserved(f'metadata.annotations["{key}"]',
                           f"{key} takes effect on {knobs.kind_of(key)}s only; ignored here")


def _port(r: Reporter, path: str, number: Optional[int], *, allow_zero: bool = False) -> None:
    if number is None:
        return
    low = 0 if allow_zero else 1
    if not low <= number <= 65535:
        r.error(path, f"port number {number} is out of range {low}-65535")


def _export_to(r: Reporter, path: str, values: tuple[str, ...], *,
               service_entry: bool = False) -> None:
    seen: set[str] = set()
    for i, value in enumerate(values):
        p = f"{path}[{i}]"
        if value in seen:
            r.error(p, f"duplicate exportTo entry {value!r}")
        seen.add(value)
        if value == "~" and not service_entry:
            r.error(p, "exportTo ~ (none) is not allowed for Istio configuration objects")
            continue
        if value in (".", "*", "~"):
            continue
        problem = H.label_error(value)
        if problem:
            r.error(p, f"exportTo entry must be '.', '*' or a namespace: {problem}")
    if "*" in values and len(values) > 1:
        r.error(path, "exportTo '*' (public) cannot be combined with other entries")
    if "~" in values and len(values) > 1:
        r.error(path, "exportTo '~' (exported nowhere) cannot be combined with other entries")


def _labels(r: Reporter, path: str, labels: tuple[tuple[str, str], ...]) -> None:
    for key, value in labels:
        name = key.rpartition("/")[2]
        if not name or len(name) > 63 or not all(c.isalnum() or c in "-_." for c in name) \
                or not name[0].isalnum() or not name[-1].isalnum():
            r.error(join_path(path, key), f"invalid label key {key!r}")
        if len(value) > 63 or (value and not (value[0].isalnum() and value[-1].isalnum()
                                               and all(c.isalnum() or c in "-_." for c in value))):
            r.error(join_path(path, key), f"invalid label value {value!r}")


# ------------------------------------------------------------------ Gateway


def _gateway_host_error(host: str) -> Optional[str]:
    """Istio's ValidateNamespaceSlashWildcardHostname for a Gateway server host."""
    namespace, slash, name = host.partition("/")
    if not slash:
        return _gateway_hostname_error(host)
    if not namespace or not name:
        return "config namespace and dnsName in host entry cannot be empty"
    if namespace not in ("*", "."):
        problem = H.label_error(namespace)
        if problem:
            return f"namespace part of host {host!r}: {problem}"
    return _gateway_hostname_error(name)


def _gateway_hostname_error(name: str) -> Optional[str]:
    if name != "*" and "." not in name:
        return f"short names (non FQDN) are not allowed: {name!r} (write the full name, " \
               "e.g. name.namespace.svc.cluster.local)"
    problem = H.istio_wildcard_domain_error(name)
    if problem and not H.is_ip(name):
        return problem
    if H.partial_wildcard(name):
        return f"host {name!r} is invalid: a wildcard is only allowed as the whole first " \
               "label ('*.'); partial wildcards are not allowed in Gateway hosts"
    return None


def validate_gateway(gw: Gateway, r: Reporter) -> None:
    _labels(r, "spec.selector", gw.selector)
    if not gw.servers:
        r.error("spec.servers", "at least one server is required")
    port_names: dict[str, int] = {}
    server_names: dict[str, int] = {}
    for i, server in enumerate(gw.servers):
        p = f"spec.servers[{i}]"
        unix = server.bind.startswith("unix://")
        if unix:
            problem = H.unix_address_error(server.bind[len("unix://"):])
            if problem:
                r.error(f"{p}.bind", problem)
        elif server.bind and not H.is_ip(server.bind):
            r.error(f"{p}.bind", f"bind {server.bind!r} must be an IP address or a unix:// path")
        port = server.port
        protocol = ""
        if port is None:
            r.error(f"{p}.port", "port is required")
        else:
            if port.number is None:
                r.error(f"{p}.port", "port number is required")
            else:
                _port(r, f"{p}.port.number", port.number, allow_zero=unix)
                if unix and port.number != 0:
                    r.error(f"{p}.port.number", "port number must be 0 with a unix:// bind")
            if not port.name:
                r.error(f"{p}.port", "port name is required")
            elif port.name in port_names:
                r.error(f"{p}.port.name", f"port name {port.name!r} is not unique: also used by "
                        f"spec.servers[{port_names[port.name]}]")
            else:
                port_names[port.name] = i
            protocol = port.protocol
            if not protocol:
                r.error(f"{p}.port", "port protocol is required")
            elif protocol not in PROTOCOLS:
                r.error(f"{p}.port.protocol", f"invalid protocol {protocol!r} (one of "
                        + ", ".join(PROTOCOLS) + ")")
            if port.target_port is not None:
                r.error(f"{p}.port.targetPort", "targetPort has no effect on Gateways; remove it")
        if not server.hosts:
            r.error(f"{p}.hosts", "at least one host is required")
        for j, host in enumerate(server.hosts):
            problem = _gateway_host_error(host)
            if problem:
                r.error(f"{p}.hosts[{j}]", problem)
        if server.name:
            if server.name in server_names:
                r.warn(f"{p}.name", f"server name {server.name!r} is not unique: also used by "
                       f"spec.servers[{server_names[server.name]}]")
            server_names[server.name] = i
        _validate_server_tls(server.tls, protocol, p, r)


def _validate_certificates(tls: Any, t: str, r: Reporter) -> None:
    """Istio's validateTLSOptions for SIMPLE, MUTUAL and OPTIONAL_MUTUAL servers."""
    certs = set(tls.cert_fields)
    sources = sum((("serverCertificate" in certs and "privateKey" in certs),
                   "credentialName" in certs, "credentialNames" in certs,
                   bool(tls.tls_certificates)))
    if sources > 1:
        r.error(t, "only one of serverCertificate/privateKey, credentialName, "
                "credentialNames, tlsCertificates may be set")
    mutual = tls.mode in ("MUTUAL", "OPTIONAL_MUTUAL")
    if tls.mode in ("SIMPLE", "MUTUAL", "OPTIONAL_MUTUAL") and \
            ("credentialName" in certs or "credentialNames" in certs):
        return  # fetched remotely: nothing more is required
    if mutual and "caCertificates" not in certs and "caCertCredentialName" not in certs:
        r.error(t, f"{tls.mode} TLS requires caCertificates (a client CA bundle) or a "
                "credentialName")
    if len(tls.tls_certificates) > 2:
        r.warn(f"{t}.tlsCertificates", f"{tls.mode} TLS can support up to 2 server "
               "certificates")
    pairs = tls.tls_certificates or (("serverCertificate" in certs, "privateKey" in certs),)
    for has_cert, has_key in pairs:
        if not has_cert and not has_key and not tls.tls_certificates:
            r.error(t, f"{tls.mode} TLS requires serverCertificate and privateKey, "
                    "credentialName, credentialNames or tlsCertificates")
            break
        if not has_cert:
            r.error(t, f"{tls.mode} TLS requires a server certificate")
        if not has_key:
            r.error(t, f"{tls.mode} TLS requires a private key")
    if "caCrl" in certs:
        if "credentialName" in certs:
            r.error(t, "CRL is not supported with credentialName; put it in the credential")
        if tls.mode == "SIMPLE":
            r.error(t, "CRL is not supported with SIMPLE TLS")


def _validate_server_tls(tls: Any, protocol: str, p: str, r: Reporter) -> None:
    if tls is None:
        if protocol in TLS_PROTOCOLS:
            r.error(p, f"server must have TLS settings for HTTPS/TLS protocols "
                    f"(protocol {protocol} without tls)")
        return
    t = f"{p}.tls"
    if protocol in HTTP_FAMILY:
        if tls.mode not in ("PASSTHROUGH", "AUTO_PASSTHROUGH") or \
                {"caCertificates", "privateKey", "serverCertificate"} & set(tls.cert_fields):
            r.error(t, f"server cannot have TLS settings for plain text {protocol} ports "
                    "(only httpsRedirect)")
    elif protocol and protocol not in TLS_PROTOCOLS:
        r.error(t, f"server cannot have TLS settings for non-HTTPS/TLS protocol {protocol}")
    elif tls.https_redirect:
        r.warn(f"{t}.httpsRedirect", "httpsRedirect only applies to HTTP servers")
    if tls.mode not in TLS_MODES:
        r.error(f"{t}.mode", f"invalid TLS mode {tls.mode!r} (one of " + ", ".join(TLS_MODES) + ")")
        return
    certs = set(tls.cert_fields)
    if tls.mode in ("PASSTHROUGH", "AUTO_PASSTHROUGH"):
        if certs:
            r.warn(t, f"{tls.mode} does not terminate TLS: certificates will be ignored ("
                   + ", ".join(sorted(certs)) + ")")
    elif tls.mode == "ISTIO_MUTUAL":
        if certs:
            r.error(t, "ISTIO_MUTUAL TLS cannot have certificate fields: "
                    + ", ".join(sorted(certs)))
    else:
        _validate_certificates(tls, t, r)
    for field, value in (("minProtocolVersion", tls.min_protocol_version),
                         ("maxProtocolVersion", tls.max_protocol_version)):
        if value and value not in TLS_VERSIONS:
            r.error(f"{t}.{field}", f"invalid TLS version {value!r} (one of "
                    + ", ".join(TLS_VERSIONS) + ")")
    lo, hi = tls.min_protocol_version, tls.max_protocol_version
    if lo in TLS_VERSIONS[1:] and hi in TLS_VERSIONS[1:] and TLS_VERSIONS.index(lo) > \
            TLS_VERSIONS.index(hi):
        r.error(t, f"minProtocolVersion {lo} is higher than maxProtocolVersion {hi}")


def _validate_client_tls(tp: TrafficPolicy, p: str, r: Reporter) -> None:
    """DestinationRule ``tls`` (origination, served by tsgate.tls.client)."""
    tls = tp.tls
    if tp.tls_mode == "ISTIO_MUTUAL":
        r.warn(f"{p}.tls.mode", "ISTIO_MUTUAL needs Istio's mesh certificates, which tsgate "
               "does not have: connections to this host are not TLS-originated")
        return
    if tls is None or tls.mode not in ("SIMPLE", "MUTUAL"):
        return
    if tls.mode == "MUTUAL" and not tls.credential_name and \
            not (tls.client_certificate and tls.private_key):
        r.error(f"{p}.tls", "MUTUAL TLS requires clientCertificate and privateKey (or "
                "credentialName)")
    if tls.mode == "SIMPLE" and (tls.client_certificate or tls.private_key):
        r.warn(f"{p}.tls", "clientCertificate/privateKey are only sent with mode MUTUAL")
    if tls.insecure_skip_verify and (tls.ca_certificates or tls.subject_alt_names):
        r.warn(f"{p}.tls.insecureSkipVerify", "insecureSkipVerify: the server is not "
               "verified, caCertificates and subjectAltNames are ignored")


# ----------------------------------------------------------- VirtualService


def gateway_ref_error(ref: str) -> Optional[str]:
    """Why a VirtualService ``gateways`` entry is malformed, or None."""
    if ref == "mesh":
        return None
    namespace, slash, name = ref.partition("/")
    if slash:
        problem = H.istio_label_error(namespace)
        if problem:
            return f"namespace of gateway {ref!r}: {problem}"
        problem = H.istio_label_error(name)
        return f"gateway name in {ref!r}: {problem}" if problem else None
    if "." in ref:
        return None  # legacy FQDN form; warned about separately
    problem = H.istio_label_error(ref)
    return f"gateway {ref!r}: {problem}" if problem else None


def _vs_host_error(vs: VirtualService, host: str, *, sni: bool) -> Optional[str]:
    """Istio's host check: gateway-bound VSs with sniHosts may use outbound_ names."""
    applies_to_gateway = bool(vs.gateways) and "mesh" not in vs.gateways
    if applies_to_gateway and sni and host.startswith(H.AUTO_SNI_PREFIX):
        return H.auto_sni_error(host)
    return H.istio_wildcard_domain_error(host)


def _has_sni(vs: VirtualService) -> bool:
    return any(m.sni_hosts for rule in vs.tls for m in rule.match)


def validate_virtual_service(vs: VirtualService, r: Reporter) -> None:
    if not vs.hosts:
        # a delegate: Istio allows only http routes and no gateways
        if vs.gateways:
            r.error("spec.hosts", "at least one host is required: without hosts this is a "
                    "delegate, and a delegate virtual service must have no gateways specified")
        if vs.tls:
            r.error("spec.tls", "delegate virtual service (no hosts) must have no tls route "
                    "specified")
        if vs.tcp:
            r.error("spec.tcp", "delegate virtual service (no hosts) must have no tcp route "
                    "specified")
    applies_to_gateway = bool(vs.gateways) and "mesh" not in vs.gateways
    mesh = not applies_to_gateway
    sni = _has_sni(vs)
    all_valid = True
    for i, host in enumerate(vs.hosts):
        p = f"spec.hosts[{i}]"
        problem = _vs_host_error(vs, host, sni=sni)
        if problem:
            if not H.is_ip(host):
                r.error(p, problem)
                all_valid = False
        elif mesh and host == "*":
            r.error(p, "wildcard host '*' is not allowed for virtual services bound to the "
                    "mesh gateway (list a gateway in spec.gateways)")
            all_valid = False
    if all_valid:
        for i, host in enumerate(vs.hosts):
            for j in range(i + 1, len(vs.hosts)):
                if H.matches(host, vs.hosts[j]):
                    r.error(f"spec.hosts[{j}]", f"duplicate or overlapping host "
                            f"{vs.hosts[j]!r}: overlaps spec.hosts[{i}] {host!r}")
    for i, ref in enumerate(vs.gateways):
        problem = gateway_ref_error(ref)
        if problem:
            r.error(f"spec.gateways[{i}]", problem)
        elif "." in ref and "/" not in ref:
            parts = ref.split(".")
            r.warn(f"spec.gateways[{i}]", f"using legacy gatewayName format {ref!r}; prefer the "
                   f"<namespace>/<name> format: \"{parts[1]}/{parts[0]}\"")
    if not (vs.tcp or vs.tls or vs.http_count):
        r.error("spec", "http, tcp or tls must be provided in virtual service")
    _export_to(r, "spec.exportTo", vs.export_to)
    _validate_rules(vs, "tcp", vs.tcp, r)
    _validate_rules(vs, "tls", vs.tls, r)


def _validate_rules(vs: VirtualService, kind: str, rules: tuple[L4Route, ...], r: Reporter) -> None:
    empty: Optional[int] = None
    seen: dict[L4Match, tuple[int, int]] = {}
    for i, rule in enumerate(rules):
        p = f"spec.{kind}[{i}]"
        if kind == "tls" and not rule.match:
            r.error(p, "TLS route must have at least one match condition")
        if not rule.route:
            r.error(f"{p}.route" if kind == "tcp" else p,
                    "TCP route is required" if kind == "tcp" else "TLS route is required")
        for j, match in enumerate(rule.match):
            _validate_match(vs, kind, match, f"{p}.match[{j}]", r)
        _validate_destinations(rule.route, f"{p}.route", r)
        # Istio's analyzeUnreachableTCPRules / analyzeUnreachableTLSRules
        if not rule.match:
            if empty is not None:
                r.warn(p, f"unreachable rule: spec.{kind}[{empty}] before it matches every "
                       "connection (only the last rule can have no matches)", UNREACHABLE_RULE)
            empty = i
            continue
        if empty is not None:
            r.warn(p, f"unreachable rule: spec.{kind}[{empty}] before it matches every "
                   "connection (first match wins)", UNREACHABLE_RULE)
            continue
        duplicates = 0
        for j, match in enumerate(rule.match):
            mp = f"{p}.match[{j}]"
            if match in seen:
                di, dj = seen[match]
                r.warn(mp, f"ineffective match: the same as spec.{kind}[{di}].match[{dj}]",
                       INEFFECTIVE_MATCH)
                duplicates += 1
            else:
                seen[match] = (i, j)
        if duplicates == len(rule.match):
            r.warn(p, "unreachable rule: all its matches are used by rules before it",
                   UNREACHABLE_RULE)


def _validate_match(vs: VirtualService, kind: str, match: L4Match, mp: str, r: Reporter) -> None:
    _port(r, f"{mp}.port", match.port)
    if vs.gateways and "mesh" not in vs.gateways:
        for field, value in (("sourceLabels", match.source_labels),
                             ("sourceNamespace", match.source_namespace),
                             ("destinationSubnets", match.destination_subnets)):
            if value:
                r.unserved(f"{mp}.{field}", f"{field} is not evaluated at gateways (Istio "
                           "ignores it there; so does tsgate): the match ignores it")
    for k, subnet in enumerate(match.destination_subnets):
        problem = H.subnet_error(subnet)
        if problem:
            r.error(f"{mp}.destinationSubnets[{k}]", problem)
    for k, ref in enumerate(match.gateways):
        problem = gateway_ref_error(ref)
        if problem:
            r.error(f"{mp}.gateways[{k}]", problem)
    _labels(r, f"{mp}.sourceLabels", match.source_labels)
    if kind != "tls":
        return
    if not match.sni_hosts:
        r.error(mp, "at least one sniHosts entry is required in a TLS match")
    gateway = "mesh" not in vs.gateways
    for k, sni in enumerate(match.sni_hosts):
        sp = f"{mp}.sniHosts[{k}]"
        if gateway and sni.startswith(H.AUTO_SNI_PREFIX):
            problem = H.auto_sni_error(sni)
        else:
            problem = H.istio_wildcard_domain_error(sni)
        if problem:
            if H.is_ip(sni):
                r.warn(sp, f"sniHost {sni!r} is an IP address; clients do not send IPs as SNI")
            else:
                r.error(sp, problem)
            continue
        if H.partial_wildcard(sni):
            r.unserved(sp, f"partial wildcard sniHost {sni!r}: Envoy refuses such server "
                       "names and so does tsgate; this sniHost is skipped")
        if vs.hosts and not any(H.subset_of(sni, host) for host in vs.hosts):
            r.error(sp, f"SNI host {sni!r} is not a compatible subset of any of the virtual "
                    "service hosts: [" + ", ".join(vs.hosts) + "]")


def _validate_destinations(route: tuple[RouteDestination, ...], p: str, r: Reporter) -> None:
    total = 0
    for i, rd in enumerate(route):
        dp = f"{p}[{i}].destination"
        d = rd.destination
        if not d.host:
            r.error(dp, "destination host is required")
        elif d.host == "*":
            r.error(f"{dp}.host", "destination host must not be '*'")
        else:
            problem = H.istio_wildcard_domain_error(d.host)
            if problem:
                if H.is_ip(d.host):
                    problem += " (Istio takes no IP address here: name the host in a " \
                               "ServiceEntry with STATIC endpoints)"
                r.error(f"{dp}.host", problem)
        if d.subset:
            problem = H.istio_label_error(d.subset)
            if problem:
                r.error(f"{dp}.subset", f"subset name {problem}")
        _port(r, f"{dp}.port.number", d.port)
        if rd.weight is not None:
            if rd.weight < 0:
                r.error(f"{p}[{i}].weight", f"weight {rd.weight} must be >= 0")
            elif rd.weight > MAX_INT32:
                r.error(f"{p}[{i}].weight", f"weight {rd.weight} is larger than {MAX_INT32}")
            else:
                total += rd.weight
    if len(route) > 1 and total == 0 and all((rd.weight or 0) >= 0 for rd in route):
        r.error(p, "total destination weight = 0: give the destinations relative weights")


# ------------------------------------------------------------- ServiceEntry


def validate_service_entry(se: ServiceEntry, r: Reporter) -> None:
    """Istio's ValidateServiceEntry, rule for rule."""
    if se.workload_selector is not None:
        _labels(r, "spec.workloadSelector.labels", se.workload_selector)
        if not se.workload_selector:
            r.warn("spec.workloadSelector", "service entry: workload selector has no labels, "
                   "will be applied to all services in namespace")
    if se.endpoints and se.workload_selector is not None:
        r.error("spec.workloadSelector", "only one of endpoints or workloadSelector may be set")
    if not se.hosts:
        r.error("spec.hosts", "at least one host is required")
    for i, host in enumerate(se.hosts):
        p = f"spec.hosts[{i}]"
        if host == "*":
            r.error(p, "host '*' is not allowed here")
            continue
        problem = H.istio_wildcard_domain_error(host)
        if problem:
            r.error(p, problem)
        elif se.resolution != "DYNAMIC_DNS" and H.partial_wildcard(host):
            r.warn(p, f"partial wildcard {host!r} not allowed (Istio warns; tsgate matches "
                   "no destination host against it: only exact names and '*.' wildcards)")
    for i, address in enumerate(se.addresses):
        problem = H.subnet_error(address)
        if problem:
            r.error(f"spec.addresses[{i}]", problem)
        elif "/" in address and se.resolution not in ("NONE", "STATIC"):
            r.error(f"spec.addresses[{i}]", f"CIDR address {address!r} is only allowed with "
                    "resolution NONE or STATIC")
    numbers: dict[int, int] = {}
    names: dict[str, int] = {}
    warned_addresses = False
    for i, port in enumerate(se.ports):
        p = f"spec.ports[{i}]"
        if port.name in names:
            r.error(f"{p}.name", f"port name {port.name!r} is not unique: also "
                    f"spec.ports[{names[port.name]}]")
        names.setdefault(port.name, i)
        number = port.number or 0
        if number in numbers:
            r.error(f"{p}.number", f"port number {number} is not unique: also "
                    f"spec.ports[{numbers[number]}]")
        numbers.setdefault(number, i)
        if port.target_port:
            _port(r, f"{p}.targetPort", port.target_port)
        if not se.addresses and port.protocol in ("", "TCP") and not warned_addresses:
            warned_addresses = True
            # istioctl analyze warns (sidecars match TCP by destination IP); a gateway
            # routes by the VirtualService destination, so for tsgate it is a notice.
            r.add(INFO, p, "addresses are required for ports serving TCP (or unset) protocol "
                  "when IP Autoallocation is not enabled (for sidecars; tsgate routes by the "
                  "VirtualService destination and does not need them)", ADDRESSES_REQUIRED)
        if not port.name:
            r.error(p, "port name is required")
        elif H.istio_label_error(port.name):
            r.error(f"{p}.name", f"port name {H.istio_label_error(port.name)}")
        if port.protocol and port.protocol not in PROTOCOLS:
            r.error(f"{p}.protocol", f"invalid protocol {port.protocol!r} (one of "
                    + ", ".join(PROTOCOLS) + ")")
        if port.number is None:
            r.error(p, "port number is required")
        else:
            _port(r, f"{p}.number", port.number)
    if se.location not in LOCATIONS:
        r.error("spec.location", f"invalid location {se.location!r} (one of "
                + ", ".join(LOCATIONS) + ")")
    port_names = set(names)
    if se.resolution == "NONE":
        if se.endpoints:
            r.error("spec.endpoints", "no endpoints should be provided for resolution NONE")
        if se.workload_selector is not None:
            r.warn("spec.workloadSelector", "workloadSelector should not be set when resolution "
                   "mode is NONE")
    elif se.resolution == "STATIC":
        for i, ep in enumerate(se.endpoints):
            _validate_workload(ep, f"spec.endpoints[{i}]", r, port_names, fqdn=False)
    elif se.resolution in ("DNS", "DNS_ROUND_ROBIN"):
        if not se.endpoints:
            for i, host in enumerate(se.hosts):
                problem = H.istio_fqdn_error(host)
                if problem:
                    what = f"wildcard host {host!r} needs endpoints" if host.startswith("*") \
                        else f"host {host!r} must be an FQDN without endpoints"
                    r.error(f"spec.hosts[{i}]", f"{what} with resolution {se.resolution} "
                            f"(Istio: {problem})")
                    break
        if se.resolution == "DNS_ROUND_ROBIN" and len(se.endpoints) > 1:
            r.error("spec.endpoints", "resolution DNS_ROUND_ROBIN allows at most one endpoint")
        for i, ep in enumerate(se.endpoints):
            p = f"spec.endpoints[{i}]"
            if not H.is_ip(ep.address) and H.istio_fqdn_error(ep.address):
                r.error(f"{p}.address", f"endpoint address {ep.address!r} is not a valid FQDN "
                        "or an IP address")
            _labels(r, f"{p}.labels", ep.labels)
            _endpoint_ports(ep, p, r, port_names)
        if se.addresses and len(se.hosts) > 1 and \
                any(pt.protocol in ("", "TCP", "MONGO", "REDIS", "MYSQL") for pt in se.ports):
            r.warn("spec.hosts", "service entry can not have more than one host specified "
                   "simultaneously with address and tcp port")
    elif se.resolution == "DYNAMIC_DNS":
        for i, host in enumerate(se.hosts):
            if not host.startswith("*"):
                r.error(f"spec.hosts[{i}]", "host must be wildcarded for resolution mode "
                        "DYNAMIC_DNS")
        if se.addresses:
            r.error("spec.addresses", "addresses cannot be set for resolution type DYNAMIC_DNS")
        if se.endpoints:
            r.error("spec.endpoints", "endpoints cannot be set for resolution type DYNAMIC_DNS")
        for i, port in enumerate(se.ports):
            if port.protocol not in ("HTTP", "TLS", "GRPC", "HTTP2"):
                r.error(f"spec.ports[{i}].protocol", "only HTTP, TLS, GRPC, and HTTP2 protocols "
                        "are supported for resolution type DYNAMIC_DNS")
    else:
        r.error("spec.resolution", f"invalid resolution {se.resolution!r} (one of "
                + ", ".join(RESOLUTIONS) + ")")
    if se.resolution != "NONE" and len(se.hosts) > 1:
        for port in se.ports:
            if port.protocol not in HTTP_FAMILY + TLS_PROTOCOLS:
                r.error("spec.hosts", "multiple hosts provided with non-HTTP, non-TLS ports")
                break
    _export_to(r, "spec.exportTo", se.export_to, service_entry=True)


def _endpoint_ports(ep: WorkloadSpec, p: str, r: Reporter,
                    port_names: Optional[set[str]]) -> None:
    for name, number in ep.ports:
        pp = join_path(f"{p}.ports", name)
        if port_names is not None and name not in port_names:
            r.error(pp, f"endpoint port name {name!r} is not a port name of the service ("
                    + ", ".join(sorted(port_names)) + ")")
        if H.istio_label_error(name):
            r.error(pp, f"invalid port name: {name}")
        if not 1 <= number <= 65535:
            r.error(pp, f"port number {number} must be in the range 1..65535")


def _validate_workload(ep: WorkloadSpec, p: str, r: Reporter,
                       port_names: Optional[set[str]], *, fqdn: bool) -> None:
    """Istio's validateWorkloadEntry (``fqdn``: a name is allowed as the address)."""
    addr = ep.address
    if not addr:
        if not ep.network:
            r.error(p, "address is required")
            return
        r.warn(p, f"address is unset with network {ep.network!r} (tsgate cannot connect to "
               "it: the endpoint is skipped)")
    if addr.startswith("unix://"):
        problem = H.unix_address_error(addr[len("unix://"):])
        if problem:
            r.error(f"{p}.address", problem)
        if ep.ports:
            r.error(f"{p}.ports", f"unix endpoint {addr} must not include ports")
        if port_names is not None and len(port_names) != 1:
            r.error(f"{p}.address", "exactly 1 service port required for unix endpoints")
    elif addr and not H.is_ip(addr):
        if not fqdn:
            r.error(f"{p}.address", f"address {addr!r} must be an IP address with resolution "
                    "STATIC")
        elif H.istio_fqdn_error(addr):
            r.error(f"{p}.address", f"endpoint address {addr!r} is not a valid FQDN or an IP "
                    "address")
    _endpoint_ports(ep, p, r, port_names)
    if ep.weight is not None and not 0 <= ep.weight <= MAX_UINT32:
        r.error(f"{p}.weight", f"weight {ep.weight} is out of range 0-{MAX_UINT32}")
    _labels(r, f"{p}.labels", ep.labels)


# ---------------------------------------------------------- DestinationRule


def validate_destination_rule(dr: DestinationRule, r: Reporter) -> None:
    if not dr.host:
        r.error("spec", "host is required")
    else:
        problem = H.domain_error(dr.host)
        if problem:
            r.error("spec.host", problem)
    if dr.traffic_policy is not None:
        _validate_policy(dr.traffic_policy, "spec.trafficPolicy", r, top=True)
    names: dict[str, int] = {}
    for i, subset in enumerate(dr.subsets):
        p = f"spec.subsets[{i}]"
        if not subset.name:
            r.error(p, "subset name is required")
        else:
            problem = H.istio_label_error(subset.name)
            if problem:
                r.error(f"{p}.name", f"subset name {problem}")
            if subset.name in names:
                r.error(f"{p}.name", f"duplicate subset name {subset.name!r}: also "
                        f"spec.subsets[{names[subset.name]}]")
            names[subset.name] = i
        _labels(r, f"{p}.labels", subset.labels)
        if subset.traffic_policy is not None:
            _validate_policy(subset.traffic_policy, f"{p}.trafficPolicy", r, top=True)
    _export_to(r, "spec.exportTo", dr.export_to)
    if dr.workload_selector is not None:
        _labels(r, "spec.workloadSelector.matchLabels", dr.workload_selector)


def _duration(r: Reporter, path: str, value: Optional[float], *, zero_ok: bool = False) -> None:
    if value is None or (zero_ok and value == 0):
        return
    if value < MIN_DURATION:
        r.error(path, "duration must be at least 1ms" + (" (or 0s to disable)" if zero_ok else ""))
    elif abs(value * 1000 - round(value * 1000)) > 1e-6:
        r.error(path, "only durations to ms precision are supported")


def _validate_policy(tp: TrafficPolicy, p: str, r: Reporter, *, top: bool) -> None:
    if top and not tp.set_fields:
        r.error(p, "trafficPolicy must have at least one field")
    if tp.lb_simple is not None and tp.lb_simple not in LB_SIMPLE:
        r.error(f"{p}.loadBalancer.simple", f"invalid load balancer {tp.lb_simple!r} (one of "
                + ", ".join(LB_SIMPLE) + ")")
    if len(tp.consistent_hash) > 1:
        r.error(f"{p}.loadBalancer.consistentHash", "only one hash key may be set, got "
                + ", ".join(tp.consistent_hash))
    if tp.consistent_hash and tp.lb_simple is not None:
        r.error(f"{p}.loadBalancer", "only one of simple or consistentHash may be set")
    http_keys = [k for k in tp.consistent_hash if k != "useSourceIp"]
    if http_keys:
        r.unserved(f"{p}.loadBalancer.consistentHash", f"{http_keys[0]} hashes on HTTP data; "
               "at layer 4 only useSourceIp applies")
    if tp.warmup is not None:
        warm = dict(tp.warmup)
        wp = f"{p}.loadBalancer.warmup"
        if warm.get("duration") is None:
            r.error(wp, "warmup duration is required")
        else:
            _duration(r, f"{wp}.duration", parse_duration(warm["duration"]))
        if isinstance(warm.get("minimumPercent"), (int, float)) and warm["minimumPercent"] > 100:
            r.error(f"{wp}.minimumPercent", "minimumPercent value should be less than or equal "
                    "to 100")
        if isinstance(warm.get("aggression"), (int, float)) and warm["aggression"] <= 0:
            r.error(f"{wp}.aggression", "aggression should be greater than 0")
        r.unserved(wp, "warmup (slow start) is not implemented by tsgate: new endpoints get "
                   "their full share at once")
    if tp.maglev_table_size is not None:
        size = tp.maglev_table_size
        mp = f"{p}.loadBalancer.consistentHash.maglev.tableSize"
        if size == 0:
            r.error(mp, "tableSize must be set for maglev")
        elif size >= 5000011:
            r.error(mp, "tableSize must be less than 5000011 for maglev")
        elif size >= 4 and any(size % k == 0 for k in range(2, int(size ** 0.5) + 1)):
            r.error(mp, "tableSize must be a prime number for maglev")
    if tp.connection_pool_fields is not None and not tp.connection_pool_fields:
        r.error(f"{p}.connectionPool", "connection pool must have at least one field")
    tcp = tp.tcp
    if tcp is not None:
        cp = f"{p}.connectionPool.tcp"
        if tcp.max_connections is not None and tcp.max_connections < 0:
            r.error(f"{cp}.maxConnections", f"maxConnections {tcp.max_connections} must be >= 0")
        _duration(r, f"{cp}.connectTimeout", tcp.connect_timeout)
        _duration(r, f"{cp}.idleTimeout", tcp.idle_timeout, zero_ok=True)
        _duration(r, f"{cp}.maxConnectionDuration", tcp.max_connection_duration)
        _duration(r, f"{cp}.tcpKeepalive.time", tcp.keepalive_time)
        _duration(r, f"{cp}.tcpKeepalive.interval", tcp.keepalive_interval)
        if tcp.keepalive_probes is not None and tcp.keepalive_probes < 0:
            r.error(f"{cp}.tcpKeepalive.probes", "probes must be >= 0")
    tls = set(tp.tls_fields)
    if "insecureSkipVerify" in tls:
        if tp.tls_mode == "SIMPLE" and tls & {"caCertificates", "credentialName",
                                              "subjectAltNames"}:
            r.error(f"{p}.tls.insecureSkipVerify", "cannot specify caCertificates or "
                    "credentialName or subjectAltNames when insecureSkipVerify is set true")
        if tp.tls_mode == "MUTUAL" and tls & {"caCertificates", "subjectAltNames"}:
            r.error(f"{p}.tls.insecureSkipVerify", "cannot specify caCertificates or "
                    "subjectAltNames when insecureSkipVerify is set true")
    if tp.tls_mode in ("SIMPLE", "MUTUAL") and "credentialName" in tls:
        if tls & {"clientCertificate", "caCertificates", "privateKey", "caCrl"}:
            r.error(f"{p}.tls", "cannot specify client certificates or CA certificate or CA "
                    "CRL if credentialName is set")
    elif tp.tls_mode == "MUTUAL":
        if "clientCertificate" not in tls:
            r.error(f"{p}.tls", "client certificate required for mutual tls")
        if "privateKey" not in tls:
            r.error(f"{p}.tls", "private key required for mutual tls")
    if {"localityLbSetting", "zoneAwareLbSetting"} <= set(tp.lb_fields):
        r.error(f"{p}.loadBalancer", "only one of localityLbSetting and zoneAwareLbSetting can "
                "be set")
    if tp.tls_mode is not None:
        if tp.tls_mode not in CLIENT_TLS_MODES:
            r.error(f"{p}.tls.mode", f"invalid TLS mode {tp.tls_mode!r} (one of "
                    + ", ".join(CLIENT_TLS_MODES) + ")")
        else:
            _validate_client_tls(tp, p, r)
    if tp.proxy_protocol is not None and tp.proxy_protocol not in ("V1", "V2"):
        r.error(f"{p}.proxyProtocol.version",
                f"invalid PROXY protocol version {tp.proxy_protocol!r} (V1 or V2)")
    if tp.tunnel_protocol is not None:
        if tp.tunnel_protocol not in ("CONNECT", "POST"):
            r.error(f"{p}.tunnel.protocol", f"invalid tunnel protocol {tp.tunnel_protocol!r} "
                    "(CONNECT or POST)")
        r.unserved(f"{p}.tunnel", "tunnel settings are not supported by tsgate and are ignored")
        if tp.proxy_protocol is not None:
            r.error(f"{p}.tunnel", "tunnel cannot be combined with proxyProtocol")
    od = dict(tp.outlier_detection)
    for key in ("maxEjectionPercent", "minHealthPercent"):
        if key in od and od[key] is not None and not 0 <= od[key] <= 100:
            r.error(f"{p}.outlierDetection.{key}", f"{key} {od[key]} must be in 0-100")
    for key in ("consecutiveGatewayErrors", "consecutive5xxErrors", "consecutiveErrors",
                "consecutiveLocalOriginFailures"):
        if key in od and od[key] is not None and od[key] < 0:
            r.error(f"{p}.outlierDetection.{key}", f"{key} {od[key]} must be >= 0")
    if (od.get("consecutiveLocalOriginFailures") or 0) > 0 and \
            not od.get("splitExternalLocalOriginErrors"):
        r.error(f"{p}.outlierDetection.consecutiveLocalOriginFailures", "outlier detection "
                "consecutive local origin failures is specified, but split external local "
                "origin errors is set to false")
    for key in ("interval", "baseEjectionTime"):
        if isinstance(od.get(key), str):
            _duration(r, f"{p}.outlierDetection.{key}", parse_duration(od[key]))
    if len(tp.port_level) > 4096:
        r.error(f"{p}.portLevelSettings", "at most 4096 portLevelSettings are allowed")
    seen: dict[int, int] = {}
    for i, (number, policy) in enumerate(tp.port_level):
        pp = f"{p}.portLevelSettings[{i}]"
        _port(r, f"{pp}.port.number", number)
        if number in seen:
            r.error(f"{pp}.port.number", f"port {number} already has settings in "
                    f"portLevelSettings[{seen[number]}]")
        seen[number] = i
        _validate_policy(policy, pp, r, top=False)


