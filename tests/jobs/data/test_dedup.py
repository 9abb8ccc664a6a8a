"""Duplicate detection: exact groups, perceptual image hashes with banded lookup, normalised texts."""

import io

import numpy as np
from PIL import Image

from jobs.data.dedup import dhash, first_of_groups, near_image_duplicates, text_key


def test_dhash_survives_reencoding_and_resizing_but_not_other_pictures():
    rng = np.random.default_rng(0)
    img = (rng.random((64, 64)) * 255).astype(np.uint8)
    img[20:40, 10:50] = 255
    buf = io.BytesIO()
    Image.fromarray(img).resize((48, 48)).save(buf, "JPEG", quality=70)
    resized = np.asarray(Image.open(buf))
    other = (rng.random((64, 64)) * 255).astype(np.uint8)
    assert bin(dhash(img) ^ dhash(resized)).count("1") <= 8
    assert bin(dhash(img) ^ dhash(other)).count("1") > 16


def test_banded_lookup_finds_everything_brute_force_finds():
    rng = np.random.default_rng(1)
    base = [int(x) for x in rng.integers(0, 2**63, 200, dtype=np.int64)]
    hashes, ids = [], []
    for i, h in enumerate(base):  # each base hash, then a copy with a few bits flipped
        hashes += [h, h ^ (1 << int(rng.integers(64))) ^ (1 << int(rng.integers(64)))]
        ids += [f"a{i}", f"b{i}"]
    found = near_image_duplicates(ids, hashes, max_bits=3)
    brute = {}
    kept = []
    for rid, h in zip(ids, hashes):
        match = next(((k, bin(kh ^ h).count("1")) for k, kh in kept if bin(kh ^ h).count("1") <= 3), None)
        if match:
            brute[rid] = match
        else:
            kept.append((rid, h))
    assert found == brute and len(found) >= 200
    assert all(found[f"b{i}"][0] == f"a{i}" for i in range(200))


def test_first_occurrence_wins_and_text_keys_ignore_case_and_punctuation():
    later, first = first_of_groups([np.array(["k1", "k2", "k1", "k1", "k2"]), np.array([1, 1, 1, 1, 2])])
    assert dict(zip(later.tolist(), first.tolist())) == {2: 0, 3: 0}  # k2 rows differ in the second key
    assert [len(a) for a in first_of_groups([np.array([], dtype="S4")])] == [0, 0]
    assert text_key("Fresh bread, every morning!") == text_key("fresh BREAD every... morning")
    assert text_key("Fresh bread") != text_key("Fresh breads")
