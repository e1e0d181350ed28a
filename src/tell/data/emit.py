"""The mixture in other trainers' formats (`tell prepare --emit`), written beside `mixture.jsonl`, in its order.

    messages           mixture.messages.jsonl            {"messages": [...], "tools": [...]}
    prompt-completion  mixture.prompt-completion.jsonl   {"prompt": [...], "completion": [...], "tools": [...]}

`messages` is TRL's conversational language-modeling format and what LLaMA-Factory reads as `formatting:
sharegpt` with role/content tags; `prompt-completion` is TRL's conversational prompt-completion format,
whose loss TRL computes on the completion alone, as `tell train` does. Each message list is the record's
system text (with the anchor where `prepare` placed it), earlier turns, prompt and answer, as
`tell.data.records.chat_messages` makes it (tool calls as `tool_calls`, tool results with role `tool`);
`tools` appears on rows that offer tools. Other trainers shuffle by default: the order, which is the method,
is kept only where the trainer is told to keep it (LLaMA-Factory: `disable_shuffling: true`).

A leaf module (no config import), so that `config` can take `EMITS` from it.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any, Iterable

import orjson

from tell.data.records import Record, chat_messages
from tell.io import atomic_open

EMITS = ("messages", "prompt-completion")
FILES = {"messages": "mixture.messages.jsonl", "prompt-completion": "mixture.prompt-completion.jsonl"}


def emit_row(kind: str, rec: Record) -> dict[str, Any]:
    msgs = chat_messages(rec)
    row: dict[str, Any] = {"messages": msgs} if kind == "messages" else {"prompt": msgs[:-1], "completion": msgs[-1:]}
    if rec.tools:
        row["tools"] = rec.tools
    return row


NEXT = ".next"  # a new emit waits as FILE.next, like the mixture, until the manifest naming it is in place


def write_emits(folder: Path, kinds: Iterable[str], mixture: list[Record]) -> dict[str, dict]:
    """Each asked-for format, atomically, as FILE.next beside the old files (which stay as the old manifest
    records them until `move_in_emits`); returns {kind: {file, sha256, examples}} for the manifest."""
    out = {}
    for kind in (k for k in EMITS if k in set(kinds)):
        digest = hashlib.sha256()
        with atomic_open(Path(folder) / (FILES[kind] + NEXT), "wb") as f:
            for rec in mixture:
                line = orjson.dumps(emit_row(kind, rec), option=orjson.OPT_APPEND_NEWLINE)
                digest.update(line)
                f.write(line)
        out[kind] = {"file": FILES[kind], "sha256": digest.hexdigest(), "examples": len(mixture)}
    return out


def move_in_emits(folder: Path, emitted: dict[str, dict]) -> None:
    """Once the manifest is written: each FILE.next it records becomes FILE (only when its sha256 is the
    recorded one), and an emit of an earlier prepare that this manifest does not record is removed (it belongs
    to no mixture now). Called again by every reader of the folder (`MixtureDir.verify`): a prepare stopped
    between its manifest and these moves is completed there."""
    import contextlib
    import os

    from tell.io import sha256_file

    folder = Path(folder)
    for kind, entry in emitted.items():
        nxt = folder / (entry["file"] + NEXT)
        if nxt.is_file() and sha256_file(nxt) == entry["sha256"]:
            with contextlib.suppress(FileNotFoundError):
                os.replace(nxt, folder / entry["file"])
    for kind, name in FILES.items():
        if kind not in emitted:
            for stale in (folder / name, folder / (name + NEXT)):
                with contextlib.suppress(FileNotFoundError):
                    stale.unlink()
