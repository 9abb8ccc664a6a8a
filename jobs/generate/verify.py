"""``aigc verify``: is this file, or this published row, what the pipeline signed, and does it still regenerate?

Four checks, each passed, failed (with the reason) or not applicable:

- ``credentials``: the image's C2PA manifest, read with ``c2pa-python``: claim signature, the hash of every byte
  outside it (a changed pixel fails here), each assertion's hash (a changed lineage field fails here), the
  signer's chain up to the trust anchors (a foreign key fails here), and a ``c2pa.created`` action declaring
  ``trainedAlgorithmicMedia``. A file without a manifest fails.
- ``lineage``: the manifest's lineage assertion equals the published row, field by field, and the file's pixels
  are the row's (``content_sha256``).
- ``partition``: the night's manifest carries an intact detached signature from a trusted chain, and the
  Parquet file that holds the row hashes to what it lists: so a text row's lineage is covered too.
- ``regenerated``: with the checkpoint at hand, the row sampled again from its seed is bit-identical
  (``jobs.generate.regenerate``).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from typing import Any

import numpy as np
import pyarrow.compute as pc
import pyarrow.dataset as pads

from jobs.generate.actors import LINEAGE, lineage
from jobs.generate.manifest import signature_path
from jobs.generate.regenerate import COLUMNS, regenerate
from jobs.store import layout
from jobs.store.chains import verify_detached
from jobs.store.credentials import Reading, read_png
from jobs.store.png import decode_png
from jobs.store.storage import Store


@dataclasses.dataclass
class Check:
    name: str
    ok: bool | None  # None: not applicable here (the detail says why)
    detail: str


@dataclasses.dataclass
class Verification:
    subject: str  # the file or row id verified
    row_id: str | None
    checks: list[Check]
    development: bool = False  # signed with a development chain: untrusted outside the machine that made it

    @property
    def ok(self) -> bool:
        return all(c.ok is not False for c in self.checks) and any(c.ok for c in self.checks)


def verify_file(data: bytes, name: str, store: Store | None, trust_pem: bytes | None, regenerate_rows: bool = True,
                use_gpu: bool = False) -> Verification:
    """Verifies an image file; with ``store`` (ROOT) its row is found (by the manifest's row id, else by its
    pixels) and checked too."""
    reading = read_png(data, trust_pem)
    checks = [_credentials(reading)]
    row = None
    if store is not None and store.exists(layout.GENERATED):
        row = _find(store, reading, data)
    if row is None:
        checks.append(Check("lineage", None if store is None else False,
                            "no ROOT given (--out or the config's output)" if store is None else
                            "no published row has this file's row id or pixels"))
        return Verification(name, None, checks, reading.development)
    checks.append(_lineage(reading, row, data))
    checks += _row_checks(store, row, trust_pem, regenerate_rows, use_gpu)
    return Verification(name, row["id"], checks, reading.development)


def verify_row(store: Store, row_id: str, trust_pem: bytes | None, regenerate_rows: bool = True,
               use_gpu: bool = False) -> Verification:
    """Verifies a published row: an image's embedded credentials and lineage, any row's signed partition and
    regeneration."""
    rows = _with_files(store, pc.field("id") == row_id)
    if len(rows) != 1:
        why = f"no published row has id {row_id}" if not rows else \
            f"{len(rows)} published rows have id {row_id} (in {', '.join(sorted({f for _, f in rows}))}): ids are unique"
        return Verification(row_id, None, [Check("row", False, why)])
    row = rows[0][0]
    checks, development = [], False
    if row["modality"] == "image":
        data = row["image"]["bytes"]
        reading = read_png(data, trust_pem)
        checks += [_credentials(reading), _lineage(reading, row, data)]
        development = reading.development
    checks += _row_checks(store, row, trust_pem, regenerate_rows, use_gpu)
    return Verification(row_id, row_id, checks, development)


def _credentials(reading: Reading) -> Check:
    if not reading.found or reading.problems:
        return Check("credentials", False, "; ".join(reading.problems))
    if not reading.trust_checked:
        return Check("credentials", False, f"intact, signed by {reading.signer}, but nothing vouches for that signer: "
                                           "no trust anchors (set signing.trust_anchors)")
    trust = "the signer chains to the trust anchors"
    dev = " (a DEVELOPMENT chain: untrusted anywhere else)" if reading.development else ""
    return Check("credentials", True, f"C2PA manifest intact, signed by {reading.signer}{dev}; {trust}; "
                                      f"c2pa.created, trainedAlgorithmicMedia, by {reading.software_agent}")


def _find(store: Store, reading: Reading, data: bytes) -> dict[str, Any] | None:
    """The published row a file belongs to: by its manifest's row id, else by the sha256 of its pixels."""
    if reading.lineage and reading.lineage.get("id"):
        rows = _with_files(store, pc.field("id") == reading.lineage["id"])
        if rows:
            return rows[0][0]
    try:
        content = hashlib.sha256(np.ascontiguousarray(decode_png(data)).tobytes()).hexdigest()
    except Exception:  # not an image at all: no row to find
        return None
    rows = _with_files(store, pc.field("content_sha256") == content)
    return rows[0][0] if rows else None


def _with_files(store: Store, where: pc.Expression) -> list[tuple[dict[str, Any], str]]:
    """The published rows ``where`` selects, each with the store path of the file that holds it."""
    if not store.exists(layout.GENERATED):
        return []
    dataset = pads.dataset(store.path(layout.GENERATED), filesystem=store.fs, format="parquet")
    return [(r, store.relpath(fragment.path)) for fragment in dataset.get_fragments()
            for r in fragment.to_table(columns=COLUMNS, filter=where).to_pylist()]


def _lineage(reading: Reading, row: dict[str, Any], data: bytes) -> Check:
    if reading.lineage is None:
        return Check("lineage", False, "the file states no lineage (no Content Credentials to compare with the row "
                                       f"{row['id']}, published {row['run_date']})")
    stated, published = reading.lineage, lineage({k: row.get(k) for k in LINEAGE})
    differ = [f"{k}: manifest {stated.get(k)!r}, row {published[k]!r}" for k in LINEAGE if stated.get(k) != published[k]]
    if differ:
        return Check("lineage", False, "the manifest's lineage differs from the published row: " + "; ".join(differ))
    try:
        pixels = hashlib.sha256(np.ascontiguousarray(decode_png(data)).tobytes()).hexdigest()
    except Exception as exc:
        return Check("lineage", False, f"the file's pixels cannot be decoded: {exc}")
    if pixels != row["content_sha256"]:
        return Check("lineage", False, "the file's pixels are not the published row's (content_sha256 differs)")
    return Check("lineage", True, f"row {row['id']} of {row['run_date']}: {row['model_name']}@{row['model_version']}, "
                                  f"checkpoint {row['checkpoint_sha256'][:12]}, seed {row['seed']}; pixels are the row's")


def _row_checks(store: Store, row: dict[str, Any], trust_pem: bytes | None, regenerate_rows: bool,
                use_gpu: bool) -> list[Check]:
    rows = _with_files(store, pc.field("id") == row["id"])
    if len(rows) != 1:
        return [Check("partition", False, f"{len(rows)} published rows have id {row['id']}: ids are unique")]
    checks = [_partition(store, row, rows[0][1], trust_pem)]
    if not regenerate_rows:
        checks.append(Check("regenerated", None, "not asked for (--no-regenerate)"))
        return checks
    try:
        results, _, _ = regenerate(store, [row["id"]], use_gpu=use_gpu)
    except (FileNotFoundError, KeyError, ValueError) as exc:  # no checkpoint at hand
        return checks + [Check("regenerated", None, f"not possible here: {exc}")]
    r = results[0]
    return checks + [Check("regenerated", r.identical, r.detail)]


def _partition(store: Store, row: dict[str, Any], holder: str, trust_pem: bytes | None) -> Check:
    """The row's own file (``holder``) lies in its night's partition and is listed there, at its sha256, in the
    night's manifest; no file of the partition is unlisted; and the manifest's signature holds, from a signer
    the trust anchors vouch for."""
    run_date = str(row["run_date"])
    manifest_path, partition = layout.manifest(layout.GENERATED, run_date), layout.generated(run_date)
    if not store.exists(signature_path(manifest_path)):
        return Check("partition", False, f"the manifest of {run_date} carries no signature (the night was published "
                                         "unsigned, or the signature was removed)")
    if trust_pem is None:
        return Check("partition", False, "no trust anchors to check the manifest's signer against (set "
                                         "signing.trust_anchors)")
    data = store.read_bytes(manifest_path)
    try:
        envelope = store.read_json(signature_path(manifest_path))
        problems = verify_detached(data, envelope, trust_pem)
        listed = {f["path"]: f["sha256"] for f in json.loads(data)["files"]}
    except (ValueError, KeyError, TypeError) as exc:
        return Check("partition", False, f"the manifest of {run_date} or its signature is malformed ({exc})")
    if problems:
        return Check("partition", False, "; ".join(problems))
    present = {store.relpath(f, partition) for f in store.files(partition, suffix=".parquet")}
    if present - set(listed):
        return Check("partition", False, f"{partition} holds files its signed manifest does not list: "
                                         f"{', '.join(sorted(present - set(listed)))}")
    if not holder.startswith(f"{partition}/"):
        return Check("partition", False, f"the row lies in {holder}, outside its night's partition {partition}")
    rel = store.relpath(store.path(holder), partition)
    with store.fs.open_input_stream(store.path(holder)) as f:
        digest = hashlib.sha256(f.read()).hexdigest()
    if listed.get(rel) != digest:
        return Check("partition", False, f"{rel} changed after the night was signed (its sha256 differs from "
                                         "the manifest's)")
    return Check("partition", True, f"the signed manifest of {run_date} lists {rel} at its sha256")
