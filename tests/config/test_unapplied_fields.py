"""Fields tsgate reads but does not apply are warnings naming the field (never silent)."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from tsgate.config import ConfigResult

DR = """apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: dr}
spec:
  host: a.example.com
  trafficPolicy:
"""

GW = """apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: gw}
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: 443, name: tls, protocol: TLS}
    hosts: ["*"]
    tls:
"""


@pytest.mark.parametrize("text, path, words", [
    (DR + "    loadBalancer:\n      zoneAwareLbSetting: {enabled: true}\n",
     "spec.trafficPolicy.loadBalancer.zoneAwareLbSetting", "zone-aware"),
    (DR + "    tls: {mode: SIMPLE, caCrl: /crl.pem}\n",
     "spec.trafficPolicy.tls.caCrl", "revocation"),
    (GW + "      mode: MUTUAL\n      credentialName: c\n      insecureSkipVerify: true\n",
     "spec.servers[0].tls.insecureSkipVerify", "not applied"),
    (GW + "      mode: SIMPLE\n      tlsCertificates:\n"
          "      - {serverCertificate: /c.pem, privateKey: /k.pem, caCertificates: /ca.pem}\n",
     "spec.servers[0].tls.tlsCertificates[0].caCertificates", "client CA"),
])
def test_unapplied_field_is_a_warning_naming_it(load: Callable[..., ConfigResult], text: str,
                                                path: str, words: str) -> None:
    result = load(text, tls_files_fatal=False)
    found = [d for d in result.warnings if d.path == path]
    assert found, [str(d) for d in result.diagnostics]
    assert words in found[0].message
