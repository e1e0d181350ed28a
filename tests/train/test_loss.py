"""`tell.eval.loss`: the LM head only where labels are gives the loss and the LoRA gradients of the full-logits
path (what `TellTrainer.compute_loss` did before: every position's logits in float32, then the cross-entropy
where labels are set), padded and packed, with the model's own boolean `logits_to_keep` and without it."""

from __future__ import annotations

import random

import pytest
import torch
import torch.nn.functional as F

from tell.eval import loss as tl
from tell.train.batching import IGNORE, Collator


def full_logits_nll(model, labels, **inputs) -> torch.Tensor:
    """The reference: per-position cross-entropy over all logits, summed where labels are."""
    logits = model(**inputs).logits[:, :-1, :].float()
    target = labels[:, 1:]
    ce = F.cross_entropy(logits.reshape(-1, logits.size(-1)), target.reshape(-1), ignore_index=IGNORE,
                         reduction="none")
    return ce.sum()


def examples(vocab: int, n: int = 6, seed: int = 0) -> list[dict]:
    """Examples of varied lengths whose labels cover only an answer (a prompt of -100 first), as tokenize_mixture
    makes them, sources alternating task/general."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        p, a = rng.randint(3, 12), rng.randint(1, 6)
        ids = [rng.randrange(3, vocab) for _ in range(p + a)]
        labels = [IGNORE] * p + ids[p:]
        labels[0] = IGNORE
        out.append({"input_ids": ids, "labels": labels, "source": i % 2})
    return out


def lora_model(tiny_model):
    from transformers import AutoModelForCausalLM

    from tell.train.model import add_lora

    model = AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.float32)
    model = add_lora(model, r=4, alpha=8, dropout=0.0, target_modules="q_proj,v_proj")
    torch.manual_seed(1)
    for name, p in model.named_parameters():
        if "lora_B" in name:  # B starts at zero: make the adapter do something, so its A gradients are not zero
            torch.nn.init.normal_(p, std=0.1)
    return model


def loss_and_grads(model, fn, batch, subject=None):
    model.zero_grad()
    inputs = {k: v for k, v in batch.items() if k not in ("labels", "token_source")}
    total = fn(subject or model, batch["labels"], **inputs, use_cache=False)
    total.backward()
    return total.item(), {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}


class NoMaskForward(torch.nn.Module):
    """A causal LM whose forward has no `logits_to_keep` (older model code): the fallback path."""

    def __init__(self, inner):
        super().__init__()
        self.inner = inner

    def forward(self, input_ids=None, attention_mask=None, position_ids=None, use_cache=None):
        return self.inner(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                          use_cache=use_cache)


@pytest.mark.parametrize("packed", [False, True])
@pytest.mark.parametrize("takes_mask", [True, False])
def test_loss_and_lora_gradients_equal_the_full_logits_path(tiny_model, packed, takes_mask):
    model = lora_model(tiny_model)
    vocab = model.get_base_model().config.vocab_size
    batch = Collator(pad_id=0, packed=packed, row_length=64)(examples(vocab))
    if packed:
        assert batch["input_ids"].size(0) < 6  # several examples share a row
    subject = model if takes_mask else NoMaskForward(model)

    def new(m, labels, **inputs):
        return tl.token_nll(m, labels, **inputs)[0].sum()

    ref, ref_grads = loss_and_grads(model, full_logits_nll, batch)
    got, got_grads = loss_and_grads(model, new, batch, subject)
    assert tl._TAKES_MASK[type(model.get_base_model()) if takes_mask else NoMaskForward] is takes_mask
    assert got == pytest.approx(ref, rel=1e-5)
    assert ref_grads.keys() == got_grads.keys() and any("lora_A" in k for k in ref_grads)
    for k in ref_grads:
        torch.testing.assert_close(got_grads[k], ref_grads[k], rtol=1e-4, atol=1e-6)


def test_the_head_runs_only_at_labelled_positions(tiny_model):
    """The rows the model returns are the labelled ones, not every position: that is where the time goes."""
    model = lora_model(tiny_model)
    vocab = model.get_base_model().config.vocab_size
    batch = Collator(pad_id=0, packed=False, row_length=64)(examples(vocab))
    seen = []
    head = model.get_base_model().lm_head
    hook = head.register_forward_hook(lambda mod, args, out: seen.append(args[0].shape))
    try:
        nll, keep = tl.token_nll(model, batch["labels"], input_ids=batch["input_ids"],
                                 attention_mask=batch["attention_mask"], use_cache=False)
    finally:
        hook.remove()
    labelled = int((batch["labels"][:, 1:] != IGNORE).sum())
    assert seen == [torch.Size([labelled, head.in_features])]
    assert nll.shape == (labelled,) and labelled < batch["input_ids"].numel() / 2


def test_positions_and_targets_line_up():
    labels = torch.tensor([[IGNORE, IGNORE, 5, 6, IGNORE], [IGNORE, 7, IGNORE, 8, 9]])
    keep, target = tl.label_positions(labels)
    assert keep.tolist() == [[False, True, True, False, False], [True, False, True, True, False]]
    assert target.tolist() == [5, 6, 7, 8, 9]


def test_answer_losses_equal_the_full_logits_means(tiny_model, hf_tokenizer_dir):
    """The validation loss (the sweep's lr rule reads it) per record, as before: mean NLL of the answer tokens."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from tell.data.records import Record
    from tell.eval.loss import answer_losses
    from tell.prompting import encode

    model = AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.float32).eval()
    tok = AutoTokenizer.from_pretrained(tiny_model)
    recs = [Record(prompt=f"say {w} " * (i + 1), response=f"{w} done", source="task", row=i)
            for i, w in enumerate(["alpha", "beta", "gamma"])]
    got = answer_losses(model, tok, recs, batch_size=2)
    for rec, value in zip(recs, got):
        p, a = encode(tok, rec)
        ids = torch.tensor([p + a])
        with torch.no_grad():
            nll = F.cross_entropy(model(input_ids=ids).logits[0, :-1].float(), ids[0, 1:], reduction="none")
        assert value == pytest.approx(float(nll[len(p) - 1:].mean()), rel=1e-5)
