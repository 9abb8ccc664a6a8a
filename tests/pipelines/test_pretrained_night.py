"""A team's own pretrained models through whole nights, from the CLI: tiny random ``diffusers`` U-Nets and a
GPT-2-style ``transformers`` LM saved with ``save_pretrained`` inside the test, named in YAML configs, run by
``aigc nightly`` and rebuilt row for row by ``aigc regenerate``.

Two nights, because one night curates one image shape:
- digits (8x8, 1 channel), in a subprocess as a user runs it (its own local Ray; the suite's Prefect
  server): a class-conditional U-Net fine-tuned for two steps (``finetune`` left at its default, true) and
  the LM used as it is (``finetune: false``);
- faces (8x8, 3 channels), in-process through the CLI's ``main`` on the suite's Ray and Prefect (cheaper):
  a class-conditional U-Net used as it is, its class indices named by ``classes``.
The config checks that need no Ray (shape mismatches, ``finetune`` on a family trained from scratch) run
in-process. Everything is tiny: 8x8 images, a few rows per request, 3 DDIM steps (the requests' ``steps``).
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import pyarrow.dataset as pads
import pytest
import yaml

from jobs.store.png import has_c2pa, without_c2pa
from tests.cli_process import cli_env, run_aigc
from tests.pretrained_folders import save_lm, save_unet

DATE = "2026-11-20"


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory):
    """Local model folders, as a team would bring them: {"digits": U-Net, "faces": U-Net, "lm": LM}."""
    base = tmp_path_factory.mktemp("pretrained")
    corpus = ["The bakery opens at seven.", "A fresh loaf every morning.", "The ovens never sleep."] * 20
    return {"digits": save_unet(base / "unet-digits", size=8, channels=1, classes=10, seed=1),
            "faces": save_unet(base / "unet-faces", size=8, channels=3, classes=2, seed=3),
            "lm": save_lm(base / "lm", corpus, n_embd=16, n_layer=1)}


# Small everywhere: few rows, few DDIM steps (the requests' ``steps``), one training worker, no lift.
COMMON = {
    "ray": {"num_cpus": 4},
    "train": {"num_workers": 1, "epochs": 1, "max_failures": 0, "sample_grid": 1, "epoch_samples": False,
              "validation": False},
    "generate": {"batch_size": 8, "concurrency": 1, "encode_concurrency": 1, "filters": {"enabled": False}},
    "gate": {"samples_per_label": 2, "text_samples": 2, "val_texts": 4, "max_rows": 50, "absolute": {},
             "relative": {}, "lift": {"enabled": False}},
}


def digits_config(models: dict[str, Path]) -> dict:
    return {
        "name": "pretrained-digits", **COMMON,
        "sources": [{"kind": "builtin", "name": "digits", "limit": 120},
                    {"kind": "builtin", "name": "text-corpus", "limit": 40}],
        "preprocess": {"resolution": 8, "channels": 1, "val_fraction": 0.2},
        "models": [
            {"name": "hf-digits", "family": "hf_diffusion", "path": str(models["digits"]), "max_steps": 2,
             "batch_size": 16},  # finetune: true (the default): two optimiser steps on the curated digits
            {"name": "hf-copy", "family": "hf_causal_lm", "path": str(models["lm"]), "block_size": 32,
             "finetune": False},
        ],
        "generate": {**COMMON["generate"], "requests": [
            {"id": "digits", "model": "hf-digits", "labels": ["0", "7"], "per_label": 2, "steps": 3},
            {"id": "copy", "model": "hf-copy", "prompts": ["The "], "per_prompt": 2, "max_new_tokens": 6}]},
    }


def faces_config(models: dict[str, Path]) -> dict:
    return {
        "name": "pretrained-faces", **COMMON,
        "sources": [{"kind": "builtin", "name": "faces"}],
        "preprocess": {"resolution": 8, "channels": 3, "val_fraction": 0.2},
        "models": [{"name": "hf-faces", "family": "hf_diffusion", "path": str(models["faces"]),
                    "classes": ["face", "non_face"], "finetune": False}],
        "generate": {**COMMON["generate"], "requests": [
            {"id": "faces", "model": "hf-faces", "per_label": 2, "steps": 3}]},
    }


def _aigc(*args: str, log: Path, prefect_api: str | None = None) -> tuple[int, str]:
    """``aigc ARGS`` in a subprocess with its own local Ray (never the suite's), and the suite's Prefect
    server when ``prefect_api`` names it."""
    code, out, _ = run_aigc(*args, log=log, env=cli_env(prefect_api))
    return code, out


def _write(config: dict, tmp_path: Path, tag: str) -> tuple[Path, Path]:
    cfg, root = tmp_path / f"{tag}.yaml", tmp_path / f"root-{tag}"
    cfg.write_text(yaml.safe_dump(config, sort_keys=False))
    return cfg, root


def _rows(root: Path):
    return pads.dataset(root / "generated" / f"date={DATE}", format="parquet").to_table(
        columns=["id", "modality", "model_name", "model_family", "width", "height", "mode", "label", "text",
                 "sampler"]).to_pandas()


def _card(root: Path, model: str) -> dict:
    version = json.loads((root / "models" / model / "production.json").read_text())["version"]
    return json.loads((root / "models" / model / version / "model_card.json").read_text())


def _published_and_gated(root: Path, models: set[str]) -> dict:
    """The night's manifest, after checking that the gate judged every model's staged rows and the report exists."""
    manifest = json.loads((root / "manifests" / "generated" / f"{DATE}.json").read_text())
    gate = manifest["gate"]
    assert gate["passed"] and set(gate["figures"]) == models and set(gate["rows"]) == models
    assert (root / "reports" / f"run_date={DATE}" / "index.html").is_file()
    return manifest


def test_a_night_of_pretrained_models_from_the_cli_publishes_and_regenerates_exactly(pretrained, prefect_api, tmp_path):
    started = time.time()
    cfg, root = _write(digits_config(pretrained), tmp_path, "digits")
    rc, out = _aigc("nightly", "--config", str(cfg), "--out", str(root), "--date", DATE, "--set", "ray.dashboard=false",
                    log=tmp_path / "digits.log", prefect_api=prefect_api)
    assert rc == 0, out[-4000:]
    assert re.search(r"model hf-digits +trained \S+ \(no production version yet\): 2 steps", out)
    assert re.search(r"model hf-copy +registered \S+ .*pretrained weights used as they are \(finetune: false\)", out)
    assert re.search(r"quality gate +passed", out)

    rows = _rows(root)
    images, texts = rows[rows.model_name == "hf-digits"], rows[rows.model_name == "hf-copy"]
    assert len(images) == 4 and sorted(images["label"]) == ["0", "0", "7", "7"]
    assert (images["width"] == 8).all() and (images["height"] == 8).all() and (images["mode"] == "L").all()
    assert (images["modality"] == "image").all() and (images["model_family"] == "hf_diffusion").all()
    assert all(json.loads(s)["steps"] == 3 for s in images["sampler"])  # the request's DDIM steps were used
    assert len(texts) == 2 and texts["width"].isna().all()
    assert (texts["model_family"] == "hf_causal_lm").all() and all(t.startswith("The ") for t in texts["text"])

    tuned, as_is = _card(root, "hf-digits"), _card(root, "hf-copy")
    assert tuned["output_shape"] == [8, 8, 1] and tuned["steps"] == 2 and not tuned["used_as_is"]
    assert as_is["used_as_is"] and as_is["steps"] == 0 and as_is["output_shape"] is None
    assert (root / "models" / "hf-digits" / tuned["version"] / "metrics.parquet").is_file()
    assert _published_and_gated(root, {"hf-digits", "hf-copy"})["gate"]["rows"] == {"hf-digits": 4, "hf-copy": 2}

    ids = [images["id"].iloc[0], images["id"].iloc[-1], texts["id"].iloc[0]]
    rc, out = _aigc("regenerate", "--config", str(cfg), "--out", str(root), "--to", str(tmp_path / "re"),
                    *[a for i in ids for a in ("--id", i)], log=tmp_path / "regenerate.log")
    assert rc == 0 and "3/3 rows regenerated identically" in out, out[-3000:]
    assert "pixels and PNG bytes identical" in out and "text identical" in out
    print(f"pretrained night from the CLI and its regeneration: {time.time() - started:.0f}s")


def test_a_three_channel_unet_used_as_is_publishes_rgb_rows_that_regenerate(pretrained, tmp_path, ray_local,
                                                                            prefect_server):
    """The faces night, in-process through the CLI's ``main`` on the suite's Ray and Prefect (the subprocess
    path is the test above): a 3-channel U-Net whose class indices ``classes`` names, used as it is. Its
    output is read from the files (capturing it would bind library log handlers to a stream closed after
    the test)."""
    import pyarrow.parquet as pq

    from pipelines.cli import main

    started = time.time()
    cfg, root = _write(faces_config(pretrained), tmp_path, "faces")
    assert main(["nightly", "--config", str(cfg), "--out", str(root), "--date", DATE]) == 0
    rows = _rows(root)
    assert len(rows) == 4 and sorted(rows["label"]) == ["face", "face", "non_face", "non_face"]
    assert (rows["width"] == 8).all() and (rows["height"] == 8).all() and (rows["mode"] == "RGB").all()
    card = _card(root, "hf-faces")
    assert card["output_shape"] == [8, 8, 3] and card["used_as_is"] and card["config"]["classes"] == ["face", "non_face"]
    _published_and_gated(root, {"hf-faces"})
    ids = [rows["id"].iloc[0], rows["id"].iloc[-1]]
    assert main(["regenerate", "--config", str(cfg), "--out", str(root), "--to", str(tmp_path / "re"),
                 *[a for i in ids for a in ("--id", i)]]) == 0  # 0: every row identical (pixels and PNG bytes)
    published = pq.read_table(root / "generated" / f"date={DATE}", columns=["id", "image"]).to_pylist()
    # the published PNGs are signed: rebuilt, they are the same bytes outside the C2PA manifest chunk
    assert all((tmp_path / "re" / f"{r['id']}.png").read_bytes() == without_c2pa(r["image"]["bytes"]) and
               has_c2pa(r["image"]["bytes"]) for r in published if r["id"] in ids)
    print(f"faces night in-process and its regeneration: {time.time() - started:.0f}s")


def test_a_pretrained_unet_of_another_shape_is_a_config_error(pretrained):
    from pipelines.config import ConfigError, validate

    with pytest.raises(ConfigError, match=r"^preprocess\.resolution: 16 does not fit model hf-faces \(hf_diffusion\), "
                                          r"which makes 8x8 images.*set preprocess\.resolution: 8"):
        validate({**faces_config(pretrained), "preprocess": {"resolution": 16, "channels": 3}})
    with pytest.raises(ConfigError, match=r"^preprocess\.channels: 1 does not fit .* set preprocess\.channels: 3"):
        validate({**faces_config(pretrained), "preprocess": {"resolution": 8, "channels": 1}})
    with pytest.raises(ConfigError, match=r"^models\.0\.finetune: 'finetune': false needs a pretrained family"):
        validate({**faces_config(pretrained), "models": [{"name": "g", "family": "dcgan", "finetune": False}]})
    with pytest.raises(ConfigError, match=r"^models\.1\.epochs: .*used as it is \(finetune: false\)"):
        cfg = digits_config(pretrained)
        validate({**cfg, "models": [cfg["models"][0], {**cfg["models"][1], "epochs": 2}]})


def test_training_refuses_curated_data_that_does_not_fit_the_unet(pretrained, tmp_path):
    """The same check on the driver against the curated data itself (a dataset curated with other settings),
    before any worker starts."""
    import aigc_models
    from jobs.store.storage import Store
    from jobs.train.data import check_data_fits_model
    from jobs.train.spec import ModelSpec

    store = Store(str(tmp_path))
    spec = ModelSpec(name="u", family="hf_diffusion", path=str(pretrained["digits"]))
    model = aigc_models.build("hf_diffusion", {"path": str(pretrained["digits"])})
    for preprocess, match in [({"resolution": 16, "channels": 1}, r"^preprocess\.resolution: .* 16x16 .* set preprocess\.resolution: 8"),
                              ({"resolution": 8, "channels": 3}, r"^preprocess\.channels: .* set preprocess\.channels: 1")]:
        store.write_json({"preprocess": preprocess}, "manifests/curated/v1.json")
        with pytest.raises(ValueError, match=match):
            check_data_fits_model(spec, model, store, "v1", ["0", "1"])
    store.write_json({"preprocess": {"resolution": 8, "channels": 1}}, "manifests/curated/v1.json")
    check_data_fits_model(spec, model, store, "v1", [str(i) for i in range(10)])
    with pytest.raises(ValueError, match=r"labels outside the model's classes: cat .*'classes'"):
        check_data_fits_model(spec, model, store, "v1", ["0", "cat"])
