"""`tell.train.batching`: loss masking, length policies, packing checked against padding."""

from __future__ import annotations

import json

import pytest
import torch

from tell.artifacts import MixtureDir
from tell.cli import main
from tell.data.records import Record
from tell.errors import TellError
from tell.train.batching import IGNORE, Collator, tokenize_mixture
from tell.train.run import train

from conftest import CHAT_TEMPLATE, train_argv, train_config


def test_prompt_masking_plain_and_chat(toy_mixture, tiny_model, hf_tokenizer_dir, tmp_path):
    from transformers import AutoTokenizer

    from tell.prompting import answer_ids, prompt_ids

    for template in (None, CHAT_TEMPLATE):
        tok = AutoTokenizer.from_pretrained(tiny_model)
        tok.chat_template = template
        data = tokenize_mixture(MixtureDir(toy_mixture), tok, max_length=512, length_policy="truncate",
                                train_on_prompt=False, progress=False)
        first = json.loads((toy_mixture / "mixture.jsonl").read_text().splitlines()[0])
        rec = Record(prompt=first["prompt"], response=first["response"], system=first["system"])
        p, a = prompt_ids(tok, rec), answer_ids(tok, rec)
        ex = data.examples[0]
        assert ex["input_ids"] == p + a
        assert ex["labels"] == [IGNORE] * len(p) + a
        assert a[-1] == tok.eos_token_id  # the answer is closed, so the model learns to stop
        whole = tokenize_mixture(MixtureDir(toy_mixture), tok, max_length=512, length_policy="truncate",
                                 train_on_prompt=True, progress=False).examples[0]
        assert whole["labels"] == [IGNORE] + whole["input_ids"][1:]
    assert tok.decode(p).count("<s>") == 2  # the chat template was used: a turn marker per message


def test_length_policy_counts(toy_mixture, tiny_model):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model)
    lens = [len(e["input_ids"]) for e in tokenize_mixture(MixtureDir(toy_mixture), tok, max_length=512,
                                                          length_policy="truncate", train_on_prompt=False,
                                                          progress=False).examples]
    cut = sorted(lens)[len(lens) // 2]
    t = tokenize_mixture(MixtureDir(toy_mixture), tok, max_length=cut, length_policy="truncate",
                         train_on_prompt=False, progress=False)
    d = tokenize_mixture(MixtureDir(toy_mixture), tok, max_length=cut, length_policy="drop",
                         train_on_prompt=False, progress=False)
    longer = sum(n > cut for n in lens)
    assert t.counts["truncated"] + t.counts["dropped_no_answer"] == longer and t.counts["kept"] == len(lens) - t.counts["dropped_no_answer"]
    assert d.counts["dropped_too_long"] == longer and d.counts["kept"] == len(lens) - longer
    assert all(len(e["input_ids"]) <= cut and any(x != IGNORE for x in e["labels"]) for e in t.examples)
    # A prompt that fills the whole budget leaves no answer token: dropped, never fed.
    with pytest.raises(TellError, match="no example is left to train on"):
        tokenize_mixture(MixtureDir(toy_mixture), tok, max_length=3, length_policy="truncate",
                         train_on_prompt=False, progress=False)


def test_answer_and_eos_cuts_are_counted_warned_and_no_task_example_left_is_refused(toy_mixture, tiny_model,
                                                                                    tmp_path, capsys):
    from transformers import AutoTokenizer

    from tell.prompting import encode

    tok = AutoTokenizer.from_pretrained(tiny_model)
    lens = [(r.source, len(p), len(p) + len(a)) for _, r in MixtureDir(toy_mixture).records() for p, a in [encode(tok, r)]]
    cut = min(n for s, _, n in lens if s == "task") - 1  # every task example loses its last token (EOS)
    data = tokenize_mixture(MixtureDir(toy_mixture), tok, max_length=cut, length_policy="truncate",
                            train_on_prompt=False, progress=False)
    for source in ("task", "general"):  # a cut always takes the answer's end and its EOS
        assert data.counts[f"answer_cut_{source}"] == sum(s == source and p < cut < n for s, p, n in lens)
    assert data.counts["answer_cut_task"] == data.counts["examples_task"] > 0
    assert not any(e["input_ids"][-1] == tok.eos_token_id for e in data.examples if e["source"] == 1)
    m = train(train_config(toy_mixture, tiny_model, tmp_path / "cut", max_length=cut, max_steps=1))
    err = capsys.readouterr().err
    assert f"tell: warning: at --max-length {cut}" in err and f"{data.counts['answer_cut_task']:,} task" in err
    assert m["length_policy"]["answer_cut_task"] == data.counts["answer_cut_task"]
    assert json.loads((tmp_path / "cut" / "metrics.json").read_text())["length_policy"] == m["length_policy"]
    # Every task example over the length, dropped: 0 task tokens would be trained -> refused (a sweep cell fails).
    shortest_task = min(n for s, _, n in lens if s == "task")
    assert any(n < shortest_task for s, _, n in lens if s == "general")  # general examples would survive
    code = main(["train", "--mixture", str(toy_mixture), "--model", str(tiny_model), "--out", str(tmp_path / "none"),
                 "--max-length", str(shortest_task - 1), "--length-policy", "drop", "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2 and "0 task tokens would be trained" in err and err.count("\n") == 1
    assert not (tmp_path / "none" / "metrics.json").exists()


def test_packed_loss_equals_padded_loss(toy_mixture, tiny_model):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model)
    model = AutoModelForCausalLM.from_pretrained(tiny_model, attn_implementation="sdpa").eval()
    ex = tokenize_mixture(MixtureDir(toy_mixture), tok, max_length=512, length_policy="truncate",
                          train_on_prompt=True, progress=False).examples[:8]

    def loss(batch):
        labels, _ = batch.pop("labels"), batch.pop("token_source")
        logits = model(**batch, use_cache=False).logits[:, :-1].float()  # a cache disables packed masks
        ce = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.size(-1)), labels[:, 1:].reshape(-1),
                                               ignore_index=IGNORE, reduction="sum")
        return ce / (labels[:, 1:] != IGNORE).sum(), batch["input_ids"].numel()

    packed, packed_cells = loss(Collator(tok.pad_token_id, packed=True, row_length=512)(ex))
    padded, padded_cells = loss(Collator(tok.pad_token_id, packed=False, row_length=512)(ex))
    assert packed_cells < padded_cells  # fewer computed positions
    assert torch.allclose(packed, padded, atol=1e-5), (packed, padded)
    # Without the block-diagonal mask (examples attending to each other) the loss would differ.
    b = Collator(tok.pad_token_id, packed=True, row_length=512)(ex)
    b["position_ids"] = torch.arange(b["input_ids"].shape[1]).expand_as(b["input_ids"])
    leaky, _ = loss(b)
    assert not torch.allclose(leaky, padded, atol=1e-4)


def test_packing_is_checked_numerically_on_the_model(tiny_model):
    """A model whose code ignores restarting position_ids lets packed examples attend to each other: measured."""
    from transformers import LlamaForCausalLM

    from tell.train.model import packing_is_isolated, supports_packing

    class Leaky(LlamaForCausalLM):
        def forward(self, *args, position_ids=None, **kw):
            return super().forward(*args, **kw)

    Leaky.__module__ = LlamaForCausalLM.__module__  # its module's source builds create_causal_mask
    ok, measured = packing_is_isolated(LlamaForCausalLM.from_pretrained(tiny_model))
    assert ok, measured
    leaky = Leaky.from_pretrained(tiny_model)
    assert supports_packing(leaky)  # the source inspection alone is fooled
    ok, measured = packing_is_isolated(leaky)
    assert not ok and "max |packed - alone| logit difference" in measured


def test_packing_that_leaks_falls_back_to_padding_with_a_note_or_is_refused_when_asked_for(
        toy_mixture, tiny_model, tmp_path, capsys, monkeypatch):
    import tell.train.run as run_mod

    monkeypatch.setattr(run_mod, "packing_is_isolated", lambda m: (False, "max |packed - alone| 3.2"))
    assert main(train_argv(toy_mixture, tiny_model, tmp_path / "on", "--packing", "on")) == 2
    err = capsys.readouterr().err
    last = err.strip().splitlines()[-1]  # transformers' own "Loading weights" bar may come before it
    assert last.startswith("tell: error: field 'packing': packed examples attend to each other"), err
    assert main(train_argv(toy_mixture, tiny_model, tmp_path / "auto")) == 0
    assert "padded instead" in capsys.readouterr().err
    metrics = json.loads((tmp_path / "auto" / "metrics.json").read_text())
    config = json.loads((tmp_path / "auto" / "config.json").read_text())
    assert metrics["packing"] is False and config["packing"] is False
    assert "attended to each other" in metrics["packing_note"] and config["packing_note"] == metrics["packing_note"]
