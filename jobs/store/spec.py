"""Config sections of the store: where the pipeline may read and write (``security``), what the dataset
cards say (``card``) and who signs the published content (``signing``)."""

from __future__ import annotations

from typing import Literal, Optional

from pydantic import Field, model_validator

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


class SigningSpec(Strict):
    """Content Credentials (C2PA) on every published image and a detached signature on every night's manifest
    (``jobs.store.credentials``, docs/provenance.md). Both paths null: the development chain ``aigc keys``
    makes (in ``~/.aigc/dev-keys``, made on first use), marked untrusted in every summary and report."""

    enabled: bool = True  # false: unsigned output (the PNG and row labels only); every summary says so
    certificate: Optional[str] = None  # PEM chain, the signing certificate first (C2PA asks for one that is not
    #   self-signed, with digitalSignature key usage and an extended key usage such as emailProtection)
    private_key: Optional[str] = None  # PEM private key of that certificate (unencrypted; keep it out of git)
    trust_anchors: Optional[str] = None  # PEM roots `aigc verify` trusts (with the development chain: its root);
    #   without anchors `aigc verify` fails every signature: nothing vouches for the signer
    algorithm: Literal["es256", "es384", "es512", "ps256", "ed25519"] = "es256"  # must fit the key
    timestamp_url: Optional[str] = None  # an RFC 3161 time-stamp authority, contacted at signing time (your
    #   own network's: nothing else is reached); null: signatures carry no trusted time

    @model_validator(mode="after")
    def _both_or_neither(self) -> "SigningSpec":
        if (self.certificate is None) != (self.private_key is None):
            missing = "private_key" if self.private_key is None else "certificate"
            raise ValueError(f"signing.{missing}: give signing.certificate and signing.private_key together (or neither: "
                             "the development chain)")
        return self
