"""Models that are not decoder-only causal LMs, packing that lets examples see each other, and mixture records
that would train on something else than they say are refused or fall back in plain words (issue 16)."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest

from tell.cli import main
from tell.errors import TellError


def _reseal(mix: Path) -> None:
    m = json.loads((mix / "manifest.json").read_text())
    data = (mix / "mixture.jsonl").read_bytes()
    m["mixture"] |= {"sha256": hashlib.sha256(data).hexdigest(), "examples": data.count(b"\n")}
    (mix / "manifest.json").write_text(json.dumps(m))


def _train_argv(mix, model, out, *more):
    return ["train", "--mixture", str(mix), "--model", str(model), "--out", str(out), "--no-progress",
            "--max-steps", "1", "--micro-batch-size", "2", "--batch-size", "2", *more]


@pytest.fixture(scope="module")
def tiny_bert(hf_tokenizer_dir, tmp_path_factory) -> Path:
    import torch
    from transformers import AutoTokenizer, BertConfig, BertForMaskedLM

    out = tmp_path_factory.mktemp("tiny_bert")
    tok = AutoTokenizer.from_pretrained(hf_tokenizer_dir)
    torch.manual_seed(0)
    BertForMaskedLM(BertConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                               num_attention_heads=4, max_position_embeddings=512)).save_pretrained(out)
    tok.save_pretrained(out)
    return out


def test_an_encoder_model_is_refused_by_train_and_eval(tiny_bert, toy_mixture, tmp_path, capsys):
    assert main(_train_argv(toy_mixture, tiny_bert, tmp_path / "run")) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "is an encoder (bert, bidirectional attention)" in err, err
    assert "expected a decoder-only causal LM" in err and not (tmp_path / "run" / "adapter").exists()
    data = tmp_path / "e.jsonl"
    data.write_text(json.dumps({"prompt": "a b", "response": "c", "meta": {"kind": "cloze"}}) + "\n")
    assert main(["eval", "--model", str(tiny_bert), "--data", str(data), "--out", str(tmp_path / "ev"),
                 "--greedy", "--no-progress", "--metric", "cloze"]) == 2
    assert "is an encoder (bert" in capsys.readouterr().err


def test_encoder_decoder_and_masked_lm_heads_are_refused_decoder_bert_and_llama_pass(tiny_model):
    from transformers import AutoConfig, BertConfig

    from tell.models import check_decoder_only

    with pytest.raises(TellError, match="is an encoder-decoder model"):
        check_decoder_only(BertConfig(is_encoder_decoder=True), "m")
    with pytest.raises(TellError, match="saved as BertForMaskedLM"):
        check_decoder_only(BertConfig(is_decoder=True, architectures=["BertForMaskedLM"]), "m")
    check_decoder_only(BertConfig(is_decoder=True), "m")  # BERT made a decoder: causal attention
    check_decoder_only(AutoConfig.from_pretrained(tiny_model), str(tiny_model))


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
    assert main(_train_argv(toy_mixture, tiny_model, tmp_path / "on", "--packing", "on")) == 2
    err = capsys.readouterr().err
    last = err.strip().splitlines()[-1]  # transformers' own "Loading weights" bar may come before it
    assert last.startswith("tell: error: field 'packing': packed examples attend to each other"), err
    assert main(_train_argv(toy_mixture, tiny_model, tmp_path / "auto")) == 0
    assert "padded instead" in capsys.readouterr().err
    metrics = json.loads((tmp_path / "auto" / "metrics.json").read_text())
    config = json.loads((tmp_path / "auto" / "config.json").read_text())
    assert metrics["packing"] is False and config["packing"] is False
    assert "attended to each other" in metrics["packing_note"] and config["packing_note"] == metrics["packing_note"]


@pytest.mark.parametrize("edit,expected", [
    (lambda r: r | {"response": ""}, "field 'response': is empty"),
    (lambda r: r | {"response": "  \n"}, "field 'response': is empty"),
    (lambda r: r | {"prompt": ["a", "b"]}, "field 'prompt': expected a string, got list"),
    (lambda r: r | {"history": [{"role": "user"}]}, "field 'history[0]': expected {\"role\""),
    (lambda r: r | {"history": [{"role": "narrator", "content": "x"}]}, "field 'history[0]'"),
    (lambda r: r | {"history": "earlier"}, "field 'history': expected a list of turns, got str"),
], ids=["empty", "blank", "prompt-list", "history-no-content", "history-role", "history-text"])
def test_bad_mixture_records_are_refused_with_file_line_and_field(toy_mixture, tiny_model, tmp_path, capsys,
                                                                  edit, expected):
    mix = tmp_path / "mix"
    shutil.copytree(toy_mixture, mix)
    lines = (mix / "mixture.jsonl").read_text().splitlines()
    lines[2] = json.dumps(edit(json.loads(lines[2])))
    (mix / "mixture.jsonl").write_text("\n".join(lines) + "\n")
    _reseal(mix)
    assert main(_train_argv(mix, tiny_model, tmp_path / "run")) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "mixture.jsonl:3: " in err and expected in err, err
    assert not (tmp_path / "run").exists()


def test_a_mixture_whose_answers_are_all_empty_is_refused(toy_mixture, tiny_model, tmp_path, capsys):
    mix = tmp_path / "mix"
    shutil.copytree(toy_mixture, mix)
    rows = [json.loads(x) | {"response": ""} for x in (mix / "mixture.jsonl").read_text().splitlines()]
    (mix / "mixture.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    _reseal(mix)
    assert main(_train_argv(mix, tiny_model, tmp_path / "run")) == 2
    assert "mixture.jsonl:1: " in capsys.readouterr().err
