"""What a retrain request carries about its domain, read from the pipeline when
the alert fires: the window's drift and quality statistics, its lineage (topic,
partitions, offset ranges, event-time range) and a snapshot file (JSONL) of the
domain's recent records inside the window (`actions.retrain.snapshot_records`
at most; none in dry-run mode)."""

from __future__ import annotations

from pathlib import Path

from monitor.drift.evaluate import drift_by_domain
from monitor.timestamps import rfc3339
from monitor.windows.lineage import window_lineage
from monitor.windows.recent import write_snapshot


def retrain_context(pipeline, config, topic: str, domain: str, action_id: str,
                    write: bool) -> dict:
    """{"statistics", "lineage", "snapshot"} of `domain` now."""
    snapshot = pipeline.snapshot()
    statistics: dict = {"drift": drift_by_domain(snapshot.drift).get(domain, {})}
    for d in snapshot.domains:
        if d.domain == domain:
            statistics.update({"window_samples": d.samples, "quality": d.quality,
                               "latency_seconds": {repr(q): v for q, v in d.latency.items()},
                               "records_total": d.records_total})
    if snapshot.drift is not None:
        statistics["drift_evaluated_at"] = snapshot.drift.at
    lineage = window_lineage(pipeline.windows, domain, topic)
    summary = pipeline.windows.summary(domain)
    snap = {"path": None, "records": 0}
    if write and summary is not None:
        records = pipeline.recent.records(domain, summary.start, summary.end)
        folder = Path(config.actions.retrain.snapshot_dir)
        path = (folder / f"{_safe(domain)}-{action_id}.jsonl").resolve()
        snap = {"path": str(path), "records": write_snapshot(path, records)}
        if records:
            snap["event_time"] = {"start": rfc3339(records[0][0]),
                                  "end": rfc3339(records[-1][0])}
    return {"statistics": statistics, "lineage": lineage, "snapshot": snap}


def _safe(domain: str) -> str:
    """A domain name as a file name part (domains are free text in records)."""
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in domain)[:100] or "domain"
