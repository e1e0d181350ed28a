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

    from tell.train.loss import IGNORE, token_nll

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
        labels = torch.full((len(batch), width), IGNORE, dtype=torch.long)
        for r, (row, n_prompt) in enumerate(batch):  # right padding: positions start at 0 in every row
            ids[r, :len(row)] = torch.tensor(row)
            mask[r, :len(row)] = 1
            labels[r, max(n_prompt, 1):len(row)] = ids[r, max(n_prompt, 1):len(row)]  # tokens n_prompt .. end
        with torch.no_grad():  # the LM head runs only at the answer's positions
            nll, keep = token_nll(model, labels.to(device), input_ids=ids.to(device), attention_mask=mask.to(device))
        rows = keep.nonzero()[:, 0].cpu()
        sums = torch.zeros(len(batch), dtype=torch.float64).index_add_(0, rows, nll.double().cpu())
        counts = torch.bincount(rows, minlength=len(batch))
        out += [float(s / c) if c else float("nan") for s, c in zip(sums.tolist(), counts.tolist())]
    return out
