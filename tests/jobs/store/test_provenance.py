"""Provenance labels: the label dict, its PNG chunks (tEXt + XMP) read back, pixels untouched, bytes
deterministic. Pure unit tests: no Ray, no models."""

import io
import json
from datetime import datetime, timedelta, timezone

import numpy as np
import pytest
from PIL import Image, PngImagePlugin

from jobs.store import provenance
from jobs.store.png import decode_png, encode_png

CREATED = datetime(2026, 3, 1, 2, 3, 4, 567890, tzinfo=timezone.utc)


def a_label():
    return provenance.label("abc123", "run-1", "digits-ddpm", "v3", CREATED)


def pixels(channels=3):
    return np.random.default_rng(0).integers(0, 256, size=(8, 8, channels), dtype=np.uint8)


def test_label_has_every_field_and_is_json():
    lab = a_label()
    assert lab == {
        "ai_generated": True, "producer": "aigc-pipeline", "content_id": "abc123", "run_id": "run-1",
        "model": "digits-ddpm@v3", "model_name": "digits-ddpm", "model_version": "v3",
        "created_at": "2026-03-01T02:03:04.567890+00:00",
        "digital_source_type": "http://cv.iptc.org/newscodes/digitalsourcetype/trainedAlgorithmicMedia",
        "label_text": "AI-generated"}
    assert json.loads(json.dumps(lab, sort_keys=True)) == lab


def test_label_stores_utc_and_refuses_naive_times():
    east = CREATED.astimezone(timezone(timedelta(hours=8)))
    assert provenance.label("a", "r", "m", "v", east)["created_at"] == "2026-03-01T02:03:04.567890+00:00"
    with pytest.raises(ValueError, match="timezone-aware"):
        provenance.label("a", "r", "m", "v", CREATED.replace(tzinfo=None))


@pytest.mark.parametrize("channels", [1, 3])
def test_png_round_trips_label_xmp_and_pixels(channels):
    lab, arr = a_label(), pixels(channels)
    png = encode_png(arr, lab)
    back = provenance.read(png)
    xmp = back.pop("xmp")
    assert back == lab
    assert xmp == {"digital_source_type": provenance.DIGITAL_SOURCE_TYPE,
                   "creator": ["aigc-pipeline", "digits-ddpm@v3"],
                   "creator_tool": "aigc-pipeline digits-ddpm@v3", "create_date": lab["created_at"],
                   "identifier": "abc123"}
    assert xmp["digital_source_type"] == back["digital_source_type"]
    np.testing.assert_array_equal(decode_png(png), arr)


def test_png_keeps_the_existing_text_chunks_and_declares_iptc_in_xmp():
    lab = a_label()
    with Image.open(io.BytesIO(encode_png(pixels(), lab))) as im:
        text = dict(im.text)
    assert text["ai_generated"] == "true"
    assert text["provenance"] == json.dumps(lab, sort_keys=True)
    xmp = text[provenance.XMP_KEY]
    assert 'xmlns:Iptc4xmpExt="http://iptc.org/std/Iptc4xmpExt/2008-02-29/"' in xmp
    assert f'Iptc4xmpExt:DigitalSourceType="{provenance.DIGITAL_SOURCE_TYPE}"' in xmp


def test_encoding_is_deterministic():
    arr = pixels()
    assert encode_png(arr, a_label()) == encode_png(arr.copy(), a_label())
    other = provenance.label("other", "run-1", "digits-ddpm", "v3", CREATED)
    assert encode_png(arr, a_label()) != encode_png(arr, other)


def test_unlabelled_png_is_unchanged_and_read_refuses_it():
    arr = pixels()
    buf = io.BytesIO()
    Image.fromarray(arr, mode="RGB").save(buf, format="PNG", optimize=False)
    assert encode_png(arr) == buf.getvalue()
    with pytest.raises(ValueError, match="no provenance label"):
        provenance.read(encode_png(arr))
    with pytest.raises(ValueError, match="not a readable PNG"):
        provenance.read(b"not an image")


def test_labels_without_a_source_type_encode_as_before():
    """Rows published before the XMP chunk existed must re-encode to their published bytes."""
    old = {"ai_generated": True, "producer": "aigc-pipeline", "content_id": "x", "run_id": "r",
           "model": "m@v1", "created_at": CREATED.isoformat()}
    before = PngImagePlugin.PngInfo()
    before.add_text("ai_generated", "true")
    before.add_text("provenance", json.dumps(old, sort_keys=True))
    buf = io.BytesIO()
    Image.fromarray(pixels(), mode="RGB").save(buf, format="PNG", pnginfo=before, optimize=False)
    assert encode_png(pixels(), old) == buf.getvalue()
    assert provenance.read(buf.getvalue())["xmp"] is None


def test_xmp_escapes_odd_names():
    lab = provenance.label("a", "r", 'm<&>"', "v", CREATED)
    back = provenance.read(encode_png(pixels(), lab))
    assert back["model_name"] == 'm<&>"' and back["xmp"]["creator"] == ["aigc-pipeline", 'm<&>"@v']
