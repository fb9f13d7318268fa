"""
The Gateway API conformance manifests (tests/data/gatewayapi/, see NOTICE) as
tsgate configuration: the suite's base manifests (namespaces, Services) plus
one test's manifest, served with ``--gateway-class {GATEWAY_CLASS_NAME}`` so
the files stay verbatim.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tsgate.config import ConfigResult, GatewayOptions, load_config

DATA = Path(__file__).resolve().parents[1] / "data" / "gatewayapi" / "conformance"
BASE = DATA / "base" / "manifests.yaml"
#: the conformance suite's placeholder, used verbatim as our class name
CLASS = "{GATEWAY_CLASS_NAME}"
INFRA = "gateway-conformance-infra"


def manifest(name: str) -> Path:
    """conformance/tests/<name>.yaml of kubernetes-sigs/gateway-api."""
    path = DATA / "tests" / f"{name}.yaml"
    assert path.exists(), path
    return path


def load(name: str, *extra: str, **kwargs: Any) -> ConfigResult:
    kwargs.setdefault("gateway_classes", (CLASS,))
    return load_config([str(BASE), str(manifest(name)), *extra], GatewayOptions(**kwargs))
