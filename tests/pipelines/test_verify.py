"""Content Credentials on a real night: every published image carries a C2PA manifest that c2pa-python reads as
intact, trusted by the development root, declaring trainedAlgorithmicMedia with the row's model version and
checkpoint; ``aigc verify`` passes published rows and files, and fails each tampering with its reason. Unsigned
output only when the config says so, and then the summary says it; a chain that cannot sign exits 2."""

import io
import os
import re
import shutil
from pathlib import Path

import c2pa
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads
import pyarrow.parquet as pq
import pytest

from jobs.store import credentials
from pipelines.cli import main
from tests.conftest import RUN_DATE, TINY_CONFIG
from tests.tamper import change_in_manifest, change_pixel, strip_manifest


def rows_of(store, run_date=RUN_DATE):
    return pads.dataset(store.path("generated", f"date={run_date}"), format="parquet").to_table().to_pylist()


def verify(store, *args):
    return main(["verify", "--config", str(TINY_CONFIG), "--out", store.root, *args])


def lines_of(out):
    """``{name: line}`` of each check printed, for the one file or row verified."""
    return {m.group(2): m.group(0) for m in re.finditer(r"^  (ok  |FAIL|--  ) (\w+)\s+.*$", out, re.M)}


def copied_night(tiny_night, tmp_path):
    """A copy of the tiny night's ROOT to tamper with: (Store, its one Parquet file, that table, an image row's id,
    a text row's id)."""
    from jobs.store.storage import Store

    _, store, _ = tiny_night
    copy = Store(str(tmp_path / "root"))
    shutil.copytree(store.root, copy.root, ignore=shutil.ignore_patterns("checkpoints"))
    (path,) = copy.files("generated", f"date={RUN_DATE}", suffix=".parquet")
    table = pq.read_table(path)
    rows = table.to_pylist()
    return (copy, path, table, next(r for r in rows if r["modality"] == "image")["id"],
            next(r for r in rows if r["modality"] == "text")["id"])


def test_c2pa_python_reads_every_published_image_with_its_source_type_model_and_checkpoint(tiny_night):
    _, store, _ = tiny_night
    root = (Path(os.environ["AIGC_KEYS_DIR"]) / "root.pem").read_text()
    settings = {"verify": {"verify_trust": True, "remote_manifest_fetch": False, "ocsp_fetch": False},
                "trust": {"trust_anchors": root}}
    images = [r for r in rows_of(store) if r["modality"] == "image"]
    assert images
    for row in images:
        with c2pa.Reader("image/png", io.BytesIO(row["image"]["bytes"]), context=c2pa.Context.from_dict(settings)) as r:
            assert r.get_validation_state() == "Trusted", r.get_validation_results()
            assertions = {a["label"]: a["data"] for a in r.get_active_manifest()["assertions"]}
        (created,) = assertions["c2pa.actions.v2"]["actions"]
        assert created["action"] == "c2pa.created"
        assert created["digitalSourceType"].endswith("/digitalsourcetype/trainedAlgorithmicMedia")
        lineage = assertions[credentials.LINEAGE_LABEL]
        assert (lineage["id"], lineage["model_version"], lineage["checkpoint_sha256"], lineage["seed"]) == \
            (row["id"], row["model_version"], row["checkpoint_sha256"], row["seed"])
    manifest = store.read_json("manifests/generated", f"{RUN_DATE}.json")
    assert manifest["credentials"]["signed"] and manifest["credentials"]["development"]
    assert store.exists("manifests/generated", f"{RUN_DATE}.json.sig")


def test_verify_passes_published_image_and_text_rows_and_a_published_file(tiny_night, tmp_path, capsys):
    _, store, _ = tiny_night
    rows = rows_of(store)
    image = next(r for r in rows if r["modality"] == "image")
    text = next(r for r in rows if r["modality"] == "text")
    assert verify(store, "--id", image["id"]) == 0
    checks = lines_of(capsys.readouterr().out)
    assert set(checks) == {"credentials", "lineage", "partition", "regenerated"}
    assert all(line.lstrip().startswith("ok") for line in checks.values()), checks
    assert "DEVELOPMENT chain" in checks["credentials"] and "trainedAlgorithmicMedia" in checks["credentials"]
    assert verify(store, "--id", text["id"]) == 0
    out = capsys.readouterr().out
    assert "text identical" in out and "lists" in lines_of(out)["partition"]
    (tmp_path / "a.png").write_bytes(image["image"]["bytes"])
    assert verify(store, str(tmp_path / "a.png"), "--no-regenerate") == 0
    assert f"(row {image['id']})" in capsys.readouterr().out


def test_verify_fails_a_changed_pixel_a_changed_lineage_field_a_stripped_manifest_and_a_foreign_key(
        tiny_night, tmp_path, capsys):
    _, store, _ = tiny_night
    image = next(r for r in rows_of(store) if r["modality"] == "image")
    published = image["image"]["bytes"]
    other = credentials.make_dev_chain(tmp_path / "stranger")
    stranger = credentials.load_signer(str(other["chain"]), str(other["key"]), None)
    from jobs.store.png import without_c2pa

    lineage = credentials.read_png(published, None).lineage
    cases = {
        "pixel": (change_pixel(published), "credentials", "assertion.dataHash.mismatch"),
        "lineage": (change_in_manifest(published, image["checkpoint_sha256"].encode(),
                                       image["checkpoint_sha256"][::-1].encode()), "credentials", "c2pa: "),
        "stripped": (strip_manifest(published), "credentials", "no Content Credentials"),
        "foreign": (stranger.sign_png(without_c2pa(published), "x.png", lineage, "2026-11-20T00:00:00+00:00"),
                    "credentials", "signingCredential.untrusted"),
    }
    for name, (data, check, reason) in cases.items():
        path = tmp_path / f"{name}.png"
        path.write_bytes(data)
        assert verify(store, str(path), "--no-regenerate") == 1, name
        out = capsys.readouterr().out
        assert f"NOT VERIFIED  {path}" in out, name
        line = lines_of(out)[check]
        assert line.lstrip().startswith("FAIL") and reason in line, (name, line)
        if name == "stripped":  # no manifest to name its row: found by its pixels, and told it states no lineage
            assert f"(row {image['id']})" in out and "states no lineage" in lines_of(out)["lineage"]


def test_verify_fails_a_published_row_whose_lineage_was_edited_and_names_the_field(tiny_night, tmp_path, capsys):
    copy, path, table, image, text = copied_night(tiny_night, tmp_path)
    edited = pc.is_in(table.column("id"), pa.array([image, text]))
    table = table.set_column(table.schema.get_field_index("seed"), "seed",
                             pc.if_else(edited, pc.add(table.column("seed"), 1), table.column("seed")))
    pq.write_table(table, path)
    assert verify(copy, "--id", image, "--no-regenerate") == 1
    checks = lines_of(capsys.readouterr().out)
    assert checks["lineage"].lstrip().startswith("FAIL") and re.search(r"seed: manifest \d+, row \d+", checks["lineage"])
    assert checks["partition"].lstrip().startswith("FAIL") and "changed after the night was signed" in checks["partition"]
    assert verify(copy, "--id", text) == 1  # a text row: its file's hash no longer matches the signed manifest
    checks = lines_of(capsys.readouterr().out)
    assert "changed after the night was signed" in checks["partition"]
    assert checks["regenerated"].lstrip().startswith("FAIL")
    manifest = f"manifests/generated/{RUN_DATE}.json"
    copy.write_bytes(copy.read_bytes(manifest).replace(b'"rows"', b'"Rows"', 1), manifest)
    assert verify(copy, "--id", text, "--no-regenerate") == 1
    assert "changed after it was signed" in lines_of(capsys.readouterr().out)["partition"]


def test_an_unsigned_night_only_when_the_config_says_so_and_the_summary_says_it(tiny_night, tmp_path, capsys):
    _, store, _ = tiny_night
    copy = tmp_path / "root"
    shutil.copytree(store.root, copy, ignore=shutil.ignore_patterns("checkpoints"))
    args = ["generate", "--config", str(TINY_CONFIG), "--out", str(copy), "--date", "2026-03-01", "--count", "3"]
    assert main([*args, "--set", "signing.enabled=false"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"credentials\s+UNSIGNED \(signing.enabled: false\)", out)
    from jobs.store.storage import Store

    copy = Store(str(copy))
    assert copy.read_json("manifests/generated/2026-03-01.json")["credentials"] == {"signed": False}
    assert not copy.exists("manifests/generated/2026-03-01.json.sig")
    row = next(r for r in rows_of(copy, "2026-03-01") if r["modality"] == "image")
    assert verify(copy, "--id", row["id"], "--no-regenerate") == 1
    checks = lines_of(capsys.readouterr().out)
    assert "no Content Credentials" in checks["credentials"] and "carries no signature" in checks["partition"]
    assert main(args) == 0  # signed again: another signer is other work, so the night is made anew, signed
    assert re.search(r"credentials\s+C2PA, signed by aigc-pipeline development signer .*UNTRUSTED", capsys.readouterr().out)
    assert copy.exists("manifests/generated/2026-03-01.json.sig")


@pytest.mark.parametrize("sets, message", [
    (["signing.certificate=/nonexistent/chain.pem", "signing.private_key=/nonexistent/key.pem"],
     "signing.certificate: cannot read /nonexistent/chain.pem"),
    (["signing.certificate=/nonexistent/chain.pem"], "signing.private_key: give signing.certificate and"),
])
def test_a_chain_that_cannot_sign_exits_2_naming_the_key_before_any_work(tmp_path, capsys, sets, message):
    args = ["nightly", "--config", str(TINY_CONFIG), "--out", str(tmp_path)]
    assert main([*args, *[x for s in sets for x in ("--set", s)]]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"aigc: error: {message}") and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "curated").exists()


def test_a_row_planted_twice_or_a_file_the_manifest_does_not_list_fails_and_no_anchors_vouch_for_nobody(
        tiny_night, tmp_path, capsys):
    """Review findings kept as tests: an id published twice fails (the forged copy sorts first), a file slipped
    into a signed partition fails, and without trust anchors nothing is VERIFIED."""
    copy, path, table, image, text = copied_night(tiny_night, tmp_path)
    planted = table.filter(pc.equal(table.column("id"), text))
    planted = planted.set_column(planted.schema.get_field_index("text"), "text", pa.array(["forged"], pa.string()))
    Path(copy.path("generated", "date=2000-01-01")).mkdir(parents=True)
    pq.write_table(planted, copy.path("generated", "date=2000-01-01", "a.parquet"))
    assert verify(copy, "--id", text, "--no-regenerate") == 1
    assert "2 published rows have id" in lines_of(capsys.readouterr().out)["row"]
    shutil.rmtree(copy.path("generated", "date=2000-01-01"))

    unlisted = copy.path("generated", f"date={RUN_DATE}", "zz-unlisted.parquet")
    pq.write_table(table.slice(0, 0), unlisted)  # no rows at all: still a file the signed manifest never listed
    assert verify(copy, "--id", image, "--no-regenerate") == 1
    assert "holds files its signed manifest does not list: zz-unlisted.parquet" in lines_of(capsys.readouterr().out)["partition"]
    Path(unlisted).unlink()
    assert verify(copy, "--id", image, "--no-regenerate") == 0  # intact again
    capsys.readouterr()

    team = credentials.make_dev_chain(tmp_path / "team")  # a team chain named without its trust anchors
    assert verify(copy, "--id", image, "--no-regenerate", "--set", f"signing.certificate={team['chain']}",
                  "--set", f"signing.private_key={team['key']}") == 1
    checks = lines_of(capsys.readouterr().out)
    assert "no trust anchors" in checks["credentials"] and "no trust anchors" in checks["partition"]
