"""Budgets (closest, nested, lazy), repeats, the shuffle and the spread statistics."""

from __future__ import annotations

import pytest

from tell.data.mix import dedup, select_budget, shuffle, spread
from tell.data.records import Record, render_text
from tell.errors import TellError

from conftest import WORDS


class WordCounter:
    """One token per whitespace word; records how many texts it was asked to count."""

    def __init__(self):
        self.texts = 0

    def count(self, texts):
        self.texts += len(texts)
        return [len(t.split()) for t in texts]

    def describe(self):
        return {"kind": "words"}


def pool(n, source="general", words=5):
    import random

    rng = random.Random(n)
    return [Record(prompt=f"{source} {i} " + " ".join(rng.choices(WORDS, k=rng.randint(1, words))),
                   response="ok", source=source, origin="mem", row=i) for i in range(n)]


def test_budget_is_closest_whole_examples():
    p = pool(200)
    sel = select_budget(p, 300, WordCounter(), seed=1, purpose="g", label="general", progress=False)
    counts = [len(render_text(r).split()) for r in sel.records]
    assert sum(counts) == sel.tokens
    # No prefix of the same order is closer: one more or one fewer example is not better.
    assert all(r.tokens == c for r, c in zip(sel.records, counts))
    longer = select_budget(p, 100000, WordCounter(), seed=1, purpose="g", label="general",
                           allow_repeat=True, progress=False).records
    nxt = longer[len(sel.records)].tokens
    assert abs(sel.tokens - 300) <= abs(sel.tokens + nxt - 300)
    assert abs(sel.tokens - 300) <= abs(sel.tokens - counts[-1] - 300)


def test_nested_budgets_are_prefixes_and_seed_changes_order():
    p = pool(300)
    sels = [select_budget(p, b, WordCounter(), seed=7, purpose="g", label="g", progress=False).records
            for b in (50, 200, 800)]
    ids = [[r.uid() for r in s] for s in sels]
    assert ids[0] == ids[1][:len(ids[0])] and ids[1] == ids[2][:len(ids[1])]
    other = select_budget(p, 800, WordCounter(), seed=8, purpose="g", label="g", progress=False).records
    assert [r.uid() for r in other] != ids[2]
    # The order does not depend on the order of the input file.
    rev = select_budget(p[::-1], 800, WordCounter(), seed=7, purpose="g", label="g", progress=False).records
    assert [r.uid() for r in rev] == ids[2]


def test_only_what_the_budget_needs_is_tokenized():
    p, counter = pool(20000), WordCounter()
    sel = select_budget(p, 500, counter, seed=1, purpose="g", label="g", progress=False)
    assert len(sel.records) < 200 and counter.texts < 400


def test_pool_too_small_says_how_much_there_is_unless_repeat():
    p = pool(10)
    total = sum(len(render_text(r).split()) for r in p)
    with pytest.raises(TellError, match=f"hold only {total:,} tokens in 10 usable examples but the budget asks for 1,000"):
        select_budget(p, 1000, WordCounter(), seed=1, purpose="g", label="general", progress=False)
    sel = select_budget(p, 1000, WordCounter(), seed=1, purpose="g", label="general", allow_repeat=True,
                        progress=False)
    assert abs(sel.tokens - 1000) <= max(len(render_text(r).split()) for r in p)
    assert sel.unique_examples == 10 and sel.repeat_factor == pytest.approx(sel.tokens / total)
    assert len({r.uid() for r in sel.records}) == len(sel.records)  # copies get distinct ids


def test_budget_none_takes_all_and_zero_takes_none():
    p = pool(30)
    assert len(select_budget(p, None, WordCounter(), seed=1, purpose="t", label="t", progress=False).records) == 30
    assert select_budget(p, 0, WordCounter(), seed=1, purpose="t", label="t", progress=False).records == []


def test_max_length_error_or_drop():
    p = pool(50, words=30)
    with pytest.raises(TellError, match=r"mem:\d+: the example has \d+ tokens; expected at most 10"):
        select_budget(p, None, WordCounter(), seed=1, purpose="t", label="t", max_length=10, progress=False)
    sel = select_budget(p, None, WordCounter(), seed=1, purpose="t", label="t", max_length=10,
                        skip_invalid=True, progress=False)
    assert all(r.tokens <= 10 for r in sel.records)
    assert sel.dropped["too_long"] == 50 - len(sel.records) > 0


def test_dedup_counts_and_cross_source():
    a = pool(5, "task")
    b = pool(5, "general") + [Record(prompt=a[0].prompt, response=a[0].response, source="general")]
    seen: set[str] = set()
    kept_a, da = dedup(a + a[:2], seen)
    kept_b, db = dedup(b, seen)
    assert (len(kept_a), da, len(kept_b), db) == (5, 2, 5, 1)


def test_shuffle_is_uniform_and_mixtures_nest():
    task, general = pool(50, "task"), pool(5000)
    mix = shuffle(task + general, seed=3)
    s = spread(mix)
    assert s["count"] == 50 and s["mixture_examples"] == 5050
    # Uniform spread: first task example early, last late, no gap near the whole length.
    assert s["first_position"] < 1000 and s["last_position"] > 4000 and s["max_gap"] < 1500
    assert s["median_gap"] < 3 * s["uniform_gap"]
    # The mixture built with fewer general examples keeps the shared examples in the same order.
    small = shuffle(task + general[:1000], seed=3)
    keep = {r.uid() for r in small}
    assert [r.uid() for r in mix if r.uid() in keep] == [r.uid() for r in small]
    assert [r.uid() for r in shuffle(task + general, seed=4)] != [r.uid() for r in mix]


def test_spread_detects_clumping():
    clumped = pool(20, "task") + pool(2000)
    s = spread(clumped)
    assert s["first_position"] == 0 and s["last_position"] == 19 and s["median_gap"] == 1
