"""Dataset cards, rewritten on every publish.

``ROOT/README.md`` is the card a person reads (Hugging Face's YAML header, then what the data is, the models
and checkpoints behind it, the nights it holds with their row counts and gate figures, how to read it and
how to regenerate a row), and ``load_dataset(ROOT)`` reads its ``configs`` (``generated``, the default, then
``curated`` and ``augmented``). Each dataset root holds the same header for itself as ``.huggingface.yaml``,
the file ``datasets`` (and the Hub) read beside or instead of a README's header: so ``load_dataset(ROOT/generated)``
knows its splits and features, and a folder uploaded to the Hub as it is loads right.

Why not a ``README.md`` inside ``ROOT/generated``: pandas and pyarrow, pointed at a folder, open every file in
it that does not start with ``_`` or ``.`` as Parquet, and fail on a README (``Could not open Parquet input
source '.../README.md': Parquet magic bytes not found``). The dataset root stays Parquet only.
"""

from __future__ import annotations

from typing import Any

import pyarrow.parquet as pq
import yaml

from jobs.store import layout, schema
from jobs.store.spec import CardSpec
from jobs.store.storage import Store

TAGS = ["synthetic", "ai-generated", "aigc-pipeline"]


def yaml_features(features: dict[str, Any]) -> list[dict[str, Any]]:
    """The YAML list form of a ``datasets`` feature dict (``Features.to_dict()``), as a card's header writes
    it (``Features._to_yaml_list``): ``{name, dtype}``, ``{name, struct: [...]}``, ``{name, list: ...}``."""
    def one(feature: dict[str, Any]) -> dict[str, Any]:
        kind = feature.get("_type")
        if kind == "Image":
            return {"dtype": "image"}
        if kind == "Value":
            return {"dtype": feature["dtype"]}
        if kind == "List":
            inner = one(feature["feature"])
            return {"list": inner["dtype"] if set(inner) == {"dtype"} else inner.get("struct", inner)}
        return {"struct": [{"name": k, **one(v)} for k, v in feature.items()]}  # a plain dict: a struct

    return [{"name": name, **one(f)} for name, f in features.items()]


def _size_category(n: int) -> str:
    for bound, name in ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"), (1_000_000, "100K<n<1M"),
                        (10_000_000, "1M<n<10M")):
        if n < bound:
            return name
    return "10M<n<100M"


def _features_of(store: Store, folder: str) -> list[dict[str, Any]] | None:
    files = store.files(folder, suffix=".parquet")
    if not files:
        return None
    arrow = pq.read_schema(files[0], filesystem=store.fs).remove_metadata()
    return yaml_features(schema.hf_features(arrow))


def _info(store: Store, folder: str, splits: list[tuple[str, str]], nights: list | None = None) -> dict[str, Any]:
    """A config's ``dataset_info``: features, and each split's rows and bytes. The sizes are not decoration:
    ``datasets`` caches a dataset whose configs come from a card by the card's configs and infos only, not
    by its files, so a card whose sizes did not change would hand back yesterday's rows after a new night.
    ``nights``: the generated manifests (their row and byte counts, instead of reading every footer)."""
    out: dict[str, Any] = {"features": _features_of(store, folder), "splits": []}
    for name, sub in splits:
        if nights is not None:
            rows, size = sum(n.get("rows", 0) for n in nights), sum(f.get("bytes", 0) for n in nights for f in n.get("files", []))
        else:
            files = store.files(folder, sub, suffix=".parquet") if sub else store.files(folder, suffix=".parquet")
            rows = sum(pq.read_metadata(f, filesystem=store.fs).num_rows for f in files)
            size = sum(i.size for i in store.fs.get_file_info(files)) if files else 0
        out["splits"].append({"name": name, "num_bytes": int(size), "num_examples": int(rows)})
    out["download_size"] = out["dataset_size"] = sum(sp["num_bytes"] for sp in out["splits"])
    return out


def _nights(store: Store) -> list[dict[str, Any]]:
    return [store.read_json(layout.manifest(layout.GENERATED, d)) for d in layout.published_dates(store)]


def _versions(store: Store, area: str) -> list[dict[str, Any]]:
    """Manifests of ``area``'s published versions (curated or augmented), oldest first."""
    out = [store.read_json(layout.manifest(area, v)) for v in store.listdir(area) if layout.published(store, area, v)]
    return sorted(out, key=lambda m: m.get("created_at", ""))


def _latest_curated(store: Store) -> str | None:
    return store.read_json(layout.CURATED_LATEST)["dataset_version"] if store.exists(layout.CURATED_LATEST) else None


def _configs(store: Store) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(configs, dataset_info) of ROOT's datasets for the root card, data paths relative to ROOT."""
    configs, info = [], []
    if layout.published_dates(store):
        configs.append({"config_name": "generated", "default": True,
                        "data_files": [{"split": "train", "path": f"{layout.GENERATED}/{layout.PARTITION_KEY}=*/*.parquet"}]})
        info.append({"config_name": "generated", **_info(store, layout.GENERATED, [("train", "")], _nights(store))})
    version = _latest_curated(store)
    if version and layout.published(store, layout.CURATED, version):
        splits = [{"split": name, "path": f"{layout.curated(version)}/{folder}/*.parquet"}
                  for name, folder in (("train", "train"), ("validation", "val"))
                  if store.files(layout.curated(version), folder, suffix=".parquet")]
        if splits:
            configs.append({"config_name": "curated", "data_files": splits})
            info.append({"config_name": "curated", **_info(store, layout.curated(version),
                                                           [(sp["split"], sp["path"].split("/")[-2]) for sp in splits])})
    mixes = _versions(store, layout.AUGMENTED)
    if mixes:
        mix = mixes[-1]["mix_version"]
        configs.append({"config_name": "augmented",
                        "data_files": [{"split": "train", "path": f"{layout.augmented(mix)}/**/*.parquet"}]})
        info.append({"config_name": "augmented", **_info(store, layout.augmented(mix), [("train", "")])})
    return configs, [i for i in info if i["features"]]


def _head(card: CardSpec, name: str, rows: int, configs: list, dataset_info: Any) -> dict[str, Any]:
    head: dict[str, Any] = {"pretty_name": card.pretty_name or name, "license": card.license,
                            "tags": TAGS + [t for t in card.tags if t not in TAGS],
                            "size_categories": [_size_category(rows)], "configs": configs}
    if dataset_info:
        head["dataset_info"] = dataset_info
    return head


def _write_yaml(store: Store, folder: str, head: dict[str, Any]) -> None:
    store.write_bytes(yaml.safe_dump(head, sort_keys=False, allow_unicode=True).encode(), folder, ".huggingface.yaml")


def _one_config(*splits: tuple[str, str]) -> list[dict[str, Any]]:
    return [{"config_name": "default", "data_files": [{"split": s, "path": p} for s, p in splits]}]


def write_cards(store: Store, card: CardSpec, name: str) -> str:
    """Rewrites ``ROOT/README.md`` and the dataset roots' ``.huggingface.yaml``; returns the README's path.
    A curated version or a mix never changes once published, so its file is written once."""
    nights = _nights(store)
    generated_rows = sum(n.get("rows", 0) for n in nights)
    if nights:
        _write_yaml(store, layout.GENERATED, _head(
            card, name, generated_rows, _one_config(("train", f"{layout.PARTITION_KEY}=*/*.parquet")),
            _info(store, layout.GENERATED, [("train", "")], nights)))
    curated = _versions(store, layout.CURATED)
    for m in curated:
        folder = layout.curated(m["dataset_version"])
        splits = [(s, f"{sub}/*.parquet") for s, sub in (("train", "train"), ("validation", "val"))
                  if store.files(folder, sub, suffix=".parquet")]
        if splits and not store.exists(folder, ".huggingface.yaml"):
            rows = m["counts"]["train"] + m["counts"].get("augmented", 0) + m["counts"]["val"]
            _write_yaml(store, folder, _head(card, f"{name} curated {m['dataset_version']}", rows, _one_config(*splits),
                                             _info(store, folder, [(sp, path.split("/")[0]) for sp, path in splits])))
    mixes = _versions(store, layout.AUGMENTED)
    for m in mixes:
        folder = layout.augmented(m["mix_version"])
        if not store.exists(folder, ".huggingface.yaml"):
            _write_yaml(store, folder, _head(card, f"{name} augmented {m['mix_version']}", m["counts"]["rows"],
                                             _one_config(("train", "**/*.parquet")), _info(store, folder, [("train", "")])))
    configs, info = _configs(store)
    header = yaml.safe_dump(_head(card, name, generated_rows, configs, info), sort_keys=False, allow_unicode=True)
    store.write_bytes(f"---\n{header}---\n\n{_body(store, card, name, nights, curated, mixes)}".encode(), "README.md")
    return store.display("README.md")


# ---- the body a person reads ------------------------------------------------------------------------------------

def _fmt(v: Any) -> str:
    return f"{v:.4g}" if isinstance(v, float) else "–" if v is None else str(v)


def _body(store: Store, card: CardSpec, name: str, nights: list, curated: list, mixes: list) -> str:
    out = [f"# {card.pretty_name or name}", "",
           "**Everything under `generated/` is AI-generated**: images and texts sampled from machine-learning models "
           "trained by `aigc-pipeline`, not photographs or text written by people. Every row says so in its "
           "`provenance` column (`ai_generated: true`, producer, model, time), and every image carries the same "
           "label inside its PNG (a text chunk), so a picture taken out of the table is still marked. Images of "
           "signed nights also carry Content Credentials (a signed C2PA manifest with the row's lineage), and each "
           "signed night's manifest has a detached signature (`manifests/generated/D.json.sig`): "
           "`aigc verify --id ID` or `aigc verify FILE` checks them.", ""]
    if nights:
        total, refused = sum(n.get("rows", 0) for n in nights), sum(n.get("rejected", 0) for n in nights)
        out += ["## Nights", "", f"{len(nights)} published nights, {total:,} rows; {refused:,} rows refused by the "
                "filters (kept apart under `rejects/generated/`, never in the dataset).", "",
                "| night | rows | refused | by modality | gate | figures |", "|---|---|---|---|---|---|"]
        for n in nights:
            gate = n.get("gate") or {}
            figures = "; ".join(f"{m}: " + ", ".join(f"{k} {_fmt(v)}" for k, v in sorted(f.items()))
                                for m, f in sorted((gate.get("figures") or {}).items()))
            by = ", ".join(f"{k} {v:,}" for k, v in sorted(n.get("by_modality", {}).items()))
            passed = "passed" if gate.get("passed") else "not run" if not gate else "refused"
            out.append(f"| {n['run_date']} | {n.get('rows', 0):,} | {n.get('rejected', 0):,} | {by} | {passed} | {figures or '–'} |")
        out += ["", "## Models and checkpoints", "", "| model | family | version | checkpoint sha256 | trained on | nights |",
                "|---|---|---|---|---|---|"]
        used: dict[tuple, list[str]] = {}
        for n in nights:
            for model, m in sorted(n.get("models", {}).items()):
                used.setdefault((model, m.get("family"), m.get("version"), m.get("checkpoint_sha256") or "", m.get("dataset_version")), []).append(n["run_date"])
        for (model, family, version, sha, data), dates in sorted(used.items()):
            out.append(f"| {model} | {family} | {version} | `{sha[:16]}…` | curated {data} | {', '.join(dates)} |")
        out.append("")
    if curated:
        out += ["## Curated training data", "", "| version | train | validation | rejected inputs | created |", "|---|---|---|---|---|"]
        for m in curated:
            c = m["counts"]
            out.append(f"| {m['dataset_version']} | {c['train'] + c.get('augmented', 0):,} | {c['val']:,} | {c['rejected']:,} | {m['created_at'][:19]} |")
        out.append("")
    if mixes:
        out += ["## Augmented mixes (real + synthetic)", "", "| mix | rows | real | synthetic |", "|---|---|---|---|"]
        out += [f"| {m['mix_version']} | {m['counts']['rows']:,} | {m['counts']['real']:,} | {m['counts']['synthetic']:,} |" for m in mixes]
        out.append("")
    out += ["## Read it", "", "Point any reader at the dataset folder itself; it holds the published rows only:", "",
            "```python", "import pandas as pd", 'df = pd.read_parquet("generated")              # run_date: date; date: the folder',
            'import polars as pl', 'pl.scan_parquet("generated/**/*.parquet", hive_partitioning=True)',
            'import duckdb', "duckdb.sql(\"select * from read_parquet('generated/**/*.parquet', hive_partitioning=true)\")",
            'import ray', 'ray.data.read_parquet("generated")', 'from datasets import load_dataset',
            'load_dataset("generated")                     # or load_dataset(".", "curated")', "```", "",
            "Refused rows (with reason codes) are under `rejects/`, manifests (counts, checksums, lineage) under "
            "`manifests/`.", "",
            "## Regenerate a row", "",
            "A row's bytes depend only on its checkpoint, seed, condition, sampler settings and device type, never on "
            "batch size or worker count. To rebuild rows and compare them with what was published:", "",
            "```", f"aigc regenerate --out {store.display()} --id ID [--id ID ...] [--to DIR]", "```", "",
            "## License", "",
            (f"`{card.license}`." if card.license != "other" else
             "Not chosen yet (`other`): set `card.license` in the pipeline config to a Hugging Face license id."),
            "", f"_This card is rewritten by aigc-pipeline on every publish ({store.display('README.md')})._", ""]
    return "\n".join(out)
