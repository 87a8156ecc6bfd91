"""Drift benchmarks (issue 3): run with `.venv/bin/python bench/drift.py`.

1. One window of 100k records x 8 features (6 numeric, 2 categorical) against
   a 100k-record reference, side by side in one run with Evidently's
   `Report([DataDriftPreset()])` on the same data (as DataFrames):
   - ours, per evaluation: the window is already sketched (as in the daemon,
     where records are sketched as they arrive), the evaluation reads the sketches;
   - ours, from records: sketching the 100k records plus the evaluation;
   ratio = Evidently's time / ours. Also whether both find the same drifted columns.
2. Memory per domain: the state a domain holds (window buckets with their
   sketches, and its reference), serialised bytes and Python heap bytes
   (tracemalloc), at traffic rates 100x apart: bounded, not growing with traffic.

Prints a markdown table and writes bench/results/drift.json.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import random
import statistics
import sys
import time
import tracemalloc
import warnings
from pathlib import Path

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from monitor.config import Config  # noqa: E402
from monitor.drift.tracker import DriftTracker  # noqa: E402
from monitor.pipeline import Pipeline  # noqa: E402
from monitor.quality import QualityJudge  # noqa: E402
from monitor.records import decode  # noqa: E402
from monitor.synthetic import Shape, scenario, shaped_record  # noqa: E402
from monitor.windows import WindowSet  # noqa: E402

NUMERIC = ["prompt_tokens", "output_tokens", "latency_seconds", "mean_logprob", "feedback_score",
           "prompt_chars"]
CATEGORICAL = ["finish_reason", "status"]
START = 1_764_000_000.0


def _records(n: int, shape: Shape, seed: int, start: float, seconds: float):
    rng = random.Random(seed)
    out = []
    for i in range(n):
        doc = shaped_record(rng, "bench", start + seconds * i / n, shape, None, i)
        record = decode(orjson.dumps(doc), 1 << 20)
        # prompt_chars (the length of input.text) without generating the texts
        record.prompt_chars = int(record.prompt_tokens * 4.1)
        out.append(record)
    return out


def _frame(records):
    import pandas as pd

    features = DriftTracker(Config().drift).features
    numeric, categorical, _ = features.columns([features.raw(r) for r in records])
    columns = {name: numeric[:, i] for i, name in enumerate(features.numeric_names)}
    columns.update({name: list(categorical[i]) for i, name in enumerate(features.categorical_names)})
    return pd.DataFrame(columns)


def bench_window(n: int, rounds: int) -> dict:
    reference_shape = Shape()
    current_shape = Shape(tokens_median=390.0, finish=(("stop", 0.8), ("length", 0.1),
                                                       ("content_filter", 0.1)))
    reference_records = _records(n, reference_shape, 1, START, 3600)
    current_records = _records(n, current_shape, 2, START + 3600, 900)

    cfg = Config(drift={"embeddings": {"enabled": False}, "reference_records": n})
    tracker = DriftTracker(cfg.drift)
    builder = tracker._builder("bench", "")
    row = tracker.features.row
    started = time.perf_counter()
    for r in reference_records:
        numeric, categorical = row(r)
        builder.add(numeric, categorical, None, r.timestamp, tracker._random())
    reference = builder.build(built_at=START, source="bench")
    build_seconds = time.perf_counter() - started
    judge = QualityJudge().flags
    end = START + 3600 + 900

    ours_eval, ours_full, evidently = [], [], []
    result = None
    import pandas as pd  # noqa: F401

    from evidently import DataDefinition, Dataset, Report
    from evidently.presets import DataDriftPreset

    definition = DataDefinition(numerical_columns=NUMERIC, categorical_columns=CATEGORICAL)
    reference_df, current_df = _frame(reference_records), _frame(current_records)
    gc.collect()
    gc.freeze()  # the benchmark's own 200k records are not the daemon's garbage to scan
    for _ in range(rounds):
        # ours: a fresh window, records already in their buckets (the quality
        # counters are not part of the comparison), then sketch + evaluate.
        windows = WindowSet(60, 900, 300, 10, lambda: end)
        placed = [(r, windows.add(r, judge(r))) for r in current_records]
        tracker = DriftTracker(cfg.drift)
        tracker.use(reference)
        observe = tracker.observe
        gc.collect()
        started = time.perf_counter()
        for record, bucket in placed:
            observe(record, bucket)
        result = tracker.evaluate(windows, end)
        ours_full.append(time.perf_counter() - started)
        started = time.perf_counter()
        result = tracker.evaluate(windows, end)
        ours_eval.append(time.perf_counter() - started)

        report = Report([DataDriftPreset()])
        gc.collect()
        started = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            snapshot = report.run(
                current_data=Dataset.from_pandas(current_df, data_definition=definition),
                reference_data=Dataset.from_pandas(reference_df, data_definition=definition))
            doc = snapshot.dict()
        evidently.append(time.perf_counter() - started)
        print(f"  round: evidently {evidently[-1]:.3f}s, ours evaluation {ours_eval[-1]*1000:.1f} ms"
              f", ours sketch+evaluation {ours_full[-1]:.3f}s", file=sys.stderr)

    from monitor.drift.report import evidently_verdicts

    theirs = {c for c, v in evidently_verdicts(doc).items() if v["drift"]}
    mine = {d.feature for d in result.decisions if d.detected}
    gc.unfreeze()
    ev, oe, of = (statistics.median(x) for x in (evidently, ours_eval, ours_full))
    # Ratios within each round (the machine's speed drifts between rounds), then the median.
    ratio_eval = statistics.median(e / o for e, o in zip(evidently, ours_eval))
    ratio_full = statistics.median(e / o for e, o in zip(evidently, ours_full))
    return {"records": n, "features": len(NUMERIC) + len(CATEGORICAL), "rounds": rounds,
            "evidently_seconds": round(ev, 4), "ours_evaluation_seconds": round(oe, 5),
            "ours_sketch_and_evaluation_seconds": round(of, 4),
            "ratio_evaluation": round(ratio_eval, 1),
            "ratio_sketch_and_evaluation": round(ratio_full, 1),
            "round_ratios_sketch_and_evaluation": [round(e / o, 1)
                                                   for e, o in zip(evidently, ours_full)],
            "reference_build_seconds": round(build_seconds, 3),
            "drifted_evidently": sorted(theirs), "drifted_ours": sorted(mine)}


def bench_memory(rates=(2, 20, 200), seconds: int = 1800) -> dict:
    """State of one domain after `seconds` of traffic at each rate (records/s)."""
    out = {}
    for rate in rates:
        cfg = Config(drift={"embeddings": {"enabled": False}, "reference_records": 2000})
        gc.collect()
        tracemalloc.start()
        base = tracemalloc.get_traced_memory()[0]
        pipeline = Pipeline(cfg, clock=lambda: 0.0, reject_future=False)
        for raw in scenario({"d": Shape()}, START, seconds, rate=rate, seed=rate):
            pipeline.process(raw)
        for bucket in pipeline.windows.buckets("d"):
            if bucket.drift is not None:
                bucket.drift.fold()
        gc.collect()
        heap = tracemalloc.get_traced_memory()[0] - base
        tracemalloc.stop()
        buckets = sum(len(b.to_bytes()) for b in pipeline.windows.buckets("d"))
        reference = len(pipeline.drift.references["d"].to_bytes())
        out[str(rate)] = {"records": rate * seconds,
                          "window_records": pipeline.windows.summary("d").samples,
                          "serialised_window_bytes": buckets, "serialised_reference_bytes": reference,
                          "heap_bytes": heap}
        print(f"  {rate}/s: {out[str(rate)]}", file=sys.stderr)
    low, high = out[str(rates[0])], out[str(rates[-1])]
    out["window_bytes_ratio_high_vs_low_traffic"] = round(
        high["serialised_window_bytes"] / low["serialised_window_bytes"], 2)
    out["heap_ratio_high_vs_low_traffic"] = round(high["heap_bytes"] / low["heap_bytes"], 2)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--records", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--skip", action="append", default=[], choices=["window", "memory"])
    args = parser.parse_args()
    results = {"machine": {"cpus": os.cpu_count(), "python": platform.python_version()}}
    if "window" not in args.skip:
        results["window"] = bench_window(args.records, args.rounds)
        print("window:", results["window"], file=sys.stderr)
    if "memory" not in args.skip:
        results["memory_per_domain"] = bench_memory()
    out = Path(__file__).parent / "results"
    out.mkdir(exist_ok=True)
    (out / "drift.json").write_text(json.dumps(results, indent=2))
    print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
