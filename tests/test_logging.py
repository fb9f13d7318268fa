"""
tsgate.logging: text/JSON gateway log with a level filter, and the access log
as its own stream (stdout or a real file), fed by twisted.logger events.
"""

from __future__ import annotations

import io
import json

import pytest
from twisted.logger import Logger, LogPublisher
from twisted.python import usage

from tsgate.logging import (
    ACCESS_NAMESPACE,
    emit_access,
    install_twistd_logger,
    make_access_log_observer,
    make_log_observer,
    parse_level,
)

LINE = ('[2026-11-25T20:19:47.123Z] "- - -" 0 - - - "-" 512 1024 30012 - "-" "-" "-" "-" '
        '"127.0.0.1:2701" outbound|2701||tcp-echo-service 127.0.0.1:41234 127.0.0.1:31400 '
        '127.0.0.1:52311 - tcp->default/tcp-echo-vs-from-gw#tcp[0]')
RECORD = {"bytes_received": 512, "bytes_sent": 1024, "route_name": "default/tcp-echo-vs#tcp[0]",
          "response_flags": None}


def publisher_with(*observers):
    pub = LogPublisher()
    for o in observers:
        pub.addObserver(o)
    return pub


def test_text_log_level_filter_and_access_events_excluded():
    """info passes at level info, debug does not; access events never reach the main log."""
    out = io.StringIO()
    pub = publisher_with(make_log_observer("text", "info", out))
    log = Logger(namespace="tsgate.proxy", observer=pub)
    log.debug("hidden {x}", x=1)
    log.info("listening on {port}", port=31400)
    log.error("upstream {cluster} refused", cluster="outbound|2701||echo")
    emit_access(Logger(namespace=ACCESS_NAMESPACE, observer=pub), LINE, RECORD)
    lines = out.getvalue().splitlines()
    assert len(lines) == 2
    assert "[tsgate.proxy#info] listening on 31400" in lines[0]
    assert "[tsgate.proxy#error] upstream outbound|2701||echo refused" in lines[1]


def test_json_log_lines():
    """One JSON object per line with level, namespace, message, fields and traceback."""
    out = io.StringIO()
    pub = publisher_with(make_log_observer("json", "warning", out))
    log = Logger(namespace="tsgate.reload", observer=pub)
    log.info("not shown")
    log.warn("config {path} rejected", path="/etc/tsgate/bad.yaml", errors=3)
    try:
        raise ZeroDivisionError("boom")
    except ZeroDivisionError:
        log.failure("reload crashed")
    records = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [r["level"] for r in records] == ["warn", "critical"]
    first = records[0]
    assert first["namespace"] == "tsgate.reload"
    assert first["message"] == "config /etc/tsgate/bad.yaml rejected"
    assert first["fields"] == {"path": "/etc/tsgate/bad.yaml", "errors": 3}
    assert first["time"].endswith("Z")
    assert "ZeroDivisionError" in records[1]["traceback"]


def test_access_log_to_a_real_file_text_and_json(tmp_path):
    """--access-log PATH: only access events, one line each, readable while open."""
    text_path, json_path = tmp_path / "access.log", tmp_path / "access.json"
    text_obs = make_access_log_observer("text", str(text_path))
    json_obs = make_access_log_observer("json", str(json_path))
    pub = publisher_with(text_obs, json_obs)
    Logger(namespace="tsgate.proxy", observer=pub).info("not an access event")
    access = Logger(namespace=ACCESS_NAMESPACE, observer=pub)
    emit_access(access, LINE, RECORD)
    emit_access(access, LINE + "\n", {**RECORD, "bytes_sent": 7})
    assert text_path.read_text().splitlines() == [LINE, LINE]
    records = [json.loads(x) for x in json_path.read_text().splitlines()]
    assert records == [RECORD, {**RECORD, "bytes_sent": 7}]

    # logrotate: the file is moved away, reopen() starts a new one
    text_path.rename(tmp_path / "access.log.1")
    text_obs.stream.reopen()
    emit_access(access, "after rotate", RECORD)
    assert text_path.read_text() == "after rotate\n"
    assert (tmp_path / "access.log.1").read_text().count("\n") == 2
    text_obs.stream.close()
    json_obs.stream.close()


def test_access_log_to_stdout_stream():
    out = io.StringIO()
    pub = publisher_with(make_access_log_observer("text", "-", stream=out))
    emit_access(Logger(namespace=ACCESS_NAMESPACE, observer=pub), LINE, RECORD)
    assert out.getvalue() == LINE + "\n"


def test_bad_names_are_refused():
    with pytest.raises(ValueError, match="log level"):
        parse_level("loud")
    with pytest.raises(ValueError, match="text or json"):
        make_log_observer("xml")
    with pytest.raises(ValueError, match="text or json"):
        make_access_log_observer("xml")


class _Sub(usage.Options):
    optParameters = [["log-format", None, "text", ""], ["log-level", None, "info", ""]]

    def postOptions(self):
        install_twistd_logger(self, self["log-format"], self["log-level"])


class _Server(usage.Options):
    """The shape of twistd's ServerOptions: logger/logfile options and a subcommand."""

    optParameters = [["logfile", "l", None, ""], ["logger", None, None, ""]]
    subCommands = [["tsgate", None, _Sub, ""]]


def test_twistd_logger_hook_writes_to_logfile(tmp_path):
    """The plugin's options set twistd's logger factory; --logfile is honoured."""
    path = tmp_path / "tsgate.log"
    server = _Server()
    server.parseOptions(["-l", str(path), "tsgate", "--log-format", "json",
                         "--log-level", "error"])
    factory = server["logger"]
    if isinstance(factory, str):  # twistd imports it by dotted name
        from twisted.python.reflect import namedAny

        factory = namedAny(factory)
    observer = factory()
    pub = publisher_with(observer)
    log = Logger(namespace="tsgate", observer=pub)
    log.info("dropped")
    log.error("kept {n}", n=1)
    for f in factory.opened:
        f.close()
    lines = path.read_text().splitlines()
    assert [json.loads(x)["message"] for x in lines] == ["kept 1"]

    user_choice = _Server()
    user_choice.parseOptions(["--logger", "my.factory", "tsgate"])
    assert user_choice["logger"] == "my.factory"
