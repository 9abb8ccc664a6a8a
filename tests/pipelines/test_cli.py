"""The CLI on real runs: exit 0 and a summary that says what happened and where to look."""

import re

import pytest

from pipelines.cli import main
from tests.conftest import TINY_CONFIG


def test_preprocess_prints_counts_and_paths(tmp_path, capsys, ray_local, prefect_server):
    assert main(["preprocess", "--config", str(TINY_CONFIG), "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert re.search(r"rows read\s+500 ", out) and "rejected" in out and str(tmp_path / "curated") in out


def test_generate_a_few_rows_for_another_date(tiny_night, capsys):
    cfg, store, _ = tiny_night
    code = main(["generate", "--config", str(TINY_CONFIG), "--out", store.root, "--date", "2026-02-01", "--count", "5"])
    assert code == 0
    out = capsys.readouterr().out
    assert re.search(r"generated\s+5 rows", out) and "night 2026-02-01" in out
    assert store.read_json("manifests/generated", "2026-02-01.json")["rows"] == 5


def test_failed_run_exits_1_with_one_line(tmp_path, capsys, ray_local, prefect_server):
    code = main(["generate", "--config", str(TINY_CONFIG), "--out", str(tmp_path), "--date", "2026-02-01"])
    assert code == 1
    err = capsys.readouterr().err
    assert "aigc: generate failed: FileNotFoundError: model 'tiny-gan' has no production version" in err


def test_inspect_summarises_each_kind_of_output(tiny_night, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # where the curated sample grid lands
    _, store, result = tiny_night
    model = store.display(result.models[0].trained.model.path)
    signed = "credentials: C2PA, signed by aigc-pipeline development signer"
    for path, needles in [(store.path("generated", "date=2026-11-20"), ("18 rows", signed, "UNTRUSTED")),
                          (store.path("curated", result.preprocess.dataset_version), ("sample grid (one row per label)",)),
                          (model, ("model tiny-gan",))]:
        assert main(["inspect", path]) == 0
        out = capsys.readouterr().out
        assert all(n in out for n in needles), out
    assert main(["inspect", store.path("nothing-here")]) == 2
    grids = list(tmp_path.glob("curated-*-samples.png"))
    from PIL import Image

    assert len(grids) == 1 and Image.open(grids[0]).height > Image.open(grids[0]).width  # 10 label rows of 8


def test_promote_lists_versions_and_moves_production(tiny_night, capsys):
    import shutil

    from jobs.store import registry

    cfg, store, _ = tiny_night
    current = registry.resolve(store, "tiny-gan").version
    older = "00000000-000000-00000000"  # a copy of the current version under an older name
    shutil.copytree(store.path("models", "tiny-gan", current), store.path("models", "tiny-gan", older))
    card = store.read_json("models", "tiny-gan", older, "model_card.json")
    store.write_json({**card, "version": older}, "models", "tiny-gan", older, "model_card.json")
    try:
        assert main(["promote", "tiny-gan", "--config", str(TINY_CONFIG), "--out", store.root]) == 0
        listing = capsys.readouterr().out.splitlines()
        assert listing[0].startswith(f"  {older}") and listing[1].startswith(f"* {current}")
        assert main(["promote", "tiny-gan", older, "--config", str(TINY_CONFIG), "--out", store.root]) == 0
        assert registry.resolve(store, "tiny-gan").version == older
        assert main(["promote", "tiny-gan", "no-such-version", "--config", str(TINY_CONFIG), "--out", store.root]) == 2
        assert "has no version no-such-version" in capsys.readouterr().err
    finally:
        registry.promote_version(store, "tiny-gan", current)
        store.delete("models", "tiny-gan", older)


def test_train_leaves_production_alone_unless_promote(tiny_night, capsys):
    from jobs.store import registry

    cfg, store, _ = tiny_night
    current = registry.resolve(store, "tiny-gpt").version
    before = {card.version for card, _ in registry.versions(store, "tiny-gpt")}
    args = ["train", "--model", "tiny-gpt", "--config", str(TINY_CONFIG), "--out", store.root]
    try:
        assert main(args) == 0
        assert "(not promoted: `aigc promote` decides)" in capsys.readouterr().out
        assert registry.resolve(store, "tiny-gpt").version == current
        assert main([*args, "--promote"]) == 0
        assert "(production)" in capsys.readouterr().out
        newest = registry.versions(store, "tiny-gpt")[-1][0].version
        assert registry.resolve(store, "tiny-gpt").version == newest != current
    finally:  # the shared registry as it was: later tests must not meet these versions
        registry.promote_version(store, "tiny-gpt", current)
        for card, _ in registry.versions(store, "tiny-gpt"):
            if card.version not in before:
                store.delete("models", "tiny-gpt", card.version)
        assert {card.version for card, _ in registry.versions(store, "tiny-gpt")} == before


def test_regenerate_rebuilds_published_rows_byte_for_byte(tiny_night, tmp_path, capsys):
    import pyarrow.dataset as pads

    from jobs.store.png import has_c2pa, without_c2pa
    from tests.conftest import RUN_DATE

    cfg, store, _ = tiny_night
    rows = pads.dataset(store.path("generated", f"date={RUN_DATE}"), format="parquet").to_table(
        columns=["id", "modality", "image", "text"]).to_pandas()
    image = rows[rows.modality == "image"].iloc[-1]
    text = rows[rows.modality == "text"].iloc[0]
    ids = tmp_path / "ids.txt"
    ids.write_text(f"{text.id}\n")
    args = ["regenerate", "--config", str(TINY_CONFIG), "--out", store.root, "--to", str(tmp_path / "re")]
    assert main([*args, "--id", image.id, "--ids", str(ids)]) == 0
    out = capsys.readouterr().out
    assert "2/2 rows regenerated identically" in out and "pixels and PNG bytes identical" in out
    published = image.image["bytes"]  # signed: the rebuilt PNG is the published one without its C2PA chunk
    assert has_c2pa(published) and (tmp_path / "re" / f"{image.id}.png").read_bytes() == without_c2pa(published)
    assert (tmp_path / "re" / f"{text.id}.txt").read_text(encoding="utf-8") == text.text
    assert main([*args, "--id", image.id, "--id", "no-such-row"]) == 1
    assert "MISS no-such-row" in capsys.readouterr().out
    assert main([*args]) == 2


def test_regenerate_says_how_a_changed_row_differs_and_why_a_refused_id_was_never_published(tiny_night, tmp_path, capsys):
    import re
    import shutil

    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.dataset as pads
    import pyarrow.parquet as pq

    from jobs.generate.run import run_generation
    from jobs.generate.spec import FilterSpec
    from jobs.store.storage import Store
    from tests.conftest import RUN_DATE

    cfg, store, _ = tiny_night
    copy = Store(str(tmp_path / "root"))
    shutil.copytree(store.root, copy.root, ignore=shutil.ignore_patterns("checkpoints"))
    refuse_text = FilterSpec(min_label_confidence=None, near_copy=False, min_contrast=None, min_chars=1000, top_up=False)
    run_generation(cfg.generate.model_copy(update={"filters": refuse_text}), copy, "2026-06-01", cfg.name)
    refused = pads.dataset(copy.path("rejects/generated", "date=2026-06-01"), format="parquet").to_table(
        columns=["id", "reason"]).to_pylist()
    assert refused and {r["reason"] for r in refused} == {"too_short"}

    (path,) = [f for f in copy.files("generated", f"date={RUN_DATE}", suffix=".parquet")]  # the tiny night: one file
    table = pq.read_table(path)
    rows = table.to_pandas()
    image_id = rows[rows.modality == "image"]["id"].iloc[0]
    fine_id = rows[rows.modality == "image"]["id"].iloc[1]
    text_id = rows[rows.modality == "text"]["id"].iloc[0]
    ids = table.column("id")
    seeds = pc.if_else(pc.equal(ids, image_id), pc.add(table.column("seed"), 1), table.column("seed"))
    texts = pc.if_else(pc.equal(ids, text_id), pa.scalar("tampered"), table.column("text"))
    table = table.set_column(table.schema.get_field_index("seed"), "seed", seeds)
    pq.write_table(table.set_column(table.schema.get_field_index("text"), "text", texts), path)  # a row edited after publishing

    args = ["regenerate", "--config", str(TINY_CONFIG), "--out", copy.root, "--to", str(tmp_path / "re")]
    assert main([*args, "--id", image_id, "--id", text_id, "--id", refused[0]["id"], "--id", fine_id, "--id", "nope"]) == 1
    out = capsys.readouterr().out
    said = {line.split()[1]: line for line in out.splitlines() if line.split()[:1] in (["ok"], ["DIFF"], ["REFUSED"], ["MISS"])}
    assert said[image_id].startswith("DIFF") and re.search(r"pixels differ: \d+ of 256 pixels, by up to \d+ of 255", said[image_id])
    assert said[text_id].startswith("DIFF") and "text differs from character 0: published 'tampered', rebuilt '" in said[text_id]
    assert said[refused[0]["id"]].startswith("REFUSED") and "2026-06-01 refused at filter: too_short" in said[refused[0]["id"]]
    assert said[fine_id].startswith("ok") and said["nope"].startswith("MISS")
    assert "1/5 rows regenerated identically" in out


def test_nightly_takes_a_date_range_and_refuses_a_backwards_one(capsys):
    from pipelines.cli import _date_range

    assert _date_range("2026-02-27..2026-03-02") == ["2026-02-27", "2026-02-28", "2026-03-01", "2026-03-02"]
    assert _date_range("2026-11-20") == ["2026-11-20"]
    with pytest.raises(SystemExit) as exit_:
        main(["nightly", "--date", "2026-11-09..2026-11-01"])
    assert exit_.value.code == 2
    assert "ends before it starts" in capsys.readouterr().err
