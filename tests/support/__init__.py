"""Reusable test helpers (samples, processes, servers)."""
