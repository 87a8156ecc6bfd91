"""`monitor report`: an Evidently data-drift report (DataDriftPreset) of a domain's
current window against its reference: the page a person opens from an alert.

The current side is the window's reservoir (a uniform sample of its records,
read from the state store); the reference side is the reference's sample of
raw numeric values and, for categorical features, values drawn in proportion
to the reference's counts. Evidently (about 1 GB with its dependencies) is
imported here only, never on the ingest path.
"""

from __future__ import annotations

import time

from monitor.config import Config
from monitor.drift.reference import Reference
from monitor.state import StateStore
from monitor.windows import Bucket, WindowSet
from monitor.windows.sketch import OTHER, window_profile


class ReportError(RuntimeError):
    """The report cannot be made (no reference, empty window, Evidently missing)."""


def window_frames(store: StateStore, config: Config, domain: str, now: float | None = None):
    """(reference DataFrame, current DataFrame, numeric columns, categorical columns, reference)."""
    import pandas as pd

    from monitor.drift.tracker import DriftTracker

    stored = store.load()
    reference = stored.references.get(domain)
    if reference is None:
        raise ReportError(f"domain {domain!r} has no reference in the state store yet")
    if domain not in stored.watermarks:
        raise ReportError(f"domain {domain!r} has no window in the state store")
    w = config.windows
    windows = WindowSet(w.bucket_seconds, w.length_seconds, w.allowed_lateness_seconds,
                        w.max_domains, lambda: time.time() if now is None else now)
    windows.restore(domain, stored.watermarks[domain],
                    {s: Bucket.from_bytes(b) for s, b in stored.buckets.get(domain, {}).items()})
    tracker = DriftTracker(config.drift)
    tracker.use(reference)
    layout = tracker.layouts[domain]
    sketches = [b.drift for b in windows.buckets(domain)
                if b.drift is not None and b.drift.reference_id == reference.id]
    profile = window_profile(sketches, layout)
    if not profile.rows:
        raise ReportError(f"domain {domain!r}: the current window holds no sampled records "
                          f"measured against reference {reference.id}")
    numeric = [layout.numeric_names[i] for i, _, _ in layout.numeric]
    categorical = [layout.categorical_names[i] for i, _ in layout.categorical]
    current = pd.DataFrame(
        {**{name: [n[i] for n, _ in profile.rows] for name, (i, _, _) in zip(numeric, layout.numeric)},
         **{name: [c[i] for _, c in profile.rows]
            for name, (i, _) in zip(categorical, layout.categorical)}})
    return _reference_frame(reference, numeric, categorical), current, numeric, categorical, reference


def _reference_frame(reference: Reference, numeric: list[str], categorical: list[str]):
    import pandas as pd

    size = max((len(reference.numeric[n].sample) for n in numeric), default=1000)
    columns = {}
    for name in numeric:
        sample = reference.numeric[name].sample
        columns[name] = pd.Series(sample + [None] * (size - len(sample)), dtype=float)
    for name in categorical:
        counts = reference.categorical[name].counts
        total = sum(counts.values())
        values = []
        for value, count in sorted(counts.items(), key=lambda kv: -kv[1]):
            values += [value if value != OTHER else "(other)"] * round(size * count / total)
        columns[name] = pd.Series((values + [None] * size)[:size], dtype=object)
    return pd.DataFrame(columns)


def write_report(store: StateStore, config: Config, domain: str, out: str,
                 now: float | None = None) -> dict:
    """Write the HTML report to `out`; return a summary {column: drift detected}."""
    try:
        from evidently import DataDefinition, Dataset, Report
        from evidently.presets import DataDriftPreset
    except ImportError as exc:
        raise ReportError(f"Evidently is not installed ({exc}); install the `report` extra: "
                          "pip install 'lora-monitor[report]'") from None
    reference_df, current_df, numeric, categorical, reference = window_frames(
        store, config, domain, now)
    definition = DataDefinition(numerical_columns=numeric, categorical_columns=categorical)
    report = Report([DataDriftPreset()], metadata={"domain": domain, "reference": reference.id})
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        snapshot = report.run(
            current_data=Dataset.from_pandas(current_df, data_definition=definition),
            reference_data=Dataset.from_pandas(reference_df, data_definition=definition))
    snapshot.save_html(out)
    return {"domain": domain, "reference": reference.id, "current_rows": len(current_df),
            "reference_rows": len(reference_df), "out": out,
            "columns": evidently_verdicts(snapshot.dict())}


def evidently_verdicts(doc: dict) -> dict:
    """{column: {method, threshold, value, drift}} from an Evidently snapshot's dict."""
    verdicts = {}
    for metric in doc.get("metrics", []):
        config = metric.get("config", {})
        if not config.get("type", "").endswith("ValueDrift"):
            continue
        value = float(metric["value"])
        method = config.get("method", "")
        threshold = float(config.get("threshold", 0.0))
        drift = value < threshold if "p_value" in method else value >= threshold
        verdicts[config["column"]] = {"method": method, "threshold": threshold, "value": value,
                                      "drift": bool(drift)}
    return verdicts
