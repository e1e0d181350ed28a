"""`tell export --gguf f16|q8_0`: the merged model as GGUF, read back by transformers to the same logits."""

from __future__ import annotations

import json
import random

import pytest
import torch

from tell.cli import main
from tell.train.run import train

from conftest import WORDS, train_config, write_jsonl


def test_gguf_export_round_trips_through_transformers(bpe_llama, tmp_path):
    from gguf import GGUFReader
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from tell.prepare import PrepareConfig, prepare

    rng = random.Random(1)
    task = write_jsonl(tmp_path / "task.jsonl", [{"prompt": "judge " + " ".join(rng.choices(WORDS, k=4)),
                                                   "response": "json yes"} for _ in range(20)])
    gen = write_jsonl(tmp_path / "gen.jsonl", [{"prompt": " ".join(rng.choices(WORDS, k=5)),
                                                 "response": " ".join(rng.choices(WORDS, k=3))} for _ in range(60)])
    prepare(PrepareConfig(task=str(task), general=[str(gen)], tokenizer=str(bpe_llama), ratio=2.0,
                          anchor="Answer as the judge.", out=str(tmp_path / "mix"), progress=False))
    train(train_config(tmp_path / "mix", bpe_llama, tmp_path / "run", max_steps=3, learning_rate=2e-2))
    ids = torch.tensor([[1, 40, 41, 42, 43, 44, 45]])
    for kind, tol in (("f16", 2e-2), ("q8_0", 1.5e-1)):
        out = tmp_path / f"exp-{kind}"
        assert main(["export", str(tmp_path / "run"), "--out", str(out), "--gguf", kind]) == 0
        name = f"model.{kind}.gguf"
        doc = json.loads((out / "tell.json").read_text())
        assert doc["gguf"]["file"] == name and doc["merged"] is True
        merged = AutoModelForCausalLM.from_pretrained(out).eval()
        back = AutoModelForCausalLM.from_pretrained(out, gguf_file=name).eval()
        with torch.no_grad():
            want, got = merged(ids).logits, back(ids).logits
        scale = want.abs().max().item()
        assert (want - got).abs().max().item() <= tol * scale, kind  # q/k permutation and every tensor in place
        if kind == "f16":  # a random tiny model's logits are near ties: only f16 keeps every argmax
            assert torch.equal(want.argmax(-1), got.argmax(-1))
        assert torch.corrcoef(torch.stack([want.flatten(), got.flatten()]))[0, 1] > 0.99
        tok = AutoTokenizer.from_pretrained(out, gguf_file=name)
        plain = AutoTokenizer.from_pretrained(out)
        text = "judge the river of json yes"
        assert tok(text, add_special_tokens=False)["input_ids"] == plain(text, add_special_tokens=False)["input_ids"]
        fields = GGUFReader(out / name).fields
        read = lambda k: bytes(fields[k].parts[fields[k].data[0]]).decode()  # noqa: E731
        assert read("tell.anchor.text") == "Answer as the judge." and read("tell.anchor.placement") == "prefix"
        assert read("tokenizer.chat_template") == doc["template"]["chat_template"]
        assert read("tokenizer.ggml.pre") == "gpt-2"  # GPT-2's byte-level rule, named for llama.cpp
    assert (tmp_path / "exp-q8_0" / "model.q8_0.gguf").stat().st_size < (tmp_path / "exp-f16" / "model.f16.gguf").stat().st_size


def test_gguf_export_refuses_what_it_cannot_write(toy_mixture, tiny_model, tmp_path, capsys):
    train(train_config(toy_mixture, tiny_model, tmp_path / "run", max_steps=1))
    capsys.readouterr()
    assert main(["export", str(tmp_path / "run"), "--out", str(tmp_path / "g"), "--gguf", "f16"]) == 2
    err = capsys.readouterr().err
    assert "GGUF export writes byte-level BPE tokenizers" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "g").exists() and not (tmp_path / "g.tmp").exists()


def test_gguf_names_the_pre_tokenizer_for_llama_cpp_or_refuses_and_refuses_scaled_rope(bpe_llama, tmp_path):
    """llama.cpp splits text by the name in tokenizer.ggml.pre: never "default" for a rule it would get wrong."""
    import shutil

    from tell.errors import TellError
    from tell.gguf import _LLAMA3_SPLIT, _pre_name, check_writable

    d = tmp_path / "tok"
    shutil.copytree(bpe_llama, d)
    doc = json.loads((d / "tokenizer.json").read_text())
    assert _pre_name(d, None) == "gpt-2"
    byte_level = doc["pre_tokenizer"] | {"use_regex": False}
    for pre, name in (({"type": "Sequence", "pretokenizers": [
            {"type": "Split", "pattern": {"Regex": _LLAMA3_SPLIT}, "behavior": "Isolated", "invert": False},
            byte_level]}, "llama-bpe"),
            ({"type": "Sequence", "pretokenizers": [{"type": "Digits", "individual_digits": True}, byte_level]},
             None)):
        (d / "tokenizer.json").write_text(json.dumps(doc | {"pre_tokenizer": pre}))
        if name:
            assert _pre_name(d, None) == name
        else:
            with pytest.raises(TellError, match="cannot name this tokenizer's pre-tokenizer"):
                _pre_name(d, None)
    cfg = json.loads((bpe_llama / "config.json").read_text())
    check_writable(bpe_llama, "llama", cfg)
    with pytest.raises(TellError, match="writes plain RoPE; this model scales it \\('llama3'\\)"):
        check_writable(bpe_llama, "llama", cfg | {"rope_scaling": {"rope_type": "llama3", "factor": 8.0}})
