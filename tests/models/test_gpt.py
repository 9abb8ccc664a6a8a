"""The byte-level GPT with a tiny config on CPU: tokenizer, KV cache, learning, seeded sampling."""

import numpy as np
import torch

import aigc_models
from aigc_models.text import BOS, EOS, PAD, decode, encode


def tiny(**kw):
    return aigc_models.build("gpt", {"block_size": 32, "n_layer": 1, "n_head": 2, "n_embd": 16, **kw})


def test_tokenizer_round_trip_and_invalid_utf8():
    text = "Grüße, 世界!"
    assert decode(encode(text)) == text
    assert decode(encode("é")[:1]) == "\ufffd"  # half a character decodes, never raises


def test_make_batch_packs_documents_into_windows():
    m = tiny()
    b = m.make_batch({"text": np.array(["hello", "x" * 70])})
    tokens = b["tokens"]
    assert tokens.shape[1] == 33
    flat = tokens.flatten().tolist()
    assert flat[0] == BOS and flat[6] == EOS and flat.count(BOS) == 2
    assert flat[-1] == PAD  # the last window is padded, and PAD is ignored by the loss


def test_kv_cache_matches_full_forward():
    torch.manual_seed(0)
    m = tiny().eval()
    idx = torch.randint(0, 256, (2, 10))
    full, _ = m.logits(idx)
    prefix, cache = m.logits(idx[:, :6])
    steps = [prefix]
    for t in range(6, 10):
        out, cache = m.logits(idx[:, t:t + 1], cache)
        steps.append(out)
    assert torch.allclose(torch.cat(steps, dim=1), full, atol=1e-5)


def test_overfits_a_fixed_batch():
    torch.manual_seed(0)
    m = tiny()
    b = m.make_batch({"text": np.array(["the quick brown fox jumps over the lazy dog"] * 2)})
    opt = torch.optim.AdamW(m.parameters(), lr=3e-3)
    first = None
    for _ in range(60):
        loss, _ = m("model", b)
        opt.zero_grad()
        loss.backward()
        opt.step()
        first = first if first is not None else float(loss)
    assert float(loss) < first * 0.5


def test_seeded_sampling_is_repeatable_and_row_independent():
    m = tiny()
    prompts, seeds = ["The ", "A ", "The "], [1, 2, 3]
    together = m.sample(prompts, seeds, max_new_tokens=12)
    alone = [m.sample([p], [s], max_new_tokens=12)[0] for p, s in zip(prompts, seeds)]
    assert together == alone
    assert all(t.startswith(p) for t, p in zip(together, prompts))
    assert together[0] != together[2]  # same prompt, other seed


def test_sampler_settings_are_respected():
    m = tiny()
    greedy = m.sample(["ab"], [1], temperature=0, max_new_tokens=5)
    assert greedy == m.sample(["ab"], [2], temperature=0, max_new_tokens=5)  # greedy ignores the seed
    assert len(greedy[0]) <= 2 + 5  # each new byte decodes to at most one character
    long_prompt = "x" * 100  # longer than block_size: truncated to fit, not an error
    assert m.sample([long_prompt], [1], max_new_tokens=3)[0].startswith(long_prompt)


def test_bpe_tokenizer_round_trips_any_text_and_travels_in_the_checkpoint(tmp_path):
    import pytest

    from aigc_models.text import BPETokenizer, train_bpe

    corpus = ["Fresh bread every morning, from our ovens to your table."] * 50 + ["Crème brûlée et café."] * 20
    tok_json = train_bpe(iter(corpus), vocab_size=320)
    tok = BPETokenizer(tok_json)
    for text in ("Grüße, 世界! 🍞", "Fresh bread every morning", "", "  spaced\tout\n"):
        assert tok.decode(tok.encode(text)) == text  # byte fallback: never an unknown token
    assert len(tok.encode("Fresh bread every morning")) < len("Fresh bread every morning") / 2  # merges learned
    model = tiny(tokenizer="bpe", vocab_size=320, tokenizer_json=tok_json)
    assert model.tok_emb.num_embeddings == tok.vocab_size and 259 < tok.vocab_size <= 320  # fewer merges on a tiny corpus
    assert model.make_batch({"text": np.array(["Fresh bread"])})["tokens"][0, 0] == tok.bos
    path = tmp_path / "bpe.safetensors"
    aigc_models.save(model, path)
    assert aigc_models.load(path).sample(["Fresh "], [3]) == model.sample(["Fresh "], [3])
    with pytest.raises(ValueError, match="tokenizer 'bpe' needs tokenizer_json"):
        tiny(tokenizer="bpe")


def _bpe_model():
    from aigc_models.text import train_bpe

    corpus = ["The bread is fresh and the table is set for the morning."] * 40
    return tiny(tokenizer="bpe", vocab_size=300, tokenizer_json=train_bpe(iter(corpus), vocab_size=300))


def test_token_healing_lets_a_prompt_ending_in_a_space_continue_with_whole_words():
    """A BPE learns " bread" (with its space) as one token; a prompt "The " ends on a lone space token, after
    which only word pieces can follow. Healing drops that token and makes the first new one start with it."""
    m = _bpe_model()
    space = m.tokenizer.encode(" ")[0]
    assert m.tokenizer.encode("The ")[-1] == space  # the trailing space is a token of its own
    allowed = m._starting_with(" ")
    assert allowed[m.tokenizer.encode(" bread")[0]] and not allowed[m.tokenizer.encode("bread")[0]]
    healed = m.sample(["The ", "The "], [1, 2], max_new_tokens=6)
    raw = m.sample(["The ", "The "], [1, 2], max_new_tokens=6, heal=False)
    assert all(t.startswith("The ") for t in healed + raw)
    assert healed != raw  # the first token is drawn from another set
    batched = m.sample(["The ", "The "], [1, 2], max_new_tokens=6, batched=True)
    assert batched == healed  # the batched path heals the same way


def test_rows_recorded_without_heal_sample_as_before_it_existed():
    from aigc_models.text import LEGACY_SAMPLER

    m = _bpe_model()
    assert m.sampler_defaults()["heal"] is True and LEGACY_SAMPLER == {"heal": False}
    old_row = {k: v for k, v in m.sampler_defaults().items() if k not in ("heal", "repetition_penalty")}
    assert m.sample(["The "], [4], **{**LEGACY_SAMPLER, **old_row}) == m.sample(["The "], [4], **old_row, heal=False)


def test_repetition_penalty_lowers_a_repeated_tokens_logit_for_that_row_only():
    from aigc_models.text import _penalise

    logits = torch.tensor([2.0, -1.0, 0.5])
    out = _penalise(logits, [0, 1, 0], 2.0)
    assert out.tolist() == [1.0, -2.0, 0.5]  # positive halved, negative doubled, unseen untouched
    assert _penalise(logits, [0], 1.0) is logits
    m = tiny()
    free = m.sample(["ab", "ab"], [1, 2], max_new_tokens=20, temperature=0)
    penalised = m.sample(["ab", "ab"], [1, 2], max_new_tokens=20, temperature=0, repetition_penalty=3.0)
    assert penalised != free
    assert m.sample(["ab"], [2], max_new_tokens=20, temperature=0, repetition_penalty=3.0)[0] == penalised[1]


def test_a_model_carries_its_own_sampler_defaults_in_its_config(tmp_path):
    import pytest

    m = tiny(sampler={"temperature": 0, "repetition_penalty": 1.5})
    assert m.sampler_defaults()["temperature"] == 0 and m.sampler_defaults()["top_k"] == 40
    assert m.sample(["ab"], [1], max_new_tokens=6) == m.sample(["ab"], [2], max_new_tokens=6)  # greedy by default now
    aigc_models.save(m, tmp_path / "m.safetensors")
    assert aigc_models.load(tmp_path / "m.safetensors").sampler_defaults() == m.sampler_defaults()
    with pytest.raises(ValueError, match="sampler: unknown setting\\(s\\) temprature"):
        tiny(sampler={"temprature": 0.5})


def test_healing_masks_an_output_layer_padded_past_the_vocabulary():
    from aigc_models.text import _only

    allowed = torch.tensor([True, False, True])
    out = _only(torch.zeros(5), allowed)  # two padded logits beyond the tokenizer's three tokens
    assert out.tolist() == [0.0, float("-inf"), 0.0, float("-inf"), float("-inf")]
