"""The outside check of Content Credentials: c2pa-python itself (not this project's reader) reads every image of
a published night and counts those whose manifest is intact and trusted by the given anchors, declares
``trainedAlgorithmicMedia``, and states the row's id, seed, model version and checkpoint.

    .venv/bin/python benchmarks/content_credentials_check.py --root runs --date 2026-12-05 \
        [--anchors ~/.aigc/dev-keys/root.pem] [--json benchmarks/results/content_credentials.json]
"""

from __future__ import annotations

import argparse
import io
from collections import Counter
from pathlib import Path

import c2pa
import pyarrow.parquet as pq
from _results import save  # benchmarks/ is on sys.path when a script runs

LINEAGE = "org.aigc-pipeline.lineage"


def check(root: str, run_date: str, anchors: str) -> dict:
    settings = {"verify": {"verify_trust": True, "remote_manifest_fetch": False, "ocsp_fetch": False},
                "trust": {"trust_anchors": anchors}}
    rows = [r for r in pq.read_table(Path(root) / "generated" / f"date={run_date}").to_pylist() if r["modality"] == "image"]
    states, good = Counter(), 0
    for r in rows:
        with c2pa.Reader("image/png", io.BytesIO(r["image"]["bytes"]), context=c2pa.Context.from_dict(settings)) as reader:
            state = reader.get_validation_state()
            assertions = {a["label"]: a["data"] for a in reader.get_active_manifest()["assertions"]}
        states[state] += 1
        created = next(a for a in assertions["c2pa.actions.v2"]["actions"] if a["action"] == "c2pa.created")
        lineage = assertions.get(LINEAGE) or {}
        good += (state == "Trusted" and created["digitalSourceType"].endswith("/trainedAlgorithmicMedia")
                 and all(lineage.get(k) == r[k] for k in ("id", "seed", "model_version", "checkpoint_sha256")))
    return {"run_date": run_date, "images": len(rows), "intact_trusted_with_lineage": good, "states": dict(states),
            "c2pa_python": c2pa.__version__}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--root", default="runs")
    ap.add_argument("--date", required=True)
    ap.add_argument("--anchors", default=str(Path.home() / ".aigc" / "dev-keys" / "root.pem"))
    ap.add_argument("--json", default="benchmarks/results/content_credentials.json")
    args = ap.parse_args()
    result = check(args.root, args.date, Path(args.anchors).read_text())
    print(f"{result['intact_trusted_with_lineage']}/{result['images']} images of {args.date}: intact, trusted, "
          f"trainedAlgorithmicMedia, the row's id/seed/model version/checkpoint (c2pa states {result['states']})")
    save(result, args.json)


if __name__ == "__main__":
    main()
