"""
Gateway API documents to records, with the API server's own checks.

What ``kubectl apply`` would refuse is an error here, naming the file, line,
``Kind namespace/name`` and field path: unknown fields and wrong types (the
CRD's structural schema), the CRD's patterns, lengths, ranges, enums and list
sizes, and its CEL rules (``x-kubernetes-validations``), with the CRD's own
messages. The rules follow ``config/crd/experimental/*.yaml`` and the Go types
(``apis/v1``, ``apis/v1alpha2``, ``apis/v1alpha3``) of
kubernetes-sigs/gateway-api; the CRD defaults are applied when building.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Any, Callable, Optional

from tsgate.config.diagnostics import ERROR, Diagnostic
from tsgate.config.gatewayapi.model import (
    GROUP,
    ApiMeta,
    ApiResource,
    BackendRef,
    Gateway,
    GatewayClass,
    LabelSelector,
    Listener,
    ParentRef,
    ReferenceGrant,
    Route,
    RouteRule,
)
from tsgate.config.loader import Document, join_path
from tsgate.config.schema import (
    METADATA,
    TOP_LEVEL,
    Anything,
    Int,
    ListOf,
    MapOf,
    Obj,
    Spec,
    Str,
    schema_errors,
    suggest,
)

#: kind -> apiVersions of gateway.networking.k8s.io served for it
VERSIONS: dict[str, tuple[str, ...]] = {
    "GatewayClass": ("v1", "v1beta1"),
    "Gateway": ("v1", "v1beta1"),
    "TCPRoute": ("v1alpha2", "v1"),
    "TLSRoute": ("v1alpha2", "v1alpha3", "v1"),
    "ReferenceGrant": ("v1beta1", "v1alpha2", "v1"),
}
#: other kinds of the API: valid, not served by tsgate (a layer-4 gateway)
OTHER_KINDS = ("HTTPRoute", "GRPCRoute", "UDPRoute", "BackendTLSPolicy", "ListenerSet",
               "XListenerSet", "BackendLBPolicy", "XBackendTrafficPolicy", "XMesh")

_SUBDOMAIN = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*"
SECTION_NAME = re.compile(rf"^{_SUBDOMAIN}$")
NAMESPACE = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
HOSTNAME = re.compile(rf"^(\*\.)?{_SUBDOMAIN}$")
GROUP_NAME = re.compile(rf"^$|^{_SUBDOMAIN}$")
KIND = re.compile(r"^[a-zA-Z]([-a-zA-Z0-9]*[a-zA-Z0-9])?$")
PROTOCOL = re.compile(rf"^[a-zA-Z0-9]([-a-zA-Z0-9]*[a-zA-Z0-9])?$|{_SUBDOMAIN}/[A-Za-z0-9]+$")
CONTROLLER = re.compile(rf"^{_SUBDOMAIN}/[A-Za-z0-9/\-._~%!$&'()*+,;=:]+$")

_SELECTOR = Obj("LabelSelector", {
    "matchLabels": MapOf(Str()),
    "matchExpressions": ListOf(Obj("LabelSelectorRequirement", {
        "key": Str(), "operator": Str(), "values": ListOf(Str())})),
})
_OBJECT_REF = Obj("SecretObjectReference", {
    "group": Str(), "kind": Str(), "name": Str(), "namespace": Str()})
LISTENER = Obj("Listener", {
    "name": Str(), "hostname": Str(), "port": Int(), "protocol": Str(),
    "tls": Obj("ListenerTLSConfig", {
        "mode": Str(), "certificateRefs": ListOf(_OBJECT_REF), "options": MapOf(Str()),
        "frontendValidation": Anything()}),
    "allowedRoutes": Obj("AllowedRoutes", {
        "namespaces": Obj("RouteNamespaces", {"from": Str(), "selector": _SELECTOR}),
        "kinds": ListOf(Obj("RouteGroupKind", {"group": Str(), "kind": Str()}))}),
})
GATEWAY = Obj("GatewaySpec", {
    "gatewayClassName": Str(), "listeners": ListOf(LISTENER),
    "addresses": ListOf(Obj("GatewaySpecAddress", {"type": Str(), "value": Str()})),
    "infrastructure": Anything(), "backendTLS": Anything(), "tls": Anything(),
    "allowedListeners": Anything(), "defaultScope": Str(),
})
GATEWAY_CLASS = Obj("GatewayClassSpec", {
    "controllerName": Str(), "parametersRef": Anything(), "description": Str()})
PARENT_REF = Obj("ParentReference", {
    "group": Str(), "kind": Str(), "namespace": Str(), "name": Str(), "sectionName": Str(),
    "port": Int()})
BACKEND_REF = Obj("BackendRef", {
    "group": Str(), "kind": Str(), "name": Str(), "namespace": Str(), "port": Int(),
    "weight": Int()})


def _route_spec(kind: str, hostnames: bool) -> Obj:
    fields: dict[str, Spec] = {
        "parentRefs": ListOf(PARENT_REF), "useDefaultGateways": Str(),
        "rules": ListOf(Obj(f"{kind}Rule", {"name": Str(), "backendRefs": ListOf(BACKEND_REF)})),
    }
    if hostnames:
        fields["hostnames"] = ListOf(Str())
    return Obj(f"{kind}Spec", fields)


REFERENCE_GRANT = Obj("ReferenceGrantSpec", {
    "from": ListOf(Obj("ReferenceGrantFrom", {"group": Str(), "kind": Str(),
                                              "namespace": Str()})),
    "to": ListOf(Obj("ReferenceGrantTo", {"group": Str(), "kind": Str(), "name": Str()})),
})
SPECS = {
    "GatewayClass": GATEWAY_CLASS, "Gateway": GATEWAY, "TCPRoute": _route_spec("TCPRoute", False),
    "TLSRoute": _route_spec("TLSRoute", True), "ReferenceGrant": REFERENCE_GRANT,
}

Report = Callable[[str, str], None]


def parse_api_document(doc: Document, kind: str, api_version: str, default_namespace: str,
                       diags: list[Diagnostic]) -> Optional[ApiResource]:
    """One gateway.networking.k8s.io object, or None (with the reasons in ``diags``)."""
    data = doc.data
    version = api_version.rpartition("/")[2]
    metadata = data.get("metadata")
    name = metadata.get("name") if isinstance(metadata, dict) else None
    namespace = default_namespace
    if isinstance(metadata, dict) and isinstance(metadata.get("namespace"), str) \
            and metadata["namespace"]:
        namespace = metadata["namespace"]
    ref = f"{kind} {namespace}/{name if isinstance(name, str) else '<unnamed>'}"
    errors: list[Diagnostic] = []

    def make(path: str, message: str) -> Diagnostic:
        return Diagnostic(ERROR, message, doc.file, doc.line_of(path), ref, path)

    def report(path: str, message: str) -> None:
        errors.append(make(path, message))

    if version not in VERSIONS[kind]:
        report("apiVersion", f"unsupported apiVersion {api_version!r} for {kind}; use "
               + ", ".join(f"{GROUP}/{v}" for v in VERSIONS[kind]))
        diags.extend(errors)
        return None
    for key in data:
        if key not in TOP_LEVEL:
            report(join_path("", key), f"unknown field {str(key)!r} in {kind}"
                   + suggest(str(key), {k: 1 for k in TOP_LEVEL}))
    if metadata is None:
        report("", "metadata is required")
    else:
        errors.extend(schema_errors(metadata, METADATA, "metadata", make))
        if isinstance(metadata, dict) and not metadata.get("name"):
            report("metadata", "metadata.name is required")
    spec = data.get("spec")
    if spec is None:
        report("spec" if "spec" in data else "", "spec is required")
        spec = {}
    errors.extend(schema_errors(spec, SPECS[kind], "spec", make))
    if not errors and isinstance(spec, dict):
        CHECKS[kind](spec, version, report)
    diags.extend(errors)
    if errors:
        return None
    assert isinstance(metadata, dict) and isinstance(spec, dict)
    meta = ApiMeta(
        kind=kind, api_version=api_version, name=metadata["name"], namespace=namespace,
        labels=_labels(metadata.get("labels")), annotations=_labels(metadata.get("annotations")),
        file=doc.file, line=doc.line, index=doc.index, positions=doc.positions)
    return BUILDERS[kind](meta, spec)


def _labels(value: Any) -> tuple[tuple[str, str], ...]:
    if not value:
        return ()
    return tuple((str(k), "" if v is None else str(v)) for k, v in value.items())


# ------------------------------------------------------------------ checks


def _required(obj: dict[str, Any], field: str, path: str, report: Report) -> bool:
    if obj.get(field) is None or obj.get(field) == "":
        report(join_path(path, field) if field in obj else path,
               f"{field} is required")
        return False
    return True


def _string(value: Any, path: str, report: Report, *, pattern: Optional[re.Pattern[str]] = None,
            max_len: int = 253, min_len: int = 1, what: str = "") -> None:
    if not isinstance(value, str):
        return
    if len(value) < min_len:
        report(path, "must not be empty")
    elif len(value) > max_len:
        report(path, f"must be at most {max_len} characters (has {len(value)})")
    elif pattern is not None and not pattern.match(value):
        report(path, f"{value!r} is not {what} (must match {pattern.pattern})")


def _int_range(value: Any, path: str, report: Report, low: int, high: int) -> None:
    if isinstance(value, int) and not low <= value <= high:
        report(path, f"{value} is out of range {low}-{high}")


def _list_size(value: Any, path: str, report: Report, low: int, high: int) -> None:
    if not isinstance(value, list):
        return
    if len(value) < low:
        report(path, f"must have at least {low} item(s)")
    elif len(value) > high:
        report(path, f"must have at most {high} item(s) (has {len(value)})")


def _enum(value: Any, path: str, report: Report, allowed: tuple[str, ...]) -> None:
    if isinstance(value, str) and value not in allowed:
        report(path, f"unsupported value {value!r}: supported values: "
               + ", ".join(repr(a) for a in allowed) + suggest(value, dict.fromkeys(allowed)))


def _group_kind(obj: dict[str, Any], path: str, report: Report) -> None:
    _string(obj.get("group"), join_path(path, "group"), report, pattern=GROUP_NAME, min_len=0,
            what="a DNS subdomain (API group)")
    _string(obj.get("kind"), join_path(path, "kind"), report, pattern=KIND, max_len=63,
            what="a kind name")


def _namespace(value: Any, path: str, report: Report) -> None:
    _string(value, path, report, pattern=NAMESPACE, max_len=63, what="a DNS-1123 label")


def _hostname(value: Any, path: str, report: Report) -> None:
    _string(value, path, report, pattern=HOSTNAME,
            what="a hostname (lower-case DNS labels, optionally a leading '*.')")


def check_gateway_class(spec: dict[str, Any], version: str, report: Report) -> None:
    if _required(spec, "controllerName", "spec", report):
        _string(spec["controllerName"], "spec.controllerName", report, pattern=CONTROLLER,
                what="a domain-prefixed path (example.com/controller)")


def check_gateway(spec: dict[str, Any], version: str, report: Report) -> None:
    if _required(spec, "gatewayClassName", "spec", report):
        _string(spec["gatewayClassName"], "spec.gatewayClassName", report)
    listeners = spec.get("listeners")
    if listeners is None:
        report("spec", "listeners is required")
        return
    _list_size(listeners, "spec.listeners", report, 1, 64)
    _list_size(spec.get("addresses"), "spec.addresses", report, 0, 16)
    for i, a in enumerate(spec.get("addresses") or ()):
        p = f"spec.addresses[{i}]"
        if a.get("type", "IPAddress") == "IPAddress" and isinstance(a.get("value"), str):
            try:
                ipaddress.ip_address(a["value"])
            except ValueError:
                report(f"{p}.value", f"{a['value']!r} is not an IP address")
    for i, li in enumerate(listeners):
        p = f"spec.listeners[{i}]"
        for field in ("name", "port", "protocol"):
            _required(li, field, p, report)
        _string(li.get("name"), f"{p}.name", report, pattern=SECTION_NAME,
                what="a DNS-1123 subdomain")
        _int_range(li.get("port"), f"{p}.port", report, 1, 65535)
        _string(li.get("protocol"), f"{p}.protocol", report, pattern=PROTOCOL, max_len=255,
                what="a protocol name")
        _hostname(li.get("hostname"), f"{p}.hostname", report)
        tls = li.get("tls")
        if tls is not None:
            _enum(tls.get("mode"), f"{p}.tls.mode", report, ("Terminate", "Passthrough"))
            _list_size(tls.get("certificateRefs"), f"{p}.tls.certificateRefs", report, 0, 64)
            for j, ref in enumerate(tls.get("certificateRefs") or ()):
                q = f"{p}.tls.certificateRefs[{j}]"
                _required(ref, "name", q, report)
                _group_kind(ref, q, report)
                _namespace(ref.get("namespace"), f"{q}.namespace", report)
            # CEL on listeners[].tls
            if tls.get("mode", "Terminate") == "Terminate" and not tls.get("certificateRefs") \
                    and not tls.get("options"):
                report(f"{p}.tls", "certificateRefs or options must be specified when mode "
                       "is Terminate")
        allowed = li.get("allowedRoutes") or {}
        namespaces = allowed.get("namespaces") or {}
        _enum(namespaces.get("from"), f"{p}.allowedRoutes.namespaces.from", report,
              ("All", "Selector", "Same"))
        selector = namespaces.get("selector")
        for j, expr in enumerate((selector or {}).get("matchExpressions") or ()):
            q = f"{p}.allowedRoutes.namespaces.selector.matchExpressions[{j}]"
            _required(expr, "key", q, report)
            if _required(expr, "operator", q, report):
                _enum(expr["operator"], f"{q}.operator", report,
                      ("In", "NotIn", "Exists", "DoesNotExist"))
                if expr["operator"] in ("In", "NotIn") and not expr.get("values"):
                    report(f"{q}.values", f"values must be non-empty for operator "
                           f"{expr['operator']}")
        if namespaces.get("from") == "Selector" and selector is None:
            report(f"{p}.allowedRoutes.namespaces", "selector is required when from is "
                   "Selector")
        _list_size(allowed.get("kinds"), f"{p}.allowedRoutes.kinds", report, 0, 8)
        for j, k in enumerate(allowed.get("kinds") or ()):
            q = f"{p}.allowedRoutes.kinds[{j}]"
            _required(k, "kind", q, report)
            _group_kind(k, q, report)
    # CEL rules on spec.listeners, each reported at the listener that breaks it
    names: dict[Any, int] = {}
    combos: dict[Any, int] = {}
    for i, li in enumerate(listeners):
        p = f"spec.listeners[{i}]"
        protocol, tls = li.get("protocol"), li.get("tls")
        if protocol in ("HTTP", "TCP", "UDP") and tls is not None:
            report(f"{p}.tls", f"tls must not be specified for protocols ['HTTP', 'TCP', "
                   f"'UDP'] (protocol is {protocol})")
        if protocol == "HTTPS" and tls is not None and tls.get("mode", "Terminate") \
                not in ("", "Terminate"):
            report(f"{p}.tls.mode", "tls mode must be Terminate for protocol HTTPS")
        if protocol == "TLS" and (tls is None or tls.get("mode") == ""):
            report(p, "tls mode must be set for protocol TLS")
        if protocol in ("TCP", "UDP") and li.get("hostname"):
            report(f"{p}.hostname", "hostname must not be specified for protocols ['TCP', "
                   "'UDP']")
        name = li.get("name")
        if name in names:
            report(f"{p}.name", f"Listener name must be unique within the Gateway "
                   f"({name!r} is also spec.listeners[{names[name]}])")
        names.setdefault(name, i)
        combo = (li.get("port"), protocol, li.get("hostname"))
        if combo in combos:
            report(p, "Combination of port, protocol and hostname must be unique for each "
                   f"listener (same as spec.listeners[{combos[combo]}])")
        combos.setdefault(combo, i)


def _check_parent_refs(spec: dict[str, Any], report: Report) -> None:
    refs = spec.get("parentRefs") or []
    _list_size(refs, "spec.parentRefs", report, 0, 32)
    seen: dict[Any, list[tuple[int, Any]]] = {}
    for i, ref in enumerate(refs):
        p = f"spec.parentRefs[{i}]"
        _required(ref, "name", p, report)
        _group_kind(ref, p, report)
        _namespace(ref.get("namespace"), f"{p}.namespace", report)
        _string(ref.get("sectionName"), f"{p}.sectionName", report, pattern=SECTION_NAME,
                what="a DNS-1123 subdomain")
        _int_range(ref.get("port"), f"{p}.port", report, 1, 65535)
        parent = (ref.get("group", GROUP), ref.get("kind", "Gateway"), ref.get("name"),
                  ref.get("namespace") or "")
        seen.setdefault(parent, []).append((i, (ref.get("sectionName") or "", ref.get("port"))))
    for group in seen.values():
        if len(group) < 2:
            continue
        if any(section == ("", None) for _, section in group):
            i = next(i for i, s in group if s == ("", None))
            report(f"spec.parentRefs[{i}]", "sectionName or port must be specified when "
                   "parentRefs includes 2 or more references to the same parent")
            continue
        sections: dict[Any, int] = {}
        for i, section in group:
            if section in sections:
                report(f"spec.parentRefs[{i}]", "sectionName or port must be unique when "
                       "parentRefs includes 2 or more references to the same parent")
            sections.setdefault(section, i)


def _check_rules(spec: dict[str, Any], kind: str, version: str, report: Report) -> None:
    rules = spec.get("rules")
    if rules is None:
        report("spec", "rules is required")
        return
    max_rules = 16 if version == "v1alpha2" else 1
    _list_size(rules, "spec.rules", report, 1, max_rules)
    names: dict[str, int] = {}
    for i, rule in enumerate(rules):
        p = f"spec.rules[{i}]"
        name = rule.get("name")
        _string(name, f"{p}.name", report, pattern=SECTION_NAME, what="a DNS-1123 subdomain")
        if isinstance(name, str):
            if name in names:
                report(f"{p}.name", "Rule name must be unique within the route")
            names.setdefault(name, i)
        refs = rule.get("backendRefs")
        if refs is None:
            report(p, "backendRefs is required")
            continue
        _list_size(refs, f"{p}.backendRefs", report, 1, 16)
        for j, ref in enumerate(refs):
            q = f"{p}.backendRefs[{j}]"
            _required(ref, "name", q, report)
            _group_kind(ref, q, report)
            _namespace(ref.get("namespace"), f"{q}.namespace", report)
            _int_range(ref.get("port"), f"{q}.port", report, 1, 65535)
            _int_range(ref.get("weight"), f"{q}.weight", report, 0, 1000000)
            if ref.get("group", "") == "" and ref.get("kind", "Service") == "Service" \
                    and ref.get("port") is None:
                report(q, "Must have port for Service reference")


def check_tcp_route(spec: dict[str, Any], version: str, report: Report) -> None:
    _check_parent_refs(spec, report)
    _check_rules(spec, "TCPRoute", version, report)


def check_tls_route(spec: dict[str, Any], version: str, report: Report) -> None:
    _check_parent_refs(spec, report)
    hostnames = spec.get("hostnames")
    if version != "v1alpha2" and not hostnames:
        report("spec.hostnames" if "hostnames" in spec else "spec",
               "hostnames is required (at least 1 item)")
    _list_size(hostnames, "spec.hostnames", report, 0, 1024)
    for i, h in enumerate(hostnames or ()):
        p = f"spec.hostnames[{i}]"
        if isinstance(h, str) and version != "v1alpha2":
            try:
                ipaddress.ip_address(h)
            except ValueError:
                pass
            else:
                report(p, "Hostnames cannot contain an IP")
                continue
        _hostname(h, p, report)
    _check_rules(spec, "TLSRoute", version, report)


def check_reference_grant(spec: dict[str, Any], version: str, report: Report) -> None:
    for field in ("from", "to"):
        items = spec.get(field)
        if items is None:
            report("spec", f"{field} is required")
            continue
        _list_size(items, f"spec.{field}", report, 1, 16)
        for i, item in enumerate(items):
            p = f"spec.{field}[{i}]"
            if item.get("group") is None:
                report(p, "group is required")
            _required(item, "kind", p, report)
            _group_kind(item, p, report)
            if field == "from":
                if _required(item, "namespace", p, report):
                    _namespace(item["namespace"], f"{p}.namespace", report)
            else:
                _string(item.get("name"), f"{p}.name", report)


CHECKS: dict[str, Callable[[dict[str, Any], str, Report], None]] = {
    "GatewayClass": check_gateway_class, "Gateway": check_gateway,
    "TCPRoute": check_tcp_route, "TLSRoute": check_tls_route,
    "ReferenceGrant": check_reference_grant,
}


# ---------------------------------------------------------------- builders


def build_gateway_class(meta: ApiMeta, spec: dict[str, Any]) -> GatewayClass:
    return GatewayClass(meta, spec.get("controllerName") or "")


def _selector(value: Optional[dict[str, Any]]) -> Optional[LabelSelector]:
    if value is None:
        return None
    return LabelSelector(
        _labels(value.get("matchLabels")),
        tuple((e["key"], e["operator"], tuple(e.get("values") or ()))
              for e in value.get("matchExpressions") or ()))


def build_gateway(meta: ApiMeta, spec: dict[str, Any]) -> Gateway:
    listeners = []
    for li in spec.get("listeners") or ():
        tls = li.get("tls")
        allowed = li.get("allowedRoutes") or {}
        namespaces = allowed.get("namespaces") or {}
        kinds = allowed.get("kinds")
        listeners.append(Listener(
            name=li["name"], port=li["port"], protocol=li["protocol"],
            hostname=li.get("hostname") or "",
            tls_mode=(tls.get("mode") or "Terminate") if tls is not None else "",
            certificate_refs=tuple(
                (r.get("group") or "", r.get("kind") or "Secret", r.get("namespace") or "",
                 r["name"]) for r in (tls or {}).get("certificateRefs") or ()),
            tls_options=_labels((tls or {}).get("options")),
            namespaces_from=namespaces.get("from") or "Same",
            selector=_selector(namespaces.get("selector")),
            kinds=None if kinds is None else tuple(
                (k.get("group", GROUP) if k.get("group") is not None else GROUP, k["kind"])
                for k in kinds),
        ))
    addresses = tuple((a.get("type") or "IPAddress", a.get("value") or "")
                      for a in spec.get("addresses") or ())
    return Gateway(meta, spec["gatewayClassName"], tuple(listeners), addresses)


def build_route(meta: ApiMeta, spec: dict[str, Any]) -> Route:
    parents = tuple(ParentRef(
        name=p["name"], group=p.get("group", GROUP) if p.get("group") is not None else GROUP,
        kind=p.get("kind") or "Gateway", namespace=p.get("namespace") or "",
        section_name=p.get("sectionName") or "", port=p.get("port"))
        for p in spec.get("parentRefs") or ())
    rules = tuple(RouteRule(
        backend_refs=tuple(BackendRef(
            name=b["name"], group=b.get("group") or "", kind=b.get("kind") or "Service",
            namespace=b.get("namespace") or "", port=b.get("port"),
            weight=1 if b.get("weight") is None else b["weight"])
            for b in r.get("backendRefs") or ()),
        name=r.get("name") or "")
        for r in spec.get("rules") or ())
    return Route(meta, parents, tuple(h.lower() for h in spec.get("hostnames") or ()), rules)


def build_reference_grant(meta: ApiMeta, spec: dict[str, Any]) -> ReferenceGrant:
    return ReferenceGrant(
        meta,
        tuple((f.get("group") or "", f["kind"], f["namespace"]) for f in spec.get("from") or ()),
        tuple((t.get("group") or "", t["kind"], t.get("name") or "") for t in spec.get("to") or ()))


BUILDERS: dict[str, Callable[[ApiMeta, dict[str, Any]], ApiResource]] = {
    "GatewayClass": build_gateway_class, "Gateway": build_gateway,
    "TCPRoute": build_route, "TLSRoute": build_route,
    "ReferenceGrant": build_reference_grant,
}


def parse_api_object(doc: Document, kind: str, api_version: str, default_namespace: str,
                     diags: list[Diagnostic], label: str) -> Any:
    """The entry point from ``tsgate.config.parse`` for group gateway.networking.k8s.io."""
    from tsgate.config.diagnostics import INFO

    if kind in VERSIONS:
        return parse_api_document(doc, kind, api_version, default_namespace, diags)
    if kind in OTHER_KINDS:
        diags.append(Diagnostic(INFO, f"skipped {label} ({api_version}): tsgate is a layer-4 "
                                "gateway and serves TCPRoute and TLSRoute", doc.file, doc.line))
        return None
    known = dict.fromkeys((*VERSIONS, *OTHER_KINDS))
    diags.append(Diagnostic(ERROR, f"unknown kind {kind!r} in {GROUP}" + suggest(kind, known),
                            doc.file, doc.line_of("kind"), "", "kind"))
    return None
