"""
Typed records of the Kubernetes Gateway API kinds tsgate reads.

``gateway.networking.k8s.io``: GatewayClass, Gateway, TCPRoute, TLSRoute and
ReferenceGrant. Defaults the API server would apply (CRD defaults) are applied
when the records are built, so later stages never ask "was this set?" except
where the API itself does (``ParentRef.section_name``/``port``, a listener's
``allowedRoutes.kinds``).

The records carry :class:`ApiMeta`, a ``Meta`` whose ``key`` includes the API
group, so a Gateway API ``Gateway`` and an Istio ``Gateway`` with the same
namespace/name are two objects (as they are to Kubernetes), not a duplicate.
"""

from __future__ import annotations

from typing import Optional, Union

import attrs

from tsgate.config.model import Labels, Meta

GROUP = "gateway.networking.k8s.io"


@attrs.frozen
class ApiMeta(Meta):
    @property
    def key(self) -> tuple[str, str, str]:
        return (f"{self.kind}.{GROUP}", self.namespace, self.name)

    @property
    def ref(self) -> str:
        if self.kind == "GatewayClass":  # cluster-scoped
            return f"GatewayClass {self.name}"
        return f"{self.kind} {self.namespace}/{self.name}"


@attrs.frozen
class GatewayClass:
    meta: ApiMeta
    controller_name: str = ""


@attrs.frozen
class LabelSelector:
    match_labels: Labels = ()
    #: (key, operator, values): In, NotIn, Exists, DoesNotExist
    match_expressions: tuple[tuple[str, str, tuple[str, ...]], ...] = ()

    def matches(self, labels: dict[str, str]) -> bool:
        for key, value in self.match_labels:
            if labels.get(key) != value:
                return False
        for key, op, values in self.match_expressions:
            if op == "In" and labels.get(key) not in values:
                return False
            if op == "NotIn" and key in labels and labels[key] in values:
                return False
            if op == "Exists" and key not in labels:
                return False
            if op == "DoesNotExist" and key in labels:
                return False
        return True


@attrs.frozen
class Listener:
    name: str
    port: int
    protocol: str
    hostname: str = ""
    #: "Passthrough" or "Terminate" (the CRD default) when ``tls`` is set; "" otherwise
    tls_mode: str = ""
    #: (group, kind, namespace, name) of each certificateRef
    certificate_refs: tuple[tuple[str, str, str, str], ...] = ()
    tls_options: Labels = ()
    #: allowedRoutes.namespaces.from: Same (default), All, Selector
    namespaces_from: str = "Same"
    selector: Optional[LabelSelector] = None
    #: allowedRoutes.kinds as (group, kind); None when not set (the protocol's default)
    kinds: Optional[tuple[tuple[str, str], ...]] = None


@attrs.frozen
class Gateway:
    meta: ApiMeta
    class_name: str
    listeners: tuple[Listener, ...] = ()
    #: spec.addresses as (type, value)
    addresses: tuple[tuple[str, str], ...] = ()


@attrs.frozen
class ParentRef:
    name: str
    group: str = GROUP
    kind: str = "Gateway"
    namespace: str = ""  # "" = the route's namespace
    section_name: str = ""
    port: Optional[int] = None

    def describe(self, route_ns: str) -> str:
        text = f"{self.kind} {self.namespace or route_ns}/{self.name}"
        if self.section_name:
            text += f" sectionName {self.section_name}"
        if self.port is not None:
            text += f" port {self.port}"
        return text


@attrs.frozen
class BackendRef:
    name: str
    group: str = ""
    kind: str = "Service"
    namespace: str = ""  # "" = the route's namespace
    port: Optional[int] = None
    weight: int = 1


@attrs.frozen
class RouteRule:
    backend_refs: tuple[BackendRef, ...] = ()
    name: str = ""


@attrs.frozen
class Route:
    """A TCPRoute or a TLSRoute (``meta.kind`` says which)."""

    meta: ApiMeta
    parent_refs: tuple[ParentRef, ...] = ()
    hostnames: tuple[str, ...] = ()
    rules: tuple[RouteRule, ...] = ()


@attrs.frozen
class ReferenceGrant:
    meta: ApiMeta
    #: (group, kind, namespace)
    from_: tuple[tuple[str, str, str], ...] = ()
    #: (group, kind, name); name "" = every object of that kind
    to: tuple[tuple[str, str, str], ...] = ()

    def permits(self, group: str, kind: str, namespace: str,
                to_group: str, to_kind: str, to_name: str) -> bool:
        if not any(f == (group, kind, namespace) for f in self.from_):
            return False
        return any(g == to_group and k == to_kind and (not n or n == to_name)
                   for g, k, n in self.to)


ApiResource = Union[GatewayClass, Gateway, Route, ReferenceGrant]
