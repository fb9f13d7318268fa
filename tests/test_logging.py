"""
tsgate.logging: text/JSON gateway log with a level filter, and the
reopenable access-log file.
"""

from __future__ import annotations

import io
import json

import pytest
from twisted.logger import Logger, LogPublisher
from twisted.python import usage

from tsgate.logging import (
    AccessLogFile,
    install_twistd_logger,
    make_log_observer,
    parse_level,
)

LINE = ('[2026-11-25T20:19:47.123Z] "- - -" 0 - - - "-" 512 1024 30012 - "-" "-" "-" "-" '
        '"127.0.0.1:2701" outbound|2701||tcp-echo-service 127.0.0.1:41234 127.0.0.1:31400 '
        '127.0.0.1:52311 - tcp->default/tcp-echo-vs-from-gw#tcp[0]')


def publisher_with(*observers):
    pub = LogPublisher()
    for o in observers:
        pub.addObserver(o)
    return pub


def test_text_log_level_filter():
    """info passes at level info, debug does not."""
    out = io.StringIO()
    pub = publisher_with(make_log_observer("text", "info", out))
    log = Logger(namespace="tsgate.proxy", observer=pub)
    log.debug("hidden {x}", x=1)
    log.info("listening on {port}", port=31400)
    log.error("upstream {cluster} refused", cluster="outbound|2701||echo")
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


def test_access_log_file_appends_lines_and_reopens_after_logrotate(tmp_path):
    """--access-log PATH: appended, readable while open, reopen() after a move."""
    path = tmp_path / "access.log"
    path.write_text("older\n")
    log = AccessLogFile(str(path))
    log.write(LINE + "\n")
    assert path.read_text().splitlines() == ["older", LINE]  # line-buffered

    # logrotate: the file is moved away, reopen() starts a new one
    path.rename(tmp_path / "access.log.1")
    log.reopen()
    log.write("after rotate\n")
    log.flush()
    assert path.read_text() == "after rotate\n"
    assert (tmp_path / "access.log.1").read_text().count("\n") == 2
    log.close()
    assert log.stream.closed


def test_bad_names_are_refused():
    with pytest.raises(ValueError, match="log level"):
        parse_level("loud")
    with pytest.raises(ValueError, match="text or json"):
        make_log_observer("xml")


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
