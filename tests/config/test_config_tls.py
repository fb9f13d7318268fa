"""
TLS settings in the configuration: credentials (files and ``--credentials``
directories), termination and origination compiled into the route table,
and what is an error, a warning or fine. Certificates are generated now.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import pytest
import yaml

from tests.support.tlscerts import CA, cert_pem, key_pem, write_credential
from tsgate.config import ConfigResult
from tsgate.tls import credentials as C
from tsgate.tls.stage import failure_reason

HOST = "a.example.test"


def gw(tls: dict[str, Any], protocol: str = "TLS", hosts: Any = (HOST,)) -> dict[str, Any]:
    return {"apiVersion": "networking.istio.io/v1", "kind": "Gateway",
            "metadata": {"name": "g"},
            "spec": {"selector": {"istio": "ingressgateway"},
                     "servers": [{"port": {"number": 443, "name": "tls", "protocol": protocol},
                                  "hosts": list(hosts), "tls": tls}]}}


VS = {"apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
      "metadata": {"name": "vs"},
      "spec": {"hosts": [HOST], "gateways": ["g"],
               "tcp": [{"route": [{"destination": {"host": "backend",
                                                   "port": {"number": 9000}}}]}]}}


def dr(tls: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"apiVersion": "networking.istio.io/v1", "kind": "DestinationRule",
            "metadata": {"name": "d"},
            "spec": {"host": "backend", "trafficPolicy": {"tls": tls, **extra}}}


@pytest.fixture
def ca() -> CA:
    return CA.create()


@pytest.fixture
def run(load: Callable[..., ConfigResult], tmp_path: Path) -> Callable[..., ConfigResult]:
    def _run(*docs: dict[str, Any], credentials: Any = None) -> ConfigResult:
        return load(yaml.safe_dump_all(list(docs)),
                    credentials_dir=str(credentials) if credentials else None)

    return _run


def diags(result: ConfigResult, severity: str) -> list[tuple[str, str]]:
    return [(d.path, d.message) for d in result.diagnostics if d.severity == severity]


# ------------------------------------------------------------- credentials


def test_credential_layouts(tmp_path: Path, ca: CA) -> None:
    leaf = ca.issue(HOST, dns=[HOST])
    write_credential(tmp_path, "tls-style", leaf, ca=ca)
    write_credential(tmp_path, "generic", leaf, ca=ca, generic=True)
    write_credential(tmp_path, "split", leaf, ca=ca, separate_ca=True)
    tls = C.credential_files("tls-style", str(tmp_path), "credentialName")
    assert tls.cert.endswith("tls-style/tls.crt") and tls.key.endswith("tls-style/tls.key")
    assert tls.ca.endswith("tls-style/ca.crt")
    generic = C.credential_files("generic", str(tmp_path), "credentialName")
    assert generic.cert.endswith("/cert") and generic.ca.endswith("/cacert")
    split = C.credential_files("split", str(tmp_path), "credentialName")
    assert split.ca.endswith("split-cacert/ca.crt")
    # Istio's kubernetes:// prefix names the same secret
    assert C.credential_files("kubernetes://split", str(tmp_path), "f").cert == split.cert
    with pytest.raises(C.CredentialError, match="no directory"):
        C.credential_files("missing", str(tmp_path), "credentialName")
    with pytest.raises(C.CredentialError, match="--credentials"):
        C.credential_files("x", None, "credentialName")


def test_key_checks(tmp_path: Path, ca: CA) -> None:
    a, b = ca.issue(HOST, dns=[HOST]), ca.issue(HOST, dns=[HOST], kind="rsa")
    crt, key = a.write(tmp_path / "a.crt", tmp_path / "a.key")
    _, other = b.write(tmp_path / "b.crt", tmp_path / "b.key")
    chain, _ = C.read_pair(str(crt), str(key), "serverCertificate", "privateKey")
    assert chain[0].serial_number == a.cert.serial_number
    with pytest.raises(C.CredentialError, match="does not match") as info:
        C.read_pair(str(crt), str(other), "serverCertificate", "privateKey")
    assert info.value.field == "privateKey"
    (tmp_path / "junk").write_text("not a certificate")
    with pytest.raises(C.CredentialError, match="holds no PEM certificate"):
        C.read_pair(str(tmp_path / "junk"), str(key), "serverCertificate", "privateKey")
    from cryptography.hazmat.primitives import serialization

    (tmp_path / "enc.key").write_bytes(a.key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"secret")))
    with pytest.raises(C.CredentialError, match="encrypted"):
        C.read_pair(str(crt), str(tmp_path / "enc.key"), "serverCertificate", "privateKey")


def test_name_coverage() -> None:
    assert C.covers(["*.example.test"], "a.example.test")
    assert not C.covers(["*.example.test"], "a.b.example.test")
    assert not C.covers(["*.example.test"], "example.test")
    assert C.covers(["*.example.test"], "*.example.test")
    assert C.covers(["a.example.test"], "A.Example.Test.")
    assert not C.covers(["a.example.test"], "*.example.test")


def test_failure_reason_is_one_token() -> None:
    from OpenSSL import SSL

    class Session:
        facts = {"verify_error": "certificate does not match x.test"}

    error = SSL.Error([("SSL routines", "", "certificate verify failed")])
    token = failure_reason(Session(), error)
    assert token == ("TLS_error:|SSL_routines:CERTIFICATE_VERIFY_FAILED:certificate_does_not_"
                     "match_x.test:TLS_error_end")
    assert " " not in token


# ------------------------------------------------------------- termination


def test_simple_termination_compiles_to_an_sni_chain(run: Any, tmp_path: Path, ca: CA) -> None:
    write_credential(tmp_path / "creds", "a", ca.issue(HOST, dns=[HOST]))
    result = run(gw({"mode": "SIMPLE", "credentialName": "a"}), VS,
                 credentials=tmp_path / "creds")
    assert result.ok, result.diagnostics
    (listener,) = result.table.listeners
    (chain,) = listener.tls_chains
    assert chain.server_names == (HOST,)
    assert chain.termination.mode == "SIMPLE"
    decision = listener.route_for_sni(HOST)
    assert decision.termination is chain.termination
    assert decision.route.name == "default/vs#tcp[0]"
    assert listener.route_for_sni("other.test").route is None
    dump = result.to_dict()["table"]["listeners"][0]["tls_chains"][0]["termination"]
    assert dump["mode"] == "SIMPLE" and dump["certificates"][0]["subject"] == f"CN={HOST}"
    assert "BEGIN" not in yaml.safe_dump(result.to_dict())


def test_https_server_with_a_tcp_route_is_terminated(run: Any, tmp_path: Path, ca: CA) -> None:
    crt, key = ca.issue(HOST, dns=[HOST]).write(tmp_path / "c", tmp_path / "k")
    result = run(gw({"mode": "SIMPLE", "serverCertificate": str(crt), "privateKey": str(key)},
                    protocol="HTTPS"), VS)
    assert result.ok and result.table.listeners[0].tls_chains[0].termination is not None
    no_tcp = {**VS, "spec": {**VS["spec"], "tcp": None, "http": [{"route": []}]}}
    del no_tcp["spec"]["tcp"]
    result = run(gw({"mode": "SIMPLE", "serverCertificate": str(crt), "privateKey": str(key)},
                    protocol="HTTPS"), no_tcp)
    assert any("HTTPS server skipped" in m for _, m in diags(result, "warning"))


@pytest.mark.parametrize("tls,path,reason", [
    ({"mode": "SIMPLE", "serverCertificate": "/nonexistent.crt", "privateKey": "/x.key"},
     "spec.servers[0].tls.serverCertificate", "cannot read certificate /nonexistent.crt"),
    ({"mode": "SIMPLE", "credentialName": "nope"},
     "spec.servers[0].tls.credentialName", "credential 'nope' not found"),
    ({"mode": "MUTUAL", "credentialName": "a"},
     "spec.servers[0].tls.caCertificates", "MUTUAL TLS needs caCertificates"),
])
def test_termination_errors_name_the_field(run: Any, tmp_path: Path, ca: CA, tls: Any,
                                           path: str, reason: str) -> None:
    write_credential(tmp_path / "creds", "a", ca.issue(HOST, dns=[HOST]))
    result = run(gw(tls), VS, credentials=tmp_path / "creds")
    assert not result.ok
    assert any(p == path and reason in m for p, m in diags(result, "error")), result.diagnostics


def test_mismatched_credential_key_is_an_error(run: Any, tmp_path: Path, ca: CA) -> None:
    base = write_credential(tmp_path / "creds", "a", ca.issue(HOST, dns=[HOST]))
    (base / "tls.key").write_bytes(key_pem(ca.issue(HOST).key))
    result = run(gw({"mode": "SIMPLE", "credentialName": "a"}), VS,
                 credentials=tmp_path / "creds")
    assert [(p, m.split(":")[0]) for p, m in diags(result, "error")] == [
        ("spec.servers[0].tls.credentialName", f"private key {base}/tls.key does not match the "
                                                f"certificate {base}/tls.crt")]


def test_versions_ciphers_and_warnings(run: Any, tmp_path: Path, ca: CA) -> None:
    write_credential(tmp_path / "creds", "a", ca.issue(HOST, dns=[HOST], days=5))
    result = run(gw({"mode": "SIMPLE", "credentialName": "a", "minProtocolVersion": "TLSV1_3",
                     "cipherSuites": ["ECDHE-ECDSA-AES128-GCM-SHA256", "NOT-A-CIPHER",
                                      "ECDHE-ECDSA-AES128-GCM-SHA256"]},
                    hosts=[HOST, "b.example.test"]), VS, credentials=tmp_path / "creds")
    assert result.ok
    termination = result.table.listeners[0].tls_chains[0].termination
    assert (termination.min_version, termination.max_version) == ("TLSV1_3", "TLSV1_3")
    assert termination.cipher_suites == ("ECDHE-ECDSA-AES128-GCM-SHA256",)
    warnings = diags(result, "warning")
    assert ("spec.servers[0].tls.cipherSuites[1]",) in [(p,) for p, _ in warnings]
    assert any(p == "spec.servers[0].tls.cipherSuites[2]" and "duplicate" in m
               for p, m in warnings)
    assert any("does not cover host 'b.example.test'" in m for _, m in warnings)
    assert any("expires in 4 days" in m or "expires in 5 days" in m for _, m in warnings)


def test_istio_mutual_server_is_a_warning(run: Any) -> None:
    result = run(gw({"mode": "ISTIO_MUTUAL"}), VS)
    assert result.ok
    assert any("ISTIO_MUTUAL needs Istio's mesh certificates" in m
               for _, m in diags(result, "warning"))


# ------------------------------------------------------------- origination


TCP_GW = {"apiVersion": "networking.istio.io/v1", "kind": "Gateway", "metadata": {"name": "g"},
          "spec": {"selector": {"istio": "ingressgateway"},
                   "servers": [{"port": {"number": 31400, "name": "tcp", "protocol": "TCP"},
                                "hosts": ["*"]}]}}
TCP_VS = {**VS, "spec": {**VS["spec"], "hosts": ["*"]}}


def cluster_of(result: ConfigResult) -> Any:
    return result.table.listeners[0].tcp_route.destinations[0].cluster


def test_simple_origination(run: Any, tmp_path: Path, ca: CA) -> None:
    ca_file = ca.write(tmp_path / "ca.pem")
    result = run(TCP_GW, TCP_VS, dr({"mode": "SIMPLE", "caCertificates": str(ca_file),
                                     "sni": "backend.example.test"}))
    assert result.ok, result.diagnostics
    tls = cluster_of(result).tls
    assert tls.mode == "SIMPLE" and tls.sni == "backend.example.test"
    assert tls.verify_names == ("backend.example.test",)
    # no sni: the destination host is verified; subjectAltNames win over both
    result = run(TCP_GW, TCP_VS, dr({"mode": "SIMPLE"}))
    assert cluster_of(result).tls.verify_names == ("backend.default.svc.cluster.local",)
    assert cluster_of(result).tls.ca == "system roots"
    result = run(TCP_GW, TCP_VS, dr({"mode": "SIMPLE", "sni": "x", "subjectAltNames": ["y"]}))
    assert cluster_of(result).tls.verify_names == ("y",)
    result = run(TCP_GW, TCP_VS, dr({"mode": "SIMPLE", "insecureSkipVerify": True}))
    assert cluster_of(result).tls.verify_names == ()


def test_port_level_origination_replaces_the_top_level(run: Any) -> None:
    result = run(TCP_GW, TCP_VS, dr({"mode": "DISABLE"}, portLevelSettings=[
        {"port": {"number": 9000}, "tls": {"mode": "SIMPLE", "sni": "p.test"}}]))
    assert cluster_of(result).tls.sni == "p.test"


def test_origination_errors_and_warnings(run: Any, tmp_path: Path, ca: CA) -> None:
    result = run(TCP_GW, TCP_VS, dr({"mode": "MUTUAL"}))
    assert not result.ok
    assert any(p == "spec.trafficPolicy.tls" and "MUTUAL TLS requires clientCertificate" in m
               for p, m in diags(result, "error"))
    result = run(TCP_GW, TCP_VS, dr({"mode": "ISTIO_MUTUAL"}))
    assert result.ok and cluster_of(result).tls is None
    assert any(p == "spec.trafficPolicy.tls.mode" and "ISTIO_MUTUAL" in m
               for p, m in diags(result, "warning"))
    leaf = ca.issue("client", client=True)
    write_credential(tmp_path / "creds", "client", leaf, ca=ca)
    result = run(TCP_GW, TCP_VS, dr({"mode": "MUTUAL", "credentialName": "client"}),
                 credentials=tmp_path / "creds")
    assert result.ok, result.diagnostics
    assert cluster_of(result).tls.certificates[0]["subject"] == "CN=client"
    assert cluster_of(result).tls.ca.endswith("client/ca.crt")
    result = run(TCP_GW, TCP_VS, dr({"mode": "SIMPLE", "caCertificates": "/nonexistent"}))
    assert any(p == "spec.trafficPolicy.tls.caCertificates" for p, _ in diags(result, "error"))


def test_certificate_pem_helpers_round_trip(ca: CA) -> None:
    leaf = ca.issue(HOST, dns=[HOST])
    from cryptography import x509

    assert x509.load_pem_x509_certificate(cert_pem(leaf.cert)).serial_number == \
        leaf.cert.serial_number


def test_tls_certificates_and_ca_cert_credential_name(run: Any, tmp_path: Path, ca: CA) -> None:
    crt, key = ca.issue(HOST, dns=[HOST]).write(tmp_path / "c.pem", tmp_path / "k.pem")
    creds = tmp_path / "creds"
    (creds / "client-ca").mkdir(parents=True)
    ca.write(creds / "client-ca" / "ca.crt")
    result = run(gw({"mode": "MUTUAL", "caCertCredentialName": "client-ca",
                     "tlsCertificates": [{"serverCertificate": str(crt),
                                          "privateKey": str(key)}]}), VS, credentials=creds)
    assert result.ok, result.diagnostics
    termination = result.table.listeners[0].tls_chains[0].termination
    assert termination.has_client_ca and termination.mode == "MUTUAL"
    assert str(creds / "client-ca" / "ca.crt") in termination.files
    result = run(gw({"mode": "SIMPLE", "tlsCertificates": [
        {"serverCertificate": str(crt), "privateKey": "/nonexistent.key"}]}), VS)
    assert [p for p, _ in diags(result, "error")] == [
        "spec.servers[0].tls.tlsCertificates[0].privateKey"]
