"""
The ``tsgate`` command: ``validate``, ``routes`` and the subcommands other
modules register.

Each subcommand lives in a module with a ``register(subparsers)`` function
that adds its parser and sets ``func`` (``args.func(args) -> int``, the exit
status): this module (``validate``, ``routes``), :mod:`tsgate.explain_cli`
(``explain``) and :mod:`tsgate.plugins_cli` (``plugins``), all registered by
:func:`build_parser`.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections import Counter
from collections.abc import Sequence
from typing import Any, Callable, Optional, TextIO, TypeVar

from tsgate import __version__
from tsgate.config import options as gateway_options
from tsgate.config.options import GatewayOptions, OptionError

T = TypeVar("T")


def option_type(parse: Callable[[str], T]) -> Callable[[str], T]:
    """A parser of :mod:`tsgate.config.options` as an argparse ``type`` (its message kept)."""

    def parse_argument(text: str) -> T:
        try:
            return parse(text)
        except OptionError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    return parse_argument


def parse_ip(text: str) -> str:
    """An IP address option (``--source``, ``--bind``), checked; returned as given."""
    import ipaddress

    try:
        ipaddress.ip_address(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an IP address, got {text!r}") from None
    return text


def add_config_arguments(parser: argparse.ArgumentParser) -> None:
    """The options every command that loads configuration takes."""
    parser.add_argument("paths", nargs="+", metavar="PATH",
                        help="YAML file or directory of *.yaml/*.yml (not recursive); "
                             "- reads standard input")
    add_gateway_arguments(parser)


def add_gateway_arguments(parser: argparse.ArgumentParser) -> None:
    """Which gateway the configuration is compiled for: :class:`GatewayOptions`."""
    parser.add_argument("--gateway-label", action="append",
                        type=option_type(gateway_options.parse_label), default=None,
                        metavar="KEY=VALUE",
                        help="a label of this gateway workload, matched against Gateway "
                             "selectors (repeatable; default istio=ingressgateway)")
    parser.add_argument("--namespace", default=gateway_options.DEFAULT_NAMESPACE, metavar="NS",
                        help="namespace of objects without metadata.namespace (default: "
                             "%(default)s)")
    parser.add_argument("--gateway-namespace", default=None, metavar="NS",
                        help="namespace the gateway runs in, for exportTo (default: each "
                             "Gateway's own namespace)")
    parser.add_argument("--root-namespace", default=gateway_options.DEFAULT_ROOT_NAMESPACE,
                        metavar="NS",
                        help="Istio's root namespace, whose AuthorizationPolicies apply to "
                             "every gateway (default: %(default)s)")
    parser.add_argument("--credentials", default=None, metavar="DIR",
                        help="directory of TLS credentials: DIR/<credentialName>/tls.crt, "
                             "tls.key, ca.crt (a mounted Kubernetes Secret)")
    parser.add_argument("--gateway-class", action="append",
                        type=option_type(gateway_options.parse_gateway_class), default=None,
                        metavar="NAME",
                        help="serve Gateway API Gateways with this gatewayClassName "
                             "(repeatable; default istio)")
    parser.add_argument("--namespace-label", action="append",
                        type=option_type(gateway_options.parse_namespace_label),
                        default=None, metavar="NS:KEY=VALUE",
                        help="a label of namespace NS, for allowedRoutes namespace selectors "
                             "(repeatable; adds to Namespace objects in the config)")


def gateway_options_from(args: argparse.Namespace) -> GatewayOptions:
    """The :class:`GatewayOptions` of parsed arguments (an option not there: its default)."""
    return GatewayOptions.from_parsed(
        gateway_labels=getattr(args, "gateway_label", None) or (),
        gateway_classes=getattr(args, "gateway_class", None) or (),
        namespace_labels=getattr(args, "namespace_label", None) or (),
        default_namespace=getattr(args, "namespace", gateway_options.DEFAULT_NAMESPACE),
        gateway_namespace=getattr(args, "gateway_namespace", None),
        root_namespace=getattr(args, "root_namespace", gateway_options.DEFAULT_ROOT_NAMESPACE),
        credentials_dir=getattr(args, "credentials", None),
    )


def load_from_args(args: argparse.Namespace, paths: Optional[Sequence[str]] = None) -> Any:
    """
    Load ``args.paths`` (or ``paths``) for the gateway the arguments describe,
    as the commands read it: a certificate that cannot be read is a warning
    (Istio's verdict), not an error.
    """
    from tsgate.config import load_config

    return load_config(args.paths if paths is None else paths, gateway_options_from(args),
                       tls_files_fatal=False)


def register(subparsers: Any) -> None:
    validate = subparsers.add_parser(
        "validate", help="check Istio YAML and summarise the listeners and routes",
        description="Load, validate and compile Istio YAML. Exit 0 with a summary, or 1 "
                    "with every error (and warnings) on stderr.")
    add_config_arguments(validate)
    validate.add_argument("-q", "--quiet", action="store_true",
                          help="do not print info notices (skipped kinds, DNS fallbacks)")
    validate.add_argument("--json", action="store_true",
                          help="print files, diagnostics, resources and the table as JSON "
                               "(the same as --output json)")
    validate.add_argument("-o", "--output", choices=("text", "json"), default="text",
                          help="text (diagnostics on stderr, a summary on stdout) or json "
                               "(one JSON document on stdout; diagnostics carry their Istio "
                               "message code)")
    validate.add_argument("--strict", action="store_true",
                          help="treat warnings (what tsgate does not serve, what istioctl "
                               "analyze warns about) as errors: exit 1 if there are any")
    validate.set_defaults(func=run_validate)

    routes = subparsers.add_parser(
        "routes", help="print the compiled route table per listener",
        description="Print, per listener, its SNI chains and TCP route, where each goes "
                    "and the endpoints; the same data the admin /config_dump serves.")
    add_config_arguments(routes)
    routes.add_argument("--json", action="store_true", help="machine-readable output")
    routes.set_defaults(func=run_routes)


def print_diagnostics(result: Any, err: TextIO, *, notices: bool = True) -> None:
    for d in result.diagnostics:
        if d.severity != "info" or notices:
            print(str(d), file=err)


def summary(result: Any) -> str:
    kinds = Counter(r.meta.kind for r in result.resources)
    listeners = result.table.listeners
    entries = result.table.routes()
    chains = sum(1 for e in entries if e.chain is not None)
    routes = {e.route.name for e in entries}
    what = ", ".join(f"{n} {k}" for k, n in kinds.items()) or "no Istio resources"
    lines = [
        f"{len(result.files)} file(s): {what}",
        f"{len(listeners)} listener(s), {chains} SNI chain(s), {len(routes)} route(s); "
        f"{len(result.errors)} error(s), {len(result.warnings)} warning(s)",
    ]
    for li in listeners:
        parts = [f"{len(li.tls_chains)} SNI chain(s)"] if li.tls_chains else []
        if li.tcp_route is not None:
            parts.append("TCP route" + (" (fallback)" if li.tls_chains else ""))
        lines.append(f"  {li.bind}:{li.port} [{','.join(li.protocols)}] " + ", ".join(parts))
    return "\n".join(lines) + "\n"


def run_validate(args: argparse.Namespace, out: Optional[TextIO] = None,
                 err: Optional[TextIO] = None) -> int:
    out = out or sys.stdout
    err = err or sys.stderr
    result = load_from_args(args)
    if getattr(args, "strict", False):
        result = make_strict(result)
    as_json = args.json or getattr(args, "output", "text") == "json"
    print_diagnostics(result, err, notices=not args.quiet)
    if as_json:
        json.dump(result.to_dict(), out, indent=2, sort_keys=False)
        out.write("\n")
    if not result.ok:
        if not args.json:  # nothing is programmed, and the status says why
            out.write(format_gateway_api_status(result))
        print(f"tsgate validate: {len(result.errors)} error(s), {len(result.warnings)} "
              "warning(s)", file=err)
        return 1
    if not as_json:
        out.write(summary(result))
        out.write(format_gateway_api_status(result))
    return 0


def make_strict(result: Any) -> Any:
    """``--strict``: the same result with every warning an error (and no table)."""
    import attrs

    from tsgate.config.diagnostics import strict
    from tsgate.routing import RouteTable

    diagnostics = strict(result.diagnostics)
    table = result.table if not any(d.is_error for d in diagnostics) else RouteTable()
    return attrs.evolve(result, diagnostics=diagnostics, table=table)


def format_gateway_api_status(result: Any) -> str:
    """The Gateway API objects' status (conditions), or nothing without such objects."""
    status = getattr(result, "gateway_api", None)
    if not status:
        return ""
    return "Gateway API status:\n" + "".join(
        f"  {line}\n" for line in status.format().splitlines())


def _seconds(value: float) -> str:
    return f"{value:g}s"


def format_route(route: Any, indent: str) -> list[str]:
    lines = [f"{indent}route {route.name}"
             + (f"  ({route.source})" if route.source is not None else "")]
    extra = []
    if route.idle_timeout != 3600.0:
        extra.append("idle timeout " + ("off" if route.idle_timeout == 0
                                        else _seconds(route.idle_timeout)))
    if route.max_connection_duration is not None:
        extra.append(f"max duration {_seconds(route.max_connection_duration)}")
    if extra:
        lines.append(f"{indent}  " + ", ".join(extra))
    for wc in route.destinations:
        c = wc.cluster
        share = f"{route.percent(wc):.0f}%" if len(route.destinations) > 1 else "100%"
        eps = " ".join(f"{e.address}:{e.port}" for e in c.endpoints) or "(no endpoints)"
        if c.missing:
            eps = "(cluster not found: connections closed, NC)"
        lines.append(f"{indent}  -> {c.name} {share} {c.resolution} {eps}")
    return lines


def format_table(table: Any) -> str:
    """``tsgate routes``: each listener, then its routes (``Listener.routes``) in order."""
    if not table.listeners:
        return "no listeners\n"
    lines = []
    for li in table.listeners:
        why = "inspects the first client bytes (TLS chains)" if li.inspect else \
            "does not inspect (connects upstream at accept)"
        lines.append(f"listener {li.name} {li.bind}:{li.port} protocols "
                     f"{','.join(li.protocols) or '-'} ports {','.join(li.port_names) or '-'}; "
                     f"{why}")
        for key, value in li.annotations:
            lines.append(f"  annotation {key}={value}")
        entries = li.routes()
        for entry in entries:
            if entry.chain is not None:
                names = ", ".join(entry.server_names) or "* (catch-all, also no SNI)"
                lines.append(f"  chain sni {names}")
            else:
                label = "tcp (fallback: no matching SNI, or not TLS)" if entry.fallback else "tcp"
                lines.append(f"  chain {label}")
            lines.extend(format_route(entry.route, "    "))
        if entries and all(e.server_names for e in entries):
            lines.append("  no TCP route: connections matching no SNI chain are closed (NR)")
    return "\n".join(lines) + "\n"


def run_routes(args: argparse.Namespace, out: Optional[TextIO] = None,
               err: Optional[TextIO] = None) -> int:
    from tsgate.config import table_to_dict

    out = out or sys.stdout
    err = err or sys.stderr
    result = load_from_args(args)
    print_diagnostics(result, err, notices=False)
    if not result.ok:
        print(f"tsgate routes: {len(result.errors)} error(s); no route table", file=err)
        return 1
    if args.json:
        json.dump(table_to_dict(result.table), out, indent=2)
        out.write("\n")
    else:
        out.write(format_table(result.table))
        out.write(format_gateway_api_status(result))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tsgate", description="Layer-4 ingress gateway configured by Istio YAML.")
    parser.add_argument("--version", action="version", version=f"tsgate {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    # Imported here: explain_cli imports its shared options from this module.
    from tsgate import explain_cli, plugins_cli

    register(subparsers)  # validate, routes
    explain_cli.register(subparsers)
    plugins_cli.register(subparsers)
    return parser


def _stdout_gone() -> int:
    """
    The reader of our output went away (``tsgate routes --json | head``): stop
    quietly as other CLIs do when SIGPIPE kills them, with status 128+SIGPIPE.
    stdout is pointed at /dev/null so the interpreter's final flush cannot raise.
    """
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError):
        pass
    return 128 + 13  # SIGPIPE


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    func = getattr(args, "func", None)
    if func is None:
        parser.print_help(sys.stderr)
        return 2
    try:
        status = int(func(args) or 0)
        sys.stdout.flush()  # a broken pipe shows here, not at exit
        return status
    except BrokenPipeError:
        return _stdout_gone()
    except KeyboardInterrupt:
        print("tsgate: interrupted", file=sys.stderr)
        return 130
    except OSError as exc:  # an unreadable file the loader did not catch, a full disk
        where = f" {exc.filename}" if exc.filename else ""
        print(f"tsgate {args.command}:{where}: {exc.strerror or exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
