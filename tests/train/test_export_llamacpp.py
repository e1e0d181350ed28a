"""`tell export --gguf`'s file run by llama.cpp itself (llama-cpp-python): the tokens, the logits and the chat
template a llama.cpp or Ollama user gets are the merged model's. Skipped where llama-cpp-python is not
installed (it builds llama.cpp from source: `pip install llama-cpp-python`, a few minutes on 2 cores)."""

from __future__ import annotations

import json
import random

import pytest
import torch

from tell.cli import main
from tell.train.run import train

from conftest import WORDS, train_config, write_jsonl

llama_cpp = pytest.importorskip("llama_cpp")


def test_llama_cpp_runs_the_exported_gguf_with_the_merged_models_tokens_logits_and_template(bpe_llama, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from tell.prepare import PrepareConfig, prepare

    rng = random.Random(2)
    task = write_jsonl(tmp_path / "task.jsonl", [{"prompt": "judge " + " ".join(rng.choices(WORDS, k=4)),
                                                   "response": "json yes"} for _ in range(20)])
    gen = write_jsonl(tmp_path / "gen.jsonl", [{"prompt": " ".join(rng.choices(WORDS, k=5)),
                                                 "response": " ".join(rng.choices(WORDS, k=3))} for _ in range(60)])
    prepare(PrepareConfig(task=str(task), general=[str(gen)], tokenizer=str(bpe_llama), ratio=2.0,
                          anchor="Answer as the judge.", out=str(tmp_path / "mix"), progress=False))
    train(train_config(tmp_path / "mix", bpe_llama, tmp_path / "run", max_steps=3, learning_rate=2e-2))
    text = "judge the river of json yes"
    for kind in ("f16", "q8_0"):
        out = tmp_path / f"exp-{kind}"
        assert main(["export", str(tmp_path / "run"), "--out", str(out), "--gguf", kind]) == 0
        doc = json.loads((out / "tell.json").read_text())
        llm = llama_cpp.Llama(model_path=str(out / doc["gguf"]["file"]), n_ctx=64, n_threads=1, logits_all=True,
                              verbose=False)
        ids = AutoTokenizer.from_pretrained(out)(text, add_special_tokens=False)["input_ids"]
        assert llm.tokenize(text.encode(), add_bos=False, special=False) == ids  # the pre-tokenizer llama.cpp chose
        assert llm.metadata["tokenizer.chat_template"] == doc["template"]["chat_template"]
        assert llm.metadata["tell.anchor.text"] == "Answer as the judge."
        llm.eval(ids)
        got = torch.tensor(llm.scores[:len(ids)], dtype=torch.float32)
        with torch.no_grad():
            want = AutoModelForCausalLM.from_pretrained(out).eval()(torch.tensor([ids])).logits[0].float()
        assert got.shape == want.shape
        assert torch.corrcoef(torch.stack([want.flatten(), got.flatten()]))[0, 1] > 0.99, kind
        if kind == "f16":  # a random tiny model's logits are near ties: only f16 keeps every argmax
            assert (want - got).abs().max().item() <= 2e-2 * want.abs().max().item()
            assert torch.equal(want.argmax(-1), got.argmax(-1))
