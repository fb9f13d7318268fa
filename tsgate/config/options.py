"""
The gateway options: which gateway workload a configuration is compiled for.

``twistd tsgate`` (:mod:`tsgate.tap`) and the ``tsgate`` commands
(:mod:`tsgate.cli`, :mod:`tsgate.explain_cli`) take the same options about
the gateway (``--gateway-label``, ``--namespace``, ``--gateway-namespace``,
``--gateway-class``, ``--namespace-label``, ``--root-namespace``,
``--credentials``). Both build one :class:`GatewayOptions` from them, with
the parsers of the options' text forms below, and pass it to
:func:`tsgate.config.load_config`; a ``--workers`` supervisor hands it to its
workers as :meth:`GatewayOptions.arguments`.

The parsers raise :class:`OptionError` (a ValueError) saying what was
wanted and what was given; each front end words it in its own usage error.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Optional

import attrs

from tsgate.config.authz import DEFAULT_ROOT_NAMESPACE
from tsgate.config.gatewayapi.translate import DEFAULT_GATEWAY_CLASSES

#: The labels of Istio's default ingress gateway workload.
DEFAULT_GATEWAY_LABELS: Mapping[str, str] = {"istio": "ingressgateway"}
#: The namespace of resources that name none (``--namespace``).
DEFAULT_NAMESPACE = "default"
#: The command-line options :class:`GatewayOptions` holds (as :meth:`~GatewayOptions.arguments`
#: writes them).
OPTION_NAMES = ("gateway-label", "namespace", "gateway-namespace", "gateway-class",
                "namespace-label", "root-namespace", "credentials")

__all__ = [
    "DEFAULT_GATEWAY_CLASSES", "DEFAULT_GATEWAY_LABELS", "DEFAULT_NAMESPACE",
    "DEFAULT_ROOT_NAMESPACE", "OPTION_NAMES", "GatewayOptions", "OptionError",
    "parse_gateway_class",
    "parse_label", "parse_namespace_label",
]


class OptionError(ValueError):
    """An option value not in its syntax: ``wanted`` (``KEY=VALUE``), ``text`` (as given)."""

    def __init__(self, wanted: str, text: str) -> None:
        super().__init__(f"expected {wanted}, got {text!r}")
        self.wanted = wanted
        self.text = text


def parse_label(text: str) -> tuple[str, str]:
    """``--gateway-label KEY=VALUE`` -> (key, value); the value may be empty."""
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise OptionError("KEY=VALUE", text)
    return key, value


def parse_namespace_label(text: str) -> tuple[str, str, str]:
    """``--namespace-label NS:KEY=VALUE`` -> (namespace, key, value)."""
    ns, colon, rest = text.partition(":")
    key, eq, value = rest.partition("=")
    if not colon or not eq or not ns or not key:
        raise OptionError("NAMESPACE:KEY=VALUE", text)
    return ns, key, value


def parse_gateway_class(text: str) -> str:
    """``--gateway-class NAME``: a GatewayClass name (not empty)."""
    if not text:
        raise OptionError("a GatewayClass name", text)
    return text


def _labels(value: Mapping[str, str]) -> dict[str, str]:
    return dict(value)


def _namespace_labels(value: Mapping[str, Mapping[str, str]]) -> dict[str, dict[str, str]]:
    return {ns: dict(labels) for ns, labels in value.items()}


def _classes(value: Iterable[str]) -> tuple[str, ...]:
    return tuple(value)


@attrs.frozen
class GatewayOptions:
    """
    The gateway a configuration is compiled for (what :func:`load_config` needs
    besides the paths). Every field has the default of its option.
    """

    #: ``--gateway-label``: this workload's labels, matched against Gateway selectors
    gateway_labels: Mapping[str, str] = attrs.field(default=DEFAULT_GATEWAY_LABELS,
                                                    converter=_labels)
    #: ``--namespace``: of resources without ``metadata.namespace``
    default_namespace: str = DEFAULT_NAMESPACE
    #: ``--gateway-namespace``: where the gateway runs, for ``exportTo`` (Istio: the
    #: gateway workload's namespace); None: each Gateway's own namespace
    gateway_namespace: Optional[str] = None
    #: ``--gateway-class``: Gateway API Gateways with these ``gatewayClassName`` are served
    gateway_classes: tuple[str, ...] = attrs.field(default=DEFAULT_GATEWAY_CLASSES,
                                                   converter=_classes)
    #: ``--namespace-label``: namespace -> labels, added to those of Namespace objects
    #: in the files (for ``allowedRoutes`` namespace selectors)
    namespace_labels: Mapping[str, Mapping[str, str]] = attrs.field(
        factory=dict, converter=_namespace_labels)
    #: ``--root-namespace``: Istio's root namespace, whose AuthorizationPolicies apply
    #: to every gateway
    root_namespace: str = DEFAULT_ROOT_NAMESPACE
    #: ``--credentials``: the directory ``credentialName`` certificates are read from
    #: (``DIR/<name>/tls.crt``, ``tls.key``, ``ca.crt``); None: none given
    credentials_dir: Optional[str] = None

    @classmethod
    def from_parsed(
        cls,
        *,
        gateway_labels: Iterable[tuple[str, str]] = (),
        gateway_classes: Iterable[str] = (),
        namespace_labels: Iterable[tuple[str, str, str]] = (),
        default_namespace: str = DEFAULT_NAMESPACE,
        gateway_namespace: Optional[str] = None,
        root_namespace: str = DEFAULT_ROOT_NAMESPACE,
        credentials_dir: Optional[str] = None,
    ) -> GatewayOptions:
        """
        From the repeatable options as parsed, in order (the last value of a
        key wins); none given means the option's default.
        """
        labels = dict(gateway_labels) or dict(DEFAULT_GATEWAY_LABELS)
        by_namespace: dict[str, dict[str, str]] = {}
        for ns, key, value in namespace_labels:
            by_namespace.setdefault(ns, {})[key] = value
        return cls(
            gateway_labels=labels,
            default_namespace=default_namespace,
            gateway_namespace=gateway_namespace,
            gateway_classes=tuple(gateway_classes) or DEFAULT_GATEWAY_CLASSES,
            namespace_labels=by_namespace,
            root_namespace=root_namespace,
            credentials_dir=credentials_dir,
        )

    def arguments(self) -> list[str]:
        """
        The command line that parses back to these options (the repeatable
        options each value once; the others only when not the default).
        """
        args: list[str] = []
        for key, value in self.gateway_labels.items():
            args += ["--gateway-label", f"{key}={value}"]
        if self.default_namespace != DEFAULT_NAMESPACE:
            args += ["--namespace", self.default_namespace]
        if self.gateway_namespace is not None:
            args += ["--gateway-namespace", self.gateway_namespace]
        for name in self.gateway_classes:
            args += ["--gateway-class", name]
        for ns, labels in self.namespace_labels.items():
            for key, value in labels.items():
                args += ["--namespace-label", f"{ns}:{key}={value}"]
        if self.root_namespace != DEFAULT_ROOT_NAMESPACE:
            args += ["--root-namespace", self.root_namespace]
        if self.credentials_dir is not None:
            args += ["--credentials", self.credentials_dir]
        return args
