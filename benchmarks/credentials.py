"""What Content Credentials cost per image: signing (c2pa-python, ES256, no thumbnail), reading and validating
them back, and the bytes they add, for the image sizes the pipeline makes. Each finishing actor signs its own
rows, so the per-image time is what a CPU spends per published image on top of encoding it.

    .venv/bin/python benchmarks/credentials.py [--images 200] [--json benchmarks/results/credentials.json]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from _results import save  # benchmarks/ is on sys.path when a script runs
from jobs.store import credentials, provenance
from jobs.store.png import encode_png

SHAPES = [(32, 32, 1), (64, 64, 3), (256, 256, 3)]


def measure(signer: credentials.Signer, trust: bytes, shape: tuple[int, int, int], n: int) -> dict:
    rng = np.random.default_rng(0)
    pngs = [encode_png(rng.integers(0, 256, size=shape, dtype=np.uint8),
                       provenance.label(f"row-{i}", "run", "m", "v1", datetime.now(timezone.utc))) for i in range(n)]
    lineage = {"id": "row", "model_version": "v1", "checkpoint_sha256": "ab" * 32, "seed": 1, "sampler": {}}
    credentials.read_png(signer.sign_png(pngs[0], "warm.png", lineage, "2026-01-01T00:00:00+00:00"), trust)  # warm
    sign, read, signed = [], [], []
    for i, png in enumerate(pngs):
        t = time.perf_counter()
        out = signer.sign_png(png, f"row-{i}.png", {**lineage, "id": f"row-{i}"}, "2026-01-01T00:00:00+00:00")
        sign.append(time.perf_counter() - t)
        t = time.perf_counter()
        reading = credentials.read_png(out, trust)
        read.append(time.perf_counter() - t)
        assert not reading.problems, reading.problems
        signed.append(len(out) - len(png))
    return {"shape": list(shape), "images": n, "sign_ms_median": round(1000 * statistics.median(sign), 3),
            "sign_ms_p95": round(1000 * sorted(sign)[int(0.95 * (n - 1))], 3),
            "verify_ms_median": round(1000 * statistics.median(read), 3),
            "png_bytes_median": int(statistics.median(len(p) for p in pngs)),
            "added_bytes_median": int(statistics.median(signed)),
            "signed_images_per_second": round(n / sum(sign), 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=200)
    ap.add_argument("--json", default="benchmarks/results/credentials.json")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        paths = credentials.make_dev_chain(Path(tmp))
        signer = credentials.load_signer(str(paths["chain"]), str(paths["key"]), str(paths["root"]))
        rows = [measure(signer, paths["root"].read_bytes(), s, args.images) for s in SHAPES]
    print(f"{'image':>12} {'sign ms':>9} {'p95':>7} {'verify ms':>10} {'png bytes':>10} {'+ bytes':>8} {'signed/s':>9}")
    for r in rows:
        print(f"{'x'.join(map(str, r['shape'])):>12} {r['sign_ms_median']:>9} {r['sign_ms_p95']:>7} "
              f"{r['verify_ms_median']:>10} {r['png_bytes_median']:>10} {r['added_bytes_median']:>8} "
              f"{r['signed_images_per_second']:>9}")
    import c2pa

    save({"c2pa_python": c2pa.__version__, "algorithm": "es256", "thumbnail": False, "results": rows}, args.json)


if __name__ == "__main__":
    main()
