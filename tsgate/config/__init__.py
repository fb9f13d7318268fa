"""
Istio YAML in, route table out: ``load_config`` is the one entry point.

Stages (one module each): ``loader`` (files, documents, line positions),
``parse`` + ``schema`` (kinds, unknown fields, the typed ``model``),
``validate`` (Istio's per-resource rules), ``compiler`` (gateway selection,
binding, same-port merge, clusters), ``dump`` (the table as JSON-ready data);
``options`` is the gateway they compile for (``GatewayOptions``, from the
command line of ``twistd tsgate`` or ``tsgate``).
Bad configuration never raises: every problem is a ``Diagnostic`` and the
result says whether it is usable (``ok``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Optional

import attrs

from tsgate.config.authz import validate_policies
from tsgate.config.compiler import compile_table
from tsgate.config.diagnostics import ERROR, INFO, WARNING, Diagnostic
from tsgate.config.dump import table_to_dict
from tsgate.config.gatewayapi import ApiStatus, translate
from tsgate.config.loader import load_documents
from tsgate.config.model import Resource, resource_to_dict
from tsgate.config.options import DEFAULT_GATEWAY_LABELS, GatewayOptions
from tsgate.config.parse import merge_duplicates, parse_documents
from tsgate.config.validate import validate
from tsgate.routing import RouteTable

#: Kubernetes Gateway API versions whose Gateways a VirtualService may name
KUBERNETES_GATEWAY_VERSIONS = tuple(f"gateway.networking.k8s.io/{v}"
                                    for v in ("v1", "v1beta1", "v1alpha2"))


@attrs.frozen
class ConfigResult:
    """What one load produced: the table (empty if there are errors) and why."""

    table: RouteTable
    diagnostics: tuple[Diagnostic, ...]
    resources: tuple[Resource, ...]
    files: tuple[str, ...]
    #: the status of the Kubernetes Gateway API objects, as a controller would set it
    gateway_api: ApiStatus = ApiStatus()

    @property
    def errors(self) -> tuple[Diagnostic, ...]:
        return tuple(d for d in self.diagnostics if d.severity == ERROR)

    @property
    def warnings(self) -> tuple[Diagnostic, ...]:
        return tuple(d for d in self.diagnostics if d.severity == WARNING)

    @property
    def notices(self) -> tuple[Diagnostic, ...]:
        return tuple(d for d in self.diagnostics if d.severity == INFO)

    @property
    def ok(self) -> bool:
        return not self.errors

    def resources_to_dicts(self) -> list[dict[str, Any]]:
        return [resource_to_dict(r) for r in self.resources]

    def to_dict(self) -> dict[str, Any]:
        """Files, diagnostics, resources and table, JSON-ready."""
        return {
            "ok": self.ok,
            "files": list(self.files),
            "diagnostics": [d.to_dict() for d in self.diagnostics],
            "resources": self.resources_to_dicts(),
            "table": table_to_dict(self.table),
            "gateway_api": self.gateway_api.to_dict(),
        }


def _in_file_order(diags: list[Diagnostic], files: Sequence[str]) -> tuple[Diagnostic, ...]:
    rank = {f: i for i, f in enumerate(files)}
    keyed = sorted(enumerate(diags),
                   key=lambda t: (rank.get(t[1].file, -1), t[1].line, t[0]))
    return tuple(d for _, d in keyed)


def load_config(
    paths: Sequence[str],
    options: Optional[GatewayOptions] = None,
    *,
    tls_files_fatal: bool = True,
) -> ConfigResult:
    """
    Load, validate and compile the Istio YAML at ``paths`` (files or
    directories) for the gateway ``options`` describe (labels, namespaces,
    Gateway API classes, credentials: :class:`GatewayOptions`; None: every
    option's default). Never raises for bad configuration.

    With ``tls_files_fatal`` (the gateway) a certificate that cannot be read
    is an error; without it (``tsgate validate``, which gives Istio's
    verdict) a warning, and that server is not served.
    """
    if options is None:
        options = GatewayOptions()
    if isinstance(paths, str):
        paths = [paths]
    loaded = load_documents(paths)
    diags = list(loaded.diagnostics)
    parsed, found = parse_documents(loaded.documents, options.default_namespace)
    diags.extend(found)
    resources, found = merge_duplicates(parsed)
    diags.extend(found)
    diags.extend(validate(resources))
    others = [d.data for d in loaded.documents if isinstance(d.data, dict)
              and d.data.get("kind") in ("Pod", "Gateway")
              and d.data.get("apiVersion") in ("v1", *KUBERNETES_GATEWAY_VERSIONS)]
    api = translate(resources, loaded.documents, options.gateway_classes,
                    options.namespace_labels, options.default_namespace)
    diags.extend(api.diags)
    table, found = compile_table(resources + api.synthetic, options.gateway_labels,
                                 options.gateway_namespace, options.credentials_dir, others,
                                 tls_files_fatal)
    table, found = api.finish(table, found)
    diags.extend(found)
    diags.extend(validate_policies(resources))  # AuthorizationPolicy (tsgate.authz)
    if not any(d.severity == ERROR for d in diags):
        from tsgate.authz.compile import attach as attach_authz  # imports tsgate.config
        table, found = attach_authz(table, resources, gateway_labels=options.gateway_labels,
                                    gateway_namespace=options.gateway_namespace,
                                    root_namespace=options.root_namespace)
        diags.extend(found)
    ordered = _in_file_order(diags, loaded.files)
    if any(d.severity == ERROR for d in ordered):
        table = RouteTable()
    return ConfigResult(table, ordered, tuple(resources), loaded.files, api.status(table))


__all__ = [
    "ConfigResult", "DEFAULT_GATEWAY_LABELS", "Diagnostic", "GatewayOptions", "load_config",
    "table_to_dict", "ERROR", "WARNING", "INFO",
]
