"""Image families and training recipes compared at the demo's budget, over several training seeds.

Trains each recipe on the built-in digits exactly as the nightly pipeline prepares them (8x8 -> 32x32 bicubic,
one channel), with the step every trainer runs (``aigc_models.training.optimizer_step``), in one process with
torch alone; then samples 100 images per label and scores them with the gate's own figures
(``jobs.gate.figures.image_figures``: FD and precision/recall in the label classifier's feature space,
conditional accuracy, memorisation) and the augmentation lift (``jobs.gate.lift``), the lift averaged over
``--lift-repeats`` classifier seeds and real subsets so its own noise is measured too.

    .venv/bin/python benchmarks/image_quality.py [--recipes dcgan vae ddpm-ddim10 ...] [--seeds 0 1 2] [--json out.json]
        [--budget-seconds S] [--check benchmarks/reference/image_quality.json] [--summarise RESULTS_JSON]

VAEs are fitted after training as the trainer fits them (their latent distribution per class); the ``vae``,
``vae-e40`` and ``vae-e60`` recipes sample N(0, I) instead (``prior: standard``), as VAEs did before the fit. The
``real`` recipe is no model: the training split's own digits stand in for generated ones, which gives the floor of
FD (real digits against the held-out ones) and the ceiling of the lift.

Prints a table (mean and spread over seeds per recipe) and writes JSON (default
``benchmarks/results/image_quality.json``; the runs of recipes this run did not measure are kept).
"""

from __future__ import annotations

import argparse
import io
import platform
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from _results import save  # noqa: E402
from PIL import Image  # noqa: E402

import aigc_models  # noqa: E402
from aigc_models import quality as q  # noqa: E402
from aigc_models.training import fit_to_data, make_optimizers, optimizer_step  # noqa: E402

CLASSES = [str(d) for d in range(10)]
BASE = {"resolution": 32, "channels": 1, "classes": CLASSES}
# recipe -> (family, model config, epochs, batch size, sampler settings)
RECIPES: dict[str, tuple[str, dict, int, int, dict]] = {
    "dcgan": ("dcgan", {"g_width": 32, "d_width": 32}, 30, 64, {}),
    "vae": ("vae", {"z_dim": 32, "width": 32}, 30, 64, {"prior": "standard"}),  # N(0, I): VAEs before the fit
    "vae-e40": ("vae", {"z_dim": 32, "width": 32}, 40, 64, {"prior": "standard"}),
    "vae-e60": ("vae", {"z_dim": 32, "width": 32}, 60, 64, {"prior": "standard"}),
    "vae-w64": ("vae", {"z_dim": 32, "width": 64}, 30, 64, {"prior": "standard"}),
    "vae-t0.8": ("vae", {"z_dim": 32, "width": 32}, 30, 64, {"temperature": 0.8, "prior": "standard"}),
    "vae-e60-fitted": ("vae", {"z_dim": 32, "width": 32}, 60, 64, {}),  # the fitted per-class latent distribution
    "vae-e60-kl0.5": ("vae", {"z_dim": 32, "width": 32, "kl_weight": 0.5}, 60, 64, {}),
    "vae-e60-kl0.25": ("vae", {"z_dim": 32, "width": 32, "kl_weight": 0.25}, 60, 64, {}),
    "vae-e40-kl0.25": ("vae", {"z_dim": 32, "width": 32, "kl_weight": 0.25}, 40, 64, {}),
    "vae-e60-kl0.25-cos": ("vae", {"z_dim": 32, "width": 32, "kl_weight": 0.25}, 60, 64, {}),
    "dcgan-e60": ("dcgan", {"g_width": 32, "d_width": 32}, 60, 64, {}),
    "ddpm-ddim10": ("ddpm", {"width": 32, "channel_mult": [1, 2, 2]}, 30, 64, {"steps": 10}),
    "ddpm-ddim25": ("ddpm", {"width": 32, "channel_mult": [1, 2, 2]}, 30, 64, {"steps": 25}),
    # not a model: the training split's own digits as the "generated" rows (a subset per seed): the floor of FD
    # (what real digits score against the held-out ones) and the ceiling of the lift
    "real": ("real", {}, 0, 0, {}),
}
SCHEDULES = {"vae-e60-kl0.25-cos": "cosine"}  # train.lr_schedule of a recipe (else constant, the default)
PER_LABEL = 100
NEAR_COPY_QUANTILE = 0.01


def digits_32() -> tuple[np.ndarray, np.ndarray]:
    """The curated digits: what ``jobs.data.cleaning.normalise_image`` makes of the built-in source."""
    from sklearn.datasets import load_digits

    d = load_digits()
    small = np.clip(np.round(d.images * (255.0 / 16.0)), 0, 255).astype(np.uint8)
    out = []
    for img in small:
        buf = io.BytesIO()
        Image.fromarray(img).save(buf, format="PNG")
        out.append(np.asarray(Image.open(buf).convert("L").resize((32, 32), Image.BICUBIC), dtype=np.uint8))
    return np.stack(out)[..., None], d.target.astype(np.int64)


def split(pixels: np.ndarray, y: np.ndarray, val_fraction: float = 0.1) -> tuple:
    order = np.random.default_rng(12345).permutation(len(y))
    n_val = int(round(len(y) * val_fraction))
    v, t = order[:n_val], order[n_val:]
    return pixels[t], y[t], pixels[v], y[v]


def references(train_px: np.ndarray, train_y: np.ndarray, val_px: np.ndarray):
    from jobs.gate.references import References

    clf = q.train_classifier(train_px, train_y, len(CLASSES), seed=0)
    feats = q.pixel_features(train_px)
    dist, _ = q.nearest(q.pixel_features(val_px), feats)
    return References(classifier=clf, classes={c: i for i, c in enumerate(CLASSES)}, features=feats,
                      near_copy_threshold=float(np.quantile(dist, NEAR_COPY_QUANTILE)))


def train(recipe: str, seed: int, train_px: np.ndarray, train_y: np.ndarray, epochs: int | None,
          budget_s: float | None = None) -> tuple:
    """The trained model, its training seconds and the epochs it ran (fewer than asked when ``budget_s`` ran out:
    families compared at the same training time)."""
    family, cfg, default_epochs, bs, _ = RECIPES[recipe]
    if family == "real":
        return RealDigits(train_px, train_y, seed), 0.0, 0
    epochs = epochs or default_epochs
    torch.manual_seed(seed)
    model = aigc_models.build(family, {**BASE, **cfg})
    steps_per_epoch = -(-len(train_y) // bs)
    opts, scheds = make_optimizers(model, total_steps=epochs * steps_per_epoch, schedule=SCHEDULES.get(recipe, "constant"))
    gen = torch.Generator().manual_seed(seed)
    labels = np.array([CLASSES[i] for i in train_y])
    started = time.perf_counter()
    model.train()
    done = 0
    for _ in range(epochs):
        if budget_s is not None and time.perf_counter() - started > budget_s:
            break
        order = torch.randperm(len(train_y), generator=gen).numpy()
        for s in range(0, len(order), bs):
            idx = order[s:s + bs]
            batch = model.make_batch({"pixels": train_px[idx], "label": labels[idx]})
            optimizer_step(model, model, opts, scheds, [batch], 1.0, {"device_type": "cpu", "enabled": False})
        done += 1
    fit_to_data(model, (model.make_batch({"pixels": train_px[s:s + bs], "label": labels[s:s + bs]})
                        for s in range(0, len(labels), bs)))  # as the trainer does after its last step
    return model.eval(), time.perf_counter() - started, done


class RealDigits:
    """Stands in for a model in the ``real`` recipe: ``sample`` hands out the training split's digits of each
    requested label (drawn without replacement by ``seed``)."""

    def __init__(self, pixels: np.ndarray, labels: np.ndarray, seed: int) -> None:
        self.pixels, self.labels, self.rng = pixels, labels, np.random.default_rng(seed)

    def sample(self, conditions: list[str], seeds: list[int], **_: object) -> list[np.ndarray]:
        out, wanted = [None] * len(conditions), np.array([int(c) for c in conditions])
        for c in np.unique(wanted):
            rows = np.flatnonzero(wanted == c)
            pool = self.rng.permutation(np.flatnonzero(self.labels == c))
            for i, r in enumerate(rows):  # the first len(pool) requests get real digits, the rest repeat them
                out[r] = self.pixels[pool[i % len(pool)]]
        return out


def lift(refs, train_px, train_y, val_px, val_y, fake, fake_y, repeats: int, synthetic: int = 100,
         steps: int = 300) -> dict:
    """The gate's augmentation lift (``jobs.gate.lift``: 10 real rows per label, plus ``synthetic`` generated ones,
    classifiers of ``steps`` steps), over ``repeats`` pairs with their own rows and seeds."""
    from jobs.gate.lift import _accuracy

    rows = []
    for r in range(repeats):
        rng = np.random.default_rng(1000 + r)
        real = np.concatenate([rng.choice(np.flatnonzero(train_y == c), 10, replace=False) for c in range(10)])
        syn = np.concatenate([rng.choice(np.flatnonzero(fake_y == c), min(synthetic, int((fake_y == c).sum())),
                                         replace=False) for c in range(10)])
        arm = (val_px, val_y, 10, r, "cpu", steps)
        real_acc = _accuracy(train_px[real], train_y[real], *arm)
        mixed_acc = _accuracy(np.concatenate([train_px[real], fake[syn]]), np.concatenate([train_y[real], fake_y[syn]]), *arm)
        rows.append(mixed_acc - real_acc)
    return {"lift": float(np.mean(rows)), "lift_sd": float(np.std(rows, ddof=1)) if len(rows) > 1 else 0.0,
            "lift_runs": [round(x, 4) for x in rows]}


def evaluate(recipe: str, model, refs, data: tuple, repeats: int, min_confidence: float) -> dict:
    from jobs.gate.figures import image_figures

    train_px, train_y, val_px, val_y = data
    conditions = [c for c in CLASSES for _ in range(2 * PER_LABEL)]
    started = time.perf_counter()
    fake = np.stack(model.sample(conditions, seeds=list(range(len(conditions))), **RECIPES[recipe][4]))
    sample_s = time.perf_counter() - started
    # the demo's filter: the label classifier must give the requested digit at least min_confidence
    probs = q.class_probabilities(refs.classifier, fake)[np.arange(len(fake)), [int(c) for c in conditions]]
    passed = probs >= min_confidence
    keep = np.concatenate([np.flatnonzero(passed & (np.array(conditions) == c))[:PER_LABEL] for c in CLASSES])
    refused = 1 - float(passed.mean())
    fake, conditions = fake[keep], [conditions[i] for i in keep]
    figures = image_figures(refs, fake, conditions, val_px)
    fake_y = np.array([int(c) for c in conditions])
    return {**figures, **lift(refs, train_px, train_y, val_px, val_y, fake, fake_y, repeats),
            "refused": round(refused, 4), "sample_seconds": round(sample_s, 2)}


def summary(rows: list[dict]) -> list[dict]:
    out = []
    for recipe in dict.fromkeys(r["recipe"] for r in rows):
        runs = [r for r in rows if r["recipe"] == recipe]
        line = {"recipe": recipe, "seeds": len(runs)}
        for key in ("recall", "precision", "fd", "conditional_accuracy", "memorisation_rate", "lift", "refused", "train_seconds",
                    "sample_seconds"):
            vals = [r[key] for r in runs if key in r]
            mean = statistics.fmean(vals)
            line[key] = f"{mean:.3f}" + (f"±{statistics.pstdev(vals):.3f}" if len(vals) > 1 else "")
        fds = [r["fd"] for r in runs]
        line["fd_spread"] = f"±{(max(fds) - min(fds)) / (2 * statistics.fmean(fds)):.0%}"  # half the range / mean
        line["fd_worst/best"] = f"{max(fds) / min(fds):.2f}"  # what a relative fd bound must tolerate
        out.append(line)
    return out


# How far a recipe's mean may move from the reference run before --check calls it a regression: wider than
# the spread of a three-seed mean the reference measured (one seed's FD moved up to 1.8x another's: vae-e40).
TOLERANCE = {"fd": ("lower", 0.5), "recall": ("higher", 0.1), "conditional_accuracy": ("higher", 0.05),
             "lift": ("higher", 0.03), "memorisation_rate": ("lower", 0.01)}
# FD near its floor (the real recipe: 0.022) moves by a fixed amount more than by a ratio: a three-seed mean of
# the demo's recipe may move this much (absolute) whatever the ratio (its seeds' sd: 0.021 over five seeds)
FD_NOISE = 0.03


def check(rows: list[dict], reference_path: str) -> list[str]:
    """Regressions of this run's recipe means against a saved run (``fd`` relative, the rest absolute)."""
    import json

    ref = json.loads(Path(reference_path).read_text())
    problems = []
    for recipe in dict.fromkeys(r["recipe"] for r in rows):
        old = [r for r in ref.get("runs", []) if r["recipe"] == recipe]
        if not old:
            continue
        new = [r for r in rows if r["recipe"] == recipe]
        for key, (better, tol) in TOLERANCE.items():
            was, now = statistics.fmean(r[key] for r in old), statistics.fmean(r[key] for r in new)
            limit = was + max(was * tol, FD_NOISE) if key == "fd" else was + tol if better == "lower" else was - tol
            if (now > limit) if better == "lower" else (now < limit):
                problems.append(f"{recipe}: {key} {now:.4f} vs reference {was:.4f} (limit {limit:.4f})")
    return problems


def kept_runs(path: str, measured: set[str]) -> list[dict]:
    """The runs of an existing results file for the recipes this run did not measure: a run of some recipes
    replaces those recipes' rows (all their seeds) and keeps every other recipe's."""
    import json

    if not Path(path).exists():
        return []
    return [r for r in json.loads(Path(path).read_text()).get("runs", []) if r["recipe"] not in measured]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--recipes", nargs="+", default=list(RECIPES), choices=list(RECIPES))
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--epochs", type=int, default=None, help="override every recipe's epochs")
    p.add_argument("--budget-seconds", type=float, default=None,
                   help="stop a recipe's training after the epoch that crosses this many seconds")
    p.add_argument("--lift-repeats", type=int, default=5)
    p.add_argument("--min-confidence", type=float, default=0.5, help="the label filter (0: every sample)")
    p.add_argument("--json", default="benchmarks/results/image_quality.json")
    p.add_argument("--check", metavar="REFERENCE_JSON", default=None,
                   help="exit 1 when a recipe's mean figures regressed against this saved run (the reference per family "
                        "is committed: benchmarks/reference/image_quality.json; benchmarks/results/ is not)")
    p.add_argument("--summarise", metavar="RESULTS_JSON", default=None,
                   help="print the table of a saved run (its runs, summarised again) and exit")
    args = p.parse_args()
    from models import table as print_table

    if args.summarise:
        import json

        print_table("image recipes (mean ± sd over seeds)", summary(json.loads(Path(args.summarise).read_text())["runs"]))
        return
    torch.set_num_threads(max(1, torch.get_num_threads()))
    px, y = digits_32()
    data = split(px, y)
    refs = references(data[0], data[1], data[2])
    rows = []
    for recipe in args.recipes:
        for seed in args.seeds:
            model, seconds, epochs = train(recipe, seed, data[0], data[1], args.epochs, args.budget_seconds)
            row = {"recipe": recipe, "seed": seed, "train_seconds": round(seconds, 1), "epochs": epochs,
                   **evaluate(recipe, model, refs, data, args.lift_repeats, args.min_confidence)}
            print({k: round(v, 4) if isinstance(v, float) else v for k, v in row.items()}, flush=True)
            rows.append(row)
    table = summary(rows)
    print_table("image recipes (mean ± sd over seeds; fd_spread: half the range over the mean)", table)
    problems = check(rows, args.check) if args.check else []
    kept = kept_runs(args.json, set(args.recipes))
    runs = kept + rows
    save({"host": platform.node(), "torch": torch.__version__, "threads": torch.get_num_threads(),
          "per_label": PER_LABEL, "recipes": {r["recipe"]: RECIPES.get(r["recipe"]) for r in runs}, "runs": runs,
          "summary": summary(runs)}, args.json)
    for line in problems:
        print(f"REGRESSION {line}")
    if problems:
        sys.exit(1)


if __name__ == "__main__":
    main()
