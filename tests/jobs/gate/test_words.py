"""The text gate's word-validity figures, against wordfreq's English list."""

from jobs.gate.words import word_validity, words


def test_word_validity_counts_words_of_an_english_list_we_did_not_make():
    assert words("The __init__() method isn't os.path 3.14") == ["the", "init", "method", "isn't", "os", "path"]
    v = word_validity(["The function returns a value.", "The suple and getering of zorblax", "  3.14 ... "])
    assert v["real_words"] == (5 + 3) / (5 + 6)  # suple, getering, zorblax are not words; the third text has none
    assert v["real_texts"] == 0.5  # one of the two texts with words is at least 80% real
    assert word_validity([])["real_words"] != word_validity([])["real_words"]  # NaN: nothing to judge
