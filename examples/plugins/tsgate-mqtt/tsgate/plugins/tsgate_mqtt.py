"""
A third-party tsgate plugin: an MQTT CONNECT hint parser (client id and
protocol version), shipped by its own distribution, ``tsgate-mqtt``.

This file is the whole plugin. It lives at ``tsgate/plugins/tsgate_mqtt.py``
in the distribution, with no ``tsgate/__init__.py`` or
``tsgate/plugins/__init__.py`` beside it, so installing it adds one module
to tsgate's plugin namespace without shadowing tsgate itself. The module
name carries the distribution's name so it cannot collide with a built-in
(``tsgate/plugins/mqtt.py`` might exist one day).

MQTT (3.1, 3.1.1 and 5) clients speak first: a CONNECT packet, ``0x10``,
a variable-length "remaining length", the protocol name (``MQTT`` or
``MQIsdp``), level, flags, keep-alive, (MQTT 5: properties), then the
client identifier. The parser reads only as far as the client id; the
user name and password that may follow are never read.
"""

from __future__ import annotations

from twisted.plugin import IPlugin
from zope.interface import implementer

from tsgate.interfaces import NEED_MORE, Hint, HintParseError, HintTooLarge, IHintParser, NotMine

_CONNECT = 0x10
_VERSIONS = {3: "3.1", 4: "3.1.1", 5: "5"}


def _varint(data: bytes, pos: int):
    """MQTT's variable byte integer at ``pos``: (value, next position) or None for more."""
    value = 0
    for i in range(4):
        if pos + i >= len(data):
            return None
        byte = data[pos + i]
        value |= (byte & 0x7F) << (7 * i)
        if not byte & 0x80:
            return value, pos + i + 1
    raise HintParseError("MQTT variable byte integer longer than 4 bytes")


@implementer(IPlugin, IHintParser)
class MqttConnectHintParser:
    """The ``mqtt`` hint parser: ``client_id`` and ``mqtt_version`` from CONNECT."""

    name = "mqtt"
    protocol = "mqtt"
    max_bytes = 4096

    def parse(self, data: bytes):
        if not data:
            return NEED_MORE
        if data[0] != _CONNECT:
            return NotMine("not an MQTT CONNECT")
        if len(data) < 2:
            return NEED_MORE
        # The protocol name's length (2 bytes: 4 or 6) follows the remaining length;
        # check what has arrived of the header before deciding it is MQTT.
        length = _varint(data, 1)
        if length is None:
            return NEED_MORE
        remaining, pos = length
        header = data[pos : pos + 8]
        for expected in (b"\x00\x04MQTT", b"\x00\x06MQIsdp"):
            if expected.startswith(header[: len(expected)]):
                break
        else:
            return NotMine("CONNECT without the MQTT protocol name")
        end = pos + remaining
        if end > self.max_bytes:
            raise HintTooLarge(f"MQTT CONNECT of {remaining} bytes is larger than we read")
        if len(data) < end:
            return NEED_MORE
        body = bytes(data[pos:end])
        name_len = int.from_bytes(body[0:2], "big")
        level_at = 2 + name_len
        if len(body) < level_at + 4:
            raise HintParseError("MQTT CONNECT variable header truncated")
        level = body[level_at]
        if level not in _VERSIONS:
            raise HintParseError(f"MQTT protocol level {level}")
        at = level_at + 4  # level, connect flags, keep alive (2)
        if level == 5:
            props = _varint(body, at)
            if props is None:
                raise HintParseError("MQTT 5 CONNECT properties truncated")
            at = props[1] + props[0]
        if len(body) < at + 2:
            raise HintParseError("MQTT CONNECT without a client identifier")
        id_len = int.from_bytes(body[at : at + 2], "big")
        raw_id = body[at + 2 : at + 2 + id_len]
        if len(raw_id) != id_len:
            raise HintParseError("MQTT client identifier truncated")
        try:
            client_id = raw_id.decode("utf-8")
        except UnicodeDecodeError:
            raise HintParseError("MQTT client identifier is not UTF-8") from None
        return Hint(
            protocol="mqtt",
            attributes={"client_id": client_id[:128], "mqtt_version": _VERSIONS[level]},
            length=end,
        )


mqtt_connect = MqttConnectHintParser()
