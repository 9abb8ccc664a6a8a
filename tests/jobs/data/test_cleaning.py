"""Cleaning rules on hand-made bad and odd inputs: each is accepted the documented way or rejected with
its reason code, never a crash."""

import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from jobs.data.cleaning import Reject, normalise_image, normalise_text
from jobs.data.spec import PreprocessSpec
from jobs.data.text_files import decode_text


def encode(im, fmt="PNG", **kw):
    buf = io.BytesIO()
    im.save(buf, format=fmt, **kw)
    return buf.getvalue()


def reason(payload, **spec):
    with pytest.raises(Reject) as err:
        normalise_image(payload, PreprocessSpec(**spec))
    return err.value.reason


def bomb_png(width, height):
    """A real PNG whose header claims ``width x height``; its pixels are never there."""
    data = encode(Image.new("L", (8, 8)))
    ihdr = struct.pack(">II", width, height) + data[24:29]
    chunk = b"IHDR" + ihdr
    return data[:12] + chunk + struct.pack(">I", zlib.crc32(chunk)) + data[33:]


def test_bad_files_get_their_reasons():
    good = encode(Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)))
    assert reason(b"") == "empty"
    assert reason(good[: len(good) // 2]) == "truncated"
    assert reason(b"<html>not an image</html>") == "undecodable"
    assert reason(bomb_png(50_000, 50_000), max_pixels=10_000_000) == "decompression_bomb"
    assert reason(encode(Image.new("L", (5, 40)))) == "too_small"
    assert reason(encode(Image.new("L", (200, 20)))) == "bad_aspect"


def test_every_mode_converts_by_the_documented_rule():
    spec_l = PreprocessSpec(resolution=8, channels=1, fit="resize")
    spec_rgb = PreprocessSpec(resolution=8, channels=3, fit="resize")
    cmyk = Image.new("CMYK", (16, 16), (0, 255, 255, 0))  # pure red in CMYK
    out = normalise_image(encode(cmyk, "JPEG"), spec_rgb)
    assert out.shape == (8, 8, 3) and out[..., 0].mean() > 200 and out[..., 1].mean() < 60
    deep = Image.fromarray(np.full((16, 16), 65535, dtype=np.uint16))  # 16-bit gray, white
    assert normalise_image(encode(deep), spec_l).min() == 255
    palette = Image.new("P", (16, 16), 1)
    palette.putpalette([0, 0, 0, 0, 0, 0] + [0] * 762)
    palette.info["transparency"] = 1  # every pixel transparent black
    assert normalise_image(encode(palette, transparency=1), spec_l).min() == 255  # composited on white
    assert normalise_image(encode(palette, transparency=1), spec_l.model_copy(update={"background": "black"})).max() == 0
    la = Image.new("LA", (16, 16), (0, 0))
    assert normalise_image(encode(la), spec_rgb).min() == 255
    gray = normalise_image(encode(Image.new("L", (16, 16), 77)), spec_rgb)
    assert gray.shape == (8, 8, 3) and (gray == 77).all()  # L -> RGB by replication


def test_exif_orientation_is_applied():
    im = Image.new("L", (32, 16), 0)
    im.paste(255, (0, 0, 16, 16))  # left half white
    exif = Image.Exif()
    exif[0x0112] = 6  # shown rotated 90 degrees clockwise: the left half becomes the top half
    out = normalise_image(encode(im, "JPEG", exif=exif, quality=95), PreprocessSpec(resolution=16, fit="resize"))
    assert out[:6].mean() > 200 and out[-6:].mean() < 50


def test_fit_policies():
    im = Image.new("L", (32, 8), 255)
    crop = normalise_image(encode(im), PreprocessSpec(resolution=8, fit="center-crop", max_aspect=5))
    pad = normalise_image(encode(im), PreprocessSpec(resolution=32, fit="pad", background="black", max_aspect=5))
    assert (crop == 255).all()
    assert pad[0].max() == 0 and pad[16].min() == 255  # letterboxed top, image in the middle


def test_first_frame_of_an_animation():
    frames = [Image.new("L", (16, 16), v) for v in (10, 200)]
    data = encode(frames[0], "GIF", save_all=True, append_images=frames[1:])
    assert normalise_image(data, PreprocessSpec(resolution=16)).max() < 50


def test_text_rules():
    spec = PreprocessSpec(min_text_chars=3, max_text_chars=40, max_text_tokens=30, blocklist=["Acme", "free money"])
    assert normalise_text("  a\u0301bc\x00  def ", spec) == "\u00e1bc def"
    for raw, code in [("   ", "empty"), (None, "empty"), ("ab", "too_short"), ("x" * 41, "too_long"),
                      ("é" * 20, "too_many_tokens"), ("Buy ACME now", "blocked_term"), ("get FREE  money", "blocked_term")]:
        with pytest.raises(Reject) as err:
            normalise_text(raw, spec)
        assert err.value.reason == code, raw
    assert normalise_text("Acmeville is fine", spec) == "Acmeville is fine"  # whole words only


def test_text_decoding_decisions():
    assert decode_text("héllo".encode("utf-8")) == ("héllo", "utf-8")
    assert decode_text(b"\xef\xbb\xbfhi") == ("hi", "utf-8-sig")
    assert decode_text("hé".encode("utf-16")) == ("hé", "utf-16")
    assert decode_text("hello there".encode("utf-16-le")) == ("hello there", "utf-16-le")
    assert decode_text("crème".encode("latin-1")) == ("crème", "latin-1")
