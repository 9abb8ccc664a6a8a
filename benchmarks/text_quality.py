"""Text recipes compared at the demo's budget, over several training seeds: does a reader recognise the output
as language?

Trains each recipe on the built-in English prose (CPython's pydoc topics, cleaned as ``preprocess`` cleans it,
exact duplicates dropped, a seeded 10% held out) in one process with torch alone and the step every trainer runs,
then samples the demo's request (3 prompts x 20 texts, 64 new tokens) and scores it: the share of words in
wordfreq's English list and of texts at least 80% real words (``jobs.gate.words.word_validity``),
distinct-2, copy rate (texts with more than half their shingles in the training texts), held-out perplexity.
The held-out paragraphs themselves are scored too, as the figure a person's text reaches.

    .venv/bin/python benchmarks/text_quality.py [--recipes ...] [--seeds 0 1 2] [--json out.json]
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from _results import save  # noqa: E402

import aigc_models  # noqa: E402
from aigc_models import quality as q  # noqa: E402
from aigc_models.text import train_bpe  # noqa: E402
from aigc_models.training import make_optimizers, optimizer_step  # noqa: E402

PROMPTS = ["The ", "A function ", "In Python, "]
PER_PROMPT = 20
GPT = {"n_layer": 2, "n_embd": 128, "block_size": 128}
VARIED = {"temperature": 1.0, "top_k": 0, "repetition_penalty": 1.5}  # the demo's sampler without its top-p


def gpt(vocab: int, epochs: int = 10, **sampler) -> tuple[str, dict, int, int, dict]:
    """A recipe: the demo's GPT with a ``vocab``-token BPE, ``epochs`` epochs of 32-document batches, ``sampler``."""
    return "gpt", {**GPT, "tokenizer": "bpe", "vocab_size": vocab}, epochs, 32, sampler


# recipe -> (family, model config, epochs, batch size, sampler settings); recipes differing only in sampling share
# their training
RECIPES: dict[str, tuple[str, dict, int, int, dict]] = {
    "gpt-bpe1024-noheal": gpt(1024, heal=False),
    "gpt-bpe1024": gpt(1024),
    "gpt-bpe2048-t1-rp1.3": gpt(2048, temperature=1.0, repetition_penalty=1.3),
    "gpt-bpe4096": gpt(4096),
    "gpt-bpe4096-t0.9": gpt(4096, temperature=0.9),
    "gpt-bpe4096-rp1.3": gpt(4096, repetition_penalty=1.3),
    "gpt-bpe4096-t1-rp1.3": gpt(4096, temperature=1.0, repetition_penalty=1.3),
    "gpt-bpe4096-e20-t1-rp1.3": gpt(4096, 20, temperature=1.0, repetition_penalty=1.3),
    "gpt-bpe4096-pure-rp1.3": gpt(4096, temperature=1.0, top_k=0, top_p=1.0, repetition_penalty=1.3),
    "gpt-bpe4096-p0.98-rp1.5": gpt(4096, **VARIED, top_p=0.98),
    "gpt-bpe4096-p0.95-rp1.5": gpt(4096, **VARIED, top_p=0.95),  # the demo's
    "gpt-bpe4096-t0.9-p0.98-rp1.5": gpt(4096, **{**VARIED, "temperature": 0.9}, top_p=0.98),
    "gpt-bpe4096-t0.95-p0.98-rp1.5": gpt(4096, **{**VARIED, "temperature": 0.95}, top_p=0.98),
    "gpt-bpe8192-p0.98-rp1.5": gpt(8192, **VARIED, top_p=0.98),
}


def corpus() -> tuple[list[str], list[str]]:
    """Train and held-out paragraphs, cleaned with the preprocessing defaults."""
    from jobs.data.builtins import BUILTINS
    from jobs.data.cleaning import Reject, normalise_text
    from jobs.data.spec import PreprocessSpec

    spec, kept = PreprocessSpec(), {}
    for text in BUILTINS["text-corpus"]()["text"]:
        try:
            kept.setdefault(normalise_text(text, spec), None)
        except Reject:
            pass
    docs = list(kept)
    order = np.random.default_rng(12345).permutation(len(docs))
    n_val = int(round(len(docs) * 0.1))
    return [docs[i] for i in order[n_val:]], [docs[i] for i in order[:n_val]]


def train(recipe: str, seed: int, docs: list[str]) -> tuple:
    family, cfg, epochs, bs, _ = RECIPES[recipe]
    started = time.perf_counter()
    if cfg.get("tokenizer") == "bpe":
        cfg = {**cfg, "tokenizer_json": train_bpe(docs, cfg["vocab_size"])}
    torch.manual_seed(seed)
    model = aigc_models.build(family, cfg)
    opts, scheds = make_optimizers(model, total_steps=epochs * -(-len(docs) // bs))
    gen, arr = torch.Generator().manual_seed(seed), np.array(docs, dtype=object)
    model.train()
    for _ in range(epochs):
        order = torch.randperm(len(docs), generator=gen).numpy()
        for s in range(0, len(order), bs):
            batch = model.make_batch({"text": arr[order[s:s + bs]]})
            optimizer_step(model, model, opts, scheds, [batch], 1.0, {"device_type": "cpu", "enabled": False})
    return model.eval(), time.perf_counter() - started


def figures(texts: list[str], reference: np.ndarray) -> dict[str, float]:
    judged = [o for o in (q.overlap(t, reference) for t in texts) if o is not None]
    from jobs.gate.words import word_validity

    return {**word_validity(texts), "distinct_2": q.distinct_n(texts, 2),
            "copy_rate": float(np.mean([o > 0.5 for o in judged])) if judged else 0.0}


def evaluate(recipe: str, model, reference: np.ndarray, val: list[str]) -> tuple[dict, list[str]]:
    conditions = [p for p in PROMPTS for _ in range(PER_PROMPT)]
    started = time.perf_counter()
    texts = model.sample(conditions, seeds=list(range(len(conditions))), max_new_tokens=64, **RECIPES[recipe][4])
    seconds = time.perf_counter() - started
    new = [t[len(p):] for t, p in zip(texts, conditions)]
    return {**figures(new, reference), "perplexity": q.perplexity(model, val[:256]),
            "sample_seconds": round(seconds, 2)}, texts


def summary(rows: list[dict]) -> list[dict]:
    out = []
    for recipe in dict.fromkeys(r["recipe"] for r in rows):
        runs = [r for r in rows if r["recipe"] == recipe]
        line = {"recipe": recipe, "seeds": len(runs)}
        for key in ("real_words", "real_texts", "distinct_2", "copy_rate", "perplexity", "train_seconds"):
            vals = [r[key] for r in runs if key in r]
            if vals:
                line[key] = f"{statistics.fmean(vals):.3f}" + (f"±{statistics.pstdev(vals):.3f}" if len(vals) > 1 else "")
        out.append(line)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--recipes", nargs="+", default=list(RECIPES), choices=list(RECIPES))
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--json", default="benchmarks/results/text_quality.json")
    args = p.parse_args()
    docs, val = corpus()
    reference = q.reference_shingles(docs)
    held_out = {"recipe": "held-out paragraphs", **figures([" ".join(v.split()[:40]) for v in val[:60]], reference)}
    print(held_out, flush=True)
    rows, samples, trained = [], {}, {}
    for recipe in args.recipes:
        for seed in args.seeds:
            key = (repr(RECIPES[recipe][:4]), seed)  # recipes that differ only in sampling share the training
            if key not in trained:
                trained[key] = train(recipe, seed, docs)
            model, seconds = trained[key]
            row, texts = evaluate(recipe, model, reference, val)
            rows.append({"recipe": recipe, "seed": seed, "train_seconds": round(seconds, 1), **row})
            samples[f"{recipe}/{seed}"] = texts[::PER_PROMPT // 2]
            print({k: round(v, 4) if isinstance(v, float) else v for k, v in rows[-1].items()}, flush=True)
            print("   " + "\n   ".join(repr(t) for t in texts[::PER_PROMPT][:3]), flush=True)
    from models import table as print_table

    print_table("text recipes (mean ± sd over seeds)", [held_out] + summary(rows))
    save({"host": platform.node(), "torch": torch.__version__, "recipes": {k: RECIPES[k] for k in args.recipes},
          "held_out": held_out, "runs": rows, "summary": summary(rows), "samples": samples}, args.json)


if __name__ == "__main__":
    main()
