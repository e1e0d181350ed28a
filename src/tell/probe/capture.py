"""Hidden states of chosen decoder layers, captured with forward hooks that are always removed."""

from __future__ import annotations

import contextlib
from typing import Any, Iterator, Sequence

import torch

from tell.data.records import Record
from tell.errors import TellError
from tell.prompting import prompt_ids


def decoder_layers(model: Any) -> torch.nn.ModuleList:
    """The model's list of decoder layers (Llama, Qwen2, Gemma, Mistral, ... and PEFT-wrapped ones): the
    ModuleList whose length is the config's number of hidden layers."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    n = getattr(base.config, "num_hidden_layers", None)
    if n is None and hasattr(base.config, "get_text_config"):
        n = base.config.get_text_config().num_hidden_layers
    for _, module in base.named_modules():
        if isinstance(module, torch.nn.ModuleList) and len(module) == n:
            return module
    raise TellError(f"cannot find the {n} decoder layers of {type(base).__name__}")


def resolve_layers(model: Any, spec: str | int | Sequence[int]) -> list[int]:
    """1-based layer numbers: 'middle' (L // 2, the paper's layer 16 of 32), 'all', or numbers."""
    n = len(decoder_layers(model))
    if spec in ("middle", None):
        return [max(1, n // 2)]
    if spec == "all":
        return list(range(1, n + 1))
    layers = [int(x) for x in (str(spec).split(",") if isinstance(spec, str) else ([spec] if isinstance(spec, int) else spec))]
    bad = [x for x in layers if not 1 <= x <= n]
    if bad:
        raise TellError(f"layer(s) {bad} out of range; the model has layers 1..{n}", field="layers")
    return layers


@contextlib.contextmanager
def hooked(model: Any, layers: Sequence[int]) -> Iterator[dict[int, list[torch.Tensor]]]:
    """Record the output hidden states of the given (1-based) decoder layers; the hooks are removed on
    exit, also when the body raises."""
    store: dict[int, list[torch.Tensor]] = {k: [] for k in layers}
    mods = decoder_layers(model)
    handles = []

    def make(k):
        def hook(_module, _inputs, output):
            h = output[0] if isinstance(output, (tuple, list)) else output
            store[k].append(h.detach().float().cpu())
        return hook

    try:
        for k in layers:
            handles.append(mods[k - 1].register_forward_hook(make(k)))
        yield store
    finally:
        for h in handles:
            h.remove()


@torch.no_grad()
def embed(model: Any, tokenizer: Any, records: Sequence[Record], layers: Sequence[int], *, pooling: str = "mean",
          batch_size: int = 16) -> dict[int, torch.Tensor]:
    """One vector per record and layer: the mean over the prompt's tokens, or the last prompt token.
    Prompts are rendered exactly as at training and inference (`tell.prompting`)."""
    if pooling not in ("mean", "last"):
        raise TellError(f"unknown pooling '{pooling}'; expected mean or last", field="pooling")
    out: dict[int, list[torch.Tensor]] = {k: [] for k in layers}
    device = next(model.parameters()).device
    ids = [prompt_ids(tokenizer, r) for r in records]
    for i in range(0, len(ids), batch_size):
        chunk = ids[i:i + batch_size]
        width = max(map(len, chunk))
        x = torch.full((len(chunk), width), tokenizer.pad_token_id, dtype=torch.long)
        mask = torch.zeros((len(chunk), width), dtype=torch.long)
        for r, p in enumerate(chunk):
            x[r, :len(p)] = torch.tensor(p)
            mask[r, :len(p)] = 1
        with hooked(model, layers) as store:
            model(input_ids=x.to(device), attention_mask=mask.to(device), use_cache=False)
        m = mask.unsqueeze(-1).float()
        last = mask.sum(1) - 1
        for k in layers:
            h = store[k][0]
            pooled = (h * m).sum(1) / m.sum(1) if pooling == "mean" else h[torch.arange(len(chunk)), last]
            out[k].append(pooled)
    return {k: torch.cat(v) for k, v in out.items()}
