"""The tiny real models (monitor.eval.tiny) that the evaluation tests and the demo use.

Built once per test session (about a minute and a half on one CPU core), or
taken from the repository's `.cache/tiny` when a build of the current builder
version is there (`python -m monitor.eval.tiny` makes one). Checked: the files
and their formats, offline loading with the Auto classes, the registry and the
validator, and above all the quality ordering the evaluation tests rely on:
teacher-forced NLL of the reference (with EOS) given the prompt, and greedy
exact match, over each golden set.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from monitor.eval import tiny

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
peft = pytest.importorskip("peft")

pytestmark = [
    pytest.mark.timeout(600),  # the build takes ~95 s on one core; room for a slow machine
    pytest.mark.filterwarnings("ignore:.*is_gradient_checkpointing.*:FutureWarning"),  # peft
]

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def models(tiny_models) -> tiny.TinyModels:
    return tiny_models


def golden(models, domain: str) -> list[dict]:
    path = models.registry.parent / domain / "golden.jsonl"
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def load_base(models):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(str(models.base), local_files_only=True).eval()


def load_version(models, domain: str, version: str):
    from transformers import AutoModelForCausalLM

    folder = models.registry.parent / domain / version
    if domain == "medical":
        return AutoModelForCausalLM.from_pretrained(str(folder), local_files_only=True).eval()
    from peft import PeftModel

    return PeftModel.from_pretrained(load_base(models), str(folder)).eval()


def score(model, tokenizer, items: list[dict]) -> tuple[list[float], list[bool]]:
    """Per item: mean NLL of the reference tokens and EOS given the prompt
    (teacher forcing), and whether the argmax is the reference token at every
    one of those positions (greedy decoding reproduces the reference)."""
    rows = []
    for item in items:
        prompt = tokenizer(item["prompt"], add_special_tokens=False)["input_ids"]
        reference = tokenizer(item["reference"], add_special_tokens=False)["input_ids"]
        rows.append((prompt, reference + [tokenizer.eos_token_id]))
    width = max(len(p) + len(r) for p, r in rows)
    ids = torch.tensor([p + r + [0] * (width - len(p) - len(r)) for p, r in rows])
    mask = torch.tensor([[1] * (len(p) + len(r)) + [0] * (width - len(p) - len(r))
                         for p, r in rows])
    with torch.no_grad():
        logits = model(input_ids=ids, attention_mask=mask).logits.float()
    nlls, exact = [], []
    for row, (prompt, reference) in enumerate(rows):
        predicted = logits[row, len(prompt) - 1:len(prompt) + len(reference) - 1]
        target = torch.tensor(reference)
        nlls.append(torch.nn.functional.cross_entropy(predicted, target).item())
        exact.append(bool((predicted.argmax(-1) == target).all()))
    return nlls, exact


@pytest.fixture(scope="session")
def scores(models) -> dict[tuple[str, str], tuple[list[float], list[bool]]]:
    """(domain, version or "base") -> per-item (NLLs, exact matches) on the golden set."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(models.base), local_files_only=True)
    base = load_base(models)
    out = {}
    for domain in models.domains:
        items = golden(models, domain)
        out[domain, "base"] = score(base, tokenizer, items)
        for version in sorted(p.name for p in (models.registry.parent / domain).iterdir()
                              if p.is_dir()):
            out[domain, version] = score(load_version(models, domain, version), tokenizer, items)
    return out


def mean(values) -> float:
    return sum(values) / len(values)


# -- no torch needed -----------------------------------------------------------------------

def test_domain_tasks_are_deterministic_and_distinct():
    first = tiny.domain_task("legal", 5, 64)
    assert first == tiny.domain_task("legal", 5, 64)
    assert first != tiny.domain_task("legal", 6, 64)
    assert [item["id"] for item in first] == [f"legal-5-{i:04d}" for i in range(64)]
    assert len({item["prompt"] for item in first}) == 64
    prompts = {d: [item["prompt"] for item in tiny.domain_task(d, 5, 8)] for d in tiny.DOMAINS}
    assert len({p for group in prompts.values() for p in group}) == 24  # domains draw apart
    for domain in tiny.DOMAINS:
        for item in tiny.domain_task(domain, 1, 16):
            assert item["reference"] != item["prompt"].rstrip("\n")  # copying is always wrong
            assert len(item["reference"]) == len(item["prompt"]) - 1
    with pytest.raises(ValueError, match="no domain 'finance'"):
        tiny.domain_task("finance", 1, 1)


def test_importing_the_module_loads_no_torch():
    code = ("import sys, monitor.eval.tiny; "
            "assert not {'torch', 'transformers', 'peft'} & set(sys.modules), sys.modules.keys()")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO)


# -- the build -----------------------------------------------------------------------------

def test_layout_files_and_size(models):
    root = models.root
    assert models.base == root / "models" / "tiny-llama"
    assert models.registry == root / "adapters" / "registry.yaml"
    assert models.domains == ("legal", "support", "medical")
    stamp = json.loads((root / tiny.STAMP).read_text())
    assert stamp["builder"] == tiny.BUILDER_VERSION
    assert {"model.safetensors", "config.json", "tokenizer_config.json"} <= {
        p.name for p in models.base.iterdir()}
    adapters = models.registry.parent
    for domain, version in (("legal", "v1"), ("legal", "v2"), ("legal", "v3"),
                            ("support", "v1"), ("support", "v2")):
        folder = adapters / domain / version
        assert sorted(p.name for p in folder.iterdir()) == ["adapter_config.json",
                                                            "adapter_model.safetensors"]
        config = json.loads((folder / "adapter_config.json").read_text())
        assert config["base_model_name_or_path"] == "tiny-llama"
        assert (config["peft_type"], config["r"], config["lora_alpha"]) == ("LORA", 8, 16)
        assert sorted(config["target_modules"]) == sorted(tiny.LORA["target_modules"])
    assert (adapters / "medical" / "v1" / "model.safetensors").is_file()
    for domain in models.domains:
        assert len(golden(models, domain)) == 64
    files = [p for p in root.rglob("*") if p.is_file()]
    assert not [p for p in files if p.suffix in (".bin", ".pt", ".pth", ".pkl", ".ckpt")]
    assert sum(p.stat().st_size for p in files) < 10_000_000


def test_a_valid_cache_is_reused_without_rebuilding(models):
    lines = []
    again = tiny.build(models.root, log=lines.append)
    assert again == models and lines == []


def test_a_stale_cache_is_replaced_whole_and_a_failed_build_leaves_it_alone(tmp_path,
                                                                           monkeypatch):
    root = tmp_path / "tiny"
    root.mkdir()
    (root / tiny.STAMP).write_text('{"builder": "tiny-0"}')
    (root / "old-file").write_text("from the old build")

    def fake_build(folder, log):
        (folder / "new-file").write_text("from the new build")
        (folder / tiny.STAMP).write_text(json.dumps({"builder": tiny.BUILDER_VERSION}))

    monkeypatch.setattr(tiny, "_build_into", fake_build)
    assert tiny.build(root, log=lambda line: None).root == root
    assert sorted(p.name for p in root.iterdir()) == [tiny.STAMP, "new-file"]
    assert tiny.build(root, log=lambda line: None).root == root  # cached: not rebuilt

    def failing_build(folder, log):
        (folder / "half").write_text("half written")
        raise RuntimeError("interrupted")

    monkeypatch.setattr(tiny, "_build_into", failing_build)
    with pytest.raises(RuntimeError, match="interrupted"):
        tiny.build(root, force=True, log=lambda line: None)
    assert sorted(p.name for p in root.iterdir()) == [tiny.STAMP, "new-file"]
    assert sorted(p.name for p in tmp_path.iterdir()) == [".tiny.lock", "tiny"]  # no leftovers


def test_derived_adapters_are_permuted_and_halved_copies(models):
    from safetensors.numpy import load_file

    adapters = models.registry.parent
    good = load_file(str(adapters / "legal" / "v1" / "adapter_model.safetensors"))
    corrupted = load_file(str(adapters / "legal" / "v2" / "adapter_model.safetensors"))
    weakened = load_file(str(adapters / "legal" / "v3" / "adapter_model.safetensors"))
    assert good.keys() == corrupted.keys() == weakened.keys()
    assert len(good) == 2 * 7 * 4  # A and B for 7 projections in 4 layers
    for name, tensor in good.items():
        if ".lora_B." in name:
            assert (weakened[name] == tensor * 0.5).all()
            assert sorted(map(tuple, corrupted[name].tolist())) == sorted(map(tuple,
                                                                              tensor.tolist()))
            assert not (corrupted[name] == tensor).all(), name
        else:
            assert (weakened[name] == tensor).all() and (corrupted[name] == tensor).all()


def test_base_model_and_tokenizer_load_offline_with_auto_classes(models):
    # A fresh interpreter, so that the offline switches are read at import.
    code = f"""
import json, torch
from transformers import AutoModelForCausalLM, AutoTokenizer
path = {str(models.base)!r}
tok = AutoTokenizer.from_pretrained(path)
model = AutoModelForCausalLM.from_pretrained(path).eval()
assert type(model).__name__ == "LlamaForCausalLM", type(model)
attn = model.model.layers[0].self_attn
assert attn.q_proj.weight.shape == (128, 128) and attn.k_proj.weight.shape == (64, 128)
assert len(tok) == model.config.vocab_size == 384 and tok.eos_token_id == 1
item = json.loads(open({str(models.registry.parent / "legal" / "golden.jsonl")!r}).readline())
ids = tok(item["prompt"], add_special_tokens=False, return_tensors="pt")["input_ids"]
out = model.generate(ids, max_new_tokens=40, do_sample=False)
text = tok.decode(out[0, ids.shape[1]:], skip_special_tokens=True)
assert text == item["prompt"].rstrip("\\n"), (text, item)  # the base model copies
print("ok")
"""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            env=env, cwd=REPO, timeout=300, check=False)
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr[-3000:]


def test_registry_loads_and_every_version_validates(models):
    from monitor.registry.model import load_registry
    from monitor.registry.validate import validate_version

    registry = load_registry(models.registry)
    assert registry.base_models["tiny-llama"].path == models.base.resolve()
    summary = {name: (d.kind, d.active, {v: ver.status for v, ver in d.versions.items()})
               for name, d in registry.domains.items()}
    assert summary == {
        "legal": ("lora", "v1", {"v1": "good", "v2": None, "v3": None}),
        "support": ("lora", "v1", {"v1": "good", "v2": None}),
        "medical": ("full", "v1", {"v1": "good"}),
    }
    for name, domain in registry.domains.items():
        assert domain.golden_set == models.registry.parent / name / "golden.jsonl"
        for version in domain.versions:
            report = validate_version(registry, name, version)
            assert report.kind == domain.kind


# -- quality: what the evaluation tests rely on --------------------------------------------

@pytest.mark.parametrize("domain", ["legal", "support"])
def test_lora_quality_ordering(scores, domain):
    base_nll, base_em = scores[domain, "base"]
    good_nll, good_em = scores[domain, "v1"]
    weak_version = {"legal": "v3", "support": "v2"}[domain]
    weak_nll, _ = scores[domain, weak_version]
    assert mean(base_em) <= 0.05 and mean(good_em) >= 0.9
    assert mean(good_nll) < 0.1 and mean(base_nll) > 3
    assert all(g < b for g, b in zip(good_nll, base_nll))  # item by item, not only on average
    # Weakened: a small regression, but on every item (paired tests see it at once).
    assert mean(weak_nll) > mean(good_nll) + 0.05 and mean(weak_nll) < 1
    assert all(w > g for w, g in zip(weak_nll, good_nll))
    if domain == "legal":
        corrupt_nll, corrupt_em = scores["legal", "v2"]
        # Corrupted: a gross one, far worse than weakened (though still better than no adapter).
        assert mean(corrupt_nll) > mean(weak_nll) + 2 and mean(corrupt_em) <= 0.05
        assert all(c > w for c, w in zip(corrupt_nll, weak_nll))


def test_full_fine_tune_quality(scores):
    base_nll, base_em = scores["medical", "base"]
    tuned_nll, tuned_em = scores["medical", "v1"]
    assert mean(base_em) <= 0.05 and mean(tuned_em) >= 0.9
    assert mean(tuned_nll) < 0.1 and mean(base_nll) > 3
    assert all(t < b for t, b in zip(tuned_nll, base_nll))


def test_the_good_adapter_generates_the_reference(models):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(models.base), local_files_only=True)
    model = load_version(models, "support", "v1")
    for item in golden(models, "support")[:4]:
        ids = tokenizer(item["prompt"], add_special_tokens=False, return_tensors="pt")
        out = model.generate(**ids, max_new_tokens=40, do_sample=False)
        text = tokenizer.decode(out[0, ids["input_ids"].shape[1]:], skip_special_tokens=True)
        assert text == item["reference"]


def test_training_is_reproducible(models, monkeypatch, tmp_path):
    """The same seeds give the same adapter bit for bit (a short run; the whole
    build is checked the same way by hand, see BUILD.json's stages)."""
    from safetensors.numpy import load_file

    monkeypatch.setattr(tiny, "LORA_TRAINING", (3, 1e-2, 1))
    monkeypatch.setattr(tiny, "MIN_EXACT_MATCH", {**tiny.MIN_EXACT_MATCH, "legal": 0.0})
    runs = []
    for run in ("a", "b"):
        with tiny._quiet_and_reproducible():
            tiny._train_lora(models.base, "legal", tmp_path / run, set(), log=lambda line: None)
        runs.append(load_file(str(tmp_path / run / "adapter_model.safetensors")))
    assert runs[0].keys() == runs[1].keys()
    assert all((runs[0][name] == runs[1][name]).all() for name in runs[0])
    assert any((runs[0][name] != 0).any() for name in runs[0] if ".lora_B." in name)



def test_the_issues_verdicts_end_to_end(models):
    """Issue 5's acceptance: the good adapter passes against the base, the corrupted
    one regresses against the good active version, the weakened one scores between."""
    from monitor.config import EvalConfig
    from monitor.eval.engine import Evaluator
    from monitor.eval.run import evaluate_version
    from monitor.registry import load_registry

    registry = load_registry(models.registry)
    config = EvalConfig(bootstrap_resamples=2000)
    with Evaluator(registry.base_models["tiny-llama"].path, device="cpu") as evaluator:
        runs = {v: evaluate_version(registry, "legal", v, config=config, evaluator=evaluator)
                for v in ("v1", "v2", "v3")}
    good, corrupted, weakened = runs["v1"], runs["v2"], runs["v3"]
    assert good.verdict == "pass"
    assert [c["baseline"] for c in good.doc["comparisons"]] == ["base", "base"]
    assert corrupted.verdict == "regressed"
    assert any(c["baseline"] == "v1" and c["regressed"] for c in corrupted.doc["comparisons"])
    nll = {v: run.doc["scores"]["nll"] for v, run in runs.items()}
    assert nll["v1"] < nll["v3"] < nll["v2"]
