"""Quality signals read from the logs (DESIGN.md §3)."""

from monitor.quality.signals import SIGNALS, QualityJudge, quality_signals

__all__ = ["SIGNALS", "QualityJudge", "quality_signals"]
