"""The access log keeps Istio's default text format field for field, and its JSON keys."""

from __future__ import annotations

import io
import json

from tsgate.accesslog import JSON_KEYS, AccessLog, AccessRecord, format_time


def record(**kwargs) -> AccessRecord:  # type: ignore[no-untyped-def]
    base = dict(start_time=1764100787.123, downstream_local_address="10.1.0.5:31400",
                downstream_remote_address="203.0.113.9:52311")
    base.update(kwargs)
    return AccessRecord(**base)  # type: ignore[arg-type]


def test_text_line_matches_istio_default_format() -> None:
    r = record(bytes_received=512, bytes_sent=1024, duration_ms=30012,
               upstream_host="10.1.2.3:2701",
               upstream_cluster="outbound|2701||tcp-echo-service.istioinaction.svc.cluster.local",
               upstream_local_address="10.1.0.5:41234", route_name="tcp->ns/vs#tcp[0]")
    assert r.text() == (
        '[2025-11-25T19:59:47.123Z] "- - -" 0 - - - "-" 512 1024 30012 - "-" "-" "-" "-" '
        '"10.1.2.3:2701" outbound|2701||tcp-echo-service.istioinaction.svc.cluster.local '
        "10.1.0.5:41234 10.1.0.5:31400 203.0.113.9:52311 - tcp->ns/vs#tcp[0]"
    )


def test_no_route_line() -> None:
    r = record(response_flags="NR", response_code_details="filter_chain_not_found",
               requested_server_name="unknown.example", route_name="none")
    fields = r.text().split()
    assert fields[5:7] == ["NR", "filter_chain_not_found"]
    assert fields[22:24] == ["unknown.example", "none"]


def test_hints_follow_the_istio_fields_and_skip_the_long_ja3() -> None:
    r = record(hints={"protocol": "tls", "alpn": "h2,http/1.1", "ja3": "771,4865-4866,0-23,29,0",
                      "ja3_hash": "0149f47eabf9a20d0893e2a44e5a6323", "ja4": "t13d1812h2_x_y",
                      "app_name": "my app"})
    text = r.text()
    assert text.split()[23] == "-"  # route field is still in place
    assert "ja4=t13d1812h2_x_y" in text and "ja3_hash=0149f47eabf9a20d0893e2a44e5a6323" in text
    assert "ja3=" not in text
    assert 'app_name="my app"' in text
    assert json.loads(r.json())["hints"]["ja3"] == "771,4865-4866,0-23,29,0"


def test_json_uses_istio_keys_and_nulls_for_dashes() -> None:
    data = json.loads(record(response_flags="UF", upstream_host="127.0.0.1:1").json())
    assert list(data)[: len(JSON_KEYS)] == list(JSON_KEYS)
    assert data["response_flags"] == "UF"
    assert data["requested_server_name"] is None and data["response_code"] == 0
    assert data["start_time"] == format_time(1764100787.123)


def test_log_writes_lines_and_tells_whether_anyone_reads() -> None:
    stream = io.StringIO()
    assert AccessLog(stream).wanted and not AccessLog(None).wanted
    AccessLog(stream, "json").emit(record())
    assert json.loads(stream.getvalue())["downstream_remote_address"] == "203.0.113.9:52311"
