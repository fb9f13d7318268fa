"""
The per-connection access log, in Istio's default format.

Istio's default text format (ISTIO-L4.md §8) is one string for HTTP and TCP;
for a TCP connection the HTTP operators render ``-`` and the response code
is 0, so a line reads::

    [2026-11-25T20:19:47.123Z] "- - -" 0 - - - "-" 512 1024 30012 - "-" "-" "-" "-"
    "127.0.0.1:2701" outbound|2701||tcp-echo-service.default.svc.cluster.local
    127.0.0.1:41234 127.0.0.1:31400 127.0.0.1:52311 - default/tcp-echo-vs#tcp[0]

(one line). Users' log pipelines already parse that, so the text line is kept
field for field; what tsgate adds (protocol hints such as the PostgreSQL
user) goes after the last Istio field, and under ``hints`` in JSON.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from typing import IO, Callable, Optional

import attrs

#: Istio's JSON keys (accessLogEncoding: JSON), in Istio's order.
JSON_KEYS = (
    "start_time", "method", "path", "protocol", "response_code", "response_flags",
    "response_code_details", "connection_termination_details",
    "upstream_transport_failure_reason", "bytes_received", "bytes_sent", "duration",
    "upstream_service_time", "x_forwarded_for", "user_agent", "request_id", "authority",
    "upstream_host", "upstream_cluster", "upstream_local_address", "downstream_local_address",
    "downstream_remote_address", "requested_server_name", "route_name",
)


def format_time(epoch: float) -> str:
    """Envoy's %START_TIME% default: ISO 8601 UTC with milliseconds."""
    secs, millis = divmod(int(round(epoch * 1000)), 1000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(secs)) + f".{millis:03d}Z"


@attrs.define
class AccessRecord:
    """Everything the access log says about one connection, filled in as it goes."""

    start_time: float
    downstream_local_address: str
    downstream_remote_address: str
    response_flags: str = "-"
    response_code_details: str = "-"
    connection_termination_details: str = "-"
    upstream_transport_failure_reason: str = "-"
    bytes_received: int = 0
    bytes_sent: int = 0
    duration_ms: int = 0
    upstream_host: str = "-"
    upstream_cluster: str = "-"
    upstream_local_address: str = "-"
    requested_server_name: str = "-"
    route_name: str = "-"
    hints: Optional[Mapping[str, str]] = None
    #: the socket peer (Envoy's %DOWNSTREAM_PEER_ADDRESS%); differs from
    #: downstream_remote_address when a PROXY protocol header named the client
    downstream_peer_address: str = "-"

    def text(self) -> str:
        """The Istio default text line (without the newline)."""
        line = (
            f'[{format_time(self.start_time)}] "- - -" 0 {self.response_flags} '
            f"{self.response_code_details} {self.connection_termination_details} "
            f'"{self.upstream_transport_failure_reason}" {self.bytes_received} '
            f'{self.bytes_sent} {self.duration_ms} - "-" "-" "-" "-" "{self.upstream_host}" '
            f"{self.upstream_cluster} {self.upstream_local_address} "
            f"{self.downstream_local_address} {self.downstream_remote_address} "
            f"{self.requested_server_name} {self.route_name}"
        )
        if self.hints:
            # The full JA3 string (hundreds of characters) stays in JSON; its
            # md5 and JA4 identify the client in a text line.
            line += " " + " ".join(
                f"{k}={_quote(v)}" for k, v in sorted(self.hints.items()) if k != "ja3"
            )
        return line

    def as_dict(self) -> dict[str, object]:
        """Istio's JSON encoding (``-`` becomes null as Envoy does), plus ``hints``."""

        def dash(value: str) -> Optional[str]:
            return None if value == "-" else value

        record: dict[str, object] = {
            "start_time": format_time(self.start_time),
            "method": None,
            "path": None,
            "protocol": None,
            "response_code": 0,
            "response_flags": dash(self.response_flags),
            "response_code_details": dash(self.response_code_details),
            "connection_termination_details": dash(self.connection_termination_details),
            "upstream_transport_failure_reason": dash(self.upstream_transport_failure_reason),
            "bytes_received": self.bytes_received,
            "bytes_sent": self.bytes_sent,
            "duration": self.duration_ms,
            "upstream_service_time": None,
            "x_forwarded_for": None,
            "user_agent": None,
            "request_id": None,
            "authority": None,
            "upstream_host": dash(self.upstream_host),
            "upstream_cluster": dash(self.upstream_cluster),
            "upstream_local_address": dash(self.upstream_local_address),
            "downstream_local_address": self.downstream_local_address,
            "downstream_remote_address": self.downstream_remote_address,
            "requested_server_name": dash(self.requested_server_name),
            "route_name": dash(self.route_name),
            # not in Istio's default format: after its keys
            "downstream_peer_address": dash(self.downstream_peer_address),
        }
        if self.hints:
            record["hints"] = dict(self.hints)
        return record

    def json(self) -> str:
        return json.dumps(self.as_dict(), separators=(",", ":"))


def _quote(value: str) -> str:
    if value and all(c.isalnum() or c in "._-:/,@" for c in value):
        return value
    return json.dumps(value)


class AccessLog:
    """
    Writes one line per closed connection to a stream.

    Written straight to the stream (flushed per line so a tail or a test sees
    it at once) rather than through twisted.logger: it runs once per
    connection on the data path, and an event dict plus observers would cost
    more than the rest of the bookkeeping. ``listeners`` get each record too
    (the admin's recent-connections view, tests).
    """

    def __init__(self, stream: Optional[IO[str]], fmt: str = "text") -> None:
        if fmt not in ("text", "json"):
            raise ValueError(f"access log format must be text or json, not {fmt!r}")
        self.stream = stream
        self.fmt = fmt
        self.listeners: list[Callable[[AccessRecord], None]] = []

    @property
    def wanted(self) -> bool:
        """Whether anything reads the records (else the data path skips the extras)."""
        return self.stream is not None or bool(self.listeners)

    def emit(self, record: AccessRecord) -> None:
        if self.stream is not None:
            line = record.json() if self.fmt == "json" else record.text()
            try:
                self.stream.write(line + "\n")
                self.stream.flush()
            except (OSError, ValueError):
                # A closed or full log stream must not take connections down.
                pass
        for listener in self.listeners:
            listener(record)
