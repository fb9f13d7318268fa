"""
``twistd tsgate``: command-line options and the service they build.

The twistd plugin (``twisted/plugins/tsgate_plugin.py``) and ``tac/tsgate.tac``
both end here, so the two ways of running tsgate cannot drift apart.
"""

from __future__ import annotations

import os
import signal
import sys
from typing import Any, Optional

from twisted.application import service
from twisted.internet import defer, endpoints
from twisted.logger import Logger
from twisted.python import usage
from twisted.python.failure import Failure

from tsgate import proxy_protocol
from tsgate.accesslog import AccessLog
from tsgate.authz import stages as authz_stages
from tsgate.config.schema import parse_duration
from tsgate.gateway import Gateway, ListenError
from tsgate.proxy.context import DEFAULT_INSPECT_TIMEOUT, ProxyContext, Settings
from tsgate.reload import ConfigWatcher
from tsgate.stats import Stats
from tsgate.upstream.balancer import Balancer, outlier_reporter
from tsgate.upstream.dns import DnsRefresher

log = Logger(namespace="tsgate")


def _label(value: str) -> tuple[str, str]:
    key, sep, val = value.partition("=")
    if not sep or not key:
        raise usage.UsageError(f"--gateway-label wants KEY=VALUE, not {value!r}")
    return key, val


def _seconds(name: str, value: Optional[str]) -> Optional[float]:
    """Seconds from ``15``, ``1.5`` or a duration as the YAML writes them (``500ms``, ``2m``)."""
    if value is None:
        return None
    try:
        seconds: Optional[float] = float(value)
    except ValueError:
        seconds = parse_duration(value)
    if seconds is None:
        raise usage.UsageError(f"--{name} wants seconds (e.g. 15, 1.5, 500ms, 2m), not {value!r}")
    if seconds < 0:
        raise usage.UsageError(f"--{name} must not be negative")
    return seconds


class Options(usage.Options):
    synopsis = "--config PATH [--config PATH ...] [options]"
    longdesc = (
        "Serve the L4 routes (TCP, TLS SNI passthrough) of Istio Gateway and "
        "VirtualService YAML. PATH is a YAML file or a directory of *.yaml files."
    )
    optParameters = [
        ["namespace", "n", "default", "Namespace of resources that name none."],
        ["gateway-namespace", None, None, "Namespace this gateway runs in, for exportTo "
         "(Istio: the gateway workload's; default: each Gateway's own)."],
        ["root-namespace", None, "istio-system", "Istio's root namespace: its "
         "AuthorizationPolicies apply to every gateway."],
        ["bind", "b", None, "Address to listen on instead of 0.0.0.0 (e.g. 127.0.0.1, ::)."],
        ["inspect-timeout", None, str(DEFAULT_INSPECT_TIMEOUT),
         "Seconds to wait for a ClientHello on TLS ports (Envoy listener_filters_timeout)."],
        ["connect-timeout", None, None, "Upstream connect timeout in seconds (default: the "
         "DestinationRule's, else 10)."],
        ["idle-timeout", None, None, "Idle timeout in seconds for every route (default: the "
         "DestinationRule's, else 3600; 0 disables)."],
        ["access-log", None, "-", "Access log file ('-' for stdout, 'none' to disable)."],
        ["access-log-format", None, "text", "Access log format: text (Istio's) or json."],
        ["log-format", None, "text", "Format of the gateway's own log: text or json."],
        ["log-level", None, "info", "Minimum level of the gateway's own log."],
        ["admin", None, "tcp:15000:interface=127.0.0.1",
         "Admin endpoint (Twisted endpoint string, or 'none')."],
        ["readiness", None, "tcp:15021:interface=127.0.0.1",
         "Readiness endpoint serving /healthz/ready (or 'none')."],
        ["drain-period", None, "5", "Seconds connections may finish after SIGTERM "
         "(Istio's terminationDrainDuration)."],
        ["watch-interval", None, "2", "Seconds between checks of the config files for "
         "changes (0: reload on SIGHUP only)."],
        ["dns-refresh-rate", None, "60", "Seconds between re-resolutions of DNS endpoints "
         "(Istio's default 60; a shorter TTL refreshes sooner)."],
    ]

    def __init__(self) -> None:
        super().__init__()
        self["config"] = []
        self["gateway-labels"] = {}
        self["endpoints"] = {}

    def opt_config(self, path: str) -> None:
        """A YAML file or directory of Istio resources (repeatable)."""
        self["config"].append(path)

    opt_c = opt_config

    def opt_gateway_label(self, value: str) -> None:
        """KEY=VALUE label of this gateway workload; Gateways whose selector matches
        apply (repeatable; default istio=ingressgateway)."""
        key, val = _label(value)
        self["gateway-labels"][key] = val

    def opt_endpoint(self, value: str) -> None:
        """PORT=ENDPOINT: listen for that port on a Twisted endpoint string instead
        (e.g. 31400=systemd:domain=INET:index=0, 31400=tcp6:31400)."""
        port, sep, description = value.partition("=")
        if not sep or not port.isdigit():
            raise usage.UsageError(f"--endpoint wants PORT=ENDPOINT, not {value!r}")
        self["endpoints"][int(port)] = description

    def postOptions(self) -> None:
        if not self["config"]:
            raise usage.UsageError("--config PATH is required")
        if not self["gateway-labels"]:
            self["gateway-labels"] = {"istio": "ingressgateway"}
        self["inspect-timeout"] = _seconds("inspect-timeout", self["inspect-timeout"])
        self["connect-timeout"] = _seconds("connect-timeout", self["connect-timeout"])
        self["idle-timeout"] = _seconds("idle-timeout", self["idle-timeout"])
        self["drain-period"] = _seconds("drain-period", self["drain-period"])
        self["watch-interval"] = _seconds("watch-interval", self["watch-interval"])
        self["dns-refresh-rate"] = _seconds("dns-refresh-rate", self["dns-refresh-rate"])
        if not self["dns-refresh-rate"]:
            raise usage.UsageError("--dns-refresh-rate must be more than 0 seconds")
        if self["access-log-format"] not in ("text", "json"):
            raise usage.UsageError("--access-log-format is text or json")
        from tsgate.logging import install_twistd_logger

        try:
            install_twistd_logger(self, self["log-format"], self["log-level"])
        except ValueError as exc:
            raise usage.UsageError(f"--log-format/--log-level: {exc}") from None


def inspectors(plugins: Any) -> list[Any]:
    """TLS hint parsers first, then STARTTLS negotiators, then other hint parsers."""
    parsers = list(plugins.hint_parsers.values())
    tls = [p for p in parsers if p.protocol == "tls"]
    others = [p for p in parsers if p.protocol != "tls"]
    return tls + list(plugins.preamble_negotiators.values()) + others


def observer_selector(plugins: Any) -> Any:
    """Istio's selection, server by server: ``port.protocol``, else the port-name prefix."""

    def observers_for(servers: Any) -> list[Any]:
        found: list[Any] = []
        for protocol, port_name in servers:
            for factory in plugins.observers_for(protocol, port_name):
                if factory not in found:
                    found.append(factory)
        return found

    return observers_for


def build_gateway(options: Any, reactor: Any, stdout: Any = None) -> Gateway:
    """The Gateway for parsed options; raises SystemExit naming every config error."""
    from tsgate.config import load_config
    from tsgate.plugins import PluginError, load_plugins

    try:
        plugins = load_plugins()
    except PluginError as exc:
        raise SystemExit(f"tsgate: {exc}") from None
    for module, why in plugins.broken.items():
        print(f"tsgate: plugin module {module} not loaded: {why}", file=sys.stderr)
    paths = list(options["config"])
    labels = dict(options["gateway-labels"])
    namespace = options["namespace"]

    gateway_namespace = options["gateway-namespace"]

    def load() -> Any:
        return load_config(paths, gateway_labels=labels, default_namespace=namespace,
                           gateway_namespace=gateway_namespace,
                           root_namespace=options["root-namespace"])

    result = load()
    # sys.__stdout__: under twistd sys.stdout is the log, and access lines must stay
    # exactly Istio's format (no log prefix).
    stream = stdout or sys.__stdout__
    for diagnostic in result.warnings:
        print(str(diagnostic), file=sys.stderr)
    if not result.ok:
        for diagnostic in result.errors:
            print(str(diagnostic), file=sys.stderr)
        raise SystemExit(f"tsgate: configuration has {len(result.errors)} error(s); not starting")
    access = options["access-log"]
    if access == "none":
        access_stream = None
    elif access == "-":
        access_stream = stream
    else:
        access_stream = open(access, "a", encoding="utf-8")  # noqa: SIM115 (lives as long as the process)
    ctx = ProxyContext(
        reactor=reactor,
        stats=Stats(),
        access_log=AccessLog(access_stream, options["access-log-format"]),
        settings=Settings(
            inspect_timeout=options["inspect-timeout"],
            connect_timeout=options["connect-timeout"],
            idle_timeout=options["idle-timeout"],
            # TSGATE_TRANSPORT=twisted: Twisted's tcp transports (bench comparisons)
            lean=os.environ.get("TSGATE_TRANSPORT", "lean") != "twisted",
        ),
        inspectors=inspectors(plugins),
        observers_for=observer_selector(plugins),
        observers_by_name=dict(plugins.observers),
        balancer=upstream_balancer(reactor, options["dns-refresh-rate"]),
    )
    # PROXY protocol in (tsgate.io/proxy-protocol), out (proxyProtocol), tcpKeepalive
    ctx.stage_providers.append(proxy_protocol.stage_provider)
    ctx.balancer.on_event = outlier_reporter(ctx.stats, ctx.error)
    # AuthorizationPolicy and per-source limits: accept/decision/close stages
    ctx.stage_providers.append(authz_stages.provider)
    return Gateway(
        reactor, ctx, load,
        bind_override=options["bind"],
        endpoint_overrides=dict(options["endpoints"]),
        initial=result,
        drain_period=options["drain-period"],
    )


def upstream_balancer(reactor: Any, dns_refresh_rate: float) -> Balancer:
    """The balancer with live DNS and health checks on the process's reactor."""
    balancer = Balancer(clock=reactor.seconds,
                        dns=DnsRefresher(reactor, refresh_rate=dns_refresh_rate))
    balancer.reactor = reactor
    return balancer


class GatewayService(service.MultiService):
    """
    The whole process: the gateway, its admin and readiness servers, config
    reloads (SIGHUP, file changes) and graceful drain on stop (SIGTERM).
    """

    def __init__(self, gateway: Gateway, options: Any, reactor: Any) -> None:
        super().__init__()
        self.gateway = gateway
        self.options = options
        self.reactor = reactor
        self.watcher = ConfigWatcher(reactor, options["config"], gateway.reload,
                                     options["watch-interval"])
        self._previous_sighup: Any = None
        self._admin_ports: list[Any] = []
        gateway.setServiceParent(self)

    def privilegedStartService(self) -> None:
        try:
            super().privilegedStartService()
            self._start_admin()
        except ListenError as exc:
            raise SystemExit(f"tsgate: {exc}") from None
        self._bound = True

    _bound = False

    def _start_admin(self) -> None:
        from tsgate.admin.server import make_admin_site, make_readiness_site

        for option, make in (("admin", make_admin_site), ("readiness", make_readiness_site)):
            description = self.options[option]
            if not description or description == "none":
                continue
            result: list[Any] = []
            endpoint = endpoints.serverFromString(self.reactor, description)
            endpoint.listen(make(self.gateway)).addBoth(result.append)
            if not result or isinstance(result[0], Failure):
                why = result[0].getErrorMessage() if result else "did not complete"
                raise ListenError(f"cannot listen for --{option} on {description}: {why}")
            address = result[0].getHost()
            log.info("tsgate {what} on {host}:{port}", what=option,
                     host=getattr(address, "host", "?"), port=getattr(address, "port", "?"))
            self._admin_ports.append(result[0])

    def startService(self) -> None:
        if not self._bound:  # runners that skip privilegedStartService (`twist`)
            self.privilegedStartService()
        super().startService()
        self.watcher.start()
        try:
            self._previous_sighup = signal.signal(signal.SIGHUP, self._sighup)
        except ValueError:  # not the main thread (embedded use): no signal handler
            self._previous_sighup = None
        # After the reactor's own handlers are in place, take SIGTERM/SIGINT:
        # Twisted would re-raise the signal at exit (status -15), while a
        # gateway that drained cleanly should exit 0 as Envoy does.
        self.reactor.callWhenRunning(self._take_stop_signals)

    def _take_stop_signals(self) -> None:
        if not self.running:
            return
        try:
            for signum in (signal.SIGTERM, signal.SIGINT):
                signal.signal(signum, self._stop_signal)
        except ValueError:
            pass

    def _stop_signal(self, signum: int, frame: Any) -> None:
        log.info("{signal}: draining, then stopping",
                 signal=signal.Signals(signum).name)
        self.reactor.callFromThread(self.reactor.stop)

    def _sighup(self, signum: int, frame: Any) -> None:
        log.info("SIGHUP: reloading configuration")
        self.reactor.callFromThread(self.gateway.reload)

    def stopService(self) -> defer.Deferred:
        """SIGTERM: drain (stop accepting, fail readiness, wait), then stop."""
        self.watcher.stop()
        if self._previous_sighup is not None:
            signal.signal(signal.SIGHUP, self._previous_sighup)
        drained = self.gateway.drain()

        def stop_rest(cut: int) -> defer.Deferred:
            waits = [defer.maybeDeferred(p.stopListening) for p in self._admin_ports]
            waits.append(defer.maybeDeferred(service.MultiService.stopService, self))
            return defer.gatherResults(waits)

        return drained.addCallback(stop_rest)


def makeService(options: Any, reactor: Any = None) -> service.IService:
    if reactor is None:
        from twisted.internet import reactor as global_reactor

        reactor = global_reactor
    gateway = build_gateway(options, reactor)
    return GatewayService(gateway, options, reactor)
