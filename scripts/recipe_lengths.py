# python3 scripts/recipe_lengths.py examples/sweeps/is_en_gemma_7b.yaml
"""How long a sweep recipe's examples are, counted with the recipe's token counter (the paper's Llama-2
SentencePiece model in the paper recipes), so that the lengths the recipe sets are read, not guessed.

Prints, for the task training data as the tell cells train on it (anchor applied, text counted as `tell prepare`
counts it: system, turns, prompt and answer joined by newlines, no chat-template tokens), the longest example
and how many exceed the recipe's train.max_length; for each eval set, the longest reference answer and the
longest prompt as shown to the model (k-shot turns included, the anchor on task sets); and the lengths that
would fit them with the margins tell uses (train: x 1.15 + 64 for the template and another tokenizer's counts,
rounded up to 64; generation: `tell eval`'s default rule, x 1.25 + 16).

Built data sets the recipe names (data/NAME/...) are built from ../shared/data into a temporary folder when
they are not built yet. Hub ids (e.g. tatsu-lab/alpaca) are not read: the script says so.
"""

from __future__ import annotations

import argparse
import datetime
import math
import sys
import tempfile
from pathlib import Path


def _build_dir(spec, tmp: Path) -> Path:
    """Where the recipe's built sets are: its data_dir when it holds them, else a temporary build."""
    from tell.data.builders import BUILDERS, build
    from tell.errors import TellError

    names = {Path(p).parts[1] for p in [spec.task or "", *spec.general] if Path(p).parts[:1] == ("data",)
             and len(Path(p).parts) > 1}
    names |= {e.partition(":")[0] for e in [*spec.eval, *spec.task_eval, *spec.general_eval]}
    for name in sorted(n for n in names if n in BUILDERS):
        if not (Path(spec.data_dir) / name / "manifest.json").is_file():
            try:
                build(name, tmp)
            except TellError as e:  # not in ../shared/data and no network: say so, count the rest
                print(f"  {name}: cannot be built here ({e}): not counted")
        elif not (tmp / name).exists():
            (tmp / name).symlink_to(Path(spec.data_dir).resolve() / name)
    return tmp


def _local(path: str, data: Path) -> Path | None:
    p = Path(path)
    if p.parts[:1] == ("data",):
        p = data.joinpath(*p.parts[1:])
    return p if p.is_file() else None


def _training(spec, data: Path, counter, anchor, max_len: int) -> int:
    """Print the training data's lengths; return the longest example's tokens."""
    from tell.data.loading import load_records
    from tell.data.records import render_text

    longest = 0
    for label, paths in (("task", [spec.task] if spec.task else []), ("general", spec.general)):
        for path in paths:
            local = _local(path, data)
            if local is None:
                print(f"  {label} {path}: not a local file (a Hub id?): not counted")
                continue
            recs = load_records(str(local), source=label, progress=False).records
            bare = ""  # the task's tokens without the anchor: what sft and tell-no-anchor cells count
            if label == "task" and anchor:
                bare = f" ({sum(counter.count([render_text(r) for r in recs])):,} without the anchor)"
                recs = [anchor.apply(r) for r in recs]
            n = counter.count([render_text(r) for r in recs])
            longest = max(longest, max(n))
            print(f"  {label} {path}: {len(n):,} examples, {sum(n):,} tokens{bare}, longest {max(n):,} tokens"
                  f"{' (anchor applied)' if label == 'task' and anchor else ''}, {sum(x > max_len for x in n):,} "
                  f"over train.max_length {max_len:,} ({sum(x > 1024 for x in n):,} over tell train's default 1,024)")
    return longest


def _eval_sets(spec, data: Path, counter, anchor) -> int:
    """Print each eval set's reference and prompt lengths; return the longest reference's tokens."""
    from tell.eval.config import EvalConfig
    from tell.eval.run import resolve_set, set_inputs

    cfg = EvalConfig(data_dir=str(data), limit=spec.eval_limit)
    longest = 0
    # roles as the sweep's cells give them: eval sets keep their data's, task_eval / general_eval are forced
    for forced, names in ((None, spec.eval), ("task", spec.task_eval), ("general", spec.general_eval)):
        for name in names:
            if not (data / name.partition(":")[0]).exists():
                continue
            for es in resolve_set(name, cfg):
                role = forced or es.role
                items, inputs, k = set_inputs(es, cfg, anchor if role == "task" else None)
                refs = counter.count([r.response for r in items])
                prompts = counter.count(["\n".join([t["content"] for t in r.history] + [r.prompt]) for r in inputs])
                longest = max(longest, max(refs))
                both = [p + r for p, r in zip(prompts, refs)]
                print(f"  eval {es.name}: {len(items):,} items, longest reference {max(refs):,} tokens "
                      f"({sum(x > 1024 for x in refs):,} over 1,024), longest prompt with {k} shot(s) "
                      f"{max(prompts):,}, longest prompt + reference {max(both):,}; {sum(x > 4096 for x in both):,} "
                      "items over 4,096 (prompt + reference: the official script skips such items)")
    return longest


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("spec", help="a sweep recipe (examples/sweeps/*.yaml)")
    args = ap.parse_args(argv)

    from tell.data.anchor import Anchor
    from tell.data.tokens import load_counter
    from tell.eval.run import LENGTH_MARGIN
    from tell.experiments.sweep import load_spec, train_max_length

    spec = load_spec(args.spec)
    counter = load_counter(spec.tokenizer or spec.model)
    who = counter.describe()
    max_len = train_max_length(spec)
    print(f"recipe {args.spec}; counted {datetime.date.today()} by {who['name']} ({who['kind']}, "
          f"vocabulary {who['vocab_size']:,}), without chat-template tokens")
    anchor = Anchor(spec.anchor, spec.anchor_placement) if spec.anchor else None
    with tempfile.TemporaryDirectory() as t:
        data = _build_dir(spec, Path(t))
        longest_train = _training(spec, data, counter, anchor, max_len)
        longest_ref = _eval_sets(spec, data, counter, anchor)
    factor, extra = LENGTH_MARGIN
    fit = 64 * math.ceil((longest_train * 1.15 + 64) / 64)
    print(f"train.max_length that fits the longest training example with a 15% + 64-token margin: {fit:,} "
          f"(the recipe has {max_len:,})")
    print(f"generation length for the longest reference by `tell eval`'s rule (x {factor} + {extra}): "
          f"{int(longest_ref * factor) + extra:,} ({who['name']} counts; eval applies the rule with the model's own "
          "tokenizer)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
