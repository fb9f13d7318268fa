"""
tsgate's extension points.

A new L4 protocol is a plugin: a module in the ``tsgate.plugins`` package
namespace (a third-party distribution ships ``tsgate/plugins/<name>.py``)
that defines module-level *instances* providing ``twisted.plugin.IPlugin`` and
one of the interfaces below. ``tsgate.plugins.load_plugins`` finds them with
``twisted.plugin.getPlugins``.

The contracts are written for implementers; the data path
(``tsgate.proxy``) is their only caller and guards every call, so a plugin
that breaks its contract costs the connection it was looking at (or only its
own counters, for observers) and never the gateway.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Callable, Union

import attrs
from zope.interface import Attribute, Interface


class HintParseError(Exception):
    """
    The one error a hint parser or preamble negotiator may raise: the bytes
    claim to be this protocol but are malformed (a TLS record header followed
    by a nonsense handshake, say). Anything else raised is a bug in the
    plugin; the data path treats it the same way and logs it louder.
    """


class HintTooLarge(HintParseError):  # noqa: N818 (a published plugin API name)
    """
    The message would not fit in the parser's ``max_bytes``: a HintParseError
    the data path treats as too large, not malformed (see ``IHintParser``):
    it counts ``<name>.too_large`` (the TLS parser's is Envoy's
    ``tls_inspector.client_hello_too_large``) and closes the connection.
    """


class DecodeError(ValueError):
    """
    The base of every stream observer's decode error: the bytes broke the
    protocol's framing, so the observer counts ``decode_error`` once and goes
    quiet. Each protocol's module in ``tsgate.hints`` has exactly one subclass
    (``KafkaDecodeError``, ``RedisDecodeError`` ...) and raises only that;
    the observers catch it, never let it out (``IStreamObserver``).
    """


@attrs.frozen
class NeedMore:
    """Not enough bytes yet to decide; call again with more."""


@attrs.frozen
class NotMine:
    """These bytes are not this protocol."""

    reason: str = ""


@attrs.frozen
class Hint:
    """
    What a hint parser learned from the first client bytes.

    ``protocol`` is a lower-case protocol name (``tls``, ``postgres``);
    ``attributes`` are short strings for routing, logs and ``explain``:
    well-known keys are ``sni``, ``alpn`` (comma-separated), ``versions``,
    ``database``, ``user``, ``client_id``, ``app_name``, ``ja3``, ``ja4``.
    ``length`` is how many bytes of the input the hinted message occupies
    (the ClientHello's records, the StartupMessage): the data path never
    consumes them, it only needs to know where the message ends.
    """

    protocol: str
    attributes: Mapping[str, str] = attrs.field(factory=dict)
    length: int = 0

    @property
    def sni(self) -> Union[str, None]:
        return self.attributes.get("sni")


NEED_MORE = NeedMore()

#: What ``IHintParser.parse`` and ``IPreambleNegotiator.parse`` return.
ParseResult = Union[NeedMore, NotMine, Hint]


class IHintParser(Interface):
    """
    A sans-IO parser that looks at the first bytes a client sends and says
    which protocol it speaks and what it asks for, without consuming them.

    Contract:

    - ``parse(data)`` is called with *all* bytes received from the client so
      far (from the first byte of the connection), again after every read,
      until it returns something other than ``NEED_MORE``. It keeps no state
      between calls, does no I/O, and imports nothing from Twisted.
    - It returns ``NEED_MORE`` only while ``len(data) < max_bytes``; the data
      path never gives it more than ``max_bytes`` bytes. A parser undecided
      at ``max_bytes``, or raising :class:`HintTooLarge`, is too large: unless
      another parser recognises the bytes or still needs more, the data path
      closes the connection (as Envoy's tls_inspector does for a ClientHello
      over its cap) and counts ``<name>.too_large`` per listener (the TLS
      parser's: ``tls_inspector.client_hello_too_large``).
    - It returns ``NotMine`` as soon as the bytes cannot be this protocol
      (usually from the first one to eight bytes) so other parsers can try.
    - It raises only :class:`HintParseError`.
    - Any split of the same bytes gives the same result (it is a function of
      the bytes, not of how they arrived).
    """

    name = Attribute("Unique plugin name, e.g. 'tls'. Duplicates are refused.")
    protocol = Attribute("Protocol name this parser recognises, e.g. 'tls'.")
    max_bytes = Attribute("The most bytes parse() needs to decide (a cap).")

    def parse(data: bytes) -> ParseResult:
        """Decide from the first client bytes: NEED_MORE, NotMine or a Hint."""


@attrs.frozen
class Preamble:
    """
    A recognised in-protocol TLS upgrade request (STARTTLS).

    - ``length``: bytes of client input the preamble occupies; the data path
      consumes them (they are not replayed) and answers ``client_reply``;
      the client then sends its ClientHello, which is inspected and routed by
      SNI as on any TLS passthrough listener;
    - ``upstream_request``: sent to the chosen upstream right after connecting;
    - ``upstream_reply``: the exact bytes the upstream must answer before the
      buffered ClientHello is replayed; anything else closes the client
      (counted ``<name>.upstream_refused``, logged);
    - ``attributes``: for the access log (``protocol`` is added).
    """

    protocol: str
    length: int
    client_reply: bytes
    upstream_request: bytes
    upstream_reply: bytes
    attributes: Mapping[str, str] = attrs.field(factory=dict)


class IPreambleNegotiator(Interface):
    """
    A protocol that negotiates TLS inside itself before the ClientHello
    (PostgreSQL's SSLRequest, for instance). Used only on listeners that
    inspect the ClientHello (TLS passthrough), and only when the first bytes
    are not a ClientHello.

    ``parse(data)`` follows the hint-parser contract (stateless, sans-IO,
    raises only HintParseError, ``max_bytes`` as there) but returns a
    :class:`Preamble` instead of a Hint when the bytes are its preamble.
    """

    name = Attribute("Unique plugin name, e.g. 'postgres-starttls'.")
    protocol = Attribute("Protocol name, e.g. 'postgres'.")
    max_bytes = Attribute("The most bytes parse() needs to decide.")

    def parse(data: bytes) -> Union[NeedMore, NotMine, Preamble]:
        """Recognise the client's STARTTLS preamble."""


#: ``emit(counter_suffix, amount)``: the observer's way to count things.
#: The data path prefixes the suffix with ``<protocol>.`` and labels it with
#: the listener, so ``emit("command.get", 1)`` becomes ``redis.command.get``.
Emit = Callable[[str, int], None]


class IStreamObserver(Interface):
    """
    One connection's passive decoder. It sees copies of the bytes each way,
    in order, never changes or delays them, and reports through ``emit``.

    Contract: memory bounded whatever the peers send (it may buffer at most
    one frame header plus a bounded frame prefix); on a decode error it emits
    ``decode_error`` once and ignores everything after (the relay carries on
    untouched); it raises nothing (the data path drops an observer that does
    and counts ``<protocol>.observer_crashed``).
    """

    def client_data(data: bytes) -> None:
        """Bytes the client sent toward the upstream."""

    def server_data(data: bytes) -> None:
        """Bytes the upstream sent toward the client."""

    def attributes() -> Mapping[str, str]:
        """What it learned that belongs in the access log (user, database, ...)."""


class IStreamObserverFactory(Interface):
    """
    The plugin for a stream observer. Chosen by a Gateway server's
    ``port.protocol`` (Istio names, upper case: ``MONGO``, ``REDIS``) or by
    Istio's port-name prefix convention (``mongo-``, ``kafka-``).
    """

    name = Attribute("Unique plugin name, e.g. 'redis'.")
    protocol = Attribute("Lower-case protocol name, prefix of its counters.")
    istio_protocols = Attribute("Istio port.protocol values it serves, e.g. ('REDIS',).")
    port_name_prefixes = Attribute("Port-name prefixes it serves, e.g. ('redis',).")

    def new_observer(emit: Emit) -> IStreamObserver:
        """A fresh observer for one connection."""


#: ``observe(histogram_suffix, value)``: one sample for a histogram (a
#: latency in seconds), prefixed and labelled like ``Emit``, so
#: ``observe("response.fetch.duration", 0.004)`` feeds ``kafka.response.fetch.duration``.
Observe = Callable[[str, float], None]


class ITimedStreamObserverFactory(IStreamObserverFactory):
    """
    An observer factory whose observers also time things (request to reply
    latency). Opt-in and additive: a factory providing it still provides
    ``IStreamObserverFactory`` (``getPlugins`` finds it under either), and
    the data path, when it has a histogram sink and a clock, calls
    ``new_timed_observer`` instead of ``new_observer``.
    """

    def new_timed_observer(
        emit: Emit, observe: Observe, clock: Callable[[], float]
    ) -> IStreamObserver:
        """
        A fresh observer for one connection. ``clock()`` returns seconds
        (``reactor.seconds``); it is read when bytes are handed over, so
        latency is measured from the gateway's point of view.
        """
