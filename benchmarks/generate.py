"""Generation throughput: the naive way, the pipeline's own work in one process, and the Ray Data pipeline.

On the same trained image model (the production version of ``--model`` under ``--root``; run `make demo`
first) and the same N rows (N/10 per digit):

  naive     one sample at a time (batch of one), each saved as its own PNG file: how tutorials do it
  loop      the equal-work loop: the pipeline's position ranges through its ``GeneratingActor`` (sampling, PNG
            with the provenance label, scores, filters, a Parquet file per range), in one process without Ray
  pipeline  ``jobs.generate.run.run_generation`` on a running Ray, published

Each run has a subprocess of its own, so its peak RSS (the driver's, for the pipeline) is its own. Filters are
as configured, without top-up rounds, so the loop and the pipeline publish the same rows; their pixels must be
identical (checked). ``--huge`` runs the pipeline once more to see how the driver's memory grows with rows.
Last, sampling and finishing are timed apart on one CPU thread each: a GPU night needs about (GPU rows/s) /
``finishing_rows_per_s_one_cpu`` finishing actors (``generate.encode_concurrency``) to keep its GPUs busy.

    .venv/bin/python benchmarks/generate.py --root runs --rows 20000 --big 200000 --huge 1000000 [--json out.json]
    python benchmarks/generate.py --torch-only --weights runs/models/digits-vae/<v>/model.safetensors --device cuda
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
import threading
import time
from pathlib import Path

from _results import save

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


def _spec(config: str, root: str, model: str, rows: int):
    """The config's generation settings with one request of ``rows`` rows; filters as configured but no top-up
    rounds, so the pipeline and the loop do exactly the same rows."""
    from jobs.store import registry
    from jobs.store.storage import Store
    from pipelines.config import load_config

    cfg = load_config(config, output=root)
    classes = registry.resolve(Store(root), model).card.classes
    filters = cfg.generate.filters.model_copy(update={"top_up": False, "max_reject_share": None})
    return cfg, cfg.generate.model_copy(update={"requests": _requests(model, rows, classes), "request_tables": [],
                                                "filters": filters})


def _content(ids: list[str], shas: list[str]) -> str:
    """One digest of the accepted rows' pixels (``content_sha256`` by id): equal digests, identical pixels."""
    return hashlib.sha256("".join(f"{k}{v}" for k, v in sorted(zip(ids, shas))).encode()).hexdigest()


def mode_loop(root: str, model: str, rows: int, config: str) -> dict:
    """The pipeline's work in one process, no Ray: the same position ranges, each through the same
    ``GeneratingActor`` (rows expanded, sampled, PNG with the label, scored, filtered, one Parquet file of
    accepted rows and one of refused rows per range). Timed from before the models load, as the pipeline is."""
    import numpy as np
    import pyarrow.dataset as pads

    from jobs.generate.actors import GeneratingActor
    from jobs.generate.plan import NightRun, RowSource, load_requests, position_ranges
    from jobs.generate.run import FIRST_RANGE_ROWS, _bytes_per_row
    from jobs.generate.staging import StagedOutput
    from jobs.store import registry
    from jobs.store.storage import Store

    _, spec = _spec(config, root, model, rows)
    store, folder = Store(root), f"staging/benchmark-loop-{os.getpid()}"
    started = time.time()
    cells, _, models = load_requests(spec, store, lambda n: registry.resolve(store, n))
    per_row = _bytes_per_row(cells, models)
    total = int(cells["n"].sum())
    actor = GeneratingActor(RowSource(cells, DATE, frozenset(), spec.batch_size),
                            StagedOutput(folder, max(1, min(spec.row_group_bytes, spec.max_file_bytes) // per_row)),
                            {"root": root, "models": {n: r.version for n, r in models.items()}, "use_gpu": False},
                            {"store_root": root, "run": NightRun(f"loop:{DATE}", DATE, "loop", models),
                             "rejected_dir": f"{folder}/_rejected", "filters": spec.filters})
    first = max(spec.batch_size, FIRST_RANGE_ROWS)
    for a, b in position_ranges(total, first, max(1, spec.max_file_bytes // per_row), 1):
        actor({"start": np.array([a]), "stop": np.array([b])})
    seconds = time.time() - started
    t = pads.dataset(store.path(folder), format="parquet").to_table(columns=["id", "content_sha256"])
    store.delete(folder)
    return {"rows": total, "published": t.num_rows, "seconds": seconds,
            "content": _content(t.column("id").to_pylist(), t.column("content_sha256").to_pylist())}


def mode_stages(root: str, model: str, rows: int, config: str) -> dict:
    """Sampling and finishing apart, on one CPU thread each (what a Ray actor with one CPU gets): how many
    finishing actors keep one sampling actor busy (on a GPU, its rows/s come from ``--torch-only``)."""
    import numpy as np
    import torch

    from jobs.generate.actors import FinishingActor, SamplingActor
    from jobs.generate.plan import NightRun, RowSource, load_requests
    from jobs.store import registry
    from jobs.store.storage import Store

    torch.set_num_threads(1)
    _, spec = _spec(config, root, model, rows)
    store, folder = Store(root), f"staging/benchmark-stages-{os.getpid()}"
    cells, _, models = load_requests(spec, store, lambda n: registry.resolve(store, n))
    rows = int(cells["n"].sum())
    sampler = SamplingActor(root, {n: r.version for n, r in models.items()}, False)
    finisher = FinishingActor(root, NightRun(f"stages:{DATE}", DATE, "stages", models), f"{folder}/_rejected", spec.filters)
    parts = list(RowSource(cells, DATE, frozenset(), spec.batch_size).parts({"start": np.array([0]), "stop": np.array([rows])}))
    started = time.time()
    sampled = [sampler(p) for p in parts]
    sampling = time.time() - started
    started = time.time()
    for p in sampled:
        finisher.finish(p)
    finishing = time.time() - started
    store.delete(folder)
    return {"rows": rows, "seconds": sampling + finishing, "sampling_rows_per_s_one_cpu": rows / sampling,
            "finishing_rows_per_s_one_cpu": rows / finishing}


def _first_file(where: Path, started: float, found: list[float], stop: threading.Event) -> None:
    """Seconds from ``started`` until a Parquet file of accepted rows has bytes under ``where`` (staging)."""
    while not stop.wait(0.02):
        for dirpath, _, names in os.walk(where):
            if "/_" in dirpath:
                continue
            if any(n.endswith(".parquet") and os.path.getsize(os.path.join(dirpath, n)) > 0 for n in names):
                found.append(time.time() - started)
                return


def mode_pipeline(root: str, model: str, rows: int, config: str) -> dict:
    """``run_generation`` on a running Ray (started before the clock), published, then read back."""
    import pyarrow.dataset as pads

    from jobs.generate.run import run_generation
    from jobs.runtime.cluster import ensure_ray
    from jobs.store.storage import Store

    cfg, spec = _spec(config, root, model, rows)
    ensure_ray(cfg.ray.address, cfg.ray.num_cpus, dashboard=False)
    time.sleep(5)  # "on a running Ray": a fresh instance's prestarted workers finish booting first (in a night, Ray
    #                has been up since before training)
    store = Store(root)
    found: list[float] = []
    stop = threading.Event()
    started = time.time()
    watcher = threading.Thread(target=_first_file, args=(Path(root) / "staging", started, found, stop), daemon=True)
    watcher.start()
    result = run_generation(spec, store, DATE, "benchmark", force=True)
    wall = time.time() - started
    stop.set()
    peak = _peak_mb()  # the driver's own peak, before this script reads the rows back to compare them
    t = pads.dataset(store.path("generated", f"date={DATE}"), format="parquet").to_table(columns=["id", "content_sha256"])
    files = result.manifest["files"]
    store.delete("generated", f"date={DATE}")
    store.delete("rejects", "generated", f"date={DATE}")
    store.delete("manifests/generated", f"{DATE}.json")
    return {"rows": rows, "published": result.rows, "seconds": wall, "time_to_first_row_s": found[0] if found else None,
            "content": _content(t.column("id").to_pylist(), t.column("content_sha256").to_pylist()),
            "files": len(files), "largest_file_mb": max(f["bytes"] for f in files) / 2**20, "driver_peak_rss_mb": peak}


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


def _run(mode: str, rows: int, args: argparse.Namespace) -> dict:
    """One mode in a subprocess of its own (its peak RSS is its own)."""
    cmd = [sys.executable, __file__, "--mode", mode, "--rows", str(rows), "--root", args.root,
           "--model", args.model, "--config", args.config]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=HERE, env={**os.environ, "PYTHONPATH": str(HERE)})
    line = next((l for l in proc.stdout.splitlines() if l.startswith("RESULT ")), None)
    if line is None:
        raise SystemExit(f"{mode} failed:\n{proc.stderr[-3000:]}")
    r = {"mode": mode, **json.loads(line[len("RESULT "):])}
    r["rows_per_second"] = r["rows"] / r["seconds"]
    first = f"  first row {r['time_to_first_row_s']:.1f} s" if r.get("time_to_first_row_s") else ""
    print(f"  {mode:<9} {r['rows']:>8} rows  {r['rows_per_second']:>7.0f} img/s  peak RSS {r['peak_rss_mb']:>5.0f} MB{first}",
          flush=True)
    return r


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default="configs/demo.yaml")
    p.add_argument("--root", default="runs")
    p.add_argument("--model", default="digits-vae")
    p.add_argument("--rows", type=int, default=20000)
    p.add_argument("--big", type=int, default=0, help="also compare the loop and the pipeline at this many rows")
    p.add_argument("--huge", type=int, default=0, help="also run the pipeline alone at this many rows (driver memory)")
    p.add_argument("--skip-naive", action="store_true", help="leave out the one-at-a-time reference")
    p.add_argument("--json", default="benchmarks/results/generate.json")
    p.add_argument("--mode", choices=["naive", "loop", "pipeline", "stages"], help=argparse.SUPPRESS)
    p.add_argument("--torch-only", action="store_true", help="time model.sample alone (a GPU box with torch only)")
    p.add_argument("--weights", help="with --torch-only: a model.safetensors")
    p.add_argument("--device", default="cpu")
    args = p.parse_args()
    if args.torch_only:
        return torch_only(args.weights, args.device, [16, 64, 256, 1024], args.rows)
    if args.mode:
        fn = {"naive": lambda: mode_naive(args.root, args.model, args.rows),
              "loop": lambda: mode_loop(args.root, args.model, args.rows, args.config),
              "pipeline": lambda: mode_pipeline(args.root, args.model, args.rows, args.config),
              "stages": lambda: mode_stages(args.root, args.model, min(args.rows, 4096), args.config)}[args.mode]
        out = fn()
        out["peak_rss_mb"] = out.pop("driver_peak_rss_mb", None) or _peak_mb()
        print("RESULT " + json.dumps(out))
        return None
    sizes = [args.rows] + ([args.big] if args.big else [])
    runs = ([] if args.skip_naive else [("naive", args.rows)]) + [(m, n) for n in sizes for m in ("loop", "pipeline")]
    results = [_run(mode, rows, args) for mode, rows in runs + ([("pipeline", args.huge)] if args.huge else [])]
    stages = _run("stages", min(args.rows, 4096), args)
    by = {(r["mode"], r["rows"]): r for r in results}
    print(f"\n{'mode':<9} {'rows':>8} {'seconds':>8} {'img/s':>8} {'peak MB':>8} {'first row s':>12}")
    for r in results:
        first = f"{r['time_to_first_row_s']:.2f}" if r.get("time_to_first_row_s") else "-"
        print(f"{r['mode']:<9} {r['rows']:>8} {r['seconds']:>8.1f} {r['rows_per_second']:>8.0f} {r['peak_rss_mb']:>8.0f} {first:>12}")
    ratio = {str(n): by[("pipeline", n)]["rows_per_second"] / by[("loop", n)]["rows_per_second"] for n in sizes}
    summary = {"pipeline_to_equal_work_loop": ratio,
               "time_to_first_row_s": by[("pipeline", args.rows)]["time_to_first_row_s"],
               "identical_pixels": all(by[("loop", n)]["content"] == by[("pipeline", n)]["content"] for n in sizes)}
    summary.update({k: round(stages[k]) for k in ("sampling_rows_per_s_one_cpu", "finishing_rows_per_s_one_cpu")})
    if args.huge:
        summary["driver_rss_growth_mb_20k_to_1m"] = by[("pipeline", args.huge)]["peak_rss_mb"] - by[("pipeline", args.rows)]["peak_rss_mb"]
    if not args.skip_naive:
        summary["pipeline_to_naive"] = by[("pipeline", args.rows)]["rows_per_second"] / by[("naive", args.rows)]["rows_per_second"]
    print("\n" + "  ".join(f"pipeline/loop at {n}: {r:.2f}x" for n, r in ratio.items())
          + f"  identical pixels: {summary['identical_pixels']}  first row: {summary['time_to_first_row_s']} s"
          + (f"  driver RSS growth {args.rows} -> {args.huge}: {summary['driver_rss_growth_mb_20k_to_1m']:.0f} MB" if args.huge else ""))
    save({"results": results, **summary, "cpus": os.cpu_count()}, args.json)
    return None


if __name__ == "__main__":
    main()
