"""Per-unit cleaning rules: decode and normalise one image or one text, or reject it with a stable reason.

Pure functions of (bytes or text, ``PreprocessSpec``), run inside Ray Data tasks by ``preprocess``.

Images, in order:
1. Size check from the header alone: more than ``max_pixels`` is ``decompression_bomb`` (nothing decoded).
2. Full decode of the first frame (animated GIF/WebP: frame 0): a cut-off file is ``truncated``, anything
   else that does not decode is ``undecodable``.
3. EXIF orientation applied, so a phone photo comes out the way it was shown.
4. Mode rule: 16-bit and 32-bit integer gray is scaled to 8 bits (``v * 255 / 65535``); anything with
   transparency (RGBA, LA, PA, P with a transparent index) is composited over ``background``; every other
   mode (CMYK, YCbCr, P, 1, ...) goes through PIL's conversion to RGB; RGB -> L uses ITU-R 601-2 luma.
5. ``too_small`` when the shorter side is under ``min_side``; ``bad_aspect`` when long/short side exceeds
   ``max_aspect``.
6. ``fit`` to a ``resolution`` square: ``center-crop`` (crop the middle square), ``pad`` (letterbox with
   ``background``) or ``resize`` (squash).

Texts: Unicode NFC, control characters to spaces, whitespace runs collapsed; then ``empty``, ``too_short``,
``too_long`` (characters), ``too_many_tokens`` (UTF-8 bytes, the GPT's tokens) and ``blocked_term``.
"""

from __future__ import annotations

import io
import re
import unicodedata

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from jobs.data.spec import PreprocessSpec

CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")
BACKGROUNDS = {"white": 255, "black": 0}


class Reject(Exception):
    """A unit that is quarantined: ``reason`` is a stable code, ``detail`` says why for a person."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason, self.detail = reason, detail


def normalise_image(payload: bytes | None, opts: PreprocessSpec) -> np.ndarray:
    """Encoded image -> ``uint8 [R, R, C]`` (C = ``opts.channels``), or ``Reject``."""
    if not payload:
        raise Reject("empty", "no image bytes")
    try:
        with Image.open(io.BytesIO(payload)) as im:
            if im.width * im.height > opts.max_pixels:
                raise Reject("decompression_bomb", f"{im.width}x{im.height} exceeds {opts.max_pixels:,} pixels")
            im.seek(0)
            im.load()
            im = ImageOps.exif_transpose(im)
            im = _to_mode(im, "L" if opts.channels == 1 else "RGB", BACKGROUNDS[opts.background])
    except Reject:
        raise
    except Image.DecompressionBombError as exc:
        raise Reject("decompression_bomb", str(exc)) from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, EOFError) as exc:
        reason = "truncated" if "truncated" in str(exc).lower() else "undecodable"
        raise Reject(reason, f"{type(exc).__name__}: {exc}") from None
    short, long = min(im.size), max(im.size)
    if short < opts.min_side:
        raise Reject("too_small", f"{im.width}x{im.height}: shorter side under {opts.min_side}")
    if long / short > opts.max_aspect:
        raise Reject("bad_aspect", f"{im.width}x{im.height}: aspect {long / short:.1f} over {opts.max_aspect}")
    im = _fit(im, opts.resolution, opts.fit, BACKGROUNDS[opts.background])
    arr = np.asarray(im, dtype=np.uint8)
    return arr[:, :, None] if arr.ndim == 2 else arr


def _to_mode(im: Image.Image, target: str, background: int) -> Image.Image:
    if im.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        arr = np.asarray(im, dtype=np.float64)
        im = Image.fromarray(np.clip(np.round(arr * 255.0 / 65535.0), 0, 255).astype(np.uint8))
    elif im.mode == "F":
        arr = np.asarray(im, dtype=np.float64)
        scale = 255.0 if arr.max(initial=0) <= 1.0 else 1.0
        im = Image.fromarray(np.clip(np.round(arr * scale), 0, 255).astype(np.uint8))
    if im.mode == "P" and "transparency" in im.info:
        im = im.convert("RGBA")
    if im.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = im.convert("RGBA")
        canvas = Image.new("RGBA", rgba.size, (background, background, background, 255))
        im = Image.alpha_composite(canvas, rgba).convert("RGB")
    if im.mode not in ("L", "RGB"):
        im = im.convert("RGB")
    return im.convert(target) if im.mode != target else im


def _fit(im: Image.Image, size: int, policy: str, background: int) -> Image.Image:
    if policy == "center-crop":
        side = min(im.size)
        left, top = (im.width - side) // 2, (im.height - side) // 2
        im = im.crop((left, top, left + side, top + side))
    elif policy == "pad":
        side = max(im.size)
        fill = background if im.mode == "L" else (background,) * 3
        canvas = Image.new(im.mode, (side, side), fill)
        canvas.paste(im, ((side - im.width) // 2, (side - im.height) // 2))
        im = canvas
    return im if im.size == (size, size) else im.resize((size, size), Image.BICUBIC)


def normalise_text(text: object, opts: PreprocessSpec) -> str:
    """Raw text -> cleaned text, or ``Reject``."""
    if text is None:
        raise Reject("empty", "no text")
    if not isinstance(text, str):
        raise Reject("wrong_type", f"{type(text).__name__}, not text")
    cleaned = " ".join(CONTROL.sub(" ", unicodedata.normalize("NFC", text)).split())
    if not cleaned:
        raise Reject("empty", "only whitespace or control characters")
    if len(cleaned) < opts.min_text_chars:
        raise Reject("too_short", f"{len(cleaned)} < {opts.min_text_chars} characters")
    if len(cleaned) > opts.max_text_chars:
        raise Reject("too_long", f"{len(cleaned)} > {opts.max_text_chars} characters")
    tokens = len(cleaned.encode("utf-8"))
    if opts.max_text_tokens and tokens > opts.max_text_tokens:
        raise Reject("too_many_tokens", f"{tokens} > {opts.max_text_tokens} tokens (UTF-8 bytes)")
    term = blocked_term(cleaned, opts.blocklist)
    if term is not None:
        raise Reject("blocked_term", f"blocked_term={term}")
    return cleaned


def blocked_term(text: str, blocklist: list[str]) -> str | None:
    """The first blocklist term found in ``text`` as a whole word, case-insensitively (None if clean)."""
    lowered = text.casefold()
    for term in blocklist:
        if re.search(rf"(?<!\w){re.escape(term.casefold())}(?!\w)", lowered):
            return term
    return None
