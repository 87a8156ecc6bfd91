"""Alert delivery: Alertmanager API v2 and webhooks (DESIGN.md §6)."""
