"""Generation throughput: the naive way, an efficient single-process loop, and the Ray Data pipeline.

On the same trained image model (the production version of ``--model`` under ``--root``; run `make demo`
first) and the same N rows (N/10 per digit):

  (a) naive     one sample at a time (batch of one), each saved as its own PNG file: how tutorials do it
  (b) loop      batched sampling, PNG encoding with the provenance label, one pyarrow Parquet writer
  (c) pipeline  ``jobs.generate.run.run_generation``: sampling actors -> finishing actors -> byte-bounded Parquet

Each mode runs in a subprocess of its own, so its peak RSS (the driver's, for the pipeline) is its own.
Filters are off in (c) so all three do the same work; (b) and (c) must give identical pixels (checked).

    .venv/bin/python benchmarks/generate.py --root runs --rows 20000 [--big 200000] [--json out.json]
    python benchmarks/generate.py --torch-only --weights runs/models/digits-gan/<v>/model.safetensors --device cuda
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent.parent
DATE = "1999-01-01"  # a scratch partition, removed afterwards


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _requests(model: str, rows: int, classes: list[str]):
    from jobs.generate.spec import RequestSpec

    return [RequestSpec(id="bench", model=model, labels=classes, per_label=max(1, rows // len(classes)))]


def mode_naive(root: str, model: str, rows: int) -> dict:
    import numpy as np

    from jobs.generate.plan import expand_requests
    from jobs.store import registry
    from jobs.store.png import to_pil
    from jobs.store.storage import Store

    store = Store(root)
    ref = registry.resolve(store, model)
    net = registry.load(store, ref)
    todo = expand_requests(_requests(model, rows, ref.card.classes), {model: ref}, DATE)
    with tempfile.TemporaryDirectory() as out:
        started = time.time()
        for r in todo.itertuples(index=False):
            arr = net.sample([r.label], [int(r.seed)], chunk=1)[0]
            to_pil(np.ascontiguousarray(arr)).save(os.path.join(out, f"{r.id}.png"))
        seconds = time.time() - started
    return {"rows": len(todo), "seconds": seconds}


def mode_loop(root: str, model: str, rows: int, batch: int = 256) -> dict:
    from datetime import datetime, timezone

    import pyarrow as pa
    import pyarrow.parquet as pq

    from jobs.generate.plan import expand_requests
    from jobs.store import provenance, registry
    from jobs.store.png import encode_png
    from jobs.store.storage import Store

    store = Store(root)
    ref = registry.resolve(store, model)
    net = registry.load(store, ref)
    todo = expand_requests(_requests(model, rows, ref.card.classes), {model: ref}, DATE)
    sampler = json.loads(todo["sampler"].iloc[0])
    digest = {}
    schema = pa.schema([("id", pa.string()), ("image", pa.struct([("bytes", pa.binary()), ("path", pa.string())])),
                        ("content_sha256", pa.string())])
    with tempfile.TemporaryDirectory() as out:
        started = time.time()
        with pq.ParquetWriter(os.path.join(out, "rows.parquet"), schema) as writer:
            for start in range(0, len(todo), batch):
                part = todo.iloc[start:start + batch]
                arrs = net.sample(part["label"].tolist(), [int(s) for s in part["seed"]], **sampler)
                now = datetime.now(timezone.utc)
                cols = {"id": [], "image": [], "content_sha256": []}
                for rid, arr in zip(part["id"], arrs):
                    label = provenance.label(rid, "bench", model, ref.version, now)
                    sha = hashlib.sha256(arr.tobytes()).hexdigest()
                    cols["id"].append(rid)
                    cols["image"].append({"bytes": encode_png(arr, label), "path": f"{rid}.png"})
                    cols["content_sha256"].append(sha)
                    digest[rid] = sha
                writer.write_table(pa.table(cols, schema=schema))
        seconds = time.time() - started
    return {"rows": len(todo), "seconds": seconds, "content": hashlib.sha256("".join(
        f"{k}{v}" for k, v in sorted(digest.items())).encode()).hexdigest()}


def mode_pipeline(root: str, model: str, rows: int, config: str) -> dict:
    import pyarrow.dataset as pads

    from jobs.generate.run import run_generation
    from jobs.generate.spec import FilterSpec
    from jobs.runtime.cluster import ensure_ray
    from jobs.store import registry
    from jobs.store.storage import Store
    from pipelines.config import load_config

    cfg = load_config(config, output=root)
    ensure_ray(cfg.ray.address, cfg.ray.num_cpus)
    store = Store(root)
    classes = registry.resolve(store, model).card.classes
    spec = cfg.generate.model_copy(update={"requests": [], "request_tables": [],
                                           "filters": FilterSpec(enabled=False)})
    spec = spec.model_copy(update={"requests": _requests(model, rows, classes)})
    started = time.time()
    result = run_generation(spec, store, DATE, "benchmark")
    wall = time.time() - started
    peak = _peak_mb()  # the driver's own peak, before this script reads the rows back to compare them
    t = pads.dataset(store.path("generated", f"date={DATE}"), format="parquet").to_table(columns=["id", "content_sha256"])
    content = hashlib.sha256("".join(f"{k}{v}" for k, v in sorted(zip(t.column("id").to_pylist(),
                                                                         t.column("content_sha256").to_pylist()))).encode()).hexdigest()
    files = result.manifest["files"]
    store.delete("generated", f"date={DATE}")
    store.delete("manifests/generated", f"{DATE}.json")
    return {"rows": result.rows, "seconds": result.manifest["timings"]["generate_seconds"], "wall_seconds": wall,
            "content": content, "files": len(files), "largest_file_mb": max(f["bytes"] for f in files) / 2**20,
            "driver_peak_rss_mb": peak}


def torch_only(weights: str, device: str, batches: list[int], rows: int) -> None:
    """The generation callable alone (no Ray, no jobs/): images/s of ``model.sample`` on ``device``."""
    import torch

    sys.path.insert(0, str(HERE))
    import aigc_models

    model = aigc_models.load(weights, device=device)
    classes = model.config.classes or [None]
    print(f"{'chunk':>6} {'rows':>7} {'img/s':>9}  device={device} ({torch.cuda.get_device_name() if device == 'cuda' else 'cpu'})")
    for chunk in batches:
        conds = [classes[i % len(classes)] for i in range(rows)]
        with torch.autocast(device_type="cuda", dtype=torch.bfloat16, enabled=device == "cuda"):
            model.sample(conds[:chunk], list(range(chunk)), chunk=chunk)  # warm-up
            if device == "cuda":
                torch.cuda.synchronize()
            t = time.time()
            model.sample(conds, list(range(rows)), chunk=chunk)
            if device == "cuda":
                torch.cuda.synchronize()
        print(f"{chunk:>6} {rows:>7} {rows / (time.time() - t):>9.0f}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default="configs/demo.yaml")
    p.add_argument("--root", default="runs")
    p.add_argument("--model", default="digits-gan")
    p.add_argument("--rows", type=int, default=20000)
    p.add_argument("--big", type=int, default=0, help="also run the pipeline alone at this many rows (driver memory)")
    p.add_argument("--json", default="benchmarks/results/generate.json")
    p.add_argument("--mode", choices=["naive", "loop", "pipeline"], help=argparse.SUPPRESS)
    p.add_argument("--torch-only", action="store_true", help="time model.sample alone (a GPU box with torch only)")
    p.add_argument("--weights", help="with --torch-only: a model.safetensors")
    p.add_argument("--device", default="cpu")
    args = p.parse_args()
    if args.torch_only:
        return torch_only(args.weights, args.device, [16, 64, 256, 1024], args.rows)
    if args.mode:
        fn = {"naive": lambda: mode_naive(args.root, args.model, args.rows),
              "loop": lambda: mode_loop(args.root, args.model, args.rows),
              "pipeline": lambda: mode_pipeline(args.root, args.model, args.rows, args.config)}[args.mode]
        out = fn()
        out["peak_rss_mb"] = out.pop("driver_peak_rss_mb", None) or _peak_mb()
        print("RESULT " + json.dumps(out))
        return None
    runs = [("naive", args.rows), ("loop", args.rows), ("pipeline", args.rows)] + ([("pipeline", args.big)] if args.big else [])
    results = []
    for mode, rows in runs:
        cmd = [sys.executable, __file__, "--mode", mode, "--rows", str(rows), "--root", args.root,
               "--model", args.model, "--config", args.config]
        proc = subprocess.run(cmd, capture_output=True, text=True, cwd=HERE, env={**os.environ, "PYTHONPATH": str(HERE)})
        line = next((l for l in proc.stdout.splitlines() if l.startswith("RESULT ")), None)
        if line is None:
            raise SystemExit(f"{mode} failed:\n{proc.stderr[-3000:]}")
        r = {"mode": mode, **json.loads(line[len("RESULT "):])}
        r["rows_per_second"] = r["rows"] / r["seconds"]
        results.append(r)
        print(f"  {mode:<9} {r['rows']:>7} rows  {r['rows_per_second']:>8.0f} img/s  peak RSS {r['peak_rss_mb']:.0f} MB", flush=True)
    by = {(r["mode"], r["rows"]): r for r in results}
    a, b, c = (by[(m, results[0]["rows"])] for m in ("naive", "loop", "pipeline"))
    print(f"\n{'mode':<9} {'rows':>7} {'seconds':>8} {'img/s':>8} {'peak MB':>8}")
    for r in results:
        print(f"{r['mode']:<9} {r['rows']:>7} {r['seconds']:>8.1f} {r['rows_per_second']:>8.0f} {r['peak_rss_mb']:>8.0f}")
    summary = {"c_over_a": c["rows_per_second"] / a["rows_per_second"], "c_over_b": c["rows_per_second"] / b["rows_per_second"],
               "loop_and_pipeline_identical": b["content"] == c["content"]}
    print(f"pipeline/naive {summary['c_over_a']:.2f}x, pipeline/loop {summary['c_over_b']:.2f}x, "
          f"identical pixels (loop vs pipeline): {summary['loop_and_pipeline_identical']}")
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps({"results": results, **summary, "cpus": os.cpu_count()}, indent=2))
    return None


if __name__ == "__main__":
    main()
