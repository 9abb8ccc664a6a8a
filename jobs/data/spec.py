"""Config sections of preprocessing: the ``sources`` to read and the ``preprocess`` settings (cleaning,
deduplication, augmentation of train images, the split)."""

from __future__ import annotations

from typing import Annotated, Literal, Optional, Union

from pydantic import Field, field_validator, model_validator

from jobs.runtime.spec import Strict

BUILTIN_SOURCES = ("digits", "faces", "textures", "text-corpus")


class BuiltinSource(Strict):
    kind: Literal["builtin"]
    name: Literal[BUILTIN_SOURCES]  # type: ignore[valid-type]
    limit: Optional[int] = Field(None, ge=1)  # first N units only (quick runs)

    @property
    def source_id(self) -> str:
        return f"builtin:{self.name}"


class ImageFolderSource(Strict):
    """A folder of images: class-per-subfolder (labels = folder names) or flat (no labels)."""

    kind: Literal["image_folder"]
    path: str
    labels: Literal["auto", "folders", "none"] = "auto"  # auto: folders when there are subfolders
    follow_symlinks_outside: bool = False  # links leading out of the folder are symlink_outside rejects
    limit: Optional[int] = Field(None, ge=1)

    @property
    def source_id(self) -> str:
        return f"image_folder:{self.path}"


class TextFilesSource(Strict):
    """Text files matched by a glob; one document per line (``per: line``) or per file (``per: file``)."""

    kind: Literal["text_files"]
    path: str  # a glob such as /data/copy/*.txt
    per: Literal["line", "file"] = "line"
    limit: Optional[int] = Field(None, ge=1)

    @property
    def source_id(self) -> str:
        return f"text_files:{self.path}"


class TableSource(Strict):
    """A Parquet, CSV or JSONL table (local path or URI). One row is one unit: an image when
    ``image_column`` holds bytes, a path/URI or a ``{bytes, path}`` struct; else a text from ``text_column``.
    Columns not named here are kept, as JSON, in the curated ``attributes`` column."""

    kind: Literal["table"]
    path: str
    format: Literal["auto", "parquet", "csv", "jsonl"] = "auto"
    image_column: Optional[str] = None
    text_column: Optional[str] = None
    label_column: Optional[str] = None
    limit: Optional[int] = Field(None, ge=1)

    @model_validator(mode="after")
    def _needs_content(self) -> "TableSource":
        if not self.image_column and not self.text_column:
            raise ValueError("give image_column or text_column (or both: the text is kept as the caption)")
        return self

    @property
    def source_id(self) -> str:
        return f"table:{self.path}"


Source = Annotated[Union[BuiltinSource, ImageFolderSource, TextFilesSource, TableSource], Field(discriminator="kind")]


class AugmentSpec(Strict):
    """Offline augmentation of accepted *train* images (never val): ``copies`` extra rows per image, each
    marked ``augmented_from=<id>``, drawn from a generator seeded by (id, copy, seed): same input, same rows."""

    copies: int = Field(0, ge=0, le=32)
    hflip: bool = False  # mirror with probability 1/2 (off by default: it changes digits and text)
    rotate_degrees: float = Field(0.0, ge=0, le=180)  # uniform in [-d, d]
    crop_scale: float = Field(1.0, gt=0, le=1)  # random resized crop keeping at least this share of the area
    color_jitter: float = Field(0.0, ge=0, lt=1)  # brightness and contrast factors in [1 - j, 1 + j]
    noise_std: float = Field(0.0, ge=0, le=128)  # Gaussian pixel noise, in 0..255 units
    seed: int = 0


class PreprocessSpec(Strict):
    resolution: int = 32
    channels: Literal[1, 3] = 1
    dedup: bool = True  # exact duplicates (same content hash) become rejects with duplicate_of=<id>
    near_dedup: bool = False  # also near duplicates: images by perceptual hash, texts by normalised form
    near_dedup_bits: int = Field(4, ge=0, le=16)  # images: largest Hamming distance of 64-bit dHashes;
    #   tune per dataset: on the upscaled 8x8 digits even 2 bits merges 688 of 1,615 different digits
    augment: "AugmentSpec" = Field(default_factory=lambda: AugmentSpec())
    val_fraction: float = Field(0.1, ge=0.0, lt=1.0)
    min_text_chars: int = Field(20, ge=1)
    max_text_chars: int = Field(2000, ge=1)
    max_text_tokens: Optional[int] = Field(None, ge=1)  # UTF-8 bytes: the byte-level GPT's tokens
    blocklist: list[str] = Field(default_factory=list)  # whole-word, case-insensitive; hits are blocked_term rejects
    max_pixels: int = Field(64_000_000, ge=1)  # larger images are decompression_bomb rejects, never decoded
    min_side: int = Field(8, ge=1)  # shorter side in pixels, before resizing
    max_aspect: float = Field(4.0, ge=1.0)  # long side / short side
    fit: Literal["center-crop", "pad", "resize"] = "center-crop"
    background: Literal["white", "black"] = "white"  # for transparency and padding
    split_salt: str = "v1"  # changing it reshuffles the train/val split
    max_reject_share: Optional[float] = Field(None, ge=0, le=1)  # error budget: more rejects than this share of
    #   the inputs fails the run and publishes nothing (the message names the top reasons); null: no budget

    @field_validator("resolution")
    @classmethod
    def _power_of_two(cls, v: int) -> int:
        if v < 8 or v > 512 or v & (v - 1):
            raise ValueError("must be a power of two between 8 and 512")
        return v
