"""Golden-set scoring of a base model, its LoRA adapters and full fine-tunes (DESIGN §7).

One teacher-forced forward pass per batch gives both scores of an item:

- `nll`: the mean over the reference tokens of -log p(token | prompt, earlier
  reference tokens), computed in float32 even when the model runs in bf16;
- `exact_match`: greedy decoding reproduces the reference. Greedy decoding
  follows the reference exactly when the argmax is the reference token at every
  reference position, which the same logits show.

An item's tokens: the tokenizer's leading special tokens (a BOS where it adds
one), the prompt and the reference, each tokenized on its own with nothing
between them, then EOS. The EOS is scored as part of the reference: it teaches
the stop, so a model that would run on after the reference pays for it (ByT5's
tokenizer appends the same </s> to the reference itself).

Speed: the base model is loaded once per Evaluator; adapters are loaded,
scored and unloaded, several at once with `set_adapter` (or peft's mixed
batches, `adapter_names`); items are sorted by length into right-padded
batches under `max_batch_tokens` (padded length x rows); only the logits from
the first reference position on are computed (`logits_to_keep`) and only the
reference rows are soft-maxed; an out-of-memory error halves the batch and
retries, keeping the smaller budget for the rest of the call.

The base model stays bit-for-bit the same: it never trains (no gradients, eval
mode), and after every adapter session, failed or not, the LoRA wrappers are
removed (peft's `unload`, then any left behind are stripped), and every hook
registered on any module during the session is removed. The hooks are peft
issue 3475: `_enable_peft_forward_hooks` removes the pre-hooks that inject
`adapter_names` after a bare `yield`, so an exception inside a mixed-adapter
forward leaves them on the model and every later forward gets stale names.

torch, transformers and peft are imported inside methods only: importing this
module costs nothing where they are not installed.
"""

from __future__ import annotations

import gc
import inspect
import logging
import warnings
from collections.abc import Callable, Iterable, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Self

from monitor.eval.golden import GoldenItem

log = logging.getLogger(__name__)

DTYPES = {"float32": "float32", "fp32": "float32", "bfloat16": "bfloat16", "bf16": "bfloat16",
          "float16": "float16", "fp16": "float16"}
ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors")  # safetensors only: no pickle
_HOOK_DICTS = ("_forward_pre_hooks", "_forward_hooks", "_backward_pre_hooks", "_backward_hooks")
_HOOK_FLAGS = ("_forward_pre_hooks_with_kwargs", "_forward_hooks_with_kwargs",
               "_forward_hooks_always_called")


@dataclass(frozen=True)
class ItemScore:
    """One golden item's scores: mean reference-token NLL (nats), greedy exact
    match, and how many reference tokens (EOS included) were scored."""

    id: str
    nll: float
    exact_match: bool
    tokens: int


@dataclass(frozen=True)
class _Row:
    """One sequence to score: item `index` under `adapter` (None: whatever is active)."""

    index: int
    ids: tuple[int, ...]
    start: int  # position of the first reference token
    adapter: str | None = None


class Evaluator:
    """Scores golden items with one base model, loaded once, and whatever is put on it.

    `progress(done, total)` is called after every batch with rows scored so far
    in the current call. `threads` caps torch's CPU threads (process-wide; None
    leaves torch's default, one per core). `oom_halvings` counts the batches halved after an
    out-of-memory error, over the evaluator's life.
    """

    def __init__(self, base_model_path, *, device: str = "auto", dtype: str | None = None,
                 max_batch_tokens: int = 16384, threads: int | None = None,
                 progress: Callable[[int, int], None] | None = None):
        if max_batch_tokens < 1:
            raise ValueError(f"max_batch_tokens must be at least 1, got {max_batch_tokens}")
        if dtype is not None and dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {', '.join(DTYPES)} or None, got {dtype!r}")
        if device not in ("auto", "cpu") and not device.startswith("cuda"):
            raise ValueError(f"device must be auto, cpu or cuda[:N], got {device!r}")
        if threads is not None and threads < 1:
            raise ValueError(f"threads must be at least 1 (or None for torch's default), "
                             f"got {threads}")
        import torch
        from transformers import AutoTokenizer
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()  # a daemon's stderr is a log, not a terminal
        # peft 0.21 calls a transformers method deprecated in 5.x on every adapter
        # load: noise on a user's terminal, nothing they can act on.
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*",
                                category=FutureWarning)

        if device.startswith("cuda") and not torch.cuda.is_available():
            raise ValueError(f"device {device!r} asked for, but torch sees no CUDA device")
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        self.device = torch.device(device)
        if threads is not None:
            torch.set_num_threads(threads)  # process-wide: torch has no per-model setting
        default = "bfloat16" if self.device.type == "cuda" else "float32"
        self.dtype = getattr(torch, DTYPES[dtype] if dtype else default)
        self.max_batch_tokens = max_batch_tokens
        self.progress = progress
        self.oom_halvings = 0
        self.tokenizer = AutoTokenizer.from_pretrained(
            str(base_model_path), local_files_only=True, trust_remote_code=False)
        self.model = self._load_model(base_model_path)
        self._prefix = _leading_special_ids(self.tokenizer)
        eos = self.tokenizer.eos_token_id
        self._suffix = () if eos is None else (eos,)
        pad = self.tokenizer.pad_token_id
        self._pad_id = pad if pad is not None else (eos if eos is not None else 0)

    # -- public ---------------------------------------------------------------

    def score_base(self, items: Iterable[GoldenItem]) -> list[ItemScore]:
        """Scores of the base model alone."""
        items, rows = self._rows(items)
        with _hooks_removed_after(self._open_model()):
            return _scores(items, self._run(self.model, rows, self._counter(len(rows))))

    def score_adapter(self, adapter_path, items: Iterable[GoldenItem],
                      name: str = "candidate") -> list[ItemScore]:
        """Scores of one adapter on the base model; the adapter is unloaded afterwards."""
        return self.score_adapters({name: adapter_path}, items)[name]

    def score_adapters(self, adapters: Mapping[str, str | Path], items: Iterable[GoldenItem], *,
                       mixed: bool = False) -> dict[str, list[ItemScore]]:
        """Scores of several adapters, each loaded once, then all unloaded.

        By default each adapter is activated in turn with `set_adapter` and
        scored in its own batches; `mixed=True` puts rows of every adapter in
        the same batches instead (peft's `adapter_names`), one forward for all.
        """
        bad = [name for name in adapters if not isinstance(name, str) or not name
               or name == "__base__"]
        if not adapters or bad:
            raise ValueError(f"adapters must map non-empty names (not __base__) to folders; "
                             f"got {list(adapters)}")
        items, rows = self._rows(items)
        with self._adapters_loaded(adapters) as model:
            if mixed:
                rows = [replace(row, adapter=name) for name in adapters for row in rows]
                scored = self._run(model, rows, self._counter(len(rows)))
                return {name: _scores(items, scored, name) for name in adapters}
            tick = self._counter(len(rows) * len(adapters))
            result = {}
            for name in adapters:
                model.set_adapter(name)
                result[name] = _scores(items, self._run(model, rows, tick))
            return result

    def score_full(self, model_path, items: Iterable[GoldenItem]) -> list[ItemScore]:
        """Scores of a full fine-tune (no peft), with the base model's tokenizer so
        that token counts pair item by item; the model is freed afterwards."""
        items, rows = self._rows(items)
        self._open_model()
        model = self._load_model(model_path)
        try:
            with _hooks_removed_after(model):
                return _scores(items, self._run(model, rows, self._counter(len(rows))))
        finally:
            del model
            self._release()

    def close(self) -> None:
        """Frees the base model; the evaluator cannot score afterwards."""
        self.model = None
        self.tokenizer = None
        self._release()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    # -- loading ---------------------------------------------------------------

    def _load_model(self, path):
        from transformers import AutoModelForCausalLM

        kwargs = {"dtype": self.dtype, "local_files_only": True, "trust_remote_code": False,
                  "use_safetensors": True}
        if self.device.type == "cuda":
            kwargs["attn_implementation"] = "sdpa"
        model = AutoModelForCausalLM.from_pretrained(str(path), **kwargs).to(self.device)
        model.eval()
        model.requires_grad_(False)  # peft would otherwise flip requires_grad on the base
        return model

    def _open_model(self):
        if self.model is None:
            raise RuntimeError("this Evaluator is closed")
        return self.model

    @contextmanager
    def _adapters_loaded(self, adapters: Mapping[str, str | Path]):
        from peft import PeftModel

        folders = {name: _adapter_folder(path) for name, path in adapters.items()}
        base = self._open_model()
        before = _hook_keys(base)
        model = None
        try:
            for name, folder in folders.items():
                if model is None:
                    model = PeftModel.from_pretrained(base, str(folder), adapter_name=name,
                                                      is_trainable=False,
                                                      torch_device=str(self.device))
                else:
                    model.load_adapter(str(folder), adapter_name=name, is_trainable=False,
                                       torch_device=str(self.device))
            model.eval()
            with _hooks_removed_after(model):
                yield model
        finally:
            self._restore_base(model, before)

    def _restore_base(self, peft_model, hooks_before) -> None:
        """The base model as it was: no tuner layers, no peft_config, no new hooks."""
        if peft_model is not None:
            try:
                peft_model.unload()
            except Exception:  # noqa: BLE001 -- stripped below; keep the caller's error
                log.exception("peft unload failed; stripping the adapter layers directly")
        stripped = _strip_tuner_layers(self.model)
        stray = _remove_hooks_added_since(self.model, hooks_before)
        if stripped or stray:
            log.warning("after the adapter session: stripped %d leftover adapter layer(s) and "
                        "%d stray hook(s) from the base model", stripped, stray)
        self._release()

    def _release(self) -> None:
        gc.collect()
        if self.device.type == "cuda":
            import torch

            torch.cuda.empty_cache()

    # -- scoring -----------------------------------------------------------------

    def _rows(self, items: Iterable[GoldenItem]) -> tuple[list[GoldenItem], list[_Row]]:
        items = list(items)
        if not items:
            raise ValueError("no golden items to score")
        self._open_model()
        tokenizer = self.tokenizer
        prompts = tokenizer([item.prompt for item in items], add_special_tokens=False)["input_ids"]
        refs = tokenizer([item.reference for item in items], add_special_tokens=False)["input_ids"]
        limit = getattr(self.model.config, "max_position_embeddings", None)
        rows, problems = [], []
        for index, (item, prompt, ref) in enumerate(zip(items, prompts, refs)):
            head = (*self._prefix, *prompt)
            ids = (*head, *ref, *self._suffix)
            if not head:
                problems.append(f"{item.id!r}: empty prompt and no BOS, so the first reference "
                                f"token has nothing to be predicted from")
            elif len(ids) == len(head):
                problems.append(f"{item.id!r}: the reference tokenizes to nothing")
            elif limit and len(ids) > limit:
                problems.append(f"{item.id!r}: {len(ids)} tokens, over the model's {limit}")
            rows.append(_Row(index, ids, len(head)))
        if problems:
            raise ValueError("cannot score these golden items:\n  " + "\n  ".join(problems))
        return items, rows

    def _counter(self, total: int) -> Callable[[int], None]:
        done = 0

        def tick(rows: int) -> None:
            nonlocal done
            done += rows
            if self.progress is not None:
                self.progress(done, total)

        return tick

    def _run(self, model, rows: list[_Row], tick) -> dict:
        """(adapter, index) -> (nll, exact_match, tokens) for every row, longest first."""
        import torch

        target = model.get_base_model() if hasattr(model, "get_base_model") else model
        keeps_logits = "logits_to_keep" in inspect.signature(target.forward).parameters
        order = sorted(rows, key=lambda row: (-len(row.ids), row.index, row.adapter or ""))
        budget, done, scored = self.max_batch_tokens, 0, {}
        with torch.inference_mode():
            while done < len(order):
                longest = len(order[done].ids)
                batch = order[done:done + max(1, budget // longest)]
                try:
                    results = self._score_batch(model, batch, keeps_logits)
                except Exception as exc:
                    if not _is_oom(exc):
                        raise
                    if len(batch) == 1:
                        raise torch.OutOfMemoryError(
                            f"out of memory scoring golden item #{batch[0].index} alone "
                            f"({longest} tokens) on {self.device}: free memory or use a "
                            f"smaller model or dtype") from exc
                    results = None
                if results is None:  # outside `except`: its traceback pinned the batch's tensors
                    self._release()
                    half = (len(batch) + 1) // 2
                    budget = longest * half
                    self.oom_halvings += 1
                    log.warning("out of memory on %d rows of %d tokens; retrying with %d",
                                len(batch), longest, half)
                    continue
                scored.update(zip(((row.adapter, row.index) for row in batch), results))
                done += len(batch)
                tick(len(batch))
        return scored

    def _score_batch(self, model, batch: list[_Row], keeps_logits: bool) -> list[tuple]:
        import torch

        length = len(batch[0].ids)
        ids = torch.tensor([list(row.ids) + [self._pad_id] * (length - len(row.ids))
                            for row in batch], device=self.device)
        mask = torch.tensor([[1] * len(row.ids) + [0] * (length - len(row.ids)) for row in batch],
                            device=self.device)
        first = min(row.start for row in batch) - 1  # first position whose logits are needed
        kwargs = {"input_ids": ids, "attention_mask": mask, "use_cache": False}
        if keeps_logits:
            kwargs["logits_to_keep"] = length - first
        if batch[0].adapter is not None:
            kwargs["adapter_names"] = [row.adapter for row in batch]
        logits = model(**kwargs).logits[:, -(length - first):-1]  # position p predicts p + 1
        targets = ids[:, first + 1:]
        positions = torch.arange(first + 1, length, device=self.device)
        starts = torch.tensor([row.start for row in batch], device=self.device)
        ends = torch.tensor([len(row.ids) for row in batch], device=self.device)
        scored = (positions >= starts[:, None]) & (positions < ends[:, None])
        picked = logits[scored].float()  # reference rows only, in float32: (tokens, vocab)
        wanted = targets[scored]
        logp = picked.log_softmax(-1).gather(1, wanted[:, None]).squeeze(1)
        row_of = scored.nonzero()[:, 0]
        nll = torch.zeros(len(batch), dtype=torch.float64, device=self.device)
        nll.index_add_(0, row_of, -logp.double())
        misses = torch.zeros(len(batch), dtype=torch.long, device=self.device)
        misses.index_add_(0, row_of, (picked.argmax(-1) != wanted).long())
        counts = scored.sum(1)
        return [(total / n, miss == 0, n) for total, miss, n
                in zip(nll.tolist(), misses.tolist(), counts.tolist())]


def _scores(items: list[GoldenItem], scored: dict, adapter: str | None = None) -> list[ItemScore]:
    """The scores in the items' original order."""
    out = []
    for index, item in enumerate(items):
        nll, exact, tokens = scored[(adapter, index)]
        out.append(ItemScore(id=item.id, nll=nll, exact_match=exact, tokens=tokens))
    return out


def _leading_special_ids(tokenizer) -> tuple[int, ...]:
    """The special tokens the tokenizer puts before a text (a BOS, or nothing)."""
    plain = tokenizer("a", add_special_tokens=False)["input_ids"]
    full = tokenizer("a", add_special_tokens=True)["input_ids"]
    for start in range(len(full) - len(plain) + 1):
        if full[start:start + len(plain)] == plain:
            return tuple(full[:start])
    return ()


def _adapter_folder(path) -> Path:
    folder = Path(path)
    missing = [name for name in ADAPTER_FILES if not (folder / name).is_file()]
    if missing:
        raise FileNotFoundError(f"adapter folder {folder} lacks {', '.join(missing)}")
    return folder


def _is_oom(exc: BaseException) -> bool:
    import torch

    return isinstance(exc, torch.OutOfMemoryError) or (
        isinstance(exc, RuntimeError) and "out of memory" in str(exc))


def _hook_keys(model) -> dict[int, tuple]:
    """Every module's hook ids, to tell later which hooks are new."""
    return {id(module): (module, {name: set(getattr(module, name)) for name in _HOOK_DICTS})
            for module in model.modules()}


def _remove_hooks_added_since(model, before: dict[int, tuple]) -> int:
    """Removes the hooks registered on `model`'s modules since `before`; how many."""
    removed = 0
    for module in model.modules():
        known_module, known = before.get(id(module), (None, {}))
        if known_module is not module:
            known = {}
        for name in _HOOK_DICTS:
            hooks = getattr(module, name)
            for key in [key for key in hooks if key not in known.get(name, ())]:
                del hooks[key]  # what RemovableHandle.remove does, without the handle
                for flags in _HOOK_FLAGS:
                    getattr(module, flags, {}).pop(key, None)
                removed += 1
    return removed


@contextmanager
def _hooks_removed_after(model):
    """Whatever happens inside, hooks registered on `model` meanwhile do not outlive it."""
    before = _hook_keys(model)
    try:
        yield model
    finally:
        stray = _remove_hooks_added_since(model, before)
        if stray:
            log.warning("removed %d forward/backward hook(s) left behind by a failed forward "
                        "(peft issue 3475)", stray)


def _strip_tuner_layers(model) -> int:
    """Replaces any peft wrapper still in `model` with the module it wraps; how many."""
    from peft.tuners.tuners_utils import BaseTunerLayer
    from peft.utils.other import AuxiliaryTrainingWrapper

    stripped = 0
    while True:
        found = next(((name, module) for name, module in model.named_modules()
                      if isinstance(module, (BaseTunerLayer, AuxiliaryTrainingWrapper))), None)
        if found is None:
            break
        name, module = found
        parent_name, _, child = name.rpartition(".")
        inner = (module.get_base_layer() if isinstance(module, BaseTunerLayer)
                 else module.original_module)
        setattr(model.get_submodule(parent_name), child, inner)
        stripped += 1
    if hasattr(model, "peft_config"):
        del model.peft_config
    return stripped
