"""Shared fixtures: tokenizers and data files built inside the tests (no network, no shared files)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ["TOKENIZERS_PARALLELISM"] = "false"

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"

WORDS = ("the a an of to and in is was for on with as by at from river mountain garden teacher window planet "
         "music bridge forest ocean letter market engine castle island pencil doctor school cloud candle "
         "answer question judge json task general add sort reverse number word sentence yes no thought "
         "hallucination response query capital largest smallest").split()


def write_jsonl(path: Path, rows) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        for r in rows:
            f.write((r if isinstance(r, str) else json.dumps(r)) + "\n")
    return path


@pytest.fixture(scope="session")
def hf_tokenizer_dir(tmp_path_factory) -> Path:
    """A word-level Hugging Face tokenizer (one token per word or punctuation mark)."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {w: i for i, w in enumerate(["<unk>", "<s>", "</s>", "<pad>"] + sorted(set(WORDS)))}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    hf = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", bos_token="<s>", eos_token="</s>",
                                 pad_token="<pad>")
    out = tmp_path_factory.mktemp("tok")
    hf.save_pretrained(out)
    return out


@pytest.fixture(scope="session")
def spm_model(tmp_path_factory) -> Path:
    import random

    import sentencepiece as spm

    rng = random.Random(0)
    out = tmp_path_factory.mktemp("spm")
    text = out / "corpus.txt"
    text.write_text("\n".join(" ".join(rng.choices(WORDS, k=12)) for _ in range(2000)))
    spm.SentencePieceTrainer.train(input=str(text), model_prefix=str(out / "sp"), vocab_size=120,
                                   model_type="bpe", minloglevel=2)
    return out / "sp.model"


def alpaca_rows(n: int, tag: str, seed: int = 0, min_words: int = 3, max_words: int = 12):
    import random

    rng = random.Random(seed)
    return [{"instruction": f"{tag} {i} " + " ".join(rng.choices(WORDS, k=rng.randint(min_words, max_words))),
             "input": "", "output": " ".join(rng.choices(WORDS, k=rng.randint(min_words, max_words)))}
            for i in range(n)]


@pytest.fixture
def data_files(tmp_path) -> dict[str, Path]:
    task = write_jsonl(tmp_path / "task.jsonl", alpaca_rows(60, "task", seed=1))
    gen1 = write_jsonl(tmp_path / "general1.jsonl", alpaca_rows(400, "general", seed=2))
    gen2 = write_jsonl(tmp_path / "general2.jsonl",
                       [{"prompt": r["instruction"].replace("general", "other"), "response": r["output"]}
                        for r in alpaca_rows(300, "other", seed=3)])
    return {"task": task, "general1": gen1, "general2": gen2}
