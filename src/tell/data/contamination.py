"""Contamination guard: how many eval examples overlap the training mixture.

Two checks, both insensitive to the anchor and to whitespace and case:
* exact: the eval prompt equals a mixture prompt;
* 13-gram: the eval example (prompt + reference) shares a 13-word sequence with a mixture example.

Prompt templates shared by a whole eval set (Halu-CoT-JSON's long instruction, say) would make every
item "overlap" any training data built with the same template, so 13-grams that occur in more than
`TEMPLATE_SHARE` of the eval examples are treated as template: the words they cover are cut out (of eval
and mixture texts alike) before the content 13-grams are compared. Their number is reported.
"""

from __future__ import annotations

import re
from collections import Counter
from typing import Sequence

from tell.data.anchor import Anchor
from tell.data.records import Record

N = 13
TEMPLATE_SHARE = 0.1
_WORD = re.compile(r"\w+", re.UNICODE)


def _norm(text: str) -> str:
    return " ".join(text.split()).lower()


def _words(text: str) -> list[str]:
    return _WORD.findall(text.lower())


def _grams(words: list[str], template: set[int] | None = None, n: int = N) -> set[int]:
    """Hashes of the n-grams of `words`; with `template`, of the n-grams left once the words covered by a
    template n-gram are cut out (n-grams never span a cut)."""
    grams = [hash(tuple(words[i:i + n])) for i in range(len(words) - n + 1)]
    if not template:
        return set(grams)
    covered = [False] * len(words)
    for i, g in enumerate(grams):
        if g in template:
            covered[i:i + n] = [True] * n
    out: set[int] = set()
    start = 0
    for end in range(len(words) + 1):
        if end == len(words) or covered[end]:
            seg = words[start:end]
            out.update(hash(tuple(seg[i:i + n])) for i in range(len(seg) - n + 1))
            start = end + 1
    return out


def _unanchored(text: str, anchor: Anchor | None) -> str:
    return anchor.strip(text) if anchor is not None else text


def check(eval_sets: dict[str, Sequence[Record]], mixture: Sequence[Record], anchor: Anchor | None) -> list[dict]:
    """One report per eval set: examples, exact and 13-gram overlaps, and the first overlapping rows."""
    prompts = {_norm(_unanchored(r.prompt, anchor)) for r in mixture}
    reports = []
    for name, items in eval_sets.items():
        item_words = [_words(_unanchored(r.prompt, anchor) + "\n" + r.response) for r in items]
        df = Counter(g for words in item_words for g in _grams(words))
        limit = max(2, TEMPLATE_SHARE * len(items))
        template = {g for g, c in df.items() if c > limit}
        item_grams = [_grams(words, template) for words in item_words]
        wanted = set().union(*item_grams)
        # Stream the mixture once, collecting only the n-grams the eval set asks about.
        hits: set[int] = set()
        for r in mixture:
            hits |= _grams(_words(_unanchored(r.prompt, anchor) + "\n" + r.response), template) & wanted
        exact = [r.row for r in items if _norm(_unanchored(r.prompt, anchor)) in prompts]
        ngram = [r.row for r, grams in zip(items, item_grams) if grams & hits]
        reports.append({"eval": name, "examples": len(items), "exact_overlap": len(exact),
                        f"ngram{N}_overlap": len(ngram), "template_ngrams_ignored": len(template),
                        "exact_rows": exact[:20], f"ngram{N}_rows": ngram[:20]})
    return reports
