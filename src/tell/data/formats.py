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

Every format also takes an optional `system` string and `tools` (a list of tool definitions, or JSON text
of one); the pair formats (alpaca, prompt/response, query/response, question/answer) take `history`, earlier
exchanges as [[prompt, response], ...] (LLaMA-Factory, ms-swift). Chats must end with an assistant turn:
that turn is the answer, the user turn before it the prompt, and earlier turns travel as `history`. Chat
turns may be tool calls (`function_call`, `tool_call`, or an assistant message with OpenAI `tool_calls`) on
the assistant's side and tool results (`observation`, `tool`, `tool_response`) on the user's; a `content`
that is a list of text parts (`{"type": "text", "text": ...}`, or LLaMA-Factory v1's `"value"`) is joined with
newlines; LLaMA-Factory v1's `reasoning` parts come first as a `<think>` block (as thinking models' templates
render it), its `tool_call` parts make the turn a tool call, and its `observation` parts are tool results' text. A message's `loss_weight` (LLaMA-Factory v1) may be anything on earlier turns (history, never trained
on) but must be 1 on the answer: a 0 there is refused by name. A text made only of invisible characters
(zero-width spaces, joiners) is empty.

Nothing is dropped silently: a row holding images, video or audio is refused (tell trains text-only
models), a KTO row with `label: false` is left out and counted (`RowExcluded`), and every key a format does
not read is returned by `parse_row`, for the manifest's per-input count.
"""

from __future__ import annotations

import json
import unicodedata
from typing import Any, Callable

from tell.data.records import ASSISTANT_SIDE, ROLES, USER_SIDE, Record
from tell.io import duplicate_key


class RowInvalid(Exception):
    """One row breaks its format. `reason` is the drop-count key used by `--skip-invalid`."""

    def __init__(self, reason: str, field: str, message: str):
        super().__init__(message)
        self.reason, self.field = reason, field


class RowExcluded(Exception):
    """A valid row that is not a training example (a KTO `label: false` answer, which the data marks as one
    not to imitate): always left out, and counted by `reason`."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


# Keys that hold images, video or audio. tell trains text-only models: a row that holds any is refused (or
# dropped and counted with --skip-invalid), never trained on with its media silently gone.
MEDIA_KEYS = ("images", "image", "videos", "video", "audios", "audio")
MEDIA_PARTS = ("image", "image_url", "input_image", "video", "video_url", "audio", "input_audio", "file")


class _Row:
    """A row being parsed: the keys a parser used (the rest are counted as ignored) and ignored keys inside
    turns (`messages[].weight`)."""

    def __init__(self, row: dict, tags: dict[str, str]):
        self.row, self.tags = row, tags
        self.used: set[str] = set()
        self.nested_ignored: set[str] = set()

    def text(self, key: str, *, required: bool = True, allow_empty: bool = False) -> str:
        self.used.add(key)
        return _text(self.row, key, required=required, allow_empty=allow_empty)

    def ignored(self) -> set[str]:
        return (set(self.row) - self.used) | self.nested_ignored


def _text(row: dict, key: str, *, required: bool = True, allow_empty: bool = False, where: str | None = None,
          parts: bool = False) -> str:
    """A string field; `parts`: a chat turn's content, which may also be a list of text parts."""
    where = where or key
    if key not in row:
        if required:
            raise RowInvalid("missing_field", where, "missing; expected a non-empty string")
        return ""
    value = row[key]
    if parts:
        value = _content(value, where)
    elif value is not None and not isinstance(value, str):
        raise RowInvalid("wrong_type", where, f"expected a string, got {type(value).__name__}")
    if value is None:
        if required and not allow_empty:
            raise RowInvalid("empty_field", where, "is null; expected a non-empty string")
        return ""
    if required and not allow_empty and (what := shows_nothing(value)):
        raise RowInvalid("empty_field", where, f"{what}; expected a non-empty string")
    return value


# Characters that show nothing but are not whitespace to str.strip: zero-width space/joiners, word joiner, BOM,
# soft hyphen, Hangul fillers, the Braille blank (plus every format character, category Cf).
_INVISIBLE = set("\u200b\u200c\u200d\u2060\ufeff\u00ad\u180e\u3164\u115f\u1160\uffa0\u2800\u034f")


def shows_nothing(text: str) -> str | None:
    """None when `text` shows something; else the words for why not ("is empty", "holds only invisible
    characters (U+200B)")."""
    if visible(text):
        return None
    return "is empty" if not text.strip() else \
        f"holds only invisible characters ({', '.join(sorted({f'U+{ord(c):04X}' for c in text.strip()}))})"


def visible(text: str) -> bool:
    """Whether `text` shows anything: a prompt made only of zero-width characters is as empty as ''."""
    if text.isascii():
        return bool(text.strip())
    return any(not c.isspace() and c not in _INVISIBLE and unicodedata.category(c) not in ("Cf", "Cc")
               for c in text)


# LLaMA-Factory v1's content parts beside "text": a tool result's, the reasoning (thinking) before an answer, and a
# tool call (its value: the call as JSON text, {"name": ..., "arguments": ...})
RESULT_PARTS = ("observation", "tool_result", "tool_response")
REASONING_PART, CALL_PARTS = "reasoning", ("tool_call", "function_call")


def think_block(reasoning: str) -> str:
    """Reasoning as chat templates of thinking models (Qwen3, DeepSeek-R1) render it before the answer."""
    return f"<think>\n{reasoning}\n</think>\n\n"


def _parts(value: list, where: str) -> tuple[list[str], list[str], list[Any]]:
    """(texts, reasonings, tool calls) of a list of content parts; media and unknown parts refused by name."""
    texts, reasoning, calls = [], [], []
    for j, part in enumerate(value):
        kind = part.get("type") if isinstance(part, dict) else None
        if kind in MEDIA_PARTS:
            raise RowInvalid("multimodal", f"{where}[{j}]", f"is a '{kind}' part; tell trains text-only models "
                                                             "(remove it)")
        # OpenAI's {"type": "text", "text": ...}; LLaMA-Factory v1's {"type": "text", "value": ...}
        text = part.get("text", part.get("value")) if isinstance(part, dict) else None
        if kind not in ("text", REASONING_PART, *CALL_PARTS, *RESULT_PARTS) or not isinstance(text, str):
            raise RowInvalid("wrong_type", f"{where}[{j}]", 'expected a text part {"type": "text", "text": "..."} '
                                                           '(or "value": "..."), or LLaMA-Factory\'s reasoning, '
                                                           "tool_call or observation part")
        if kind == REASONING_PART:
            reasoning.append(text)
        elif kind in CALL_PARTS:
            try:
                calls.append(json.loads(text))
            except ValueError:
                raise RowInvalid("wrong_type", f"{where}[{j}]", "a tool_call part's value must be the call as JSON "
                                                               'text ({"name": ..., "arguments": ...})') from None
        else:
            texts.append(text)
    return texts, reasoning, calls


def _content(value: Any, where: str) -> str | None:
    """A string, or a list of content parts ([{"type": "text", "text": ...}]) joined with newlines; reasoning
    parts go first, as a thinking block (`think_block`). Tool-call parts are read by `_turn`."""
    if value is None or isinstance(value, str):
        return value
    if not isinstance(value, list):
        raise RowInvalid("wrong_type", where, f"expected a string or a list of text parts, got {type(value).__name__}")
    texts, reasoning, calls = _parts(value, where)
    if calls:
        raise RowInvalid("wrong_type", where, "a tool_call part belongs in an assistant turn")
    return (think_block("\n".join(reasoning)) if reasoning else "") + "\n".join(texts)


def _check_media(row: dict) -> None:
    for key in MEDIA_KEYS:
        value = row.get(key)
        if value in (None, "", [], {}):
            continue
        n = len(value) if isinstance(value, list) else 1
        raise RowInvalid("multimodal", key, f"holds {n} {key.rstrip('s')} item(s); tell trains text-only models "
                                            "(remove them)")


def _extras(r: _Row, rec: Record) -> Record:
    """What every format may carry beside its own fields: tools, and the empty media keys."""
    r.used.update(k for k in MEDIA_KEYS if k in r.row)  # present but empty (_check_media refused the others)
    if "tools" in r.row:
        r.used.add("tools")
        rec.tools = _tools(r.row["tools"])
    return rec


def _tools(value: Any) -> list:
    """Tool definitions: a list (or one object) of JSON schemas, or JSON text of one (LLaMA-Factory, ms-swift)."""
    if value in (None, "", []):
        return []
    if isinstance(value, str):
        try:
            text, value = value, json.loads(value)
        except ValueError:
            raise RowInvalid("wrong_type", "tools", "expected a list of tool definitions or JSON text of one; "
                                                    "the text is not JSON") from None
        if (dup := duplicate_key(text)) is not None:  # json.loads keeps the last of the two, silently
            raise RowInvalid("duplicate_key", "tools", f"key '{dup}' appears twice in one object of the JSON text "
                                                       "(which one is meant is unknown); expected each key once")
    if isinstance(value, dict):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(t, dict) for t in value):
        raise RowInvalid("wrong_type", "tools", "expected a list of tool definitions (JSON objects)")
    return value


def _history(r: _Row) -> list[dict[str, str]]:
    """Earlier exchanges: [[prompt, response], ...] pairs (LLaMA-Factory's alpaca, ms-swift) or tell's turns
    [{"role", "content"}, ...]."""
    r.used.add("history")
    hist = r.row.get("history")
    if hist in (None, ""):
        return []
    if not isinstance(hist, list):
        raise RowInvalid("wrong_type", "history", "expected a list of [prompt, response] pairs")
    turns: list[dict[str, str]] = []
    for i, item in enumerate(hist):
        where = f"history[{i}]"
        if isinstance(item, dict):
            role = item.get("role")
            if role not in ROLES:
                raise RowInvalid("wrong_type", f"{where}.role", f"expected one of {list(ROLES)}, got {role!r}")
            turns.append({"role": role, "content": _text(item, "content", where=f"{where}.content")})
        elif isinstance(item, (list, tuple)) and len(item) == 2:
            turns.append({"role": "user", "content": _text({"q": item[0]}, "q", where=f"{where}[0]")})
            turns.append({"role": "assistant", "content": _text({"a": item[1]}, "a", where=f"{where}[1]")})
        else:
            raise RowInvalid("wrong_type", where, "expected a [prompt, response] pair of strings")
    return turns


def _alpaca(r: _Row) -> Record:
    instruction, inp = r.text("instruction"), r.text("input", required=False)
    prompt = f"{instruction}\n\n{inp}" if inp.strip() else instruction
    return Record(prompt=prompt, response=r.text("output"), system=r.text("system", required=False),
                  history=_history(r))


def _pair(prompt_key: str, response_keys: tuple[str, ...]) -> Callable[[_Row], Record]:
    def parse(r: _Row) -> Record:
        rkey = next((k for k in response_keys if k in r.row), response_keys[0])
        return Record(prompt=r.text(prompt_key), response=r.text(rkey), system=r.text("system", required=False),
                      history=_history(r))
    return parse


# Role names of the chat formats (OpenAI, ShareGPT, LLaMA-Factory, ms-swift, Llama 3.1) -> tell's roles.
_ROLE = {"system": "system", "user": "user", "human": "user", "assistant": "assistant", "gpt": "assistant",
         "model": "assistant", "chatgpt": "assistant", "function_call": "tool_call", "tool_call": "tool_call",
         "observation": "tool", "tool": "tool", "tool_response": "tool", "function": "tool", "ipython": "tool"}
# LLaMA-Factory's sharegpt tags naming role values -> tell's roles.
_TAG_ROLE = {"user_tag": "user", "assistant_tag": "assistant", "observation_tag": "tool", "function_tag": "tool_call",
             "system_tag": "system"}
TAGS = ("role_tag", "content_tag", *_TAG_ROLE)


def _turn(r: _Row, turn: Any, where: str, role_key: str, content_key: str, roles: dict[str, str]) -> tuple[str, str]:
    if not isinstance(turn, dict):
        raise RowInvalid("wrong_type", where, f"expected an object with '{role_key}' and '{content_key}'")
    role = roles.get(str(turn.get(role_key, "")).lower())
    if role is None:
        raise RowInvalid("wrong_type", f"{where}.{role_key}",
                         f"expected one of {sorted(roles)}, got {turn.get(role_key)!r}")
    list_key = where.split("[")[0]
    r.nested_ignored.update(f"{list_key}[].{k}" for k in turn
                            if k not in (role_key, content_key, "tool_calls", LOSS_WEIGHT))
    calls = turn.get("tool_calls")
    if role == "assistant" and calls:  # OpenAI: the assistant calls tools; its content is then usually null
        if not isinstance(calls, list):
            raise RowInvalid("wrong_type", f"{where}.tool_calls", "expected a list of tool calls")
        if _content(turn.get(content_key), f"{where}.{content_key}"):
            r.nested_ignored.add(f"{list_key}[].{content_key} (beside tool_calls)")
        return "tool_call", json.dumps([c.get("function", c) if isinstance(c, dict) else c for c in calls],
                                       ensure_ascii=False)
    if calls:
        r.nested_ignored.add(f"{list_key}[].tool_calls")
    value = turn.get(content_key)
    if role == "assistant" and isinstance(value, list):  # LLaMA-Factory v1: tool calls as content parts
        texts, reasoning, parts_calls = _parts(value, f"{where}.{content_key}")
        if parts_calls:
            if texts or reasoning:  # the call is the turn; what else it says is counted in the manifest, not lost
                r.nested_ignored.add(f"{list_key}[].{content_key}[] text or reasoning beside a tool_call part")
            return "tool_call", json.dumps(parts_calls, ensure_ascii=False)
    return role, _text(turn, content_key, allow_empty=(role == "system"), where=f"{where}.{content_key}", parts=True)


LOSS_WEIGHT = "loss_weight"  # LLaMA-Factory v1: a message's weight in the loss (0: no loss on it)


def _check_loss_weights(turns: list, list_key: str) -> None:
    """Per-message `loss_weight`s. Only the last turn, the answer, is trained on (earlier ones travel as history,
    never trained on), so any weight there is fine; the answer's must be 1: a 0 says "no loss here", and a row
    whose answer is not trained on is refused by name, never trained on silently."""
    for i, turn in enumerate(turns):
        w = turn.get(LOSS_WEIGHT) if isinstance(turn, dict) else None
        if w is None:
            continue
        where = f"{list_key}[{i}].{LOSS_WEIGHT}"
        if isinstance(w, bool) or not isinstance(w, (int, float)) or w < 0:
            raise RowInvalid("wrong_type", where, f"expected a number >= 0, got {w!r}")
        if i == len(turns) - 1 and w != 1:
            why = "0 (no loss there)" if w == 0 else f"{w} (tell weighs every answer token 1)"
            raise RowInvalid("loss_weight", where, f"is {why} on the answer, the one turn tell trains on; expected "
                                                   "1 or none (earlier turns may have any weight: they are history, "
                                                   "never trained on)")


def _chat(list_key: str, role_key: str, content_key: str) -> Callable[[_Row], Record]:
    def parse(r: _Row) -> Record:
        rk, ck = r.tags.get("role_tag", role_key), r.tags.get("content_tag", content_key)
        roles = _ROLE | {str(v).lower(): _TAG_ROLE[k] for k, v in r.tags.items() if k in _TAG_ROLE}
        r.used.add(list_key)
        if list_key not in r.row:
            raise RowInvalid("missing_field", list_key, "missing; expected a list of turns")
        turns = r.row[list_key]
        if not isinstance(turns, list) or not turns:
            raise RowInvalid("wrong_type", list_key, "expected a non-empty list of turns")
        _check_loss_weights(turns, list_key)
        norm: list[tuple[str, str]] = []
        for i, turn in enumerate(turns):
            role, content = _turn(r, turn, f"{list_key}[{i}]", rk, ck, roles)
            if role == "system" and (i > 0):
                raise RowInvalid("wrong_type", f"{list_key}[{i}]", "a system turn is allowed only first")
            if role == "tool" and norm and norm[-1][0] == "tool":  # parallel calls: their results side by side
                norm[-1] = ("tool", f"{norm[-1][1]}\n{content}")
                continue
            norm.append((role, content))
        system = norm.pop(0)[1] if norm[0][0] == "system" else r.text("system", required=False)
        if len(norm) < 2 or norm[-1][0] not in ASSISTANT_SIDE or norm[-2][0] not in USER_SIDE:
            raise RowInvalid("wrong_type", list_key, "expected turns ending with a user turn then an assistant turn "
                                                     "(a tool result counts as a user turn, a tool call as an "
                                                     "assistant turn)")
        for i, (role, _) in enumerate(norm):
            if role not in (USER_SIDE if i % 2 == 0 else ASSISTANT_SIDE):
                raise RowInvalid("wrong_type", list_key, f"expected user and assistant turns to alternate (tool "
                                 f"results on the user's side, tool calls on the assistant's); a '{role}' turn is "
                                 f"turn {i + 1} of the conversation (not counting the system turn)")
        history = [{"role": role, "content": c} for role, c in norm[:-2]]
        return Record(prompt=norm[-2][1], response=norm[-1][1], system=system, history=history,
                      prompt_role=norm[-2][0], response_role=norm[-1][0])
    return parse


_TELL_KEYS = ("source", "origin", "row", "id", "anchored", "tokens", "repeat", "meta", "prompt_role", "response_role")


def _tell(r: _Row) -> Record:
    rec = _pair("prompt", ("response",))(r)
    meta = r.row.get("meta") or {}
    if not isinstance(meta, dict):
        raise RowInvalid("wrong_type", "meta", "expected an object")
    rec.meta = meta
    for key, sides in (("prompt_role", USER_SIDE), ("response_role", ASSISTANT_SIDE)):
        value = r.row.get(key, sides[0])
        if value not in sides:
            raise RowInvalid("wrong_type", key, f"expected one of {list(sides)}, got {value!r}")
        setattr(rec, key, value)
    r.used.update(_TELL_KEYS)
    return rec


# name -> (keys that identify it, parser); detection tries them in this order.
FORMATS: dict[str, tuple[tuple[frozenset[str], ...], Callable[[_Row], Record]]] = {
    # a prompt/response row with `meta` (an eval item's kind, label, choices) is a tell record: its meta is read
    "tell": ((frozenset({"prompt", "response", "source", "origin"}), frozenset({"prompt", "response", "meta"})), _tell),
    "messages": ((frozenset({"messages"}),), _chat("messages", "role", "content")),
    "sharegpt": ((frozenset({"conversations"}),), _chat("conversations", "from", "value")),
    "alpaca": ((frozenset({"instruction", "output"}),), _alpaca),
    "prompt_response": ((frozenset({"prompt", "response"}), frozenset({"prompt", "completion"})),
                        _pair("prompt", ("response", "completion"))),
    "query_response": ((frozenset({"query", "response"}),), _pair("query", ("response",))),
    "question_answer": ((frozenset({"question", "answer"}),), _pair("question", ("answer",))),
}
# The field names a column mapping may name (`--columns FIELD=KEY`): every format's own keys and the common ones.
FIELDS = ("instruction", "input", "output", "prompt", "response", "completion", "query", "question", "answer",
          "messages", "conversations", "system", "history", "tools", "label", *MEDIA_KEYS)


def detect_format(row: Any) -> str | None:
    if not isinstance(row, dict):
        return None
    keys = set(row)
    for name, (signatures, _) in FORMATS.items():
        if any(sig <= keys for sig in signatures):
            return name
    return None


def parse_row(fmt: str, row: Any, tags: dict[str, str] | None = None) -> tuple[Record, set[str]]:
    """(record, the keys of the row the format ignored). Raises `RowInvalid` for a row that breaks the format
    and `RowExcluded` for a KTO undesirable answer (`label: false`)."""
    if not isinstance(row, dict):
        raise RowInvalid("wrong_type", "(row)", f"expected a JSON object, got {type(row).__name__}")
    _check_media(row)
    r = _Row(row, tags or {})
    label = row.get("label")
    if isinstance(label, bool):  # KTO (LLaMA-Factory's kto_tag, ms-swift's label): false = an answer not to learn
        r.used.add("label")
        if not label:
            raise RowExcluded("kto_undesirable")
    rec = _extras(r, FORMATS[fmt][1](r))
    return rec, r.ignored()
