"""`tell.models`: models that are not decoder-only causal LMs are refused by train and eval."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tell.cli import main
from tell.errors import TellError


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


def test_a_model_whose_vocab_is_smaller_than_its_tokenizer_is_refused_in_one_line(hf_tokenizer_dir, toy_mixture,
                                                                                 tmp_path, capsys):
    """A config whose vocab_size lies (fewer embedding rows than tokens) crashed mid-run with an index error."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tok = AutoTokenizer.from_pretrained(hf_tokenizer_dir)
    out = tmp_path / "short_vocab"
    torch.manual_seed(0)
    LlamaForCausalLM(LlamaConfig(vocab_size=len(tok) // 2, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                 num_attention_heads=4, num_key_value_heads=2)).save_pretrained(out)
    tok.save_pretrained(out)
    assert main(_train_argv(toy_mixture, out, tmp_path / "run")) == 2
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("tell: error:")]
    assert len(lines) == 1 and "Traceback" not in err and f"the tokenizer has {len(tok):,} tokens but the model's embedding only" in lines[0]
    assert not (tmp_path / "run" / "adapter").exists()
    data = tmp_path / "e.jsonl"
    data.write_text(json.dumps({"prompt": "a b", "response": "c", "meta": {"kind": "cloze"}}) + "\n")
    assert main(["eval", "--model", str(out), "--data", str(data), "--out", str(tmp_path / "ev"),
                 "--greedy", "--no-progress", "--metric", "cloze"]) == 2
    assert "embedding only" in capsys.readouterr().err and not (tmp_path / "ev" / "metrics.json").exists()


def test_a_name_meant_as_a_path_is_refused_as_no_such_folder_and_a_hub_id_is_tried_as_one(tmp_path, monkeypatch):
    """`--tokenizer ./no/such/dir` said transformers' "Repo id must be in the form ..."; `owner/name` must still
    reach the Hub (offline here: its own error, not "no such folder")."""
    from tell.data.tokens import load_counter
    from tell.models import load_tokenizer, looks_like_path

    monkeypatch.chdir(tmp_path)
    for name in ("./no/such/dir", "no/such/dir", "/no/such", "~/no_such_tokenizer_here", "tok.json", "a/b.model",
                 "C:\\models\\tok"):
        assert looks_like_path(name), name
    for name in ("gpt2", "owner/name", "Qwen/Qwen2.5-0.5B-Instruct", "meta-llama/Llama-2-7b-chat-hf"):
        assert not looks_like_path(name), name
    for name in ("./no/such/dir", "no/such/dir", "tok.json"):
        with pytest.raises(TellError, match=f"^{name}: no such folder"):
            load_counter(name)
        with pytest.raises(TellError, match=f"^{name}: no such model folder"):
            load_tokenizer(name)
    for load in (load_counter, load_tokenizer):
        with pytest.raises(TellError) as e:
            load("owner/name")
        assert "no such" not in str(e.value) and "owner/name" in str(e.value)


def test_commands_ignore_the_named_library_deprecations_only():
    import warnings

    from tell.models import ignore_library_warnings

    known = "`is_gradient_checkpointing` is deprecated and will be removed in v6."
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        ignore_library_warnings()
        for module, text in (("transformers.modeling_utils", known), ("transformers.trainer", "other is deprecated"),
                             ("tell.prepare", known)):
            warnings.warn_explicit(text, FutureWarning, "x.py", 1, module=module)
    assert [(w.message.args[0]) for w in seen] == ["other is deprecated", known]
