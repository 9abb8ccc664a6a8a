"""The nightly report (``pipelines.report``) on a real local store: a generated partition of real PNGs and texts,
a model's metrics.parquet and two nights, rendered in headless Chromium with no network."""

import base64
import html
import io
import os
import re
import shutil
import subprocess

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from PIL import Image

from jobs.store import schema
from jobs.store.png import encode_png
from jobs.store.storage import Store
from pipelines.report import headline, write_report

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
NIGHTS = ("2026-11-19", "2026-11-20")
COLOURS = {"magenta": (255, 0, 255), "cyan": (0, 255, 255), "yellow": (255, 255, 0)}  # used nowhere else on the page
PROMPTS = {"Hello ": ["Hello <script>alert('x')</script> & friends", *(f"Hello number {i}" for i in range(6))],
           "Try the ": ["Try the new <b>bold</b> one", "Try the other"]}
IMAGE_METRICS = ("fd", "kid", "conditional_accuracy", "precision", "recall", "memorisation_rate")
TEXT_METRICS = ("perplexity", "distinct_1", "distinct_2", "self_similarity", "copy_rate")


def tile(colour: tuple[int, int, int], i: int) -> np.ndarray:
    """A 16x16 RGB checkerboard of ``colour`` and black (the phase changes with ``i``)."""
    yy, xx = np.indices((16, 16))
    on = ((yy // 4 + xx // 4 + i) % 2 == 0)[:, :, None]
    return np.where(on, np.array(colour, dtype=np.uint8), np.uint8(0)).astype(np.uint8)


def write_partition(store: Store, run_date: str) -> None:
    rows = {c: [] for c in ("id", "modality", "image", "width", "height", "mode", "text", "label", "prompt",
                            "request_id", "model_name")}

    def add(**row):
        for c in rows:
            rows[c].append(row.get(c))

    for label, colour in COLOURS.items():
        for i in range(4):
            add(id=f"img-{label}-{i}", modality="image", image={"bytes": encode_png(tile(colour, i)), "path": None},
                width=16, height=16, mode="RGB", label=label, request_id="r-img", model_name="img-gan")
    for prompt, texts in PROMPTS.items():
        for i, text in enumerate(texts):
            add(id=f"txt-{prompt}-{i}", modality="text", text=text, prompt=prompt, request_id="r-txt",
                model_name="txt-gpt")
    table = schema.table(rows, schema.GENERATED)
    store.makedirs("generated", f"date={run_date}")
    # small row groups, so picks come from several of them
    pq.write_table(table, store.path("generated", f"date={run_date}", "part-0.parquet"), row_group_size=5)
    refused = schema.table({"id": ["refused-0"], "modality": ["image"], "label": ["refused"], "model_name": ["img-gan"],
                            "image": [{"bytes": encode_png(tile((255, 0, 0), 0)), "path": None}]}, schema.GENERATED)
    store.makedirs("generated", f"date={run_date}", "_rejected")  # as in a staging folder: never shown
    pq.write_table(refused, store.path("generated", f"date={run_date}", "_rejected", "part-0.parquet"))


def write_metrics(store: Store, model: str, version: str) -> None:
    """A DCGAN's metrics: its two losses (what the family declares a loss curve shows) and a score that is not one."""
    steps = [{"scope": "step", "epoch": 1 + s // 50, "step": s, "loss_d": 2.0 / (1 + s / 20), "loss_g": 1.0,
              "d_real": 0.5} for s in range(0, 100, 10)]
    epochs = [{"scope": "epoch", "epoch": e, "step": 50 * e, "loss_d": 1.0 / e, "loss_g": 1.0, "d_real": 0.5,
               "val_loss_d": 1.2 / e} for e in (1, 2)]
    buf = io.BytesIO()
    pd.DataFrame(steps + epochs).to_parquet(buf)
    store.write_bytes(buf.getvalue(), "models", model, version, "metrics.parquet")


def night(run_date: str, fd: float, status: str = "published") -> dict:
    figures = {"img-gan": {m: fd if m == "fd" else 0.5 for m in IMAGE_METRICS},
               "txt-gpt": {m: 3.0 if m == "perplexity" else 0.4 for m in TEXT_METRICS}}
    checks = [{"model": model, "metric": metric, "value": v, "bound": v * 1.5, "kind": "relative",
               "passed": not (status == "refused" and metric == "fd")}
              for model, vals in figures.items() for metric, v in vals.items()]
    return {
        "name": "report-test", "run_date": run_date, "status": status,
        "reason": "fd above bound" if status == "refused" else None,
        "started_at": f"{run_date}T02:00:00+00:00", "seconds": 321.5,
        "stages": [{"stage": "preprocess", "seconds": 40.0, "rows": 500, "rows_per_second": 12.5, "note": None},
                   {"stage": "train:img-gan", "seconds": 200.0, "rows": 450, "rows_per_second": 2.25, "note": "trained"},
                   {"stage": "generate", "seconds": 30.0, "rows": 21, "rows_per_second": 0.7, "note": None},
                   {"stage": "publish", "seconds": 0.5, "rows": None, "rows_per_second": None, "note": None}],
        "preprocess": {"dataset_version": "ds-abc", "reused": False,
                       "counts": {"inputs": 500, "accepted": 480, "rejected": 20, "train": 430, "val": 50,
                                  "by_reason": {"duplicate": 15, "too_short": 5},
                                  "by_source": {"builtin:digits": {"inputs": 500, "accepted": 480, "rejected": 20}}}},
        "models": [{"name": "img-gan", "family": "dcgan", "modality": "image", "version": "v2", "trained": True,
                    "decision": "new dataset version", "candidate": "v2", "promoted": True,
                    "evaluation": figures["img-gan"], "promotion_failures": []},
                   {"name": "txt-gpt", "family": "gpt", "modality": "text", "version": "t1", "trained": False,
                    "decision": "dataset unchanged: reused", "candidate": None, "promoted": False,
                    "evaluation": figures["txt-gpt"], "promotion_failures": ["perplexity <no> worse"]}],
        "generate": {"rows": 21, "rejected": 2, "rejected_by_reason": {"near_copy": 2},
                     "by_model": {"img-gan": 12, "txt-gpt": 9}, "by_label": {}, "short_of_request": {},
                     "top_up": {"rounds": 1, "extra_rows": 2},
                     "timings": {"generate_seconds": 30.0, "rows_per_second": 0.7}},
        "gate": {"passed": status == "published", "failures": ["img-gan fd"] if status == "refused" else [],
                 "figures": figures,
                 "baseline": {"img-gan": {"run_date": "2026-11-18", "figures": {"fd": 9.0}},
                              "txt-gpt": {"run_date": None, "figures": {}}},
                 "checks": checks},
        "augmentation_lift": {"img-gan": {"real_accuracy": 0.8, "mixed_accuracy": 0.85, "lift": 0.05,
                                          "k_per_label": 10, "synthetic_per_label": 20}},
    }


@pytest.fixture(scope="module")
def reports(tmp_path_factory):
    """Two nights written in order; night 2 has a generated partition and a trained model's metrics."""
    store = Store(str(tmp_path_factory.mktemp("root")))
    write_partition(store, NIGHTS[1])
    write_metrics(store, "img-gan", "v2")
    first, second = night(NIGHTS[0], fd=10.0), night(NIGHTS[1], fd=8.0)
    paths = [write_report(store, first, None), write_report(store, second, f"generated/date={NIGHTS[1]}")]
    return store, (first, second), paths


def svg(page: str, key: str) -> str:
    found = re.findall(rf'<svg [^>]*data-chart="{re.escape(html.escape(key))}".*?</svg>', page, flags=re.S)
    assert len(found) == 1, f"expected one chart {key!r}, found {len(found)}"
    return found[0]


def test_report_embeds_samples_trends_and_losses_and_stays_offline(reports):
    store, (first, second), paths = reports
    assert paths == [store.display("reports", f"run_date={d}", "index.html") for d in NIGHTS]
    page = store.read_bytes("reports", f"run_date={NIGHTS[1]}", "index.html").decode()

    grids = dict(re.findall(r'<img [^>]*data-label="([^"]+)"[^>]*src="data:image/png;base64,([^"]+)"', page))
    assert sorted(grids) == sorted(COLOURS)  # one grid per label of the image model
    for label, b64 in grids.items():
        im = np.asarray(Image.open(io.BytesIO(base64.b64decode(b64))).convert("RGB"))
        assert (np.all(im == COLOURS[label], axis=-1)).sum() > 0 and im.shape[1] > 3 * im.shape[0]  # 4 tiles in a row
        assert not any(np.all(im == c, axis=-1).any() for other, c in COLOURS.items() if other != label)

    for prompt, texts in PROMPTS.items():
        shown = [t for t in texts if f"<pre>{html.escape(t)}</pre>" in page]
        assert shown == texts[:5], prompt  # at most 5 texts per prompt, in file order, HTML-escaped
    assert "<script" not in page and "<b>bold" not in page

    assert svg(page, "img-gan/fd").count('class="point"') == 2  # both nights' fd, x = their run dates
    assert NIGHTS[0] in svg(page, "img-gan/fd") and NIGHTS[1] in svg(page, "img-gan/fd")
    assert svg(page, "img-gan/augmentation_lift").count('class="point"') == 2
    first_page = store.read_bytes("reports", f"run_date={NIGHTS[0]}", "index.html").decode()
    assert svg(first_page, "img-gan/fd").count('class="point"') == 1  # a single night still gets its chart
    losses = svg(page, "loss:img-gan")
    assert "<polyline" in losses and "val_loss_d" in losses and "loss_g" in losses and "d_real" not in losses
    assert "No generated rows" in first_page and "loss:txt-gpt" not in page  # no metrics.parquet: no chart

    assert "http://" not in page and "https://" not in page and "src=\"data:" in page
    assert svg(page, "seconds per stage").count("<rect") == 1 + len(second["stages"])
    for d, n in zip(NIGHTS, (first, second)):
        assert store.read_json("reports", f"run_date={d}", "report.json") == n


def test_failed_night_without_figures_still_writes_a_report(tmp_path):
    store = Store(str(tmp_path))
    failed = {"name": "report-test", "run_date": "2026-11-21", "status": "failed", "reason": "preprocess <crashed>",
              "preprocess": None, "models": None, "generate": None, "gate": None, "augmentation_lift": None}
    write_report(store, failed, "generated/_staging/missing")
    page = store.read_bytes("reports", "run_date=2026-11-21", "index.html").decode()
    assert 'class="badge bad">failed<' in page and "preprocess &lt;crashed&gt;" in page
    assert headline(failed)[1] == [] and "failed" in headline(failed)[0]


def test_report_renders_in_headless_chromium_without_network(reports, tmp_path):
    if not os.path.exists(CHROMIUM):
        pytest.fail("chromium is not installed: run `make test`, which installs Debian's chromium")
    store, _, paths = reports
    shot = tmp_path / "shot.png"
    subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                    "--disable-background-networking", "--disable-component-update", "--disable-sync",
                    "--hide-scrollbars", "--proxy-server=127.0.0.1:9", "--host-resolver-rules=MAP * ~NOTFOUND",
                    f"--user-data-dir={tmp_path / 'profile'}", "--window-size=1200,2400", f"--screenshot={shot}",
                    f"file://{paths[1]}"], capture_output=True, timeout=120, check=True)
    assert shot.exists(), "chromium wrote no screenshot"
    im = np.asarray(Image.open(shot).convert("RGB")).astype(int)
    packed = im[..., 0] << 16 | im[..., 1] << 8 | im[..., 2]  # one int per colour
    assert im.shape[:2] == (2400, 1200) and im.std() > 20
    assert len(np.unique(packed)) > 50
    for label, colour in COLOURS.items():  # each label's sample grid was decoded and drawn
        ys, xs = np.nonzero(np.all(np.abs(im - colour) <= 8, axis=-1))
        assert len(ys) > 1000, f"grid of {label} not rendered"
        region = im[ys.min():ys.max() + 1, xs.min():xs.max() + 1]
        assert len(np.unique(packed[ys.min():ys.max() + 1, xs.min():xs.max() + 1])) >= 2 and region.std() > 50


def test_headline_rows_follow_the_gate_checks(reports):
    _, (_, second), _ = reports
    refused = night(NIGHTS[1], fd=8.0, status="refused")
    for n in (second, refused):
        markdown, rows = headline(n)
        checks = n["gate"]["checks"]
        assert [{k: r[k] for k in ("model", "metric", "value", "bound", "passed")} for r in rows[:len(checks)]] == \
               [{k: c[k] for k in ("model", "metric", "value", "bound", "passed")} for c in checks]
        assert all(set(r) == {"model", "metric", "value", "baseline", "bound", "passed"} for r in rows)
        assert rows[0]["baseline"] == 9.0 and rows[1]["baseline"] is None
        assert rows[len(checks):] == [{"model": "img-gan", "metric": "augmentation_lift", "value": 0.05,
                                       "baseline": None, "bound": None, "passed": None}]
        assert f"status **{n['status']}**" in markdown and f"reports/run_date={NIGHTS[1]}/index.html" in markdown
        assert markdown.count("\n| img-gan |") == len(IMAGE_METRICS) + 1
    assert "reason: fd above bound" in headline(refused)[0] and "| fd | 8 | 9 | 12 | **no** |" in headline(refused)[0]


@pytest.mark.parametrize("credentials, shown", [
    ({"signed": True, "signer": "Team Signer", "algorithm": "es256", "development": False, "timestamped": True},
     "<p>Content Credentials: C2PA, signed by Team Signer (es256)</p>"),
    ({"signed": True, "signer": "aigc-pipeline development signer (vm)", "algorithm": "es256", "development": True,
      "timestamped": False}, '<p class="fail">Content Credentials: C2PA, signed by aigc-pipeline development signer '
                             "(vm) (es256): a DEVELOPMENT chain, UNTRUSTED"),
    ({"signed": False}, '<p class="fail">Content Credentials: UNSIGNED (signing.enabled: false)'),
])
def test_the_report_says_who_signed_the_night_and_flags_untrusted_or_unsigned_output(tmp_path, credentials, shown):
    store = Store(str(tmp_path))
    n = night("2026-11-22", fd=8.0)
    n["generate"]["credentials"] = credentials
    write_report(store, n, None)
    assert shown in store.read_bytes("reports", "run_date=2026-11-22", "index.html").decode()
