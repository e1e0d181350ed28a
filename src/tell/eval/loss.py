"""The language-model loss where labels are, for training (`tell.train.trainer`) and on held-out examples
(`answer_losses`), computed only where it is taken: the LM head (a vocabulary-wide matrix product, and
the float32 copy of its output) runs at the positions whose next token has a label, not at every position.

On Halu-CoT-JSON the answer is about a sixth of an example's tokens, and SmolLM2's head has 49,152 columns: the
full logits were most of a step's peak memory. transformers' causal LMs take a boolean (batch, sequence)
`logits_to_keep` and return just those rows, flattened (`slice_logits_to_keep`); that goes through the model's
own forward, so its final softcapping or logit scaling still applies. A model class whose forward does not take
such a mask is found on its first call and then always gets the full logits, sliced afterwards: the same
numbers, at the old cost.

`answer_losses`: the mean answer-token negative log-likelihood per example, under the same template and masking as
training. A sweep chooses learning rates with it on its validation split, so the choice never looks at a test set
and needs no metric of the task's own."""

from __future__ import annotations

from typing import Any, Sequence

import torch
import torch.nn.functional as F

from tell.data.records import Record
from tell.prompting import encode

IGNORE = -100  # the label of a position that is no training target (prompt, padding, an example's first token)

# model class -> whether its forward returns only the rows of a boolean `logits_to_keep` (learned on first use)
_TAKES_MASK: dict[type, bool] = {}


def _base(model: Any) -> Any:
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def logits_where(model: Any, keep: torch.Tensor, **inputs) -> torch.Tensor:
    """(keep.sum(), vocab) logits of the positions where `keep` (bool, batch x sequence) is True, in row-major
    order (as `tensor[keep]` orders them), in the model's dtype."""
    cls = type(_base(model))
    if _TAKES_MASK.get(cls, True):
        try:
            logits = model(**inputs, logits_to_keep=keep).logits
        except torch.OutOfMemoryError:
            raise
        except (TypeError, ValueError, IndexError, RuntimeError):
            logits = None  # a forward without the argument, or one that slices with it as positions
        n = int(keep.sum())
        if logits is not None and logits.dim() == 2 and logits.size(0) == n:
            _TAKES_MASK[cls] = True
            return logits
        _TAKES_MASK[cls] = False
    return model(**inputs).logits[keep]


def label_positions(labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(keep, targets): keep marks the positions whose next token carries a label (position t predicts t+1, so
    the last position never counts); targets are those labels in the same order as `logits_where`'s rows."""
    keep = torch.zeros_like(labels, dtype=torch.bool)
    keep[:, :-1] = labels[:, 1:] != IGNORE
    return keep, labels[:, 1:][keep[:, :-1]]


def token_nll(model: Any, labels: torch.Tensor, **inputs) -> tuple[torch.Tensor, torch.Tensor]:
    """(nll, keep): the cross-entropy (nats, float32) of every labelled token, one entry per True of `keep`, in
    row-major order; `keep[:, :-1]` indexes the labelled positions of `labels[:, 1:]`."""
    keep, target = label_positions(labels)
    logits = logits_where(model, keep, **inputs).float()
    return F.cross_entropy(logits, target, reduction="none"), keep



def answer_losses(model: Any, tokenizer: Any, records: Sequence[Record], *, max_length: int = 1024,
                  batch_size: int = 16) -> list[float]:
    """Per record: mean NLL (nats) of its answer tokens given its prompt. Examples are cut to `max_length`
    tokens from the right, as training's truncate policy does; one with no answer token left gets NaN."""
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
