"""The contamination guard ignores phrases common in ordinary text and still catches planted copies (issue 16)."""

from __future__ import annotations

import random
import string

from tell.data import contamination
from tell.data.records import Record

from conftest import WORDS

BOILERPLATE = "I'm sorry, as an AI language model, I don't have personal opinions or feelings about that."

QUOTE = "It does not do to dwell on dreams and forget to live, said the old headmaster to the boy."


def _text(rng: random.Random, k: int) -> str:
    return " ".join(rng.choices(WORDS, k=k)) + ". " + " ".join(rng.choices(WORDS, k=k)) + "?"


def test_shared_boilerplate_is_not_contamination_but_planted_copies_are():
    rng = random.Random(3)
    # Train and eval are disjoint, but many examples of both share boilerplate (and one a common quote).
    train = [Record(prompt=_text(rng, 12), response=BOILERPLATE + " " + _text(rng, 10)) for _ in range(60)]
    train.append(Record(prompt=_text(rng, 12), response=QUOTE + " " + _text(rng, 10)))
    # Two eval items with the boilerplate: too few to be the eval set's template, so only the new rules apply.
    evals = [Record(prompt=_text(rng, 12), response=BOILERPLATE + " " + _text(rng, 10), row=i + 1) for i in range(2)]
    evals += [Record(prompt=_text(rng, 12), response=QUOTE + " " + _text(rng, 10), row=5)]
    evals += [Record(prompt=_text(rng, 15), response=_text(rng, 8), row=i + 6) for i in range(25)]
    clean = contamination.check({"e": evals}, train, None)[0]
    assert (clean["exact_overlap"], clean["ngram13_overlap"]) == (0, 0), clean
    assert clean["boilerplate_ngrams_ignored"] > 0

    # Planted copies of eval items, as a careless or hostile pipeline would leave them: each is still caught.
    strip = str.maketrans("", "", string.punctuation)
    planted = {
        6: lambda r: Record(prompt=r.prompt, response=r.response),
        7: lambda r: Record(prompt="  " + r.prompt.upper() + "\n", response=r.response),
        8: lambda r: Record(prompt=r.prompt.translate(strip), response=r.response.translate(strip)),  # punctuation
        9: lambda r: Record(prompt="Answer this question: " + r.prompt, response="something else"),
        10: lambda r: Record(prompt="q", response=r.prompt + " " + r.response),
        1: lambda r: Record(prompt=r.prompt, response=r.response),  # an item with boilerplate in it, copied
        5: lambda r: Record(prompt=r.prompt.translate(strip), response=r.response.translate(strip)),
        # a partial copy: the item's opening words only (fewer than the run and share rules need), another answer
        11: lambda r: Record(prompt=" ".join(r.prompt.split()[:14]), response="an answer from elsewhere"),
    }
    by_row = {r.row: r for r in evals}
    leaked = train + [f(by_row[row]) for row, f in planted.items()]
    report = contamination.check({"e": evals}, leaked, None)[0]
    assert sorted(report["ngram13_rows"]) == sorted(planted), report
    # The same 14 words taken from inside an item (not its opening) are a shared phrase, not a copy.
    inside = Record(prompt="q", response=" ".join(by_row[12].prompt.split()[1:15]) + " and more")
    assert contamination.check({"e": evals}, train + [inside], None)[0]["ngram13_overlap"] == 0


def test_punctuation_is_deleted_before_words_are_compared():
    assert contamination._words("Don't stop -- well-known U.S. rules!") == contamination._words(
        "Dont stop  wellknown US rules")
