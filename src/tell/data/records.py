"""The one internal record every input format normalises to.

A record is one supervised example: optional system text, optional earlier turns (`history`, for
multi-turn chats), the user part (`prompt`) whose answer is trained, and the answer (`response`).
`source` says whether it is task or general data; `origin` and `row` point back to the input file
and row it came from, so nothing in a mixture is anonymous.

Tool use travels in the record too: `tools` (the tool definitions a chat offers, JSON schemas as the file
gives them), turns whose role is `tool_call` (the assistant calls a tool; the content is the call as JSON
text) or `tool` (a tool's result), and `prompt_role` / `response_role` when the last exchange is a tool
result answered by the assistant, or a user turn answered by a tool call. `chat_messages` turns a record into
the message list Hugging Face chat templates and TRL take.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

TASK, GENERAL = "task", "general"


@dataclass
class Record:
    prompt: str
    response: str
    system: str = ""
    # Earlier turns of a multi-turn chat, oldest first: [{"role": ROLE, "content": str}], ROLE one of `ROLES`
    # (user-side turns: user, tool; assistant-side turns: assistant, tool_call; the two sides alternate).
    history: list[dict[str, str]] = field(default_factory=list)
    source: str = TASK
    origin: str = ""        # the input file (a shard's own path for folders and globs) or Hub id it came from
    row: int = 0            # 1-based line (JSONL/CSV) or 1-based record number (JSON/Parquet/Hub) in `origin`
    anchored: bool = False  # True once an anchor prompt has been applied (task records only)
    tokens: int | None = None  # token count of `render_text`, filled by the token counter
    repeat: int = 0            # >0 only for extra copies made by `--allow-repeat`
    # Evaluation facts a builder attaches (gold label, choices, reference text, task kind); never trained on.
    meta: dict[str, Any] = field(default_factory=dict)
    tools: list[Any] = field(default_factory=list)  # tool definitions offered to the model (JSON schemas)
    prompt_role: str = "user"                      # "tool" when the prompt is a tool's result
    response_role: str = "assistant"               # "tool_call" when the answer is a call of a tool

    @cached_property
    def key(self) -> str:
        """Identity of the example's content (not where it came from): equal keys = exact duplicates.
        Cached: records are not mutated in place (copies are made with `dataclasses.replace`)."""
        parts = [self.system, *(f"{t['role']}\x1f{t['content']}" for t in self.history), self.prompt, self.response]
        if self.tools or self.prompt_role != "user" or self.response_role != "assistant":  # (older keys unchanged)
            parts += [tools_text(self), self.prompt_role, self.response_role]
        return hashlib.blake2b("\x1e".join(parts).encode("utf-8"), digest_size=16).hexdigest()

    def to_json(self) -> dict[str, Any]:
        d = {"id": self.uid(), "source": self.source, "origin": self.origin, "row": self.row,
             "system": self.system, "history": self.history, "prompt": self.prompt,
             "response": self.response, "anchored": self.anchored, "tokens": self.tokens,
             "repeat": self.repeat}
        if self.meta:
            d["meta"] = self.meta
        # Written only when used, so that a mixture without tools is byte-identical to one made before them.
        if self.tools:
            d["tools"] = self.tools
        if self.prompt_role != "user":
            d["prompt_role"] = self.prompt_role
        if self.response_role != "assistant":
            d["response_role"] = self.response_role
        return d

    def uid(self) -> str:
        base = f"{self.source}:{self.origin}:{self.row}"
        return f"{base}#r{self.repeat}" if self.repeat else base


def render_text(rec: Record) -> str:
    """The text whose tokens are counted: every part the model is trained on, joined by newlines.

    Chat-template tokens are model specific and are not counted, so budgets mean the same thing for
    every model (the paper counts with the Llama-2 tokenizer on the data text).
    """
    parts = [rec.system, tools_text(rec)] + [t["content"] for t in rec.history] + [rec.prompt, rec.response]
    return "\n".join(p for p in parts if p)


def tools_text(rec: Record) -> str:
    """The tool definitions as JSON text (counted, and shown to models whose template has no place for them)."""
    return json.dumps(rec.tools, ensure_ascii=False) if rec.tools else ""


def record_from_json(d: dict[str, Any]) -> Record:
    """Inverse of `Record.to_json` (the `tell` format that `mixture.jsonl` uses)."""
    for key in ("prompt", "response", "system"):
        if not isinstance(d.get(key, ""), str):
            raise ValueError(f"field '{key}': expected a string, got {type(d[key]).__name__}")
    if not d["response"].strip():  # prepare refuses empty answers; one here would train on EOS alone
        raise ValueError("field 'response': is empty; expected the answer text")
    _check_history(d.get("history", []))
    return Record(prompt=d["prompt"], response=d["response"], system=d.get("system", ""),
                  history=list(d.get("history", [])), source=d.get("source", TASK),
                  origin=d.get("origin", ""), row=int(d.get("row", 0)),
                  anchored=bool(d.get("anchored", False)), tokens=d.get("tokens"),
                  repeat=int(d.get("repeat", 0)), meta=dict(d.get("meta") or {}),
                  tools=list(d.get("tools") or []), prompt_role=d.get("prompt_role", "user"),
                  response_role=d.get("response_role", "assistant"))


def _check_history(history: Any) -> None:
    """A mixture record's earlier turns: a list of {"role": one of ROLES, "content": text}, never dropped."""
    if not isinstance(history, list):
        raise ValueError(f"field 'history': expected a list of turns, got {type(history).__name__}")
    for i, t in enumerate(history):
        if not isinstance(t, dict) or t.get("role") not in ROLES or not isinstance(t.get("content"), str):
            raise ValueError(f"field 'history[{i}]': expected {{\"role\": one of {list(ROLES)}, \"content\": "
                             f"text}}, got {json.dumps(t)[:80]}")


# ---- tool use and chat messages ----------------------------------------------------------------------------

ROLES = ("user", "assistant", "tool", "tool_call")
USER_SIDE, ASSISTANT_SIDE = ("user", "tool"), ("assistant", "tool_call")
# The plain rendering of tool use, for templates (and tell's plain template) that have no place for it.
TOOLS_TEXT = "Tools you can call (JSON):\n{tools}"
TOOL_CALL_TEXT = "<tool_call>\n{content}\n</tool_call>"
TOOL_RESULT_TEXT = "<tool_response>\n{content}\n</tool_response>"


def plain_content(role: str, content: str) -> str:
    """A turn's text in the plain rendering: tool calls and tool results wrapped in their tags."""
    if role == "tool_call":
        return TOOL_CALL_TEXT.format(content=content)
    if role == "tool":
        return TOOL_RESULT_TEXT.format(content=content)
    return content


def tool_calls(content: str) -> list[dict] | None:
    """A `tool_call` turn's JSON text ({"name", "arguments"}, a list of them, or OpenAI's {"type": "function",
    "function": {...}}) as Hugging Face `tool_calls`; None when it is not calls with a name."""
    try:
        value = json.loads(content)
    except ValueError:
        return None
    from tell.io import duplicate_key

    if duplicate_key(content) is not None:  # as an object, one of the two values would go: kept as the text it is
        return None
    out = []
    for call in value if isinstance(value, list) else [value]:
        fn = call.get("function") if isinstance(call, dict) and isinstance(call.get("function"), dict) else call
        if not isinstance(fn, dict) or not isinstance(fn.get("name"), str):
            return None
        args = fn.get("arguments", {})
        if isinstance(args, str):  # OpenAI writes the arguments as JSON text; templates take an object
            if duplicate_key(args) is not None:
                return None  # as an object, one of the two values would go: the turn stays the text it is
            try:
                args = json.loads(args)
            except ValueError:
                pass
        out.append({"type": "function", "function": {"name": fn["name"], "arguments": args}})
    return out or None


def chat_messages(rec: Record, *, answer: bool = True, native_tools: bool = True) -> list[dict[str, Any]]:
    """The record as chat messages: system, earlier turns, the prompt and (unless `answer=False`) the answer,
    in the shape Hugging Face chat templates and TRL take (a tool call is an assistant message with
    `tool_calls`, a tool result has role `tool`). `native_tools=False` renders tool use as plain text instead
    (`plain_content`; the tool definitions go to the end of the system text) for templates without it."""
    system = rec.system
    if rec.tools and not native_tools:
        system = "\n\n".join(p for p in (system, TOOLS_TEXT.format(tools=tools_text(rec))) if p)
    msgs: list[dict[str, Any]] = [{"role": "system", "content": system}] if system else []
    turns = [*rec.history, {"role": rec.prompt_role, "content": rec.prompt}]
    if answer:
        turns.append({"role": rec.response_role, "content": rec.response})
    for t in turns:
        role, content = t["role"], t["content"]
        calls = tool_calls(content) if role == "tool_call" and native_tools else None
        if calls:
            msgs.append({"role": "assistant", "content": "", "tool_calls": calls})
        elif role == "tool" and native_tools:
            msgs.append({"role": "tool", "content": content})
        elif role in ("tool", "tool_call"):
            msgs.append({"role": "user" if role == "tool" else "assistant", "content": plain_content(role, content)})
        else:
            msgs.append({"role": role, "content": content})
    return msgs
