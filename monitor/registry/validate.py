"""Adapter and fine-tune validation before anything is loaded (DESIGN.md §7).

A version is checked from its files alone, with numpy and the standard library
(never torch, transformers or peft), and either passes with an `AdapterReport`
or is refused with `AdapterRefused`, whose `reason` is a short code and whose
message says what is wrong, where, and how to fix it. A refused version is
never loaded, not even in part.

LoRA adapters (a PEFT folder), in this order:

    pickle           a *.bin / *.pt / *.pth / *.pkl / *.ckpt file in the folder
    no_safetensors   no adapter_model.safetensors
    config           adapter_config.json missing, not JSON, not LoRA, or unsupported
    base_model       trained on another base model than the registry serves
    header           the safetensors header is broken, or the file truncated
    missing_keys     a targeted layer has no tensor (peft only warns; we refuse)
    unexpected_keys  tensors nothing in the config accounts for
    shape            a tensor's shape disagrees with `r` or the base model's sizes
    dtype            a tensor that is not F16 / BF16 / F32 / F64
    non_finite       a tensor holding NaN or Inf

Full fine-tunes: the same codes, with config.json compared to the base model's
(`base_model`) and every weight compared by name and shape to the base's.

The expected LoRA tensors are those peft (0.21) saves for a Llama-style model:
`base_model.model.model.layers.{i}.self_attn.{q,k,v,o}_proj.lora_{A,B}.weight`
and `....mlp.{gate,up,down}_proj.lora_{A,B}.weight`, A shaped [r, in_features]
and B [out_features, r].
"""

from __future__ import annotations

import json
import math
import re
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from monitor.errors import MonitorError

REASONS = ("pickle", "no_safetensors", "config", "base_model", "shape", "non_finite",
           "missing_keys", "unexpected_keys", "dtype", "header")
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".ckpt")
ADAPTER_FILE = "adapter_model.safetensors"
ADAPTER_CONFIG = "adapter_config.json"
# Bytes per element of the safetensors dtypes; sub-byte float formats are left out.
ITEM_SIZES = {"BOOL": 1, "U8": 1, "I8": 1, "F8_E5M2": 1, "F8_E4M3": 1, "F8_E8M0": 1,
              "I16": 2, "U16": 2, "F16": 2, "BF16": 2, "I32": 4, "U32": 4, "F32": 4,
              "I64": 8, "U64": 8, "F64": 8}
FLOAT_DTYPES = {"F16": "<f2", "BF16": "<u2", "F32": "<f4", "F64": "<f8"}
MAX_HEADER_BYTES = 100_000_000  # the safetensors library's own limit
CHUNK_BYTES = 1 << 24  # values are checked 16 MiB at a time, whatever the tensor's size
# Config keys that add tensors or modules this validator does not model.
UNSUPPORTED_LORA = ("use_dora", "modules_to_save", "trainable_token_indices",
                    "target_parameters", "layer_replication", "use_bdlora")
LORA_MODULES = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj",
                "lm_head")  # the linear layers a LoRA may target, in report order
ARCHITECTURE_KEYS = ("architectures", "model_type", "vocab_size", "hidden_size",
                     "intermediate_size", "num_hidden_layers", "num_attention_heads",
                     "num_key_value_heads", "head_dim", "tie_word_embeddings")


class AdapterRefused(MonitorError, ValueError):
    """A version that must not be loaded; `reason` is one of `REASONS`, `path` the
    file or folder at fault."""

    def __init__(self, reason: str, path, message: str):
        super().__init__(f"{path}: {message}")
        self.reason = reason
        self.path = Path(path)
        self.message = message


@dataclass(frozen=True)
class AdapterReport:
    """What a version that passed holds."""

    path: Path
    kind: str  # lora | full
    r: int | None  # the LoRA rank of adapter_config.json; None for a full fine-tune
    target_modules: tuple[str, ...]  # short names: q_proj, ..., down_proj; () for full
    tensors: int
    parameters: int
    dtype: str  # "F32", or "BF16,F32" when the tensors mix dtypes


# -- safetensors -------------------------------------------------------------------------

def read_safetensors_header(path) -> dict:
    """{tensor name: {"dtype", "shape", "data_offsets"}} of a safetensors file,
    refused ("header") unless every tensor lies inside the file, back to back,
    with as many bytes as its shape and dtype need. `__metadata__` is dropped."""
    path = Path(path)
    try:
        with path.open("rb") as f:
            size = f.seek(0, 2)
            f.seek(0)
            if size < 8:
                raise _header(path, f"{size} bytes: too short to be a safetensors file")
            (length,) = struct.unpack("<Q", f.read(8))
            if length > MAX_HEADER_BYTES or 8 + length > size:
                raise _header(path, f"its header claims {length} bytes but the file has "
                              f"{size}: truncated or not safetensors")
            raw = f.read(length)
    except OSError as exc:
        raise _header(path, f"cannot read: {exc.strerror}") from None
    try:
        header = json.loads(raw.decode("utf-8"), object_pairs_hook=_no_duplicates)
    except (UnicodeDecodeError, ValueError) as exc:
        raise _header(path, f"the header is not JSON: {exc}") from None
    if not isinstance(header, dict):
        raise _header(path, "the header is not a JSON object")
    header.pop("__metadata__", None)
    _check_layout(path, header, size - 8 - length)
    return header


def _no_duplicates(pairs):
    keys = [k for k, _ in pairs]
    if len(set(keys)) != len(keys):
        raise ValueError(f"duplicate tensor names {sorted({k for k in keys if keys.count(k) > 1})}")
    return dict(pairs)


def _check_layout(path: Path, header: dict, buffer: int) -> None:
    spans = []
    for name, info in header.items():
        if not (isinstance(info, dict) and isinstance(info.get("dtype"), str)
                and _int_list(info.get("shape")) and _int_list(info.get("data_offsets"))
                and len(info["data_offsets"]) == 2):
            raise _header(path, f"tensor {name!r}: needs dtype, shape and data_offsets "
                          "[begin, end]")
        begin, end = info["data_offsets"]
        need = math.prod(info["shape"]) * ITEM_SIZES.get(info["dtype"], 0)
        if not 0 <= begin <= end or (info["dtype"] in ITEM_SIZES and end - begin != need):
            raise _header(path, f"tensor {name!r}: data_offsets {info['data_offsets']} do not "
                          f"hold a {info['dtype']} tensor of shape {info['shape']} ({need} bytes)")
        spans.append((begin, end, name))
    at = 0
    for begin, end, name in sorted(spans):
        if begin != at:
            raise _header(path, f"tensor {name!r} starts at byte {begin}, expected {at} "
                          "(tensors overlap or leave a gap)")
        at = end
    if at != buffer:
        what = "truncated" if at > buffer else f"{buffer - at} bytes of trailing data"
        raise _header(path, f"the tensors need {at} bytes of data, the file holds {buffer}: "
                      f"{what}; copy or re-save the file")


def _int_list(value) -> bool:
    return isinstance(value, list) and all(type(v) is int and v >= 0 for v in value)


def _header(path: Path, message: str) -> AdapterRefused:
    return AdapterRefused("header", path, f"not a valid safetensors file: {message}")


def count_non_finite(path: Path, header: dict, name: str) -> tuple[int, int]:
    """(NaN count, Inf count) of one float tensor, read in chunks from the file."""
    info = header[name]
    dtype = np.dtype(FLOAT_DTYPES[info["dtype"]])
    begin, end = info["data_offsets"]
    nan = inf = 0
    with path.open("rb") as f:
        (length,) = struct.unpack("<Q", f.read(8))
        f.seek(8 + length + begin)
        left = end - begin
        step = CHUNK_BYTES - CHUNK_BYTES % dtype.itemsize
        while left > 0:
            values = np.frombuffer(f.read(min(step, left)), dtype=dtype)
            left -= values.nbytes
            if info["dtype"] == "BF16":  # bfloat16 is the top half of a float32
                values = (values.astype(np.uint32) << 16).view(np.float32)
            nan += int(np.isnan(values).sum())
            inf += int(np.isinf(values).sum())
    return nan, inf


def _check_values(path: Path, header: dict) -> None:
    for name, info in header.items():
        if info["dtype"] not in FLOAT_DTYPES:
            raise AdapterRefused("dtype", path, f"tensor {name!r} is {info['dtype']}; only "
                                 f"{', '.join(FLOAT_DTYPES)} weights are accepted (quantised "
                                 "or integer weights are not): re-save it in a float dtype")
    for name in header:
        nan, inf = count_non_finite(path, header, name)
        if nan or inf:
            raise AdapterRefused("non_finite", path, f"tensor {name!r} holds {nan} NaN and "
                                 f"{inf} Inf of {math.prod(header[name]['shape'])} values: "
                                 "training diverged; use an earlier checkpoint")


# -- files and configs -------------------------------------------------------------------

def _refuse_pickles(folder: Path) -> None:
    if not folder.is_dir():
        what = "is not a folder" if folder.exists() else "does not exist"
        raise AdapterRefused("no_safetensors", folder, f"the version's folder {what}")
    found = sorted(p.name for p in folder.iterdir() if p.suffix.lower() in PICKLE_SUFFIXES)
    if found:
        raise AdapterRefused("pickle", folder / found[0], f"pickle file(s) {', '.join(found)} "
                             "in the folder; pickles can run code when loaded and are never "
                             "loaded: save with safetensors (save_pretrained(..., "
                             "safe_serialization=True)) and delete them")


def _read_json(path: Path, what: str) -> dict:
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise AdapterRefused("config", path, f"no {path.name}: {what}") from None
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise AdapterRefused("config", path, f"{path.name} is not valid JSON ({exc}); "
                             f"{what}") from None
    if not isinstance(value, dict):
        raise AdapterRefused("config", path, f"{path.name} is not a JSON object; {what}")
    return value


def model_sizes(config: dict, path: Path) -> dict[str, int]:
    """The sizes of a Llama-style config.json, defaults filled in."""
    sizes = {}
    for key in ("hidden_size", "intermediate_size", "num_hidden_layers",
                "num_attention_heads", "vocab_size"):
        if not (type(config.get(key)) is int and config[key] > 0):
            raise AdapterRefused("config", path, f"{key} is {config.get(key)!r}, expected a "
                                 "positive whole number (a Llama-style config.json)")
        sizes[key] = config[key]
    for key, default in (("num_key_value_heads", sizes["num_attention_heads"]),
                         ("head_dim", sizes["hidden_size"] // sizes["num_attention_heads"])):
        value = config.get(key)
        if value is not None and not (type(value) is int and value > 0):
            raise AdapterRefused("config", path, f"{key} is {value!r}, expected a positive "
                                 "whole number or nothing")
        sizes[key] = value or default
    return sizes


def linear_layers(sizes: dict[str, int]) -> dict[str, tuple[int, int]]:
    """Module name (as peft sees it in a *ForCausalLM) -> (in_features, out_features).

    >>> sizes = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1,
    ...          "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 8,
    ...          "vocab_size": 128}
    >>> linear_layers(sizes)["model.layers.0.self_attn.k_proj"]
    (32, 16)
    """
    hidden, inter = sizes["hidden_size"], sizes["intermediate_size"]
    q, kv = sizes["num_attention_heads"] * sizes["head_dim"], \
        sizes["num_key_value_heads"] * sizes["head_dim"]
    shapes = {"self_attn.q_proj": (hidden, q), "self_attn.k_proj": (hidden, kv),
              "self_attn.v_proj": (hidden, kv), "self_attn.o_proj": (q, hidden),
              "mlp.gate_proj": (hidden, inter), "mlp.up_proj": (hidden, inter),
              "mlp.down_proj": (inter, hidden)}
    layers = {f"model.layers.{i}.{m}": s for i in range(sizes["num_hidden_layers"])
              for m, s in shapes.items()}
    layers["lm_head"] = (hidden, sizes["vocab_size"])
    return layers


# -- LoRA --------------------------------------------------------------------------------

def validate_lora(adapter_dir: Path, base_model_dir: Path, base_model_name: str) -> AdapterReport:
    """Check a PEFT LoRA folder against the base model it will be loaded on."""
    folder = Path(adapter_dir).resolve()
    _refuse_pickles(folder)
    weights = folder / ADAPTER_FILE
    if not weights.is_file():
        raise AdapterRefused("no_safetensors", folder, f"no {ADAPTER_FILE}: save the adapter "
                             "with peft's save_pretrained (safetensors is its default)")
    config_path = folder / ADAPTER_CONFIG
    config = _read_json(config_path, "save the adapter with peft's save_pretrained")
    r = _lora_rank(config, config_path)
    _check_base_name(config, config_path, folder, Path(base_model_dir), base_model_name)
    base_config = Path(base_model_dir) / "config.json"
    sizes = model_sizes(_read_json(base_config, "the base model folder must hold the model's "
                                   "config.json"), base_config)
    try:
        expected = _expected_lora(config, config_path, r, linear_layers(sizes))
    except re.error as exc:
        raise AdapterRefused("config", config_path, f"a module pattern is not a valid regular "
                             f"expression: {exc}") from None
    header = read_safetensors_header(weights)
    _check_names(weights, header, expected, "the adapter does not match the base model's "
                 f"layers ({sizes['num_hidden_layers']} layers)", "peft would load it with only "
                 "a warning, leaving those layers without the adapter")
    for name, (shape, why) in expected.items():
        got = header[name]["shape"]
        if got != list(shape):
            raise AdapterRefused("shape", weights, f"tensor {name!r} has shape {got}, expected "
                                 f"{list(shape)} ({why}); was it trained with another r or on "
                                 "another base model?")
    _check_values(weights, header)
    short = {n.rsplit(".", 3)[-3] for n in expected}  # ...q_proj.lora_A.weight -> q_proj
    return _report(folder, "lora", r, tuple(m for m in LORA_MODULES if m in short), header)


def _lora_rank(config: dict, path: Path) -> int:
    if config.get("peft_type") != "LORA":
        raise AdapterRefused("config", path, f"peft_type is {config.get('peft_type')!r}; only "
                             "LORA adapters are served")
    r = config.get("r")
    if not (type(r) is int and r > 0):
        raise AdapterRefused("config", path, f"r is {r!r}, expected a positive whole number")
    for key in UNSUPPORTED_LORA:
        if config.get(key):
            raise AdapterRefused("config", path, f"{key} is set ({config[key]!r}); adapters "
                                 "using it are not supported: train a plain LoRA adapter")
    return r


def _check_base_name(config: dict, path: Path, folder: Path, base_dir: Path, name: str) -> None:
    given = config.get("base_model_name_or_path")
    if given == name:
        return
    if isinstance(given, str) and given:
        candidates = [Path(given).expanduser()]
        if not candidates[0].is_absolute():
            candidates.append(folder / candidates[0])
        if any(_same_path(c, base_dir) for c in candidates):
            return
    served = f"{name!r} ({base_dir})"
    raise AdapterRefused("base_model", path, (
        f"the adapter was trained on {given!r}, the registry serves {served}; retrain it on "
        f"{name!r}, or, if it was trained on that model, set base_model_name_or_path to "
        f"{name!r} or {str(base_dir)!r}") if given else (
        f"base_model_name_or_path is not set, so the adapter's base model is unknown; the "
        f"registry serves {served}: set it to {name!r} if that is the model it was trained on"))


def _same_path(a: Path, b: Path) -> bool:
    try:
        return a.resolve() == b.resolve()
    except (OSError, RuntimeError):
        return False


def _expected_lora(config: dict, path: Path, r: int, layers: dict) -> dict:
    """Tensor name -> (shape, why that shape) of every tensor the adapter must hold."""
    targets = config.get("target_modules")
    if isinstance(targets, str) and targets.lower() == "all-linear":
        targets = [m for m in LORA_MODULES if m != "lm_head"]
    if not (isinstance(targets, str) or (isinstance(targets, list) and targets
                                         and all(isinstance(t, str) for t in targets))):
        raise AdapterRefused("config", path, f"target_modules is {targets!r}, expected a list "
                             "of module names (or a regular expression)")
    wanted = config.get("layers_to_transform")
    if not (wanted is None or type(wanted) is int
            or (isinstance(wanted, list) and all(type(i) is int for i in wanted))):
        raise AdapterRefused("config", path, f"layers_to_transform is {wanted!r}, expected a "
                             "layer number or a list of them")
    chosen = [m for m in layers if _targeted(config, targets, m)]
    if isinstance(targets, list):
        unknown = [t for t in targets if not any(m == t or m.endswith("." + t) for m in layers)]
    else:
        unknown = [] if chosen else [targets]
    if unknown:
        raise AdapterRefused("config", path, f"target_modules {unknown} match none of the base "
                             f"model's linear layers ({', '.join(LORA_MODULES)}); embeddings and "
                             "other module types are not supported")
    ranks = config.get("rank_pattern") or {}
    if not (isinstance(ranks, dict) and all(type(v) is int and v > 0 for v in ranks.values())):
        raise AdapterRefused("config", path, f"rank_pattern is {ranks!r}, expected a mapping "
                             "of module pattern to a positive rank")
    bias = bool(config.get("lora_bias"))
    expected = {}
    for module in chosen:
        fan_in, fan_out = layers[module]
        key = next((k for k in ranks if re.match(rf"(.*\.)?({k})$", module)), None)
        rank, source = (ranks[key], f"rank_pattern[{key!r}]") if key else (r, "r")
        prefix = f"base_model.model.{module}"
        expected[f"{prefix}.lora_A.weight"] = (
            (rank, fan_in), f"lora_A is [{source}={rank}, in_features={fan_in} of {module}]")
        expected[f"{prefix}.lora_B.weight"] = (
            (fan_out, rank), f"lora_B is [out_features={fan_out} of {module}, {source}={rank}]")
        if bias:
            expected[f"{prefix}.lora_B.bias"] = ((fan_out,), f"out_features of {module}")
    return expected


def _targeted(config: dict, targets, module: str) -> bool:
    """Whether peft would put a LoRA on `module` (peft's check_target_module_exists)."""
    excluded = config.get("exclude_modules")
    if isinstance(excluded, str) and re.fullmatch(excluded, module):
        return False
    if isinstance(excluded, list) and any(module == e or module.endswith("." + e)
                                          for e in excluded):
        return False
    if isinstance(targets, str):
        return re.fullmatch(targets, module) is not None
    if module in targets:
        return True
    if not any(module.endswith("." + t) for t in targets):
        return False
    wanted = config.get("layers_to_transform")
    if wanted is None or wanted == []:
        return True
    found = re.match(r".*?\.[^.]*\.(?P<idx>\d+)\.", module)
    if found is None:
        return False
    index = int(found["idx"])
    return index == wanted if isinstance(wanted, int) else index in wanted


# -- full fine-tunes ---------------------------------------------------------------------

def validate_full(model_dir: Path, base_model_dir: Path) -> AdapterReport:
    """Check a full fine-tune: the base model's architecture and sizes, the same
    weights (names and shapes), safetensors only, finite values."""
    folder = Path(model_dir).resolve()
    base = Path(base_model_dir)
    _refuse_pickles(folder)
    config_path = folder / "config.json"
    config = _read_json(config_path, "save the model with save_pretrained")
    base_config = _read_json(base / "config.json", "the base model folder must hold the "
                             "model's config.json")
    model_sizes(config, config_path)
    ours, theirs = _architecture(config), _architecture(base_config)
    differ = [f"{k} {ours[k]!r} (base: {theirs[k]!r})" for k in ours if ours[k] != theirs[k]]
    if differ:
        raise AdapterRefused("base_model", config_path, "not a fine-tune of the registry's base "
                             f"model {base}: {'; '.join(differ)}")
    files = _weight_files(folder)
    headers = {path: read_safetensors_header(path) for path in files}
    _check_index(folder, headers)
    weights = {name: (path, info) for path, h in headers.items() for name, info in h.items()}
    base_weights = {name: info for path in _weight_files(base, "the base model's")
                    for name, info in read_safetensors_header(path).items()}
    _check_names(folder, weights, base_weights, "the fine-tune's weights differ from the base "
                 "model's", "transformers would initialise missing weights at random")
    for name, (path, info) in weights.items():
        if info["shape"] != base_weights[name]["shape"]:
            raise AdapterRefused("shape", path, f"weight {name!r} has shape {info['shape']}, the "
                                 f"base model's is {base_weights[name]['shape']}")
    for path, header in headers.items():
        _check_values(path, header)
    return _report(folder, "full", None, (), {n: info for n, (_, info) in weights.items()})


def _architecture(config: dict) -> dict:
    sizes = {k: config.get(k) for k in ARCHITECTURE_KEYS}
    heads, hidden = sizes["num_attention_heads"], sizes["hidden_size"]
    sizes["num_key_value_heads"] = sizes["num_key_value_heads"] or heads
    if not sizes["head_dim"] and type(heads) is int and type(hidden) is int and heads:
        sizes["head_dim"] = hidden // heads
    sizes["tie_word_embeddings"] = bool(sizes["tie_word_embeddings"])
    return sizes


def _weight_files(folder: Path, whose: str = "the") -> list[Path]:
    single, index = folder / "model.safetensors", folder / "model.safetensors.index.json"
    if single.is_file():
        return [single]
    if not index.is_file():
        raise AdapterRefused("no_safetensors", folder, f"{whose} folder has no "
                             "model.safetensors or model.safetensors.index.json: save it with "
                             "save_pretrained(..., safe_serialization=True)")
    weight_map = _read_json(index, "re-save the model").get("weight_map")
    if not (isinstance(weight_map, dict) and weight_map
            and all(isinstance(v, str) for v in weight_map.values())):
        raise AdapterRefused("config", index, "weight_map is missing or not a mapping of "
                             "weight name to shard file")
    shards = []
    for shard in sorted(set(weight_map.values())):
        path = folder / shard
        if "/" in shard or "\\" in shard or not shard.endswith(".safetensors") \
                or not path.is_file():
            raise AdapterRefused("no_safetensors", index, f"shard {shard!r} is missing or not "
                                 "a .safetensors file in the folder")
        shards.append(path)
    return shards


def _check_index(folder: Path, headers: dict[Path, dict]) -> None:
    index = folder / "model.safetensors.index.json"
    if len(headers) == 1 and next(iter(headers)).name == "model.safetensors":
        return
    weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
    held = {name: path.name for path, header in headers.items() for name in header}
    wrong = sorted(n for n, shard in weight_map.items() if held.get(n) != shard)
    stray = sorted(set(held) - set(weight_map))
    if wrong or stray:
        example = (wrong or stray)[0]
        raise AdapterRefused("header", index, f"the index and the shards disagree on "
                             f"{len(wrong) + len(stray)} weight(s), e.g. {example!r}: re-save "
                             "the model")


# -- shared ------------------------------------------------------------------------------

def _check_names(path: Path, got: dict, expected: dict, why: str, if_missing: str) -> None:
    for reason, names, hint in (
            ("missing_keys", sorted(set(expected) - set(got)), if_missing),
            ("unexpected_keys", sorted(set(got) - set(expected)),
             "they would be ignored or loaded into the wrong place")):
        if names:
            shown = ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3
                                             else "")
            what = "missing" if reason == "missing_keys" else "unexpected"
            raise AdapterRefused(reason, path, f"{len(names)} {what} tensor(s): {shown}; {why}"
                                 f" ({hint}): re-save it from a model built on this base model")


def _report(folder: Path, kind: str, r, targets: tuple, header: dict) -> AdapterReport:
    dtypes = ",".join(sorted({info["dtype"] for info in header.values()}))
    parameters = sum(math.prod(info["shape"]) for info in header.values())
    return AdapterReport(folder, kind, r, targets, len(header), parameters, dtypes)


def validate_version(registry, domain: str, version: str) -> AdapterReport:
    """Validate a version of a registry's domain against the domain's base model;
    `KeyError` for a domain or version the registry does not have."""
    if domain not in registry.domains:
        raise KeyError(f"no domain {domain!r} in {registry.path}")
    dom = registry.domains[domain]
    if version not in dom.versions or dom.versions[version] is None:
        raise KeyError(f"domain {domain!r} has no version {version!r} in {registry.path}")
    base = registry.base_models[dom.base_model]
    path = dom.versions[version].path
    if dom.kind == "full":
        return validate_full(path, base.path)
    return validate_lora(path, base.path, base.name)
