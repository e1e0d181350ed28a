"""Record formats, recognised from a row's keys or named with `--format`, normalised to `Record`.

| format            | fields                                                   |
|-------------------|----------------------------------------------------------|
| `tell`            | `prompt`, `response`, `source`, `origin` (a `prepare` output) |
| `messages`        | `messages`: [{role: system/user/assistant, content}]     |
| `sharegpt`        | `conversations`: [{from: system/human/gpt, value}]       |
| `alpaca`          | `instruction`, `input` (may be empty), `output`          |
| `prompt_response` | `prompt`, `response` (or `completion`)                   |
| `query_response`  | `query`, `response`                                      |
| `question_answer` | `question`, `answer`                                     |

Every format also takes an optional `system` string. Chats must end with an assistant turn: that turn is
the answer, the user turn before it the prompt, and earlier turns travel as `history`.
"""

from __future__ import annotations

from typing import Any, Callable

from tell.data.records import Record


class RowInvalid(Exception):
    """One row breaks its format. `reason` is the drop-count key used by `--skip-invalid`."""

    def __init__(self, reason: str, field: str, message: str):
        super().__init__(message)
        self.reason, self.field = reason, field


def _text(row: dict, key: str, *, required: bool = True, allow_empty: bool = False) -> str:
    if key not in row:
        if required:
            raise RowInvalid("missing_field", key, "missing; expected a non-empty string")
        return ""
    value = row[key]
    if value is None:
        if required and not allow_empty:
            raise RowInvalid("empty_field", key, "is null; expected a non-empty string")
        return ""
    if not isinstance(value, str):
        raise RowInvalid("wrong_type", key, f"expected a string, got {type(value).__name__}")
    if required and not allow_empty and not value.strip():
        raise RowInvalid("empty_field", key, "is empty; expected a non-empty string")
    return value


def _alpaca(row: dict) -> Record:
    instruction, inp = _text(row, "instruction"), _text(row, "input", required=False)
    prompt = f"{instruction}\n\n{inp}" if inp.strip() else instruction
    return Record(prompt=prompt, response=_text(row, "output"), system=_text(row, "system", required=False))


def _pair(prompt_key: str, response_keys: tuple[str, ...]) -> Callable[[dict], Record]:
    def parse(row: dict) -> Record:
        rkey = next((k for k in response_keys if k in row), response_keys[0])
        return Record(prompt=_text(row, prompt_key), response=_text(row, rkey),
                      system=_text(row, "system", required=False))
    return parse


_ROLE = {"system": "system", "user": "user", "human": "user", "assistant": "assistant", "gpt": "assistant",
         "model": "assistant", "chatgpt": "assistant"}


def _chat(list_key: str, role_key: str, content_key: str) -> Callable[[dict], Record]:
    def parse(row: dict) -> Record:
        turns = row.get(list_key)
        if list_key not in row:
            raise RowInvalid("missing_field", list_key, "missing; expected a list of turns")
        if not isinstance(turns, list) or not turns:
            raise RowInvalid("wrong_type", list_key, "expected a non-empty list of turns")
        norm: list[tuple[str, str]] = []
        for i, turn in enumerate(turns):
            where = f"{list_key}[{i}]"
            if not isinstance(turn, dict):
                raise RowInvalid("wrong_type", where, f"expected an object with '{role_key}' and '{content_key}'")
            role = _ROLE.get(str(turn.get(role_key, "")).lower())
            if role is None:
                raise RowInvalid("wrong_type", f"{where}.{role_key}",
                                 f"expected one of {sorted(set(_ROLE))}, got {turn.get(role_key)!r}")
            norm.append((role, _text(turn, content_key, allow_empty=(role == "system"))))
        system = ""
        if norm[0][0] == "system":
            system = norm.pop(0)[1]
        if len(norm) < 2 or norm[-1][0] != "assistant" or norm[-2][0] != "user":
            raise RowInvalid("wrong_type", list_key, "expected turns ending with a user turn then an assistant turn")
        for i, (role, _) in enumerate(norm):
            if role != ("user" if i % 2 == 0 else "assistant"):
                raise RowInvalid("wrong_type", list_key, "expected user and assistant turns to alternate")
        history = [{"role": r, "content": c} for r, c in norm[:-2]]
        return Record(prompt=norm[-2][1], response=norm[-1][1], system=system, history=history)
    return parse


def _tell(row: dict) -> Record:
    rec = _pair("prompt", ("response",))(row)
    hist = row.get("history") or []
    if not isinstance(hist, list):
        raise RowInvalid("wrong_type", "history", "expected a list of turns")
    rec.history = hist
    meta = row.get("meta") or {}
    if not isinstance(meta, dict):
        raise RowInvalid("wrong_type", "meta", "expected an object")
    rec.meta = meta
    return rec


# name -> (keys that identify it, parser); detection tries them in this order.
FORMATS: dict[str, tuple[tuple[frozenset[str], ...], Callable[[dict], Record]]] = {
    "tell": ((frozenset({"prompt", "response", "source", "origin"}),), _tell),
    "messages": ((frozenset({"messages"}),), _chat("messages", "role", "content")),
    "sharegpt": ((frozenset({"conversations"}),), _chat("conversations", "from", "value")),
    "alpaca": ((frozenset({"instruction", "output"}),), _alpaca),
    "prompt_response": ((frozenset({"prompt", "response"}), frozenset({"prompt", "completion"})),
                        _pair("prompt", ("response", "completion"))),
    "query_response": ((frozenset({"query", "response"}),), _pair("query", ("response",))),
    "question_answer": ((frozenset({"question", "answer"}),), _pair("question", ("answer",))),
}


def detect_format(row: Any) -> str | None:
    if not isinstance(row, dict):
        return None
    keys = set(row)
    for name, (signatures, _) in FORMATS.items():
        if any(sig <= keys for sig in signatures):
            return name
    return None


def parse_row(fmt: str, row: Any) -> Record:
    if not isinstance(row, dict):
        raise RowInvalid("wrong_type", "(row)", f"expected a JSON object, got {type(row).__name__}")
    return FORMATS[fmt][1](row)
