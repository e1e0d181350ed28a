"""Exact token budgets, nested subsets and the extensive shuffle.

Every random choice here is a sort by a keyed hash: `blake2b(seed, purpose, content)`. That makes the
order independent of file order, identical on every machine and Python version, and gives two
properties the experiments rely on:

* nested budgets: a budget's subset is a prefix of one fixed order, so with the same seed the subset for
  a smaller budget is a prefix of the subset for a larger one;
* nested mixtures: the shuffle sorts records by their own key, so the mixture for a smaller general
  budget is a subsequence of the one for a larger budget (the points of a scaling curve differ only in
  the data added, not in the order of what they share).
"""

from __future__ import annotations

import hashlib
import statistics
from collections import Counter
from dataclasses import dataclass, replace
from typing import Sequence

from tqdm.auto import tqdm

from tell.data.records import Record, render_text
from tell.data.tokens import TokenCounter
from tell.errors import TellError


def order_key(seed: int, purpose: str, key: str) -> bytes:
    return hashlib.blake2b(f"{seed}\0{purpose}\0{key}".encode(), digest_size=16).digest()


def seeded_order(records: Sequence[Record], seed: int, purpose: str) -> list[Record]:
    """A uniform random permutation of `records`, fixed by (seed, purpose) and the records' content."""
    return sorted(records, key=lambda r: order_key(seed, purpose, f"{r.key}#{r.repeat}"))


def dedup(records: Sequence[Record], seen: set[str] | None = None) -> tuple[list[Record], int]:
    """Drop exact duplicates (same system, history, prompt and response), keeping the first.
    Records whose key is in `seen` are dropped too; `seen` is updated with the kept keys."""
    seen = set() if seen is None else seen
    kept = []
    for rec in records:
        k = rec.key
        if k not in seen:
            seen.add(k)
            kept.append(rec)
    return kept, len(records) - len(kept)


# The most times --allow-repeat walks a pool: past it the "mixture" is a pool repeated for epochs on end (and a
# budget such as --ratio 1e9 would take hours and all memory building it), so it is refused instead. (Tiny demo
# pools are repeated some hundreds of times.)
MAX_REPEAT = 10_000


@dataclass
class Selection:
    records: list[Record]
    tokens: int
    budget: int
    unique_examples: int     # distinct examples among `records`
    unique_tokens: int
    tokens_counted: int      # tokens the counter had to compute (work done, for throughput)
    pool_exhausted: bool
    dropped: Counter

    @property
    def repeat_factor(self) -> float:
        return self.tokens / self.unique_tokens if self.unique_tokens else 1.0


class _CountedInOrder:
    """The pool's records in seeded order with `tokens` set, counted lazily in chunks sized to what the
    budget still needs (so a small budget tokenizes a small part of a large pool). Too-long records are
    refused, or dropped and counted with `skip_invalid`. Records over the training length `train_limit`
    (N, policy) are refused (`refuse`) or dropped and counted (`drop`); `keep` lets them through."""

    def __init__(self, order: Sequence[Record], counter: TokenCounter, budget: int, max_length: int | None,
                 skip_invalid: bool, dropped: Counter, train_limit: tuple[int | None, str] = (None, "keep"),
                 anchor=None):
        self.order, self.counter, self.max_length, self.skip_invalid = order, counter, max_length, skip_invalid
        self.anchor = anchor  # lengths are checked as trained (anchored); `tokens` stays the record's own
        self.train_limit = train_limit
        self.remaining, self.counted, self.dropped = budget, 0, dropped

    def __iter__(self):
        i, avg = 0, 64.0
        while i < len(self.order):
            chunk = self.order[i:i + min(int(self.remaining / avg * 1.1) + 16, 8192)]
            i += len(chunk)
            counts = self.counter.count([render_text(r) for r in chunk])
            self.counted += sum(counts)
            avg = max(self.counted / i, 1.0)
            lengths = self.counter.count([render_text(self.anchor.apply(r)) for r in chunk]) if self.anchor else counts
            for rec, own, n in zip(chunk, counts, lengths):
                if self.max_length is not None and n > self.max_length:
                    if not self.skip_invalid:
                        raise TellError(f"the example has {n} tokens; expected at most {self.max_length} "
                                        "(--max-length; --skip-invalid drops such rows)", file=rec.origin, line=rec.row)
                    self.dropped["too_long"] += 1
                    continue
                limit, policy = self.train_limit
                if limit is not None and n > limit and policy != "keep":
                    if policy == "refuse":
                        raise TellError(f"the example has {n} tokens; training cuts examples over {limit} "
                                        "(--train-max-length; --length-policy drop leaves such examples out, keep "
                                        "keeps them)", file=rec.origin, line=rec.row)
                    self.dropped["over_train_max_length"] += 1
                    continue
                rec.tokens = own  # a cache of a derived value; the content (and `key`) is unchanged
                yield rec


def _take_closest(records: _CountedInOrder, budget: int, label: str, progress: bool, take_all: bool
                  ) -> tuple[list[Record], list[Record], int, bool]:
    """(chosen, every valid record seen, their tokens, pool ran out first): whole examples in order while
    taking the next one brings the total closer to the budget than stopping before it."""
    chosen: list[Record] = []
    valid: list[Record] = []   # examples that passed the length check, in order (reused for repeats)
    total, exhausted = 0, budget > 0
    with tqdm(total=None if take_all else budget, desc=f"count {label} tokens", unit=" tok", unit_scale=True,
              disable=None if progress else True, leave=False) as bar:
        for rec in records:
            valid.append(rec)
            if abs(total + rec.tokens - budget) > budget - total:
                return chosen, valid, total, False
            chosen.append(rec)
            total += rec.tokens
            records.remaining = budget - total
            bar.update(rec.tokens)
            if total >= budget:
                return chosen, valid, total, False
    return chosen, valid, total, exhausted


def _repeat(valid: list[Record], chosen: list[Record], total: int, budget: int) -> int:
    """Walk the valid records again, in the same order, as marked copies, while that brings the total
    closer to the budget; returns the new total (`chosen` is extended in place)."""
    copy = 0
    while True:
        copy += 1
        for rec in valid:
            n = max(rec.tokens or 0, 1)
            if abs(total + n - budget) > abs(budget - total):
                return total
            chosen.append(replace(rec, repeat=copy))
            total += n


def select_budget(pool: Sequence[Record], budget: int | None, counter: TokenCounter, *, seed: int, purpose: str,
                  label: str, max_length: int | None = None, skip_invalid: bool = False,
                  train_limit: tuple[int | None, str] = (None, "keep"),
                  allow_repeat: bool = False, progress: bool = True, anchor=None) -> Selection:
    """Whole examples, in the seeded order of `pool`, whose token total is closest to `budget`.

    Only as many examples as the budget needs are tokenized. With `allow_repeat`, a pool that is too
    small is walked again in the same order (copies are marked with `repeat`). `budget=None` takes every
    usable example. With `anchor`, the length checks see each example with the anchor it is trained with;
    the budget counts its own tokens.
    """
    take_all = budget is None
    budget = 1 << 62 if take_all else budget
    if budget < 0:
        raise TellError(f"the {label} token budget must be >= 0, got {budget}")
    dropped: Counter = Counter()
    records = _CountedInOrder(seeded_order(pool, seed, purpose) if budget > 0 else [], counter, budget,
                              max_length, skip_invalid, dropped, train_limit, anchor)
    chosen, valid, total, exhausted = _take_closest(records, budget, label, progress, take_all)
    if not chosen and valid and budget > 0 and not take_all:
        shortest = min(counter.count([render_text(r) for r in pool]))
        first = valid[0].tokens
        raise TellError(f"no whole {label} example fits the {label} budget of {budget:,} tokens: budgets take whole "
                        f"examples in seeded order while that comes closer to the budget, and the first has "
                        f"{first:,} tokens (the shortest of the {len(pool):,} {label} examples has {shortest:,}); "
                        f"raise the budget to at least {(first + 1) // 2:,} or give shorter examples")
    unique_examples, unique_tokens = len(chosen), total
    # A pool that ran out a fraction of an example short met the budget as closely as whole examples can.
    mean = total / len(chosen) if chosen else 0.0
    exhausted = exhausted and budget - total > mean and not take_all
    if take_all:
        budget = total
    if exhausted:
        if not allow_repeat:
            raise TellError(f"the {label} data hold only {total:,} tokens in {len(chosen):,} usable examples "
                            f"but the budget asks for {budget:,}; lower the budget or pass --allow-repeat")
        if not valid:
            raise TellError(f"the {label} data hold no usable example")
        if budget > MAX_REPEAT * total:  # walked as copies, it would hold (or hang on) budget / total copies
            raise TellError(f"the {label} budget of {budget:,} tokens asks the {label} data ({total:,} tokens in "
                            f"{len(chosen):,} usable examples) to repeat {budget / total:,.0f}x; --allow-repeat "
                            f"repeats a pool at most {MAX_REPEAT:,}x: lower the budget or --ratio, or give more data")
        total = _repeat(valid, chosen, total, budget)
    return Selection(records=chosen, tokens=total, budget=budget, unique_examples=unique_examples,
                     unique_tokens=unique_tokens, tokens_counted=records.counted, pool_exhausted=exhausted,
                     dropped=dropped)


def shuffle(records: Sequence[Record], seed: int) -> list[Record]:
    """The extensive shuffle: one seeded uniform permutation of the whole union."""
    return seeded_order(records, seed, "shuffle")


def spread(mixture: Sequence[Record], source: str = "task") -> dict:
    """Where `source` examples sit in the mixture: first/last position, median and max gap between
    neighbours, and the gap a uniform spread would give. Clumped task data show as a small median gap
    with a huge max gap."""
    pos = [i for i, r in enumerate(mixture) if r.source == source]
    n = len(mixture)
    if not pos:
        return {"count": 0, "mixture_examples": n}
    gaps = [b - a for a, b in zip(pos, pos[1:])]
    return {
        "count": len(pos),
        "mixture_examples": n,
        "first_position": pos[0],
        "last_position": pos[-1],
        "median_gap": statistics.median(gaps) if gaps else None,
        "max_gap": max(gaps) if gaps else None,
        "uniform_gap": round(n / len(pos), 3),
    }
