"""Does generated text consist of words? The gate's ``real_words`` and ``real_texts`` figures.

A language model that has learnt spelling but not vocabulary writes word-shaped noise ("The suple and
getering ..."): distinct n-grams and perplexity do not see it, a word list does. The list is one we did not make:
``wordfreq``'s large English list (321k words with their frequencies in web, subtitle, news and book text; its
data ships inside the wheel, so nothing is downloaded). English only: a team generating other languages leaves
the figure out of its gate bounds.
"""

from __future__ import annotations

import re
from typing import Sequence

WORD = re.compile(r"[^\W\d_]+(?:'[^\W\d_]+)*")  # a run of letters, with inner apostrophes ("isn't")
REAL_TEXT_SHARE = 0.8  # a text "reads as language" when at least this share of its words are real


def words(text: str) -> list[str]:
    """The lower-cased letter runs of ``text``: ``os.path.join(x)`` gives os, path, join, x; digits, underscores
    and punctuation split words and are not words themselves."""
    return WORD.findall(text.lower())


def word_validity(texts: Sequence[str], share: float = REAL_TEXT_SHARE) -> dict[str, float]:
    """``real_words``: the share of all words of ``texts`` found in wordfreq's English list; ``real_texts``: the
    share of texts (with at least one word) whose words are at least ``share`` real. Made-up words such as
    "getering" are the signature of a language model that has learnt spelling but not vocabulary."""
    from wordfreq import zipf_frequency  # its data ships inside the wheel: nothing is downloaded

    known: dict[str, bool] = {}
    real, total, good, judged = 0, 0, 0, 0
    for text in texts:
        ws = words(text)
        if not ws:
            continue
        hits = sum(known.setdefault(w, zipf_frequency(w, "en", wordlist="large") > 0) for w in ws)
        real, total, good, judged = real + hits, total + len(ws), good + (hits >= share * len(ws)), judged + 1
    return {"real_words": real / total if total else float("nan"),
            "real_texts": good / judged if judged else float("nan")}
