"""Counting tokens with the tokenizer the user names: a SentencePiece `.model` file, or a Hugging Face
tokenizer (local dir or Hub id).

The paper counts with the Llama-2 tokenizer. For a `.model` file we use the `sentencepiece` library
directly: `LlamaTokenizer(vocab_file=...)` in transformers 5 silently builds a 3-token vocabulary, and the
converted fast tokenizer's counts differ slightly from SentencePiece's own.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, Sequence

from tell.errors import TellError
from tell.io import append, sha256_file
from tell.io import looks_like_path

_SAMPLE = "Token-efficient leverage learning counts tokens."


class TokenCounter(Protocol):
    def count(self, texts: Sequence[str]) -> list[int]: ...
    def describe(self) -> dict: ...


@dataclass
class SentencePieceCounter:
    path: str
    threads: int = 0  # 0: one per core

    def __post_init__(self):
        import sentencepiece as spm

        try:
            self._sp = spm.SentencePieceProcessor(model_file=self.path)
        except Exception as e:
            raise TellError(f"cannot load as a SentencePiece model ({e})", file=self.path) from e
        self._threads = self.threads or (os.cpu_count() or 1)
        _check(self, self._sp.get_piece_size())

    def count(self, texts: Sequence[str]) -> list[int]:
        if not texts:
            return []
        return [len(ids) for ids in self._sp.encode(list(texts), num_threads=self._threads)]

    def describe(self) -> dict:
        return {"kind": "sentencepiece", "name": self.path, "sha256": sha256_file(self.path),
                "vocab_size": self._sp.get_piece_size()}


@dataclass
class HFCounter:
    name: str
    trust_remote_code: bool = False

    def __post_init__(self):
        from transformers import AutoTokenizer

        try:
            self._tok = AutoTokenizer.from_pretrained(self.name, trust_remote_code=self.trust_remote_code)
        except Exception as e:
            raise TellError(f"cannot load tokenizer '{self.name}' ({type(e).__name__}: {e}); expected a "
                            "tokenizer dir, a Hub id, or a SentencePiece .model file") from e
        _check(self, len(self._tok))

    def count(self, texts: Sequence[str]) -> list[int]:
        if not texts:
            return []
        return [len(ids) for ids in self._tok(list(texts), add_special_tokens=False)["input_ids"]]

    def describe(self) -> dict:
        return {"kind": "huggingface", "name": self.name, "class": type(self._tok).__name__,
                "vocab_size": len(self._tok)}


def _check(counter, vocab_size: int) -> None:
    # Guard against tokenizers that load "fine" but encode everything to nothing (see GUIDE, traps).
    if vocab_size < 10 or counter.count([_SAMPLE])[0] == 0:
        name = getattr(counter, "path", None) or getattr(counter, "name", "?")
        raise TellError(f"tokenizer '{name}' looks broken (vocabulary of {vocab_size}, encodes a sample "
                        "text to no tokens)")


def load_counter(name: str, *, trust_remote_code: bool = False) -> TokenCounter:
    """A `.model` file -> SentencePiece; a dir holding only `tokenizer.model` -> SentencePiece; else HF. A name
    meant as a local path (`models.looks_like_path`) that names nothing here is refused as such, not tried as a
    Hub id."""
    if name.startswith("~"):
        name = str(Path(name).expanduser())
    p = Path(name)
    if p.is_file() and p.suffix == ".model":
        return SentencePieceCounter(str(p))
    if p.is_dir() and (p / "tokenizer.model").is_file() and not any(
            (p / f).is_file() for f in ("tokenizer.json", "tokenizer_config.json")):
        return SentencePieceCounter(str(p / "tokenizer.model"))
    if p.suffix == ".model" and not p.exists():
        raise TellError("no such file", file=name)
    if not p.exists() and looks_like_path(name):
        raise TellError("no such folder or file; expected a tokenizer folder, a SentencePiece .model file or a Hub "
                        "id (owner/name)", file=name)
    if p.is_file():
        raise TellError("is a file; expected a tokenizer folder (tokenizer.json, tokenizer_config.json), a "
                        "SentencePiece .model file or a Hub id (owner/name)", file=name)
    return HFCounter(name, trust_remote_code=trust_remote_code)


def tokenizer_identity(counter: TokenCounter) -> str:
    """What fixes a tokenizer's counts: the .model file's sha256, a local tokenizer folder's files' sha256, or
    the Hub id (whose files the user's cache pins)."""
    import hashlib

    d = counter.describe()
    if d.get("sha256"):
        return d["sha256"]
    p = Path(d["name"])
    if p.is_dir():
        h = hashlib.sha256()
        for f in sorted(p.iterdir()):
            if f.is_file() and (f.name.startswith("tokenizer") or f.name.endswith((".model", ".json", ".txt"))):
                h.update(f.name.encode() + b"\0" + sha256_file(f).encode())
        return h.hexdigest()
    return hashlib.sha256(d["name"].encode()).hexdigest()


class CachedCounter:
    """Token counts cached per (tokenizer identity, text hash) in a folder shared by every cell of a sweep.

    Concurrent writers (cells in parallel, on several machines over NFS) never share a file: each process
    appends to a shard of its own (20-byte records: a 16-byte blake2b of the text, a 4-byte count) and
    readers merge every shard; a record torn by a killed process is ignored. Counts are exactly the inner
    counter's, so a mixture prepared with the cache is byte-identical to one prepared without it."""

    RECORD = 20

    def __init__(self, inner: TokenCounter, folder: str | Path):
        import uuid

        self.inner = inner
        if Path(folder).exists() and not Path(folder).is_dir():
            raise TellError("is a file; expected a folder for the token-count cache (--token-cache)", file=str(folder))
        self.folder = Path(folder) / tokenizer_identity(inner)[:32]
        self.folder.mkdir(parents=True, exist_ok=True)
        self._shard = self.folder / f"{os.uname().nodename}-{os.getpid()}-{uuid.uuid4().hex[:8]}.bin"
        self._known: dict[bytes, int] = {}
        for shard in sorted(self.folder.glob("*.bin")):
            data = shard.read_bytes()
            for i in range(0, len(data) - len(data) % self.RECORD, self.RECORD):
                self._known[data[i:i + 16]] = int.from_bytes(data[i + 16:i + 20], "little")
        self.hits = self.misses = 0

    def count(self, texts: Sequence[str]) -> list[int]:
        import hashlib

        keys = [hashlib.blake2b(t.encode("utf-8"), digest_size=16).digest() for t in texts]
        todo = [i for i, k in enumerate(keys) if k not in self._known]
        if todo:
            counts = self.inner.count([texts[i] for i in todo])
            append(self._shard, b"".join(keys[i] + n.to_bytes(4, "little") for i, n in zip(todo, counts)))
            self._known.update((keys[i], n) for i, n in zip(todo, counts))
        self.hits += len(texts) - len(todo)
        self.misses += len(todo)
        return [self._known[k] for k in keys]

    def describe(self) -> dict:
        return self.inner.describe()
