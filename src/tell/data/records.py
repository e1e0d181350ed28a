"""The one internal record every input format normalises to.

A record is one supervised example: optional system text, optional earlier turns (`history`, for
multi-turn chats), the user part (`prompt`) whose answer is trained, and the answer (`response`).
`source` says whether it is task or general data; `origin` and `row` point back to the input file
and row it came from, so nothing in a mixture is anonymous.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

TASK, GENERAL = "task", "general"


@dataclass
class Record:
    prompt: str
    response: str
    system: str = ""
    # Earlier turns of a multi-turn chat, oldest first: [{"role": "user"|"assistant", "content": str}].
    history: list[dict[str, str]] = field(default_factory=list)
    source: str = TASK
    origin: str = ""        # the input (file path or Hub id) the record came from
    row: int = 0            # 1-based line (JSONL/CSV) or 0-based row index (JSON/Parquet/Hub) in `origin`
    anchored: bool = False  # True once an anchor prompt has been applied (task records only)
    tokens: int | None = None  # token count of `render_text`, filled by the token counter
    repeat: int = 0            # >0 only for extra copies made by `--allow-repeat`
    # Evaluation facts a builder attaches (gold label, choices, reference text, task kind); never trained on.
    meta: dict[str, Any] = field(default_factory=dict)

    @cached_property
    def key(self) -> str:
        """Identity of the example's content (not where it came from): equal keys = exact duplicates.
        Cached: records are not mutated in place (copies are made with `dataclasses.replace`)."""
        parts = [self.system, *(f"{t['role']}\x1f{t['content']}" for t in self.history), self.prompt, self.response]
        return hashlib.blake2b("\x1e".join(parts).encode("utf-8"), digest_size=16).hexdigest()

    def to_json(self) -> dict[str, Any]:
        d = {"id": self.uid(), "source": self.source, "origin": self.origin, "row": self.row,
             "system": self.system, "history": self.history, "prompt": self.prompt,
             "response": self.response, "anchored": self.anchored, "tokens": self.tokens,
             "repeat": self.repeat}
        if self.meta:
            d["meta"] = self.meta
        return d

    def uid(self) -> str:
        base = f"{self.source}:{self.origin}:{self.row}"
        return f"{base}#r{self.repeat}" if self.repeat else base


def render_text(rec: Record) -> str:
    """The text whose tokens are counted: every part the model is trained on, joined by newlines.

    Chat-template tokens are model specific and are not counted, so budgets mean the same thing for
    every model (the paper counts with the Llama-2 tokenizer on the data text).
    """
    parts = [rec.system] + [t["content"] for t in rec.history] + [rec.prompt, rec.response]
    return "\n".join(p for p in parts if p)


def record_from_json(d: dict[str, Any]) -> Record:
    """Inverse of `Record.to_json` (the `tell` format that `mixture.jsonl` uses)."""
    for key in ("prompt", "response", "system"):
        if not isinstance(d.get(key, ""), str):
            raise ValueError(f"field '{key}': expected a string, got {type(d[key]).__name__}")
    return Record(prompt=d["prompt"], response=d["response"], system=d.get("system", ""),
                  history=list(d.get("history", [])), source=d.get("source", TASK),
                  origin=d.get("origin", ""), row=int(d.get("row", 0)),
                  anchored=bool(d.get("anchored", False)), tokens=d.get("tokens"),
                  repeat=int(d.get("repeat", 0)), meta=dict(d.get("meta") or {}))
