"""The one commit protocol: write into a private staging folder, then make it visible in one step.

Readers list ``ROOT/<area>/<name>``; a staging folder lives under ``ROOT/staging/<area>/``, outside every
dataset root (``jobs.store.layout``), where no reader looks. ``commit`` replaces the target: the old version is
moved aside first, the new one renamed into place, the old one deleted. On a local disk each rename is atomic; a reader sees the old partition,
the new one, or (for the instant between the two renames) none, never a mix.

On an object store (S3 and the like) there is no rename, so the same three steps copy object by object
(``Store.move``, server-side copies) and the guarantee is weaker: while ``commit`` runs, a reader listing
the target may see part of the old version (being moved aside) or part of the new one (being copied in),
never old and new files together. A crash in the middle leaves a part there until the stage runs again;
the staging folder (or the moved-aside version, under ``staging/<area>/_replaced.*``) is kept until its copy is
complete. The pipeline's own readers are not fooled: the metadata a folder is trusted by
(``model_card.json`` of a model version; a dataset's manifest lies outside it and is written after) is copied last, and the
pointers (``manifests/curated/latest.json``, ``production.json``, a night's ``manifests/generated/D.json``) are
written only after ``commit`` returns. Readers that list a generated partition directly (pandas, Ray
Data, ``datasets``) should not read a night while it is being generated or re-run.
"""

from __future__ import annotations

import uuid

from jobs.store.layout import staging_area
from jobs.store.storage import Store


def staging_dir(store: Store, area: str, name: str) -> str:
    """A fresh, unique staging path for ``area/name``; nothing reads it until ``commit``."""
    path = f"{staging_area(area)}/{name}.{uuid.uuid4().hex[:12]}"
    store.makedirs(path)
    return path


def resumable_staging(store: Store, area: str, name: str, key: str) -> tuple[str, bool]:
    """The staging path of ``area/name`` for the work fingerprinted by ``key``, and whether it already
    exists (an interrupted run of the same work: resume it). Staging left by runs of *other* work for the
    same name can never be resumed and is deleted."""
    path = f"{staging_area(area)}/{name}.{key}"
    for entry in store.listdir(staging_area(area)):
        if entry.startswith(f"{name}.") and not entry.startswith(f"{name}.{key}"):  # keeps its progress file
            store.delete(staging_area(area), entry)
    resumed = store.exists(path)
    store.makedirs(path)
    return path, resumed


def commit(store: Store, staging: str, area: str, name: str) -> str:
    """Makes ``staging`` the content of ``area/name`` (replacing what was there) and returns that store path;
    atomic on a local disk, object by object on an object store (see the module docstring)."""
    target = f"{area}/{name}"
    trash = f"{staging_area(area.split('/')[0])}/_replaced.{name}.{uuid.uuid4().hex[:12]}"
    if store.exists(target):
        store.move(target, trash)
    store.move(staging, target)
    store.delete(trash)
    return target


def discard(store: Store, staging: str) -> None:
    store.delete(staging)
