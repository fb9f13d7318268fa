"""
loadBalancer PASSTHROUGH (no original destination at an ingress gateway:
round robin is used) is warned at each place it is written, and unapplied
fields are warned in the order they are written (tsgate/upstream/truth.py).
Each test names the mutants of ``mutmut`` it was written to kill.
"""

from __future__ import annotations

from collections.abc import Callable

from tsgate.config import ConfigResult

PASSTHROUGH = ("loadBalancer PASSTHROUGH forwards to the original destination, which an "
               "ingress gateway does not have: round robin is used")

DR = """apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: dr}
spec:
  host: a.example.com
  trafficPolicy:
    tls: {mode: SIMPLE, caCrl: /crl.pem}
    loadBalancer:
      simple: PASSTHROUGH
      localityLbSetting: {enabled: true}
  subsets:
  - name: v1
    labels: {v: "1"}
  - name: v2
    labels: {v: "2"}
    trafficPolicy:
      loadBalancer: {simple: ROUND_ROBIN}
      portLevelSettings:
      - port: {number: 80}
        loadBalancer: {simple: RANDOM}
      - port: {number: 81}
        loadBalancer: {simple: PASSTHROUGH}
"""


def test_passthrough_is_warned_where_written(load: Callable[..., ConfigResult]) -> None:
    """Kills _passthrough 1-25 and unapplied 15-17 (the DestinationRule check)."""
    result = load(DR, tls_files_fatal=False)
    found = [(d.path, d.message) for d in result.warnings if "PASSTHROUGH" in d.message]
    assert found == [
        ("spec.trafficPolicy.loadBalancer.simple", PASSTHROUGH),
        ("spec.subsets[1].trafficPolicy.portLevelSettings[1].loadBalancer.simple", PASSTHROUGH),
    ]


def test_unapplied_fields_in_the_order_written(load: Callable[..., ConfigResult]) -> None:
    """Unapplied fields are warned in the order they are written (as the loader shows them)."""
    result = load(DR, tls_files_fatal=False)
    paths = [d.path for d in result.warnings
             if d.path in ("spec.trafficPolicy.tls.caCrl",
                           "spec.trafficPolicy.loadBalancer.localityLbSetting")]
    assert paths == ["spec.trafficPolicy.tls.caCrl",
                     "spec.trafficPolicy.loadBalancer.localityLbSetting"]


def test_unapplied_lists_fields_by_position_in_the_document() -> None:
    """Kills unapplied 7/9 (sorted by (position, path), not by path: the loader re-sorts)."""
    from types import SimpleNamespace

    from tsgate.upstream.truth import unapplied

    tls = "spec.servers[0].tls."
    meta = SimpleNamespace(kind="Gateway", positions={
        tls + "insecureSkipVerify": (12, 6), tls + "tlsCertificates[0].caCertificates": (9, 8),
        "spec.selector": (5, 2)})
    assert [path for path, _ in unapplied(SimpleNamespace(meta=meta))] == [
        tls + "tlsCertificates[0].caCertificates", tls + "insecureSkipVerify"]
