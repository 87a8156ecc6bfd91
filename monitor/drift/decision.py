"""Which method decides drift for a feature, with which threshold and alpha.

Settings are layered, the most specific winning for each key:

    drift.decision.<type>  <  drift.features.<feature>
                           <  drift.domains.<domain>  <  drift.domains.<domain>.features.<feature>

A method set for a whole domain applies to the feature types it fits (a
domain-wide `test: ks` leaves categorical features with their chi2). The
threshold is the effect method's: from the most specific layer that sets
`threshold`, else `drift.thresholds.<method>`, else the method's registered
default. `min_samples` of the embedding feature defaults to
`drift.embeddings.min_texts` (it counts sampled texts, not records).

>>> from monitor.config import DriftConfig
>>> cfg = DriftConfig(features={"prompt_tokens": {"threshold": 0.2}},
...                   domains={"legal": {"alpha": 0.01}})
>>> rule_for(cfg, "legal", "prompt_tokens", "numeric")
Rule(effect='psi', test='ks', threshold=0.2, alpha=0.01, min_samples=500)
>>> rule_for(cfg, "support", "finish_reason", "categorical")
Rule(effect='psi', test='chi2', threshold=0.1, alpha=0.05, min_samples=500)
"""

from __future__ import annotations

from typing import NamedTuple

from monitor.drift.methods import EMBEDDING, METHODS

# Used when drift.decision has no entry for a feature type.
BUILT_IN = {"numeric": ("psi", "ks"), "categorical": ("psi", "chi2"), "embedding": ("mmd", "mmd")}


class Rule(NamedTuple):
    effect: str
    test: str | None
    threshold: float
    alpha: float
    min_samples: int


def rule_for(cfg, domain: str, feature: str, feature_type: str) -> Rule:
    """The decision rule of one domain's feature under the config `cfg` (a DriftConfig)."""
    domain_rule = cfg.domains.get(domain)
    layers = [cfg.decision.get(feature_type), cfg.features.get(feature), domain_rule,
              domain_rule.features.get(feature) if domain_rule is not None else None]
    layers = [layer for layer in layers if layer is not None]

    def pick(key, default, fits=lambda value: True):
        value = default
        for layer in layers:
            if getattr(layer, key) is not None and fits(getattr(layer, key)):
                value = getattr(layer, key)
        return value

    def applies(name):
        # A domain-wide method applies to the feature types it fits only.
        return feature_type in METHODS[name].feature_types

    effect_default, test_default = BUILT_IN[feature_type]
    effect = pick("effect", effect_default, applies)
    test = pick("test", test_default, lambda name: applies(name) and METHODS[name].has_pvalue)
    threshold = None
    for layer in layers:
        # A layer's threshold goes with its effect method, where it sets one.
        if layer.threshold is not None and (layer.effect is None or applies(layer.effect)):
            threshold = layer.threshold
    if threshold is None:
        threshold = cfg.thresholds.get(effect, METHODS[effect].default_threshold)
    min_default = cfg.embeddings.min_texts if feature_type == EMBEDDING else cfg.min_samples
    return Rule(effect, test, threshold, pick("alpha", cfg.alpha), pick("min_samples", min_default))
