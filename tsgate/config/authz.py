"""
AuthorizationPolicy (``security.istio.io/v1`` and ``v1beta1``): the model
builder, Istio's validation rules, and which policies apply to a listener.

Istio's rules (ISTIO-L4.md §6, istio ``pkg/config/validation``) are errors
here too: ``from``/``to`` present but empty, a ``source``/``operation`` with
no field set, bad IPs/CIDRs and ports, unknown ``when`` keys, a condition
with neither ``values`` nor ``notValues``, ``provider`` without ``CUSTOM``
(and the reverse), ``selector`` together with ``targetRef(s)``, a non-boolean
``istio.io/dry-run``. What Istio accepts but a TCP gateway cannot act on is
a warning that says what happens instead: HTTP-only fields (the rule is
dropped for ALLOW, the condition for DENY/AUDIT, as Istio's TCP filter
builder does), ``CUSTOM`` (not enforced); ``principals``/``namespaces``
on a listener without a MUTUAL/OPTIONAL_MUTUAL TLS server (no client
certificate: ``tsgate.authz.compile.attach`` warns).

The policies are turned into per-listener matchers in ``tsgate.authz``.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping
from typing import Any, Callable, Optional

from tsgate.config.diagnostics import ERROR, WARNING, Diagnostic
from tsgate.config.model import (
    AuthorizationPolicy,
    AuthzCondition,
    AuthzOperation,
    AuthzRule,
    AuthzSource,
    Labels,
    Meta,
    Resource,
    TargetRef,
)
from tsgate.config.schema import AUTHZ_OPERATION_FIELDS, AUTHZ_SOURCE_FIELDS

ACTIONS = ("ALLOW", "DENY", "AUDIT", "CUSTOM")
DRY_RUN = "istio.io/dry-run"
DEFAULT_ROOT_NAMESPACE = "istio-system"

#: Source / Operation fields that only exist for HTTP requests.
HTTP_SOURCE_FIELDS = ("requestPrincipals", "notRequestPrincipals")
HTTP_OPERATION_FIELDS = ("hosts", "notHosts", "methods", "notMethods", "paths", "notPaths")
#: Source fields that need a peer identity (a verified client certificate).
IDENTITY_SOURCE_FIELDS = ("principals", "notPrincipals", "namespaces", "notNamespaces",
                          "serviceAccounts", "notServiceAccounts")
IP_SOURCE_FIELDS = ("ipBlocks", "notIpBlocks", "remoteIpBlocks", "notRemoteIpBlocks")

#: ``when`` keys a TCP gateway evaluates.
TCP_KEYS = ("source.ip", "remote.ip", "destination.ip", "destination.port", "connection.sni",
            "source.principal", "source.namespace", "source.serviceAccount")
IP_KEYS = ("source.ip", "remote.ip", "destination.ip")
IDENTITY_KEYS = ("source.principal", "source.namespace", "source.serviceAccount")
#: Exact HTTP-only keys; ``request.headers[...]`` / ``request.auth.claims[...]`` by prefix.
HTTP_KEYS = ("request.auth.principal", "request.auth.audiences", "request.auth.presenter")
HTTP_KEY_PREFIXES = ("request.headers[", "request.auth.claims[")
METADATA_KEY_PREFIX = "experimental.envoy.filters."


# ------------------------------------------------------------------ builder


def _values(value: Any) -> tuple[str, ...]:
    return tuple(str(v) for v in value or ())


def _fields(spec: Optional[Mapping[str, Any]], names: Iterable[str]) -> \
        tuple[tuple[str, tuple[str, ...]], ...]:
    if not spec:
        return ()
    return tuple((name, _values(spec[name])) for name in names if spec.get(name) is not None)


def _target(ref: Mapping[str, Any]) -> TargetRef:
    return TargetRef(kind=ref.get("kind") or "", name=ref.get("name") or "",
                     group=ref.get("group") or "", namespace=ref.get("namespace") or "")


def build_authorization_policy(meta: Meta, spec: dict[str, Any]) -> AuthorizationPolicy:
    selector = spec.get("selector")
    refs = [spec["targetRef"]] if spec.get("targetRef") is not None else []
    refs += list(spec.get("targetRefs") or ())
    rules: Optional[list[AuthzRule]] = None
    if spec.get("rules") is not None:
        rules = []
        for r in spec["rules"]:
            sources = operations = None
            if r.get("from") is not None:
                sources = tuple(None if f.get("source") is None
                                else AuthzSource(_fields(f["source"], AUTHZ_SOURCE_FIELDS))
                                for f in r["from"])
            if r.get("to") is not None:
                operations = tuple(None if t.get("operation") is None
                                   else AuthzOperation(_fields(t["operation"],
                                                               AUTHZ_OPERATION_FIELDS))
                                   for t in r["to"])
            when = tuple(AuthzCondition(
                key=c.get("key") or "",
                values=None if c.get("values") is None else _values(c["values"]),
                not_values=None if c.get("notValues") is None else _values(c["notValues"]))
                for c in r.get("when") or ())
            rules.append(AuthzRule(sources=sources, operations=operations, when=when))
    return AuthorizationPolicy(
        meta,
        selector=None if selector is None else _labels(selector.get("matchLabels")),
        target_refs=tuple(_target(t) for t in refs),
        action=spec.get("action") or "ALLOW",
        provider=(spec.get("provider") or {}).get("name") or "",
        rules=None if rules is None else tuple(rules))


def _labels(value: Any) -> Labels:
    if not value:
        return ()
    return tuple((str(k), "" if v is None else str(v)) for k, v in value.items())


# --------------------------------------------------------------- validation


def dry_run(policy: AuthorizationPolicy) -> bool:
    """``istio.io/dry-run: "true"`` (Go's strconv.ParseBool spellings)."""
    value = dict(policy.meta.annotations).get(DRY_RUN)
    return value is not None and value.strip() in ("1", "t", "T", "TRUE", "true", "True")


def _bool_error(value: str) -> bool:
    return value.strip() not in ("1", "t", "T", "TRUE", "true", "True",
                                 "0", "f", "F", "FALSE", "false", "False")


def ip_error(value: str) -> Optional[str]:
    """Istio's ValidateIPs: an IP address or a CIDR range."""
    try:
        if "/" in value:
            ipaddress.ip_network(value, strict=False)
        else:
            ipaddress.ip_address(value)
    except ValueError:
        what = "CIDR range" if "/" in value else "IP address"
        return f"invalid {what} {value!r}"
    return None


def port_error(value: str) -> Optional[str]:
    """Istio's ValidatePorts: a decimal port number 0-65535 (a string)."""
    if not value.isdigit() or int(value) > 65535:
        return f"invalid port {value!r} (a port number 0-65535, as a string)"
    return None


def http_only_key(key: str) -> bool:
    return key in HTTP_KEYS or key.startswith(HTTP_KEY_PREFIXES)


def _known_key(key: str) -> bool:
    return key in TCP_KEYS or http_only_key(key) or key.startswith(METADATA_KEY_PREFIX)


Report = Callable[[str, str, str], None]


def validate_policy(policy: AuthorizationPolicy, report: Report) -> None:
    """Istio's rules for one policy; ``report(severity, path, message)``."""
    def error(path: str, message: str) -> None:
        report(ERROR, path, message)

    def warn(path: str, message: str) -> None:
        report(WARNING, path, message)

    action = policy.action
    if action not in ACTIONS:
        error("spec.action", f"unknown action {action!r} (one of {', '.join(ACTIONS)})")
    if policy.selector is not None and policy.target_refs:
        error("spec.selector", "only one of targetRefs or selector can be set")
    for i, ref in enumerate(policy.target_refs):
        path = f"spec.targetRefs[{i}]"
        if not ref.name:
            error(path + ".name", "targetRef name is required")
        if not ref.kind:
            error(path + ".kind", "targetRef kind is required")
        elif ref.kind == "Gateway" and ref.group != "gateway.networking.k8s.io":
            error(path + ".group", "targetRef of kind Gateway must have group "
                  "gateway.networking.k8s.io")
        if ref.namespace and ref.namespace != policy.meta.namespace:
            error(path + ".namespace", f"targetRef namespace {ref.namespace!r} must be the "
                  f"policy's own namespace {policy.meta.namespace!r}")
        if ref.kind and ref.kind != "Gateway":
            warn(path + ".kind", f"targetRef kind {ref.kind} does not select a gateway; "
                 "the policy does not apply to tsgate")
    if action == "CUSTOM":
        if not policy.provider:
            error("spec.provider", "a CUSTOM action needs provider.name")
        else:
            warn("spec.action", f"CUSTOM (external authorizer {policy.provider!r}) is not "
                 "enforced by tsgate: the policy is ignored")
    elif policy.provider:
        error("spec.provider", "provider is only allowed with the CUSTOM action")
    value = dict(policy.meta.annotations).get(DRY_RUN)
    if value is not None:
        if _bool_error(value):
            error(f'metadata.annotations["{DRY_RUN}"]',
                  f"invalid {DRY_RUN} annotation {value!r} (true or false)")
        elif action == "CUSTOM":
            error(f'metadata.annotations["{DRY_RUN}"]',
                  f"{DRY_RUN} is not supported with the CUSTOM action")
    for i, rule in enumerate(policy.rules or ()):
        _validate_rule(rule, f"spec.rules[{i}]", action, error, warn)
    if not policy.rules and action == "ALLOW":
        warn("spec", "an ALLOW policy without rules denies every connection it applies to")


def _validate_rule(rule: AuthzRule, p: str, action: str,
                   error: Callable[[str, str], None], warn: Callable[[str, str], None]) -> None:
    http: list[str] = []
    if rule.sources is not None and not rule.sources:
        error(f"{p}.from", "`from` must not be empty (omit it to match every source)")
    for j, source in enumerate(rule.sources or ()):
        sp = f"{p}.from[{j}].source"
        if source is None or not source.fields:
            error(sp, "`from.source` must not be empty")
            continue
        for name, values in source.fields:
            fp = f"{sp}.{name}"
            if not values:
                # An empty list is the same as an unset field in Istio's proto.
                continue
            for k, v in enumerate(values):
                if not v:
                    error(f"{fp}[{k}]", f"empty value is not allowed in {name}")
                elif name in IP_SOURCE_FIELDS:
                    problem = ip_error(v)
                    if problem:
                        error(f"{fp}[{k}]", problem)
            if name in HTTP_SOURCE_FIELDS:
                http.append(fp)
        if all(not values for _, values in source.fields):
            error(sp, "`from.source` must not be empty")
    if rule.operations is not None and not rule.operations:
        error(f"{p}.to", "`to` must not be empty (omit it to match every destination)")
    for j, operation in enumerate(rule.operations or ()):
        op = f"{p}.to[{j}].operation"
        if operation is None or all(not values for _, values in operation.fields):
            error(op, "`to.operation` must not be empty")
            continue
        for name, values in operation.fields:
            fp = f"{op}.{name}"
            for k, v in enumerate(values):
                if not v:
                    error(f"{fp}[{k}]", f"empty value is not allowed in {name}")
                elif name in ("ports", "notPorts"):
                    problem = port_error(v)
                    if problem:
                        error(f"{fp}[{k}]", problem)
            if name in HTTP_OPERATION_FIELDS and values:
                http.append(fp)
    for j, cond in enumerate(rule.when):
        cp = f"{p}.when[{j}]"
        if not cond.key:
            error(f"{cp}.key", "`key` must not be empty")
            continue
        if not cond.values and not cond.not_values:
            error(cp, f"at least one of values or notValues must be set for key {cond.key}")
            continue
        if not _known_key(cond.key):
            error(f"{cp}.key", f"unknown attribute: {cond.key}")
            continue
        for field, listed in (("values", cond.values), ("notValues", cond.not_values)):
            for k, v in enumerate(listed or ()):
                vp = f"{cp}.{field}[{k}]"
                if not v:
                    error(vp, f"empty value is not allowed for {cond.key}")
                elif cond.key in IP_KEYS:
                    problem = ip_error(v)
                    if problem:
                        error(vp, problem)
                elif cond.key == "destination.port":
                    problem = port_error(v)
                    if problem:
                        error(vp, problem)
        if http_only_key(cond.key) or cond.key.startswith(METADATA_KEY_PREFIX):
            http.append(f"{cp}.key")
    for fp in http:
        if action == "ALLOW":
            warn(fp, "HTTP-only field on a TCP gateway: this whole ALLOW rule is ignored "
                 "(Istio drops it from TCP filter chains; the policy is stricter)")
        elif action in ("DENY", "AUDIT"):
            warn(fp, f"HTTP-only field on a TCP gateway: this condition is ignored and the "
                 f"rest of the {action} rule still applies (Istio: a wider {action.lower()}; "
                 "scope DENY policies by port)")


def validate_policies(resources: Iterable[Resource]) -> list[Diagnostic]:
    """Istio's validation of every AuthorizationPolicy in ``resources``."""
    out: list[Diagnostic] = []
    for res in resources:
        if not isinstance(res, AuthorizationPolicy):
            continue
        meta = res.meta

        def report(severity: str, path: str, message: str, meta: Meta = meta) -> None:
            out.append(Diagnostic(severity, message, meta.file,
                                  meta.line_of(path) if path else meta.line, meta.ref, path))

        validate_policy(res, report)
    return out


# ---------------------------------------------------------------- selection


def applies(policy: AuthorizationPolicy, *, labels: Mapping[str, str],
            namespaces: Iterable[str], gateways: Iterable[tuple[str, str, str]],
            root_namespace: str) -> bool:
    """
    Does ``policy`` apply to a listener of this gateway?

    ``namespaces``: the gateway workload's namespace(s) for this listener;
    ``gateways``: (kind, namespace, name) of the Gateway objects whose
    servers make up the listener. A policy in the root namespace applies in
    every namespace; ``selector.matchLabels`` must be a subset of the gateway
    labels; ``targetRef(s)`` must name one of the listener's Gateways.
    """
    ns = policy.meta.namespace
    if ns != root_namespace and ns not in set(namespaces):
        return False
    if policy.target_refs:
        names = {(g_ns, g_name) for kind, g_ns, g_name in gateways if kind == "Gateway"}
        return any(ref.kind == "Gateway" and (ref.namespace or ns, ref.name) in names
                   for ref in policy.target_refs)
    if policy.selector:
        return all(labels.get(k) == v for k, v in policy.selector)
    return True


__all__ = [
    "DEFAULT_ROOT_NAMESPACE", "DRY_RUN", "applies", "build_authorization_policy", "dry_run",
    "validate_policies", "validate_policy",
]
