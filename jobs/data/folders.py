"""Image folders: class-per-subfolder (labels = folder names) or flat, walked in Ray tasks.

Every entry met is a unit: one that is not an image, or is not a regular file, or loops, becomes a reject
(``jobs.data.entries``); nothing is followed out of the folder or opened unless it is a regular file. The
walk only lists: the cleaning task reads each image's bytes later.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd

from jobs.data import entries
from jobs.data.raw import raw_frame
from jobs.data.spec import ImageFolderSource
from jobs.store.paths import PathPolicy

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff", ".gif"}
GROUP_STRIDE = 10**9  # image folders: top-level folder g starts at g * GROUP_STRIDE


def image_folder_walks(source: ImageFolderSource) -> tuple[list[tuple[list[str], list[str]]], bool]:
    """Splits the folder into walks: ``(root entry names, real paths walked by the other walks)`` each.
    Walk 0 takes the loose entries of the root; every top-level folder is a walk of its own, so Ray tasks
    list big trees in parallel. With ``follow_symlinks_outside`` one walk does the whole tree, so a folder
    reached by two links is still walked once."""
    root = Path(source.path).expanduser()
    if not root.is_dir():
        raise FileNotFoundError(f"image_folder source: {root} is not a directory")
    root_real = Path(entries.real(str(root)))
    names = sorted(e.name for e in os.scandir(root))
    tops: dict[str, Path] = {}
    for name in sorted(names, key=lambda n: (os.path.islink(root / n), n)):  # real folders before links to them
        path = root / name
        if name.startswith(".") or entries.bad_name(name) or entries.kind(str(path))[0] != "dir":
            continue  # the walk of the loose entries makes these units (rejects)
        real = Path(entries.real(str(path)))
        if (real == root_real or not real.is_relative_to(root_real)
                or any(real.is_relative_to(t) or t.is_relative_to(real) for t in tops.values())):
            continue
        tops[name] = real
    by_folder = source.labels == "folders" or (source.labels == "auto" and bool(tops))
    if source.follow_symlinks_outside:
        return [(names, [])], by_folder
    loose = [n for n in names if n not in tops]
    walks = [(loose, [str(t) for t in tops.values()])]
    walks += [([name], [str(t) for n, t in tops.items() if n != name]) for name in sorted(tops)]
    return walks, by_folder


def walk_group(source: ImageFolderSource, group: int, walk: tuple[list[str], list[str]], by_folder: bool,
                policy: PathPolicy = PathPolicy()) -> pd.DataFrame:
    """Every entry met is a unit. Hidden entries are ``hidden`` rejects (a hidden folder counts once);
    symlinked folders are followed once (a second visit, or a link into a folder another walk lists, is a
    ``symlink_loop`` reject, as is a link that leads back to itself); links leading out of the folder are
    ``symlink_outside`` rejects unless ``follow_symlinks_outside``; FIFOs, sockets, devices, dangling links
    and odd names are rejects too (``jobs.data.entries``). Runs in a Ray task."""
    names, others = walk
    root = Path(source.path).expanduser()
    root_real = Path(entries.real(str(root)))
    elsewhere = [Path(o) for o in others]
    visited, rows = {root_real}, []

    def unit(path: Path, reject: str | None = None, readable: bool = True) -> None:
        rows.append({"input_ref": entries.shown(str(path.relative_to(root))), "path": str(path) if readable else None,
                     "reject": reject})

    stack = [(root, sorted(names, reverse=True))]
    while stack:
        folder, listing = stack.pop()
        for name in listing:
            path = folder / name
            odd = entries.bad_name(name)
            if odd:
                unit(path, odd, readable=False)
                continue
            if name.startswith("."):
                unit(path, "hidden:hidden file or folder, skipped")
                continue
            real = Path(entries.real(str(path)))
            if path.is_symlink() and not real.is_relative_to(root_real) and not source.follow_symlinks_outside:
                unit(path, f"symlink_outside:link leads outside the folder to {entries.shown(str(real))}")
                continue
            if policy.restricted and not policy.allows(str(real)):  # not even listed, let alone read
                unit(path, f"path_not_allowed:{real} is outside security.allowed_roots")
                continue
            what, why = entries.kind(str(path))
            if what == "reject":
                unit(path, why)
            elif what == "dir":
                if real in visited or any(real.is_relative_to(o) or o.is_relative_to(real) for o in elsewhere):
                    unit(path, f"symlink_loop:{entries.shown(str(real))} was already visited")
                    continue
                try:
                    inside = sorted((e.name for e in os.scandir(path)), reverse=True)
                except OSError as exc:
                    unit(path, f"unreadable:cannot list the folder: {exc.strerror}")
                    continue
                visited.add(real)
                stack.append((path, inside))
            else:
                unit(path, None if path.suffix.lower() in IMAGE_SUFFIXES else
                     f"unsupported_type:not an image file type: {name}")
    rows.sort(key=lambda r: r["input_ref"])
    df = pd.DataFrame(rows, columns=["input_ref", "path", "reject"])
    parts = [Path(r).parts for r in df["input_ref"]]
    df["label"] = [p[0] if by_folder and len(p) > 1 else None for p in parts]
    df["modality"] = "image"
    df["position"] = group * GROUP_STRIDE + np.arange(len(df), dtype=np.int64)
    return raw_frame(df, source.source_id)
