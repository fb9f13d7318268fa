"""
``tsgate explain PATH... --port N [--sni NAME] [--alpn P] [--source IP]
[--first-bytes FILE] [--bind ADDR]``: load and compile the config, then
print how one connection would be routed (:mod:`tsgate.explain`).

Exit status: 0 when the connection would be routed, 1 when it would get
``NR`` (no listener, no chain), 2 when the config or the arguments are bad,
so scripts and CI checks can assert on a route.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any, Optional, TextIO

from tsgate.cli import add_gateway_arguments, load_from_args, parse_ip
from tsgate.explain import Explanation, explain
from tsgate.interfaces import HintTooLarge


def register(subparsers: Any) -> argparse.ArgumentParser:
    """Add the ``explain`` subcommand; its handler is ``func`` (``args.func(args) -> int``)."""
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "explain",
        help="show which listener, chain, rule and destination a connection would get, and why",
        description=(
            "Load and compile the Istio YAML, then explain how a connection to --port "
            "presenting --sni would be routed: the listener, the filter chain, the "
            "VirtualService rule, the destinations with weights and endpoints, and why every "
            "other chain was not chosen. Exits 0 if routed, 1 for NR, 2 for bad config."
        ),
    )
    parser.add_argument("paths", nargs="*", metavar="PATH",
                        help="YAML files or directories (as for validate)")
    parser.add_argument("--config", action="append", default=[], metavar="PATH",
                        help="a YAML file or directory (repeatable; same as PATH)")
    parser.add_argument("--port", type=int, required=True, help="the port the client connects to")
    parser.add_argument("--sni", help="server name in the ClientHello (none: plaintext or no SNI)")
    parser.add_argument("--alpn", help="ALPN protocols offered, comma-separated")
    parser.add_argument("--source", metavar="IP", type=parse_ip,
                        help="the client's address: AuthorizationPolicies are evaluated for it")
    parser.add_argument("--remote", metavar="IP", type=parse_ip,
                        help="the client address a PROXY protocol header carries "
                             "(remoteIpBlocks, remote.ip); default: --source")
    parser.add_argument("--bind", metavar="ADDR", type=parse_ip,
                        help="the listener's bind address when a port has several")
    parser.add_argument("--first-bytes", metavar="FILE",
                        help="a captured ClientHello (raw bytes): SNI and ALPN are read from it")
    add_gateway_arguments(parser)
    parser.add_argument("--json", action="store_true", help="print the explanation as JSON")
    parser.set_defaults(func=run)
    return parser


def hints_from_file(path: str) -> tuple[Optional[str], Optional[str], str]:
    """
    (sni, alpn, what happened) from a captured first flight of client bytes,
    as the data path's TLS inspector would read it. Bytes that are not a
    ClientHello (or a malformed one) are routed as plaintext, as Envoy's
    tls_inspector does by default; a ClientHello over the parser's
    ``max_bytes`` raises :class:`~tsgate.interfaces.HintTooLarge` (the data
    path closes such a connection).
    """
    from tsgate.hints.tls import TlsHintParser
    from tsgate.interfaces import Hint, HintParseError, HintTooLarge, NeedMore

    with open(path, "rb") as f:
        data = f.read()
    parser = TlsHintParser()
    try:
        result = parser.parse(data[:parser.max_bytes])
    except HintTooLarge:
        raise
    except HintParseError as e:
        return None, None, f"{path}: not a valid ClientHello ({e}); routed as plaintext"
    if isinstance(result, NeedMore):
        if len(data) >= parser.max_bytes:
            raise HintTooLarge(f"undecided at {parser.max_bytes} bytes")
        raise ValueError(f"{path}: an incomplete ClientHello ({len(data)} bytes); "
                         "capture the client's whole first flight")
    if isinstance(result, Hint):
        sni = result.attributes.get("sni")
        alpn = result.attributes.get("alpn")
        return sni, alpn, (f"{path}: TLS ClientHello, SNI {sni or '(none)'}, "
                           f"ALPN {alpn or '(none)'}")
    return None, None, f"{path}: not TLS ({result.reason or 'first bytes'}); routed as plaintext"


def explanation_to_dict(e: Explanation) -> dict[str, Any]:
    route = e.route
    return {
        "port": e.port, "bind": e.bind, "sni": e.sni, "alpn": e.alpn, "source": e.source,
        "listener": e.listener.name if e.listener else None,
        "chain": e.decision.chain, "reason": e.decision.reason,
        "route": route.name if route else None,
        "route_source": str(route.source) if route and route.source else None,
        "destinations": [
            {"cluster": d.cluster.name, "weight": d.weight,
             "endpoints": [f"{ep.address}:{ep.port}" for ep in d.cluster.endpoints]}
            for d in (route.destinations if route else ())
        ],
        "candidates": [{"match": c.match, "route": c.route.name, "verdict": c.verdict,
                        "reason": c.reason} for c in e.candidates],
        "notes": list(e.notes),
        "trace": e.short(),
    }


def run(args: Any, out: Optional[TextIO] = None, err: Optional[TextIO] = None) -> int:
    out = out or sys.stdout
    err = err or sys.stderr
    paths = list(args.paths) + list(args.config)
    if not paths:
        print("tsgate explain: give the config as PATH or --config PATH", file=err)
        return 2
    too_large = False
    try:
        sni, alpn = args.sni, args.alpn
        if args.first_bytes:
            try:
                file_sni, file_alpn, what = hints_from_file(args.first_bytes)
            except HintTooLarge:
                too_large = True
                file_sni = file_alpn = None
                what = (f"{args.first_bytes}: a ClientHello larger than the TLS inspector "
                        "reads; the connection is closed (tls_inspector.client_hello_too_large)")
            print(f"first bytes: {what}", file=out)
            if sni is None:
                sni = file_sni
            elif file_sni != sni and not too_large:
                print(f"first bytes: --sni {sni} overrides the file's SNI", file=out)
            alpn = alpn if alpn is not None else file_alpn
    except (OSError, ValueError) as e:
        print(f"tsgate explain: {e}", file=err)
        return 2

    result = load_from_args(args, paths)
    if not result.ok:
        for diag in result.errors:
            print(str(diag), file=err)
        print(f"tsgate explain: {len(result.errors)} error(s) in the config; nothing to explain",
              file=err)
        return 2
    if too_large:
        return 1  # closed before any route is chosen
    found = explain(result.table, args.port, sni=sni, alpn=alpn, source=args.source,
                    bind=args.bind)
    authz = None
    if found.listener is not None:
        from tsgate.authz import explain as authz_explain

        authz = authz_explain.authorization(found.listener, args.source, sni,
                                            getattr(args, "remote", None))
    if args.json:
        data = explanation_to_dict(found)
        data["authorization"] = authz
        json.dump(data, out, indent=2)
        out.write("\n")
    else:
        for line in found.lines():
            print(line, file=out)
        if authz is not None:
            for line in authz_explain.lines(authz):
                print(line, file=out)
    if authz is not None and authz["decision"] == "denied":
        return 1
    return 0 if found.route is not None else 1
