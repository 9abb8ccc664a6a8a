"""Scenario 5: more rejects than the configured share fails the run and publishes nothing."""

import numpy as np
import pytest
from PIL import Image

from jobs.data.spec import ImageFolderSource, PreprocessSpec
from jobs.generate.spec import FilterSpec
from jobs.store.rejects import ErrorBudgetExceeded
from jobs.store.storage import Store


def _folder(root, good, bad):
    (root / "a").mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(good):
        Image.fromarray(rng.integers(0, 256, (16, 16), dtype=np.uint8)).save(root / "a" / f"ok{i}.png")
    for i in range(bad):
        (root / "a" / f"bad{i}.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")


def test_preprocess_over_its_error_budget_publishes_nothing(tmp_path, ray_local):
    from jobs.data.curate import run_preprocess

    _folder(tmp_path / "in", good=8, bad=2)
    store = Store(str(tmp_path / "root"))
    source = [ImageFolderSource(kind="image_folder", path=str(tmp_path / "in"))]
    with pytest.raises(ErrorBudgetExceeded, match=r"preprocess\.max_reject_share: 2 of 10 inputs rejected "
                                                  r"\(20\.0% > 10\.0%; undecodable 2\); nothing was published"):
        run_preprocess(source, PreprocessSpec(resolution=16, max_reject_share=0.1), store)
    assert store.listdir("curated") == [] and store.listdir("manifests", "curated") == []  # no version, no latest pointer
    assert [e for e in store.listdir("staging", "curated")] == []  # and no staging left behind

    result = run_preprocess(source, PreprocessSpec(resolution=16, max_reject_share=0.2), store)  # within budget
    assert result.counts["accepted"] == 8 and result.counts["rejected"] == 2


def test_generation_over_its_error_budget_publishes_nothing(tiny_night):
    from jobs.generate.run import run_generation

    cfg, store, _ = tiny_night
    date = "2026-07-01"
    strict = FilterSpec(min_label_confidence=0.999, near_copy=False, min_contrast=None, top_up=False,
                        max_reject_share=0.25)  # a tiny GAN's digits: most fail a 99.9% confidence bar
    spec = cfg.generate.model_copy(update={"filters": strict})
    with pytest.raises(ErrorBudgetExceeded, match=r"generate\.filters\.max_reject_share: \d+ of 18 generated rows "
                                                  r"rejected .*low_label_confidence"):
        run_generation(spec, store, date, cfg.name)
    assert not store.exists("generated", f"date={date}") and not store.exists("rejects/generated", f"date={date}")
    assert not store.exists("manifests/generated", f"{date}.json")
    assert [e for e in store.listdir("staging", "generated") if date in e] == []
