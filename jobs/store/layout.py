"""Where everything lives under ROOT, in one place.

A *dataset root* (``ROOT/generated``, ``ROOT/curated/<version>``, ``ROOT/augmented/<mix_version>``) holds the
published Parquet rows and nothing a Parquet reader would trip on, so pandas, pyarrow, Polars, DuckDB, Ray
Data and Hugging Face ``datasets`` pointed at it with their default (or hive) options all read exactly the
published rows. Beside each dataset's files lies only ``.huggingface.yaml`` (its card's header: configs,
features; a dot file, which every Parquet reader skips and ``datasets`` reads). Everything else lives in
sibling trees no reader of a dataset lists:

    ROOT/generated/date=YYYY-MM-DD/part-*.parquet     published rows of one night
    ROOT/curated/<version>/{train,val}/*.parquet     curated splits
    ROOT/augmented/<mix_version>/part-*.parquet      real + synthetic mixes
    ROOT/rejects/generated/date=YYYY-MM-DD/*.parquet refused generated rows, with reason codes
    ROOT/rejects/curated/<version>/*.parquet         refused input units, with reason codes
    ROOT/manifests/<area>/<name>.json                counts, checksums, lineage (what the pipeline trusts)
    ROOT/manifests/curated/latest.json               the newest curated version
    ROOT/staging/<area>/...                          work in progress, resume state
    ROOT/README.md                                   the dataset card a person reads
    ROOT/logs/, ROOT/reports/run_date=D/, ROOT/models/

Why ``date=`` and not ``run_date=`` for the night's folder: the rows carry ``run_date`` as a Parquet
``date32`` (so ``datasets``, which does not read folder names, has it too), and a hive folder of the *same*
name makes pandas and pyarrow fail (``Unable to merge: Field run_date has incompatible types: date32[day] vs
dictionary<values=string>``): they type a folder's value as a string. A partition key of its own name is kept
out of the files, as Spark and pyarrow's ``write_dataset`` do.

Roots written before this layout (``generated/run_date=D``, ``generated/_rejected``, ``_manifests``,
``curated/<v>/rejects`` and ``_manifest.json``, ``<area>/_staging``) are moved into it on first use
(``migrate``), once; ``_root.json`` records the layout version.
"""

from __future__ import annotations

import re

from jobs.store.storage import Store

LAYOUT_VERSION = 2
GENERATED = "generated"
CURATED = "curated"
AUGMENTED = "augmented"
PARTITION_KEY = "date"
CURATED_LATEST = "manifests/curated/latest.json"
_NIGHT = re.compile(rf"^{PARTITION_KEY}=(\d{{4}}-\d{{2}}-\d{{2}})$")


def night(run_date: str) -> str:
    """The folder name of one night's partition: ``date=YYYY-MM-DD``."""
    return f"{PARTITION_KEY}={run_date}"


def generated(run_date: str) -> str:
    """One night's published rows: ``generated/date=YYYY-MM-DD``."""
    return f"{GENERATED}/{night(run_date)}"


def curated(version: str) -> str:
    """A curated version's dataset root (its ``train`` and ``val`` splits)."""
    return f"{CURATED}/{version}"


def rejects(area: str, name: str) -> str:
    """What ``area``'s dataset ``name`` refused, with reason codes: a night's refused rows (``name``: its
    ``night()`` folder) or a curated version's refused input units."""
    return f"rejects/{area}/{name}"


def manifest(area: str, name: str) -> str:
    """The manifest of ``area``'s dataset ``name`` (a curated or mix version, or a night's date)."""
    return f"manifests/{area}/{name}.json"


def augmented(mix_version: str) -> str:
    return f"{AUGMENTED}/{mix_version}"


def staging_area(area: str) -> str:
    return f"staging/{area}"


def published(store: Store, area: str, name: str) -> bool:
    """Whether ``area``'s dataset ``name`` is published: its manifest is written (last) and its folder is there
    (a folder deleted by hand is not published, whatever its manifest says)."""
    return store.exists(manifest(area, name)) and store.exists(area, name)


def published_dates(store: Store) -> list[str]:
    """Dates of the published nights, oldest first (a night is published when its manifest is written)."""
    dates = [m.group(1) for m in map(_NIGHT.match, store.listdir(GENERATED)) if m]
    return [d for d in sorted(dates) if store.exists(manifest(GENERATED, d))]  # the folder is listed


def data_files(store: Store, *parts: str) -> list[str]:
    """The Parquet files a reader of the folder ``parts`` reads: none under a name starting with ``_`` or
    ``.`` (Parquet readers skip those: staging's ``_rejected/``, ``.huggingface.yaml``) and none half-written
    (``Store.write_bytes``'s ``*.tmp-*`` siblings)."""
    return [f for f in store.files(*parts, suffix=".parquet")
            if ".tmp-" not in f and not any(p[:1] in "_." for p in store.relpath(f, *parts).split("/"))]


def night_manifests(store: Store) -> list[str]:
    """Dates that have a generated manifest, oldest first."""
    return sorted(n.removesuffix(".json") for n in store.listdir(f"manifests/{GENERATED}") if n.endswith(".json"))


# ---- old roots ---------------------------------------------------------------------------------------------

def migrate(store: Store) -> list[str]:
    """Moves a root written in the layout before this one into it; returns what moved (empty when nothing
    did). Idempotent and cheap once done: ``_root.json`` records ``layout``. Old staging (resume state of
    an interrupted night) is deleted, not moved: its files do not say which layout wrote them, and the night
    it belonged to is generated again in full."""
    if not store.exists("_root.json"):
        store.identity()
    info = store.read_json("_root.json")
    if info.get("layout", 1) >= LAYOUT_VERSION:
        return []
    moved: list[str] = []
    for name in store.listdir(GENERATED):
        if name.startswith("run_date="):
            d = name.split("=", 1)[1]
            if not store.exists(generated(d)):
                store.move(f"{GENERATED}/{name}", generated(d))
                moved.append(f"{GENERATED}/{name} -> {generated(d)}")
    for name in store.listdir(GENERATED, "_rejected"):
        d = name.split("=", 1)[1]
        store.move(f"{GENERATED}/_rejected/{name}", rejects(GENERATED, night(d)))
        moved.append(f"{GENERATED}/_rejected/{name} -> {rejects(GENERATED, night(d))}")
    for name in store.listdir(GENERATED, "_manifests"):
        d = name.removeprefix("run_date=").removesuffix(".json")
        store.move(f"{GENERATED}/_manifests/{name}", manifest(GENERATED, d))
        moved.append(f"{GENERATED}/_manifests/{name} -> {manifest(GENERATED, d)}")
    for version in store.listdir(CURATED):
        if store.exists(CURATED, version, "_manifest.json"):
            if store.exists(CURATED, version, "rejects"):
                store.move(f"{CURATED}/{version}/rejects", rejects(CURATED, version))
            store.move(f"{CURATED}/{version}/_manifest.json", manifest(CURATED, version))
            moved.append(f"{CURATED}/{version}: rejects and manifest")
    if store.exists(CURATED, "_latest.json"):
        store.move(f"{CURATED}/_latest.json", CURATED_LATEST)
        moved.append(f"{CURATED}/_latest.json -> {CURATED_LATEST}")
    for mix in store.listdir(AUGMENTED):
        if store.exists(AUGMENTED, mix, "_manifest.json"):
            store.move(f"{AUGMENTED}/{mix}/_manifest.json", manifest(AUGMENTED, mix))
            moved.append(f"{AUGMENTED}/{mix}: manifest")
    for area in (GENERATED, CURATED, AUGMENTED):
        for leftover in ("_staging", "_rejected", "_manifests"):
            store.delete(area, leftover)
    for model in store.listdir("models"):
        store.delete("models", model, "_staging")
    store.write_json({**info, "layout": LAYOUT_VERSION}, "_root.json")
    return moved


def open_root(root: str) -> Store:
    """The ``Store`` of ROOT, migrated to this layout first (saying so, once, when something moved)."""
    store = Store(root)
    moved = migrate(store)
    if moved:
        print(f"[layout] moved {store.display()} into the current layout ({len(moved)} moves; see jobs/layout.py): "
              + "; ".join(moved[:4]) + (" ..." if len(moved) > 4 else ""), flush=True)
    return store
