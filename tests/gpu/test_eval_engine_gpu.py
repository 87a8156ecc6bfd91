"""GPU checks of golden-set scoring (monitor.eval.engine): bf16 and SDPA on CUDA.

Skipped without a CUDA device (tests/conftest.py). The tiny world is the one the
CPU tests build (tests/unit/test_eval_engine.py).

Tolerances. bf16 keeps 8 significant bits: one rounding moves a value by up to
2**-9 of itself (0.2 %). The tiny model's logits are O(10), so a logit moves by a
few hundredths between summation orders (another batch shape, LoRA merged into
a bf16 weight versus peft's unmerged path, which runs the adapter in float32 and
adds it to the bf16 output). An item's mean NLL then moves by about the same, and
by more on the items the model gets very wrong (NLL 10-20): hence
|a - b| <= BF16_ABS + BF16_REL * |b|. Exact match is compared where the batches
are the same (then the kernels are too); elsewhere a near-tie may flip, so one
disagreement is allowed. In float32 on CUDA (no TF32: torch's default for
matmul) the CPU tolerance of 1e-4 holds.

After a forced exception the next scores must equal the clean ones within
POISONED = 1e-3: same batches on the same device give the same numbers, and a
poisoned model (stale adapter hooks, a LoRA layer left on the base) moves them
by more than 0.1 or fails outright.
"""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
peft = pytest.importorskip("peft")

from monitor.eval.engine import Evaluator
from tests.unit.test_eval_engine import (
    _fail_in_the_nth_lora_forward,
    _load,
    assert_same_scores,
    build_world,
    direct_scores,
    hook_count,
    tuner_layers,
)

pytestmark = pytest.mark.gpu

BF16_ABS, BF16_REL = 0.05, 0.02
FLOAT32 = 1e-4
POISONED = 1e-3


def assert_close_bf16(got, want, exact_match_disagreements=0):
    assert [s.id for s in got] == [s.id for s in want]
    assert [s.tokens for s in got] == [s.tokens for s in want]
    off = [(g.id, g.nll, w.nll) for g, w in zip(got, want)
           if abs(g.nll - w.nll) > BF16_ABS + BF16_REL * abs(w.nll)]
    assert not off, f"NLL beyond the bf16 tolerance: {off}"
    flips = sum(g.exact_match != w.exact_match for g, w in zip(got, want))
    assert flips <= exact_match_disagreements


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return build_world(tmp_path_factory.mktemp("eval-world-gpu"))
    finally:
        torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def evaluator(world):
    with Evaluator(world["base"], device="cuda", max_batch_tokens=64) as evaluator:
        yield evaluator


@pytest.fixture(scope="module")
def clean(world, evaluator):
    items, adapters = world["items"], world["adapters"]
    return {"base": evaluator.score_base(items),
            **{name: evaluator.score_adapter(path, items, name) for name, path in adapters.items()}}


def test_cuda_defaults_to_bf16_and_sdpa(evaluator):
    assert evaluator.device.type == "cuda"
    assert evaluator.model.dtype == torch.bfloat16
    assert evaluator.model.config._attn_implementation == "sdpa"


def test_bf16_scores_are_close_to_a_float32_direct_computation(world, clean):
    want = direct_scores(_load(world["base"]), world["tokenizer"], world["items"])

    assert_close_bf16(clean["base"], want, exact_match_disagreements=1)


def test_float32_on_cuda_matches_the_direct_computation(world):
    with Evaluator(world["base"], device="cuda", dtype="float32") as evaluator:
        got = evaluator.score_base(world["items"])
        want = direct_scores(_load(world["base"]), world["tokenizer"], world["items"])

    assert_same_scores(got, want, FLOAT32)


def test_mixed_merged_and_plain_per_adapter_paths_agree_in_bf16(world, evaluator, clean):
    items, adapters = world["items"], world["adapters"]

    set_adapter = evaluator.score_adapters(adapters, items)
    mixed = evaluator.score_adapters(adapters, items, mixed=True)
    merged = evaluator.score_full(world["full"], items)  # adapter a merged, saved in float32

    for name in adapters:
        assert_close_bf16(set_adapter[name], clean[name])
        assert_close_bf16(mixed[name], clean[name], exact_match_disagreements=1)
    assert_close_bf16(merged, clean["a"], exact_match_disagreements=1)


@pytest.mark.parametrize("mixed", [False, True], ids=["set_adapter", "mixed_batch"])
def test_a_forced_exception_inside_a_peft_forward_leaves_the_next_evaluation_correct(
        world, evaluator, clean, monkeypatch, mixed):
    _fail_in_the_nth_lora_forward(monkeypatch, n=30)
    with pytest.raises(RuntimeError, match="injected failure"):
        evaluator.score_adapters(world["adapters"], world["items"], mixed=mixed)
    monkeypatch.undo()

    assert tuner_layers(evaluator.model) == []
    assert hook_count(evaluator.model) == 0
    assert_same_scores(evaluator.score_base(world["items"]), clean["base"], POISONED)
    assert_same_scores(evaluator.score_adapter(world["adapters"]["a"], world["items"], "a"),
                       clean["a"], POISONED)
    assert hook_count(evaluator.model) == 0
