"""Contamination guard: how many eval examples overlap the training mixture.

Two checks, both insensitive to the anchor and to whitespace and case:
* exact: the eval prompt equals a mixture prompt;
* 13-gram: the eval example (prompt + reference) shares a 13-word sequence with a mixture example.

Prompt templates shared by a whole eval set (Halu-CoT-JSON's long instruction, say) would make every
item "overlap" any training data built with the same template, so 13-grams that occur in more than
`TEMPLATE_SHARE` of the eval examples are treated as template: the words they cover are cut out (of eval
and mixture texts alike) before the content 13-grams are compared. Their number is reported.

Ordinary text shares phrases too: boilerplate ("I'm sorry, as an AI language model, I don't have ..."),
quotes, jokes, textbook sentences. Two rules keep them from counting as contamination (Halu-CoT-JSON's
disjoint train and test had 94 of 1,506 items flagged on such phrases, none sharing a run over 19 words):
* 13-grams found in more than `boilerplate_limit(n)` distinct mixture examples are the mixture's own
  boilerplate and are ignored (a leaked item is in the mixture once, or a few times with its repeats);
* an item overlaps only when the words its shared 13-grams cover form a run of at least `MIN_RUN` words, or
  cover at least `MIN_SHARE` of its (non-template) words, or cover its opening (its first word after the
  template): a training text that starts as the item starts, for 13 words or more, is a partial copy (the first
  part of a prompt), while shared phrases sit inside items. A copied item shares all of its words.
  `benchmarks/contamination.py` measures false positives and planted partial copies on Halu-CoT-JSON
  (figures in benchmarks/RESULTS.md).
Words are compared lower-cased with punctuation deleted ("don't" = "dont"), so an item with its punctuation
stripped is still caught.
"""

from __future__ import annotations

import itertools
import re
from collections import Counter
from typing import Sequence

from tell.data.anchor import Anchor
from tell.data.records import Record

N = 13
TEMPLATE_SHARE = 0.1
MIN_RUN = 2 * N      # words in a row shared with one mixture text: beyond a shared phrase
MIN_SHARE = 0.6      # share of an item's content words covered by shared 13-grams
BOILERPLATE_MIN, BOILERPLATE_SHARE = 10, 0.01  # a 13-gram in more distinct mixture texts than both is boilerplate
_WORD = re.compile(r"\w+", re.UNICODE)
_PUNCT = re.compile(r"[^\w\s]", re.UNICODE)


def boilerplate_limit(n_texts: int) -> float:
    return max(BOILERPLATE_MIN, BOILERPLATE_SHARE * n_texts)


def _norm(text: str) -> str:
    return " ".join(text.split()).lower()


def _words(text: str) -> list[str]:
    return _WORD.findall(_PUNCT.sub("", text.lower()))


def _hashes(words: list[str], n: int = N) -> list[int]:
    """The hash of each n-gram of `words`, in order (the tuples made by zip, in C: the plan-time check of a sweep
    runs this over every task text once per eval set)."""
    return list(map(hash, zip(*[words[i:] for i in range(n)])))


def template_mask(words: list[str], template: set[int], n: int = N, grams: list[int] | None = None) -> list[bool]:
    """Per word: whether a template n-gram covers it (`grams`: `_hashes(words, n)`, when already computed)."""
    covered = [False] * len(words)
    if not template:
        return covered
    for i, g in enumerate(_hashes(words, n) if grams is None else grams):
        if g in template:
            covered[i:i + n] = [True] * n
    return covered


def template_grams(item_words: list[list[str]]) -> set[int]:
    """The eval set's template: n-grams in more than `TEMPLATE_SHARE` of its items (at least 3)."""
    df = Counter(g for words in item_words for g in _grams(words))
    limit = max(2, TEMPLATE_SHARE * len(item_words))
    return {g for g, c in df.items() if c > limit}


def _overlaps(words: list[str], template: set[int], shared: set[int], n: int = N) -> bool:
    """Whether the words covered by `shared` 13-grams (outside template words) make a run of `MIN_RUN`, cover
    `MIN_SHARE` of the item's content words, or cover its first content word."""
    grams = _hashes(words, n)
    in_template, covered = template_mask(words, template, n), [False] * len(words)
    for i, g in enumerate(grams):
        if g in shared and not any(in_template[i:i + n]):
            covered[i:i + n] = [True] * n
    run = longest = 0
    for c in covered:
        run = run + 1 if c else 0
        longest = max(longest, run)
    content = len(words) - sum(in_template)
    first = next((i for i, t in enumerate(in_template) if not t), None)  # the item's first own word
    return longest >= MIN_RUN or (content > 0 and sum(covered) >= MIN_SHARE * content) \
        or (first is not None and covered[first])


def _grams(words: list[str], template: set[int] | None = None, n: int = N) -> set[int]:
    """Hashes of the n-grams of `words`; with `template`, of the n-grams left once the words covered by a
    template n-gram are cut out (n-grams never span a cut)."""
    grams = _hashes(words, n)
    if not template or not template.intersection(grams):
        return set(grams)
    # the n-gram at i is kept when none of words i .. i+n-1 is covered (a running count of covered words)
    covered = list(itertools.accumulate(template_mask(words, template, n, grams), initial=0))
    return {g for i, g in enumerate(grams) if covered[i + n] == covered[i]}


def _unanchored(text: str, anchor: Anchor | None) -> str:
    return anchor.strip(text) if anchor is not None else text


def check(eval_sets: dict[str, Sequence[Record]], mixture: Sequence[Record], anchor: Anchor | None,
          rows: int | None = 20) -> list[dict]:
    """One report per eval set: examples, exact and 13-gram overlaps, and the first `rows` overlapping rows (None:
    all)."""
    prompts = {_norm(_unanchored(r.prompt, anchor)) for r in mixture}
    texts = {_unanchored(r.prompt, anchor) + "\n" + r.response for r in mixture}
    text_words = [_words(text) for text in texts]  # once, for every eval set
    reports = []
    for name, items in eval_sets.items():
        item_words = [_words(_unanchored(r.prompt, anchor) + "\n" + r.response) for r in items]
        template = template_grams(item_words)
        item_grams = [_grams(words, template) for words in item_words]
        wanted = set().union(*item_grams)
        # Stream the mixture once, counting in how many distinct texts each n-gram the eval set asks about is.
        found: Counter = Counter()
        for words in text_words:
            found.update(_grams(words, template) & wanted)
        limit = boilerplate_limit(len(texts))
        hits = {g for g, c in found.items() if c <= limit}
        exact = [r.row for r in items if _norm(_unanchored(r.prompt, anchor)) in prompts]
        ngram = [r.row for r, words, grams in zip(items, item_words, item_grams)
                 if grams & hits and _overlaps(words, template, grams & hits)]
        reports.append({"eval": name, "examples": len(items), "exact_overlap": len(exact),
                        f"ngram{N}_overlap": len(ngram), "template_ngrams_ignored": len(template),
                        "boilerplate_ngrams_ignored": len(found) - len(hits),
                        "exact_rows": exact[:rows], f"ngram{N}_rows": ngram[:rows]})
    return reports
