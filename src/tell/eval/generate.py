"""Batched generation with left padding and the KV cache."""

from __future__ import annotations

from typing import Any, Callable, Sequence

import torch

from tell.prompting import stop_ids


def batches_by_length(prompts: Sequence[Sequence[int]], batch_size: int) -> list[list[int]]:
    """Item indices grouped into batches of similar prompt length (less padding). Fixed for a given list,
    so an interrupted run resumes with the very same batches."""
    order = sorted(range(len(prompts)), key=lambda i: (len(prompts[i]), i))
    return [order[i:i + batch_size] for i in range(0, len(order), batch_size)]


@torch.no_grad()
def generate_batch(model: Any, tokenizer: Any, prompts: Sequence[Sequence[int]], *, max_new_tokens: int,
                   greedy: bool, temperature: float, top_k: int, top_p: float, repetition_penalty: float,
                   seed: int) -> list[str]:
    """Generate for one batch. Prompts are left-padded so every row's last prompt token sits at the end;
    the attention mask hides the padding and generate() derives positions from it."""
    width = max(len(p) for p in prompts)
    pad = tokenizer.pad_token_id
    ids = torch.full((len(prompts), width), pad, dtype=torch.long)
    mask = torch.zeros((len(prompts), width), dtype=torch.long)
    for r, p in enumerate(prompts):
        ids[r, width - len(p):] = torch.tensor(p, dtype=torch.long)
        mask[r, width - len(p):] = 1
    device = next(model.parameters()).device
    torch.manual_seed(seed)
    # Stop at EOS or the chat template's end-of-turn token. The repetition penalty skips the left padding
    # (transformers reads it from the attention mask), so a row's output does not depend on its batch.
    kwargs: dict = dict(max_new_tokens=max_new_tokens, pad_token_id=pad, use_cache=True,
                        repetition_penalty=repetition_penalty, eos_token_id=stop_ids(tokenizer))
    if greedy:
        kwargs.update(do_sample=False, temperature=None, top_k=None, top_p=None)
    else:
        kwargs.update(do_sample=True, temperature=temperature, top_k=top_k, top_p=top_p)
    out = model.generate(input_ids=ids.to(device), attention_mask=mask.to(device), **kwargs)
    return [tokenizer.decode(row[width:], skip_special_tokens=True) for row in out.cpu()]


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
