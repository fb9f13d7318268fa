"""
``tsgate explain --source IP [--remote IP] [--sni NAME]``: the authorization
decision for one hypothetical connection, with the policy and rule that made
it and when the data path makes it (at accept, or after the ClientHello).
"""

from __future__ import annotations

from typing import Any, Optional

from tsgate.authz.engine import UNKNOWN, Facts, ListenerAuthz, Verdict


def _where(authz: ListenerAuthz, policy_id: str) -> str:
    for rule in (*authz.enforced.deny, *authz.enforced.allow, *authz.shadow.deny,
                 *authz.shadow.allow):
        if rule.policy_id == policy_id:
            return f"{rule.description} ({policy_id})"
    return policy_id


def authorization(listener: Any, source: Optional[str], sni: Optional[str],
                  remote: Optional[str] = None) -> dict[str, Any]:
    """JSON-ready: the decision, its policy and rule, the policies and limits."""
    authz: Optional[ListenerAuthz] = getattr(listener, "authz", None)
    if authz is None:
        return {"decision": "allowed", "reason": "no AuthorizationPolicy or limit applies",
                "policies": [], "limits": []}
    out: dict[str, Any] = {
        "policies": [{"policy": p.ref, "action": p.action, "dry_run": p.dry_run,
                      "notes": list(p.notes)} for p in authz.policies],
        "limits": authz.limits.describe() if authz.limits is not None else [],
    }
    if source is None:
        out.update(decision="unknown", reason="give --source IP to evaluate the policies")
        return out
    # destination.ip: the listener's bind address when it has one
    local = None if listener.bind in ("0.0.0.0", "::", "") else listener.bind
    at_accept = authz.decide(Facts(source, remote, local,
                                   UNKNOWN if listener.inspect else sni))
    final: Optional[Verdict] = at_accept or authz.decide(Facts(source, remote, local, sni))
    assert final is not None
    when = "at accept, before any upstream connect" if at_accept is not None else \
        "after the ClientHello (SNI rules), before any upstream connect"
    out["decision"] = "allowed" if final.allowed else "denied"
    out["reason"] = final.reason
    out["policy"] = _where(authz, final.policy) if final.policy else None
    out["when"] = when
    if not final.allowed:
        out["connection_termination_details"] = final.termination_details
    if not authz.shadow.empty:
        shadow = authz.decide_shadow(Facts(source, remote, local, sni))
        if shadow is not None:
            out["dry_run"] = {"decision": "allowed" if shadow.allowed else "denied",
                              "policy": _where(authz, shadow.policy) if shadow.policy else None}
    return out


def lines(view: dict[str, Any]) -> list[str]:
    out = []
    decision = view["decision"]
    head = f"authorization: {decision}"
    if view.get("policy"):
        head += f" by {view['policy']}"
    head += f" ({view['reason']})"
    if view.get("when"):
        head += f"; decided {view['when']}"
    out.append(head)
    if view.get("connection_termination_details"):
        out.append(f"  access log connection_termination_details: "
                   f"{view['connection_termination_details']}")
    if view.get("dry_run"):
        dry = view["dry_run"]
        out.append(f"  dry-run policies would have {dry['decision']} it"
                   + (f" ({dry['policy']})" if dry.get("policy") else ""))
    for p in view["policies"]:
        out.append(f"  policy {p['policy']} {p['action']}"
                   + (" (dry-run)" if p["dry_run"] else ""))
        out.extend(f"    - {note}" for note in p["notes"])
    for limit in view["limits"]:
        out.append(f"  limit: {limit}")
    return out
