"""Observability: Prometheus metrics and structured status of a node."""
