"""Unit tests of the drift decision: rule_for (layered config), DriftConfig validation
through load_config, and evaluate() (min_samples, effect threshold, BH-adjusted p-value)."""

from __future__ import annotations

import dataclasses
import math
import random
import textwrap
import zlib

import numpy as np
import pytest

from monitor.config import DriftConfig, load_config
from monitor.drift import METHODS
from monitor.drift.decision import Rule, rule_for
from monitor.drift.evaluate import (
    DRIFT,
    NOT_SIGNIFICANT,
    SMALL_EFFECT,
    TOO_FEW_SAMPLES,
    DomainWindow,
    evaluate,
)
from monitor.drift.fdr import benjamini_hochberg
from monitor.drift.reference import Reference, ReferenceBuilder
from monitor.errors import ConfigError
from monitor.features import FeatureExtractor
from monitor.records import Record
from monitor.windows.sketch import DriftSketch, window_profile

FEATURES = FeatureExtractor()


# -- rule_for: layering ---------------------------------------------------------------

def test_defaults_come_from_the_built_in_decision_and_method_defaults():
    cfg = DriftConfig()
    psi, mmd = METHODS["psi"].default_threshold, METHODS["mmd"].default_threshold
    alpha, records, texts = cfg.alpha, cfg.min_samples, cfg.embeddings.min_texts

    assert (alpha, records, texts) == (0.05, 500, 50)
    assert rule_for(cfg, "legal", "prompt_tokens", "numeric") == Rule("psi", "ks", psi, alpha,
                                                                      records)
    assert rule_for(cfg, "legal", "status", "categorical") == Rule("psi", "chi2", psi, alpha,
                                                                   records)
    assert rule_for(cfg, "legal", "embedding", "embedding") == Rule("mmd", "mmd", mmd, alpha, texts)


def test_a_feature_type_missing_from_decision_falls_back_to_the_built_in_rule():
    cfg = DriftConfig(decision={"numeric": {"effect": "js"}})

    assert rule_for(cfg, "legal", "prompt_tokens", "numeric").effect == "js"
    assert rule_for(cfg, "legal", "prompt_tokens", "numeric").test == "ks"
    assert rule_for(cfg, "legal", "status", "categorical")[:2] == ("psi", "chi2")


def test_layers_win_from_decision_to_features_to_domains_to_domain_features():
    cfg = DriftConfig(
        decision={"numeric": {"effect": "js", "test": "ks", "alpha": 0.01, "min_samples": 10}},
        features={"prompt_tokens": {"alpha": 0.02, "min_samples": 20}},
        domains={"legal": {"alpha": 0.03, "features": {"prompt_tokens": {"alpha": 0.04}}},
                 "medical": {"min_samples": 40}},
    )
    js = METHODS["js"].default_threshold

    # decision only
    assert rule_for(cfg, "support", "latency_seconds", "numeric") == Rule("js", "ks", js, 0.01, 10)
    # features beats decision
    assert rule_for(cfg, "support", "prompt_tokens", "numeric") == Rule("js", "ks", js, 0.02, 20)
    # domains beats features (alpha), features still gives min_samples
    assert rule_for(cfg, "legal", "latency_seconds", "numeric") == Rule("js", "ks", js, 0.03, 10)
    assert rule_for(cfg, "medical", "prompt_tokens", "numeric") == Rule("js", "ks", js, 0.02, 40)
    # domains.features beats domains
    assert rule_for(cfg, "legal", "prompt_tokens", "numeric") == Rule("js", "ks", js, 0.04, 20)


def test_unset_keys_inherit_from_the_less_specific_layers():
    cfg = DriftConfig(features={"prompt_tokens": {"effect": "wasserstein"}},
                      domains={"legal": {"features": {"prompt_tokens": {"alpha": 0.2}}}})

    rule = rule_for(cfg, "legal", "prompt_tokens", "numeric")

    assert (rule.effect, rule.test, rule.alpha) == ("wasserstein", "ks", 0.2)


def test_threshold_of_the_most_specific_layer_wins():
    cfg = DriftConfig(thresholds={"psi": 0.3},
                      decision={"numeric": {"effect": "psi", "test": "ks", "threshold": 0.15}},
                      features={"prompt_tokens": {"threshold": 0.2}},
                      domains={"legal": {"threshold": 0.25,
                                         "features": {"prompt_tokens": {"threshold": 0.35}}}})

    assert rule_for(cfg, "legal", "prompt_tokens", "numeric").threshold == 0.35
    assert rule_for(cfg, "legal", "latency_seconds", "numeric").threshold == 0.25
    assert rule_for(cfg, "support", "prompt_tokens", "numeric").threshold == 0.2
    assert rule_for(cfg, "support", "latency_seconds", "numeric").threshold == 0.15


def test_threshold_falls_back_to_drift_thresholds_of_the_effect_method_then_its_default():
    cfg = DriftConfig(thresholds={"psi": 0.3, "js": 0.07},
                      features={"latency_seconds": {"effect": "js"},
                                "output_tokens": {"effect": "wasserstein"}})

    assert rule_for(cfg, "legal", "prompt_tokens", "numeric").threshold == 0.3
    assert rule_for(cfg, "legal", "latency_seconds", "numeric").threshold == 0.07
    assert rule_for(cfg, "legal", "output_tokens", "numeric").threshold == \
        METHODS["wasserstein"].default_threshold
    assert rule_for(cfg, "legal", "embedding", "embedding").threshold == \
        METHODS["mmd"].default_threshold


def test_embedding_min_samples_defaults_to_embeddings_min_texts():
    cfg = DriftConfig(min_samples=999, embeddings={"min_texts": 77})

    assert rule_for(cfg, "legal", "embedding", "embedding").min_samples == 77
    assert rule_for(cfg, "legal", "prompt_tokens", "numeric").min_samples == 999


def test_embedding_min_samples_can_be_set_per_feature():
    cfg = DriftConfig(embeddings={"min_texts": 77}, features={"embedding": {"min_samples": 12}},
                      domains={"legal": {"features": {"embedding": {"min_samples": 5}}}})

    assert rule_for(cfg, "support", "embedding", "embedding").min_samples == 12
    assert rule_for(cfg, "legal", "embedding", "embedding").min_samples == 5


# -- DriftConfig validation through load_config --------------------------------------------

def write(tmp_path, text: str):
    path = tmp_path / "monitor.yaml"
    path.write_text(textwrap.dedent(text).lstrip("\n"), encoding="utf-8")
    return path


def problems_of(path) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load_config(path, environ={})
    return info.value.problems


def line_of(path, needle: str, after: str | None = None) -> int:
    """1-based number of the first line containing `needle` (after the line containing `after`)."""
    lines = path.read_text().splitlines()
    start = 0 if after is None else next(i for i, l in enumerate(lines) if after in l) + 1
    return next(i for i in range(start, len(lines)) if needle in lines[i]) + 1


BAD_DRIFT = """
    drift:
      attributes: [language]
      thresholds:
        bogus: 0.3
      decision:
        numeric:
          effect: nope
      features:
        prompt_tokens:
          effect: chi2
          test: psi
        finish_reason:
          test: ks
        made_up:
          alpha: 0.1
        attributes.language:
          effect: js
          test: chi2
        embedding:
          effect: mmd
      domains:
        legal:
          test: wasserstein
          features:
            status:
              effect: wasserstein
            latency_seconds:
              test: js
"""


def test_every_drift_problem_is_listed_separately_with_its_path_and_line(tmp_path):
    path = write(tmp_path, BAD_DRIFT)

    problems = problems_of(path)

    status_line = line_of(path, "effect: wasserstein")
    expected = [
        (f"drift.thresholds.bogus (line {line_of(path, 'bogus')}): ", "unknown method"),
        (f"drift.decision.numeric.effect (line {line_of(path, 'effect: nope')}): ",
         "unknown method 'nope'"),
        (f"drift.features.prompt_tokens.effect (line {line_of(path, 'effect: chi2')}): ",
         "chi2 does not apply to numeric features"),
        (f"drift.features.prompt_tokens.test (line {line_of(path, 'test: psi')}): ",
         "psi has no p-value"),
        (f"drift.features.finish_reason.test (line {line_of(path, 'test: ks')}): ",
         "ks does not apply to categorical features"),
        (f"drift.features.made_up (line {line_of(path, 'made_up')}): ", "unknown feature"),
        (f"drift.domains.legal.test (line {line_of(path, 'test: wasserstein')}): ",
         "wasserstein has no p-value"),
        (f"drift.domains.legal.features.status.effect (line {status_line}): ",
         "wasserstein does not apply to categorical features"),
        (f"drift.domains.legal.features.latency_seconds.test (line {line_of(path, 'test: js')}): ",
         "js has no p-value"),
    ]
    for prefix, message in expected:
        matching = [p for p in problems if p.startswith(prefix)]
        assert len(matching) == 1, (prefix, problems)
        assert message in matching[0]
    assert len(problems) == len(expected), problems
    # valid entries raise nothing: attributes.language (listed), embedding, legal's own effect
    assert not any(p.startswith(("drift.features.attributes.language", "drift.features.embedding",
                                 "drift.domains.legal.effect")) for p in problems)


def test_a_wrong_test_method_of_both_kinds_is_reported_twice(tmp_path):
    # wasserstein for a categorical feature: not applicable AND without a p-value
    path = write(tmp_path, """
        drift:
          features:
            status:
              test: wasserstein
            prompt_tokens:
              effect: psi
    """)

    problems = problems_of(path)

    line = line_of(path, "test: wasserstein")
    prefix = f"drift.features.status.test (line {line}): wasserstein"
    assert sorted(problems) == sorted([f"{prefix} does not apply to categorical features",
                                       f"{prefix} has no p-value"])


def test_attributes_feature_is_accepted_only_when_listed_in_drift_attributes(tmp_path):
    listed = write(tmp_path, """
        drift:
          attributes: [language]
          features:
            attributes.language:
              effect: js
    """)
    assert load_config(listed, environ={}).drift.features["attributes.language"].effect == "js"

    unlisted = write(tmp_path, """
        drift:
          attributes: [language]
          features:
            attributes.channel:
              effect: js
            made_up:
              effect: js
    """)
    problems = problems_of(unlisted)
    assert len(problems) == 2
    assert any(p.startswith("drift.features.attributes.channel ") and "unknown feature" in p
               for p in problems), problems


def test_an_attributes_feature_problem_names_its_own_line(tmp_path):
    path = write(tmp_path, """
        drift:
          attributes: [language]
          features:
            prompt_tokens:
              effect: psi
            attributes.channel:
              effect: js
            made_up:
              effect: js
    """)

    problems = problems_of(path)

    line = line_of(path, "attributes.channel")
    assert any(p.startswith(f"drift.features.attributes.channel (line {line}): ")
               for p in problems), problems


def test_a_single_drift_problem_is_reported_with_its_own_path_and_line(tmp_path):
    path = write(tmp_path, """
        drift:
          features:
            prompt_tokens:
              effect: chi2
    """)

    problems = problems_of(path)

    line = line_of(path, "chi2")
    expected = f"drift.features.prompt_tokens.effect (line {line}): chi2 does not apply to numeric"
    assert problems == [expected + " features"]


# -- evaluate(): inputs built by hand -----------------------------------------------------

START = 1_764_359_649.0


def make_records(domain: str, n: int, seed: int, shift: float = 0.0, finish=("stop", "length"),
                 text: str | None = None) -> list[Record]:
    rng = random.Random(seed)
    return [Record(START + i, domain, prompt_tokens=max(1, int(rng.gauss(300 + shift, 60))),
                   latency_ms=rng.lognormvariate(0, 0.3) * 800.0 * (1 + shift / 300),
                   finish_reason=rng.choice(finish),
                   input_text=None if text is None else f"{text} {i} {rng.random():.6f}")
            for i in range(n)]


def make_reference(domain: str, n: int = 2000, seed: int = 0, texts: int = 0) -> Reference:
    builder = ReferenceBuilder(domain, "", FEATURES.numeric_names, FEATURES.categorical_names,
                               limit=None, sample_size=1000, bins=10, texts=texts)
    keys = random.Random(seed)
    for r in make_records(domain, n, seed, text="reference prompt" if texts else None):
        numeric, categorical = FEATURES.row(r)
        builder.add(numeric, categorical, r.input_text, r.timestamp, key=keys.random())
    return builder.build(built_at=START, source="test")


def make_window(reference: Reference, records: list[Record], buckets: int = 10, k: int = 64,
                k_texts: int = 0, seed: int = 0) -> DomainWindow:
    layout = reference.layout(FEATURES, k, k_texts, 512)
    rng = np.random.default_rng(seed)
    sketches = [DriftSketch(layout.reference_id, layout, rng) for _ in range(buckets)]
    for i, r in enumerate(records):
        sketches[i % buckets].add(FEATURES.raw(r))
    return DomainWindow(reference.domain, reference, layout, window_profile(sketches, layout))


def decisions_of(evaluation) -> dict[tuple[str, str], object]:
    return {(d.domain, d.feature): d for d in evaluation.decisions}


@pytest.fixture(scope="module")
def references() -> dict[str, Reference]:
    return {d: make_reference(d, seed=i) for i, d in enumerate(("few", "same", "shifted"))}


@pytest.fixture(scope="module")
def evaluation(references):
    windows = [
        make_window(references["few"], make_records("few", 50, seed=10, shift=150.0)),
        make_window(references["same"], make_records("same", 2000, seed=11)),
        make_window(references["shifted"], make_records("shifted", 2000, seed=12, shift=150.0,
                                                        finish=("length", "error"))),
    ]
    return evaluate(windows, DriftConfig(min_samples=100), at=START + 3600.0)


def test_a_feature_with_too_few_samples_is_not_decided(evaluation):
    d = decisions_of(evaluation)[("few", "prompt_tokens")]

    assert d.samples == 50
    assert d.reason == TOO_FEW_SAMPLES and not d.detected
    assert d.score is not None and d.score >= d.rule.threshold  # the shift is there, but too few
    assert d.adjusted_pvalue is None


def test_an_unchanged_distribution_has_a_small_effect(evaluation):
    d = decisions_of(evaluation)[("same", "prompt_tokens")]

    assert d.samples == 2000
    assert d.score < d.rule.threshold
    assert d.reason == SMALL_EFFECT and not d.detected


def test_a_shifted_distribution_is_detected(evaluation):
    decisions = decisions_of(evaluation)
    for feature in ("prompt_tokens", "latency_seconds", "finish_reason"):
        d = decisions[("shifted", feature)]
        assert d.reason == DRIFT and d.detected, d
        assert d.score >= d.rule.threshold
        assert d.adjusted_pvalue < d.rule.alpha
    assert evaluation.detected()[("shifted", "prompt_tokens")] is True
    assert evaluation.detected()[("same", "prompt_tokens")] is False


def test_a_large_effect_without_significance_is_not_significant(references):
    # A lax threshold lets the effect pass; a tiny alpha keeps the test from passing.
    cfg = DriftConfig(min_samples=100, alpha=1e-12, thresholds={"psi": 1e-9})
    windows = [make_window(references["same"], make_records("same", 2000, seed=11))]

    d = decisions_of(evaluate(windows, cfg, at=START))[("same", "prompt_tokens")]

    assert d.score >= d.rule.threshold
    assert d.adjusted_pvalue >= d.rule.alpha
    assert d.reason == NOT_SIGNIFICANT and not d.detected


def test_each_condition_alone_blocks_a_detection(references):
    shifted = make_records("shifted", 2000, seed=12, shift=150.0)
    window = make_window(references["shifted"], shifted)

    reasons = {
        name: decisions_of(evaluate([window], DriftConfig(**{"min_samples": 100, **extra}),
                                    at=START))[
            ("shifted", "prompt_tokens")].reason
        for name, extra in {
            "all pass": {},
            "min_samples": {"min_samples": 2001},
            "threshold": {"thresholds": {"psi": 1e6}},
            "alpha": {"alpha": 1e-300},
        }.items()
    }

    assert reasons == {"all pass": DRIFT, "min_samples": TOO_FEW_SAMPLES,
                       "threshold": SMALL_EFFECT, "alpha": NOT_SIGNIFICANT}


def test_bh_is_applied_across_all_eligible_domains_and_features(evaluation):
    eligible = [d for d in evaluation.decisions if d.samples >= d.rule.min_samples]
    raw = [d.pvalue for d in eligible]

    expected = benjamini_hochberg(raw)

    assert len(eligible) == 6  # same + shifted, x (prompt_tokens, latency_seconds, finish_reason)
    assert evaluation.tests == 6
    assert [d.adjusted_pvalue for d in eligible] == pytest.approx(expected.tolist(), rel=1e-12)


def test_a_feature_below_min_samples_is_not_in_the_bh_family(evaluation):
    few = [d for d in evaluation.decisions if d.domain == "few"]
    eligible = [d for d in evaluation.decisions if d.domain != "few"]

    assert few and all(d.adjusted_pvalue is None for d in few)
    assert all(d.pvalue is not None for d in few)  # the test ran; it is just not counted
    with_few = benjamini_hochberg([d.pvalue for d in eligible + few])[:len(eligible)]
    assert [d.adjusted_pvalue for d in eligible] != pytest.approx(with_few.tolist(), rel=1e-12)


def test_results_hold_every_applicable_method_per_feature(evaluation):
    methods: dict[tuple[str, str], set[str]] = {}
    for r in evaluation.results:
        methods.setdefault((r.domain, r.feature), set()).add(r.method)

    for domain in ("same", "shifted"):
        for feature in ("prompt_tokens", "latency_seconds"):
            assert methods[(domain, feature)] == {"psi", "js", "wasserstein", "ks"}
        assert methods[(domain, "finish_reason")] == {"psi", "js", "chi2"}
    # Below min_samples a score is noise: it is not reported (the decision says why).
    assert set(methods) == {(d, f) for d in ("same", "shifted")
                            for f in ("prompt_tokens", "latency_seconds", "finish_reason")}
    assert {d.reason for d in evaluation.decisions if d.domain == "few"} == {TOO_FEW_SAMPLES}


def test_only_methods_with_a_test_carry_a_pvalue(evaluation):
    for r in evaluation.results:
        assert (r.pvalue is not None) == (r.method in ("ks", "chi2", "mmd")), r


def test_every_number_of_an_evaluation_is_a_plain_python_float(evaluation):
    for r in evaluation.results:
        assert type(r.score) is float
        assert r.pvalue is None or type(r.pvalue) is float
    for d in evaluation.decisions:
        for value in (d.score, d.pvalue, d.adjusted_pvalue, d.rule.threshold, d.rule.alpha):
            assert value is None or type(value) is float, d
        assert type(d.samples) is int and type(d.rule.min_samples) is int
    assert type(evaluation.at) is float


def test_a_domain_without_any_window_data_is_decided_too_few_samples(references):
    # e.g. right after switching to a new reference: the series stay, at 0.
    reference = references["same"]
    layout = reference.layout(FEATURES, 64, 0, 512)
    empty = DomainWindow("same", reference, layout, window_profile([], layout))

    evaluation = evaluate([empty], DriftConfig(), at=START)

    assert evaluation.results == () and evaluation.tests == 0
    assert {d.feature for d in evaluation.decisions} == set(reference.numeric) | set(
        reference.categorical)
    assert all(d.reason == "too_few_samples" and not d.detected and d.samples == 0
               for d in evaluation.decisions)


# -- evaluate(): the embedding feature -------------------------------------------------------

class FakeEmbedder:
    """Deterministic pseudo-embeddings: prompts that say "drifted" move away from the rest."""

    dimension = 8

    def __init__(self):
        self.calls = 0

    def embed(self, texts) -> np.ndarray:
        self.calls += 1
        rows = []
        for t in texts:
            v = np.random.default_rng(zlib.crc32(t.encode())).normal(size=self.dimension)
            rows.append(v + (3.0 if "drifted" in t else 0.0))
        return np.array(rows)


EMBEDDING_CFG = {"min_samples": 100, "embeddings": {"min_texts": 10, "permutations": 10}}


def embedding_window(domain: str, seed: int, drifted: bool) -> DomainWindow:
    reference = make_reference(domain, n=1000, seed=seed, texts=64)
    current = make_records(domain, 1000, seed=seed + 100,
                           text="drifted prompt" if drifted else "reference prompt")
    return make_window(reference, current, buckets=10, k=64, k_texts=8)


def test_the_embedding_feature_is_evaluated_with_mmd_and_a_pvalue():
    windows = [embedding_window("legal", 1, drifted=True), embedding_window("support", 2, False)]
    embedder = FakeEmbedder()

    evaluation = evaluate(windows, DriftConfig(**EMBEDDING_CFG), at=START, embedder=embedder)

    results = [r for r in evaluation.results if r.feature == "embedding"]
    assert {(r.domain, r.method) for r in results} == {("legal", "mmd"), ("support", "mmd")}
    assert all(type(r.pvalue) is float and 0 < r.pvalue <= 1 for r in results)
    decisions = decisions_of(evaluation)
    assert decisions[("legal", "embedding")].samples == 80  # 8 texts x 10 buckets
    assert decisions[("legal", "embedding")].rule.effect == "mmd"
    assert decisions[("legal", "embedding")].detected
    assert not decisions[("support", "embedding")].detected
    assert evaluation.semantic is True
    assert embedder.calls == 4  # reference and window texts of each domain


def test_without_an_embedder_there_is_no_embedding_feature():
    windows = [embedding_window("legal", 1, drifted=True)]

    evaluation = evaluate(windows, DriftConfig(**EMBEDDING_CFG), at=START)

    assert not any(r.feature == "embedding" for r in evaluation.results)
    assert evaluation.semantic is False


def test_embedding_below_min_texts_is_too_few_samples():
    windows = [embedding_window("legal", 1, drifted=True)]
    cfg = DriftConfig(min_samples=100, embeddings={"min_texts": 81, "permutations": 10})

    evaluation = evaluate(windows, cfg, at=START, embedder=FakeEmbedder())
    d = decisions_of(evaluation)[("legal", "embedding")]

    assert d.reason == TOO_FEW_SAMPLES and d.adjusted_pvalue is None


def test_the_permutation_count_grows_with_the_number_of_tests(monkeypatch):
    seen: list[int] = []
    original = METHODS["mmd"]

    def spy(reference, current, permutations, seed):
        seen.append(permutations)
        return original.func(reference, current, permutations=permutations, seed=seed)

    monkeypatch.setitem(METHODS, "mmd", dataclasses.replace(original, func=spy))
    one = [embedding_window("legal", 1, drifted=True)]
    three = one + [embedding_window("support", 2, False), embedding_window("medical", 3, False)]
    cfg = DriftConfig(**EMBEDDING_CFG)

    small = evaluate(one, cfg, at=START, embedder=FakeEmbedder())
    permutations_one = seen[-1]
    large = evaluate(three, cfg, at=START, embedder=FakeEmbedder())
    permutations_three = seen[-1]

    # 3 tabular features + the embedding per domain share BH
    assert small.tests == 4 and large.tests == 12
    assert permutations_one == math.ceil(2 * 4 / 0.05) == 160
    assert permutations_three == math.ceil(2 * 12 / 0.05) == 480
    assert seen[-3:] == [480, 480, 480]
    # no p-value can fall below what the permutations can resolve
    p = next(r.pvalue for r in small.results if r.feature == "embedding")
    assert p >= 1 / (permutations_one + 1)


def test_the_permutation_count_is_capped_by_max_permutations(monkeypatch):
    seen: list[int] = []
    original = METHODS["mmd"]
    monkeypatch.setitem(METHODS, "mmd", dataclasses.replace(
        original, func=lambda reference, current, permutations, seed: (
            seen.append(permutations) or original.func(reference, current, permutations=50,
                                                       seed=seed))))
    cfg = DriftConfig(min_samples=100, embeddings={"min_texts": 10, "permutations": 10,
                                                   "max_permutations": 100})

    evaluate([embedding_window("legal", 1, drifted=True)], cfg, at=START, embedder=FakeEmbedder())

    assert seen == [100]  # uncapped it would be ceil(2 * 4 / 0.05) = 160


@pytest.mark.parametrize("domain_rule, feature", [
    ({"test": "ks"}, "finish_reason"),
    ({"effect": "chi2"}, "prompt_tokens"),
])
def test_a_domain_level_method_cannot_silently_switch_off_a_feature_type(references, domain_rule,
                                                                           feature):
    try:
        cfg = DriftConfig(min_samples=100, domains={"shifted": domain_rule})
    except ValueError:
        return  # rejected by validation: fine
    window = make_window(references["shifted"], make_records("shifted", 2000, seed=12, shift=150.0,
                                                             finish=("length", "error")))

    d = decisions_of(evaluate([window], cfg, at=START))[("shifted", feature)]

    assert d.detected, d
