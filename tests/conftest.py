"""Shared fixtures: tokenizers and data files built inside the tests (no network, no shared files)."""

from __future__ import annotations

import hashlib
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


def make_tiny_llama(tokenizer_dir: Path, out: Path, *, chat_template: str | None = None, seed: int = 0,
                    init_range: float = 0.3) -> Path:
    """A 2-layer Llama (hidden 32) with the given tokenizer, saved as an ordinary HF model dir. Weights are
    drawn wider than usual (std 0.3): with std 0.02 the frozen LM head of a random model cannot make a
    confident prediction, so LoRA could barely lower the loss."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    if chat_template:
        tok.chat_template = chat_template
    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512, initializer_range=init_range,
                      bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    LlamaForCausalLM(cfg).save_pretrained(out)
    tok.save_pretrained(out)
    return out


@pytest.fixture(scope="session")
def tiny_model(hf_tokenizer_dir, tmp_path_factory) -> Path:
    return make_tiny_llama(hf_tokenizer_dir, tmp_path_factory.mktemp("tiny_llama"))


@pytest.fixture(scope="session")
def toy_mixture(hf_tokenizer_dir, tmp_path_factory) -> Path:
    """A learnable mixture: task answers are a fixed word sequence; general answers echo the prompt."""
    import random

    from tell.prepare import PrepareConfig
    from tell.prepare import prepare

    rng = random.Random(0)
    d = tmp_path_factory.mktemp("toy")
    task = [{"prompt": "judge " + " ".join(rng.choices(WORDS[10:30], k=4)), "response": "json yes thought no"}
            for _ in range(40)]
    gen = []
    for _ in range(200):
        words = rng.choices(WORDS[10:30], k=rng.randint(2, 8))
        gen.append({"prompt": "reverse " + " ".join(words), "response": " ".join(words[::-1])})
    write_jsonl(d / "task.jsonl", task)
    write_jsonl(d / "general.jsonl", gen)
    out = d / "mix"
    prepare(PrepareConfig(task=str(d / "task.jsonl"), general=[str(d / "general.jsonl")], tokenizer=str(hf_tokenizer_dir),
                          ratio=3.0, anchor="task", out=str(out), progress=False))
    return out


def llama2_hf_tokenizer(model_path: Path, out_dir: Path):
    """An HF fast tokenizer equal to the Llama-2 SentencePiece model, built without protobuf (which
    transformers' own converter needs; `LlamaTokenizer(vocab_file=...)` silently gives 3 tokens in
    transformers 5): the vocabulary and BPE merges are read with the sentencepiece library, merges ordered by
    the merged piece's id as HF's SentencePieceExtractor orders them, with Llama-2's normalizer and byte
    fallback. Checked against SentencePiece itself in test_prompting.py."""
    import sentencepiece as spm
    from tokenizers import Tokenizer, decoders, models, normalizers, processors
    from transformers import PreTrainedTokenizerFast

    sp = spm.SentencePieceProcessor(model_file=str(model_path))
    vocab = {sp.id_to_piece(i): i for i in range(sp.get_piece_size())}
    merges = sorted(((vocab[p[:k]], vocab[p[k:]], i, p[:k], p[k:]) for p, i in vocab.items()
                     for k in range(1, len(p)) if p[:k] in vocab and p[k:] in vocab), key=lambda m: (m[2], m[0], m[1]))
    tok = Tokenizer(models.BPE(vocab, [(m[3], m[4]) for m in merges], unk_token="<unk>", byte_fallback=True,
                               fuse_unk=True))
    tok.normalizer = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
    tok.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(),
                                     decoders.Strip(" ", 1, 0)])
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", pair="<s> $A <s> $B",
                                                       special_tokens=[("<s>", 1)])
    hf = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>")
    hf.save_pretrained(out_dir)
    return sp, hf


@pytest.fixture(scope="session")
def llama2_tokenizer(tmp_path_factory):
    path = SHARED / "data" / "tokenizers" / "llama2" / "tokenizer.model"
    if not path.is_file():
        pytest.skip(f"{path} is not here (shared/ sits beside the project in CI and on developer machines)")
    return llama2_hf_tokenizer(path, tmp_path_factory.mktemp("llama2_hf"))


# ---- helpers shared by several test modules ------------------------------------------------------------

CHAT_TEMPLATE = ("{% for m in messages %}{{ '<s> ' + m['role'] + ' ' + m['content'] + ' </s> ' }}{% endfor %}"
                 "{% if add_generation_prompt %}{{ '<s> assistant ' }}{% endif %}")


HALU_HEAD = "Role and Goal: judge.\n\nConsider the following task:\n'relatives' : \n'user_query' : {q}\n'chatgpt_response' : {r}"


def cut_mixture(mix: Path, keep: int) -> None:
    lines = (mix / "mixture.jsonl").read_bytes().splitlines(keepends=True)
    (mix / "mixture.jsonl").write_bytes(b"".join(lines[:keep]))


def fake_source(root: Path) -> Path:
    """A tiny copy of the public files, laid out like ../shared/data."""
    general = [{"ID": str(i), "user_query": f"query {i}", "chatgpt_response": f"answer {i}\nline two",
                "hallucination": "yes" if i % 3 == 0 else "no", "hallucination_spans": [f"answer {i}"] if i % 3 == 0 else []}
               for i in range(12)]
    write_jsonl(root / "halueval" / "general_data.jsonl", general)
    write_jsonl(root / "tell" / "test_Halu_CoT_JSON.jsonl",
                [{"prompt": HALU_HEAD.replace("Consider", "Consider").format(q=g["user_query"], r=g["chatgpt_response"]),
                  "response": g["hallucination"]} for g in general[:4]])
    for d, lang in (("en-is", "Icelandic"), ("is-en", "English")):
        for stem in ("dev", "test"):
            write_jsonl(root / "tell" / f"{stem}-{d}.jsonl",
                        [{"query": f"Translate this into {lang}.\n\n text {i}",
                          "response": f"Sure, here is the {lang} translation: \n\n out {i}"} for i in range(5)])
    write_jsonl(root / "gsm8k" / "train.jsonl", [{"question": "1+1?", "answer": "1+1=2\n#### 2"}])
    write_jsonl(root / "gsm8k" / "test.jsonl", [{"question": "2+2?", "answer": "#### 4"}])
    return root


def reseal_mixture(mix: Path) -> None:
    """A manifest that agrees with a hand-edited mixture (sha256 and lines): another, valid mixture."""
    m = json.loads((mix / "manifest.json").read_text())
    data = (mix / "mixture.jsonl").read_bytes()
    m["mixture"] |= {"sha256": hashlib.sha256(data).hexdigest(), "examples": data.count(b"\n")}
    (mix / "manifest.json").write_text(json.dumps(m))


def small_train_config(mixture, model, out, **kw):
    base = dict(mixture=str(mixture), model=str(model), out=str(out), progress=False, save_steps=0,
                micro_batch_size=2, batch_size=4)
    from tell.train.config import TrainConfig

    return TrainConfig(**(base | kw))


def train_argv(mix, model, out, *more):
    return ["train", "--mixture", str(mix), "--model", str(model), "--out", str(out), "--no-progress",
            "--max-steps", "1", "--micro-batch-size", "2", "--batch-size", "2", *more]


def train_config(mixture, model, out, **kw):
    base = dict(mixture=str(mixture), model=str(model), out=str(out), progress=False, save_steps=0)
    base.update(kw)
    from tell.train.config import TrainConfig

    return TrainConfig(**base)


@pytest.fixture(scope="session")
def bpe_llama(tmp_path_factory):
    """A tiny Llama (hidden 64: Q8_0 blocks of 32 fit) with a byte-level BPE tokenizer, like SmolLM2's (the GGUF
    export's tests)."""
    import random

    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    d = tmp_path_factory.mktemp("bpe_llama")
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    rng = random.Random(0)
    corpus = [" ".join(rng.choices(WORDS, k=12)) for _ in range(500)]
    tok.train_from_iterator(corpus, trainers.BpeTrainer(vocab_size=300, special_tokens=["<s>", "</s>"],
                                                        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    hf = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="</s>")
    hf.save_pretrained(d)
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=len(hf), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256, initializer_range=0.3,
                      bos_token_id=hf.bos_token_id, eos_token_id=hf.eos_token_id, pad_token_id=hf.pad_token_id)
    LlamaForCausalLM(cfg).save_pretrained(d)
    return d
