"""
``twistd tsgate``: command-line options and the service they build.

The twistd plugin (``twisted/plugins/tsgate_plugin.py``) and ``tac/tsgate.tac``
both end here, so the two ways of running tsgate cannot drift apart.
"""

from __future__ import annotations

import ipaddress
import os
import signal
import sys
import time
from typing import Any, Optional

from twisted.application import service
from twisted.internet import defer, endpoints
from twisted.logger import Logger
from twisted.python import usage
from twisted.python.failure import Failure

from tsgate import __version__, proxy_protocol
from tsgate.accesslog import AccessLog
from tsgate.authz import stages as authz_stages
from tsgate.config import options as gateway_options
from tsgate.config.options import GatewayOptions, OptionError
from tsgate.config.schema import parse_duration
from tsgate.gateway import Gateway, ListenError
from tsgate.logging import AccessLogFile
from tsgate.proxy.context import DEFAULT_INSPECT_TIMEOUT, ProxyContext, Settings
from tsgate.reload import ConfigWatcher
from tsgate.stats import Stats
from tsgate.tls.watch import CertificateWatcher
from tsgate.upstream.balancer import Balancer, outlier_reporter
from tsgate.upstream.dns import DnsRefresher

log = Logger(namespace="tsgate")


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
    if seconds != seconds or seconds == float("inf"):
        raise usage.UsageError(f"--{name} wants a finite number of seconds, not {value!r}")
    return seconds


def check_endpoint(option: str, description: str) -> None:
    """
    Parse a Twisted server endpoint string now, so a typo is a usage error
    before anything listens, not a traceback after the listeners started.
    Only whether it *can* listen (port in use, no systemd socket) waits for
    the listen itself, which fails startup with a message naming it.
    """
    if not description:
        raise usage.UsageError(f"--{option} wants a Twisted endpoint string (e.g. tcp:15000)")
    kind = description.split(":", 1)[0].strip().lower()
    if kind == "systemd":
        return  # whether the socket was handed over is for the listen to say
    try:
        endpoint = endpoints.serverFromString(_NoReactor(), description)
    except Exception as exc:  # ValueError, KeyError, TypeError, OSError (ssl: files)...
        why = str(exc) or type(exc).__name__
        raise usage.UsageError(f"--{option}: bad endpoint {description!r}: {why} "
                               "(e.g. tcp:15000:interface=127.0.0.1)") from None
    port = getattr(endpoint, "_port", None)
    if isinstance(port, int) and not 0 <= port <= 65535:
        raise usage.UsageError(f"--{option}: port {port} in {description!r} is not 0-65535")
    address = getattr(endpoint, "_address", None)  # unix:PATH
    if isinstance(address, str) and not os.path.isdir(os.path.dirname(address) or "."):
        raise usage.UsageError(f"--{option}: no directory for the socket {address!r}")


class _NoReactor:
    """Stands in for the reactor while endpoint strings are only parsed, never listened on."""


def check_writable_file(option: str, path: str) -> None:
    """The file can be opened for appending (its directory exists and is writable)."""
    directory = os.path.dirname(os.path.abspath(path))
    if os.path.isdir(path):
        raise usage.UsageError(f"--{option}: {path!r} is a directory, not a file")
    if not os.path.isdir(directory):
        raise usage.UsageError(f"--{option}: directory {directory!r} does not exist")
    if os.path.exists(path):
        if not os.access(path, os.W_OK):
            raise usage.UsageError(f"--{option}: {path!r} is not writable")
    elif not os.access(directory, os.W_OK | os.X_OK):
        raise usage.UsageError(f"--{option}: cannot create {path!r}: directory not writable")


def _doc(text: str) -> str:
    """One line for twistd's --help, which wraps it itself (docstrings keep their indents)."""
    return " ".join(text.split())


class Options(usage.Options):
    synopsis = "--config PATH [--config PATH ...] [options]"
    longdesc = (
        "Serve the L4 routes (TCP, TLS SNI passthrough) of Istio Gateway and "
        "VirtualService YAML. PATH is a YAML file or a directory of *.yaml files."
    )
    optParameters = [
        ["namespace", "n", gateway_options.DEFAULT_NAMESPACE,
         "Namespace of resources that name none."],
        ["gateway-namespace", None, None, "Namespace this gateway runs in, for exportTo "
         "(Istio: the gateway workload's; default: each Gateway's own)."],
        ["root-namespace", None, gateway_options.DEFAULT_ROOT_NAMESPACE,
         "Istio's root namespace: its AuthorizationPolicies apply to every gateway."],
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
        ["metrics", None, "tcp:15090",
         "Metrics-only endpoint serving /stats/prometheus (Istio's :15090; all interfaces "
         "by default; 'none' disables)."],
        ["readiness", None, "tcp:15021:interface=127.0.0.1",
         "Readiness endpoint serving /healthz/ready (or 'none')."],
        ["drain-period", None, "5", "Seconds connections may finish after SIGTERM "
         "(Istio's terminationDrainDuration)."],
        ["watch-interval", None, "2", "Seconds between checks of the config files for "
         "changes (0: reload on SIGHUP only)."],
        ["workers", None, "1", "Worker processes accepting on the same ports, or 'auto' "
         "(the usable cores, within a cgroup CPU limit); 1: no supervisor."],
        ["worker-sockets", None, "reuseport", "With --workers: 'reuseport' (a socket per "
         "worker, SO_REUSEPORT: even spread) or 'shared' (one socket all workers accept on)."],
        ["worker-id", None, None, "(internal) this process is worker N of a supervisor."],
        ["worker-channel", None, None, "(internal) file descriptor of the supervisor channel."],
        ["credentials", None, None, "Directory of TLS credentials: DIR/<credentialName>/"
         "tls.crt, tls.key, ca.crt (a mounted Kubernetes Secret); certificate files are "
         "watched and reloaded like the config."],
        ["dns-refresh-rate", None, "60", "Seconds between re-resolutions of DNS endpoints "
         "(Istio's default 60; a shorter TTL refreshes sooner)."],
    ]

    def __init__(self) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self["config"] = []
        self["gateway-labels"] = {}
        self["endpoints"] = {}
        self["gateway-classes"] = []
        self["namespace-labels"] = {}

    def opt_config(self, path: str) -> None:
        # a missing path is the loader's error (file named, exit 1), not checked here
        self["config"].append(path)

    opt_config.__doc__ = "A YAML file or directory of Istio resources (repeatable)."
    opt_c = opt_config

    def opt_gateway_label(self, value: str) -> None:
        try:
            key, val = gateway_options.parse_label(value)
        except OptionError as exc:
            raise usage.UsageError(f"--gateway-label wants {exc.wanted}, not {value!r}") from None
        self["gateway-labels"][key] = val

    opt_gateway_label.__doc__ = _doc("""KEY=VALUE label of this gateway workload; Gateways
        whose selector matches apply (repeatable; default istio=ingressgateway).""")

    def opt_gateway_class(self, value: str) -> None:
        try:
            self["gateway-classes"].append(gateway_options.parse_gateway_class(value))
        except OptionError as exc:
            raise usage.UsageError(f"--gateway-class wants {exc.wanted}") from None

    opt_gateway_class.__doc__ = _doc("""Serve Kubernetes Gateway API Gateways with this
        gatewayClassName (repeatable; default istio).""")

    def opt_namespace_label(self, value: str) -> None:
        try:
            ns, key, val = gateway_options.parse_namespace_label(value)
        except OptionError as exc:
            raise usage.UsageError(f"--namespace-label: {exc}") from None
        self["namespace-labels"].setdefault(ns, {})[key] = val

    opt_namespace_label.__doc__ = _doc("""NS:KEY=VALUE: a label of namespace NS, for Gateway
        API allowedRoutes namespace selectors (repeatable).""")

    def opt_endpoint(self, value: str) -> None:
        port, sep, description = value.partition("=")
        if not sep or not port.isdigit() or not 0 < int(port) <= 65535:
            raise usage.UsageError(f"--endpoint wants PORT=ENDPOINT (PORT 1-65535), "
                                   f"not {value!r}")
        check_endpoint(f"endpoint {port}=", description)
        self["endpoints"][int(port)] = description

    opt_endpoint.__doc__ = _doc("""PORT=ENDPOINT: listen for that port on a Twisted
        endpoint string instead (e.g. 31400=systemd:domain=INET:index=0,
        31400=tcp6:31400).""")

    def opt_version(self) -> None:
        import twisted

        print(f"tsgate {__version__} (Twisted {twisted.__version__}, Python "
              f"{sys.version.split()[0]})")
        sys.exit(0)

    opt_version.__doc__ = "Print tsgate's version and exit."

    def postOptions(self) -> None:
        if not self["config"]:
            raise usage.UsageError("--config PATH is required")
        gateway = self["gateway"] = GatewayOptions.from_parsed(
            gateway_labels=self["gateway-labels"].items(),
            gateway_classes=self["gateway-classes"],
            namespace_labels=[(ns, key, value) for ns, labels in self["namespace-labels"].items()
                              for key, value in labels.items()],
            default_namespace=self["namespace"],
            gateway_namespace=self["gateway-namespace"],
            root_namespace=self["root-namespace"],
            credentials_dir=self["credentials"],
        )
        # the repeatable options as given, with the record's defaults filled in
        self["gateway-labels"] = dict(gateway.gateway_labels)
        self["gateway-classes"] = list(gateway.gateway_classes)
        self["inspect-timeout"] = _seconds("inspect-timeout", self["inspect-timeout"])
        self["connect-timeout"] = _seconds("connect-timeout", self["connect-timeout"])
        self["idle-timeout"] = _seconds("idle-timeout", self["idle-timeout"])
        self["drain-period"] = _seconds("drain-period", self["drain-period"])
        self["watch-interval"] = _seconds("watch-interval", self["watch-interval"])
        from tsgate.workers.supervisor import parse_workers

        try:
            self["workers"] = parse_workers(str(self["workers"]))
        except ValueError as exc:
            raise usage.UsageError(str(exc)) from None
        if self["worker-sockets"] not in ("reuseport", "shared"):
            raise usage.UsageError("--worker-sockets is reuseport or shared")
        for name in ("worker-id", "worker-channel"):
            if self[name] is not None:
                if not str(self[name]).isdigit():
                    raise usage.UsageError(f"--{name} is internal and wants a number")
                self[name] = int(self[name])
        self["dns-refresh-rate"] = _seconds("dns-refresh-rate", self["dns-refresh-rate"])
        if not self["dns-refresh-rate"]:
            raise usage.UsageError("--dns-refresh-rate must be more than 0 seconds")
        if self["access-log-format"] not in ("text", "json"):
            raise usage.UsageError("--access-log-format is text or json")
        if self["access-log"] not in ("-", "none"):
            check_writable_file("access-log", self["access-log"])
        for option in ("admin", "readiness", "metrics"):
            if self[option] != "none":
                check_endpoint(option, self[option])
        if self["bind"] is not None:
            try:
                ipaddress.ip_address(self["bind"])
            except ValueError:
                raise usage.UsageError(f"--bind wants an IP address (e.g. 127.0.0.1, ::), "
                                       f"not {self['bind']!r}") from None
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


def config_loader(options: Any) -> tuple[Any, Any]:
    """
    ``(load, result)``: a callable that loads the configuration the options
    name (reloads call it again) and its first result. Warnings are logged
    (not by workers: their supervisor did); errors raise SystemExit.
    """
    from tsgate.config import load_config

    paths = list(options["config"])
    gateway: GatewayOptions = options["gateway"]

    def load() -> Any:
        return load_config(paths, gateway)

    result = load()
    if not result.ok:
        # The log is not started yet when startup fails: plain stderr, everything at once.
        for diagnostic in list(result.warnings) + list(result.errors):
            print(str(diagnostic), file=sys.stderr)
        raise SystemExit(f"tsgate: configuration has {len(result.errors)} error(s); not starting")
    if options.get("worker-id") is None:  # a worker's supervisor logged them already
        log_warnings(result, "startup")
    return load, result


def build_gateway(options: Any, reactor: Any, stdout: Any = None) -> Gateway:
    """The Gateway for parsed options; raises SystemExit naming every config error."""
    from tsgate.plugins import PluginError, load_plugins

    try:
        plugins = load_plugins()
    except PluginError as exc:
        raise SystemExit(f"tsgate: {exc}") from None
    if options.get("worker-id") is None:  # a worker's supervisor said it already
        for module, why in plugins.broken.items():
            log.warn("plugin module {module} not loaded: {why}", module=module, why=why)
    load, result = config_loader(options)
    # sys.__stdout__: under twistd sys.stdout is the log, and access lines must stay
    # exactly Istio's format (no log prefix).
    stream = stdout or sys.__stdout__
    access = options["access-log"]
    access_stream: Any
    if access == "none":
        access_stream = None
    elif access == "-":
        access_stream = stream
    else:
        try:
            access_stream = AccessLogFile(access)  # reopened on SIGUSR1 (logrotate)
        except OSError as exc:
            raise SystemExit(f"tsgate: --access-log {access}: {exc.strerror or exc}") from None
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


def log_warnings(result: Any, when: str) -> None:
    """Every configuration warning through the gateway's log (JSON with --log-format json)."""
    for diagnostic in getattr(result, "warnings", ()) or ():
        log.warn("config warning ({when}): {diagnostic}", when=when,
                 diagnostic=str(diagnostic))


def _routes(table: Any) -> set[str]:
    return {entry.route.name for entry in table.routes()}


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

    def __init__(self, gateway: Any, options: Any, reactor: Any, state: Any = None) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        #: a Gateway, or with --workers a Supervisor (both reload, drain, serve)
        self.gateway = gateway
        #: what the admin server reads (the Gateway, or the workers added up)
        self.state = state if state is not None else gateway
        self.options = options
        self.reactor = reactor
        # Every reload (file watcher, SIGHUP, admin POST /reload) goes through
        # self.reload: it logs the warnings, declares the new series at 0 and
        # records the outcome for the status page.
        self._gateway_reload = gateway.reload
        gateway.reload = self.reload
        gateway.last_reload = None
        gateway.started_at = time.time()
        self.watcher = ConfigWatcher(reactor, options["config"], self.reload,
                                     options["watch-interval"])
        self.cert_watcher = CertificateWatcher(reactor, gateway, options["watch-interval"])
        self._previous_sighup: Any = None
        self._previous_sigusr1: Any = None
        self._admin_ports: list[Any] = []
        declare_metrics(gateway)
        gateway.setServiceParent(self)

    def reload(self) -> Any:
        result = self._gateway_reload()
        ok = bool(getattr(result, "ok", False)) and result is self.gateway.config
        if result is not None and self.options.get("worker-id") is None:
            log_warnings(result, "reload")  # (a worker's supervisor logs them once)
        if ok:
            declare_metrics(self.gateway)
        self.gateway.last_reload = {
            "time": time.time(),
            "ok": ok,
            "errors": len(getattr(result, "errors", ()) or ()) if result is not None else 1,
            "warnings": len(getattr(result, "warnings", ()) or ()) if result is not None else 0,
        }
        return result

    def reopen_access_log(self) -> None:
        """SIGUSR1 (logrotate's postrotate): reopen the access-log file by its name."""
        forward = getattr(self.gateway, "reopen_access_logs", None)
        if forward is not None:  # a supervisor: each worker writes the log
            forward()
            return
        stream = self.gateway.ctx.access_log.stream
        if not isinstance(stream, AccessLogFile):
            log.info("SIGUSR1: the access log is not a file; nothing to reopen")
            return
        try:
            stream.reopen()
        except OSError as exc:
            log.error("SIGUSR1: cannot reopen the access log {path}: {error}",
                      path=stream.path, error=exc.strerror or str(exc))
            return
        log.info("SIGUSR1: access log reopened: {path}", path=stream.path)

    def privilegedStartService(self) -> None:
        if self.options.get("worker-channel") is not None:
            from tsgate.workers.channel import start_listening
            from tsgate.workers.supervisor import FIRST_LISTEN_FD

            start_listening(FIRST_LISTEN_FD, self.options["worker-channel"])
        try:
            super().privilegedStartService()  # type: ignore[no-untyped-call]
            self._start_admin()
        except ListenError as exc:
            raise SystemExit(f"tsgate: {exc}") from None
        self._bound = True

    def _log_summary(self) -> None:
        """One line saying what runs: version, files, listeners (real addresses), routes."""
        config = self.gateway.config
        table = self.gateway.table
        bound = self.gateway.bound_addresses()
        listeners = ", ".join(bound.get(li.name, f"{li.bind}:{li.port}")
                              for li in table.listeners) or "none"
        log.info("tsgate {version} started: {files} file(s), {n_listeners} listener(s) "
                 "({listeners}), {routes} route(s), {warnings} warning(s)",
                 version=__version__, files=len(getattr(config, "files", ()) or ()),
                 n_listeners=len(table.listeners), listeners=listeners,
                 routes=len(_routes(table)),
                 warnings=len(getattr(config, "warnings", ()) or ()))

    _bound = False

    def _start_admin(self) -> None:
        from tsgate.admin.server import make_admin_site, make_metrics_site, make_readiness_site

        for option, make in (("admin", make_admin_site), ("readiness", make_readiness_site),
                             ("metrics", make_metrics_site)):
            description = self.options.get(option)
            if not description or description == "none":
                continue
            result: list[Any] = []
            try:
                endpoint = endpoints.serverFromString(self.reactor, description)
            except Exception as exc:
                raise ListenError(f"cannot listen for --{option} on {description}: "
                                  f"{exc or type(exc).__name__}") from None
            site = make(self.state)
            extend = getattr(self.state, "extend_site", None)
            if extend is not None:
                extend(option, site)
            endpoint.listen(site).addBoth(result.append)
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
        super().startService()  # type: ignore[no-untyped-call]
        if self.options.get("worker-channel") is not None:
            from tsgate.workers.channel import attach

            attach(self.gateway, self.options["worker-id"] or 0,
                   self.options["worker-channel"], self.reactor)
        self.watcher.start()
        self.cert_watcher.start()
        try:
            self._previous_sighup = signal.signal(signal.SIGHUP, self._sighup)
            self._previous_sigusr1 = signal.signal(signal.SIGUSR1, self._sigusr1)
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
        # Said once everything is in place: a SIGTERM from here on drains and exits 0.
        self._log_summary()

    def _stop_signal(self, signum: int, frame: Any) -> None:
        log.info("{signal}: draining, then stopping",
                 signal=signal.Signals(signum).name)
        self.reactor.callFromThread(self.reactor.stop)

    def _sighup(self, signum: int, frame: Any) -> None:
        log.info("SIGHUP: reloading configuration")
        self.reactor.callFromThread(self.reload)

    def _sigusr1(self, signum: int, frame: Any) -> None:
        self.reactor.callFromThread(self.reopen_access_log)

    def stopService(self) -> defer.Deferred[Any]:
        """SIGTERM: drain (stop accepting, fail readiness, wait), then stop."""
        self.watcher.stop()
        self.cert_watcher.stop()
        if self._previous_sighup is not None:
            signal.signal(signal.SIGHUP, self._previous_sighup)
        if self._previous_sigusr1 is not None:
            signal.signal(signal.SIGUSR1, self._previous_sigusr1)
        drained = self.gateway.drain()

        def stop_rest(cut: int) -> defer.Deferred[list[Any]]:
            waits = [defer.maybeDeferred(p.stopListening) for p in self._admin_ports]
            waits.append(defer.maybeDeferred(service.MultiService.stopService, self))
            return defer.gatherResults(waits)

        result: defer.Deferred[Any] = drained.addCallback(stop_rest)
        return result


def declare_metrics(gateway: Any) -> None:
    """
    Every series the table in force can produce, at 0 (see tsgate.admin.catalog),
    on a Gateway or (``--workers``) the supervisor, whose workers declare their own.
    """
    from tsgate.admin.catalog import declare_table

    ctx = getattr(gateway, "ctx", None)
    names = [getattr(p, "name", "") for p in getattr(ctx, "inspectors", ())]
    declare_table(gateway.stats, gateway.table, [n for n in names if n])


def makeService(options: Any, reactor: Any = None) -> service.IService:
    if reactor is None:
        from twisted.internet import reactor as global_reactor

        reactor = global_reactor
    if options.get("workers", 1) > 1 and options.get("worker-channel") is None:
        from tsgate.workers.supervisor import build_supervisor

        supervisor, state = build_supervisor(options, reactor, Options.optParameters)
        return GatewayService(supervisor, options, reactor, state=state)
    gateway = build_gateway(options, reactor)
    return GatewayService(gateway, options, reactor)
