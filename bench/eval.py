"""Golden-set scoring throughput: our engine vs the bare base-model forward and a naive loop.

    .venv/bin/python bench/eval.py            # small, CPU (a few minutes)
    .venv/bin/python bench/eval.py --gpu      # the issue's setting on a GPU: ~1B Llama,
                                              # 8 rank-16 adapters, 512 items x 256 tokens

A random-initialised Llama (no hub) and random LoRA adapters on every linear
layer. In one run, on the same items:

* bare: the base model's forward over the same padded batches (no adapter, no
  scoring): the raw limit;
* engine: `Evaluator.score_adapters` (one `set_adapter` pass per adapter);
* naive: one item at a time through a peft model, the loop people write first.

Throughput is reference+prompt tokens per second; ratios are engine/bare and
engine/naive. Model FLOP utilisation (2 x parameters x tokens / time / peak)
is printed on a GPU, where the peak is known (bf16 dense: H200 989 TFLOP/s).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

PEAK_BF16 = {"H200": 989e12, "H100": 989e12, "A100": 312e12}


def build(root: Path, hidden: int, layers: int, adapters: int, rank: int) -> tuple[Path, dict]:
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import ByT5Tokenizer, LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=384, hidden_size=hidden, intermediate_size=hidden * 8 // 3,
                         num_hidden_layers=layers, num_attention_heads=max(4, hidden // 64),
                         num_key_value_heads=max(2, hidden // 256), max_position_embeddings=1024)
    base = root / "base"
    LlamaForCausalLM(config).save_pretrained(base)
    ByT5Tokenizer().save_pretrained(base)
    paths = {}
    for i in range(adapters):
        model = get_peft_model(LlamaForCausalLM.from_pretrained(base), LoraConfig(
            r=rank, lora_alpha=2 * rank, init_lora_weights=False,
            target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj",
                            "down_proj"]))
        paths[f"a{i}"] = root / f"a{i}"
        model.save_pretrained(paths[f"a{i}"])
    return base, paths


def items(n: int, chars: int):
    import random

    from monitor.eval.golden import GoldenItem

    rng = random.Random(1)
    letters = "abcdefghijklmnopqrstuvwxyz "
    return [GoldenItem(str(i), "".join(rng.choice(letters) for _ in range(chars // 2)),
                       "".join(rng.choice(letters) for _ in range(chars // 2 - 1)))
            for i in range(n)]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gpu", action="store_true", help="the issue's GPU setting")
    parser.add_argument("--items", type=int)
    parser.add_argument("--json", metavar="PATH")
    args = parser.parse_args()
    import torch

    from monitor.eval.engine import Evaluator

    if args.gpu:
        setting = dict(hidden=2048, layers=16, adapters=8, rank=16, n=args.items or 512, chars=256)
        device = "cuda"
    else:
        setting = dict(hidden=128, layers=4, adapters=2, rank=8, n=args.items or 128, chars=128)
        device = "cpu"
        torch.set_num_threads(1)
    print(f"# {' '.join(sys.argv)}\n# setting: {setting}, device {device}", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        base, adapters = build(Path(tmp), setting["hidden"], setting["layers"],
                               setting["adapters"], setting["rank"])
        golden = items(setting["n"], setting["chars"])
        results = {}
        with Evaluator(base, device=device) as evaluator:
            evaluator.score_base(golden[:8])  # warm-up
            tokens = sum(s.tokens for s in evaluator.score_base(golden))
            model = evaluator._open_model()
            rows = evaluator._rows(golden)[1]
            rows.sort(key=lambda r: len(r.ids))
            sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)

            def forward(model, chunk):
                width = max(len(r.ids) for r in chunk)
                ids = torch.zeros(len(chunk), width, dtype=torch.long, device=model.device)
                for k, r in enumerate(chunk):
                    ids[k, :len(r.ids)] = torch.tensor(r.ids)
                model(input_ids=ids)

            batch = 32
            started = time.perf_counter()
            with torch.inference_mode():  # the raw limit: base forward, same padded batches
                for i in range(0, len(rows), batch):
                    forward(model, rows[i:i + batch])
            sync()
            bare = (time.perf_counter() - started) * len(adapters)
            total_tokens = sum(len(r.ids) for r in rows) * len(adapters)
            started = time.perf_counter()
            evaluator.score_adapters(adapters, golden)
            sync()
            engine = time.perf_counter() - started
            # Naive: the adapter loaded once, then one item per forward pass.
            sample = rows[: max(8, len(rows) // 8)]
            with evaluator._adapters_loaded({"a0": adapters["a0"]}) as peft_model:
                started = time.perf_counter()
                with torch.inference_mode():
                    for row in sample:
                        forward(peft_model, [row])
                sync()
                naive = (time.perf_counter() - started) * len(rows) / len(sample) * len(adapters)
        results = {"tokens_per_adapter": tokens, "bare_tokens_per_s": total_tokens / bare,
                   "engine_tokens_per_s": total_tokens / engine,
                   "naive_tokens_per_s": total_tokens / naive}
    results["engine_over_bare"] = results["engine_tokens_per_s"] / results["bare_tokens_per_s"]
    results["engine_over_naive"] = results["engine_tokens_per_s"] / results["naive_tokens_per_s"]
    for key, value in results.items():
        print(f"{key:<22} {value:,.2f}")
    if args.json:
        Path(args.json).write_text(json.dumps({"setting": setting, "device": device, **results},
                                              indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
