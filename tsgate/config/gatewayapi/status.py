"""
Status as a Gateway API controller would write it, without an API server.

``tsgate validate`` and ``tsgate routes`` print it, ``/config_dump`` serves it
(``gateway_api`` in the config part). Condition types and reasons are the
API's own (``apis/v1/gateway_types.go``, ``shared_types.go``).
"""

from __future__ import annotations

from typing import Any

import attrs

TRUE, FALSE = "True", "False"


@attrs.frozen
class Condition:
    type: str
    status: str
    reason: str
    message: str = ""

    def __str__(self) -> str:
        text = f"{self.type}={self.status} ({self.reason})"
        return f"{text}: {self.message}" if self.message else text


@attrs.frozen
class ListenerStatus:
    name: str
    port: int
    protocol: str
    supported_kinds: tuple[str, ...]
    attached_routes: int
    conditions: tuple[Condition, ...]


@attrs.frozen
class GatewayStatus:
    ref: str
    file: str
    line: int
    class_name: str
    conditions: tuple[Condition, ...]
    listeners: tuple[ListenerStatus, ...]


@attrs.frozen
class GatewayClassStatus:
    ref: str
    file: str
    line: int
    controller_name: str
    conditions: tuple[Condition, ...]


@attrs.frozen
class ParentStatus:
    parent_ref: str  # "Gateway ns/name sectionName x port n"
    controller_name: str
    conditions: tuple[Condition, ...]


@attrs.frozen
class RouteStatus:
    ref: str
    file: str
    line: int
    parents: tuple[ParentStatus, ...]


@attrs.frozen
class ApiStatus:
    classes: tuple[GatewayClassStatus, ...] = ()
    gateways: tuple[GatewayStatus, ...] = ()
    routes: tuple[RouteStatus, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.classes or self.gateways or self.routes)

    def condition(self, ref: str, type_: str, parent: str = "") -> Condition:
        """The condition ``type_`` of a Gateway or (with ``parent``) a Route, for tests."""
        for gw in self.gateways:
            if gw.ref == ref:
                return next(c for c in gw.conditions if c.type == type_)
        for route in self.routes:
            if route.ref == ref:
                for p in route.parents:
                    if not parent or p.parent_ref.startswith(parent):
                        return next(c for c in p.conditions if c.type == type_)
        raise KeyError((ref, type_, parent))

    def listener(self, ref: str, name: str) -> ListenerStatus:
        gw = next(g for g in self.gateways if g.ref == ref)
        return next(li for li in gw.listeners if li.name == name)

    def to_dict(self) -> dict[str, Any]:
        def conds(cs: tuple[Condition, ...]) -> list[dict[str, str]]:
            return [attrs.asdict(c) for c in cs]

        return {
            "gatewayClasses": [{
                "resource": c.ref, "file": c.file, "line": c.line,
                "controllerName": c.controller_name, "conditions": conds(c.conditions)}
                for c in self.classes],
            "gateways": [{
                "resource": g.ref, "file": g.file, "line": g.line,
                "gatewayClassName": g.class_name, "conditions": conds(g.conditions),
                "listeners": [{
                    "name": li.name, "port": li.port, "protocol": li.protocol,
                    "supportedKinds": list(li.supported_kinds),
                    "attachedRoutes": li.attached_routes, "conditions": conds(li.conditions)}
                    for li in g.listeners]}
                for g in self.gateways],
            "routes": [{
                "resource": r.ref, "file": r.file, "line": r.line,
                "parents": [{"parentRef": p.parent_ref, "controllerName": p.controller_name,
                             "conditions": conds(p.conditions)} for p in r.parents]}
                for r in self.routes],
        }

    def format(self) -> str:
        """The status as text, one block per object."""
        lines: list[str] = []
        for c in self.classes:
            lines.append(f"{c.ref} ({c.file}:{c.line}) controllerName {c.controller_name}")
            lines.extend(f"  {cond}" for cond in c.conditions)
        for g in self.gateways:
            lines.append(f"{g.ref} ({g.file}:{g.line}) gatewayClassName {g.class_name}")
            lines.extend(f"  {cond}" for cond in g.conditions)
            for li in g.listeners:
                lines.append(f"  listener {li.name}: port {li.port} {li.protocol}, "
                             f"attachedRoutes {li.attached_routes}, supportedKinds "
                             + (", ".join(li.supported_kinds) or "(none)"))
                lines.extend(f"    {cond}" for cond in li.conditions)
        for r in self.routes:
            lines.append(f"{r.ref} ({r.file}:{r.line})")
            if not r.parents:
                lines.append("  no parent served by this gateway")
            for p in r.parents:
                lines.append(f"  parent {p.parent_ref}")
                lines.extend(f"    {cond}" for cond in p.conditions)
        return "\n".join(lines) + ("\n" if lines else "")
