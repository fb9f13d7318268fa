"""Tests of the sans-IO hint parsers (tsgate.hints)."""
