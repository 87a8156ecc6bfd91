"""What the rule evaluator hands to delivery: one alert as Alertmanager sees it."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Notification:
    """One alert to send. Times are Unix seconds.

    Firing: `ends_at` lies in the future (Prometheus sends now + 4 x max(resend
    delay, group interval), so Alertmanager resolves it on its own if we stop
    sending). Resolved: `ends_at` is the time it resolved, at or before now.
    """

    labels: dict[str, str]
    annotations: dict[str, str]
    starts_at: float
    ends_at: float
    generator_url: str = ""

    def firing(self, now: float) -> bool:
        return self.ends_at > now
