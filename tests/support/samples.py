"""Real protocol bytes made on the fly by real libraries (not hand-typed)."""

from __future__ import annotations

import ssl
from collections.abc import Sequence
from typing import Optional


def client_hello(server_hostname: Optional[str], alpn: Sequence[str] = ()) -> bytes:
    """
    The ClientHello that Python's ssl module (OpenSSL) sends for this SNI,
    taken from a memory BIO before any server answers.
    """
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    if alpn:
        context.set_alpn_protocols(list(alpn))
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = context.wrap_bio(incoming, outgoing, server_hostname=server_hostname)
    try:
        tls.do_handshake()
    except ssl.SSLWantReadError:
        pass
    return outgoing.read()
