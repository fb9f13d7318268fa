"""
examples/kubernetes: every manifest parses, has the kinds and fields the docs
promise, the container command is valid for ``twistd tsgate``, and the
ConfigMap's Istio YAML compiles to the seed's TCP route.
"""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from tsgate.config import load_config
from tsgate.tap import Options

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "kubernetes"


def documents() -> dict[str, dict]:
    """Every document of every manifest, by kind (each kind appears once)."""
    by_kind: dict[str, dict] = {}
    for path in sorted(EXAMPLE.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            assert doc and "kind" in doc and "apiVersion" in doc, path
            assert doc["kind"] not in by_kind, f"two {doc['kind']} documents"
            by_kind[doc["kind"]] = doc
    return by_kind


def test_kinds():
    assert set(documents()) == {"ConfigMap", "Deployment", "PodDisruptionBudget", "Service",
                                "Kustomization"}
    kustomization = documents()["Kustomization"]
    for resource in kustomization["resources"]:
        assert (EXAMPLE / resource).is_file()


def container() -> dict:
    (c,) = documents()["Deployment"]["spec"]["template"]["spec"]["containers"]
    return c


def test_deployment_replicas_probes_and_config_volume():
    deployment = documents()["Deployment"]
    spec = deployment["spec"]
    assert spec["replicas"] == 3
    pod = spec["template"]
    assert spec["selector"]["matchLabels"].items() <= pod["metadata"]["labels"].items()
    c = container()
    for probe in ("readinessProbe", "livenessProbe"):
        assert c[probe]["httpGet"] == {"path": "/healthz/ready", "port": 15021}
    (mount,) = c["volumeMounts"]
    (volume,) = pod["spec"]["volumes"]
    assert mount["mountPath"] == "/etc/tsgate" and mount["name"] == volume["name"]
    assert volume["configMap"]["name"] == documents()["ConfigMap"]["metadata"]["name"]
    drain = float(c["command"][c["command"].index("--drain-period") + 1])
    assert pod["spec"]["terminationGracePeriodSeconds"] > drain + 3  # + preStop pause


def test_command_is_valid_tsgate_options():
    """The command line parses with tsgate's own twistd options; admin stays on loopback."""
    command = container()["command"]
    assert command[:4] == ["twistd", "-n", "--pidfile=", "tsgate"]
    # Kubernetes substitutes $(VAR) from the container's env before exec
    env = {e["name"] for e in container()["env"]}
    args = command[4:]
    for arg in args:
        for var in re.findall(r"\$\((\w+)\)", arg):
            assert var in env
    options = Options()
    options.parseOptions([re.sub(r"\$\(\w+\)", "istioinaction", a) for a in args])
    assert options["config"] == ["/etc/tsgate"]
    assert options["admin"] == "tcp:15000:interface=127.0.0.1"
    assert options["readiness"] == "tcp:15021"
    assert options["metrics"] == "tcp:15090"  # metrics-only, on the pod IP for Prometheus
    assert options["gateway-labels"] == {"istio": "ingressgateway"}
    ports = {p["containerPort"] for p in container()["ports"]}
    assert ports == {31400, 15021, 15090}  # 15000 (admin) is not a container port
    annotations = documents()["Deployment"]["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/port"] == "15090"


def test_service_is_a_load_balancer_on_31400():
    service = documents()["Service"]
    assert service["spec"]["type"] == "LoadBalancer"
    (port,) = service["spec"]["ports"]
    assert (port["port"], port["targetPort"], port["protocol"]) == (31400, 31400, "TCP")
    pod_labels = documents()["Deployment"]["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= pod_labels.items()


def test_configmap_compiles_to_the_seed_route(tmp_path):
    """The mounted files are valid Istio YAML giving port 31400 -> tcp-echo-service:2701."""
    for name, text in documents()["ConfigMap"]["data"].items():
        assert name.endswith(".yaml")
        (tmp_path / name).write_text(text)
    result = load_config([str(tmp_path)])
    assert result.ok, [str(d) for d in result.errors]
    (listener,) = result.table.listeners
    assert listener.port == 31400 and not listener.inspect
    (dest,) = listener.tcp_route.destinations
    assert (dest.cluster.host.split(".")[0], dest.cluster.port) == ("tcp-echo-service", 2701)


def test_dockerfile():
    text = (EXAMPLE / "Dockerfile").read_text()
    assert text.startswith("# Build from the repository root") and "FROM python:3.11-slim" in text
    assert "pip install --no-cache-dir ." in text and "USER 10001" in text
    for copied in re.findall(r"^COPY (\S+)", text, re.M):
        assert (EXAMPLE.parents[1] / copied).exists(), copied
