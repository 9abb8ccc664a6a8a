"""Content Credentials: the signing chain, a C2PA manifest signed into every published PNG, and detached
signatures for what has no file format of its own (a night's manifest, which pins its text rows' files).

A C2PA manifest (made and read with ``c2pa-python``, the Content Authenticity Initiative's library) is bound to
the file's bytes by a hash and signed with the team's key: a changed pixel, a changed lineage field or a foreign
signer shows when the file is read back, which plain metadata (the PNG's tEXt and XMP label) cannot show.

The manifest sits in its own PNG chunk (``caBX``), inserted after ``IHDR``; every other chunk is kept byte for
byte, so the published file with that chunk removed (``jobs.store.png.without_c2pa``) is exactly the labelled
PNG ``encode_png`` makes, and ``aigc regenerate`` still checks a row bit for bit. The signature itself differs
from one signing to the next (ECDSA), which is why the manifest is compared by its claims, not its bytes.

``aigc keys`` makes a development chain (a root and a signing certificate whose organisation says it is a
development chain): the demo signs out of the box, and every summary, report and verification marks such output
untrusted. A team names its own chain in ``signing.certificate`` / ``signing.private_key``.
"""

from __future__ import annotations

import base64
import dataclasses
import datetime as dt
import hashlib
import io
import os
from pathlib import Path
from typing import Any

from jobs.store.chains import ALGORITHMS
from jobs.store.provenance import DIGITAL_SOURCE_TYPE, PRODUCER

LINEAGE_LABEL = "org.aigc-pipeline.lineage"  # the C2PA assertion holding a row's lineage
DEV_ORGANISATION = "aigc-pipeline development chain (untrusted)"


class CredentialError(ValueError):
    """A signing chain that cannot be used; the message names the config key."""


def dev_folder() -> Path:
    """Where ``aigc keys`` and a config without its own chain keep the development chain: per user, never in
    the output root (which is shared with the people who read the content)."""
    return Path(os.environ.get("AIGC_KEYS_DIR") or Path.home() / ".aigc" / "dev-keys")


def make_dev_chain(folder: Path, force: bool = False) -> dict[str, Path]:
    """A root CA and an ES256 signing certificate under it, as C2PA asks of a signer (not self-signed, key usage
    digitalSignature, extended key usage emailProtection, key identifiers): ``chain.pem`` (the signing certificate;
    no intermediates, and the root stays out of the chain as C2PA asks),
    ``key.pem`` (the signer's private key, mode 600) and ``root.pem`` (the anchor ``aigc verify`` trusts)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    paths = {k: folder / f"{k}.pem" for k in ("chain", "key", "root")}
    if all(p.exists() for p in paths.values()) and not force:
        return paths
    now = dt.datetime.now(dt.timezone.utc) - dt.timedelta(minutes=5)

    def name(cn: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn),
                          x509.NameAttribute(NameOID.ORGANIZATION_NAME, DEV_ORGANISATION)])

    def usage(sign: bool) -> x509.KeyUsage:
        return x509.KeyUsage(digital_signature=sign, content_commitment=False, key_encipherment=False,
                             data_encipherment=False, key_agreement=False, key_cert_sign=not sign,
                             crl_sign=not sign, encipher_only=False, decipher_only=False)

    root_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    root = (x509.CertificateBuilder().subject_name(name("aigc-pipeline development root"))
            .issuer_name(name("aigc-pipeline development root")).public_key(root_key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now).not_valid_after(now + dt.timedelta(days=3650))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(usage(False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(root_key.public_key()), critical=False)
            .sign(root_key, hashes.SHA256()))
    signer = (x509.CertificateBuilder().subject_name(name(f"aigc-pipeline development signer ({os.uname().nodename})"))
              .issuer_name(root.subject).public_key(key.public_key()).serial_number(x509.random_serial_number())
              .not_valid_before(now).not_valid_after(now + dt.timedelta(days=825))
              .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
              .add_extension(usage(True), critical=True)
              .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.EMAIL_PROTECTION]), critical=False)
              .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
              .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(root_key.public_key()), critical=False)
              .sign(root_key, hashes.SHA256()))
    pem = serialization.Encoding.PEM
    folder.mkdir(parents=True, exist_ok=True)
    paths["root"].write_bytes(root.public_bytes(pem))
    paths["chain"].write_bytes(signer.public_bytes(pem))  # C2PA leaves the anchor out of the chain: 0.5 KB an image
    fd = os.open(paths["key"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    return paths


@dataclasses.dataclass(frozen=True)
class Signer:
    """A signing chain in PEM (signer first), its private key and the algorithm: picklable, so it travels to the
    finishing actors with their arguments; each process builds its native c2pa signer once, on first use."""

    chain_pem: bytes
    key_pem: bytes
    algorithm: str = "es256"
    timestamp_url: str | None = None
    trust_pem: bytes | None = None  # the anchors verification trusts (the dev chain's root, or the config's)

    @property
    def certificate(self) -> Any:
        from cryptography import x509

        return x509.load_pem_x509_certificates(self.chain_pem)[0]

    @property
    def development(self) -> bool:
        return is_development(self.chain_pem)

    def describe(self) -> dict[str, Any]:
        """What a night's manifest and report say about who signed."""
        return {"signed": True, "format": "C2PA", "signer": subject(self.chain_pem), "algorithm": self.algorithm,
                "certificate_sha256": certificate_sha256(self.chain_pem), "development": self.development,
                "timestamped": self.timestamp_url is not None}

    def sign_png(self, png: bytes, title: str, lineage: dict[str, Any], created_at: str) -> bytes:
        """``png`` with a signed C2PA manifest embedded: a ``c2pa.created`` action whose digital source type is
        ``trainedAlgorithmicMedia``, this software as its agent, and the row's lineage as an assertion."""
        import c2pa

        __version__ = software_version()
        definition = {
            "claim_generator_info": [{"name": PRODUCER, "version": __version__}], "title": title, "format": "image/png",
            "assertions": [
                {"label": "c2pa.actions", "data": {"actions": [{
                    "action": "c2pa.created", "digitalSourceType": DIGITAL_SOURCE_TYPE, "when": created_at,
                    "softwareAgent": {"name": PRODUCER, "version": __version__}}]}},
                {"label": LINEAGE_LABEL, "data": lineage},
            ],
        }
        native, context = _native(self)
        out = io.BytesIO()
        with c2pa.Builder(definition, context) as builder:
            builder.sign(native, "image/png", io.BytesIO(png), out)
        return out.getvalue()

    def sign_detached(self, data: bytes, signed: str) -> dict[str, Any]:
        """A detached signature of ``data`` (a night's manifest): the digest, the signature and the chain, as JSON."""
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding

        key = serialization.load_pem_private_key(self.key_pem, password=None)
        alg, digest = ALGORITHMS[self.algorithm]
        if isinstance(key, ed25519.Ed25519PrivateKey):
            signature = key.sign(data)
        elif isinstance(key, ec.EllipticCurvePrivateKey):
            signature = key.sign(data, ec.ECDSA(getattr(hashes, digest)()))
        else:
            h = getattr(hashes, digest)()
            signature = key.sign(data, padding.PSS(padding.MGF1(h), padding.PSS.DIGEST_LENGTH), h)
        return {"signed": signed, "sha256": hashlib.sha256(data).hexdigest(), "algorithm": alg,
                "signature": base64.b64encode(signature).decode(), "certificate_chain": self.chain_pem.decode()}


_NATIVE: dict[bytes, Any] = {}


def _native(signer: Signer) -> Any:
    """The process's c2pa signer and context for ``signer``'s chain (made once: a few ms each)."""
    key = hashlib.sha256(signer.chain_pem + signer.key_pem).digest()
    if key not in _NATIVE:
        import c2pa

        info = c2pa.C2paSignerInfo(ALGORITHMS[signer.algorithm][0].lower(), signer.chain_pem, signer.key_pem,
                                   signer.timestamp_url)
        _NATIVE[key] = (c2pa.Signer.from_info(info), c2pa.Context.from_dict(_settings(None)))
    return _NATIVE[key]


def _settings(trust_pem: bytes | None) -> dict[str, Any]:
    """c2pa settings: no thumbnail in the manifest (it would be larger than a small image), nothing fetched from
    the network when reading (remote manifests, OCSP), and the trust anchors when there are any."""
    settings: dict[str, Any] = {"builder": {"thumbnail": {"enabled": False}},
                                "verify": {"remote_manifest_fetch": False, "ocsp_fetch": False,
                                           "verify_trust": trust_pem is not None}}
    if trust_pem is not None:
        settings["trust"] = {"trust_anchors": trust_pem.decode()}
    return settings


def load_signer(certificate: str | None, private_key: str | None, trust_anchors: str | None, algorithm: str = "es256",
                timestamp_url: str | None = None, say: Any = None) -> Signer:
    """The configured chain, or (both paths null) the development chain, made on first use. Every problem is a
    ``CredentialError`` naming the ``signing.*`` key."""
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    if certificate is None:
        folder = dev_folder()
        fresh = not (folder / "key.pem").exists()
        paths = make_dev_chain(folder)
        if fresh and say:
            say(f"[sign] made a development signing chain in {folder} (untrusted: for trying the pipeline; "
                "set signing.certificate and signing.private_key to your own)")
        certificate, private_key = str(paths["chain"]), str(paths["key"])
        trust_anchors = trust_anchors or str(paths["root"])
    chain_pem = _read(certificate, "signing.certificate")
    key_pem = _read(private_key, "signing.private_key")
    trust_pem = _read(trust_anchors, "signing.trust_anchors") if trust_anchors else None
    try:
        certs = x509.load_pem_x509_certificates(chain_pem)
    except ValueError as exc:
        raise CredentialError(f"signing.certificate: {certificate} holds no PEM certificate ({exc})") from None
    try:
        key = serialization.load_pem_private_key(key_pem, password=None)
    except (ValueError, TypeError) as exc:
        raise CredentialError(f"signing.private_key: {private_key} is not an unencrypted PEM private key ({exc})") from None
    if key.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo) != \
            certs[0].public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo):
        raise CredentialError(f"signing.private_key: {private_key} is not the key of the first certificate in "
                              f"{certificate} ({subject(chain_pem)})")
    from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

    kinds = {"es256": (ec.EllipticCurvePrivateKey, "secp256r1"), "es384": (ec.EllipticCurvePrivateKey, "secp384r1"),
             "es512": (ec.EllipticCurvePrivateKey, "secp521r1"), "ps256": (rsa.RSAPrivateKey, None),
             "ed25519": (ed25519.Ed25519PrivateKey, None)}
    kind, curve = kinds[algorithm]
    if not isinstance(key, kind) or (curve and key.curve.name != curve):
        what = f"an EC {key.curve.name} key" if isinstance(key, ec.EllipticCurvePrivateKey) else type(key).__name__
        raise CredentialError(f"signing.algorithm: {algorithm} does not fit the key in {private_key} ({what})")
    now = dt.datetime.now(dt.timezone.utc)
    if not certs[0].not_valid_before_utc <= now <= certs[0].not_valid_after_utc:
        raise CredentialError(f"signing.certificate: {subject(chain_pem)} is valid only from "
                              f"{certs[0].not_valid_before_utc:%Y-%m-%d} to {certs[0].not_valid_after_utc:%Y-%m-%d}")
    if trust_pem is not None:
        try:
            x509.load_pem_x509_certificates(trust_pem)
        except ValueError as exc:
            raise CredentialError(f"signing.trust_anchors: {trust_anchors} holds no PEM certificate ({exc})") from None
    return Signer(chain_pem, key_pem, algorithm, timestamp_url, trust_pem)


def _read(path: str, key: str) -> bytes:
    try:
        return Path(path).expanduser().read_bytes()
    except OSError as exc:
        raise CredentialError(f"{key}: cannot read {path} ({exc.strerror or exc})") from None


def subject(chain_pem: bytes) -> str:
    from cryptography import x509
    from cryptography.x509.oid import NameOID

    cert = x509.load_pem_x509_certificates(chain_pem)[0]
    names = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    return str(names[0].value) if names else cert.subject.rfc4514_string()


def certificate_sha256(chain_pem: bytes) -> str:
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    cert = x509.load_pem_x509_certificates(chain_pem)[0]
    return hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).hexdigest()


def is_development(chain_pem: bytes) -> bool:
    """A chain ``aigc keys`` made: its organisation says so (whoever's config names it)."""
    from cryptography import x509
    from cryptography.x509.oid import NameOID

    cert = x509.load_pem_x509_certificates(chain_pem)[0]
    return any(a.value == DEV_ORGANISATION for a in cert.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME))


@dataclasses.dataclass
class Reading:
    """What a file's Content Credentials say, and what is wrong with them (``problems``; empty: intact)."""

    found: bool
    state: str | None = None  # c2pa's validation state: Invalid, Valid (signature and hashes), Trusted (and anchored)
    problems: list[str] = dataclasses.field(default_factory=list)
    signer: str | None = None
    development: bool = False
    digital_source_type: str | None = None
    software_agent: str | None = None
    lineage: dict[str, Any] | None = None
    trust_checked: bool = False


def read_png(data: bytes, trust_pem: bytes | None) -> Reading:
    """Reads and validates a PNG's C2PA manifest with ``c2pa-python``: the claim signature, the hash of every
    byte outside the manifest, each assertion's hash and, with ``trust_pem``, the signer's chain up to those
    anchors. Each failure c2pa reports becomes a problem in words, with its code."""
    import c2pa

    try:
        with c2pa.Reader("image/png", io.BytesIO(data), context=c2pa.Context.from_dict(_settings(trust_pem))) as reader:
            manifest = reader.get_active_manifest() or {}
            state = reader.get_validation_state()
            results = reader.get_validation_results() or {}
    except c2pa.C2paError as exc:
        if "ManifestNotFound" in type(exc).__name__ or "no JUMBF" in str(exc):
            return Reading(False, problems=["no Content Credentials: the file carries no C2PA manifest (stripped, "
                                            "re-encoded, or never signed)"])
        return Reading(False, "Invalid", problems=[f"the C2PA manifest cannot be read: {exc}"])
    failures = (results.get("activeManifest") or {}).get("failure") or []
    reading = Reading(True, state, [_problem(f) for f in failures], trust_checked=trust_pem is not None)
    info = manifest.get("signature_info") or {}
    reading.signer = info.get("common_name") or info.get("issuer")
    reading.development = info.get("issuer") == DEV_ORGANISATION
    for assertion in manifest.get("assertions") or []:
        if assertion.get("label", "").startswith("c2pa.actions"):
            for action in assertion["data"].get("actions", []):
                if action.get("action") == "c2pa.created":
                    reading.digital_source_type = action.get("digitalSourceType")
                    agent = action.get("softwareAgent") or {}
                    reading.software_agent = " ".join(str(v) for v in (agent.get("name"), agent.get("version")) if v)
        elif assertion.get("label") == LINEAGE_LABEL:
            reading.lineage = assertion.get("data")
    if not reading.problems and trust_pem is not None and state != "Trusted":
        reading.problems.append(f"c2pa did not find the signer trusted (validation state {state})")
    if not reading.problems and reading.digital_source_type != DIGITAL_SOURCE_TYPE:
        reading.problems.append(f"the manifest's c2pa.created action does not declare {DIGITAL_SOURCE_TYPE}")
    return reading


_MEANINGS = {
    "assertion.dataHash.mismatch": "the file's bytes outside the manifest changed after signing (pixels or other chunks)",
    "assertion.hashedURI.mismatch": "an assertion changed after signing",
    "claimSignature.mismatch": "the claim's signature does not match its content",
    "signingCredential.untrusted": "the signer's certificate does not chain to a trusted anchor (a foreign key)",
    "signingCredential.expired": "the signer's certificate had expired",
    "signingCredential.invalid": "the signer's certificate is not valid for signing",
}


def _problem(failure: dict[str, Any]) -> str:
    code = failure.get("code", "?")
    return f"{_MEANINGS.get(code, failure.get('explanation', 'failed'))} (c2pa: {code})"


def software_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("aigc-pipeline")
    except PackageNotFoundError:  # run from a source tree that was never installed
        return "0+unknown"
