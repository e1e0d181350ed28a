"""python benchmarks/contamination.py [--items 30] [--seed 0]

The contamination guard (`tell.data.contamination`) on Halu-CoT-JSON, built from ../shared/data: false positives
on the disjoint train and test, and planted copies of test items in the training data caught. Writes its section
of benchmarks/RESULTS.md (between `<!-- contamination:begin -->` and `<!-- contamination:end -->`).

Planted copies, each of `--items` test items drawn with `--seed`: the whole item; the first two-thirds and the
first half of its prompt (split at spaces) with another answer. For a prefix, "own words" are the item's words
outside the test set's shared instruction (13-grams in more than 10% of the items): a prefix with fewer than
13 of them shares no 13-gram of the item's own with it, so no 13-gram check can catch it.
"""

from __future__ import annotations

import argparse
import datetime
import random
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from demo_results import REPO, commit, replace_block  # noqa: E402

BEGIN, END = "<!-- contamination:begin -->", "<!-- contamination:end -->"
SHARED = REPO.parent / "shared" / "data"


def own_words_in(prefix: str, item_words: list[str], template: set[int]) -> int:
    """How many of the item's own (non-template) words a prefix of its text holds."""
    from tell.data import contamination as C

    cut = C.template_mask(item_words, template)
    return sum(1 for i in range(min(len(C._words(prefix)), len(item_words))) if not cut[i])


def main(argv=None) -> int:
    from tell.data import contamination as C
    from tell.data.builders import build
    from tell.data.loading import load_records
    from tell.data.records import Record

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--items", type=int, default=30)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--results", type=Path, default=REPO / "benchmarks" / "RESULTS.md")
    a = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        build("halu-cot-json", tmp, source=str(SHARED))
        test = load_records(f"{tmp}/halu-cot-json/test.jsonl", source="task", progress=False).records
        train = load_records(f"{tmp}/halu-cot-json/train.jsonl", source="task", progress=False).records
    t0 = time.perf_counter()
    clean = C.check({"test": test}, train, None)[0]
    seconds = time.perf_counter() - t0
    words = [C._words(r.prompt + "\n" + r.response) for r in test]
    template = C.template_grams(words)
    picks = random.Random(a.seed).sample(range(len(test)), a.items)
    variants = {"whole item copied": lambda r: Record(prompt=r.prompt, response=r.response)}
    for name, frac in (("first two-thirds of the prompt", 2 / 3), ("first half of the prompt", 1 / 2)):
        variants[name] = lambda r, f=frac: Record(prompt=" ".join(r.prompt.split(" ")[:int(len(r.prompt.split(" ")) * f)]),
                                                  response="An answer written elsewhere.")
    rows = []
    for name, make in variants.items():
        planted = [make(test[i]) for i in picks]
        flagged = set(C.check({"test": test}, train + planted, None, rows=None)[0][f"ngram{C.N}_rows"])
        wanted = {test[i].row for i in picks}
        caught, others = len(wanted & flagged), len(flagged - wanted)
        catchable = sum(own_words_in(p.prompt, words[i], template) >= C.N for p, i in zip(planted, picks))
        rows.append(f"| {name} | {a.items} | {catchable} | {caught} | {others} |")
    block = [BEGIN, "## Contamination guard on Halu-CoT-JSON", "",
             f"Command: `python benchmarks/contamination.py --items {a.items} --seed {a.seed}` (Halu-CoT-JSON built from "
             f"../shared/data by `tell data build`). Commit {commit()}; written {datetime.date.today().isoformat()}.", "",
             f"Disjoint train ({len(train):,}) and test ({len(test):,}): {clean['exact_overlap']} exact and "
             f"{clean[f'ngram{C.N}_overlap']} 13-gram overlaps flagged ({clean['template_ngrams_ignored']:,} template "
             f"and {clean['boilerplate_ngrams_ignored']:,} boilerplate 13-grams ignored; {seconds:.1f} s).", "",
             "Planted copies of test items added to the training data (\"catchable\": copies holding 13 or more of the "
             "item's own words, outside the set's shared instruction; the rest share no 13-gram of the item's own):", "",
             "| planted copy | planted | catchable | caught | other items flagged |", "|---|---:|---:|---:|---:|",
             *rows, END]
    replace_block(a.results, block, BEGIN, END)
    print("\n".join(block[1:-1]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
