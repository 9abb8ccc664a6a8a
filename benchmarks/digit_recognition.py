"""How recognisable are the generated digits? An outside classifier's verdict, per requested label.

The judge is an RBF SVM trained on all of scikit-learn's 8x8 digits (it has never seen our model). Each
generated image is box-downsampled to 8x8 and classified; the score is the share assigned to the label
that was requested.

    .venv/bin/python benchmarks/digit_recognition.py --root runs --date 2026-11-23 [--json out.json]
"""

from __future__ import annotations

import argparse
import io
import json
from pathlib import Path

import numpy as np
import pyarrow.dataset as pads
from PIL import Image
from sklearn.datasets import load_digits
from sklearn.svm import SVC


def judge() -> SVC:
    digits = load_digits()
    return SVC(gamma=0.001).fit(digits.data, digits.target)


def to_8x8(png: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(png)) as im:
        small = np.asarray(im.convert("L").resize((8, 8), Image.BOX), dtype=np.float64)
    return small.reshape(-1) * 16.0 / 255.0


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--root", default="runs")
    p.add_argument("--date", required=True)
    p.add_argument("--model", help="only rows of this model (default: every image row with a digit label)")
    p.add_argument("--json", default="benchmarks/results/digit_recognition.json")
    args = p.parse_args()
    df = pads.dataset(Path(args.root) / "generated" / f"date={args.date}", format="parquet").to_table(
        columns=["modality", "label", "image", "model_name", "model_version"]).to_pandas()
    df = df[(df.modality == "image") & df.label.str.fullmatch(r"\d")]
    if args.model:
        df = df[df.model_name == args.model]
    if df.empty:
        raise SystemExit("no generated digit images found")
    predicted = judge().predict(np.stack([to_8x8(img["bytes"]) for img in df["image"]]))
    correct = predicted == df["label"].astype(int).to_numpy()
    per_label = {label: float(correct[(df["label"] == label).to_numpy()].mean()) for label in sorted(df["label"].unique())}
    result = {"date": args.date, "images": int(len(df)), "recognised": float(correct.mean()), "per_label": per_label,
              "models": sorted(set(df["model_name"] + "@" + df["model_version"]))}
    print(f"{'label':>6} {'recognised':>11}")
    for label, acc in per_label.items():
        print(f"{label:>6} {acc:>10.1%}")
    print(f"{'all':>6} {result['recognised']:>10.1%}   ({len(df)} images, {', '.join(result['models'])})")
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
