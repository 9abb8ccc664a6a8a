"""Text files matched by a glob: one document per line or per file, decoded whatever their encoding, read in
Ray tasks."""

from __future__ import annotations

import glob
import os

import pandas as pd

from jobs.data import entries
from jobs.data.raw import raw_frame
from jobs.data.spec import TextFilesSource
from jobs.store.paths import PathPolicy, glob_root

FILE_STRIDE = 10**7  # text files: file i starts at i * FILE_STRIDE (then line number)
FILES_PER_TASK = 64  # text files read by one Ray task


def decode_text(data: bytes) -> tuple[str, str]:
    """Bytes -> (text, encoding used). BOMs decide first (UTF-8, UTF-16 LE/BE); then UTF-16 LE without BOM
    when (nearly) every other byte is NUL; then UTF-8; else Latin-1, which decodes any byte sequence."""
    if data.startswith(b"\xef\xbb\xbf"):
        return data[3:].decode("utf-8", errors="replace"), "utf-8-sig"
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        return data.decode("utf-16", errors="replace"), "utf-16"
    if len(data) >= 4 and data[1::2].count(0) > 0.9 * (len(data) // 2):
        return data.decode("utf-16-le", errors="replace"), "utf-16-le"
    try:
        return data.decode("utf-8"), "utf-8"
    except UnicodeDecodeError:
        return data.decode("latin-1"), "latin-1"


MAX_TEXT_FILE_BYTES = 1 << 30  # a text file larger than this is a ``too_large`` reject, never read whole


def text_units(source: TextFilesSource) -> list[tuple[str, str | None]]:
    """Every non-folder the glob matches, with its reject (``reason:detail``) when it is known from the
    listing: odd names, FIFOs and sockets, loops, dangling links, links out of the glob's fixed folders, and
    the same file reached a second time through a link."""
    pattern = os.path.expanduser(source.path)
    if glob.has_magic(pattern):
        root = glob_root(pattern)
        listed = entries.walk_glob(pattern, root) if os.path.isdir(root) else []
        tree = entries.real(root)
    else:
        listed = [] if os.path.isdir(pattern) or not os.path.lexists(pattern) else [(pattern, entries.kind(pattern)[1])]
        tree = None
    units, seen = [], {}
    for p, why in listed:
        real = entries.real(p)
        if why is None and tree and not (real == tree or real.startswith(tree.rstrip("/") + "/")):
            why = f"symlink_outside:link leads outside {entries.shown(glob_root(pattern))} to {entries.shown(real)}"
        if why is None and real in seen:
            why = f"symlink_loop:the same file as {entries.shown(seen[real])}"
        seen.setdefault(real, p)
        units.append((p, why))
    if not units:
        raise FileNotFoundError(f"text_files source: no file matches {source.path}")
    return units


def read_text_group(source: TextFilesSource, first: int, paths: list[tuple[str, str | None]],
                     policy: PathPolicy = PathPolicy()) -> pd.DataFrame:
    """Reads and decodes a group of text files (in a Ray task); file ``first + i`` holds positions
    ``(first + i) * FILE_STRIDE + line``."""
    rows = []
    for i, (p, known) in enumerate(paths):
        base = (first + i) * FILE_STRIDE
        if (known or "").split(":")[0] in ("", "symlink_outside") and policy.restricted and not policy.allows(p):
            known = f"path_not_allowed:{os.path.realpath(p)} is outside security.allowed_roots"  # the policy names it
        if not known:
            try:
                data = entries.read_regular(p, MAX_TEXT_FILE_BYTES)
            except entries.Unreadable as exc:
                known = f"{exc.reason}:{exc.detail}"
        if known:
            rows.append({"input_ref": entries.shown(p), "text": None, "encoding": None, "reject": known, "position": base})
            continue
        text, encoding = decode_text(data)
        if source.per == "file":
            units = [(text, encoding)]
        elif encoding == "latin-1":  # not UTF-8 as a whole: decide line by line (files that mix encodings)
            units = [decode_text(line) for line in data.splitlines()]
        else:
            units = [(line, encoding) for line in text.splitlines()]
        for k, (unit_text, unit_encoding) in enumerate(units or [("", encoding)]):
            rows.append({"input_ref": entries.shown(p) if source.per == "file" else f"{entries.shown(p)}:{k + 1}", "text": unit_text,
                         "encoding": unit_encoding, "reject": None, "position": base + min(k, FILE_STRIDE - 1)})
    df = pd.DataFrame(rows, columns=["input_ref", "text", "encoding", "reject", "position"])
    df["modality"] = "text"
    return raw_frame(df, source.source_id)
