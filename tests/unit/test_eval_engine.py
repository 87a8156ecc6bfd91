"""Unit tests of golden-set scoring (monitor.eval.engine) and golden-set files
(monitor.eval.golden), on a tiny Llama built here: CPU, float32.

The model is trained for a few dozen steps to memorise half of the golden
items, so that exact match is true for some items and false for others. Two
random LoRA adapters (`init_lora_weights=False`: lora_B is not zero) change its
outputs. `build_world` is shared with tests/gpu/test_eval_engine_gpu.py.
"""

from __future__ import annotations

import functools
import json
import random
import string
import subprocess
import sys

import pytest

from monitor.eval.golden import GoldenItem, GoldenSetError, load_golden

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
peft = pytest.importorskip("peft")

from monitor.eval.engine import Evaluator, ItemScore, _hooks_removed_after

NLL_EXACT = 1e-5  # float32, same items, other batching or no batching at all
NLL_PATHS = 1e-4  # float32, LoRA unmerged vs merged vs mixed: other summation orders


# -- the tiny world: a base model, a fine-tune, two adapters, golden items ------

def golden_items(count: int = 12, seed: int = 0) -> list[GoldenItem]:
    rng = random.Random(seed)

    def text(low, high):
        letters = string.ascii_lowercase + " "
        return "".join(rng.choice(letters) for _ in range(rng.randint(low, high)))

    return [GoldenItem(f"item-{i:02d}", text(4, 24), text(1, 9)) for i in range(count)]


def _tiny_llama():
    config = transformers.LlamaConfig(
        vocab_size=384, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
        pad_token_id=0, eos_token_id=1, bos_token_id=None)
    return transformers.LlamaForCausalLM(config)


def _memorise(model, tokenizer, items, steps=60):
    """A few Adam steps on the items' references, so greedy decoding reproduces them."""
    rows = []
    for item in items:
        prompt = tokenizer(item.prompt, add_special_tokens=False).input_ids
        ref = tokenizer(item.reference).input_ids
        rows.append((prompt + ref, [-100] * len(prompt) + ref))
    length = max(len(ids) for ids, _ in rows)
    ids = torch.tensor([a + [0] * (length - len(a)) for a, _ in rows])
    labels = torch.tensor([b + [-100] * (length - len(b)) for _, b in rows])
    mask = torch.tensor([[1] * len(a) + [0] * (length - len(a)) for a, _ in rows])
    optimiser = torch.optim.Adam(model.parameters(), lr=3e-2)
    model.train()
    for _ in range(steps):
        loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    model.eval()


def build_world(root) -> dict:
    """Saves under `root`: base/ (model + ByT5 tokenizer), adapter_a/, adapter_b/,
    full/ (a full fine-tune: the base with adapter_a merged in)."""
    torch.manual_seed(0)
    tokenizer = transformers.ByT5Tokenizer()
    items = golden_items()
    model = _tiny_llama()
    _memorise(model, tokenizer, items[::2])
    base = root / "base"
    model.save_pretrained(base)
    tokenizer.save_pretrained(base)
    adapters = {}
    for name, seed in (("a", 1), ("b", 2)):
        torch.manual_seed(seed)
        config = peft.LoraConfig(r=4, lora_alpha=4, target_modules="all-linear",
                                 init_lora_weights=False, task_type="CAUSAL_LM")
        lora = peft.get_peft_model(_load(base), config)
        adapters[name] = root / f"adapter_{name}"
        lora.save_pretrained(adapters[name])
    full = root / "full"
    merged = peft.PeftModel.from_pretrained(_load(base), str(adapters["a"])).merge_and_unload()
    merged.save_pretrained(full)
    tokenizer.save_pretrained(full)
    return {"base": base, "adapters": adapters, "full": full, "items": items,
            "tokenizer": tokenizer}


def _load(path, **kwargs):
    return transformers.AutoModelForCausalLM.from_pretrained(path, **kwargs).eval()


def direct_scores(model, tokenizer, items) -> list[ItemScore]:
    """The plain-transformers computation, one item at a time, no padding: the
    model's own loss over the reference tokens (ByT5 appends </s> to them)."""
    out = []
    with torch.no_grad():
        for item in items:
            prompt = tokenizer(item.prompt, add_special_tokens=False).input_ids
            ref = tokenizer(item.reference).input_ids
            ids = torch.tensor([prompt + ref], device=model.device)
            labels = torch.tensor([[-100] * len(prompt) + ref], device=model.device)
            result = model(input_ids=ids, labels=labels)
            greedy = result.logits[0, len(prompt) - 1:-1].argmax(-1)
            out.append(ItemScore(item.id, result.loss.item(),
                                 bool((greedy == labels[0, len(prompt):]).all()), len(ref)))
    return out


def assert_same_scores(got, want, atol, exact_match=True):
    assert [s.id for s in got] == [s.id for s in want]
    assert [s.tokens for s in got] == [s.tokens for s in want]
    worst = max(abs(g.nll - w.nll) for g, w in zip(got, want))
    assert worst <= atol, f"largest NLL difference {worst:.3g} > {atol}"
    if exact_match:
        assert [s.exact_match for s in got] == [s.exact_match for s in want]


def hook_count(model) -> int:
    return sum(len(m._forward_pre_hooks) + len(m._forward_hooks) for m in model.modules())


def tuner_layers(model) -> list[str]:
    from peft.tuners.tuners_utils import BaseTunerLayer

    return [name for name, m in model.named_modules() if isinstance(m, BaseTunerLayer)]


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    # Tiny matrices: OpenMP threads only spin against each other (x1000 slower
    # on a loaded 2-core machine). Restored for the other test modules.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def world(tmp_path_factory, one_thread):
    return build_world(tmp_path_factory.mktemp("eval-world"))


@pytest.fixture(scope="module")
def evaluator(world):
    with Evaluator(world["base"], device="cpu", max_batch_tokens=64) as evaluator:
        yield evaluator


@pytest.fixture(scope="module")
def clean(world, evaluator):
    """Scores from an untouched evaluator, before any test could disturb it."""
    items, adapters = world["items"], world["adapters"]
    return {"base": evaluator.score_base(items),
            **{name: evaluator.score_adapter(path, items, name) for name, path in adapters.items()}}


# -- scoring ---------------------------------------------------------------------

def test_scores_match_a_direct_unbatched_computation_with_plain_transformers(world, evaluator):
    want = direct_scores(_load(world["base"]), world["tokenizer"], world["items"])

    got = evaluator.score_base(world["items"])

    assert_same_scores(got, want, NLL_EXACT)
    assert 0 < sum(s.exact_match for s in got) < len(got)  # the test can see both outcomes


def test_the_reference_eos_is_scored(world, evaluator):
    got = evaluator.score_base(world["items"])

    assert [s.tokens for s in got] == [len(i.reference.encode()) + 1 for i in world["items"]]


def test_batch_size_does_not_change_the_scores_and_the_order_is_kept(world, evaluator, monkeypatch):
    items = world["items"]
    results = []
    for budget in (1, 48, 100_000):  # one item per batch, a few, all in one
        monkeypatch.setattr(evaluator, "max_batch_tokens", budget)
        results.append(evaluator.score_base(items))

    assert [s.id for s in results[0]] == [item.id for item in items]
    for other in results[1:]:
        assert_same_scores(other, results[0], NLL_EXACT)


def test_progress_reports_rows_done_out_of_the_total(world):
    calls = []
    evaluator = Evaluator(world["base"], device="cpu", max_batch_tokens=64,
                          progress=lambda done, total: calls.append((done, total)))

    evaluator.score_adapters(world["adapters"], world["items"][:5])

    assert calls[-1] == (10, 10)
    assert [done for done, _ in calls] == sorted(done for done, _ in calls)


def test_mixed_merged_and_plain_per_adapter_paths_give_the_same_nll(world, evaluator, clean):
    items, adapters = world["items"], world["adapters"]

    per_adapter = {name: evaluator.score_adapter(path, items, name)
                   for name, path in adapters.items()}
    set_adapter = evaluator.score_adapters(adapters, items)
    mixed = evaluator.score_adapters(adapters, items, mixed=True)
    merged = evaluator.score_full(world["full"], items)  # adapter a, merge_and_unload

    for name in adapters:
        assert_same_scores(set_adapter[name], per_adapter[name], NLL_PATHS)
        assert_same_scores(mixed[name], per_adapter[name], NLL_PATHS)
    assert_same_scores(merged, per_adapter["a"], NLL_PATHS)
    assert_same_scores(per_adapter["a"], clean["a"], 0.0)
    # the adapters do change the model, or the comparison would prove nothing
    assert max(abs(a.nll - b.nll) for a, b in zip(per_adapter["a"], clean["base"])) > 0.1
    assert max(abs(a.nll - b.nll) for a, b in zip(per_adapter["a"], per_adapter["b"])) > 0.1


def test_mixed_batches_match_a_direct_peft_computation(world, evaluator):
    model = peft.PeftModel.from_pretrained(_load(world["base"]), str(world["adapters"]["b"]))

    want = direct_scores(model, world["tokenizer"], world["items"])

    got = evaluator.score_adapters(world["adapters"], world["items"], mixed=True)["b"]
    assert_same_scores(got, want, NLL_PATHS)


def test_score_full_scores_a_saved_fine_tune_like_plain_transformers(world, evaluator, clean):
    want = direct_scores(_load(world["full"]), world["tokenizer"], world["items"])

    got = evaluator.score_full(world["full"], world["items"])

    assert_same_scores(got, want, NLL_EXACT)
    assert evaluator.score_base(world["items"]) == clean["base"]


# -- the base model stays clean --------------------------------------------------

def test_the_base_model_is_bit_for_bit_unchanged_after_adapter_evaluation(world, evaluator, clean):
    model = evaluator.model
    weights = {name: tensor.clone() for name, tensor in model.state_dict().items()}
    layout = [(name, type(m).__name__) for name, m in model.named_modules()]
    config = model.config.to_dict()

    evaluator.score_adapter(world["adapters"]["a"], world["items"])
    evaluator.score_adapters(world["adapters"], world["items"], mixed=True)

    after = model.state_dict()
    assert after.keys() == weights.keys()
    assert all(torch.equal(after[name], tensor) for name, tensor in weights.items())
    assert [(name, type(m).__name__) for name, m in model.named_modules()] == layout
    assert model.config.to_dict() == config
    assert not hasattr(model, "peft_config")
    assert not any(p.requires_grad for p in model.parameters())
    assert evaluator.score_base(world["items"]) == clean["base"]


def _fail_in_the_nth_lora_forward(monkeypatch, n: int):
    original = peft.tuners.lora.layer.Linear.forward
    calls = {"n": 0}

    @functools.wraps(original)
    def forward(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == n:
            raise RuntimeError("injected failure inside a LoRA forward")
        return original(self, *args, **kwargs)

    monkeypatch.setattr(peft.tuners.lora.layer.Linear, "forward", forward)


@pytest.mark.parametrize("mixed", [False, True], ids=["set_adapter", "mixed_batch"])
def test_a_forced_exception_inside_a_peft_forward_leaves_the_next_evaluation_correct(
        world, evaluator, clean, monkeypatch, mixed):
    _fail_in_the_nth_lora_forward(monkeypatch, n=30)  # mid-way through the first batches
    with pytest.raises(RuntimeError, match="injected failure"):
        evaluator.score_adapters(world["adapters"], world["items"], mixed=mixed)
    monkeypatch.undo()

    assert tuner_layers(evaluator.model) == []
    assert hook_count(evaluator.model) == 0
    assert evaluator.score_base(world["items"]) == clean["base"]
    assert evaluator.score_adapter(world["adapters"]["a"], world["items"], "a") == clean["a"]
    mixed_after = evaluator.score_adapters(world["adapters"], world["items"], mixed=True)
    assert_same_scores(mixed_after["b"], clean["b"], NLL_PATHS)
    assert hook_count(evaluator.model) == 0


def test_hooks_that_peft_leaks_after_an_exception_are_removed(world, monkeypatch):
    # peft issue 3475: _enable_peft_forward_hooks removes its adapter_names
    # pre-hooks after a bare `yield`, so they outlive a failed forward.
    model = peft.PeftModel.from_pretrained(_load(world["base"]), str(world["adapters"]["a"]),
                                           adapter_name="a")
    model.load_adapter(str(world["adapters"]["b"]), adapter_name="b")
    ids = torch.tensor([[40, 41, 42, 1], [43, 44, 45, 1]])
    want = model(input_ids=ids[:1]).logits

    with _hooks_removed_after(model):
        _fail_in_the_nth_lora_forward(monkeypatch, n=1)
        with pytest.raises(RuntimeError, match="injected failure"):
            model(input_ids=ids, adapter_names=["a", "b"])
        monkeypatch.undo()
        leaked = hook_count(model)  # 14 with peft 0.21.2 (one per LoRA layer); 0 once fixed

    assert hook_count(model) == 0, f"{leaked} leaked hook(s) were not all removed"
    torch.testing.assert_close(model(input_ids=ids[:1]).logits, want, rtol=0, atol=0)


def test_a_missing_adapter_file_is_refused_and_the_base_is_untouched(world, evaluator, clean,
                                                                     tmp_path):
    (tmp_path / "adapter_config.json").write_text("{}")

    with pytest.raises(FileNotFoundError, match="adapter_model.safetensors"):
        evaluator.score_adapter(tmp_path, world["items"])

    assert tuner_layers(evaluator.model) == []
    assert evaluator.score_base(world["items"]) == clean["base"]


def test_an_adapter_that_fails_to_load_leaves_no_layers_on_the_base(world, evaluator, clean,
                                                                    tmp_path):
    broken = tmp_path / "adapter"
    broken.mkdir()
    source = world["adapters"]["a"]
    (broken / "adapter_model.safetensors").write_bytes(
        (source / "adapter_model.safetensors").read_bytes())
    config = json.loads((source / "adapter_config.json").read_text())
    (broken / "adapter_config.json").write_text(json.dumps({**config, "r": 8}))  # weights are r=4

    with pytest.raises(RuntimeError, match="size mismatch"):
        evaluator.score_adapter(broken, world["items"])

    assert tuner_layers(evaluator.model) == []
    assert evaluator.score_base(world["items"]) == clean["base"]


# -- out of memory -----------------------------------------------------------------

def _oom_above(monkeypatch, model, rows: int, seen: list):
    original = type(model).forward

    @functools.wraps(original)
    def forward(self, *args, **kwargs):
        if kwargs["input_ids"].shape[0] > rows:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. (injected)")
        seen.append(kwargs["input_ids"].shape[0])
        return original(self, *args, **kwargs)

    monkeypatch.setattr(type(model), "forward", forward)


def test_out_of_memory_halves_the_batch_and_the_scores_stay_correct(world, evaluator, clean,
                                                                     monkeypatch, caplog):
    monkeypatch.setattr(evaluator, "max_batch_tokens", 100_000)  # everything in one batch
    halvings, seen = evaluator.oom_halvings, []
    _oom_above(monkeypatch, evaluator.model, 2, seen)

    got = evaluator.score_base(world["items"])

    assert_same_scores(got, clean["base"], NLL_EXACT)
    assert max(seen) == 2 and sum(seen) == len(world["items"])
    # 12 -> 6 -> 3 -> 2 rows; the budget is in tokens, so shorter items may halve again
    assert evaluator.oom_halvings - halvings >= 3
    assert "out of memory" in caplog.text


def test_out_of_memory_on_a_single_item_is_raised_with_a_clear_message(world, evaluator,
                                                                        monkeypatch):
    _oom_above(monkeypatch, evaluator.model, 0, [])

    with pytest.raises(torch.OutOfMemoryError, match="alone"):
        evaluator.score_base(world["items"][:2])


# -- inputs and lifecycle ------------------------------------------------------------

def test_items_that_cannot_be_scored_are_all_reported_at_once(evaluator):
    items = [GoldenItem("no-prompt", "", "x"), GoldenItem("ok", "a", "b"),
             GoldenItem("too-long", "p" * 200, "x")]

    with pytest.raises(ValueError) as raised:
        evaluator.score_base(items)

    assert "'no-prompt'" in str(raised.value) and "'too-long'" in str(raised.value)
    assert "'ok'" not in str(raised.value)


def test_a_bos_the_tokenizer_adds_goes_before_the_prompt_only():
    from tokenizers import Tokenizer, models, pre_tokenizers, processors

    from monitor.eval.engine import _leading_special_ids

    vocab = {"<s>": 0, "</s>": 1, "<pad>": 2, "a": 3, "b": 4}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<pad>"))
    backend.pre_tokenizer = pre_tokenizers.Split("", "isolated")
    backend.post_processor = processors.TemplateProcessing(single="<s> $A",
                                                           special_tokens=[("<s>", 0)])
    tokenizer = transformers.PreTrainedTokenizerFast(tokenizer_object=backend, bos_token="<s>",
                                                     eos_token="</s>", pad_token="<pad>")

    assert _leading_special_ids(tokenizer) == (0,)
    assert _leading_special_ids(transformers.ByT5Tokenizer()) == ()  # ByT5 only appends </s>


def test_bad_arguments_are_refused_before_loading_anything(world):
    with pytest.raises(ValueError, match="dtype"):
        Evaluator(world["base"], dtype="int8")
    with pytest.raises(ValueError, match="max_batch_tokens"):
        Evaluator(world["base"], max_batch_tokens=0)
    with pytest.raises(ValueError, match="device"):
        Evaluator(world["base"], device="tpu")
    with pytest.raises(ValueError, match="threads"):
        Evaluator(world["base"], threads=0)


def test_threads_caps_torchs_cpu_threads(world):
    torch.set_num_threads(2)
    try:
        with Evaluator(world["base"], device="cpu", threads=1):
            assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(1)  # the module's setting (one_thread)


def test_a_closed_evaluator_refuses_to_score(world):
    evaluator = Evaluator(world["base"], device="cpu")
    evaluator.close()

    with pytest.raises(RuntimeError, match="closed"):
        evaluator.score_base(world["items"])


def test_importing_the_engine_and_golden_sets_does_not_import_torch():
    code = ("import sys, monitor.eval.engine, monitor.eval.golden; "
            "heavy = {'torch', 'transformers', 'peft'} & set(sys.modules); "
            "assert not heavy, heavy")

    subprocess.run([sys.executable, "-c", code], check=True)


# -- golden set files ------------------------------------------------------------------

def _write(tmp_path, lines) -> str:
    path = tmp_path / "golden.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return path


def test_a_golden_set_loads_in_file_order_skipping_blank_lines(tmp_path):
    path = _write(tmp_path, [json.dumps({"id": "b", "prompt": "p1", "reference": "r1"}), "",
                             json.dumps({"id": "a", "prompt": "", "reference": "r2", "tag": 1})])

    assert load_golden(path) == [GoldenItem("b", "p1", "r1"), GoldenItem("a", "", "r2")]


def test_every_bad_golden_line_is_reported_at_once_with_its_number(tmp_path):
    path = _write(tmp_path, [
        json.dumps({"id": "ok", "prompt": "p", "reference": "r"}),
        "{not json",
        json.dumps(["a", "list"]),
        json.dumps({"id": "x", "prompt": "p"}),
        json.dumps({"id": "y", "prompt": 3, "reference": "r"}),
        json.dumps({"id": "z", "prompt": "p", "reference": ""}),
        json.dumps({"id": "ok", "prompt": "p2", "reference": "r2"}),
    ])

    with pytest.raises(GoldenSetError) as raised:
        load_golden(path)

    problems = raised.value.problems
    assert [p.split(":")[0] for p in problems] == [f"line {n}" for n in range(2, 8)]
    assert "'reference' is missing" in problems[2]
    assert "'prompt' must be a string" in problems[3]
    assert "'reference' is empty" in problems[4]
    assert "duplicate id 'ok' (first used on line 1)" in problems[5]
    assert isinstance(raised.value, ValueError) and str(path) in str(raised.value)


def test_an_empty_golden_set_is_refused(tmp_path):
    path = tmp_path / "golden.jsonl"
    path.write_text("\n\n")

    with pytest.raises(GoldenSetError, match="no items"):
        load_golden(path)
