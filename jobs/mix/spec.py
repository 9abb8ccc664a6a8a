"""The ``augment`` config section: how ``aigc augment`` mixes real and synthetic rows."""

from __future__ import annotations

from typing import Any, Literal, Optional

from pydantic import Field, field_validator

from jobs.runtime.spec import Strict


class MixSpec(Strict):
    """``aigc augment``: a classifier's training set that mixes curated real rows with published synthetic rows.

    Real rows come from the curated ``train`` split by default. ``val`` stays out because it is held out: the
    generators never trained on it, so it is the one set of real rows a classifier trained on the mixture can
    still be evaluated on honestly; ``split: all`` mixes it in anyway. Rows are picked by a hash of
    (``seed``, id), never by row order: the same inputs and settings give the same rows."""

    synthetic_ratio: float = Field(0.5, ge=0, le=1)  # share of synthetic rows in the output (per label with per_label)
    balance: Literal["none", "per_label"] = "none"  # per_label: every label gets the same number of rows,
    #   as many as the scarcest label allows at this ratio; none: as many rows as the ratio allows
    dates: Optional[list[str]] = Field(None, min_length=1)  # generated partitions (default: --date, else the latest)
    models: Optional[list[str]] = Field(None, min_length=1)  # only synthetic rows of these models (default: all)
    labels: Optional[list[str]] = Field(None, min_length=1)  # only rows with these labels (default: all)
    modality: Literal["image", "text"] = "image"
    split: Literal["train", "val", "all"] = "train"  # curated split(s) the real rows come from
    dataset_version: Optional[str] = None  # curated version (default: the latest published)
    seed: int = 0
    max_rows: Optional[int] = Field(None, ge=1)  # cap on the output's rows (the ratio still holds)

    @field_validator("dates")
    @classmethod
    def _iso_dates(cls, v: Optional[list[str]]) -> Optional[list[str]]:
        from datetime import date

        for d in v or []:
            try:
                date.fromisoformat(str(d))
            except ValueError:
                raise ValueError(f"expected dates as YYYY-MM-DD, got {d!r}") from None
        return None if v is None else sorted({str(d) for d in v})

    @field_validator("dates", "labels", mode="before")
    @classmethod
    def _as_strings(cls, v: Any) -> Any:  # YAML reads `labels: [0, 1]` as ints and unquoted dates as dates
        return [str(x) for x in v] if isinstance(v, list) else v
