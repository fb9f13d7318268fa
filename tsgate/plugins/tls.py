"""
The built-in ``tls`` hint parser: the ClientHello parser of
:mod:`tsgate.hints.tls` (SNI, ALPN, versions, JA3/JA4), always used on TLS
passthrough listeners. A PostgreSQL 17 client connecting with
``sslnegotiation=direct`` (ALPN ``postgresql``) starts with a plain
ClientHello, so this parser, not the ``postgres`` one, routes it.
"""

from __future__ import annotations

from tsgate.hints.tls import TlsHintParser
from tsgate.plugins import declare

tls = declare(TlsHintParser())
