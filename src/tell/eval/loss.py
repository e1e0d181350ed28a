"""Loss on held-out examples: the mean answer-token negative log-likelihood per example, under the same
template and masking as training. A sweep chooses learning rates with it on its validation split, so the
choice never looks at a test set and needs no metric of the task's own."""

from __future__ import annotations

from typing import Any, Sequence

from tell.data.records import Record
from tell.prompting import encode


def answer_losses(model: Any, tokenizer: Any, records: Sequence[Record], *, max_length: int = 1024,
                  batch_size: int = 16) -> list[float]:
    """Per record: mean NLL (nats) of its answer tokens given its prompt. Examples are cut to `max_length`
    tokens from the right, as training's truncate policy does; one with no answer token left gets NaN."""
    import torch
    import torch.nn.functional as F

    encoded = []
    for rec in records:
        p, a = encode(tokenizer, rec)
        ids = (p + a)[:max_length]
        encoded.append((ids, min(len(p), len(ids))))
    device = next(model.parameters()).device
    out: list[float] = []
    for start in range(0, len(encoded), batch_size):
        batch = encoded[start:start + batch_size]
        width = max(len(ids) for ids, _ in batch)
        ids = torch.full((len(batch), width), tokenizer.pad_token_id, dtype=torch.long)
        mask = torch.zeros((len(batch), width), dtype=torch.long)
        for r, (row, _) in enumerate(batch):  # right padding: positions start at 0 in every row
            ids[r, :len(row)] = torch.tensor(row)
            mask[r, :len(row)] = 1
        with torch.no_grad():
            logits = model(input_ids=ids.to(device), attention_mask=mask.to(device)).logits.float()
        nll = F.cross_entropy(logits[:, :-1].transpose(1, 2), ids[:, 1:].to(device), reduction="none").cpu()
        for r, (row, n_prompt) in enumerate(batch):
            answer = nll[r, max(n_prompt - 1, 0):len(row) - 1]  # predictions of tokens n_prompt .. end
            out.append(float(answer.mean()) if len(answer) else float("nan"))
    return out
