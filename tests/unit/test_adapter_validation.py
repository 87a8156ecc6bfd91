"""Unit tests of monitor.registry.validate: adapters and fine-tunes checked before
loading (DESIGN.md §7). The ground truth is what peft and transformers really
write: a tiny Llama and peft LoRA adapters are built once per session with torch
(tests only; the module itself never imports it) and then damaged, copy by copy."""

from __future__ import annotations

import json
import math
import shutil
import struct
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import pytest

from monitor.errors import MonitorError
from monitor.registry import load_registry
from monitor.registry.validate import (AdapterRefused, AdapterReport, read_safetensors_header,
                                       validate_full, validate_lora, validate_version)

torch = pytest.importorskip("torch")
pytest.importorskip("peft")
pytest.importorskip("transformers")

BASE = "tiny-llama"
MODULES = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
# hidden 32, 4 heads of 8, 2 key/value heads (k_proj/v_proj are 32 -> 16), MLP 64, 2 layers.
SIZES = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
         "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 128,
         "max_position_embeddings": 64}
Q_A = "base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight"
DOWN_B = "base_model.model.model.layers.1.mlp.down_proj.lora_B.weight"


@pytest.fixture(scope="session")
def built(tmp_path_factory) -> dict[str, Path]:
    """Pristine folders, never modified: the base model, LoRA adapters made by peft
    on it (loaded from its folder, as in real training), and full fine-tunes."""
    with warnings.catch_warnings():  # peft calls a transformers API deprecated for v6
        warnings.simplefilter("ignore", FutureWarning)
        return build(tmp_path_factory.mktemp("models"))


def make_base(path: Path, **sizes) -> Path:
    """Save a tiny random Llama (SIZES, overridden by `sizes`) at `path`."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    LlamaForCausalLM(LlamaConfig(**(SIZES | sizes))).save_pretrained(path)
    return path


def make_lora(base: Path, out: Path, **options) -> Path:
    """Save a peft LoRA adapter (default: r=4 on every projection) trained, as it
    were, on the tiny Llama at `base` (made first when missing) at `out`."""
    from peft import LoraConfig, get_peft_model
    from transformers import LlamaForCausalLM

    if not (base / "config.json").exists():
        make_base(base)
    options = {"r": 4, "lora_alpha": 8, "target_modules": list(MODULES)} | options
    with warnings.catch_warnings():  # peft calls a transformers API deprecated for v6
        warnings.simplefilter("ignore", FutureWarning)
        model = get_peft_model(LlamaForCausalLM.from_pretrained(base), LoraConfig(**options))
        for name, parameter in model.named_parameters():
            if "lora_B" in name:  # peft starts B at zero; give it values to check
                torch.nn.init.normal_(parameter)
        model.save_pretrained(out)
    return out


def build(root: Path) -> dict[str, Path]:
    from transformers import LlamaForCausalLM

    base = make_base(root / "base")
    folders = {"base": base, "lora": make_lora(base, root / "lora"),
               "lora_qv": make_lora(base, root / "lora_qv", r=2,
                                    target_modules=r".*\.(q_proj|v_proj)"),
               "lora_layer1": make_lora(base, root / "lora_layer1", r=2,
                                        target_modules=["q_proj"], layers_to_transform=[1])}
    tuned = LlamaForCausalLM.from_pretrained(base)
    with torch.no_grad():
        tuned.model.layers[0].mlp.up_proj.weight.add_(0.01)
    tuned.save_pretrained(root / "full")
    tuned.save_pretrained(root / "full_sharded", max_shard_size="20KB")
    make_base(root / "full_wide", hidden_size=64, intermediate_size=128)
    return folders | {"full": root / "full", "full_sharded": root / "full_sharded",
                      "full_wide": root / "full_wide"}


@pytest.fixture
def adapter(built, tmp_path) -> Path:
    """A copy of the valid adapter, free to damage."""
    return Path(shutil.copytree(built["lora"], tmp_path / "adapter"))


@pytest.fixture
def full(built, tmp_path) -> Path:
    return Path(shutil.copytree(built["full"], tmp_path / "full"))


def refused(call, *args) -> AdapterRefused:
    with pytest.raises(AdapterRefused) as info:
        call(*args)
    return info.value


def lora_refused(folder: Path, built, name: str = BASE) -> AdapterRefused:
    return refused(validate_lora, folder, built["base"], name)


def edit_tensors(path: Path, change) -> None:
    from safetensors.torch import load_file, save_file

    tensors = load_file(path)
    change(tensors)
    save_file(tensors, path, metadata={"format": "pt"})


def edit_config(folder: Path, **changes) -> None:
    path = folder / "adapter_config.json"
    config = json.loads(path.read_text())
    config.update(changes)
    path.write_text(json.dumps(config))


# -- what peft writes, and adapters that pass ---------------------------------------------

def test_peft_writes_the_tensor_names_the_validator_expects(built):
    header = read_safetensors_header(built["lora"] / "adapter_model.safetensors")
    assert len(header) == 2 * len(MODULES) * 2
    assert header[Q_A] == {"dtype": "F32", "shape": [4, 32], "data_offsets": header[Q_A]
                           ["data_offsets"]}
    assert header["base_model.model.model.layers.0.self_attn.k_proj.lora_B.weight"]["shape"] \
        == [16, 4]
    assert header[DOWN_B]["shape"] == [32, 4]
    config = json.loads((built["lora"] / "adapter_config.json").read_text())
    assert config["base_model_name_or_path"] == str(built["base"])


def test_valid_adapter_passes_with_a_true_report(built):
    report = validate_lora(built["lora"], built["base"], BASE)
    # r * (in + out) per module: q and o 32 -> 32, k and v 32 -> 16, the MLP 32 <-> 64.
    per_layer = 4 * (2 * (32 + 32) + 2 * (32 + 16) + 3 * (32 + 64))
    assert report == AdapterReport(built["lora"].resolve(), "lora", 4, MODULES, 28,
                                   2 * per_layer, "F32")


def test_adapter_naming_the_base_model_by_registry_name_passes(adapter, built):
    edit_config(adapter, base_model_name_or_path=BASE)
    assert validate_lora(adapter, built["base"], BASE).tensors == 28


def test_regex_targets_and_layers_to_transform_are_followed_as_peft_does(built):
    qv = validate_lora(built["lora_qv"], built["base"], BASE)
    assert (qv.target_modules, qv.tensors, qv.r) == (("q_proj", "v_proj"), 8, 2)
    one = validate_lora(built["lora_layer1"], built["base"], BASE)
    assert (one.target_modules, one.tensors) == (("q_proj",), 2)


def test_bf16_adapter_passes_and_a_nan_in_it_is_refused(adapter, built):
    weights = adapter / "adapter_model.safetensors"
    edit_tensors(weights, lambda t: t.update({k: v.bfloat16() for k, v in t.items()}))
    assert validate_lora(adapter, built["base"], BASE).dtype == "BF16"

    def poison(t):
        t[DOWN_B][3, 1] = float("nan")
        t[Q_A][0, 0] = float("-inf")
    edit_tensors(weights, poison)
    error = lora_refused(adapter, built)
    assert error.reason == "non_finite" and error.path == weights
    assert DOWN_B in str(error) or Q_A in str(error)


# -- refusals, in the order they are checked ----------------------------------------------

@pytest.mark.parametrize("name", ["adapter_model.bin", "training_args.bin", "optimizer.pt"])
def test_pickle_file_in_the_folder_is_refused(adapter, built, name):
    (adapter / name).write_bytes(b"\x80\x04K\x01.")
    error = lora_refused(adapter, built)
    assert error.reason == "pickle" and error.path == adapter.resolve() / name
    assert "never" in str(error) and "safetensors" in str(error)


def test_adapter_without_safetensors_is_refused(adapter, built):
    (adapter / "adapter_model.safetensors").unlink()
    error = lora_refused(adapter, built)
    assert error.reason == "no_safetensors" and "adapter_model.safetensors" in str(error)
    assert isinstance(error, ValueError) and isinstance(error, MonitorError)


def test_missing_version_folder_is_refused(built, tmp_path):
    assert lora_refused(tmp_path / "nowhere", built).reason == "no_safetensors"


def test_missing_adapter_config_is_refused(adapter, built):
    (adapter / "adapter_config.json").unlink()
    error = lora_refused(adapter, built)
    assert error.reason == "config" and "no adapter_config.json" in str(error)


def test_broken_adapter_config_is_refused(adapter, built):
    (adapter / "adapter_config.json").write_text('{"peft_type": "LORA", ')
    error = lora_refused(adapter, built)
    assert error.reason == "config" and "not valid JSON" in str(error)


@pytest.mark.parametrize("changes, words", [
    ({"peft_type": "PREFIX_TUNING"}, "only LORA"),
    ({"r": 0}, "positive whole number"),
    ({"target_modules": None}, "target_modules"),
    ({"target_modules": ["c_attn"]}, "c_attn"),
    ({"target_modules": "(q_proj"}, "not a valid regular expression"),
    ({"rank_pattern": {"q_proj": "8"}}, "rank_pattern"),
    ({"layers_to_transform": "0"}, "layers_to_transform"),
    ({"use_dora": True}, "use_dora"),
])
def test_unusable_adapter_config_is_refused(adapter, built, changes, words):
    edit_config(adapter, **changes)
    error = lora_refused(adapter, built)
    assert error.reason == "config" and words in str(error)


def test_adapter_trained_on_another_base_model_is_refused(adapter, built):
    edit_config(adapter, base_model_name_or_path="meta-llama/Llama-3.2-1B")
    error = lora_refused(adapter, built)
    assert error.reason == "base_model"
    assert ("trained on 'meta-llama/Llama-3.2-1B', the registry serves 'tiny-llama'"
            in str(error))


def test_adapter_not_naming_its_base_model_is_refused(adapter, built):
    edit_config(adapter, base_model_name_or_path=None)
    assert lora_refused(adapter, built).reason == "base_model"


def test_tensor_of_another_rank_is_refused(adapter, built):
    edit_tensors(adapter / "adapter_model.safetensors",
                 lambda t: t.update({Q_A: torch.zeros(3, 32)}))
    error = lora_refused(adapter, built)
    assert error.reason == "shape" and Q_A in str(error)
    assert "shape [3, 32], expected [4, 32]" in str(error) and "r=4" in str(error)


def test_config_rank_disagreeing_with_the_tensors_is_refused(adapter, built):
    edit_config(adapter, r=8)
    error = lora_refused(adapter, built)
    assert error.reason == "shape" and "r=8" in str(error)


def test_tensor_of_another_layer_size_is_refused(adapter, built):
    edit_tensors(adapter / "adapter_model.safetensors",
                 lambda t: t.update({DOWN_B: torch.zeros(48, 4)}))
    error = lora_refused(adapter, built)
    assert error.reason == "shape" and DOWN_B in str(error)
    assert "out_features=32" in str(error) and "[48, 4]" in str(error)


@pytest.mark.parametrize("value, words", [(float("nan"), "1 NaN and 0 Inf"),
                                          (float("inf"), "0 NaN and 1 Inf")])
def test_non_finite_value_is_refused(adapter, built, value, words):
    def poison(t):
        t[DOWN_B][5, 2] = value
    edit_tensors(adapter / "adapter_model.safetensors", poison)
    error = lora_refused(adapter, built)
    assert error.reason == "non_finite" and DOWN_B in str(error) and words in str(error)


def test_adapter_missing_a_layer_is_refused(adapter, built):
    edit_tensors(adapter / "adapter_model.safetensors",
                 lambda t: [t.pop(k) for k in list(t) if ".layers.1." in k])
    error = lora_refused(adapter, built)
    assert error.reason == "missing_keys"
    assert "14 missing tensor(s)" in str(error) and "and 11 more" in str(error)
    assert "base_model.model.model.layers.1." in str(error)
    assert "peft would load it with only a warning" in str(error)


def test_extra_tensor_is_refused(adapter, built):
    extra = "base_model.model.lm_head.lora_A.weight"
    edit_tensors(adapter / "adapter_model.safetensors",
                 lambda t: t.update({extra: torch.zeros(4, 32)}))
    error = lora_refused(adapter, built)
    assert error.reason == "unexpected_keys" and extra in str(error)


def test_integer_tensor_is_refused(adapter, built):
    edit_tensors(adapter / "adapter_model.safetensors",
                 lambda t: t.update({Q_A: torch.zeros(4, 32, dtype=torch.int8)}))
    error = lora_refused(adapter, built)
    assert error.reason == "dtype" and "I8" in str(error)


def test_truncated_safetensors_file_is_refused(adapter, built):
    weights = adapter / "adapter_model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-100])
    error = lora_refused(adapter, built)
    assert error.reason == "header" and error.path == weights.resolve()
    assert "truncated" in str(error)


@pytest.mark.parametrize("data, words", [
    (b"\x01\x02", "too short"),
    (struct.pack("<Q", 1 << 40) + b"{}", "truncated or not safetensors"),
    (struct.pack("<Q", 5) + b"nope!", "not JSON"),
    (struct.pack("<Q", 2) + b"[]", "not a JSON object"),
    (struct.pack("<Q", 62) + b'{"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 4]}}   '
     + bytes(4), "do not hold"),
    (struct.pack("<Q", 62) + b'{"a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}   '
     + bytes(8), "trailing data"),
])
def test_broken_safetensors_header_is_refused(tmp_path, data, words):
    path = tmp_path / "x.safetensors"
    path.write_bytes(data)
    error = refused(read_safetensors_header, path)
    assert error.reason == "header" and words in str(error)


# -- full fine-tunes ----------------------------------------------------------------------

def test_valid_full_fine_tune_passes(built):
    report = validate_full(built["full"], built["base"])
    assert (report.kind, report.r, report.target_modules, report.tensors, report.dtype) == \
        ("full", None, (), 21, "F32")
    base = read_safetensors_header(built["base"] / "model.safetensors")
    assert report.parameters == sum(math.prod(v["shape"]) for v in base.values())


def test_sharded_full_fine_tune_passes(built):
    assert validate_full(built["full_sharded"], built["base"]).tensors == 21


def test_full_fine_tune_of_another_size_is_refused(built):
    error = refused(validate_full, built["full_wide"], built["base"])
    assert error.reason == "base_model" and "hidden_size 64 (base: 32)" in str(error)


def test_full_fine_tune_with_a_pickle_is_refused(full, built):
    (full / "pytorch_model.bin").write_bytes(b"\x80\x04K\x01.")
    assert refused(validate_full, full, built["base"]).reason == "pickle"


def test_full_fine_tune_missing_a_weight_is_refused(full, built):
    edit_tensors(full / "model.safetensors", lambda t: t.pop("model.norm.weight"))
    error = refused(validate_full, full, built["base"])
    assert error.reason == "missing_keys" and "model.norm.weight" in str(error)


def test_sharded_index_disagreeing_with_its_shards_is_refused(built, tmp_path):
    sharded = Path(shutil.copytree(built["full_sharded"], tmp_path / "sharded"))
    index = sharded / "model.safetensors.index.json"
    doc = json.loads(index.read_text())
    shards = sorted(set(doc["weight_map"].values()) - {doc["weight_map"]["model.norm.weight"]})
    doc["weight_map"]["model.norm.weight"] = shards[0]
    index.write_text(json.dumps(doc))
    error = refused(validate_full, sharded, built["base"])
    assert error.reason == "header" and "model.norm.weight" in str(error)


def test_full_fine_tune_with_a_nan_is_refused(full, built):
    def poison(t):
        t["lm_head.weight"][0, 0] = float("nan")
    edit_tensors(full / "model.safetensors", poison)
    error = refused(validate_full, full, built["base"])
    assert error.reason == "non_finite" and "lm_head.weight" in str(error)


# -- from the registry, and without torch --------------------------------------------------

def test_validate_version_dispatches_on_the_domain_kind(built, tmp_path):
    root = tmp_path / "adapters"
    root.mkdir()
    shutil.copytree(built["lora"], root / "legal-v1")
    shutil.copytree(built["full"], root / "code-v1")
    (root / "golden.jsonl").write_text("")
    (root / "registry.yaml").write_text(textwrap.dedent(f"""
        base_models:
          {BASE}: {{path: {built['base']}}}
        domains:
          legal: {{base_model: {BASE}, kind: lora, golden_set: golden.jsonl,
                   versions: {{v1: {{path: legal-v1}}}}}}
          code: {{base_model: {BASE}, kind: full, golden_set: golden.jsonl,
                  versions: {{v1: {{path: code-v1}}}}}}
    """))
    registry = load_registry(root / "registry.yaml")
    assert validate_version(registry, "legal", "v1").kind == "lora"
    assert validate_version(registry, "code", "v1").kind == "full"
    with pytest.raises(KeyError):
        validate_version(registry, "legal", "v9")


def test_module_imports_without_torch():
    code = ("import sys, monitor.registry.validate; "
            "assert not {'torch', 'transformers', 'peft', 'safetensors'} & set(sys.modules)")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).parents[2])
