"""Prometheus alerting and recording rules, evaluated in the daemon (DESIGN.md §5)."""
