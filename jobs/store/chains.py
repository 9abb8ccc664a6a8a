"""Certificate chains and detached signatures, checked with ``cryptography`` alone: what ``aigc verify`` uses for a
night manifest's ``.sig`` (C2PA manifests inside images are checked by c2pa-python itself).

A chain passes only when each link is signed by a CA certificate allowed to sign certificates (basic constraints
CA, keyCertSign, its path length kept), every certificate is valid now, and the signer is a signing certificate
(not a CA, digitalSignature): a leaf the team's CA issued cannot vouch for a certificate it made itself.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
from typing import Any

ALGORITHMS = {"es256": ("ES256", "SHA256"), "es384": ("ES384", "SHA384"), "es512": ("ES512", "SHA512"),
              "ps256": ("PS256", "SHA256"), "ed25519": ("Ed25519", None)}


def verify_detached(data: bytes, envelope: dict[str, Any], trust_pem: bytes | None) -> list[str]:
    """Problems with a detached signature of ``data`` (empty: intact and, with ``trust_pem``, anchored). A
    malformed signature file is a problem too, never an exception."""
    import binascii

    from cryptography import x509
    from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding

    signed = envelope.get("signed", "the file") if isinstance(envelope, dict) else "the file"
    try:
        if hashlib.sha256(data).hexdigest() != envelope["sha256"]:
            return [f"{signed} changed after it was signed (its sha256 differs)"]
        certs = x509.load_pem_x509_certificates(envelope["certificate_chain"].encode())
        public, signature = certs[0].public_key(), base64.b64decode(envelope["signature"], validate=True)
        digest = {alg: h for alg, h in ALGORITHMS.values()}[envelope["algorithm"]]
        if isinstance(public, ed25519.Ed25519PublicKey):
            public.verify(signature, data)
        elif isinstance(public, ec.EllipticCurvePublicKey):
            public.verify(signature, data, ec.ECDSA(getattr(hashes, digest)()))
        else:
            h = getattr(hashes, digest)()
            public.verify(signature, data, padding.PSS(padding.MGF1(h), padding.PSS.DIGEST_LENGTH), h)
    except InvalidSignature:
        return [f"the signature of {signed} does not verify with its certificate"]
    except (KeyError, TypeError, ValueError, AttributeError, binascii.Error, UnsupportedAlgorithm) as exc:
        return [f"the signature file of {signed} is malformed ({type(exc).__name__}: {exc})"]
    if trust_pem is None:
        return []
    return chain_problems(certs, x509.load_pem_x509_certificates(trust_pem))


def chain_problems(certs: list[Any], anchors: list[Any]) -> list[str]:
    """Whether ``certs`` (signer first, then intermediates) chains to one of ``anchors``: each link signed by a
    CA certificate (basic constraints CA, keyCertSign, its path length kept), every certificate valid now, and
    the signer a signing certificate (not a CA, digitalSignature)."""
    now = dt.datetime.now(dt.timezone.utc)
    fp = lambda c: c.fingerprint(_sha256())  # noqa: E731
    anchored = {fp(a) for a in anchors}
    leaf = certs[0]
    if not _may_sign(leaf):
        return [f"the signer's certificate {leaf.subject.rfc4514_string()} is not a signing certificate (a CA, or no "
                "digitalSignature key usage)"]
    if fp(leaf) in anchored:  # the signer itself is pinned as an anchor
        return [] if _valid(leaf, now) else [f"the certificate {leaf.subject.rfc4514_string()} is not valid now"]
    current, offered, below = leaf, list(certs[1:]), 0
    while True:
        if not _valid(current, now):
            return [f"the certificate {current.subject.rfc4514_string()} is not valid now"]
        for anchor in anchors:
            if anchor.subject == current.issuer and _issues(anchor, current, below):
                return [] if _valid(anchor, now) else [f"the anchor {anchor.subject.rfc4514_string()} is not valid now"]
        nxt = next((c for c in offered if c.subject == current.issuer and _issues(c, current, below)), None)
        if nxt is None:
            return ["the signer's certificate does not chain to a trusted anchor (a foreign key)"]
        offered.remove(nxt)
        current, below = nxt, below + (current is not leaf)


def _valid(cert: Any, now: dt.datetime) -> bool:
    return cert.not_valid_before_utc <= now <= cert.not_valid_after_utc


def _extension(cert: Any, kind: Any) -> Any:
    from cryptography import x509

    try:
        return cert.extensions.get_extension_for_class(kind).value
    except x509.ExtensionNotFound:
        return None


def _may_sign(cert: Any) -> bool:
    from cryptography import x509

    constraints, usage = _extension(cert, x509.BasicConstraints), _extension(cert, x509.KeyUsage)
    return not (constraints and constraints.ca) and (usage is None or usage.digital_signature)


def _issues(issuer: Any, cert: Any, below: int) -> bool:
    """``issuer`` is a CA that may sign certificates (with ``below`` intermediates under it) and signed ``cert``."""
    from cryptography import x509

    constraints, usage = _extension(issuer, x509.BasicConstraints), _extension(issuer, x509.KeyUsage)
    if not (constraints and constraints.ca) or (usage is not None and not usage.key_cert_sign):
        return False
    if constraints.path_length is not None and below > constraints.path_length:
        return False
    return _signed_by(cert, issuer)


def _sha256() -> Any:
    from cryptography.hazmat.primitives import hashes

    return hashes.SHA256()


def _signed_by(cert: Any, issuer: Any) -> bool:
    from cryptography.exceptions import InvalidSignature

    try:
        cert.verify_directly_issued_by(issuer)
        return True
    except (ValueError, TypeError, InvalidSignature):  # another issuer's name, key type or signature
        return False
