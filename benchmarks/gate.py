"""What the nightly quality gate costs, with torch alone (runs on a bare GPU machine too).

- figures: Fréchet distance, KID (20 subsets of 200) and k-NN precision/recall on 64-dimensional features
  (the label classifier's width) for n generated x n real points;
- features: images/s through the label classifier (32x32 grayscale, the demo's size), and its peak memory;
- augmentation lift: seconds to train the two small classifiers (200 optimiser steps each).

    .venv/bin/python benchmarks/gate.py [--device cpu|cuda] [--sizes 500 2000 5000] [--json out.json]
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

from aigc_models import quality as q  # noqa: E402


def timed(fn, *args, **kwargs):
    started = time.perf_counter()
    out = fn(*args, **kwargs)
    return out, time.perf_counter() - started


def figures(sizes: list[int], dim: int = 64) -> list[dict]:
    rng = np.random.default_rng(0)
    rows = []
    for n in sizes:
        real, fake = rng.normal(size=(n, dim)), rng.normal(0.2, 1.1, size=(n, dim))
        fd, t_fd = timed(q.frechet_distance, real, fake)
        kid, t_kid = timed(q.kernel_inception_distance, real, fake)
        (p, r), t_pr = timed(q.precision_recall, real, fake)
        rows.append({"n": n, "dim": dim, "fd_s": t_fd, "kid_s": t_kid, "precision_recall_s": t_pr,
                     "fd": fd, "kid": kid, "precision": p, "recall": r})
    return rows


def features(device: str, n: int = 4096) -> dict:
    clf = q.DomainClassifier(1, 32, 10).to(device).eval()
    pixels = np.random.default_rng(0).integers(0, 256, size=(n, 32, 32, 1), dtype=np.uint8)
    q.classifier_features(clf, pixels[:256])  # warm-up
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    _, seconds = timed(q.classifier_features, clf, pixels)
    if device == "cuda":
        torch.cuda.synchronize()
    peak = torch.cuda.max_memory_allocated() / 2**20 if device == "cuda" else None
    return {"images": n, "seconds": seconds, "images_per_second": n / seconds, "peak_gpu_mib": peak}


def lift(device: str) -> dict:
    rng = np.random.default_rng(0)
    real = rng.integers(0, 256, size=(100, 32, 32, 1), dtype=np.uint8)
    mixed = rng.integers(0, 256, size=(600, 32, 32, 1), dtype=np.uint8)
    out = {}
    for name, pixels in (("real_only", real), ("real_plus_synthetic", mixed)):
        epochs = max(1, -(-200 // -(-len(pixels) // 64)))  # 200 optimiser steps, as jobs.gate.lift does
        _, seconds = timed(q.train_classifier, pixels, rng.integers(0, 10, len(pixels)), 10, epochs=epochs, device=device)
        out[f"{name}_s"] = seconds
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--sizes", type=int, nargs="+", default=[500, 2000, 5000])
    p.add_argument("--json", default=None, help="default: benchmarks/results/gate-<device>.json")
    args = p.parse_args()
    results = {"device": args.device, "torch": torch.__version__, "threads": torch.get_num_threads(),
               "machine": platform.machine(), "figures": figures(args.sizes), "features": features(args.device),
               "lift": lift(args.device)}
    print(f"gate figures on {args.device} (64-dim features, n generated x n real)")
    print(f"{'n':>6} {'FD s':>8} {'KID s':>8} {'P/R s':>8}")
    for r in results["figures"]:
        print(f"{r['n']:>6} {r['fd_s']:>8.3f} {r['kid_s']:>8.3f} {r['precision_recall_s']:>8.3f}")
    f = results["features"]
    print(f"classifier features: {f['images_per_second']:,.0f} images/s (32x32, {f['images']} images)"
          + (f", peak {f['peak_gpu_mib']:.0f} MiB" if f["peak_gpu_mib"] else ""))
    print(f"augmentation lift: {results['lift']['real_only_s']:.1f}s + {results['lift']['real_plus_synthetic_s']:.1f}s "
          "(two classifiers, 200 steps each)")
    save(results, args.json or f"benchmarks/results/gate-{args.device}.json")


if __name__ == "__main__":
    main()
