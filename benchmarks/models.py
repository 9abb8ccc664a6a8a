"""Model zoo throughput with torch alone (no Ray, no Prefect), so it runs on a bare GPU machine too.

For every family at demo-like sizes (32x32 images with 10 classes; byte-level text models):
- sampling: samples/s at batch sizes 1, 16, 64, 256 (texts: 32 new tokens each);
- ``gpt`` and ``char_rnn``: tokens/s with the KV cache / RNN state against recomputing the sequence;
- ``ddpm``: DDIM steps against seconds per batch of 64;
- training: optimiser steps/s and samples/s on a random batch of 64 (bf16 autocast on CUDA unless
  ``--precision fp32``), with the loss checked to be finite.

    .venv/bin/python benchmarks/models.py [--device cpu|cuda] [--quick] [--json out.json]
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a bare checkout: aigc_models only

import numpy as np  # noqa: E402
import torch  # noqa: E402
from _results import save  # noqa: E402  (benchmarks/ is on sys.path when a script runs)

import aigc_models  # noqa: E402
from aigc_models.training import make_optimizers, optimizer_step  # noqa: E402

CLASSES = [str(d) for d in range(10)]
CONFIGS = {
    "dcgan": {"resolution": 32, "channels": 1, "classes": CLASSES, "g_width": 32, "d_width": 32},
    "vae": {"resolution": 32, "channels": 1, "classes": CLASSES, "z_dim": 32, "width": 32},
    "ddpm": {"resolution": 32, "channels": 1, "classes": CLASSES, "width": 32, "channel_mult": [1, 2, 2]},
    "gpt": {"block_size": 256, "n_layer": 4, "n_head": 4, "n_embd": 128},
    "char_rnn": {"seq_len": 128, "embed_dim": 64, "hidden": 256, "n_layer": 2},
}
PROMPT = "Fresh bread "


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def timed(fn, device: torch.device, repeat: int = 1) -> float:
    fn()  # warm-up (kernels, caches)
    sync(device)
    t = time.perf_counter()
    for _ in range(repeat):
        fn()
    sync(device)
    return (time.perf_counter() - t) / repeat


def conditions(model, n: int) -> list:
    return [CLASSES[i % 10] for i in range(n)] if model.modality == "image" else [PROMPT] * n


def bench_sampling(model, device, batch_sizes, ddim_steps: int) -> list[dict]:
    rows = []
    extra = {"steps": ddim_steps} if model.family == "ddpm" else {"max_new_tokens": 32} if model.modality == "text" else {}
    modes = [False, True] if model.modality == "text" else [False]
    for batched in modes:
        for b in batch_sizes:
            outputs: list = []
            settings = {**extra, **({"batched": True} if batched else {})}
            seconds = timed(lambda: outputs.__setitem__(slice(None), model.sample(conditions(model, b), list(range(b)), **settings)), device)
            row = {"family": model.family, "batch": b, "seconds": round(seconds, 4), "samples_per_s": round(b / seconds, 1)}
            if model.modality == "image" and b > 1:  # a few rows sampled alone must give the same pixels
                alone = [model.sample(conditions(model, b)[i:i + 1], [i], **settings)[0] for i in range(min(b, 8))]
                row["same_as_alone"] = f"{sum(np.array_equal(a, o) for a, o in zip(alone, outputs))}/{len(alone)}"
            elif model.modality == "image":
                row["same_as_alone"] = "-"
            if model.modality == "text":  # untrained models stop at a random EOS: tokens/s is the fair number
                row["mode"] = "batched" if batched else "row by row"
                row["new_tokens_per_s"] = round(sum(len(o.encode()) - len(PROMPT) for o in outputs) / seconds, 1)
                if batched:  # how many rows came out as they do row by row
                    alone = model.sample(conditions(model, b), list(range(b)), **extra)
                    row["same_as_row_by_row"] = f"{sum(a == o for a, o in zip(alone, outputs))}/{b}"
                else:
                    row["same_as_row_by_row"] = "-"
            rows.append(row)
    return rows


@torch.no_grad()
def bench_cache(model, device, n_new: int) -> dict:
    """Decoding ``n_new`` tokens one at a time, feeding the newest token to the cached state, against
    recomputing the whole sequence at every step (what ``sample(..., cache=False)`` does)."""
    model.eval()
    prompt = torch.tensor([[256, *PROMPT.encode()]], device=device)
    n_new = min(n_new, (model.max_context or 10**9) - prompt.shape[1])

    def cached() -> None:
        logits, state = model.logits(prompt)
        for _ in range(n_new):
            logits, state = model.logits(logits[:, -1:].argmax(-1), state)

    def recompute() -> None:
        seq = prompt
        for _ in range(n_new):
            logits, _ = model.logits(seq)
            seq = torch.cat([seq, logits[:, -1:].argmax(-1)], dim=1)

    with_cache, without = n_new / timed(cached, device), n_new / timed(recompute, device)
    model.train()
    return {"family": model.family, "new_tokens": n_new, "tokens_per_s_cache": round(with_cache, 1),
            "tokens_per_s_no_cache": round(without, 1), "speedup": round(with_cache / without, 2)}


def bench_ddim(model, device, steps_list, batch: int) -> list[dict]:
    rows = []
    for steps in steps_list:
        seconds = timed(lambda: model.sample(conditions(model, batch), list(range(batch)), steps=steps), device)
        rows.append({"steps": steps, "batch": batch, "seconds": round(seconds, 3), "images_per_s": round(batch / seconds, 1)})
    return rows


def random_batch(model, n: int) -> dict[str, torch.Tensor]:
    rng = np.random.default_rng(0)
    if model.modality == "image":
        cfg = model.config
        pixels = rng.integers(0, 256, (n, cfg.resolution, cfg.resolution, cfg.channels), dtype=np.uint8)
        return model.make_batch({"pixels": pixels, "label": np.array([CLASSES[i % 10] for i in range(n)])})
    docs = ["".join(chr(c) for c in rng.integers(97, 123, 200)) for _ in range(n)]
    return model.make_batch({"text": np.array(docs)})


def bench_training(model, device, steps: int, bf16: bool) -> dict:
    """The step every trainer runs (``aigc_models.training.optimizer_step``) on a random batch of 64."""
    opts, scheds = make_optimizers(model, total_steps=steps + 1)
    batch = {k: v.to(device) for k, v in random_batch(model, 64).items()}
    rows = next(iter(batch.values())).shape[0]
    autocast = {"device_type": device.type, "dtype": torch.bfloat16, "enabled": bf16}
    losses = []

    def step() -> None:
        metrics = optimizer_step(model, model, opts, scheds, [batch], 1.0, autocast)
        losses.append(metrics.get("loss", next(iter(metrics.values()))))

    seconds = timed(lambda: [step() for _ in range(steps)], device) / steps
    if not all(np.isfinite(losses)):
        raise RuntimeError(f"{model.family}: non-finite loss in training")
    return {"family": model.family, "precision": "bf16" if bf16 else "fp32", "batch_rows": rows,
            "steps_per_s": round(1 / seconds, 2), "rows_per_s": round(rows / seconds, 1),
            "first_loss": round(losses[0], 4), "last_loss": round(losses[-1], 4)}


def table(title: str, rows: list[dict]) -> None:
    if not rows:
        return
    print(f"\n{title}")
    keys = list(rows[0])
    widths = [max(len(k), *(len(str(r[k])) for r in rows)) for k in keys]
    print("  ".join(k.rjust(w) for k, w in zip(keys, widths)))
    for r in rows:
        print("  ".join(str(r[k]).rjust(w) for k, w in zip(keys, widths)))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cpu")
    p.add_argument("--precision", choices=["bf16", "fp32"], default="bf16", help="training on CUDA (CPU: fp32)")
    p.add_argument("--families", nargs="+", default=list(CONFIGS))
    p.add_argument("--quick", action="store_true", help="smaller batches and fewer steps")
    p.add_argument("--json", default=None, help="default: benchmarks/results/models-<device>.json")
    args = p.parse_args()
    device = torch.device(args.device)
    torch.manual_seed(0)
    batch_sizes = [1, 16, 64] if args.quick else [1, 16, 64, 256]
    bf16 = device.type == "cuda" and args.precision == "bf16"
    results: dict = {"device": str(device), "torch": torch.__version__, "host": platform.node(),
                     "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
                     "sampling": [], "cache": [], "ddim": [], "training": []}
    for family in args.families:
        model = aigc_models.build(family, CONFIGS[family]).to(device)
        print(f"{family}: {model.num_parameters():,} parameters", flush=True)
        results["training"].append(bench_training(model, device, 3 if args.quick else 10, bf16))
        results["sampling"] += bench_sampling(model, device, batch_sizes, ddim_steps=10 if args.quick else 25)
        if model.modality == "text":
            results["cache"].append(bench_cache(model, device, 64 if args.quick else 200))
        if family == "ddpm":
            results["ddim"] = bench_ddim(model, device, [5, 10, 25] if args.quick else [10, 25, 50, 100], batch=64)
    table(f"sampling images ({device})", [r for r in results["sampling"] if "new_tokens_per_s" not in r])
    table(f"sampling texts ({device}, up to 32 new tokens each)", [r for r in results["sampling"] if "new_tokens_per_s" in r])
    table("KV cache / RNN state vs recomputing", results["cache"])
    table("DDIM steps", results["ddim"])
    table(f"training step ({'bf16 autocast' if bf16 else 'fp32'})", results["training"])
    save(results, args.json or f"benchmarks/results/models-{device.type}.json")


if __name__ == "__main__":
    main()
