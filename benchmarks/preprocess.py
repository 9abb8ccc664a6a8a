"""Preprocessing throughput (images/s) and driver peak memory on folders of small generated images.

Writes N small PNG/JPEG files (random strokes, a few corrupt and duplicate files mixed in) into a scratch
folder, runs the real preprocessing job on a local Ray, and reports images/s and the driver's peak RSS for
each N (each size in a fresh process, so the peaks are its own), so memory growth with the input size is
visible.

    .venv/bin/python benchmarks/preprocess.py [--sizes 5000 20000 50000] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from jobs.data.curate import run_preprocess
from jobs.data.spec import ImageFolderSource, PreprocessSpec
from jobs.runtime.cluster import ensure_ray
from jobs.store.storage import Store


def make_folder(root: Path, n: int, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    for i in range(n):
        label = f"class{i % 10}"
        (root / label).mkdir(parents=True, exist_ok=True)
        if i % 200 == 7:
            (root / label / f"{i}.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
            continue
        arr = rng.integers(0, 40, (48, 48), dtype=np.uint8)
        r = rng.integers(8, 40)
        arr[r - 6:r + 6, 4:44] = 230
        suffix = "jpg" if i % 3 == 0 else "png"
        Image.fromarray(arr).save(root / label / f"{i}.{suffix}", quality=90)


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_one(n: int) -> dict:
    ensure_ray(num_cpus=os.cpu_count())
    work = Path(tempfile.mkdtemp(prefix="aigc-bench-"))
    try:
        make_folder(work / "images", n)
        rss_before = peak_rss_mb()
        t = time.time()
        r = run_preprocess([ImageFolderSource(kind="image_folder", path=str(work / "images"))],
                           PreprocessSpec(resolution=32, channels=1), Store(str(work / "root")))
        seconds = time.time() - t
        return {"images": n, "seconds": round(seconds, 2), "images_per_second": round(n / seconds, 1),
                "accepted": r.counts["accepted"], "rejected": r.counts["rejected"],
                "driver_peak_rss_mb": round(peak_rss_mb(), 1), "rss_before_mb": round(rss_before, 1)}
    finally:
        shutil.rmtree(work, ignore_errors=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", type=int, nargs="+", default=[5000, 20000, 50000])
    p.add_argument("--json", default="benchmarks/results/preprocess.json")
    p.add_argument("--one", type=int, help=argparse.SUPPRESS)  # internal: one size, result as JSON on stdout
    args = p.parse_args()
    if args.one:
        print("RESULT " + json.dumps(run_one(args.one)))
        return
    results = []
    for n in args.sizes:
        out = subprocess.run([sys.executable, __file__, "--one", str(n)], capture_output=True, text=True, check=True)
        results.append(json.loads(next(line for line in out.stdout.splitlines() if line.startswith("RESULT "))[7:]))
    print(f"{'images':>8} {'seconds':>8} {'img/s':>8} {'accepted':>9} {'rejected':>9} {'driver peak MB':>15}")
    for r in results:
        print(f"{r['images']:>8} {r['seconds']:>8} {r['images_per_second']:>8} {r['accepted']:>9} {r['rejected']:>9} "
              f"{r['driver_peak_rss_mb']:>15}")
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
