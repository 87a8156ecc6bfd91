"""One golden-set evaluation of a domain's version, from the registry to a verdict.

`evaluate_version` validates the candidate before anything is loaded (a refused
adapter is reported and never loaded), scores it and its baselines (the active
version when the candidate is another one, and the base model) on the domain's
golden set with the same `Evaluator`, compares them item by item
(`monitor.eval.compare`) and returns the run, ready for
`StateStore.save_eval_run`. Importing this module does not import torch.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field
from typing import Callable

from monitor.config import EvalConfig
from monitor.eval.compare import compare_exact_match, compare_nll, result_doc, verdict
from monitor.eval.golden import load_golden
from monitor.registry import Registry
from monitor.registry.validate import AdapterRefused, validate_version


@dataclass
class EvalRun:
    id: str
    domain: str
    version: str
    started_at: float
    finished_at: float
    status: str                      # done | failed
    verdict: str | None
    doc: dict
    items: dict[str, list] = field(default_factory=dict)  # model -> ItemScores

    def row(self) -> dict:
        return {"id": self.id, "domain": self.domain, "version": self.version,
                "started_at": self.started_at, "finished_at": self.finished_at,
                "status": self.status, "verdict": self.verdict, "doc": self.doc}


def _score(evaluator, registry: Registry, domain: str, version: str, items):
    dom = registry.domains[domain]
    path = dom.versions[version].path
    if dom.kind == "full":
        return evaluator.score_full(path, items)
    return evaluator.score_adapter(path, items, name=version)


def evaluate_version(registry: Registry, domain: str, version: str | None = None, *,
                     config: EvalConfig | None = None, evaluator=None,
                     progress: Callable[[str, int, int], None] | None = None,
                     clock: Callable[[], float] = time.time) -> EvalRun:
    """Evaluate `version` (default: the active one) of `domain`. A refused adapter
    or a golden-set error gives a `failed` run whose doc says why."""
    config = config or EvalConfig()
    if domain not in registry.domains:
        raise KeyError(f"no domain {domain!r} in {registry.path} "
                       f"(domains: {', '.join(sorted(registry.domains)) or 'none'})")
    dom = registry.domains[domain]
    version = version or dom.active
    if version is None:
        raise KeyError(f"domain {domain!r} has no active version: name one with --version")
    if version not in dom.versions:
        raise KeyError(f"domain {domain!r} has no version {version!r} "
                       f"(versions: {', '.join(sorted(dom.versions))})")
    run = EvalRun(uuid.uuid4().hex, domain, version, clock(), 0.0, "failed", None, {})
    baselines = [v for v in (dom.active,) if v is not None and v != version]
    try:
        for name in [version, *baselines]:
            validate_version(registry, domain, name)
        items = load_golden(dom.golden_set)
    except (AdapterRefused, ValueError) as exc:
        run.finished_at = clock()
        run.doc = {"domain": domain, "version": version, "error": str(exc),
                   "reason": getattr(exc, "reason", "golden_set")}
        return run
    if evaluator is None:
        from monitor.eval.engine import Evaluator

        evaluator = Evaluator(registry.base_models[dom.base_model].path, device=config.device,
                              max_batch_tokens=config.max_batch_tokens, threads=config.threads)
    models = [("candidate", version)] + [(b, b) for b in baselines]
    if config.compare_with_base:
        models.append(("base", None))
    scores = {}
    for step, (label, name) in enumerate(models):
        if progress is not None:
            progress(label if name is None or label == name else f"{label} {name}", step,
                     len(models))
        scores[label] = (evaluator.score_base(items) if name is None
                         else _score(evaluator, registry, domain, name, items))
    import numpy as np

    def column(label, metric):
        return np.array([getattr(s, metric) for s in scores[label]], dtype=float)

    comparisons = []
    for label, _ in models[1:]:
        comparisons.append(compare_nll(column("candidate", "nll"), column(label, "nll"), label,
                                       margin=config.nll_margin, confidence=config.confidence,
                                       resamples=config.bootstrap_resamples))
        comparisons.append(compare_exact_match(column("candidate", "exact_match"),
                                               column(label, "exact_match"), label,
                                               margin=config.exact_match_margin,
                                               confidence=config.confidence))
    candidate_scores = {"nll": float(column("candidate", "nll").mean()),
                        "exact_match": float(column("candidate", "exact_match").mean())}
    run.doc = result_doc(domain, version, candidate_scores, len(items), comparisons)
    run.doc["baseline_scores"] = {
        label: {"nll": float(column(label, "nll").mean()),
                "exact_match": float(column(label, "exact_match").mean())}
        for label, _ in models[1:]}
    run.verdict = verdict(comparisons)
    run.status = "done"
    run.items = scores
    run.finished_at = clock()
    run.doc["duration_seconds"] = run.finished_at - run.started_at
    if progress is not None:
        progress("done", len(models), len(models))
    return run
