"""Rows picked by a hash of (seed, id): the same rows whatever their order, per label on request."""

from jobs.data.selection import pick


def test_the_same_ids_pick_the_same_rows_in_any_order_and_per_label():
    ids = [f"id-{i}" for i in range(40)]
    labels = ["a" if i % 2 else None for i in range(40)]
    mask = pick(ids, 7, 5)
    chosen = {i for i, m in zip(ids, mask) if m}
    assert len(chosen) == 5 and chosen == {i for i, m in zip(ids[::-1], pick(ids[::-1], 7, 5)) if m}
    assert chosen != {i for i, m in zip(ids, pick(ids, 8, 5)) if m}  # another seed, other rows
    per = pick(ids, 7, {"a": 3, None: 2}, labels)
    assert sum(per[i] for i in range(40) if labels[i] == "a") == 3 and sum(per[i] for i in range(40) if labels[i] is None) == 2
    assert not pick(ids, 7, {"b": 4}, labels).any() and not pick([], 7, 3).any()
