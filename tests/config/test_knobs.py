"""tsgate.io/ annotations: validated at load time, read by the data path."""

from __future__ import annotations

from pathlib import Path

from tsgate.config import load_config

GATEWAY = """\
apiVersion: networking.istio.io/v1
kind: Gateway
metadata:
  name: gw
  annotations:
    {key}: "{value}"
spec:
  selector: {{istio: ingressgateway}}
  servers:
  - port: {{number: 31400, name: tcp, protocol: TCP}}
    hosts: ["*"]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: vs}}
spec:
  hosts: ["*"]
  gateways: [gw]
  tcp:
  - route:
    - destination: {{host: echo, port: {{number: 1}}}}
"""


def load(tmp_path: Path, key: str, value: str):  # type: ignore[no-untyped-def]
    path = tmp_path / "gw.yaml"
    path.write_text(GATEWAY.format(key=key, value=value))
    return load_config([str(path)])


def test_valid_inspect_timeout_reaches_the_listener(tmp_path: Path) -> None:
    result = load(tmp_path, "tsgate.io/inspect-timeout", "1500ms")
    assert result.ok, result.errors
    assert result.table.listeners[0].annotations == (("tsgate.io/inspect-timeout", "1500ms"),)


def test_bad_duration_is_an_error_naming_the_annotation(tmp_path: Path) -> None:
    result = load(tmp_path, "tsgate.io/inspect-timeout", "soon")
    assert not result.ok
    (error,) = result.errors
    assert 'metadata.annotations["tsgate.io/inspect-timeout"]' in str(error)
    assert "'soon' is not a duration" in str(error)
    assert "Gateway default/gw" in str(error)


def test_observers_none_mixed_with_names_is_an_error(tmp_path: Path) -> None:
    result = load(tmp_path, "tsgate.io/observers", "none,redis")
    assert not result.ok
    assert "none cannot be combined" in str(result.errors[0])


def test_unknown_tsgate_annotation_is_a_warning(tmp_path: Path) -> None:
    result = load(tmp_path, "tsgate.io/inspect-timout", "1s")
    assert result.ok
    assert any("unknown tsgate annotation 'tsgate.io/inspect-timout'" in str(w)
               for w in result.warnings)
