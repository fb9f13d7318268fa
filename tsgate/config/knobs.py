"""
tsgate-only knobs, as Gateway annotations under ``tsgate.io/``.

Istio-valid YAML must stay valid, so tsgate adds no fields to Istio's kinds;
anything tsgate-specific is a ``metadata.annotations`` entry on the Gateway
whose servers make up the listener (Kubernetes and Istio ignore annotations
they do not know). Each knob is listed here with its parser, so validation,
the compiler and the data path read one definition.

- ``tsgate.io/inspect-timeout``: a duration (``1s``, ``500ms``): how long
  the listeners of that Gateway wait for a ClientHello before the TCP
  fallback route or close (``--inspect-timeout`` otherwise);
- ``tsgate.io/observers``: comma-separated observer plugin names, or
  ``none``: the stream observers of those listeners, instead of Istio's
  selection by port protocol and port-name prefix;
- ``tsgate.io/max-connections-per-ip``, ``tsgate.io/connection-rate-per-ip``,
  ``tsgate.io/max-connections``, ``tsgate.io/max-inspecting-connections``:
  per-source and listener limits, parsed in ``tsgate.authz.limits``;
- ``tsgate.io/proxy-protocol``: ``required`` or ``optional``: read a PROXY
  protocol v1/v2 header first on those listeners (tsgate.proxy_protocol);
- ``tsgate.io/proxy-protocol-trusted-cidrs``: the peers allowed to send it.

On a DestinationRule (tsgate.upstream.policy): ``tsgate.io/connect-attempts``
and ``tsgate.io/health-check``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Callable, Optional

import attrs

from tsgate import proxy_protocol
from tsgate.authz.limits import KNOWN as LIMIT_KNOBS
from tsgate.config.schema import parse_duration
from tsgate.routing import Listener
from tsgate.upstream import policy

PREFIX = "tsgate.io/"
INSPECT_TIMEOUT = PREFIX + "inspect-timeout"
OBSERVERS = PREFIX + "observers"


def _duration(value: str) -> float:
    seconds = parse_duration(value)
    if seconds is None or seconds < 0:
        raise ValueError(f"{value!r} is not a duration (e.g. 1s, 500ms, 2m)")
    return seconds


def _names(value: str) -> tuple[str, ...]:
    names = tuple(n.strip() for n in value.split(",") if n.strip())
    if not names:
        raise ValueError("empty: give plugin names separated by commas, or none")
    if "none" in names and len(names) > 1:
        raise ValueError("none cannot be combined with plugin names")
    return () if names == ("none",) else names


KNOWN: Mapping[str, Callable[[str], Any]] = {
    INSPECT_TIMEOUT: _duration,
    OBSERVERS: _names,
    **LIMIT_KNOBS,  # tsgate.io/max-connections, -per-ip, rate, inspecting (tsgate.authz.limits)
    proxy_protocol.MODE: proxy_protocol.parse_mode,
    proxy_protocol.TRUSTED_CIDRS: proxy_protocol.parse_cidrs,
    **policy.DESTINATION_RULE_KNOBS,
}

#: the kind each knob belongs on (Gateway unless listed)
KIND: Mapping[str, str] = {key: "DestinationRule" for key in policy.DESTINATION_RULE_KNOBS}


def kind_of(key: str) -> str:
    """The resource kind whose annotation ``key`` takes effect on."""
    return KIND.get(key, "Gateway")


def unknown(key: str) -> Optional[str]:
    """A warning for a ``tsgate.io/`` key tsgate does not know (a typo, likely)."""
    if key in KNOWN:
        return None
    known = ", ".join(sorted(KNOWN))
    return f"unknown tsgate annotation {key!r}, ignored (known: {known})"


def check(key: str, value: str) -> Optional[str]:
    """Why a known ``tsgate.io/`` annotation's value is wrong, or None."""
    parser = KNOWN.get(key)
    if parser is None:
        return None
    try:
        parser(value)
    except ValueError as exc:
        return f"{key}: {exc}"
    return None


def listener_settings(annotations: tuple[tuple[str, str], ...]) -> dict[str, Any]:
    """The parsed knobs of one listener (invalid ones were refused at load time)."""
    settings: dict[str, Any] = {}
    for key, value in annotations:
        parser = KNOWN.get(key)
        if parser is None:
            continue
        try:
            settings[key] = parser(value)
        except ValueError:
            continue
    return settings


def apply(listener: Listener) -> Listener:
    """The listener with its knobs settled from its annotations (the compiler's last step)."""
    knobs = listener_settings(listener.annotations)
    if not knobs:
        return listener
    return attrs.evolve(listener, inspect_timeout=knobs.get(INSPECT_TIMEOUT),
                        observer_names=knobs.get(OBSERVERS))
