"""tsgate.config.options: the gateway options record and the parsers of its text forms."""

from __future__ import annotations

import argparse

import attrs
import pytest
from twisted.python import usage

from tsgate.cli import add_gateway_arguments, gateway_options_from
from tsgate.config.options import (
    DEFAULT_GATEWAY_CLASSES,
    DEFAULT_GATEWAY_LABELS,
    OPTION_NAMES,
    GatewayOptions,
    OptionError,
    parse_gateway_class,
    parse_label,
    parse_namespace_label,
)
from tsgate.tap import Options


@pytest.mark.parametrize("text, expected", [
    ("app=edge", ("app", "edge")),
    ("tier=", ("tier", "")),
    ("a=b=c", ("a", "b=c")),
    ("istio.io/rev=canary", ("istio.io/rev", "canary")),
])
def test_parse_label(text: str, expected: tuple[str, str]) -> None:
    assert parse_label(text) == expected


@pytest.mark.parametrize("text", ["novalue", "=x", ""])
def test_parse_label_says_what_it_wants(text: str) -> None:
    with pytest.raises(OptionError) as caught:
        parse_label(text)
    assert str(caught.value) == f"expected KEY=VALUE, got {text!r}"
    assert (caught.value.wanted, caught.value.text) == ("KEY=VALUE", text)


@pytest.mark.parametrize("text, expected", [
    ("apps:team=a", ("apps", "team", "a")),
    ("apps:env=", ("apps", "env", "")),
    ("apps:k=v:w", ("apps", "k", "v:w")),
])
def test_parse_namespace_label(text: str, expected: tuple[str, str, str]) -> None:
    assert parse_namespace_label(text) == expected


@pytest.mark.parametrize("text", ["team=x", "apps:team", ":team=x", "apps:=x", ""])
def test_parse_namespace_label_says_what_it_wants(text: str) -> None:
    with pytest.raises(OptionError, match="expected NAMESPACE:KEY=VALUE, got"):
        parse_namespace_label(text)


def test_parse_gateway_class() -> None:
    assert parse_gateway_class("istio") == "istio"
    with pytest.raises(OptionError, match="expected a GatewayClass name"):
        parse_gateway_class("")


def test_defaults() -> None:
    options = GatewayOptions()
    assert options.gateway_labels == DEFAULT_GATEWAY_LABELS == {"istio": "ingressgateway"}
    assert options.gateway_classes == DEFAULT_GATEWAY_CLASSES == ("istio",)
    assert options.default_namespace == "default"
    assert options.root_namespace == "istio-system"
    assert options.gateway_namespace is None and options.credentials_dir is None
    assert options.namespace_labels == {}
    assert GatewayOptions.from_parsed() == options
    assert options.arguments() == ["--gateway-label", "istio=ingressgateway",
                                   "--gateway-class", "istio"]


def test_the_record_is_frozen_and_owns_its_mappings() -> None:
    labels = {"app": "edge"}
    options = GatewayOptions(gateway_labels=labels)
    labels["app"] = "changed"
    assert options.gateway_labels == {"app": "edge"}
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        options.root_namespace = "x"  # type: ignore[misc]


def test_from_parsed_repeatable_options_in_order() -> None:
    options = GatewayOptions.from_parsed(
        gateway_labels=[("app", "a"), ("tier", "web"), ("app", "b")],
        gateway_classes=["one", "two"],
        namespace_labels=[("apps", "team", "x"), ("apps", "env", "y"), ("db", "team", "z")],
    )
    assert options.gateway_labels == {"app": "b", "tier": "web"}
    assert options.gateway_classes == ("one", "two")
    assert options.namespace_labels == {"apps": {"team": "x", "env": "y"}, "db": {"team": "z"}}


def _twistd(*args: str) -> GatewayOptions:
    options = Options()
    options.parseOptions(["--config", "x.yaml", *args])  # type: ignore[no-untyped-call]
    gateway: GatewayOptions = options["gateway"]
    return gateway


def _cli(*args: str) -> GatewayOptions:
    parser = argparse.ArgumentParser()
    add_gateway_arguments(parser)
    return gateway_options_from(parser.parse_args(list(args)))


EVERYTHING = ("--gateway-label", "app=edge", "--gateway-label", "tier=", "--namespace", "apps",
              "--gateway-namespace", "edge", "--gateway-class", "tsgate",
              "--namespace-label", "apps:team=a", "--root-namespace", "mesh-root",
              "--credentials", "/etc/creds")


def test_twistd_and_the_cli_build_the_same_record() -> None:
    expected = GatewayOptions(
        gateway_labels={"app": "edge", "tier": ""}, default_namespace="apps",
        gateway_namespace="edge", gateway_classes=("tsgate",),
        namespace_labels={"apps": {"team": "a"}}, root_namespace="mesh-root",
        credentials_dir="/etc/creds")
    assert _twistd(*EVERYTHING) == expected
    assert _cli(*EVERYTHING) == expected
    assert _twistd() == _cli() == GatewayOptions()


def test_arguments_parse_back_to_the_same_record() -> None:
    options = _twistd(*EVERYTHING)
    assert _twistd(*options.arguments()) == options
    assert _cli(*options.arguments()) == options
    names = {arg[2:] for arg in options.arguments() if arg.startswith("--")}
    assert names == set(OPTION_NAMES)


@pytest.mark.parametrize("args, message", [
    (("--gateway-label", "novalue"), "--gateway-label wants KEY=VALUE, not 'novalue'"),
    (("--namespace-label", "team=x"),
     "--namespace-label: expected NAMESPACE:KEY=VALUE, got 'team=x'"),
    (("--gateway-class", ""), "--gateway-class wants a GatewayClass name"),
])
def test_twistd_usage_errors(args: tuple[str, ...], message: str) -> None:
    with pytest.raises(usage.UsageError) as caught:
        _twistd(*args)
    assert str(caught.value) == message


@pytest.mark.parametrize("args, message", [
    (("--gateway-label", "novalue"),
     "argument --gateway-label: expected KEY=VALUE, got 'novalue'"),
    (("--namespace-label", "team=x"),
     "argument --namespace-label: expected NAMESPACE:KEY=VALUE, got 'team=x'"),
    (("--gateway-class", ""), "argument --gateway-class: expected a GatewayClass name, got ''"),
])
def test_cli_usage_errors(args: tuple[str, ...], message: str,
                          capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as caught:
        _cli(*args)
    assert caught.value.code == 2
    assert capsys.readouterr().err.rstrip().endswith(message)
