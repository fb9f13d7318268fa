"""
The admin ``/authz`` view: which policies and limits apply per listener,
recent RBAC denials (dry-run ones marked) and the sources refused by a
limit. Bounded: the gateway keeps the 256 most recent of each
(:class:`tsgate.authz.limits.Guards`).
"""

from __future__ import annotations

import time
from typing import Any


def _iso(epoch: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(epoch))


def authz_view(gateway: Any) -> dict[str, Any]:
    """JSON-ready; a gateway without the authz machinery gives empty lists."""
    ctx = getattr(gateway, "ctx", None)
    guards = getattr(ctx, "guards", None)
    snap: dict[str, Any] = guards.snapshot() if guards is not None else \
        {"denied": [], "limited": [], "listeners": {}}
    for item in (*snap["denied"], *snap["limited"]):
        item["iso"] = _iso(item["last"])
    listeners = []
    table = getattr(gateway, "table", None)
    for listener in getattr(table, "listeners", ()):
        authz = getattr(listener, "authz", None)
        if authz is None:
            continue
        listeners.append({
            "listener": listener.name,
            "policies": [{"policy": p.ref, "action": p.action, "dry_run": p.dry_run,
                          "notes": list(p.notes)} for p in authz.policies],
            "limits": authz.limits.describe() if authz.limits is not None else [],
            "counts": snap["listeners"].get(listener.name, {}),
        })
    stats = getattr(gateway, "stats", None)
    counters = {}
    if stats is not None:
        for name in ("tcp.rbac.allowed", "tcp.rbac.denied", "tcp.rbac.shadow_allowed",
                     "tcp.rbac.shadow_denied", "tcp.limit_refused"):
            counters[name] = stats.total(name)
    return {"listeners": listeners, "counters": counters, "denied": snap["denied"],
            "limited": snap["limited"]}
