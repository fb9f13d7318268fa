"""
Sans-IO hint parsers: functions of a connection's first client bytes that
say which protocol it speaks and what it asks for (SNI, ALPN, database ...),
without consuming them.

Nothing here imports Twisted: the data path (``tsgate.proxy``) feeds the
bytes and acts on the answer; ``tsgate.plugins.<protocol>`` only declares
the instances as plugins. Each parser follows the ``IHintParser`` contract in
``tsgate.interfaces`` (NEED_MORE / NotMine / Hint, one error type); each
observer raises one decode error of its protocol, a subclass of
``tsgate.interfaces.DecodeError``.

- :mod:`tsgate.hints.tls`: the TLS ClientHello (SNI, ALPN, versions, JA3/JA4).
- :mod:`tsgate.hints.postgres`: PostgreSQL first messages, the SSLRequest
  STARTTLS negotiator, and a message/error observer.
- :mod:`tsgate.hints.redis`: the first RESP or inline command, and a
  command/error observer.
- :mod:`tsgate.hints.mysql`: a MySQL observer only (the server speaks first).
- :mod:`tsgate.hints.kafka`: Kafka request/response headers, the first
  request's hint, and a ``kafka_broker``-like observer.
- :mod:`tsgate.hints.mongo`: MongoDB messages and a bounded BSON reader,
  the hello hint, and a ``mongo_proxy``-like observer.
- :mod:`tsgate.hints.stream`: what passive stream observers share (a
  skipping byte queue, quiet-after-decode-error, per-read counting).
"""
