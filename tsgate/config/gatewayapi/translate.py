"""
Gateway API objects to tsgate's Istio model, and the status a controller sets.

The Gateway API is translated the way Istio's own controller does it: each
served Gateway listener becomes an Istio Gateway server and each attached
TCPRoute/TLSRoute a VirtualService with ``tcp``/``tls`` rules, all of them
synthetic records handed to the same compiler as the Istio kinds. So
ServiceEntries, DestinationRules, the same-port rules (TCP and TLS on one
port, first server wins) and every data-path feature apply unchanged, and an
Istio Gateway and a Gateway API Gateway on one port follow the rules already
in place.

Attachment follows the API (``apis/v1/shared_types.go``, ``gateway_types.go``):
``parentRefs`` by name, ``sectionName`` and ``port``; a listener's
``allowedRoutes`` (kinds and namespaces ``Same``/``All``/``Selector``);
TLSRoute ``hostnames`` intersected with the listener's ``hostname``;
``backendRefs`` to Services, cross-namespace only with a ReferenceGrant.
The compiler's findings about the synthetic records are reported back on the
Gateway API objects (their file, line and field path).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Callable, Optional

import attrs

from tsgate.config import hosts as H
from tsgate.config.diagnostics import ERROR, INFO, WARNING, Diagnostic
from tsgate.config.gatewayapi.model import (
    GROUP,
    ApiMeta,
    Gateway,
    GatewayClass,
    Listener,
    ReferenceGrant,
    Route,
)
from tsgate.config.gatewayapi.status import (
    FALSE,
    TRUE,
    ApiStatus,
    Condition,
    GatewayClassStatus,
    GatewayStatus,
    ListenerStatus,
    ParentStatus,
    RouteStatus,
)
from tsgate.config.loader import Document
from tsgate.config.model import (
    Destination,
    L4Match,
    L4Route,
    Meta,
    Port,
    RouteDestination,
    Server,
    ServerTLS,
    ServiceEntry,
    ServicePort,
    VirtualService,
)
from tsgate.config.model import Gateway as IstioGateway
from tsgate.routing import Listener as TableListener
from tsgate.routing import Route as TableRoute
from tsgate.routing import RouteTable, SourceRef

DEFAULT_GATEWAY_CLASSES = ("istio",)
#: the controllerName routes report when no GatewayClass object names one
DEFAULT_CONTROLLER = "tsgate.io/gateway-controller"
#: the label Kubernetes sets on every namespace
NAMESPACE_NAME_LABEL = "kubernetes.io/metadata.name"
#: host of the endpoint-less cluster standing in for invalid backendRefs
INVALID_SUFFIX = "tsgate.invalid"


def termination_hook(gateway: Gateway, listener: Listener) -> Optional[ServerTLS]:
    """
    The Istio ServerTLS of a ``tls.mode: Terminate`` listener, as Istio's
    Gateway API controller writes it: mode ``SIMPLE`` with ``credentialName``
    the Secret's name (``credentialNames`` for several certificateRefs), read
    from ``--credentials DIR/<name>/`` by tsgate.tls. None when no
    certificateRef names a core Secret. Whether a cross-namespace Secret may
    be used (ReferenceGrant) is :meth:`Translation.certificate_problem`'s.
    """
    names = [name for group, kind, _ns, name in listener.certificate_refs
             if group in ("", "core") and kind == "Secret"]
    if not names:
        return None
    if len(names) == 1:
        return ServerTLS("SIMPLE", cert_fields=("credentialName",), credential_name=names[0])
    return ServerTLS("SIMPLE", cert_fields=("credentialNames",),
                     credential_names=tuple(dict.fromkeys(names)))


def hostname_intersection(listener: str, route: Sequence[str]) -> list[str]:
    """The SNI names a TLSRoute gets on a listener (the API's hostname matching)."""
    if not route:
        return [listener or "*"]
    if not listener:
        return list(dict.fromkeys(route))
    out: list[str] = []
    for h in route:
        if h == listener or _covers(listener, h):
            out.append(h)
        elif _covers(h, listener):
            out.append(listener)
    return list(dict.fromkeys(out))


def _covers(wild: str, name: str) -> bool:
    """Does wildcard ``wild`` (``*.example.com``) match ``name`` (any depth, not itself)?"""
    if not wild.startswith("*."):
        return False
    body = name[2:] if name.startswith("*.") else name
    return body.endswith(wild[1:]) and len(body) > len(wild) - 1


@attrs.define
class _Listener:
    gateway: Gateway
    index: int
    spec: Listener
    served: Optional[str] = None  # "tcp" or "tls"
    tls: Optional[ServerTLS] = None
    supported: list[str] = attrs.field(factory=list)
    accepted: Condition = Condition("Accepted", TRUE, "Accepted")
    resolved: Condition = Condition("ResolvedRefs", TRUE, "ResolvedRefs")
    conflicted: Condition = Condition("Conflicted", FALSE, "NoConflicts")
    attached: list[str] = attrs.field(factory=list)  # route refs

    @property
    def path(self) -> str:
        return f"spec.listeners[{self.index}]"

    @property
    def synthetic_name(self) -> str:
        return f"{self.gateway.meta.name}/{self.spec.name}"

    @property
    def synthetic_ref(self) -> str:
        return f"{self.gateway.meta.namespace}/{self.synthetic_name}"


@attrs.define
class _Rewrite:
    """How to report a compiler finding about a synthetic record on the real object."""

    meta: Meta
    paths: list[tuple[str, str]]  # (synthetic prefix, real prefix), longest first

    def path(self, path: str) -> str:
        for old, new in self.paths:
            if path == old or path.startswith(old + ".") or path.startswith(old + "["):
                return new + path[len(old):]
        return path


class Translation:
    """One translation: inputs, synthetic records, findings and status."""

    def __init__(self, resources: Sequence[Any], documents: Iterable[Document] = (),
                 gateway_classes: Sequence[str] = DEFAULT_GATEWAY_CLASSES,
                 namespace_labels: Mapping[str, Mapping[str, str]] = {},
                 default_namespace: str = "default") -> None:
        self.classes = [r for r in resources if isinstance(r, GatewayClass)]
        self.gateways = [r for r in resources if isinstance(r, Gateway)]
        self.routes = [r for r in resources if isinstance(r, Route)]
        self.grants = [r for r in resources if isinstance(r, ReferenceGrant)]
        self.service_entries = [r for r in resources if isinstance(r, ServiceEntry)]
        self.served_classes = tuple(gateway_classes)
        self.default_namespace = default_namespace
        self.services: dict[tuple[str, str], tuple[int, ...]] = {}
        self.namespace_labels: dict[str, dict[str, str]] = {}
        self._core_objects(documents)
        for ns, labels in namespace_labels.items():
            self.namespace_labels.setdefault(ns, {}).update(labels)
        self.diags: list[Diagnostic] = []
        self.synthetic: list[Any] = []
        self.listeners: dict[tuple[str, str], list[_Listener]] = {}
        self.parents: dict[tuple[str, str, str], list[ParentStatus]] = {}
        self.rewrites: dict[str, _Rewrite] = {}
        self.messages: list[tuple[str, str]] = []
        self.route_names: dict[tuple[str, str], tuple[str, SourceRef]] = {}
        #: synthetic Istio Gateway ref -> its listener
        self.synthetic_listeners: dict[str, _Listener] = {}
        self.controller = next((c.controller_name for c in self.classes
                                if c.meta.name in self.served_classes), DEFAULT_CONTROLLER)

    # ---------------------------------------------------------------- inputs

    def _core_objects(self, documents: Iterable[Document]) -> None:
        """Services (which exist, their ports) and Namespaces (labels) in the config."""
        for doc in documents:
            data = doc.data
            if not isinstance(data, dict) or data.get("apiVersion") != "v1":
                continue
            meta = data.get("metadata")
            if not isinstance(meta, dict) or not isinstance(meta.get("name"), str):
                continue
            if data.get("kind") == "Namespace":
                labels = meta.get("labels")
                if isinstance(labels, dict):
                    self.namespace_labels.setdefault(meta["name"], {}).update(
                        {str(k): str(v) for k, v in labels.items()})
                else:
                    self.namespace_labels.setdefault(meta["name"], {})
            elif data.get("kind") == "Service":
                ns = str(meta.get("namespace") or self.default_namespace)
                spec = data.get("spec")
                if not isinstance(spec, dict):
                    spec = {}
                ports = tuple(p["port"] for p in spec.get("ports") or ()
                              if isinstance(p, dict) and isinstance(p.get("port"), int))
                self.services[(ns, meta["name"])] = ports

    def labels_of(self, namespace: str) -> dict[str, str]:
        labels = {NAMESPACE_NAME_LABEL: namespace}
        labels.update(self.namespace_labels.get(namespace, {}))
        return labels

    def report(self, severity: str, meta: Meta, path: str, message: str) -> None:
        self.diags.append(Diagnostic(severity, message, meta.file,
                                     meta.line_of(path) if path else meta.line, meta.ref, path))

    # ------------------------------------------------------------- gateways

    def served(self, gw: Gateway) -> bool:
        return gw.class_name in self.served_classes

    def run(self) -> None:
        wanted = ", ".join(self.served_classes)
        for gw in self.gateways:
            if not self.served(gw):
                self.report(INFO, gw.meta, "spec.gatewayClassName",
                            f"not for this gateway: gatewayClassName {gw.class_name!r} is not "
                            f"in --gateway-class ({wanted}); ignored")
                continue
            self.listeners[(gw.meta.namespace, gw.meta.name)] = self.gateway_listeners(gw)
        for route in self.routes:
            self.attach(route)
        for states in self.listeners.values():
            for st in states:
                self.synthesize_listener(st)
        for route in self.routes:
            self.synthesize_route(route)

    def gateway_listeners(self, gw: Gateway) -> list[_Listener]:
        states = []
        if gw.addresses:
            self.report(WARNING, gw.meta, "spec.addresses",
                        "spec.addresses is not used: tsgate listens on 0.0.0.0 or --bind")
        for i, li in enumerate(gw.listeners):
            st = _Listener(gw, i, li)
            default: list[str] = []
            if li.protocol == "TCP":
                default, st.served = ["TCPRoute"], "tcp"
            elif li.protocol == "TLS" and li.tls_mode == "Passthrough":
                default, st.served, st.tls = ["TLSRoute"], "tls", ServerTLS("PASSTHROUGH")
            elif li.protocol == "TLS":
                # Terminate: tsgate.tls terminates, the attached TCPRoutes get the
                # plaintext (as Istio's controller does for TLS Terminate + TCPRoute).
                default = ["TCPRoute"]
                problem = self.certificate_problem(gw, li)
                kinds = [k for g, k in li.kinds or () if g == GROUP]
                if li.kinds is not None and "TLSRoute" in kinds and "TCPRoute" not in kinds:
                    # TLSRoute termination (SupportTLSRouteModeTerminate) is not
                    # served: conformance's tlsroute-listener-terminate-not-supported.
                    default = ["TLSRoute"]
                    st.accepted = Condition(
                        "Accepted", FALSE, "UnsupportedValue",
                        "tls.mode Terminate with TLSRoute is not supported: tsgate terminates "
                        "TLS for TCPRoutes")
                    self.report(WARNING, gw.meta, f"{st.path}.tls.mode",
                                f"listener {li.name} not served: tls.mode Terminate serves "
                                "TCPRoutes (plaintext to the backend), not TLSRoutes; use "
                                "Passthrough for TLSRoutes")
                elif problem is not None:
                    reason, message, where = problem
                    st.resolved = Condition("ResolvedRefs", FALSE, reason, message)
                    self.report(WARNING, gw.meta, f"{st.path}.tls.{where}",
                                f"listener {li.name} not served: {message} ({reason})")
                else:
                    st.tls = termination_hook(gw, li)
                    st.served = "tls" if st.tls is not None else None
            else:
                st.accepted = Condition(
                    "Accepted", FALSE, "UnsupportedProtocol",
                    f"protocol {li.protocol} is not supported: tsgate is a layer-4 gateway "
                    "(TCP and TLS)")
                self.report(WARNING, gw.meta, f"{st.path}.protocol",
                            f"listener {li.name} not served: protocol {li.protocol} (tsgate "
                            "serves TCP and TLS listeners)")
            if li.kinds is None:
                st.supported = default
            else:
                bad = [k for g, k in li.kinds if g != GROUP or k not in default]
                st.supported = [k for g, k in li.kinds if g == GROUP and k in default]
                if bad:
                    st.resolved = Condition(
                        "ResolvedRefs", FALSE, "InvalidRouteKinds",
                        "route kinds not supported on a " + li.protocol
                        + (f" {li.tls_mode}" if li.tls_mode else "") + " listener: "
                        + ", ".join(bad))
                    self.report(WARNING, gw.meta, f"{st.path}.allowedRoutes.kinds",
                                st.resolved.message)
            if li.hostname and li.protocol == "TLS" and li.tls_mode == "Passthrough" \
                    and H.domain_error(li.hostname) is not None:
                st.accepted = Condition("Accepted", FALSE, "UnsupportedValue",
                                        f"hostname {li.hostname!r} is not valid")
            states.append(st)
        # TLSRoutes in both modes on one port (mixed TLSRoute termination, which
        # tsgate does not serve): both ProtocolConflict, as conformance's
        # tlsroute-listener-mixed-termination-not-supported has it. A Terminate
        # listener for TCPRoutes shares a port with Passthrough ones.
        by_port: dict[int, list[_Listener]] = {}
        for st in states:
            if st.spec.protocol == "TLS":
                by_port.setdefault(st.spec.port, []).append(st)
        for port, group in by_port.items():
            modes = {st.spec.tls_mode for st in group}
            if len(modes) > 1 and any(st.spec.tls_mode == "Terminate" and st.served is None
                                      and st.accepted.reason == "UnsupportedValue"
                                      for st in group):
                for st in group:
                    message = (f"TLS listeners with modes Terminate and Passthrough for "
                               f"TLSRoutes on port {port}: tsgate terminates TLS for TCPRoutes "
                               "only")
                    st.accepted = Condition("Accepted", FALSE, "ProtocolConflict", message)
                    st.conflicted = Condition("Conflicted", TRUE, "ProtocolConflict", message)
                    if st.served is not None:
                        self.report(WARNING, gw.meta, st.path, f"listener {st.spec.name} not "
                                    f"served: {message} (ProtocolConflict)")
                    st.served = None
        return states

    def certificate_problem(self, gw: Gateway, li: Listener) -> Optional[tuple[str, str, str]]:
        """(reason, message, field under ``tls``) when the certificateRefs cannot be used."""
        refs = li.certificate_refs
        if not refs:
            return ("InvalidCertificateRef", "tls.mode Terminate without certificateRefs "
                    "(tsgate serves a certificate from a Secret: certificateRefs)",
                    "certificateRefs")
        for j, (group, kind, ns, name) in enumerate(refs):
            where = f"certificateRefs[{j}]"
            if group not in ("", "core") or kind != "Secret":
                return ("InvalidCertificateRef", f"certificateRef {group or 'core'}/{kind} "
                        f"{name} is not a Secret (core group)", where)
            own = gw.meta.namespace
            if ns and ns != own and not any(
                    g.meta.namespace == ns and g.permits(GROUP, "Gateway", own, "", "Secret",
                                                         name)
                    for g in self.grants):
                return ("RefNotPermitted", f"certificateRef Secret {ns}/{name} is in another "
                        f"namespace and no ReferenceGrant in {ns} allows Gateway from "
                        f"namespace {own}", where)
        return None

    def credential_failed(self, st: _Listener, message: str) -> None:
        """The compiler could not read the listener's credential: InvalidCertificateRef."""
        if st.resolved.status == TRUE:
            st.resolved = Condition("ResolvedRefs", FALSE, "InvalidCertificateRef", message)

    # -------------------------------------------------------------- routes

    def namespace_allowed(self, st: _Listener, route_ns: str) -> bool:
        gw_ns = st.gateway.meta.namespace
        how = st.spec.namespaces_from
        if how == "All":
            return True
        if how == "Selector":
            return st.spec.selector is not None and st.spec.selector.matches(
                self.labels_of(route_ns))
        return route_ns == gw_ns

    def attach(self, route: Route) -> None:
        meta = route.meta
        key = meta.key
        statuses: list[ParentStatus] = []
        self.parents[key] = statuses
        resolved = self.resolved_refs(route)
        for i, ref in enumerate(route.parent_refs):
            path = f"spec.parentRefs[{i}]"
            described = ref.describe(meta.namespace)

            def refuse(reason: str, message: str, path: str = path,
                       described: str = described) -> None:
                self.report(WARNING, meta, path, f"not attached to {described}: {message}")
                statuses.append(ParentStatus(described, self.controller, (
                    Condition("Accepted", FALSE, reason, message), resolved)))

            if (ref.group, ref.kind) != (GROUP, "Gateway"):
                self.report(INFO, meta, path, f"parentRef {ref.group}/{ref.kind} is not a "
                            "Gateway: not served by tsgate")
                continue
            gw_key = (ref.namespace or meta.namespace, ref.name)
            gw = next((g for g in self.gateways
                       if (g.meta.namespace, g.meta.name) == gw_key), None)
            if gw is None:
                refuse("NoMatchingParent", f"Gateway {gw_key[0]}/{gw_key[1]} not found in the "
                       "configuration")
                continue
            if not self.served(gw):
                continue  # another controller's Gateway: it writes this status
            states = self.listeners[gw_key]
            candidates = [st for st in states
                          if (not ref.section_name or st.spec.name == ref.section_name)
                          and (ref.port is None or st.spec.port == ref.port)]
            if not candidates:
                refuse("NoMatchingParent", "no listener"
                       + (f" named {ref.section_name!r}" if ref.section_name else "")
                       + (f" on port {ref.port}" if ref.port is not None else ""))
                continue
            kind_ok = [st for st in candidates
                       if meta.kind in st.supported and st.accepted.status == TRUE]
            if not kind_ok:
                why = "; ".join(
                    f"listener {st.spec.name} ({st.spec.protocol}) "
                    + ("is not accepted: " + st.accepted.reason if st.accepted.status != TRUE
                       and meta.kind in st.supported else
                       "allows " + (", ".join(st.supported) or "no kinds tsgate serves"))
                    for st in candidates)
                refuse("NotAllowedByListeners", f"{meta.kind} not allowed: {why}")
                continue
            ns_ok = [st for st in kind_ok if self.namespace_allowed(st, meta.namespace)]
            if not ns_ok:
                refuse("NotAllowedByListeners", f"namespace {meta.namespace} not allowed: "
                       + "; ".join(f"listener {st.spec.name} allowedRoutes.namespaces.from "
                                   f"{st.spec.namespaces_from}" for st in kind_ok))
                continue
            if meta.kind == "TLSRoute":
                matched = [st for st in ns_ok
                           if hostname_intersection(st.spec.hostname, route.hostnames)]
                if not matched:
                    refuse("NoMatchingListenerHostname", "no hostname of the route ("
                           + ", ".join(route.hostnames) + ") matches the hostname of listener "
                           + ", ".join(f"{st.spec.name} ({st.spec.hostname or '*'})"
                                       for st in ns_ok))
                    continue
                ns_ok = matched
            for st in ns_ok:
                if meta.ref not in st.attached:
                    st.attached.append(meta.ref)
            statuses.append(ParentStatus(described, self.controller, (
                Condition("Accepted", TRUE, "Accepted"), resolved)))

    def backend_problem(self, route: Route, rule: int, j: int) -> Optional[tuple[str, str]]:
        """(reason, message) when backendRef ``j`` of rule ``rule`` is invalid."""
        ref = route.rules[rule].backend_refs[j]
        ns = ref.namespace or route.meta.namespace
        if (ref.group, ref.kind) != ("", "Service"):
            return ("InvalidKind", f"backendRef {ref.group or 'core'}/{ref.kind} {ref.name} is "
                    "not supported (tsgate routes to Services)")
        if ns != route.meta.namespace and not any(
                g.meta.namespace == ns and g.permits(GROUP, route.meta.kind,
                                                     route.meta.namespace, "", "Service",
                                                     ref.name)
                for g in self.grants):
            return ("RefNotPermitted", f"backendRef Service {ns}/{ref.name} is in another "
                    f"namespace and no ReferenceGrant in {ns} allows {route.meta.kind} from "
                    f"namespace {route.meta.namespace}")
        host = f"{ref.name}.{ns}.{H.CLUSTER_DOMAIN}"
        if self.service_entry_for(host):
            return None
        if (ns, ref.name) in self.services:
            ports = self.services[(ns, ref.name)]
            if ports and ref.port not in ports:
                return ("BackendNotFound", f"Service {ns}/{ref.name} has no port {ref.port} "
                        "(ports: " + ", ".join(map(str, ports)) + ")")
            return None
        if any(n == ns for n, _ in self.services):
            return ("BackendNotFound", f"Service {ns}/{ref.name} not found (no ServiceEntry "
                    f"for {host}, and it is not among the Services of namespace {ns} in the "
                    "configuration)")
        return None

    def service_entry_for(self, host: str) -> bool:
        return any(H.fqdn(h, se.meta.namespace) == host
                   for se in self.service_entries for h in se.hosts)

    def resolved_refs(self, route: Route) -> Condition:
        problems = []
        for r, rule in enumerate(route.rules):
            for j in range(len(rule.backend_refs)):
                problem = self.backend_problem(route, r, j)
                if problem is not None:
                    problems.append(problem)
        if not problems:
            return Condition("ResolvedRefs", TRUE, "ResolvedRefs")
        return Condition("ResolvedRefs", FALSE, problems[0][0],
                         "; ".join(message for _, message in problems))

    # ------------------------------------------------------- synthetic model

    def synthesize_listener(self, st: _Listener) -> None:
        if st.served is None or st.accepted.status != TRUE:
            return
        gw, li = st.gateway, st.spec
        real = gw.meta
        positions = dict(real.positions)
        base = f"spec.listeners[{st.index}]"
        renames = [("spec.servers[0].tls.credentialNames", f"{base}.tls.certificateRefs"),
                   ("spec.servers[0].tls.credentialName", f"{base}.tls.certificateRefs[0]"),
                   ("spec.servers[0].tls", f"{base}.tls"),
                   ("spec.servers[0].hosts", f"{base}.hostname"),
                   ("spec.servers[0].port.number", f"{base}.port"),
                   ("spec.servers[0].port", f"{base}.port"),
                   ("spec.servers[0]", base), ("spec.selector", "spec.gatewayClassName")]
        for old, new in renames:
            positions[old] = real.line_of(new)
        meta = Meta(kind="Gateway", api_version=real.api_version, name=st.synthetic_name,
                    namespace=real.namespace, labels=real.labels,
                    annotations=real.annotations, file=real.file, line=real.line,
                    index=real.index, positions=positions)
        server = Server(port=Port(li.port, li.name, li.protocol),
                        hosts=(li.hostname or "*",), tls=st.tls)
        self.synthetic.append(IstioGateway(meta, selector=(), servers=(server,)))
        self.synthetic_listeners[meta.ref] = st
        self.rewrites[meta.ref] = _Rewrite(real, renames)
        self.messages.append((f"{meta.ref} spec.servers[0]", f"{real.ref} {base}"))
        self.messages.append((meta.ref, f"{real.ref} {base}"))

    def synthesize_route(self, route: Route) -> None:
        meta = route.meta
        attached = [st for states in self.listeners.values() for st in states
                    if meta.ref in st.attached and st.served is not None]
        if not attached or not route.rules:
            return
        for r in range(1, len(route.rules)):
            self.report(WARNING, meta, f"spec.rules[{r}]",
                        "ignored: a listener takes one rule per route, the first "
                        "(spec.rules[0])")
        rule = route.rules[0]
        kind = "tcp" if meta.kind == "TCPRoute" else "tls"
        renames: list[tuple[str, str]] = []
        destinations: list[RouteDestination] = []
        invalid_ports: list[int] = []
        invalid_host = f"invalid.{meta.name}.{meta.namespace}.{INVALID_SUFFIX}"
        for j, ref in enumerate(rule.backend_refs):
            path = f"spec.rules[0].backendRefs[{j}]"
            problem = self.backend_problem(route, 0, j)
            if ref.weight == 0:
                continue
            d = len(destinations)
            prefix = f"spec.{kind}[0].route[{d}]"
            renames += [(f"{prefix}.destination.host", f"{path}.name"),
                        (f"{prefix}.destination.port", f"{path}.port"), (prefix, path)]
            if problem is not None:
                self.report(WARNING, meta, path, f"{problem[1]}: connections routed to it "
                            f"(weight {ref.weight}) are rejected")
                port = ref.port or 1
                invalid_ports.append(port)
                destinations.append(RouteDestination(Destination(invalid_host, port=port),
                                                     ref.weight))
                continue
            ns = ref.namespace or meta.namespace
            destinations.append(RouteDestination(
                Destination(f"{ref.name}.{ns}.{H.CLUSTER_DOMAIN}", port=ref.port), ref.weight))
        if not destinations:
            self.report(WARNING, meta, "spec.rules[0].backendRefs",
                        "every backendRef has weight 0: connections are rejected")
        renames += [(f"spec.{kind}[0].match[{m}].sniHosts", "spec.hostnames")
                    for m in range(len(attached))]
        renames += [(f"spec.{kind}[0].match", "spec.hostnames"), (f"spec.{kind}[0]",
                                                                  "spec.rules[0]"),
                    ("spec.hosts", "spec.hostnames"), (f"spec.{kind}", "spec.rules")]
        renames.sort(key=lambda t: -len(t[0]))
        positions = dict(meta.positions)
        for old, new in renames:
            positions[old] = meta.line_of(new)
        if invalid_ports:
            se_meta = Meta(kind="ServiceEntry", api_version="networking.istio.io/v1",
                           name=f"{meta.name}.invalid-backends", namespace=meta.namespace,
                           file=meta.file, line=meta.line, positions=meta.positions)
            self.synthetic.append(ServiceEntry(
                se_meta, hosts=(invalid_host,),
                ports=tuple(ServicePort(p, f"invalid-{p}", "TCP") for p in
                            dict.fromkeys(invalid_ports)),
                location="MESH_INTERNAL", resolution="STATIC", endpoints=()))
        refs = tuple(st.synthetic_ref for st in attached)
        if kind == "tcp":
            vs = VirtualService(_as_vs_meta(meta, positions), hosts=("*",), gateways=refs,
                                tcp=(L4Route((), tuple(destinations)),))
        else:
            matches = tuple(
                L4Match(sni_hosts=tuple(hostname_intersection(st.spec.hostname,
                                                              route.hostnames)),
                        gateways=(st.synthetic_ref,))
                for st in attached)
            # hosts "*": the attachment (hostname intersection) is decided above, per
            # listener, in each match's sniHosts and gateways
            vs = VirtualService(_as_vs_meta(meta, positions), hosts=("*",), gateways=refs,
                                tls=(L4Route(matches, tuple(destinations)),))
        self.synthetic.append(vs)
        self.rewrites[vs.meta.ref] = _Rewrite(meta, renames)
        name = f"{meta.namespace}/{meta.name}#{meta.kind.lower()}[0]"
        self.messages.append((f"{meta.ref} spec.{kind}[0]", f"{meta.ref} spec.rules[0]"))
        self.messages.append((f"{meta.namespace}/{meta.name}#{kind}[0]", name))
        self.route_names[(vs.meta.ref, f"spec.{kind}[0]")] = (
            name,
            SourceRef(meta.file, meta.line_of("spec.rules[0]"), meta.ref, "spec.rules[0]"))

    # ----------------------------------------------------- after compilation

    def finish(self, table: RouteTable,
               diags: Iterable[Diagnostic]) -> tuple[RouteTable, list[Diagnostic]]:
        """The table with route names of the Gateway API objects; findings reported on them."""
        out = []
        messages = sorted(self.messages, key=lambda t: -len(t[0]))
        for d in diags:
            if INVALID_SUFFIX in d.message:
                continue  # the endpoint-less stand-in for invalid backendRefs: reported already
            message = d.message
            for old, new in messages:
                message = message.replace(old, new)
            st = self.synthetic_listeners.get(d.resource)
            if st is not None and d.severity == ERROR and st.spec.tls_mode == "Terminate" \
                    and d.path.startswith("spec.servers[0].tls"):
                # A certificate that cannot be read is the listener's status
                # (ResolvedRefs=False InvalidCertificateRef, not programmed), as
                # the API has it; the other listeners are served.
                self.credential_failed(st, message)
                message = f"listener {st.spec.name} not served: {message} (InvalidCertificateRef)"
                d = attrs.evolve(d, severity=WARNING)
            rw = self.rewrites.get(d.resource)
            if rw is not None:
                message = re.sub(r"no VirtualService has a (tcp|tls) route for this (TLS )?server",
                                 "no route with a backend is attached to this listener", message)
                d = Diagnostic(d.severity, message, d.file, d.line, rw.meta.ref, rw.path(d.path))
            elif message != d.message:
                d = attrs.evolve(d, message=message)
            out.append(d)
        return self.rename(table), out

    def rename(self, table: RouteTable) -> RouteTable:
        if not self.route_names:
            return table
        cache: dict[int, TableRoute] = {}

        def fix(route: Optional[TableRoute]) -> Optional[TableRoute]:
            if route is None or route.source is None:
                return route
            key = (route.source.resource, route.source.path)
            if key not in self.route_names:
                return route
            if id(route) not in cache:
                name, source = self.route_names[key]
                cache[id(route)] = attrs.evolve(route, name=name, source=source)
            return cache[id(route)]

        listeners = []
        for li in table.listeners:
            chains = tuple(attrs.evolve(c, route=fix(c.route) or c.route)
                           for c in li.tls_chains)
            listeners.append(attrs.evolve(li, tls_chains=chains, tcp_route=fix(li.tcp_route)))
        return attrs.evolve(table, listeners=tuple(listeners))

    def status(self, table: RouteTable) -> ApiStatus:
        by_port: dict[int, list[TableListener]] = {}
        for tl in table.listeners:
            by_port.setdefault(tl.port, []).append(tl)

        def programmed(st: _Listener) -> Condition:
            if st.accepted.status == TRUE and st.resolved.reason in ("InvalidCertificateRef",
                                                                    "RefNotPermitted"):
                return Condition("Programmed", FALSE, "Invalid",
                                 f"listener not served: {st.resolved.message}")
            if st.accepted.status != TRUE or st.served is None:
                return Condition("Programmed", FALSE, "Invalid", "listener not accepted")
            for tl in by_port.get(st.spec.port, ()):
                routes = [c.route for c in tl.tls_chains] if st.served == "tls" else \
                    [tl.tcp_route]
                if any(r is not None and r.source is not None
                       and r.source.resource in st.attached for r in routes):
                    return Condition("Programmed", TRUE, "Programmed")
            why = ("no attached route with a backend" if st.attached else "no route attached")
            return Condition("Programmed", FALSE, "Pending",
                             f"not listening on port {st.spec.port}: {why}, or the port is "
                             "taken by another server, or the configuration has errors")

        gateways = []
        for gw in self.gateways:
            states = self.listeners.get((gw.meta.namespace, gw.meta.name))
            if states is None:
                continue
            listeners = []
            any_programmed = False
            for st in states:
                prog = programmed(st)
                any_programmed = any_programmed or prog.status == TRUE
                listeners.append(ListenerStatus(
                    st.spec.name, st.spec.port, st.spec.protocol, tuple(st.supported),
                    len(st.attached), (st.accepted, st.resolved, prog, st.conflicted)))
            valid = [st for st in states if st.accepted.status == TRUE]
            if len(valid) == len(states):
                accepted = Condition("Accepted", TRUE, "Accepted")
            else:
                accepted = Condition("Accepted", TRUE if valid else FALSE, "ListenersNotValid",
                                     f"{len(states) - len(valid)} of {len(states)} listener(s) "
                                     "not accepted")
            prog = Condition("Programmed", TRUE, "Programmed") if any_programmed else \
                Condition("Programmed", FALSE, "Pending", "no listener is programmed")
            gateways.append(GatewayStatus(gw.meta.ref, gw.meta.file, gw.meta.line,
                                          gw.class_name, (accepted, prog), tuple(listeners)))
        classes = [GatewayClassStatus(
            c.meta.ref, c.meta.file, c.meta.line, c.controller_name,
            (Condition("Accepted", TRUE, "Accepted"),))
            for c in self.classes if c.meta.name in self.served_classes]
        routes = [RouteStatus(r.meta.ref, r.meta.file, r.meta.line,
                              tuple(self.parents.get(r.meta.key, ())))
                  for r in self.routes]
        return ApiStatus(tuple(classes), tuple(gateways), tuple(routes))


def _as_vs_meta(meta: ApiMeta, positions: dict[str, int]) -> Meta:
    """A route's meta for its synthetic VirtualService (same ref, distinct key)."""
    return Meta(kind=meta.kind, api_version=meta.api_version, name=meta.name,
                namespace=meta.namespace, labels=meta.labels, annotations=meta.annotations,
                file=meta.file, line=meta.line, index=meta.index, positions=positions)


def translate(resources: Sequence[Any], documents: Iterable[Document] = (),
              gateway_classes: Sequence[str] = DEFAULT_GATEWAY_CLASSES,
              namespace_labels: Mapping[str, Mapping[str, str]] = {},
              default_namespace: str = "default") -> Translation:
    t = Translation(resources, documents, gateway_classes, namespace_labels, default_namespace)
    t.run()
    return t


Hook = Callable[[Gateway, Listener], Optional[ServerTLS]]
