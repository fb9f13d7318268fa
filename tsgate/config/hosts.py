"""
Host names as Istio reads them: validation, short-name expansion, matching.

Kept apart because validation (is ``*.foo.com`` a legal sniHost?) and the
compiler (does VirtualService host ``*.foo.com`` bind to server host
``a.foo.com``?) must agree on exactly the same rules.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Optional

_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
#: Kubernetes DNS-1123 label (namespace, Gateway name, subset name).
DNS1123_LABEL_MAX = 63
DNS1123_SUBDOMAIN_MAX = 253
CLUSTER_DOMAIN = "svc.cluster.local"


def label_error(text: str) -> Optional[str]:
    """Why ``text`` is not a DNS-1123 label, or None."""
    if not text:
        return "must not be empty"
    if len(text) > DNS1123_LABEL_MAX:
        return f"{text!r} is longer than {DNS1123_LABEL_MAX} characters"
    if not _LABEL.match(text):
        return (f"{text!r} is not a DNS-1123 label (lower-case letters, digits and '-', "
                "starting and ending with a letter or digit)")
    return None


def subdomain_error(text: str) -> Optional[str]:
    """Why ``text`` is not a DNS-1123 subdomain (an object name), or None."""
    if not text:
        return "must not be empty"
    if len(text) > DNS1123_SUBDOMAIN_MAX:
        return f"{text!r} is longer than {DNS1123_SUBDOMAIN_MAX} characters"
    if not all(_LABEL.match(part) for part in text.split(".")):
        return f"{text!r} is not a DNS-1123 subdomain (lower-case labels separated by '.')"
    return None


def is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def subnet_error(text: str) -> Optional[str]:
    """Why ``text`` is neither an IP nor a CIDR block, or None."""
    try:
        ipaddress.ip_network(text, strict=False)
    except ValueError:
        return f"{text!r} is not an IP address or CIDR block"
    return None


def domain_error(text: str, *, wildcard: bool = True, star: bool = True) -> Optional[str]:
    """
    Why ``text`` is not a valid host (Istio's ValidateWildcardDomain), or None.

    ``*`` alone and a leading ``*.`` label are wildcards; a ``*`` anywhere
    else (``*w.example.com``, ``a.*.com``) is invalid, as in Envoy.
    """
    if not text:
        return "host must not be empty"
    if len(text) > 255:
        return f"host {text!r} is too long"
    if text == "*":
        return None if star else "host '*' is not allowed here"
    body = text
    if text.startswith("*."):
        if not wildcard:
            return f"wildcard host {text!r} is not allowed here"
        body = text[2:]
    if "*" in body:
        return (f"host {text!r} is invalid: a wildcard is only allowed as the whole "
                "first label ('*.')")
    for part in body.lower().split("."):
        if not _LABEL.match(part):
            return f"host {text!r} is invalid: label {part!r} is not a DNS-1123 label"
    return None


def fqdn(host: str, namespace: str) -> str:
    """Istio's short-name resolution: ``echo`` in ``ns`` -> ``echo.ns.svc.cluster.local``."""
    host = host.lower().rstrip(".")
    if host == "*" or host.startswith("*.") or "." in host or is_ip(host):
        return host
    return f"{host}.{namespace}.{CLUSTER_DOMAIN}"


def matches(a: str, b: str) -> bool:
    """Do two host patterns overlap (wildcards either way)? ``*`` overlaps everything."""
    a, b = a.lower(), b.lower()
    if a == b or a == "*" or b == "*":
        return True
    if a.startswith("*."):
        if b.startswith("*."):
            return a[1:].endswith(b[1:]) or b[1:].endswith(a[1:])
        return b.endswith(a[1:])
    if b.startswith("*."):
        return a.endswith(b[1:])
    return False


def subset_of(a: str, b: str) -> bool:
    """Is every name ``a`` matches also matched by ``b``? (sniHost within a VS host)."""
    a, b = a.lower(), b.lower()
    if b == "*" or a == b:
        return True
    if a == "*":
        return False
    if b.startswith("*."):
        # "*.foo.com" covers "x.foo.com" and "*.x.foo.com" (and itself).
        body = a[1:] if a.startswith("*.") else a
        return body.endswith(b[1:]) and len(body) > len(b) - 1 or a == b
    return False
