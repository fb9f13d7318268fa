"""
Built-in ``kafka`` plugins: the first-request hint parser (client_id, the
first API) and the ``kafka_broker``-like observer of :mod:`tsgate.hints.kafka`.
Istio has no KAFKA port protocol, so the observer is chosen only by the
port-name prefix ``kafka-`` (``kafka-brokers``).
"""

from __future__ import annotations

from tsgate.hints.kafka import KafkaHintParser, KafkaObserverFactory
from tsgate.plugins import declare

kafka_hint_parser = declare(KafkaHintParser())
kafka_observer_factory = declare(KafkaObserverFactory())
