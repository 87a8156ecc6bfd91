"""Per-domain event-time windows built from mergeable tumbling buckets."""

from monitor.windows.bucket import Bucket
from monitor.windows.window import DomainWindow, WindowSet, WindowSummary

__all__ = ["Bucket", "DomainWindow", "WindowSet", "WindowSummary"]
