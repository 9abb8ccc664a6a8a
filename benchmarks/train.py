"""Training throughput: a plain single-process PyTorch loop and plain ``torch.distributed`` DDP against Ray Train,
with 1 and 2 workers.

All run the same model (the demo's digits GAN by default) on the same curated digits, with the same
step (``aigc_models.training.optimizer_step``) and batch size per worker. Reported per run: samples/s over
the epochs after the first (median; the first warms up kernels and the dataset cache) and wall seconds
end to end (Ray Train's include starting the workers, materialising the dataset and publishing the model).
Ray Train's overhead = 1 - (1 worker samples/s) / (plain loop samples/s); scaling efficiency 1 -> 2 =
(2 workers samples/s) / (2 x 1 worker samples/s). Each worker, like the plain loop, uses one torch thread.
``to_ddp_steady`` = Ray Train's steady samples/s over plain DDP's with as many processes (gloo, the same
batches shared out by rank); ``fixed_cost_s`` = a fit's wall seconds less its samples at its steady rate. The
JSON's ``ray_train_to_ddp_steady`` and ``fit_fixed_cost_s`` are those of the largest worker count.

    .venv/bin/python benchmarks/train.py [--family dcgan] [--rows 1800] [--epochs 8] [--workers 1 2]
        [--data-order deterministic locality]   # what train.deterministic_data costs

On a machine with torch alone (a GPU box without Ray), ``--torch-only`` runs only the plain loop, on random
batches of the same shape, in bf16 autocast on CUDA:

    python benchmarks/train.py --torch-only --device cuda [--batch-size 64 256]
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a bare checkout: aigc_models only

import numpy as np  # noqa: E402
import torch  # noqa: E402
from _results import save  # noqa: E402  (benchmarks/ is on sys.path when a script runs)

import aigc_models  # noqa: E402
from aigc_models.training import make_optimizers, optimizer_step  # noqa: E402

CLASSES = [str(d) for d in range(10)]
MODELS = {  # the demo's models (configs/demo.yaml), at the demo's 32x32 single-channel resolution
    "dcgan": {"g_width": 32, "d_width": 32},
    "vae": {"z_dim": 32, "width": 32},
    "ddpm": {"width": 32, "channel_mult": [1, 2, 2]},
}


def plain_loop(model: aigc_models.GenerativeModel, batches: list[dict], epochs: int, device: torch.device,
               bf16: bool) -> dict:
    """What one would write without Ray: iterate the in-memory batches, one optimiser step per batch."""
    model.to(device).train()
    optimizers, schedulers = make_optimizers(model, total_steps=epochs * len(batches))
    autocast = {"device_type": device.type, "dtype": torch.bfloat16, "enabled": bf16}
    rates, started, last = [], time.perf_counter(), {}
    for _ in range(epochs):
        t, rows = time.perf_counter(), 0
        for columns in batches:
            batch = {k: v.to(device, non_blocking=True) for k, v in model.make_batch(columns).items()}
            last = optimizer_step(model, model, optimizers, schedulers, [batch], 1.0, autocast)
            rows += len(next(iter(columns.values())))
        if device.type == "cuda":
            torch.cuda.synchronize()
        rates.append(rows / (time.perf_counter() - t))
    if not all(np.isfinite(v) for v in last.values()):
        raise RuntimeError(f"{model.family}: non-finite metrics {last}")
    return {"samples_per_s": round(statistics.median(rates[1:] or rates), 1),
            "wall_seconds": round(time.perf_counter() - started, 2), "steps": epochs * len(batches)}


def _ddp_worker(rank: int, world: int, port: int, family: str, config: dict, batches: list[dict], epochs: int,
                out: str) -> None:
    """One process of plain ``torch.distributed`` DDP (gloo, one torch thread, as a Ray Train worker has): the
    rank's share of the batches, the same optimiser step."""
    import json
    import os

    from torch.nn.parallel import DistributedDataParallel

    torch.set_num_threads(1)
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.distributed.init_process_group("gloo", rank=rank, world_size=world)
    torch.manual_seed(0)
    model = aigc_models.build(family, config).train()
    ddp = DistributedDataParallel(model, find_unused_parameters=len(model.phases) > 1)
    mine = batches[rank::world][:len(batches) // world]  # every rank takes the same number of steps
    optimizers, schedulers = make_optimizers(model, total_steps=epochs * len(mine))
    autocast = {"device_type": "cpu", "dtype": torch.bfloat16, "enabled": False}
    rates = []
    for _ in range(epochs):
        torch.distributed.barrier()
        t, rows = time.perf_counter(), 0
        for columns in mine:
            optimizer_step(model, ddp, optimizers, schedulers, [model.make_batch(columns)], 1.0, autocast)
            rows += len(next(iter(columns.values())))
        rates.append(rows * world / (time.perf_counter() - t))
    if rank == 0:
        Path(out).write_text(json.dumps({"samples_per_s": round(statistics.median(rates[1:] or rates), 1),
                                         "steps": epochs * len(mine)}))
    torch.distributed.destroy_process_group()


def plain_ddp(family: str, config: dict, batches: list[dict], epochs: int, workers: int) -> dict:
    """What one would write with torch.distributed alone: ``workers`` processes on this machine."""
    import json
    import socket

    import torch.multiprocessing as mp

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with tempfile.TemporaryDirectory() as d:
        started = time.perf_counter()
        mp.spawn(_ddp_worker, args=(workers, port, family, config, batches, epochs, f"{d}/out.json"), nprocs=workers)
        wall = time.perf_counter() - started
        return {**json.loads(Path(f"{d}/out.json").read_text()), "wall_seconds": round(wall, 2)}


def random_batches(family: str, n_rows: int, batch_size: int) -> list[dict]:
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (n_rows, 32, 32, 1), dtype=np.uint8)
    labels = np.array([CLASSES[i % 10] for i in range(n_rows)])
    return [{"pixels": pixels[i:i + batch_size], "label": labels[i:i + batch_size]} for i in range(0, n_rows, batch_size)]


def torch_only(args: argparse.Namespace) -> dict:
    device = torch.device(args.device)
    bf16 = device.type == "cuda" and args.precision == "bf16"
    rows = []
    for family in args.families:
        for batch_size in args.batch_size:
            torch.manual_seed(0)
            model = aigc_models.build(family, {"resolution": 32, "channels": 1, "classes": CLASSES, **MODELS[family]})
            r = plain_loop(model, random_batches(family, args.rows, batch_size), args.epochs, device, bf16)
            rows.append({"family": family, "device": str(device), "precision": "bf16" if bf16 else "fp32",
                         "batch": batch_size, **r})
            print(rows[-1], flush=True)
    return {"torch_only": rows, "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None}


def with_ray(args: argparse.Namespace) -> dict:
    import pandas as pd
    import pyarrow.dataset as pads

    from jobs.data.curate import run_preprocess
    from jobs.data.curated import resolve_dataset_version
    from jobs.data.spec import BuiltinSource, PreprocessSpec
    from jobs.runtime.cluster import ensure_ray
    from jobs.store.storage import Store
    from jobs.train.data import model_config, split_stats, training_columns
    from jobs.train.run import run_training
    from jobs.train.spec import ModelSpec, TrainSpec

    ensure_ray(num_cpus=args.cpus, dashboard=False)  # as the DDP baseline: no dashboard processes polling beside it
    torch.set_num_threads(1)  # what a Ray Train worker with one CPU gets (OMP_NUM_THREADS=1)
    store = Store(tempfile.mkdtemp(prefix="bench-train-"))
    run_preprocess([BuiltinSource(kind="builtin", name="digits", limit=args.rows)], PreprocessSpec(resolution=32, channels=1), store)
    version = resolve_dataset_version(store, None)
    batch_size = args.batch_size[0]
    results = []
    for family in args.families:
        spec = ModelSpec(name=f"bench-{family}", family=family, epochs=args.epochs, **MODELS[family])
        n_rows, classes = split_stats(store, version, "train", "image", None)
        df = pads.dataset(store.path("curated", version, "train"), format="parquet").to_table().to_pandas()
        df = df[df["modality"] == "image"]
        batches = [training_columns(df.iloc[i:i + batch_size], "image") for i in range(0, len(df), batch_size)]
        torch.manual_seed(0)
        plain = plain_loop(aigc_models.build(family, model_config(spec, store, version, classes)), batches,
                           args.epochs, torch.device("cpu"), bf16=False)
        results.append({"family": family, "trainer": "plain PyTorch", "workers": 1, **plain})
        print(results[-1], flush=True)
        for workers in args.workers:
            ddp = plain_ddp(family, model_config(spec, store, version, classes), batches, args.epochs, workers)
            results.append({"family": family, "trainer": "torch DDP", "workers": workers, **ddp})
            print(results[-1], flush=True)
        for order in args.data_order:
            for workers in args.workers:
                train = TrainSpec(num_workers=workers, epochs=args.epochs, batch_size=batch_size, validation=False,
                                  log_every=0, promote=False, sample_grid=1, quality_references=False,
                                  deterministic_data=order == "deterministic")
                r = run_training(spec, train, store, fresh=True)
                metrics = pd.read_parquet(store.path(r.model.path, "metrics.parquet"))
                epochs = metrics[metrics.scope == "epoch"]
                rates = epochs["samples_per_second"].tolist()
                results.append({"family": family, "trainer": "Ray Train", "workers": workers, "data_order": order,
                                "samples_per_s": round(statistics.median(rates[1:] or rates), 1),
                                "wall_seconds": round(r.seconds, 2), "steps": r.steps,
                                "data_wait": f"{statistics.median(epochs['data_wait_share'].tolist()[1:] or [0]):.0%}"})
                print(results[-1], flush=True)
        runs = [r for r in results if r["family"] == family]
        ray_runs = [r for r in runs if r["trainer"] == "Ray Train" and r["data_order"] == args.data_order[0]]
        for r in ray_runs:
            ddp = next(d for d in runs if d["trainer"] == "torch DDP" and d["workers"] == r["workers"])
            r["to_ddp_steady"] = round(r["samples_per_s"] / ddp["samples_per_s"], 3)
            # what a fit costs beyond its steps at the steady rate: starting workers, data, checkpoints, publishing
            r["fixed_cost_s"] = round(r["wall_seconds"] - n_rows * args.epochs / r["samples_per_s"], 1)
        one = next((r for r in ray_runs if r["workers"] == 1), None)
        two = next((r for r in ray_runs if r["workers"] == 2), None)
        if one:
            one["overhead_vs_plain"] = f"{1 - one['samples_per_s'] / runs[0]['samples_per_s']:.1%}"
        if one and two:
            two["scaling_1_to_2"] = f"{two['samples_per_s'] / (2 * one['samples_per_s']):.0%}"
    main_runs = [r for r in results if r["trainer"] == "Ray Train" and r["workers"] == max(args.workers)
                 and r["data_order"] == args.data_order[0]]
    return {"rows": n_rows, "batch_size": batch_size, "epochs": args.epochs, "runs": results,
            "ray_train_to_ddp_steady": min(r["to_ddp_steady"] for r in main_runs),
            "fit_fixed_cost_s": max(r["fixed_cost_s"] for r in main_runs)}


def table(title: str, rows: list[dict]) -> None:
    keys = list(dict.fromkeys(k for r in rows for k in r))
    widths = [max(len(k), *(len(str(r.get(k, ""))) for r in rows)) for k in keys]
    print(f"\n{title}\n" + "  ".join(k.rjust(w) for k, w in zip(keys, widths)))
    for r in rows:
        print("  ".join(str(r.get(k, "")).rjust(w) for k, w in zip(keys, widths)))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--families", nargs="+", default=["dcgan"], choices=list(MODELS))
    p.add_argument("--rows", type=int, default=1800, help="digits to preprocess (or random rows with --torch-only)")
    p.add_argument("--epochs", type=int, default=8, help="the rates are medians over the epochs after the first")
    p.add_argument("--batch-size", type=int, nargs="+", default=[64], help="per worker (Ray: the first one)")
    p.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    p.add_argument("--cpus", type=int, default=None, help="CPUs for the local Ray (default: all)")
    p.add_argument("--data-order", nargs="+", default=["deterministic"], choices=["deterministic", "locality"],
                   help="train.deterministic_data on (rows in a fixed order per worker) or off (shards follow "
                        "block locality); several: compare them")
    p.add_argument("--torch-only", action="store_true", help="the plain loop only, on random data (no Ray needed)")
    p.add_argument("--device", default="cpu", help="--torch-only: cpu or cuda")
    p.add_argument("--precision", choices=["bf16", "fp32"], default="bf16", help="--torch-only on CUDA")
    p.add_argument("--json", default=None, help="default: benchmarks/results/train[-torch-<device>].json")
    args = p.parse_args()
    meta = {"torch": torch.__version__, "host": platform.node(), "cpus": torch.get_num_threads()}
    if args.torch_only:
        results = {**meta, **torch_only(args)}
        table("plain PyTorch training loop (random batches)", results["torch_only"])
        default = f"benchmarks/results/train-torch-{torch.device(args.device).type}.json"
    else:
        results = {**meta, **with_ray(args)}
        table(f"training {results['rows']} digits x {args.epochs} epochs, batch {results['batch_size']} per worker",
              results["runs"])
        default = "benchmarks/results/train.json"
    save(results, args.json or default)


if __name__ == "__main__":
    main()
