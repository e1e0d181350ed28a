"""Turning a mixture into token ids with loss masks, and collating micro-batches: packed (several examples
per row, positions restarting at each example, no attention across borders) or padded to the longest."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any

import torch
from tqdm.auto import tqdm

from tell.artifacts import MixtureDir
from tell.data.records import TASK
from tell.errors import TellError
from tell.prompting import encode

from tell.eval.loss import IGNORE  # noqa: F401  (re-exported: the collator and tests use it here)


@dataclass
class Tokenized:
    examples: list[dict]      # {"input_ids", "labels", "source"} in mixture order
    counts: Counter           # what the length policy did: kept, truncated, dropped_too_long, dropped_no_answer,
                              # and per source (`answer_cut_task`, ...: examples whose answer's end and EOS were cut)


def tokenize_mixture(mix: MixtureDir, tokenizer: Any, *, max_length: int, length_policy: str,
                     train_on_prompt: bool, progress: bool = True) -> Tokenized:
    """Every mixture record, in order, as ids + labels. Labels are -100 on prompt tokens (unless
    `train_on_prompt`) and on each example's first token (it has nothing before it to be predicted from).

    A cut always takes the answer's end, with its EOS / end-of-turn token: the model then learns not to stop.
    Such examples are counted per source (`answer_cut_task`, `answer_cut_general`), as are the dropped ones;
    a mixture whose task examples are all dropped is refused (0 task tokens would be trained)."""
    examples, counts = [], Counter()
    for _, rec in tqdm(mix.records(), desc="tokenize mixture", unit=" ex", disable=None if progress else True,
                       leave=False):
        p, a = encode(tokenizer, rec)
        ids = p + a
        counts[f"examples_{rec.source}"] += 1
        if len(ids) > max_length:
            if length_policy == "drop":
                counts["dropped_too_long"] += 1
                counts[f"dropped_{rec.source}"] += 1
                continue
            ids = ids[:max_length]
            counts["truncated"] += 1
        n_prompt = min(len(p), len(ids))
        if n_prompt >= len(ids):  # nothing of the answer is left: never feed it
            counts["dropped_no_answer"] += 1
            counts[f"dropped_{rec.source}"] += 1
            continue
        if len(ids) < len(p) + len(a):
            counts[f"answer_cut_{rec.source}"] += 1
        labels = list(ids) if train_on_prompt else [IGNORE] * n_prompt + ids[n_prompt:]
        labels[0] = IGNORE
        examples.append({"input_ids": ids, "labels": labels, "source": int(rec.source == TASK)})
        counts["kept"] += 1
    if not examples:
        raise TellError(f"no example is left to train on ({dict(counts)})", file=str(mix.mixture_path))
    if counts[f"examples_{TASK}"] and counts[f"dropped_{TASK}"] == counts[f"examples_{TASK}"]:
        raise TellError(f"all {counts[f'examples_{TASK}']:,} task examples are longer than --max-length {max_length} "
                        "(with the chat template) and were dropped: 0 task tokens would be trained; raise --max-length",
                        file=str(mix.mixture_path))
    return Tokenized(examples, counts)


def length_warning(counts: Counter, max_length: int) -> str | None:
    """One line for stderr when examples lost their answer's end (and EOS) or were dropped, else None."""
    cut = {s: counts[f"answer_cut_{s}"] for s in (TASK, "general")}
    dropped = {s: counts[f"dropped_{s}"] for s in (TASK, "general")}
    parts = []
    if any(cut.values()):
        parts.append(f"{cut[TASK]:,} task and {cut['general']:,} general examples had their answer's end and EOS cut "
                     "(the model learns not to stop)")
    if any(dropped.values()):
        parts.append(f"{dropped[TASK]:,} task and {dropped['general']:,} general examples were dropped")
    if not parts:
        return None
    return f"tell: warning: at --max-length {max_length} (tokens with the chat template): {'; '.join(parts)}; " \
           "raise --max-length to train on them whole"


def sorted_within_steps(examples: list[dict], per_step: int) -> list[dict]:
    """The examples with each optimizer step's share (consecutive runs of `per_step`, in mixture order) sorted
    longest first, so that the micro-batches a step is cut into hold examples of similar length and pad less. A
    step still trains on the same examples (its gradient is their sum, whatever the micro-batch they sit in) and
    the steps come in the mixture's order; only which micro-batch of its step an example is in changes."""
    out: list[dict] = []
    for i in range(0, len(examples), per_step):
        out += sorted(examples[i:i + per_step], key=lambda e: -len(e["input_ids"]))
    return out


class ListDataset(torch.utils.data.Dataset):
    def __init__(self, items: list[dict]):
        self.items = items

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> dict:
        return self.items[i]


@dataclass
class Collator:
    """Collates a micro-batch (a list of examples, in mixture order).

    packed: examples are spread over balanced rows with the fewest padded cells, never wider than
    `row_length` (see `_balanced_rows`; the order inside a micro-batch does not change its loss); position_ids restart at 0 for each example and no attention mask is passed,
    so the model builds a block-diagonal causal mask. The forward pass must run with `use_cache=False`:
    transformers skips packed-sequence detection when a KV cache is present. Rows are padded to the longest row; the padding is
    a segment of its own, with label -100.
    padded: one example per row, right-padded to the longest, with an attention mask.
    `token_source` (1 task, 0 general, -1 padding) lets the trainer split the loss.
    """

    pad_id: int
    packed: bool
    row_length: int

    def _balanced_rows(self, batch: list[dict]) -> list[list[dict]]:
        """Spread the micro-batch over rows with the fewest padded cells: for each row count from
        total/row_length up to total/longest, place examples longest first into the emptiest row (LPT
        scheduling), and keep the layout with the smallest rows x width that fits `row_length`."""
        order = sorted(batch, key=lambda e: -len(e["input_ids"]))
        total, longest = sum(len(e["input_ids"]) for e in batch), len(order[0]["input_ids"])
        low = max(1, -(-total // self.row_length))
        best: tuple[int, list[list[dict]]] | None = None
        for n_rows in range(low, max(low, total // longest) + 1):
            rows: list[list[dict]] = [[] for _ in range(n_rows)]
            used = [0] * n_rows
            for ex in order:
                i = used.index(min(used))
                rows[i].append(ex)
                used[i] += len(ex["input_ids"])
            cells = n_rows * max(used)
            if max(used) <= self.row_length and (best is None or cells < best[0]):
                best = (cells, rows)
        if best is None:  # nothing fits the cap evenly: one example per row
            return [[ex] for ex in order]
        return [r for r in best[1] if r]

    def __call__(self, batch: list[dict]) -> dict[str, torch.Tensor]:
        rows: list[list[dict]] = []
        if self.packed:
            rows = self._balanced_rows(batch)
        else:
            rows = [[ex] for ex in batch]
        width = max(sum(len(e["input_ids"]) for e in row) for row in rows)
        n = len(rows)
        input_ids = torch.full((n, width), self.pad_id, dtype=torch.long)
        labels = torch.full((n, width), IGNORE, dtype=torch.long)
        position_ids = torch.zeros((n, width), dtype=torch.long)
        source = torch.full((n, width), -1, dtype=torch.long)
        attention = torch.zeros((n, width), dtype=torch.long)
        for r, row in enumerate(rows):
            at = 0
            for ex in row:
                k = len(ex["input_ids"])
                input_ids[r, at:at + k] = torch.tensor(ex["input_ids"])
                labels[r, at:at + k] = torch.tensor(ex["labels"])
                position_ids[r, at:at + k] = torch.arange(k)
                source[r, at:at + k] = ex["source"]
                attention[r, at:at + k] = 1
                at += k
            position_ids[r, at:] = torch.arange(width - at)
        out = {"input_ids": input_ids, "labels": labels, "position_ids": position_ids, "token_source": source}
        if not self.packed:
            out["attention_mask"] = attention
        return out
