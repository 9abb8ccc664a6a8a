"""Generation throughput (rows/s) on Ray Data for several batch sizes and actor counts.

Uses the production models under ROOT (run `make demo` first), writes each run to a scratch ROOT-less
date so the demo's partitions stay untouched, and checks that every setting produced the same bytes.

    .venv/bin/python benchmarks/generate.py --root runs [--rows 400] [--json out.json]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import time
from pathlib import Path

import pyarrow.dataset as pads

from jobs.generate import run_generation
from jobs.ray_runtime import ensure_ray
from jobs.storage import Store
from pipelines.config import load_config

SETTINGS = [(1, 1), (16, 1), (64, 1), (64, 2)]  # (batch_size, concurrency)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default="configs/demo.yaml")
    p.add_argument("--root", default="runs")
    p.add_argument("--rows", type=int, default=400)
    p.add_argument("--json", default="benchmarks/results/generate.json")
    args = p.parse_args()
    cfg = load_config(args.config, output=args.root)
    ensure_ray(cfg.ray.address, cfg.ray.num_cpus)
    store = Store(args.root)
    results, digests = [], set()
    date = "1999-01-01"  # a scratch partition, removed at the end
    for batch_size, concurrency in SETTINGS:
        spec = cfg.generate.model_copy(update={"batch_size": batch_size, "concurrency": concurrency})
        t = time.time()
        r = run_generation(spec, store, date, "benchmark", count=args.rows)
        wall = time.time() - t
        df = pads.dataset(store.path("generated", f"run_date={date}"), format="parquet").to_table(
            columns=["id", "content_sha256"]).to_pandas().sort_values("id")
        # pixels and texts (PNG files differ by their provenance chunk, which names the run)
        digest = hashlib.sha256("".join(df["id"] + df["content_sha256"]).encode()).hexdigest()
        digests.add(digest)
        results.append({"batch_size": batch_size, "concurrency": concurrency, "rows": r.rows,
                        "generate_seconds": round(r.rows / r.rows_per_second, 2), "wall_seconds": round(wall, 2),
                        "rows_per_second": round(r.rows_per_second, 1), "content_sha256": digest[:16]})
    store.delete("generated", f"run_date={date}")
    store.delete("generated/_manifests", f"run_date={date}.json")
    print(f"{'batch':>6} {'actors':>6} {'rows':>6} {'gen s':>7} {'wall s':>7} {'rows/s':>8}  content")
    for r in results:
        print(f"{r['batch_size']:>6} {r['concurrency']:>6} {r['rows']:>6} {r['generate_seconds']:>7} "
              f"{r['wall_seconds']:>7} {r['rows_per_second']:>8}  {r['content_sha256']}")
    print("identical output across settings:", len(digests) == 1)
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps({"rows": args.rows, "results": results, "identical": len(digests) == 1}, indent=2))


if __name__ == "__main__":
    main()
