"""Batched generation with left padding and the KV cache."""

from __future__ import annotations

import inspect
from typing import Any, Callable, Sequence

import torch
from transformers import StaticCache

from tell.prompting import stop_ids


def batches_by_length(prompts: Sequence[Sequence[int]], batch_size: int) -> list[list[int]]:
    """Item indices grouped into batches of similar prompt length (less padding). Fixed for a given list,
    so an interrupted run resumes with the very same batches."""
    order = sorted(range(len(prompts)), key=lambda i: (len(prompts[i]), i))
    return [order[i:i + batch_size] for i in range(0, len(order), batch_size)]


MIN_SHARED_PREFIX = 64  # tokens: a batch whose prompts share a shorter opening is run as it is


def shared_prefix(prompts: Sequence[Sequence[int]]) -> int:
    """Length of the token opening every prompt of the batch shares, leaving each at least one token of its own
    (the model needs a last prompt token per row to start from)."""
    n = min(len(p) for p in prompts) - 1
    first = prompts[0]
    for i in range(max(n, 0)):
        if any(p[i] != first[i] for p in prompts[1:]):
            return i
    return max(n, 0)


def _cache_argument(model: Any) -> str:
    """The name generate() takes a prefilled KV cache under: `cache` since transformers 5.2x, `past_key_values`
    before (still accepted, with a FutureWarning)."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return "cache" if "cache" in inspect.signature(type(base).forward).parameters else "past_key_values"


def _static_cache(model: Any, opening: torch.Tensor, rows: int, length: int) -> StaticCache:
    """A KV cache of fixed size for the batch (the growing cache copies every layer's keys at each step, which
    made decoding several times slower on this CPU in a scratch measurement), holding the batch's shared
    opening, computed once and copied to every row."""
    cache = StaticCache(config=model.config, max_cache_len=length)
    if opening.shape[1]:
        first = model(input_ids=opening, use_cache=True)
        first = getattr(first, "cache", None) or first.past_key_values
        where = {"cache_position": torch.arange(opening.shape[1], device=opening.device)}
        for i, layer in enumerate(first.layers):
            cache.update(layer.keys.expand(rows, -1, -1, -1).contiguous(),
                         layer.values.expand(rows, -1, -1, -1).contiguous(), i, where)
    return cache


@torch.no_grad()
def generate_batch(model: Any, tokenizer: Any, prompts: Sequence[Sequence[int]], *, max_new_tokens: int,
                   greedy: bool, temperature: float, top_k: int, top_p: float, repetition_penalty: float,
                   seed: int) -> list[str]:
    """Generate for one batch. Prompts are left-padded so every row's last prompt token sits at the end;
    the attention mask hides the padding and generate() derives positions from it.

    When the prompts share a long opening (an eval set's instruction, the chat template's system turn, an
    anchor), it is run once and its KV cache copied to every row: the rows then hold [opening | padding |
    their own part], the mask hides the padding in the middle, and positions, derived from the mask, are the
    ones each row has without the sharing (tests/eval/test_generate.py checks the outputs are the same)."""
    pad = tokenizer.pad_token_id
    device = next(model.parameters()).device
    shared = shared_prefix(prompts) if len(prompts) > 1 else 0
    shared = shared if shared >= MIN_SHARED_PREFIX else 0
    rest = [p[shared:] for p in prompts]
    width = max(len(p) for p in rest)
    # The padding between a shared opening and a row's own part is masked from attention, but transformers'
    # repetition penalty ignores only padding on the left (the mask's leading zeros): padding with pad = EOS there
    # would penalise EOS in the padded rows alone (an output that depends on its batch). A token of the opening
    # is in every row already, so padding with it changes no row's penalty.
    ids = torch.full((len(prompts), shared + width), prompts[0][0] if shared else pad, dtype=torch.long)
    mask = torch.zeros((len(prompts), shared + width), dtype=torch.long)
    ids[:, :shared] = torch.tensor(prompts[0][:shared], dtype=torch.long)
    mask[:, :shared] = 1
    for r, p in enumerate(rest):
        ids[r, shared + width - len(p):] = torch.tensor(p, dtype=torch.long)
        mask[r, shared + width - len(p):] = 1
    torch.manual_seed(seed)
    # Stop at EOS or the chat template's end-of-turn token. The repetition penalty skips the left padding
    # (transformers reads it from the attention mask), so a row's output does not depend on its batch.
    kwargs: dict = dict(max_new_tokens=max_new_tokens, pad_token_id=pad, use_cache=True,
                        repetition_penalty=repetition_penalty, eos_token_id=stop_ids(tokenizer))
    kwargs[_cache_argument(model)] = _static_cache(model, ids[:1, :shared].to(device), len(prompts),
                                                   shared + width + max_new_tokens)
    if greedy:
        kwargs.update(do_sample=False, temperature=None, top_k=None, top_p=None)
        rows = _greedy_retiring(model, ids.to(device), mask.to(device), kwargs)
        return [tokenizer.decode(r, skip_special_tokens=True) for r in rows]
    kwargs.update(do_sample=True, temperature=temperature, top_k=top_k, top_p=top_p)
    out = model.generate(input_ids=ids.to(device), attention_mask=mask.to(device), **kwargs)
    return [tokenizer.decode(row[shared + width:], skip_special_tokens=True) for row in out.cpu()]


RETIRE_EVERY = 16  # new tokens between two looks for rows that have stopped (greedy decoding)


def _greedy_retiring(model: Any, ids: torch.Tensor, mask: torch.Tensor, kwargs: dict) -> list[list[int]]:
    """Each row's new tokens, greedy, decoded RETIRE_EVERY tokens at a time: a row that has generated a stop token
    leaves the batch (its rows of the KV cache dropped), so the rows still writing decode as a smaller batch
    instead of carrying finished rows to the longest answer. A greedy row does not depend on the batch it is in
    (tests/eval/test_generate.py), so the outputs are those of one generate() call over the whole batch. Sampling
    keeps one call: retiring rows would change which random numbers the others draw."""
    stops = kwargs["eos_token_id"]
    stops = set(stops if isinstance(stops, (list, tuple, set)) else [stops])
    cache = kwargs[next(k for k in ("cache", "past_key_values") if k in kwargs)]
    alive = list(range(ids.shape[0]))  # batch row -> the prompt it belongs to
    out_rows: list[list[int]] = [[] for _ in alive]
    left = kwargs["max_new_tokens"]
    while left > 0:
        step = min(RETIRE_EVERY, left)
        seq = model.generate(input_ids=ids, attention_mask=mask, **(kwargs | {"max_new_tokens": step}))
        new = seq[:, ids.shape[1]:]
        left -= new.shape[1]
        keep = []
        for j, (r, toks) in enumerate(zip(alive, new.tolist())):
            out_rows[r] += toks
            if not stops.intersection(toks):
                keep.append(j)
        if not keep or new.shape[1] < step:  # every row has stopped
            break
        mask = torch.cat([mask, mask.new_ones((mask.shape[0], new.shape[1]))], dim=1)
        if len(keep) < len(alive):
            idx = torch.tensor(keep, device=ids.device)
            cache.reorder_cache(idx)
            seq, mask, alive = seq[idx], mask[idx], [alive[j] for j in keep]
        ids = seq
    return out_rows


def generate_all(model: Any, tokenizer: Any, prompts: Sequence[Sequence[int]], *, batch_size: int,
                 done: set[int] | None = None, on_batch: Callable[[list[int], list[str]], None],
                 progress: Callable[[int], None] | None = None, seed: int, **decoding) -> None:
    """Generate for every prompt not in `done`, batch by batch; `on_batch(indices, outputs)` is called after
    each batch (to save it). Batch b is seeded with seed + b, so results do not depend on what was skipped."""
    done = done or set()
    for b, idx in enumerate(batches_by_length(prompts, batch_size)):
        if all(i in done for i in idx):
            continue
        outs = generate_batch(model, tokenizer, [prompts[i] for i in idx], seed=seed + b, **decoding)
        on_batch(idx, outs)
        if progress:
            progress(len(idx))
