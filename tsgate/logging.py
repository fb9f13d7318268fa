"""
The gateway's own log (twisted.logger) in text or JSON, with a level filter,
and the reopenable file the access log (:mod:`tsgate.accesslog`) writes to.

Why a module of its own: under ``twistd`` the log observer is installed by
twistd *after* the plugin's ``makeService``; the only clean hook is the
``logger`` option of twistd's own options (a zero-argument factory), which a
plugin's ``Options.postOptions`` can still set through ``self.parent``.
:func:`install_twistd_logger` does that, so ``twistd -n tsgate --log-format
json --log-level warn`` needs no ``--logger`` from the user.

The access log does not go through twisted.logger: :class:`tsgate.accesslog.AccessLog`
writes its lines straight to stdout or an :class:`AccessLogFile` (reopened on
SIGUSR1 after logrotate moved it, see ``tsgate.tap``).
"""

from __future__ import annotations

import json
import sys
import time
from typing import IO, Any, Optional

from twisted.logger import (
    FilteringLogObserver,
    ILogObserver,
    LogLevel,
    LogLevelFilterPredicate,
    formatEvent,
    textFileLogObserver,
)
from zope.interface import implementer

#: Accepted --log-level names (Twisted's, plus common aliases).
LEVELS: dict[str, LogLevel] = {
    "debug": LogLevel.debug,
    "info": LogLevel.info,
    "warn": LogLevel.warn,
    "warning": LogLevel.warn,
    "error": LogLevel.error,
    "critical": LogLevel.critical,
    "fatal": LogLevel.critical,
}

Event = dict[str, Any]


def parse_level(name: str) -> LogLevel:
    """A LogLevel from a --log-level value; ValueError names the accepted ones."""
    try:
        return LEVELS[name.strip().lower()]
    except KeyError:
        raise ValueError(
            f"log level must be one of {', '.join(sorted(set(LEVELS)))}, not {name!r}"
        ) from None


def _iso(epoch: Optional[float]) -> str:
    if epoch is None:
        epoch = time.time()
    secs = int(epoch)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(secs)) + \
        f".{int((epoch - secs) * 1000):03d}Z"


def _jsonable(value: Any) -> bool:
    return value is None or isinstance(value, (str, int, float, bool))


@implementer(ILogObserver)
class JsonLogObserver:
    """
    One JSON object per line: ``time`` (UTC ISO 8601), ``level``,
    ``namespace``, ``message`` (the formatted event), ``traceback`` when the
    event carries a failure, and the event's own scalar fields (``host``,
    ``port``...) under ``fields`` for log pipelines to index.
    Twisted's ``jsonFileLogObserver`` is not used: it serialises the whole
    event with record separators, which line-oriented shippers do not read.
    """

    def __init__(self, stream: IO[str]) -> None:
        self.stream = stream

    def __call__(self, event: Event) -> None:
        level = event.get("log_level")
        record: dict[str, Any] = {
            "time": _iso(event.get("log_time")),
            "level": getattr(level, "name", "info"),
            "namespace": event.get("log_namespace", "-"),
            "message": formatEvent(event),
        }
        failure = event.get("log_failure")
        if failure is not None:
            try:
                record["traceback"] = failure.getTraceback()
            except Exception:  # a failure that cannot format itself
                record["traceback"] = repr(failure)
        fields = {k: v for k, v in event.items()
                  if not k.startswith("log_") and k != "format" and _jsonable(v)}
        if fields:
            record["fields"] = fields
        try:
            self.stream.write(json.dumps(record, default=str) + "\n")
            self.stream.flush()
        except (OSError, ValueError):
            pass  # a closed log stream must not raise into the code that logged


def make_log_observer(fmt: str = "text", level: str = "info",
                      stream: Optional[IO[str]] = None) -> ILogObserver:
    """
    The gateway's log observer: ``text`` (Twisted's ``time [namespace#level]
    message`` lines) or ``json``, dropping events below ``level`` and the
    access-log events (they have their own observer).
    """
    stream = stream if stream is not None else sys.stdout
    if fmt == "text":
        base: ILogObserver = textFileLogObserver(stream)
    elif fmt == "json":
        base = JsonLogObserver(stream)
    else:
        raise ValueError(f"log format must be text or json, not {fmt!r}")

    predicate = LogLevelFilterPredicate(defaultLogLevel=parse_level(level))
    return FilteringLogObserver(base, [predicate])


class AccessLogFile:
    """
    An append-mode, line-buffered access-log file that can be reopened
    (``reopen()`` on SIGHUP after logrotate moved it away).
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self.stream: IO[str] = self._open()

    def _open(self) -> IO[str]:
        return open(self.path, "a", encoding="utf-8", buffering=1)

    def write(self, text: str) -> int:
        return self.stream.write(text)

    def flush(self) -> None:
        self.stream.flush()

    def reopen(self) -> None:
        old, self.stream = self.stream, self._open()
        old.close()

    def close(self) -> None:
        self.stream.close()


def install_twistd_logger(options: Any, fmt: str, level: str) -> bool:
    """
    From a twistd plugin's ``Options.postOptions``: make twistd install our
    observer instead of its default one, unless the user passed ``--logger``.
    Honours twistd's ``--logfile`` (``-l``). Returns whether it did.
    """
    parent = getattr(options, "parent", None)
    if parent is None or parent.get("logger"):
        return False
    parse_level(level)  # fail at option parsing, not at startup
    if fmt not in ("text", "json"):
        raise ValueError(f"log format must be text or json, not {fmt!r}")
    # twistd imports its ``logger`` option by dotted name after the plugin's
    # options are parsed, so the factory is a module-level function reading
    # the settings stashed here.
    _twistd_settings.update(fmt=fmt, level=level, logfile=parent.get("logfile"))
    parent["logger"] = f"{__name__}.twistd_log_observer"
    return True


_twistd_settings: dict[str, Any] = {}


def twistd_log_observer() -> ILogObserver:
    """The zero-argument observer factory twistd's ``logger`` option names."""
    settings = _twistd_settings
    stream: Any = sys.stdout
    logfile = settings.get("logfile")
    if logfile and logfile != "-":
        from twisted.python.logfile import LogFile

        stream = LogFile.fromFullPath(logfile)
        _opened.append(stream)
    return make_log_observer(settings.get("fmt", "text"), settings.get("level", "info"), stream)


#: log files the twistd observer opened (closed by tests; by exit otherwise)
_opened: list[Any] = []
twistd_log_observer.opened = _opened  # type: ignore[attr-defined]

