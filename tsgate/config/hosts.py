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


# ------------------------------------------- Istio's own host rules, exactly

#: Istio's labels (pkg/config/labels) allow upper case, unlike Kubernetes object names
_ISTIO_LABEL = re.compile(r"^[a-zA-Z0-9]([-a-zA-Z0-9]*[a-zA-Z0-9])?$")
_WILDCARD_LABEL = re.compile(r"^(\*|(\*|\*-)?[a-zA-Z0-9]([-a-zA-Z0-9]*[a-zA-Z0-9])?)$")
#: The SNI Istio generates for mesh mTLS: outbound_.<port>_.<subset>_.<host>
AUTO_SNI_PREFIX = "outbound_"


def istio_labels_error(domain: str) -> Optional[str]:
    """Istio's ValidateDNS1123Labels: labels, a non-numeric TLD, a trailing dot allowed."""
    return _labels_error(domain, domain)


def _labels_error(domain: str, whole: str) -> Optional[str]:
    parts = domain.split(".")
    if parts[-1].isdigit():
        return f"host {whole!r} is invalid: the top-level domain {parts[-1]!r} cannot be " \
               "all-numeric"
    for i, part in enumerate(parts):
        if i == len(parts) - 1 and part == "":
            return None
        if len(part) > DNS1123_LABEL_MAX or not _ISTIO_LABEL.match(part):
            return f"host {whole!r} is invalid: label {part!r} is not a DNS-1123 label"
    return None


def _preconditions(domain: str) -> Optional[str]:
    if len(domain) > 255:
        return f"host {domain!r} is too long (max 255)"
    if not domain:
        return "host must not be empty"
    return None


def istio_wildcard_domain_error(domain: str) -> Optional[str]:
    """
    Istio's ValidateWildcardDomain: the first label may be ``*``, ``*x`` or
    ``*-x`` (a partial wildcard, which some kinds then refuse or warn about),
    the other labels DNS-1123, lower case.
    """
    problem = _preconditions(domain)
    if problem:
        return problem
    first, dot, rest = domain.partition(".")
    if len(first) > DNS1123_LABEL_MAX or not _WILDCARD_LABEL.match(first):
        if "*" in first:
            return f"host {domain!r} is invalid: a wildcard is only allowed as the whole " \
                   "first label ('*.') or its start ('*x')"
        return f"host {domain!r} is invalid: label {first!r} is not a DNS-1123 label"
    return _labels_error(rest, domain) if dot else None


def istio_fqdn_error(domain: str) -> Optional[str]:
    """Istio's ValidateFQDN (no wildcard at all)."""
    return _preconditions(domain) or istio_labels_error(domain)


def partial_wildcard(host: str) -> bool:
    """``*x.com`` or ``*x``: a ``*`` that is neither ``*`` alone nor a ``*.`` label."""
    return "*" in host and host != "*" and not host.startswith("*.")


def parse_auto_sni(domain: str) -> Optional[tuple[int, str, str]]:
    """``outbound_.15010_._.istiod.istio-system.svc.cluster.local`` -> (port, subset, host)."""
    if not domain.startswith(AUTO_SNI_PREFIX):
        return None
    parts = domain.split("_", 3)
    if len(parts) < 4 or parts[0] != "outbound":
        return None
    port, subset, host = parts[1].strip("."), parts[2].strip("."), parts[3].strip(".")
    if not port.isdigit() or not host:
        return None
    return int(port), subset, host


def auto_sni_error(domain: str) -> Optional[str]:
    """Istio's check of an auto-generated SNI name in a gateway-bound tls route."""
    problem = _preconditions(domain)
    if problem:
        return problem
    parts = domain.split("_")
    if len(parts) < 4:
        return f"domain name {domain} invalid, should follow 'outbound_.<PORT>_._.<HOSTNAME>' " \
               "format"
    if parts[0] != "outbound":
        return f"domain name {domain!r} invalid (label {parts[0]!r} invalid)"
    if not re.search(r"[0-9]", parts[1].strip(".")):
        return f"domain name {domain!r} invalid (label {parts[1]!r} invalid). should follow " \
               "outbound_.<PORT>_._.<HOSTNAME> format"
    if not re.search(r"[a-zA-Z]", parts[3].strip(".")):
        return f"domain name {domain!r} invalid (label {parts[3]!r} invalid). should follow " \
               "outbound_.<PORT>_._.<HOSTNAME> format"
    return None


def unix_address_error(addr: str) -> Optional[str]:
    """Istio's ValidateUnixAddress (the part after ``unix://``)."""
    if not addr:
        return "unix address must not be empty"
    if addr.startswith("@"):
        return None
    if not addr.startswith("/") or addr.endswith("/"):
        return f"{addr} is not an absolute path to a file"
    return None


def istio_label_error(text: str) -> Optional[str]:
    """Istio's IsDNS1123Label (port and subset names): as Kubernetes', upper case allowed."""
    if not text:
        return "must not be empty"
    if len(text) > DNS1123_LABEL_MAX or not _ISTIO_LABEL.match(text):
        return f"{text!r} is not a DNS-1123 label (letters, digits and '-', starting and " \
               "ending with a letter or digit)"
    return None
