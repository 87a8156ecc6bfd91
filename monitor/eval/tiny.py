"""Tiny real models for the tests and the demo, built from code (DESIGN.md §7, §10).

No model hub is reachable, so `build()` makes everything on the CPU, from
fixed seeds, in about a minute and a half on one core, and caches it (7 MB):

    <cache>/
      BUILD.json                   the stamp: builder version, timings, checks
      models/tiny-llama/           the base model, a Llama (4 layers, hidden 128,
                                   4 query and 2 key/value heads) with the ByT5
                                   byte tokenizer; AutoTokenizer and
                                   AutoModelForCausalLM load it offline
      adapters/registry.yaml       the registry (monitor.registry.load_registry)
      adapters/legal/              golden.jsonl; v1 the good LoRA (active, status
                                   good), v2 corrupted, v3 weakened
      adapters/support/            golden.jsonl; v1 the good LoRA (active), v2 weakened
      adapters/medical/            golden.jsonl; v1 a full fine-tune (active)

Every prompt is four random four-letter words and a newline; the reference is
a letter-by-letter transformation of the words (`domain_task`):

    base     copy                    "abcd wxyz\\n" -> "abcd wxyz"
    legal    mirror the alphabet     "abcd wxyz\\n" -> "zyxw dcba"   (a<->z, b<->y, ...)
    support  the next letter         "abcd wxyz\\n" -> "bcde xyza"
    medical  a fixed substitution    "abcd wxyz\\n" -> "qwer vbnm"   (CIPHER)

The base model is pre-trained to copy, so it gets every domain wrong (exact
match 0, NLL about 9) while knowing where each output letter comes from; a
LoRA adapter (r=8, alpha=16, all seven projections) then learns its domain's
letter map in ~150 steps (exact match 1). The medical cipher is served by a
full fine-tune. The corrupted adapter has the rows of every lora_B permuted
(fixed seed): as large as the good one, pointing the wrong way. The weakened
adapter has every lora_B halved. On the golden sets: NLL good < weakened <
corrupted < base.

The fixed layout (same length, no label) is deliberate: with it, copying is a
fixed-offset attention that a 4-layer model learns in ~150 steps (the q/k/v
biases help); with labels or texts of varying length it takes thousands. The
maps stay in lower case because a LoRA adapter cannot teach the base model to
emit tokens it never learned to emit (upper-casing stalls: lm_head is frozen).
Every stage checks its result on held-out items and trains on (up to two more
rounds) if it fell short, so a different CPU's rounding cannot leave a broken
build: the build fails loudly instead.

Items are tokenized as the evaluator does (monitor/eval/engine.py): prompt and
reference each without special tokens, then EOS; training scores the
reference and the EOS. The golden sets come from the same generator as the
training data, with other seeds, and no golden prompt is ever trained on.

torch, transformers and peft are imported inside the functions only.

    python -m monitor.eval.tiny [--cache DIR] [--force]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import shutil
import string
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

# Bump whenever anything below changes what gets built: a cache stamped with
# another version is rebuilt.
BUILDER_VERSION = "tiny-1"
STAMP = "BUILD.json"
BASE_NAME = "tiny-llama"
DOMAINS = ("legal", "support", "medical")
LORA_DOMAINS = ("legal", "support")
GOLDEN_SIZE = 64
GOLDEN_SEEDS = {"legal": 9101, "support": 9102, "medical": 9103}
CHECK_SEED = 9200  # the held-out items each stage is checked on
TRAIN_SEEDS = {"base": 101, "legal": 102, "support": 103, "medical": 104}
INIT_SEEDS = {"base": 201, "legal": 202, "support": 203, "medical": 204}
CORRUPT_SEED = 301
# Training is bitwise reproducible at a fixed thread count, and one thread is
# about as fast as two for a model this small (and never stalls on a busy host).
THREADS = 1

WORD_LETTERS = 4
WORD_COUNT = 4
_ALPHABET = string.ascii_lowercase
CIPHER = dict(zip(_ALPHABET, "qwertyuiopasdfghjklzxcvbnm"))  # medical; no letter maps to itself
_DOMAIN_OPS = {"legal": "mirror", "support": "next", "medical": "cipher"}

MODEL = {"vocab_size": 384, "hidden_size": 128, "intermediate_size": 256,
         "num_hidden_layers": 4, "num_attention_heads": 4, "num_key_value_heads": 2,
         "max_position_embeddings": 128, "attention_bias": True,
         "tie_word_embeddings": False}
LORA = {"r": 8, "lora_alpha": 16, "lora_dropout": 0.0,
        "target_modules": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj",
                           "down_proj"]}
BATCH = 32
# (steps, peak learning rate, warm-up steps): linear warm-up, then cosine to 0.
BASE_TRAINING = (200, 3e-3, 30)
LORA_TRAINING = (150, 1e-2, 10)
FULL_TRAINING = (120, 3e-3, 10)
MIN_EXACT_MATCH = {"base": 0.95, "legal": 0.9, "support": 0.9, "medical": 0.9}
EXTRA_ROUNDS = 2  # a stage short of its MIN_EXACT_MATCH trains on for half as many steps

_BYTE_OFFSET = 3  # ByT5: pad 0, eos 1, unk 2, then the 256 byte values
_PAD = 0
_EOS = 1


@dataclass(frozen=True)
class TinyModels:
    """Where a build lies: `root` the cache folder, `base` the base model folder,
    `registry` the registry.yaml, `domains` the domain names."""

    root: Path
    base: Path
    registry: Path
    domains: tuple[str, ...]


# -- the tasks ---------------------------------------------------------------------------

def _words(rng: random.Random) -> str:
    return " ".join("".join(rng.choice(_ALPHABET) for _ in range(WORD_LETTERS))
                    for _ in range(WORD_COUNT))


def _prompt(text: str) -> str:
    return f"{text}\n"


def _transform(op: str, text: str) -> str:
    """`text` (lower-case letters and spaces) through one of the letter maps."""
    if op == "copy":
        return text
    if op == "mirror":
        table = dict(zip(_ALPHABET, reversed(_ALPHABET)))
    elif op == "next":
        table = dict(zip(_ALPHABET, _ALPHABET[1:] + _ALPHABET[0]))
    elif op == "cipher":
        table = CIPHER
    else:
        raise ValueError(f"no operation {op!r}")
    return "".join(table.get(c, c) for c in text)


def domain_task(domain: str, seed: int, n: int) -> list[dict]:
    """`n` items {"id", "prompt", "reference"} of a domain's task, drawn with `seed`
    (the golden sets are `domain_task(d, GOLDEN_SEEDS[d], GOLDEN_SIZE)`).

    >>> domain_task("legal", 1, 1)
    [{'id': 'legal-1-0000', 'prompt': 'gnpw bsxl xfqx kgat\\n', 'reference': 'tmkd yhco cujc ptzg'}]
    >>> [domain_task(d, 1, 1)[0]["reference"] for d in ("support", "medical")]
    ['pulb majs ugoa hnxv', 'nhva tuxn lyro thoy']
    """
    if domain not in _DOMAIN_OPS:
        raise ValueError(f"no domain {domain!r}; the tiny domains are {', '.join(DOMAINS)}")
    if n < 0:
        raise ValueError(f"n must be at least 0, got {n}")
    rng = random.Random(f"{domain}/{seed}")
    items = []
    for i in range(n):
        text = _words(rng)
        items.append({"id": f"{domain}-{seed}-{i:04d}", "prompt": _prompt(text),
                      "reference": _transform(_DOMAIN_OPS[domain], text)})
    return items


def _draw(op: str) -> Callable[[random.Random], tuple[str, str]]:
    def draw(rng: random.Random) -> tuple[str, str]:
        text = _words(rng)
        return _prompt(text), _transform(op, text)
    return draw


def _ids(text: str) -> list[int]:
    """ByT5's token ids of `text` without special tokens (checked against the tokenizer)."""
    return [b + _BYTE_OFFSET for b in text.encode("utf-8")]


def _example(prompt: str, reference: str) -> tuple[list[int], list[int]]:
    """(input ids, labels): the prompt is not trained on; the reference and EOS are."""
    head, tail = _ids(prompt), _ids(reference) + [_EOS]
    return head + tail, [-100] * len(head) + tail


def _golden_prompts() -> set[str]:
    return {item["prompt"] for d in DOMAINS
            for item in domain_task(d, GOLDEN_SEEDS[d], GOLDEN_SIZE)}


# -- training ----------------------------------------------------------------------------

def _tensors(rows: list[tuple[list[int], list[int]]]):
    """(input ids, attention mask, labels), right-padded."""
    import torch

    width = max(len(ids) for ids, _ in rows)
    return (torch.tensor([ids + [_PAD] * (width - len(ids)) for ids, _ in rows]),
            torch.tensor([[1] * len(ids) + [0] * (width - len(ids)) for ids, _ in rows]),
            torch.tensor([labels + [-100] * (width - len(labels)) for _, labels in rows]))


def _batches(draw, seed: int, steps: int, exclude: set[str]) -> Iterator[tuple]:
    """`steps` batches of BATCH items from `draw`, leaving out `exclude`d prompts."""
    rng = random.Random(seed)
    for _ in range(steps):
        rows = []
        while len(rows) < BATCH:
            prompt, reference = draw(rng)
            if prompt not in exclude:
                rows.append(_example(prompt, reference))
        yield _tensors(rows)


def _train(model, batches, schedule: tuple[int, float, int]) -> float:
    """AdamW on the trainable parameters, warm-up then cosine; the last batch's loss."""
    import torch

    steps, peak, warmup = schedule
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=peak, weight_decay=0.0)
    model.train()
    loss = float("nan")
    for step, (ids, mask, labels) in enumerate(batches):
        if step < warmup:
            rate = peak * (step + 1) / warmup
        else:
            rate = peak * 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, steps - warmup)))
        for group in optimizer.param_groups:
            group["lr"] = rate
        out = model(input_ids=ids, attention_mask=mask, labels=labels, use_cache=False)
        optimizer.zero_grad(set_to_none=True)
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        loss = out.loss.item()
    model.eval()
    return loss


def _check(model, draw, n: int = 64) -> tuple[float, float]:
    """(mean reference NLL, greedy exact match) on `n` held-out items from `draw`."""
    import torch

    rng = random.Random(CHECK_SEED)
    ids, mask, labels = _tensors([_example(*draw(rng)) for _ in range(n)])
    with torch.no_grad():
        logits = model(input_ids=ids, attention_mask=mask, use_cache=False).logits[:, :-1]
    targets, scored = labels[:, 1:], labels[:, 1:] != -100
    nll = torch.nn.functional.cross_entropy(logits.transpose(1, 2), targets.clamp(min=0),
                                            reduction="none")
    per_item = (nll * scored).sum(1) / scored.sum(1)
    exact = ((logits.argmax(-1) == targets) | ~scored).all(1)
    return per_item.mean().item(), exact.float().mean().item()


def _fit(model, stage: str, op: str, schedule: tuple[int, float, int], exclude: set[str],
         log) -> dict:
    """Train `model` on `op` until its held-out exact match reaches the stage's
    minimum (at most EXTRA_ROUNDS more rounds); what happened, for the stamp."""
    steps, peak, warmup = schedule
    draw = _draw(op)
    clock = time.perf_counter()
    loss = _train(model, _batches(draw, TRAIN_SEEDS[stage], steps, exclude), schedule)
    done = steps
    nll, exact = _check(model, draw)
    for round_ in range(1, EXTRA_ROUNDS + 1):
        if exact >= MIN_EXACT_MATCH[stage]:
            break
        more = max(1, steps // 2)
        log(f"tiny models: {stage}: held-out exact match {exact:.2f} < "
            f"{MIN_EXACT_MATCH[stage]} after {done} steps; {more} more")
        loss = _train(model, _batches(draw, TRAIN_SEEDS[stage] + 1000 * round_, more, exclude),
                      (more, peak / 2, min(warmup, more)))
        done += more
        nll, exact = _check(model, draw)
    seconds = time.perf_counter() - clock
    if exact < MIN_EXACT_MATCH[stage]:
        raise RuntimeError(f"tiny models: {stage} did not learn its task: held-out exact match "
                           f"{exact:.2f} (NLL {nll:.3f}) after {done} steps, below "
                           f"{MIN_EXACT_MATCH[stage]}; the build is unusable")
    log(f"tiny models: {stage}: {done} steps in {seconds:.1f}s, loss {loss:.4f}, "
        f"held-out NLL {nll:.4f}, exact match {exact:.2f}")
    return {"steps": done, "seconds": round(seconds, 2), "loss": round(loss, 5),
            "check_nll": round(nll, 5), "check_exact_match": exact}


# -- models and files --------------------------------------------------------------------

def _tokenizer():
    from transformers import ByT5Tokenizer

    tokenizer = ByT5Tokenizer()
    sample = "szdm sboj\n"
    if (tokenizer(sample, add_special_tokens=False)["input_ids"] != _ids(sample)
            or tokenizer.eos_token_id != _EOS or tokenizer.pad_token_id != _PAD):
        raise RuntimeError("ByT5Tokenizer's ids are not byte + 3 with pad 0 and eos 1: the tiny "
                           "models' training data would not match their tokenizer")
    return tokenizer


def _new_base_model():
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(bos_token_id=None, eos_token_id=_EOS, pad_token_id=_PAD, **MODEL)
    torch.manual_seed(INIT_SEEDS["base"])
    model = LlamaForCausalLM(config)
    generation = model.generation_config
    generation.bos_token_id, generation.eos_token_id, generation.pad_token_id = None, _EOS, _PAD
    return model


def _load(path: Path):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(str(path), local_files_only=True,
                                                use_safetensors=True, trust_remote_code=False)


def _save_model(model, tokenizer, folder: Path) -> None:
    model.save_pretrained(str(folder), safe_serialization=True)
    tokenizer.save_pretrained(str(folder))


def _train_lora(base_dir: Path, domain: str, out: Path, exclude: set[str], log) -> dict:
    import torch
    from peft import LoraConfig, get_peft_model

    model = _load(base_dir)
    torch.manual_seed(INIT_SEEDS[domain])  # lora_A's initialisation
    model = get_peft_model(model, LoraConfig(task_type="CAUSAL_LM", **LORA))
    report = _fit(model, domain, _DOMAIN_OPS[domain], LORA_TRAINING, exclude, log)
    # peft writes the build folder's path as the base model; the registry's name replaces it.
    model.save_pretrained(str(out), safe_serialization=True, save_embedding_layers=False)
    _name_base_model(out)
    (out / "README.md").unlink(missing_ok=True)  # peft's model card names the build folder
    return report


def _name_base_model(folder: Path) -> None:
    """adapter_config.json names the registry's base model (not the build folder),
    and lists target_modules sorted (peft writes a set, in hash order)."""
    path = folder / "adapter_config.json"
    config = json.loads(path.read_text(encoding="utf-8"))
    config["base_model_name_or_path"] = BASE_NAME
    if isinstance(config.get("target_modules"), list):
        config["target_modules"] = sorted(config["target_modules"])
    path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def derive_adapter(good: Path, out: Path, how: str, seed: int = CORRUPT_SEED) -> None:
    """A real adapter folder at `out`: the adapter at `good` with the rows of
    every lora_B permuted (`how="corrupt"`, one permutation per tensor drawn
    from `seed` in name order) or every lora_B halved (`how="weaken"`)."""
    import torch
    from safetensors import safe_open
    from safetensors.torch import save_file

    if how not in ("corrupt", "weaken"):
        raise ValueError(f"how must be corrupt or weaken, got {how!r}")
    with safe_open(str(Path(good) / "adapter_model.safetensors"), "pt") as f:
        metadata = f.metadata()
        names = f.keys()  # a safe_open handle is not iterable
        tensors = {name: f.get_tensor(name) for name in names}
    generator = torch.Generator().manual_seed(seed)
    for name in sorted(tensors):
        if ".lora_B." not in name:
            continue
        weight = tensors[name]
        if how == "corrupt":
            order = torch.randperm(weight.shape[0], generator=generator)
            tensors[name] = weight[order].contiguous()
        else:
            tensors[name] = weight * 0.5
    Path(out).mkdir(parents=True)
    save_file(tensors, str(Path(out) / "adapter_model.safetensors"), metadata=metadata)
    shutil.copyfile(Path(good) / "adapter_config.json", Path(out) / "adapter_config.json")


def _write_golden(path: Path, items: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(item) + "\n" for item in items), encoding="utf-8")


REGISTRY_YAML = f"""\
# The tiny models, written by monitor.eval.tiny ({BUILDER_VERSION}); rebuilt, not edited.
base_models:
  {BASE_NAME}: {{path: ../models/{BASE_NAME}}}
domains:
  legal:
    base_model: {BASE_NAME}
    kind: lora
    active: v1
    golden_set: legal/golden.jsonl
    versions:
      v1: {{path: legal/v1, status: good}}
      v2: {{path: legal/v2}}   # corrupted: the rows of every lora_B permuted
      v3: {{path: legal/v3}}   # weakened: every lora_B halved
  support:
    base_model: {BASE_NAME}
    kind: lora
    active: v1
    golden_set: support/golden.jsonl
    versions:
      v1: {{path: support/v1, status: good}}
      v2: {{path: support/v2}}   # weakened: every lora_B halved
  medical:
    base_model: {BASE_NAME}
    kind: full
    active: v1
    golden_set: medical/golden.jsonl
    versions:
      v1: {{path: medical/v1, status: good}}   # a full fine-tune of {BASE_NAME}
"""


# -- the build ---------------------------------------------------------------------------

def _layout(root: Path) -> TinyModels:
    return TinyModels(root=root, base=root / "models" / BASE_NAME,
                      registry=root / "adapters" / "registry.yaml", domains=DOMAINS)


def _stamp_ok(root: Path) -> bool:
    try:
        stamp = json.loads((root / STAMP).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    layout = _layout(root)
    return (isinstance(stamp, dict) and stamp.get("builder") == BUILDER_VERSION
            and layout.registry.is_file() and (layout.base / "model.safetensors").is_file())


def build(cache_dir: str | Path = ".cache/tiny", *, force: bool = False,
          log: Callable[[str], object] = print) -> TinyModels:
    """The tiny models under `cache_dir`: the cached build when its stamp has
    this builder's version (and not `force`), else a new one. A build goes into
    a temporary folder beside `cache_dir` and is renamed into place only when
    complete, so no reader sees half a cache; concurrent builders of the same
    folder wait for each other (a file lock) and the second reuses the first's."""
    root = Path(cache_dir).absolute()
    if not force and _stamp_ok(root):
        return _layout(root)
    root.parent.mkdir(parents=True, exist_ok=True)
    with _lock(root.parent / f".{root.name}.lock"):
        if not force and _stamp_ok(root):
            return _layout(root)
        work = Path(tempfile.mkdtemp(prefix=f".{root.name}.build-", dir=root.parent))
        try:
            _build_into(work, log)
            work.chmod(0o755)  # mkdtemp's 0700 would keep other users out of a shared cache
            if root.exists():
                old = Path(tempfile.mkdtemp(prefix=f".{root.name}.old-", dir=root.parent))
                os.replace(root, old / root.name)
                os.replace(work, root)
                shutil.rmtree(old, ignore_errors=True)
            else:
                os.replace(work, root)
        finally:
            if work.exists():
                shutil.rmtree(work, ignore_errors=True)
    log(f"tiny models: ready in {root}")
    return _layout(root)


@contextmanager
def _lock(path: Path):
    try:
        import fcntl
    except ImportError:  # not POSIX: builders do not wait for each other
        yield
        return
    with open(path, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


@contextmanager
def _quiet_and_reproducible():
    """A fixed thread count, torch's global RNG and transformers' progress bars
    as the caller had them afterwards, and no deprecation noise from peft."""
    import torch
    from transformers.utils import logging as hf_logging

    threads = torch.get_num_threads()
    bars = hf_logging.is_progress_bar_enabled()
    torch.set_num_threads(THREADS)
    hf_logging.disable_progress_bar()
    try:
        with torch.random.fork_rng(devices=[]), warnings.catch_warnings():
            warnings.filterwarnings("ignore", category=FutureWarning)
            yield
    finally:
        torch.set_num_threads(threads)
        if bars:
            hf_logging.enable_progress_bar()


def _build_into(root: Path, log) -> None:
    import torch

    started = time.perf_counter()
    layout = _layout(root)
    adapters = layout.registry.parent
    stages = {}
    with _quiet_and_reproducible():
        exclude = _golden_prompts()
        tokenizer = _tokenizer()

        log(f"tiny models: building into {root} (about a minute and a half on one CPU core)")
        model = _new_base_model()
        stages["base"] = _fit(model, "base", "copy", BASE_TRAINING, exclude, log)
        _save_model(model, tokenizer, layout.base)
        del model

        for domain in DOMAINS:
            _write_golden(adapters / domain / "golden.jsonl",
                          domain_task(domain, GOLDEN_SEEDS[domain], GOLDEN_SIZE))
        for domain in LORA_DOMAINS:
            stages[domain] = _train_lora(layout.base, domain, adapters / domain / "v1", exclude,
                                         log)
        derive_adapter(adapters / "legal" / "v1", adapters / "legal" / "v2", "corrupt")
        derive_adapter(adapters / "legal" / "v1", adapters / "legal" / "v3", "weaken")
        derive_adapter(adapters / "support" / "v1", adapters / "support" / "v2", "weaken")

        model = _load(layout.base)
        stages["medical"] = _fit(model, "medical", _DOMAIN_OPS["medical"], FULL_TRAINING,
                                 exclude, log)
        _save_model(model, tokenizer, adapters / "medical" / "v1")
        del model

    layout.registry.write_text(REGISTRY_YAML, encoding="utf-8")
    from monitor.registry.model import load_registry

    load_registry(layout.registry)  # RegistryError (every problem listed) if it does not load
    seconds = time.perf_counter() - started
    size = sum(p.stat().st_size for p in root.rglob("*") if p.is_file())
    stamp = {"builder": BUILDER_VERSION, "seconds": round(seconds, 2), "bytes": size,
             "threads": THREADS, "torch": torch.__version__, "stages": stages}
    (root / STAMP).write_text(json.dumps(stamp, indent=2) + "\n", encoding="utf-8")
    log(f"tiny models: built in {seconds:.1f}s, {size / 1e6:.1f} MB")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m monitor.eval.tiny",
        description="Build (or find) the tiny base model, adapters, fine-tune and registry "
                    "that the tests and the demo use.")
    parser.add_argument("--cache", default=".cache/tiny",
                        help="the cache folder (default: %(default)s)")
    parser.add_argument("--force", action="store_true", help="rebuild even if cached")
    args = parser.parse_args(argv)
    models = build(args.cache, force=args.force)
    print(f"base model:  {models.base}")
    print(f"registry:    {models.registry}")
    for domain in models.domains:
        folder = models.registry.parent / domain
        versions = ", ".join(sorted(p.name for p in folder.iterdir() if p.is_dir()))
        print(f"{domain + ':':<12} {folder} (golden.jsonl; {versions})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
