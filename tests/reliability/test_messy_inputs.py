"""Scenario 4: messy inputs. About 5% of the files are bad in every way the preprocessing issue lists, and the
text comes in several encodings. Every unit is accepted or quarantined with its reason, the counts add up to
what the test planted, every curated image has the configured mode and 8 bits, EXIF-rotated photos come out
rotated, and the driver's memory does not grow with the input.

The fast variant plants each kind of bad file once among ~200 good ones; the heavy one (``-m heavy``)
plants 4 times as much and checks the driver's peak memory stays flat as the input grows.
"""

from __future__ import annotations

import io
import struct
import zlib
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.dataset as pads
import pytest
from PIL import Image

from jobs.data.spec import ImageFolderSource, PreprocessSpec, TextFilesSource
from jobs.store.storage import Store

RESOLUTION = 16


def _png(arr: np.ndarray, **kw) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr, **kw).save(buf, format="PNG")
    return buf.getvalue()


def _bomb(seed: int) -> bytes:
    """A valid small PNG whose header claims 30,000 x 30,000 pixels (CRC fixed, so only the size is wrong)."""
    data = bytearray(_png(np.full((8, 8), seed % 256, np.uint8)))
    ihdr = bytearray(data[12:29])  # b"IHDR" + 13 bytes
    ihdr[4:12] = struct.pack(">II", 30_000, 30_000)
    data[12:29] = ihdr
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(ihdr)))
    return bytes(data)


def _exif_rotated(path: Path, shade: int) -> None:
    """A wide photo, dark left half and bright right half, stored with EXIF orientation 6 (show it turned 90°
    clockwise): shown, its top half is dark and its bottom half bright. ``shade`` keeps each one distinct."""
    arr = np.full((24, 48), shade, np.uint8)
    arr[:, 24:] = 255 - shade
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(arr).convert("RGB").save(path, format="JPEG", quality=95, exif=exif)


def messy_tree(root: Path, good: int, bad_each: int, seed: int = 0) -> tuple[dict[str, str], Counter, int]:
    """Folders of photos and text files, ~5% bad. Returns (input_ref -> expected reason for each planted bad
    image, expected reject counts by reason, number of units planted)."""
    rng = np.random.default_rng(seed)
    photos, copy = root / "photos", root / "copy"
    for label in ("cat", "dog", "owl"):
        (photos / label).mkdir(parents=True)
    copy.mkdir(parents=True)
    units, bad, reasons = 0, {}, Counter()
    noise = lambda *shape: rng.integers(0, 256, shape, dtype=np.uint8)  # noqa: E731  (distinct: no duplicates)

    # good images in every format and mode the cleaning converts
    writers = [
        lambda p: Image.fromarray(noise(20, 20)).save(p.with_suffix(".png")),
        lambda p: Image.fromarray(noise(24, 20, 3)).save(p.with_suffix(".jpg"), quality=95),
        lambda p: Image.fromarray(noise(20, 20, 3)).save(p.with_suffix(".webp"), lossless=True),
        lambda p: Image.fromarray(noise(20, 20, 3)).save(p.with_suffix(".bmp")),
        lambda p: Image.fromarray(noise(20, 20)).save(p.with_suffix(".tiff")),
        lambda p: Image.fromarray(noise(20, 20, 4)).save(p.with_suffix(".png")),  # RGBA
        lambda p: Image.fromarray(noise(20, 20, 3)).convert("CMYK").save(p.with_suffix(".jpg")),  # CMYK JPEG
        lambda p: Image.fromarray(rng.integers(0, 65536, (20, 20), dtype=np.uint16)).save(p.with_suffix(".png")),  # 16-bit
        lambda p: _palette_with_transparency(noise(20, 20, 3)).save(p.with_suffix(".png"), transparency=0),
        lambda p: Image.fromarray(noise(20, 20, 2), mode="LA").save(p.with_suffix(".png")),
        lambda p: Image.fromarray(noise(20, 20)).save(p.with_suffix(".gif"), save_all=True,  # animated: frame 0
                                                      append_images=[Image.fromarray(noise(20, 20))]),
        lambda p: p.with_suffix(".png").write_bytes(_jpeg(noise(20, 20, 3))),  # a JPEG named .png: decodes by content
    ]
    for i in range(good):
        label = ("cat", "dog", "owl")[i % 3]
        writers[i % len(writers)](photos / label / f"img{i:05d}")
        units += 1
    for i in range(bad_each):
        _exif_rotated(photos / "cat" / f"rotated{i}.jpg", shade=4 * i)
        units += 1

    def plant(rel: str, reason: str, write) -> None:
        nonlocal units
        path = photos / rel
        write(path)
        bad[rel], units = reason, units + 1
        reasons[reason] += 1

    for i in range(bad_each):
        full = _png(noise(32, 32))
        plant(f"dog/truncated{i}.png", "truncated", lambda p: p.write_bytes(full[: len(full) * 2 // 3]))
        plant(f"dog/zero{i}.png", "empty", lambda p: p.write_bytes(b""))
        plant(f"owl/not_a_picture{i}.png", "undecodable", lambda p: p.write_text(f"just words {i}"))
        plant(f"owl/bomb{i}.png", "decompression_bomb", lambda p: p.write_bytes(_bomb(i)))
        plant(f"cat/tiny{i}.png", "too_small", lambda p: p.write_bytes(_png(noise(4, 4))))
        plant(f"cat/strip{i}.png", "bad_aspect", lambda p: p.write_bytes(_png(noise(8, 64))))
        plant(f"dog/notes{i}.txt", "unsupported_type", lambda p: p.write_text("a note"))
        plant(f"owl/.hidden{i}.png", "hidden", lambda p: p.write_bytes(_png(noise(20, 20))))
        plant(f"cat/loop{i}", "symlink_loop", lambda p: p.symlink_to(photos))
        original = photos / "cat" / "img00000.png"
        plant(f"dog/copy_of_first{i}.png", "duplicate", lambda p: p.write_bytes(original.read_bytes()))

    # text: UTF-8, UTF-8 with BOM, UTF-16, Latin-1 (not UTF-8), one document per line, some lines bad
    lines = [f"Line {i} of the campaign copy, long enough to keep: offer {rng.integers(1e9)}." for i in range(good // 10)]
    chunks = np.array_split(np.arange(len(lines)), 4)
    encodings = [("utf-8", b""), ("utf-8", b"\xef\xbb\xbf"), ("utf-16", b""), ("latin-1", b"")]
    for (enc, prefix), idx in zip(encodings, chunks):
        body = "\n".join([lines[j] for j in idx] + ["Crème brûlée, façade, naïve: accents that are not ASCII."] * (enc == "latin-1"))
        (copy / f"{enc}-{len(prefix)}.txt").write_bytes(prefix + body.encode(enc))
        units += len(idx) + (enc == "latin-1")
    bad_text = ["", "short", "x" * 3000, "This line names a forbidden widget on purpose."]
    (copy / "bad.txt").write_bytes("\n".join(bad_text * bad_each).encode("utf-8"))
    units += len(bad_text) * bad_each
    reasons.update({"empty": bad_each, "too_short": bad_each, "too_long": bad_each, "blocked_term": bad_each})
    return bad, reasons, units


def _palette_with_transparency(rgb: np.ndarray) -> Image.Image:
    return Image.fromarray(rgb).convert("P", palette=Image.ADAPTIVE, colors=16)


def _jpeg(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="JPEG", quality=95)
    return buf.getvalue()


def _vm(field: str) -> int:
    """This process's VmHWM (peak) or VmRSS in bytes."""
    for line in open("/proc/self/status"):
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise KeyError(field)


def _preprocess_measured(root: Path, out: Path):
    """Run preprocessing on the tree; return (result, the driver's peak growth in bytes during the run)."""
    from jobs.data.curate import run_preprocess

    sources = [ImageFolderSource(kind="image_folder", path=str(root / "photos")),
               TextFilesSource(kind="text_files", path=str(root / "copy" / "*.txt"))]
    spec = PreprocessSpec(resolution=RESOLUTION, channels=1, val_fraction=0.2, blocklist=["forbidden widget"])
    with open("/proc/self/clear_refs", "w") as f:  # reset the peak so VmHWM is this run's
        f.write("5")
    before = _vm("VmRSS")
    result = run_preprocess(sources, spec, Store(str(out)))
    return result, _vm("VmHWM") - before


def _check(tmp_path: Path, result, bad: dict[str, str], reasons: Counter, units: int) -> None:
    c = result.counts
    assert c["inputs"] == units == c["accepted"] + c["rejected"]  # accepted + quarantined = what was planted
    assert c["by_reason"] == dict(reasons)
    curated = tmp_path / "out" / "curated" / result.dataset_version
    rejects = pads.dataset(tmp_path / "out" / "rejects" / "curated" / result.dataset_version).to_table().to_pandas()
    assert len(rejects) == c["rejected"]
    assert rejects[["id", "source", "stage", "reason"]].notna().all().all() and rejects["id"].is_unique
    photos = rejects[rejects.source.str.startswith("image_folder:")].set_index("input_ref")
    assert {ref: photos.loc[ref, "reason"] for ref in bad} == bad  # each bad file, under its own reason
    ingest = {"hidden": "ingest", "symlink_loop": "ingest", "unsupported_type": "ingest", "duplicate": "dedup"}
    assert (rejects["stage"] == rejects["reason"].map(ingest).fillna("clean")).all()  # where each was refused

    rows = pd.concat([pads.dataset(curated / s).to_table().to_pandas() for s in ("train", "val")])
    images = rows[rows.modality == "image"]
    assert len(rows) == c["accepted"] and rows["id"].is_unique
    for blob in images["image"]:
        im = Image.open(io.BytesIO(blob["bytes"]))
        assert im.mode == "L" and im.size == (RESOLUTION, RESOLUTION) and np.asarray(im).dtype == np.uint8
    rotated = images[images.input_ref.str.contains("rotated")]
    assert len(rotated) == len([1 for r in rows.input_ref if "rotated" in r])
    for blob in rotated["image"]:  # shown upright: dark top, bright bottom (unrotated it would be left/right)
        px = np.asarray(Image.open(io.BytesIO(blob["bytes"])), dtype=np.float64)
        assert px[:4].mean() < 60 and px[-4:].mean() > 195 and abs(px[:, :4].mean() - px[:, -4:].mean()) < 30
    texts = rows[rows.modality == "text"]
    assert "Crème brûlée, façade, naïve: accents that are not ASCII." in set(texts["text"])  # Latin-1 read right
    by_encoding = c["by_source"][f"text_files:{tmp_path / 'in' / 'copy'}/*.txt"]["by_encoding"]
    assert set(by_encoding) == {"utf-8", "utf-8-sig", "utf-16", "latin-1"}


def test_messy_inputs_are_accepted_or_quarantined_and_add_up(tmp_path, ray_local):
    bad, reasons, units = messy_tree(tmp_path / "in", good=200, bad_each=1)
    assert sum(reasons.values()) / units >= 0.05  # at least 5% bad
    result, growth = _preprocess_measured(tmp_path / "in", tmp_path / "out")
    _check(tmp_path, result, bad, reasons, units)
    assert growth < 300 * 2**20, f"driver grew {growth / 2**20:.0f} MB"


@pytest.mark.heavy
def test_the_drivers_memory_stays_flat_as_messy_inputs_grow(tmp_path_factory, ray_local):
    warm = tmp_path_factory.mktemp("warm-up")  # imports, Ray Data's first plans: not what grows with the input
    messy_tree(warm / "in", good=24, bad_each=1)
    _preprocess_measured(warm / "in", warm / "out")
    growth = {}
    for scale in (1, 4):
        tmp = tmp_path_factory.mktemp(f"messy{scale}")
        bad, reasons, units = messy_tree(tmp / "in", good=500 * scale, bad_each=3 * scale, seed=scale)
        result, growth[scale] = _preprocess_measured(tmp / "in", tmp / "out")
        print(f"messy inputs x{scale}: {units} units, driver peak grew {growth[scale] / 2**20:.1f} MB")
        _check(tmp, result, bad, reasons, units)
    # 4x the input: the driver keeps ~60 bytes per unit, so its peak may not grow by more than a few MB
    assert growth[4] - growth[1] < 40 * 2**20, {k: f"{v / 2**20:.0f} MB" for k, v in growth.items()}
