"""
tsgate.tap without twistd: option parsing and checking, the inspector order,
observer selection, and the gateway service built on a MemoryReactorClock.
The process itself (signals, twistd) is exercised in tests/e2e/ and tests/ops/.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import attrs
import pytest
from twisted.internet.testing import MemoryReactorClock
from twisted.python import usage

from tsgate.logging import AccessLogFile
from tsgate.plugins import load_plugins
from tsgate.proxy.context import DEFAULT_INSPECT_TIMEOUT
from tsgate.tap import (
    GatewayService,
    Options,
    build_gateway,
    check_endpoint,
    inspectors,
    observer_selector,
)

ROOT = Path(__file__).resolve().parents[1]
CONFIG = str(ROOT / "examples" / "istioinaction")


def parse(*args: str) -> Options:
    options = Options()
    options.parseOptions(["--config", CONFIG, *args])  # type: ignore[no-untyped-call]
    return options


def test_defaults_after_parsing() -> None:
    options = parse()
    assert options["config"] == [CONFIG]
    assert options["gateway-labels"] == {"istio": "ingressgateway"}
    assert options["gateway-classes"] == ["istio"]
    assert options["inspect-timeout"] == DEFAULT_INSPECT_TIMEOUT
    assert options["connect-timeout"] is None and options["idle-timeout"] is None
    assert options["drain-period"] == 5.0 and options["watch-interval"] == 2.0
    assert options["workers"] == 1 and options["endpoints"] == {}


def test_durations_labels_and_endpoints() -> None:
    options = parse("--inspect-timeout", "500ms", "--idle-timeout", "2m",
                    "--connect-timeout", "1.5", "--gateway-label", "app=edge",
                    "--gateway-label", "tier=", "--endpoint", "31400=tcp6:31400",
                    "--bind", "::1")
    assert options["inspect-timeout"] == 0.5
    assert options["idle-timeout"] == 120.0
    assert options["connect-timeout"] == 1.5
    assert options["gateway-labels"] == {"app": "edge", "tier": ""}
    assert options["endpoints"] == {31400: "tcp6:31400"}


@pytest.mark.parametrize("args,message", [
    ((), "--config PATH is required"),
    (("--config", CONFIG, "--idle-timeout", "soon"), "--idle-timeout wants seconds"),
    (("--config", CONFIG, "--drain-period", "-1"), "must not be negative"),
    (("--config", CONFIG, "--inspect-timeout", "inf"), "finite number"),
    (("--config", CONFIG, "--gateway-label", "novalue"), "KEY=VALUE"),
    (("--config", CONFIG, "--endpoint", "99999=tcp:1"), "PORT=ENDPOINT"),
    (("--config", CONFIG, "--endpoint", "31400=nonsense:x"), "bad endpoint"),
    (("--config", CONFIG, "--admin", "tcp:99999"), "not 0-65535"),
    (("--config", CONFIG, "--bind", "localhost"), "--bind wants an IP address"),
    (("--config", CONFIG, "--access-log-format", "xml"), "text or json"),
    (("--config", CONFIG, "--worker-sockets", "many"), "reuseport or shared"),
    (("--config", CONFIG, "--worker-id", "x"), "internal"),
])
def test_bad_options_are_usage_errors(args: tuple[str, ...], message: str) -> None:
    with pytest.raises(usage.UsageError, match=message):
        Options().parseOptions(list(args))  # type: ignore[no-untyped-call]


def test_access_log_must_be_writable(tmp_path: Path) -> None:
    with pytest.raises(usage.UsageError, match="does not exist"):
        parse("--access-log", str(tmp_path / "no" / "access.log"))
    with pytest.raises(usage.UsageError, match="is a directory"):
        parse("--access-log", str(tmp_path))
    assert parse("--access-log", str(tmp_path / "access.log"))["access-log"].endswith("log")


def test_check_endpoint_accepts_systemd_and_unix_in_an_existing_directory(tmp_path: Path
                                                                          ) -> None:
    check_endpoint("admin", "systemd:domain=INET:index=0")
    check_endpoint("admin", f"unix:{tmp_path}/admin.sock")
    with pytest.raises(usage.UsageError, match="no directory"):
        check_endpoint("admin", f"unix:{tmp_path}/missing/admin.sock")
    with pytest.raises(usage.UsageError, match="wants a Twisted endpoint"):
        check_endpoint("admin", "")


def test_inspectors_tls_first_then_starttls_then_other_parsers() -> None:
    ordered = inspectors(load_plugins())
    kinds = [getattr(p, "protocol", "") for p in ordered]
    assert kinds[0] == "tls"
    names = [p.name for p in ordered]
    assert names.index("postgres-starttls") < names.index("postgres")
    assert names.index("postgres-starttls") < names.index("redis")


@attrs.frozen
class Factory:
    name: str


class FakePlugins:
    def __init__(self, table: dict[tuple[str, str], list[Any]]) -> None:
        self.table = table

    def observers_for(self, protocol: str, port_name: str) -> list[Any]:
        return self.table.get((protocol, port_name), [])


def test_observer_selector_asks_server_by_server_without_duplicates() -> None:
    redis, mongo = Factory("redis"), Factory("mongo")
    select = observer_selector(FakePlugins({
        ("REDIS", "a"): [redis], ("TCP", "redis-b"): [redis], ("MONGO", "c"): [mongo]}))
    assert select([("REDIS", "a"), ("TCP", "redis-b"), ("MONGO", "c")]) == [redis, mongo]
    assert select([("TCP", "plain")]) == []


def test_build_gateway_from_options(tmp_path: Path) -> None:
    log_path = tmp_path / "access.log"
    options = parse("--access-log", str(log_path), "--access-log-format", "json",
                    "--idle-timeout", "30", "--bind", "127.0.0.1", "--drain-period", "1")
    gw = build_gateway(options, MemoryReactorClock())
    stream = gw.ctx.access_log.stream
    assert isinstance(stream, AccessLogFile)
    try:
        assert gw.table.listeners and gw.config.ok
        assert gw.ctx.settings.idle_timeout == 30.0
        assert gw.bind_override == "127.0.0.1" and gw.drain_period == 1.0
        assert gw.ctx.inspectors[0].protocol == "tls"
        assert gw.ctx.stage_providers  # authorization and limits
    finally:
        stream.close()


def test_a_config_with_errors_does_not_start(tmp_path: Path, capsys: Any) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata: {name: g}\n"
                   "spec: {servers: [{port: {number: 99999, name: x, protocol: TCP},"
                   " hosts: ['*']}]}\n")
    options = Options()
    options.parseOptions(["--config", str(bad), "--access-log", "none"])  # type: ignore[no-untyped-call]
    with pytest.raises(SystemExit, match="error"):
        build_gateway(options, MemoryReactorClock())
    assert "bad.yaml" in capsys.readouterr().err


def test_service_reload_records_the_outcome_and_reopens_the_access_log(tmp_path: Path) -> None:
    log_path = tmp_path / "access.log"
    options = parse("--access-log", str(log_path), "--watch-interval", "0")
    reactor = MemoryReactorClock()
    gw = build_gateway(options, reactor)
    svc = GatewayService(gw, options, reactor)
    stream = gw.ctx.access_log.stream
    assert isinstance(stream, AccessLogFile)
    try:
        assert vars(gw)["last_reload"] is None  # set by the service, for the status page
        svc.reload()
        assert vars(gw)["last_reload"]["ok"] is True
        assert vars(gw)["last_reload"]["errors"] == 0
        assert gw.stats.get("config.reload_success") == 1
        stream.write("before\n")
        log_path.rename(tmp_path / "access.log.1")
        svc.reopen_access_log()
        stream.write("after\n")
        assert log_path.read_text() == "after\n"
        assert (tmp_path / "access.log.1").read_text() == "before\n"
    finally:
        stream.close()  # the file it reopened
