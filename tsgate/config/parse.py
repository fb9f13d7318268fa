"""
Documents to model records: kinds, apiVersions, metadata, unknown fields.

Objects that are not Istio networking kinds (the Deployment and Service in
``echo.yaml``) are skipped with a one-line notice; Istio kinds with an
unknown apiVersion, unknown fields or wrongly typed values are errors, and
such a resource is not built (its other errors are still all reported).
Defaults Istio applies are applied here: namespace ``default`` (or the
``--namespace`` given), TLS mode ``PASSTHROUGH``, ServiceEntry location
``MESH_EXTERNAL`` and resolution ``NONE``.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Optional

from tsgate.config.authz import build_authorization_policy
from tsgate.config.diagnostics import ERROR, INFO, WARNING, Diagnostic
from tsgate.config.loader import Document, join_path
from tsgate.config.model import (
    ClientTLS,
    Destination,
    DestinationRule,
    Gateway,
    L4Match,
    L4Route,
    Labels,
    Meta,
    Port,
    Resource,
    RouteDestination,
    Server,
    ServerTLS,
    ServiceEntry,
    ServicePort,
    Subset,
    TcpSettings,
    TrafficPolicy,
    VirtualService,
    WorkloadEntry,
    WorkloadSpec,
)
from tsgate.config.schema import METADATA, SPECS, TOP_LEVEL, parse_duration, schema_errors, suggest

ISTIO_GROUP = "networking.istio.io"
#: Kubernetes Gateway API kinds: tsgate.config.gatewayapi
GATEWAY_API_GROUP = "gateway.networking.k8s.io"
ISTIO_VERSIONS = ("v1alpha3", "v1beta1", "v1")
#: Kinds tsgate reads from other Istio API groups: kind -> (group, versions).
OTHER_GROUPS: dict[str, tuple[str, tuple[str, ...]]] = {
    "AuthorizationPolicy": ("security.istio.io", ("v1beta1", "v1")),
}
#: The other kinds of networking.istio.io: valid, not used by tsgate.
OTHER_ISTIO_KINDS = ("Sidecar", "EnvoyFilter", "WorkloadGroup", "ProxyConfig")
#: Server TLS fields that carry certificates (ignored with PASSTHROUGH).
CERT_FIELDS = (
    "serverCertificate", "privateKey", "caCertificates", "caCrl", "credentialName",
    "credentialNames", "caCertCredentialName", "tlsCertificates", "subjectAltNames",
    "verifyCertificateSpki", "verifyCertificateHash",
)


def parse_documents(
    documents: Iterable[Document], default_namespace: str = "default"
) -> tuple[list[Resource], list[Diagnostic]]:
    """Every Istio networking object in ``documents``, in order, and the findings."""
    resources: list[Resource] = []
    diags: list[Diagnostic] = []
    for doc in documents:
        for item in _expand_lists(doc, diags):
            resource = parse_document(item, default_namespace, diags)
            if resource is not None:
                resources.append(resource)
    return resources, diags


def _expand_lists(doc: Document, diags: list[Diagnostic]) -> list[Document]:
    """A ``kind: List`` (``kubectl get -o yaml``) is its items."""
    data = doc.data
    if not (isinstance(data, dict) and data.get("kind") == "List"
            and isinstance(data.get("items"), list)):
        return [doc]
    out = []
    for i, item in enumerate(data["items"]):
        prefix = join_path("items", i)
        positions = {p[len(prefix) + 1:]: line for p, line in doc.positions.items()
                     if p.startswith(prefix + ".")}
        out.append(Document(doc.file, doc.index, doc.positions.get(prefix, doc.line), item,
                            positions))
    return out


def parse_document(doc: Document, default_namespace: str,
                   diags: list[Diagnostic]) -> Optional[Resource]:
    data = doc.data

    def at(severity: str, path: str, message: str, resource: str = "") -> None:
        line = doc.line_of(path) if path else doc.line
        diags.append(Diagnostic(severity, message, doc.file, line, resource, path))

    if not isinstance(data, dict):
        at(ERROR, "", "expected a Kubernetes object (a mapping with apiVersion and kind), "
           f"got {type(data).__name__}")
        return None
    kind, api_version = data.get("kind"), data.get("apiVersion")
    if not isinstance(kind, str) or not kind:
        at(ERROR, "kind" if "kind" in data else "", "kind is required (a string)")
        return None
    if not isinstance(api_version, str) or not api_version:
        at(ERROR, "apiVersion" if "apiVersion" in data else "", "apiVersion is required (a string)")
        return None
    group, _, version = api_version.rpartition("/")
    metadata = data.get("metadata")
    name = metadata.get("name") if isinstance(metadata, dict) else None
    label = f"{kind} {name}" if isinstance(name, str) else kind
    if group == GATEWAY_API_GROUP:
        from tsgate.config.gatewayapi.parse import parse_api_object

        api_object: Optional[Resource] = parse_api_object(
            doc, kind, api_version, default_namespace, diags, label)
        return api_object
    home, versions = OTHER_GROUPS.get(kind, (ISTIO_GROUP, ISTIO_VERSIONS))
    if group != home:
        note = "not an Istio networking kind"
        if kind in OTHER_GROUPS:
            note = f"{api_version} is not {home} (AuthorizationPolicy is {home})"
        elif group == "security.istio.io":
            note = "tsgate does not use this kind"
        elif kind in SPECS or kind in ("TCPRoute", "TLSRoute", "HTTPRoute", "GRPCRoute"):
            note = (f"{api_version} is not {ISTIO_GROUP} "
                    "(the Kubernetes Gateway API is not supported)")
        at(INFO, "", f"skipped {label} ({api_version}): {note}")
        return None
    if kind not in SPECS:
        if kind in OTHER_ISTIO_KINDS:
            at(INFO, "", f"skipped {label} ({api_version}): tsgate does not use this kind")
        else:
            known = {k: 1 for k in (*SPECS, *OTHER_ISTIO_KINDS)}
            at(ERROR, "kind", f"unknown kind {kind!r} in {ISTIO_GROUP}" + suggest(kind, known))
        return None
    if version not in versions:
        at(ERROR, "apiVersion", f"unsupported apiVersion {api_version!r} for {kind}; use "
           + ", ".join(f"{home}/{v}" for v in versions))
        return None

    namespace = default_namespace
    if isinstance(metadata, dict) and isinstance(metadata.get("namespace"), str) \
            and metadata["namespace"]:
        namespace = metadata["namespace"]
    ref = f"{kind} {namespace}/{name if isinstance(name, str) else '<unnamed>'}"
    errors: list[Diagnostic] = []

    def make(path: str, message: str) -> Diagnostic:
        return Diagnostic(ERROR, message, doc.file, doc.line_of(path), ref, path)

    for key in data:
        if key not in TOP_LEVEL:
            errors.append(make(join_path("", key), f"unknown field {str(key)!r} in {kind}"
                               + suggest(str(key), {k: 1 for k in TOP_LEVEL})))
    if metadata is None:
        errors.append(make("", "metadata is required"))
    else:
        errors.extend(schema_errors(metadata, METADATA, "metadata", make))
        if isinstance(metadata, dict) and not metadata.get("name"):
            if isinstance(metadata.get("generateName"), str):
                errors.append(make("metadata.generateName",
                                   "generateName is not supported; set metadata.name"))
            else:
                errors.append(make("metadata", "metadata.name is required"))
    spec = data.get("spec")
    if spec is None:
        spec = {}
    errors.extend(schema_errors(spec, SPECS[kind], "spec", make))
    diags.extend(errors)
    if errors:
        return None
    assert isinstance(metadata, dict) and isinstance(spec, dict)
    meta = Meta(
        kind=kind, api_version=api_version, name=metadata["name"], namespace=namespace,
        labels=_labels(metadata.get("labels")), annotations=_labels(metadata.get("annotations")),
        file=doc.file, line=doc.line, index=doc.index, positions=doc.positions,
    )
    resource: Resource = BUILDERS[kind](meta, spec)
    return resource


def _labels(value: Any) -> Labels:
    if not value:
        return ()
    return tuple((str(k), "" if v is None else str(v)) for k, v in value.items())


def _strs(value: Any) -> tuple[str, ...]:
    return tuple(value or ())


def _dur(value: Any) -> Optional[float]:
    return None if value is None else parse_duration(value)


# ----------------------------------------------------------------- builders


def build_gateway(meta: Meta, spec: dict[str, Any]) -> Gateway:
    servers = []
    for s in spec.get("servers") or ():
        p = s.get("port")
        port = None if p is None else Port(
            number=p.get("number"), name=p.get("name") or "",
            protocol=(p.get("protocol") or "").upper(), target_port=p.get("targetPort"))
        t = s.get("tls")
        tls = None if t is None else ServerTLS(
            mode=t.get("mode") or "PASSTHROUGH",
            https_redirect=bool(t.get("httpsRedirect")),
            cert_fields=tuple(f for f in CERT_FIELDS if t.get(f)),
            min_protocol_version=t.get("minProtocolVersion") or "",
            max_protocol_version=t.get("maxProtocolVersion") or "",
            **_server_tls_files(t))
        servers.append(Server(port=port, hosts=_strs(s.get("hosts")), bind=s.get("bind") or "",
                              name=s.get("name") or "", tls=tls))
    return Gateway(meta, selector=_labels(spec.get("selector")), servers=tuple(servers))


def _server_tls_files(t: dict[str, Any]) -> dict[str, Any]:
    """The certificate settings of a ServerTLSSettings (served by tsgate.tls)."""
    return {
        "server_certificate": t.get("serverCertificate") or "",
        "private_key": t.get("privateKey") or "",
        "ca_certificates": t.get("caCertificates") or "",
        "ca_crl": t.get("caCrl") or "",
        "credential_name": t.get("credentialName") or "",
        "credential_names": _strs(t.get("credentialNames")),
        "ca_cert_credential_name": t.get("caCertCredentialName") or "",
        "tls_certificates": tuple((c.get("serverCertificate") or "", c.get("privateKey") or "")
                                  for c in t.get("tlsCertificates") or ()
                                  if isinstance(c, dict)),
        "subject_alt_names": _strs(t.get("subjectAltNames")),
        "verify_certificate_spki": _strs(t.get("verifyCertificateSpki")),
        "verify_certificate_hash": _strs(t.get("verifyCertificateHash")),
        "cipher_suites": _strs(t.get("cipherSuites")),
    }


def _client_tls(t: Optional[dict[str, Any]]) -> Optional[ClientTLS]:
    """A DestinationRule's ``tls`` block (ClientTLSSettings)."""
    if t is None:
        return None
    return ClientTLS(
        mode=t.get("mode") or "DISABLE", client_certificate=t.get("clientCertificate") or "",
        private_key=t.get("privateKey") or "", ca_certificates=t.get("caCertificates") or "",
        ca_crl=t.get("caCrl") or "", credential_name=t.get("credentialName") or "",
        subject_alt_names=_strs(t.get("subjectAltNames")), sni=t.get("sni") or "",
        insecure_skip_verify=bool(t.get("insecureSkipVerify")))


def _match(m: dict[str, Any]) -> L4Match:
    subnets = list(m.get("destinationSubnets") or ())
    if m.get("sourceSubnet"):
        subnets.append(m["sourceSubnet"])
    return L4Match(port=m.get("port"), sni_hosts=_strs(m.get("sniHosts")),
                   destination_subnets=tuple(subnets), source_labels=_labels(m.get("sourceLabels")),
                   source_namespace=m.get("sourceNamespace") or "",
                   gateways=_strs(m.get("gateways")))


def _route(r: dict[str, Any]) -> L4Route:
    dests = []
    for d in r.get("route") or ():
        dest = d.get("destination") or {}
        dests.append(RouteDestination(
            Destination(host=dest.get("host") or "", subset=dest.get("subset") or "",
                        port=(dest.get("port") or {}).get("number")),
            weight=d.get("weight")))
    return L4Route(match=tuple(_match(m) for m in r.get("match") or ()), route=tuple(dests))


def build_virtual_service(meta: Meta, spec: dict[str, Any]) -> VirtualService:
    return VirtualService(
        meta, hosts=_strs(spec.get("hosts")), gateways=_strs(spec.get("gateways")),
        tcp=tuple(_route(r) for r in spec.get("tcp") or ()),
        tls=tuple(_route(r) for r in spec.get("tls") or ()),
        http_count=len(spec.get("http") or ()), export_to=_strs(spec.get("exportTo")),
        http_destinations=_http_destinations(spec.get("http") or ()))


def _http_destinations(http: Any) -> tuple[tuple[str, Destination], ...]:
    """Where http routes and mirrors go, for istioctl analyze's subset check."""
    out = []

    def add(path: str, d: Any) -> None:
        if isinstance(d, dict) and isinstance(d.get("host"), str):
            subset = d.get("subset")
            out.append((path, Destination(host=d["host"],
                                          subset=subset if isinstance(subset, str) else "")))

    for i, rule in enumerate(http if isinstance(http, list) else ()):
        if not isinstance(rule, dict):
            continue
        for j, rd in enumerate(rule.get("route") or ()):
            if isinstance(rd, dict):
                add(f"spec.http[{i}].route[{j}].destination", rd.get("destination"))
        add(f"spec.http[{i}].mirror", rule.get("mirror"))
        for k, m in enumerate(rule.get("mirrors") or ()):
            if isinstance(m, dict):
                add(f"spec.http[{i}].mirrors[{k}].destination", m.get("destination"))
    return tuple(out)


def _workload(w: dict[str, Any]) -> WorkloadSpec:
    return WorkloadSpec(
        address=w.get("address") or "", ports=tuple((w.get("ports") or {}).items()),
        labels=_labels(w.get("labels")), weight=w.get("weight"), network=w.get("network") or "",
        locality=w.get("locality") or "")


def build_service_entry(meta: Meta, spec: dict[str, Any]) -> ServiceEntry:
    selector = spec.get("workloadSelector")
    return ServiceEntry(
        meta, hosts=_strs(spec.get("hosts")), addresses=_strs(spec.get("addresses")),
        ports=tuple(ServicePort(number=p.get("number"), name=p.get("name") or "",
                                protocol=(p.get("protocol") or "").upper(),
                                target_port=p.get("targetPort"))
                    for p in spec.get("ports") or ()),
        location=spec.get("location") or "MESH_EXTERNAL",
        resolution=spec.get("resolution") or "NONE",
        endpoints=tuple(_workload(e) for e in spec.get("endpoints") or ()),
        workload_selector=None if selector is None else _labels(selector.get("labels")),
        export_to=_strs(spec.get("exportTo")))


def build_workload_entry(meta: Meta, spec: dict[str, Any]) -> WorkloadEntry:
    return WorkloadEntry(meta, _workload(spec))


def build_traffic_policy(tp: Optional[dict[str, Any]]) -> Optional[TrafficPolicy]:
    if tp is None:
        return None
    lb = tp.get("loadBalancer") or {}
    hashing = lb.get("consistentHash") or {}
    tcp = (tp.get("connectionPool") or {}).get("tcp")
    settings = None
    if tcp is not None:
        keepalive = tcp.get("tcpKeepalive") or {}
        settings = TcpSettings(
            max_connections=tcp.get("maxConnections"),
            connect_timeout=_dur(tcp.get("connectTimeout")),
            idle_timeout=_dur(tcp.get("idleTimeout")),
            max_connection_duration=_dur(tcp.get("maxConnectionDuration")),
            keepalive_probes=keepalive.get("probes"), keepalive_time=_dur(keepalive.get("time")),
            keepalive_interval=_dur(keepalive.get("interval")),
            keepalive=tcp.get("tcpKeepalive") is not None)
    port_level = []
    for pl in tp.get("portLevelSettings") or ():
        number = (pl.get("port") or {}).get("number")
        policy = build_traffic_policy({k: v for k, v in pl.items() if k != "port"})
        if number is not None and policy is not None:
            port_level.append((number, policy))
    proxy = tp.get("proxyProtocol")
    return TrafficPolicy(
        lb_simple=lb.get("simple"),
        consistent_hash=tuple(k for k in ("httpHeaderName", "httpCookie", "useSourceIp",
                                          "httpQueryParameterName") if hashing.get(k)),
        use_source_ip=bool(hashing.get("useSourceIp")), tcp=settings,
        consistent_hash_settings=tuple(hashing.items()),
        tls_mode=(tp.get("tls") or {}).get("mode"),
        tls=_client_tls(tp.get("tls")),
        proxy_protocol=None if proxy is None else (proxy.get("version") or "V1"),
        tunnel_protocol=None if tp.get("tunnel") is None else (tp["tunnel"].get("protocol")
                                                                or "CONNECT"),
        outlier_detection=tuple((tp.get("outlierDetection") or {}).items()),
        port_level=tuple(port_level),
        set_fields=tuple(k for k, v in tp.items() if v is not None),
        tls_fields=tuple(k for k, v in (tp.get("tls") or {}).items() if v),
        lb_fields=tuple(k for k, v in lb.items() if v is not None),
        warmup=None if lb.get("warmup") is None else tuple((lb["warmup"] or {}).items()),
        connection_pool_fields=None if tp.get("connectionPool") is None else tuple(
            k for k, v in (tp["connectionPool"] or {}).items() if v is not None),
        maglev_table_size=None if hashing.get("maglev") is None else int(
            (hashing["maglev"] or {}).get("tableSize") or 0))


def build_destination_rule(meta: Meta, spec: dict[str, Any]) -> DestinationRule:
    return DestinationRule(
        meta, host=spec.get("host") or "",
        traffic_policy=build_traffic_policy(spec.get("trafficPolicy")),
        subsets=tuple(Subset(name=s.get("name") or "", labels=_labels(s.get("labels")),
                             traffic_policy=build_traffic_policy(s.get("trafficPolicy")))
                      for s in spec.get("subsets") or ()),
        export_to=_strs(spec.get("exportTo")),
        workload_selector=None if spec.get("workloadSelector") is None
        else _labels(spec["workloadSelector"].get("matchLabels")))


BUILDERS: dict[str, Any] = {
    "Gateway": build_gateway,
    "VirtualService": build_virtual_service,
    "ServiceEntry": build_service_entry,
    "WorkloadEntry": build_workload_entry,
    "DestinationRule": build_destination_rule,
    "AuthorizationPolicy": build_authorization_policy,
}


def merge_duplicates(resources: Iterable[Resource]) -> tuple[list[Resource], list[Diagnostic]]:
    """
    The same kind/namespace/name twice: the later document replaces the
    earlier one, as a second ``kubectl apply`` would. The object keeps the
    earlier one's place in the order (an update keeps its creation time,
    and Istio orders Gateways by creation time).
    """
    index: dict[tuple[str, str, str], int] = {}
    out: list[Resource] = []
    diags: list[Diagnostic] = []
    for res in resources:
        key = res.meta.key
        if key in index:
            old = out[index[key]]
            diags.append(Diagnostic(
                WARNING, f"defined again: replaces the earlier definition at "
                f"{old.meta.file}:{old.meta.line} (the later document wins, as with kubectl apply)",
                res.meta.file, res.meta.line, res.meta.ref))
            out[index[key]] = res
        else:
            index[key] = len(out)
            out.append(res)
    return out, diags
