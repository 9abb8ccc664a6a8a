"""Content Credentials without Ray: a PNG signed with a development chain reads back with c2pa-python itself
(trainedAlgorithmicMedia, the lineage assertion, trusted by the chain's root), and each tampering a person can
do to a published file (a pixel, a lineage field, the manifest stripped, another signer) fails with its reason.
Detached signatures of a night's manifest too."""

import io
import json
from datetime import datetime, timezone

import c2pa
import numpy as np
import pytest

from jobs.store import credentials, provenance
from jobs.store.chains import verify_detached
from jobs.store.credentials import CredentialError, load_signer, read_png
from jobs.store.png import decode_png, encode_png, has_c2pa, without_c2pa
from tests.tamper import change_in_manifest, change_pixel, strip_manifest

LINEAGE = {"id": "row-1", "run_id": "night:2026-11-20:abcd", "model_name": "digits-gan", "model_version": "v7",
           "checkpoint_sha256": "ab" * 32, "dataset_version": "d1", "seed": 1234, "sampler": {"steps": 10}}


@pytest.fixture(scope="module")
def chains(tmp_path_factory):
    """Two development chains: ours and a stranger's."""
    root = tmp_path_factory.mktemp("keys")
    return credentials.make_dev_chain(root / "ours"), credentials.make_dev_chain(root / "theirs")


def signer_of(paths, trust=None):
    return load_signer(str(paths["chain"]), str(paths["key"]), str(trust or paths["root"]))


@pytest.fixture(scope="module")
def signed(chains):
    arr = np.random.default_rng(0).integers(0, 256, size=(16, 16, 1), dtype=np.uint8)
    png = encode_png(arr, provenance.label("row-1", "run", "digits-gan", "v7", datetime.now(timezone.utc)))
    return png, signer_of(chains[0]).sign_png(png, "row-1.png", LINEAGE, "2026-11-20T02:00:00+00:00")


def test_c2pa_python_reads_the_signed_manifest_with_its_source_type_and_lineage(signed, chains):
    png, data = signed
    trust = chains[0]["root"].read_text()
    settings = {"verify": {"verify_trust": True, "remote_manifest_fetch": False}, "trust": {"trust_anchors": trust}}
    with c2pa.Reader("image/png", io.BytesIO(data), context=c2pa.Context.from_dict(settings)) as reader:
        manifest = reader.get_active_manifest()
        assert reader.get_validation_state() == "Trusted"
    assertions = {a["label"]: a["data"] for a in manifest["assertions"]}
    created = assertions["c2pa.actions.v2"]["actions"][0]
    assert created["action"] == "c2pa.created"
    assert created["digitalSourceType"] == "http://cv.iptc.org/newscodes/digitalsourcetype/trainedAlgorithmicMedia"
    assert created["softwareAgent"]["name"] == "aigc-pipeline"
    assert assertions[credentials.LINEAGE_LABEL] == LINEAGE
    assert manifest["signature_info"]["issuer"] == credentials.DEV_ORGANISATION
    # the manifest is one chunk more: without it the file is the labelled PNG, byte for byte
    assert has_c2pa(data) and not has_c2pa(png)
    assert without_c2pa(data) == png
    np.testing.assert_array_equal(decode_png(data), decode_png(png))


def test_an_intact_file_reads_back_clean_and_marked_development(signed, chains):
    reading = read_png(signed[1], chains[0]["root"].read_bytes())
    assert reading.found and reading.problems == [] and reading.state == "Trusted"
    assert reading.lineage == LINEAGE and reading.development and reading.trust_checked


def test_a_changed_pixel_fails_on_the_data_hash(signed, chains):
    tampered = change_pixel(signed[1])
    assert (decode_png(tampered) != decode_png(signed[1])).sum() == 1
    reading = read_png(tampered, chains[0]["root"].read_bytes())
    assert any("assertion.dataHash.mismatch" in p for p in reading.problems), reading.problems


def test_a_changed_lineage_field_inside_the_manifest_fails(signed, chains):
    tampered = change_in_manifest(signed[1], b"ab" * 32, b"cd" * 32)  # the checkpoint it claims
    reading = read_png(tampered, chains[0]["root"].read_bytes())
    assert reading.problems, "a rewritten lineage assertion must not verify"
    assert any("assertion" in p or "signature" in p for p in reading.problems), reading.problems


def test_a_stripped_manifest_is_reported_as_missing(signed, chains):
    reading = read_png(strip_manifest(signed[1]), chains[0]["root"].read_bytes())
    assert not reading.found
    assert "no Content Credentials" in reading.problems[0]


def test_a_foreign_signer_is_untrusted(signed, chains):
    ours, theirs = chains
    foreign = signer_of(theirs).sign_png(signed[0], "row-1.png", LINEAGE, "2026-11-20T02:00:00+00:00")
    reading = read_png(foreign, ours["root"].read_bytes())
    assert any("signingCredential.untrusted" in p for p in reading.problems), reading.problems
    assert read_png(foreign, theirs["root"].read_bytes()).problems == []  # its own root trusts it


def test_detached_signatures_hold_and_fail_on_a_change_or_a_stranger(chains):
    ours, theirs = chains
    data = json.dumps({"files": [{"path": "part-0.parquet", "sha256": "00"}]}).encode()
    envelope = signer_of(ours).sign_detached(data, "2026-11-20.json")
    assert verify_detached(data, envelope, ours["root"].read_bytes()) == []
    assert "changed after it was signed" in verify_detached(data.replace(b"00", b"01"), envelope, None)[0]
    assert "foreign key" in verify_detached(data, envelope, theirs["root"].read_bytes())[0]
    forged = dict(envelope, signature=signer_of(theirs).sign_detached(data, "x")["signature"])
    assert "does not verify" in verify_detached(data, forged, None)[0]


def test_unusable_chains_are_errors_naming_the_key(chains, tmp_path):
    ours, theirs = chains
    with pytest.raises(CredentialError, match=r"^signing.private_key: .* is not the key of the first certificate"):
        load_signer(str(ours["chain"]), str(theirs["key"]), None)
    with pytest.raises(CredentialError, match=r"^signing.certificate: cannot read"):
        load_signer(str(tmp_path / "missing.pem"), str(ours["key"]), None)
    (tmp_path / "junk.pem").write_text("not a certificate")
    with pytest.raises(CredentialError, match=r"^signing.certificate: .* holds no PEM certificate"):
        load_signer(str(tmp_path / "junk.pem"), str(ours["key"]), None)


def test_without_paths_the_development_chain_is_made_once_and_marked(tmp_path, monkeypatch):
    monkeypatch.setenv("AIGC_KEYS_DIR", str(tmp_path / "dev"))
    said = []
    first = load_signer(None, None, None, say=said.append)
    second = load_signer(None, None, None, say=said.append)
    assert first.chain_pem == second.chain_pem and len(said) == 1 and "untrusted" in said[0]
    assert first.development and first.describe()["development"] is True
    assert oct((tmp_path / "dev" / "key.pem").stat().st_mode & 0o777) == "0o600"


def test_a_certificate_issued_by_a_signing_certificate_does_not_chain(chains, tmp_path):
    """Only a CA may issue: a leaf the root signed cannot vouch for a certificate it made itself (review finding)."""
    import datetime as dt

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    ours = chains[0]
    signer_cert = x509.load_pem_x509_certificates(ours["chain"].read_bytes())[0]
    signer_key = serialization.load_pem_private_key(ours["key"].read_bytes(), None)
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.timezone.utc)
    mallory = (x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "mallory")]))
               .issuer_name(signer_cert.subject).public_key(key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(now - dt.timedelta(minutes=1)).not_valid_after(now + dt.timedelta(days=1))
               .sign(signer_key, hashes.SHA256()))
    pem = serialization.Encoding.PEM
    (tmp_path / "mallory.pem").write_bytes(mallory.public_bytes(pem) + signer_cert.public_bytes(pem))
    (tmp_path / "mallory.key").write_bytes(key.private_bytes(pem, serialization.PrivateFormat.PKCS8,
                                                             serialization.NoEncryption()))
    forged = load_signer(str(tmp_path / "mallory.pem"), str(tmp_path / "mallory.key"), None)
    data = b'{"files": []}'
    assert "foreign key" in verify_detached(data, forged.sign_detached(data, "x.json"), ours["root"].read_bytes())[0]
    assert verify_detached(data, signer_of(ours).sign_detached(data, "x.json"), ours["root"].read_bytes()) == []


def test_a_malformed_signature_file_is_a_problem_not_a_crash(chains):
    data = b"{}"
    envelope = signer_of(chains[0]).sign_detached(data, "x.json")
    for broken in ({**envelope, "algorithm": "ES999"}, {k: v for k, v in envelope.items() if k != "signature"},
                   {**envelope, "signature": "not base64!"}, {**envelope, "certificate_chain": "junk"}):
        (problem,) = verify_detached(data, broken, chains[0]["root"].read_bytes())
        assert "malformed" in problem or "does not verify" in problem, problem


def test_an_algorithm_that_does_not_fit_the_key_names_signing_algorithm(chains):
    ours = chains[0]
    with pytest.raises(CredentialError, match=r"^signing.algorithm: ed25519 does not fit the key .* \(an EC secp256r1 key\)"):
        load_signer(str(ours["chain"]), str(ours["key"]), None, "ed25519")
