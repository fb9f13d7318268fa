"""ListenerRuntime: knobs settled on the compiled Listener, observers and stages chosen once."""

from __future__ import annotations

from typing import Any

from twisted.internet.testing import MemoryReactorClock

from tests.support.proxy import route
from tsgate.config import knobs
from tsgate.proxy.context import ProxyContext, Settings
from tsgate.proxy.stages import Stages, connect_tcp
from tsgate.routing import Listener, trace_token

BASE = Listener(bind="0.0.0.0", port=1, tcp_route=route(), servers=(("REDIS", "redis-x"),))


def ctx(**kwargs: Any) -> ProxyContext:
    return ProxyContext(reactor=MemoryReactorClock(), settings=Settings(inspect_timeout=15),
                        **kwargs)


def test_knobs_are_settled_by_the_compiler_step() -> None:
    listener = knobs.apply(Listener(bind="0.0.0.0", port=1, annotations=(
        ("tsgate.io/inspect-timeout", "250ms"), ("tsgate.io/observers", "none"))))
    assert listener.inspect_timeout == 0.25
    assert listener.observer_names == ()
    plain = Listener(bind="0.0.0.0", port=1)
    assert knobs.apply(plain) is plain
    assert (plain.inspect_timeout, plain.observer_names) == (None, None)


def test_runtime_reads_fields_not_annotations() -> None:
    # an annotation the compiler did not settle is not re-parsed by the data path
    raw = Listener(bind="0.0.0.0", port=1, annotations=(("tsgate.io/inspect-timeout", "1s"),))
    assert ctx().runtime(raw).inspect_timeout == 15
    settled = Listener(bind="0.0.0.0", port=1, inspect_timeout=1.0)
    assert ctx().runtime(settled).inspect_timeout == 1.0


def test_observers_by_name_or_by_istio_selection() -> None:
    a, b = object(), object()
    c = ctx(observers_by_name={"a": a}, observers_for=lambda servers: [b])
    assert c.runtime(BASE).observers == (b,)
    named = Listener(bind="0.0.0.0", port=1, servers=BASE.servers, observer_names=("a", "zz"))
    assert c.runtime(named).observers == (a,)
    assert "unknown observer plugin 'zz'" in c.recent_errors[-1][1]
    none = Listener(bind="0.0.0.0", port=1, servers=BASE.servers, observer_names=())
    assert c.runtime(none).observers == ()


def test_stage_providers_are_merged_in_order() -> None:
    s1, s2 = object(), object()
    def connect(*args: Any) -> None:
        return None
    c = ctx(stage_providers=[lambda listener: Stages(listener=(s1,)),  # type: ignore[arg-type]
                             lambda listener: Stages(listener=(s2,), connect=connect)])  # type: ignore[arg-type]
    runtime = c.runtime(BASE)
    assert runtime.listener_stages == (s1, s2)
    assert runtime.connect is connect
    assert runtime.reads_first  # a listener stage makes a TCP listener read first
    assert ctx().runtime(BASE).connect is connect_tcp
    assert not ctx().runtime(BASE).reads_first


def test_trace_token_lives_in_routing() -> None:
    from tsgate.explain import short_trace
    from tsgate.routing import Decision

    decision = Decision(route("a b"), "sni:x.test", "why")
    assert trace_token(decision) == short_trace(decision) == "tls:x.test->a_b"
