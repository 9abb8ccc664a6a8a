"""Config sections of the store: where the pipeline may read and write (``security``) and what the dataset
cards say (``card``)."""

from __future__ import annotations

from typing import Optional

from pydantic import Field

from jobs.runtime.spec import Strict
from jobs.store.paths import PathPolicy


class SecuritySpec(Strict):
    """Where the pipeline may read and write (see ``jobs.store.paths``)."""

    allowed_roots: list[str] = Field(default_factory=list)  # local folders and URI prefixes (s3://bucket/prefix);
    #   empty: unrestricted. Config paths outside are config errors; table cells and files outside (links,
    #   ../) are path_not_allowed rejects, never opened

    def policy(self) -> PathPolicy:
        return PathPolicy(tuple(self.allowed_roots))


class CardSpec(Strict):
    """The dataset cards (``ROOT/README.md`` and each dataset root's ``.huggingface.yaml``), rewritten on every
    publish. ``license`` is a Hugging Face license id (``cc-by-4.0``, ``apache-2.0``, ...); ``other`` until
    the team decides, and the card says so."""

    license: str = Field("other", min_length=1, pattern=r"^[a-z0-9][a-z0-9.+-]*$")
    pretty_name: Optional[str] = Field(None, min_length=1)
    tags: list[str] = Field(default_factory=list)  # added to synthetic, ai-generated
