"""
AuthorizationPolicies and the tsgate.io/ limit annotations to a
:class:`ListenerAuthz` per listener, once per configuration load.

``attach`` returns the route table with each listener's ``authz`` set; a
connection keeps the listener it was accepted under, so a reload that
changes policies applies to new connections only.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Optional

import attrs

from tsgate.authz.engine import (
    Check,
    CompiledRule,
    ListenerAuthz,
    PolicyInfo,
    PolicySet,
    _namespace,
    _principal,
    _service_account,
    ip_check,
    sni_check,
    string_check,
)
from tsgate.authz.limits import limits_from_annotations
from tsgate.config.authz import (
    DEFAULT_ROOT_NAMESPACE,
    HTTP_OPERATION_FIELDS,
    HTTP_SOURCE_FIELDS,
    METADATA_KEY_PREFIX,
    applies,
    dry_run,
    http_only_key,
)
from tsgate.config.diagnostics import INFO, Diagnostic
from tsgate.config.model import AuthorizationPolicy, AuthzRule, Resource
from tsgate.routing import Listener, RouteTable

_IDENTITY = {"principals": _principal, "namespaces": _namespace,
             "serviceAccounts": _service_account}
_IDENTITY_KEYS = {"source.principal": _principal, "source.namespace": _namespace,
                  "source.serviceAccount": _service_account}
_IP_FIELDS = {"ipBlocks": "source", "remoteIpBlocks": "remote"}
_IP_KEYS = {"source.ip": "source", "remote.ip": "remote", "destination.ip": "destination"}


def policy_id(policy: AuthorizationPolicy, index: int) -> str:
    """Istio's id: ``ns[<namespace>]-policy[<name>]-rule[<index>]``."""
    return f"ns[{policy.meta.namespace}]-policy[{policy.meta.name}]-rule[{index}]"


def _has_http(rule: AuthzRule) -> bool:
    for source in rule.sources or ():
        if source is not None and any(v for n, v in source.fields if n in HTTP_SOURCE_FIELDS):
            return True
    for op in rule.operations or ():
        if op is not None and any(v for n, v in op.fields if n in HTTP_OPERATION_FIELDS):
            return True
    return any(http_only_key(c.key) or c.key.startswith(METADATA_KEY_PREFIX)
               for c in rule.when)


def _port_ok(values: Optional[tuple[str, ...]], port: int) -> Optional[bool]:
    if not values:
        return None
    return any(v.isdigit() and int(v) == port for v in values)


def compile_rule(policy: AuthorizationPolicy, index: int, rule: AuthzRule,
                 port: int) -> tuple[Optional[CompiledRule], str]:
    """The rule for a listener on ``port``, or (None, why it can never match there)."""
    pid = policy_id(policy, index)
    if policy.action == "ALLOW" and _has_http(rule):
        return None, f"{pid}: HTTP-only fields, the whole ALLOW rule is ignored on TCP"
    if rule.operations is not None:
        ok = False
        for op in rule.operations:
            if op is None:
                continue
            ports = _port_ok(op.get("ports"), port)
            not_ports = _port_ok(op.get("notPorts"), port)
            if ports is not False and not_ports is not True:
                ok = True
                break
        if not ok:
            return None, f"{pid}: to.operation ports do not include port {port}"
    sources: Optional[list[tuple[Check, ...]]] = None
    if rule.sources is not None:
        sources = []
        for source in rule.sources:
            checks: list[Check] = []
            for name, values in (source.fields if source is not None else ()):
                if not values or name in HTTP_SOURCE_FIELDS:
                    continue
                negate = name.startswith("not")
                base = name[3].lower() + name[4:] if negate else name
                if base in _IP_FIELDS:
                    checks.append(ip_check(_IP_FIELDS[base], values, negate))
                elif base in _IDENTITY:
                    checks.append(string_check(_IDENTITY[base], values, negate))
            sources.append(tuple(checks))
    checks = []
    sni_checks = []
    for cond in rule.when:
        key = cond.key
        if key == "destination.port":
            if _port_ok(cond.values, port) is False or _port_ok(cond.not_values, port) is True:
                return None, f"{pid}: when destination.port does not include port {port}"
        elif key == "connection.sni":
            sni_checks.append(sni_check(cond.values, cond.not_values))
        elif key in _IP_KEYS:
            if cond.values:
                checks.append(ip_check(_IP_KEYS[key], cond.values, False))
            if cond.not_values:
                checks.append(ip_check(_IP_KEYS[key], cond.not_values, True))
        elif key in _IDENTITY_KEYS:
            if cond.values:
                checks.append(string_check(_IDENTITY_KEYS[key], cond.values, False))
            if cond.not_values:
                checks.append(string_check(_IDENTITY_KEYS[key], cond.not_values, True))
        # HTTP-only and metadata keys: dropped (DENY/AUDIT; ALLOW rules were skipped above)
    return CompiledRule(pid, None if sources is None else tuple(sources), tuple(checks),
                        tuple(sni_checks), description=f"{policy.meta.ref} spec.rules[{index}]"), ""


def compile_listener(listener: Listener, policies: Sequence[AuthorizationPolicy]) -> \
        tuple[ListenerAuthz, list[str]]:
    """The listener's engine from the policies that apply to it, and notes."""
    notes: list[str] = []
    sets: dict[bool, dict[str, list[CompiledRule]]] = {
        False: {"DENY": [], "ALLOW": []}, True: {"DENY": [], "ALLOW": []}}
    has_allow = {False: False, True: False}
    infos = []
    for policy in policies:
        shadow = dry_run(policy)
        mine: list[str] = []
        if policy.action in ("CUSTOM", "AUDIT"):
            mine.append(f"{policy.action}: does not change the decision"
                        + (" (CUSTOM is not enforced by tsgate)" if policy.action == "CUSTOM"
                           else ""))
            infos.append(PolicyInfo(policy.meta.ref, policy.action, shadow, tuple(mine)))
            continue
        if policy.action == "ALLOW":
            has_allow[shadow] = True
        for i, rule in enumerate(policy.rules or ()):
            compiled, why = compile_rule(policy, i, rule, listener.port)
            if compiled is None:
                mine.append(why)
            else:
                sets[shadow][policy.action].append(compiled)
        if not policy.rules:
            mine.append("no rules: matches nothing"
                        + (" (an ALLOW policy that matches nothing denies everything)"
                           if policy.action == "ALLOW" else ""))
        notes.extend(mine)
        infos.append(PolicyInfo(policy.meta.ref, policy.action, shadow, tuple(mine)))
    enforced = PolicySet(tuple(sets[False]["DENY"]), tuple(sets[False]["ALLOW"]),
                         has_allow[False])
    shadow_set = PolicySet(tuple(sets[True]["DENY"]), tuple(sets[True]["ALLOW"]),
                           has_allow[True])
    needs_local = any(c.key == "destination.ip" for p in policies for r in p.rules or ()
                      for c in r.when)
    return ListenerAuthz(enforced, shadow_set, limits_from_annotations(listener.annotations),
                         tuple(infos), needs_local), notes


def attach(table: RouteTable, resources: Iterable[Resource], *,
           gateway_labels: Mapping[str, str], gateway_namespace: Optional[str] = None,
           root_namespace: str = DEFAULT_ROOT_NAMESPACE) -> tuple[RouteTable, list[Diagnostic]]:
    """``table`` with each listener's ``authz`` compiled, and notices."""
    policies = [r for r in resources if isinstance(r, AuthorizationPolicy)]
    diags: list[Diagnostic] = []
    used: set[tuple[str, str, str]] = set()
    listeners = []
    for listener in table.listeners:
        if gateway_namespace:
            namespaces: Sequence[str] = (gateway_namespace,)
        else:
            namespaces = tuple(ns for _, ns, _ in listener.gateways)
        mine = [p for p in policies
                if applies(p, labels=gateway_labels, namespaces=namespaces,
                           gateways=listener.gateways, root_namespace=root_namespace)]
        used.update(p.meta.key for p in mine)
        authz, _notes = compile_listener(listener, mine)
        if not mine and authz.limits is None:
            listeners.append(listener)
            continue
        listeners.append(attrs.evolve(listener, authz=authz))
    for p in policies:
        if p.meta.key not in used:
            diags.append(Diagnostic(
                INFO, f"applies to no listener of this gateway (namespace {p.meta.namespace}, "
                f"root namespace {root_namespace}, selector/targetRefs)",
                p.meta.file, p.meta.line, p.meta.ref))
    return RouteTable(tuple(listeners)), diags
