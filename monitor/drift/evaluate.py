"""One drift evaluation: every method on every domain x feature, then the decision.

`monitor_drift_detected{domain,feature}` is 1 only when

1. the window holds at least `min_samples` values of the feature,
2. the effect method's score reaches its threshold (a huge window does not
   alarm on a shift too small to matter), and
3. the test method's p-value, adjusted by Benjamini-Hochberg across all the
   domain x feature tests of this evaluation that passed (1), is below alpha.

Scores come from the window's sketches: histogram methods read the counts over
the reference's bins (exact for the whole window), sample methods read the
window's reservoir against the reference sample, `mmd` reads embeddings of the
sampled prompt texts. A permutation p-value cannot be smaller than
1 / (permutations + 1), so the number of permutations grows with the number
of tests sharing the BH correction (capped by `embeddings.max_permutations`).
"""

from __future__ import annotations

import math
import zlib
from dataclasses import dataclass

from monitor.drift.decision import Rule, rule_for
from monitor.drift.fdr import benjamini_hochberg
from monitor.drift.methods import (CATEGORICAL, EMBEDDING, EMBEDDINGS, HISTOGRAM, NUMERIC, SAMPLE,
                                   methods_for)
from monitor.drift.reference import Reference
from monitor.windows.sketch import OTHER, Layout, WindowProfile

DRIFT = "drift"
TOO_FEW_SAMPLES = "too_few_samples"
SMALL_EFFECT = "small_effect"
NOT_SIGNIFICANT = "not_significant"


@dataclass(frozen=True)
class DomainWindow:
    """What the evaluation reads for one domain."""

    domain: str
    reference: Reference
    layout: Layout
    profile: WindowProfile


@dataclass(frozen=True)
class DriftResult:
    """One method's score (and p-value) for one domain's feature."""

    domain: str
    feature: str
    method: str
    score: float
    pvalue: float | None


@dataclass(frozen=True)
class FeatureDecision:
    domain: str
    feature: str
    detected: bool
    reason: str
    samples: int
    rule: Rule
    score: float | None
    pvalue: float | None
    adjusted_pvalue: float | None


@dataclass(frozen=True)
class DriftEvaluation:
    at: float
    results: tuple[DriftResult, ...] = ()
    decisions: tuple[FeatureDecision, ...] = ()
    tests: int = 0
    semantic: bool = False

    def detected(self) -> dict[tuple[str, str], bool]:
        return {(d.domain, d.feature): d.detected for d in self.decisions}


@dataclass
class _Feature:
    domain: str
    feature: str
    rule: Rule
    samples: int
    stats: dict
    embeddings: tuple | None = None


def evaluate(windows: list[DomainWindow], cfg, at: float, embedder=None) -> DriftEvaluation:
    """Evaluate drift for `windows` under the DriftConfig `cfg` at time `at` (seconds)."""
    features: list[_Feature] = []
    for w in windows:
        features.extend(_numeric(w, cfg))
        features.extend(_categorical(w, cfg))
        if embedder is not None:
            feature = _embedding(w, cfg, embedder)
            if feature is not None:
                features.append(feature)
    eligible = [f for f in features if f.samples >= f.rule.min_samples and f.rule.test]
    _run_mmd(features, cfg, at, len(eligible))
    tested = [f for f in eligible if f.stats.get(f.rule.test) is not None
              and f.stats[f.rule.test].pvalue is not None]
    adjusted = dict(zip((id(f) for f in tested),
                        benjamini_hochberg([f.stats[f.rule.test].pvalue for f in tested])))
    results, decisions = [], []
    for f in features:
        # A score over fewer than min_samples values is noise (right after a switch of
        # reference, say): it is not reported, and rules reading scores never see it.
        for method, stat in f.stats.items() if f.samples >= f.rule.min_samples else ():
            if stat is not None:
                results.append(DriftResult(f.domain, f.feature, method, float(stat.score),
                                           _float(stat.pvalue)))
        decisions.append(_decide(f, _float(adjusted.get(id(f)))))
    return DriftEvaluation(at, tuple(results), tuple(decisions), len(tested), embedder is not None)


def _decide(f: _Feature, adjusted: float | None) -> FeatureDecision:
    rule = f.rule
    effect = f.stats.get(rule.effect)
    score = effect.score if effect is not None else None
    test = f.stats.get(rule.test) if rule.test else None
    pvalue = test.pvalue if test is not None else None
    if f.samples < rule.min_samples:
        reason = TOO_FEW_SAMPLES
    elif score is None or not score >= rule.threshold:
        reason = SMALL_EFFECT
    elif rule.test and (adjusted is None or not adjusted < rule.alpha):
        reason = NOT_SIGNIFICANT
    else:
        reason = DRIFT
    return FeatureDecision(f.domain, f.feature, reason == DRIFT, reason, f.samples, rule,
                           _float(score), _float(pvalue), adjusted)


def _float(value) -> float | None:
    return None if value is None else float(value)


def _numeric(w: DomainWindow, cfg) -> list[_Feature]:
    out = []
    for j, (i, _edges, _mean) in enumerate(w.layout.numeric):
        name = w.layout.numeric_names[i]
        ref = w.reference.numeric[name]
        counts = w.profile.hist[j]
        samples = sum(counts)
        stats = {}
        if not samples:
            # Still decided (too_few_samples): the series stays in /metrics, at 0.
            out.append(_Feature(w.domain, name, rule_for(cfg, w.domain, name, NUMERIC), 0, stats))
            continue
        values = w.profile.values(w.layout, j)
        for method in methods_for(NUMERIC):
            if method.needs == HISTOGRAM:
                stats[method.name] = method.func(ref.counts, counts)
            elif method.needs == SAMPLE and len(values) >= 2 and len(ref.sample) >= 2:
                stats[method.name] = method.func(w.reference.sample(name), values)
        out.append(_Feature(w.domain, name, rule_for(cfg, w.domain, name, NUMERIC), samples, stats))
    return out


def _categorical(w: DomainWindow, cfg) -> list[_Feature]:
    out = []
    for j, (i, vocabulary) in enumerate(w.layout.categorical):
        name = w.layout.categorical_names[i]
        ref = w.reference.categorical[name]
        names = sorted(vocabulary) + [OTHER]
        current = [w.profile.cats[j].get(c, 0) for c in names]
        samples = sum(current)
        reference = [ref.counts.get(c, 0) for c in names]
        stats = {m.name: m.func(reference, current) for m in methods_for(CATEGORICAL)
                 if m.needs == HISTOGRAM} if samples else {}
        out.append(_Feature(w.domain, name, rule_for(cfg, w.domain, name, CATEGORICAL), samples,
                            stats))
    return out


def _embedding(w: DomainWindow, cfg, embedder) -> _Feature | None:
    texts = w.profile.texts
    if len(texts) < 2 or len(w.reference.texts) < 2:
        return None
    ready = getattr(embedder, "ready", None)
    if ready is not None:
        # The daemon's background embedder: the reference must be embedded in full;
        # the window's newest texts may still be queued and join next time.
        pair = (ready(list(w.reference.texts)), ready(list(texts), partial=True))
        if pair[0] is None or len(pair[1]) < 2:
            return None
    else:
        pair = (embedder.embed(list(w.reference.texts)), embedder.embed(list(texts)))
    rule = rule_for(cfg, w.domain, EMBEDDING, EMBEDDING)
    return _Feature(w.domain, EMBEDDING, rule, len(pair[1]), {}, pair)


def _run_mmd(features: list[_Feature], cfg, at: float, tests: int) -> None:
    """Run the embedding methods last: their permutation count depends on `tests`."""
    todo = [f for f in features if f.embeddings is not None]
    if not todo:
        return
    e = cfg.embeddings
    alpha = min(f.rule.alpha for f in todo)
    # With m tests, BH needs p <= alpha / m for a lone discovery: make that reachable.
    permutations = min(e.max_permutations, max(e.permutations, math.ceil(2 * tests / alpha)))
    for f in todo:
        seed = zlib.crc32(f"{f.domain}@{at:.3f}".encode())
        for method in methods_for(EMBEDDING):
            if method.needs == EMBEDDINGS:
                f.stats[method.name] = method.func(*f.embeddings, permutations=permutations,
                                                   seed=seed)
        f.embeddings = None


def drift_by_domain(evaluation: "DriftEvaluation | None") -> dict:
    """{domain: {feature: decision and scores}} of one evaluation, JSON-able."""
    if evaluation is None:
        return {}
    out: dict = {}
    for d in evaluation.decisions:
        out.setdefault(d.domain, {})[d.feature] = {
            "detected": d.detected, "reason": d.reason, "samples": d.samples,
            "effect": d.rule.effect, "threshold": d.rule.threshold, "test": d.rule.test,
            "alpha": d.rule.alpha, "adjusted_pvalue": d.adjusted_pvalue,
            "scores": {}, "pvalues": {}}
    for r in evaluation.results:
        feature = out[r.domain][r.feature]
        feature["scores"][r.method] = r.score
        if r.pvalue is not None:
            feature["pvalues"][r.method] = r.pvalue
    return out
