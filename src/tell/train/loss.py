"""The language-model loss computed only where it is taken: the LM head (a vocabulary-wide matrix product, and
the float32 copy of its output) runs at the positions whose next token has a label, not at every position.

On Halu-CoT-JSON the answer is about a sixth of an example's tokens, and SmolLM2's head has 49,152 columns: the
full logits were most of a step's peak memory. transformers' causal LMs take a boolean (batch, sequence)
`logits_to_keep` and return just those rows, flattened (`slice_logits_to_keep`); that goes through the model's
own forward, so its final softcapping or logit scaling still applies. A model class whose forward does not take
such a mask is found on its first call and then always gets the full logits, sliced afterwards: the same
numbers, at the old cost."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from tell.train.batching import IGNORE

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
