"""Ways people change a signed PNG after it was published, done at the byte level so nothing re-signs it:
a changed pixel (the image data rewritten, chunk CRCs fixed), a changed field inside the C2PA manifest, the
manifest stripped, and a foreign signer (another chain's manifest)."""

from __future__ import annotations

import struct
import zlib

import numpy as np

from jobs.store.png import C2PA_CHUNK, chunks, decode_png


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def change_pixel(png: bytes) -> bytes:
    """The same file with one pixel one level brighter: only the IDAT chunk is rewritten (filter 0 rows)."""
    arr = decode_png(png).copy()
    arr[0, 0, 0] = (int(arr[0, 0, 0]) + 1) % 256
    raw = b"".join(b"\x00" + row.tobytes() for row in arr.reshape(arr.shape[0], -1))
    out, done = png[:8], False
    for kind, start, end in chunks(png):
        if kind == b"IDAT":
            if not done:
                out += _chunk(b"IDAT", zlib.compress(raw))
                done = True
            continue
        out += png[start:end]
    return out


def change_in_manifest(png: bytes, old: bytes, new: bytes) -> bytes:
    """The manifest's bytes with ``old`` replaced by ``new`` (same length), its chunk's CRC fixed."""
    assert len(old) == len(new)
    out = png[:8]
    for kind, start, end in chunks(png):
        if kind == C2PA_CHUNK:
            data = png[start + 8:end - 4]
            assert old in data, "the manifest does not contain the bytes to change"
            out += _chunk(kind, data.replace(old, new, 1))
        else:
            out += png[start:end]
    return out


def strip_manifest(png: bytes) -> bytes:
    return png[:8] + b"".join(png[s:e] for kind, s, e in chunks(png) if kind != C2PA_CHUNK)


def pixels_of(png: bytes) -> np.ndarray:
    return decode_png(png)
