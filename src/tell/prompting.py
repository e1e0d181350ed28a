"""How a record becomes model input, shared by training and inference so both see the same text.

Models with a chat template get it (`tokenizer.apply_chat_template`): system text, earlier turns, the user
prompt (with the anchor where `prepare` placed it), then the answer. Models without one get the plain
template below (Alpaca-style), BOS when the tokenizer adds one, and EOS after the answer:

    {system}\\n\\n                       (only when there is system text)
    ### Instruction:\\n{user}\\n\\n### Response:\\n{assistant}\\n\\n   (each earlier turn)
    ### Instruction:\\n{prompt}\\n\\n### Response:\\n{response}<eos>

Tool use (`tell.data.records`): templates that know it (their text uses `tools` and `tool_calls`) get the
record's tools and tool turns in Hugging Face's shape. Elsewhere, and in the plain template, it is written
out as text, so nothing is lost: the tools go at the end of the system text as `Tools you can call (JSON):`
and their JSON list, a tool call (an answer) as `<tool_call>\\n{call JSON}\\n</tool_call>`, a tool result
(in the user's place) as `<tool_response>\\n{result}\\n</tool_response>`.

The prompt ids are the ones generation is given; the answer ids are cut from the prompt and answer
tokenized together (`_split_joint`), so that they are the tokens generation must emit after that prompt.
"""

from __future__ import annotations

import weakref
from typing import Any

from tell.data.records import TOOLS_TEXT, Record, chat_messages, plain_content, tools_text
from tell.errors import TellError

PLAIN_TURN = "### Instruction:\n{user}\n\n### Response:\n"


def _messages(rec: Record, fold_system: bool = False, *, answer: bool = False, native: bool = True) -> list[dict]:
    msgs = chat_messages(rec, answer=answer, native_tools=native)
    if fold_system and msgs[0]["role"] == "system":  # templates that refuse a system role (Gemma) get it at the
        system = msgs.pop(0)["content"]               # start of the first turn
        msgs[0] = {**msgs[0], "content": f"{system}\n\n{msgs[0]['content']}"}
    return msgs


def _native_tools(tokenizer: Any) -> bool:
    """Whether the chat template renders tools and tool calls itself."""
    template = getattr(tokenizer, "chat_template", None) or ""
    if isinstance(template, dict):
        template = " ".join(template.values())
    return "tool_calls" in template and "tools" in template


def _apply(tokenizer: Any, rec: Record, fold: bool, *, answer: bool) -> str:
    native = _native_tools(tokenizer)
    kw = {"tools": rec.tools} if rec.tools and native else {}
    from tell.errors import template_errors

    with template_errors(getattr(tokenizer, "name_or_path", None) or "the model"):  # every command renders here
        return tokenizer.apply_chat_template(_messages(rec, fold, answer=answer, native=native), tokenize=False,
                                             add_generation_prompt=not answer, **kw)


def _plain_prompt(rec: Record) -> str:
    system = "\n\n".join(p for p in (rec.system, rec.tools and TOOLS_TEXT.format(tools=tools_text(rec))) if p)
    text = f"{system}\n\n" if system else ""
    turns = rec.history
    for i in range(0, len(turns) - 1, 2):
        text += (PLAIN_TURN.format(user=plain_content(turns[i]["role"], turns[i]["content"]))
                 + plain_content(turns[i + 1]["role"], turns[i + 1]["content"]) + "\n\n")
    return text + PLAIN_TURN.format(user=plain_content(rec.prompt_role, rec.prompt))


def _plain_answer(rec: Record) -> str:
    return plain_content(rec.response_role, rec.response)


_ADDS_BOS: "weakref.WeakKeyDictionary[Any, bool]" = weakref.WeakKeyDictionary()


def _adds_bos(tokenizer: Any) -> bool:
    """Whether the tokenizer puts BOS first by default (probed once per tokenizer, not per example)."""
    if tokenizer not in _ADDS_BOS:
        bos = tokenizer.bos_token_id
        ids = tokenizer("a", add_special_tokens=True)["input_ids"] if bos is not None else []
        _ADDS_BOS[tokenizer] = bool(ids) and ids[0] == bos
    return _ADDS_BOS[tokenizer]


def _chat_prompt(tokenizer: Any, rec: Record) -> tuple[str, bool]:
    """(prompt text with the generation prompt, whether the system text had to be folded into a turn)."""
    try:
        return _apply(tokenizer, rec, False, answer=False), False
    except Exception:
        if not rec.system:
            raise
        return _apply(tokenizer, rec, True, answer=False), True


def has_chat_template(tokenizer: Any) -> bool:
    return bool(getattr(tokenizer, "chat_template", None))


def prompt_text(tokenizer: Any, rec: Record) -> str:
    """The text the model is given before it answers (chat template with generation prompt, or plain)."""
    return _chat_prompt(tokenizer, rec)[0] if has_chat_template(tokenizer) else _plain_prompt(rec)


def encode(tokenizer: Any, rec: Record) -> tuple[list[int], list[int]]:
    """(prompt ids, answer ids) with one rendering of the template. The answer ids are the answer's tokens
    as the template closes them (end-of-turn / EOS included)."""
    if has_chat_template(tokenizer):
        prompt, fold = _chat_prompt(tokenizer, rec)
        full = _apply(tokenizer, rec, fold, answer=True)
        if not full.startswith(prompt):
            # Training would then see other prompt tokens than generation is given: refuse, say how to fix it.
            name = getattr(tokenizer, "name_or_path", "") or "the tokenizer"
            raise TellError(f"the chat template of {name} renders the prompt differently once the answer is added "
                            f"(record {rec.origin}:{rec.row}): its add_generation_prompt=True output must be a prefix "
                            "of the whole conversation; fix the template, or remove the tokenizer's chat template "
                            "(chat_template.jinja / 'chat_template' in tokenizer_config.json) to use tell's plain "
                            "template")
        ids = lambda text: tokenizer(text, add_special_tokens=False)["input_ids"]  # noqa: E731
        p, a = _split_joint(ids(prompt), ids(full), lambda: ids(full[len(prompt):]))
        return p, _cut_after_closing(tokenizer, a)
    text, answer = _plain_prompt(rec), _plain_answer(rec)
    eos = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []
    p, a = _split_joint(_plain_ids(tokenizer, text), _plain_ids(tokenizer, text + answer),
                        lambda: tokenizer(answer, add_special_tokens=False)["input_ids"])
    return p, a + eos


def _cut_after_closing(tokenizer: Any, answer: list[int]) -> list[int]:
    """The answer ids up to the template's closing token (`<|im_end|>`, `</s>`, `<|eot_id|>`): what a template
    writes after it (ChatML's newline before the next turn) is not the answer, and generation stops at the
    closing token, so it is no training target."""
    special = _special_ids(tokenizer)
    last = max((i for i, t in enumerate(answer) if t in special), default=None)
    if last is None or last == len(answer) - 1 or tokenizer.decode(answer[last + 1:]).strip():
        return answer
    return answer[:last + 1]


_SPECIAL: "weakref.WeakKeyDictionary[Any, frozenset]" = weakref.WeakKeyDictionary()


def _special_ids(tokenizer: Any) -> frozenset:
    """The tokenizer's special and added token ids (read once per tokenizer: every example is cut with them)."""
    if tokenizer not in _SPECIAL:
        _SPECIAL[tokenizer] = frozenset(getattr(tokenizer, "all_special_ids", [])) | frozenset(
            getattr(tokenizer, "added_tokens_decoder", {}))
    return _SPECIAL[tokenizer]


def _split_joint(prompt: list[int], full: list[int], apart) -> tuple[list[int], list[int]]:
    """(prompt ids, answer ids), the answer tokenized together with its prompt and cut at the prompt's end.

    Why: tokenized alone, an answer is tokenized as the start of a text (SentencePiece adds a word-start
    piece, `{"` becomes `▁{"`), but generation continues a prompt, where it must emit `{"`: a first training
    target the model never produces. When the prompt's tokens are not a prefix of the whole (a merge across
    the boundary, which templates ending in a newline or a special token do not have), the answer is
    tokenized `apart` instead, so that the prompt ids stay exactly those generation is given."""
    if full[:len(prompt)] == prompt:
        return prompt, full[len(prompt):]
    return prompt, apart()


def _plain_ids(tokenizer: Any, text: str) -> list[int]:
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    return [tokenizer.bos_token_id] + ids if _adds_bos(tokenizer) else ids


def prompt_ids(tokenizer: Any, rec: Record) -> list[int]:
    """The prompt alone, as generation is given it."""
    if has_chat_template(tokenizer):
        return tokenizer(_chat_prompt(tokenizer, rec)[0], add_special_tokens=False)["input_ids"]
    return _plain_ids(tokenizer, _plain_prompt(rec))


def answer_ids(tokenizer: Any, rec: Record) -> list[int]:
    return encode(tokenizer, rec)[1]


# End-of-turn markers of common chat templates (Gemma, Llama-3, Qwen/ChatML, Phi-3, GPT-style).
END_OF_TURN = ("<end_of_turn>", "<|eot_id|>", "<|im_end|>", "<|end|>", "<|endoftext|>")


_STOPS: "weakref.WeakKeyDictionary[Any, list[int]]" = weakref.WeakKeyDictionary()


def stop_ids(tokenizer: Any) -> list[int]:
    """`_stop_ids`, worked out once per tokenizer (generation asks for every batch)."""
    if tokenizer not in _STOPS:
        _STOPS[tokenizer] = _stop_ids(tokenizer)
    return _STOPS[tokenizer]


def _stop_ids(tokenizer: Any) -> list[int]:
    """Token ids that end an answer: EOS, and the chat template's end-of-turn token(s). A chat model closes
    its turn with its end-of-turn token (Gemma `<end_of_turn>`, Llama-3 `<|eot_id|>`, Qwen `<|im_end|>`), not
    always with EOS; generation that waited for EOS would run on into a made-up next turn."""
    ids = {tokenizer.eos_token_id} if tokenizer.eos_token_id is not None else set()
    template = getattr(tokenizer, "chat_template", None) or ""
    if isinstance(template, dict):  # several named templates
        template = " ".join(template.values())
    unk = getattr(tokenizer, "unk_token_id", None)
    for token in END_OF_TURN:
        if token in template:
            tid = tokenizer.convert_tokens_to_ids(token)
            if isinstance(tid, int) and tid != unk:
                ids.add(tid)
    if template:  # and whatever special token the template itself puts right after an answer
        ids |= _closing_tokens(tokenizer)
    return sorted(ids)


def _closing_tokens(tokenizer: Any) -> set[int]:
    marker = "tellanswerend"
    try:
        p, a = encode(tokenizer, Record(prompt="a", response=marker))
    except Exception:  # a template that cannot render a plain exchange: the list above is all there is
        return set()
    special = _special_ids(tokenizer)
    for i in range(len(a)):
        if marker in tokenizer.decode(a[:i + 1]):  # the answer's text is complete: what follows closes it
            return {a[i + 1]} & special if i + 1 < len(a) else set()
    return set()


def plain_chat_template(tokenizer: Any) -> str:
    """tell's plain template as a Jinja chat template, for an export of a model trained without one: served
    elsewhere with `apply_chat_template`, it renders what training saw (BOS where the tokenizer adds one, the
    system text, each turn, EOS after the last answer; tool results in their tags). Tool definitions and
    tool calls are not in it: those records render through `prompt_text` only."""
    bos = "{{ bos_token }}" if _adds_bos(tokenizer) else ""
    return (bos + "{%- for m in messages -%}"
            "{%- if m['role'] == 'system' -%}{{ m['content'] + '\\n\\n' }}"
            "{%- elif m['role'] == 'user' -%}{{ '### Instruction:\\n' + m['content'] + '\\n\\n### Response:\\n' }}"
            "{%- elif m['role'] == 'tool' -%}{{ '### Instruction:\\n<tool_response>\\n' + m['content'] + "
            "'\\n</tool_response>\\n\\n### Response:\\n' }}"
            "{%- elif m['role'] == 'assistant' -%}{{ m['content'] }}"
            "{%- if loop.last %}{{ eos_token }}{% else %}{{ '\\n\\n' }}{% endif -%}"
            "{%- endif -%}{%- endfor -%}")


# `--template NAME`: a named chat template instead of the model's own (LLaMA-Factory's `template:`), for a base
# model that has none or one that is not the format wanted. Each closes an answer with the tokenizer's EOS or with
# its own end-of-turn token (which must then be one token of the vocabulary: `use_template` checks), so that
# answers end and generation stops. "model": the model's own (tell's plain one where it has none); "plain": tell's
# plain template (module docstring) even where the model has one.
_SYSTEM_FIRST = ("{%- if messages and messages[0]['role'] == 'system' -%}{%- set system = messages[0]['content'] -%}"
                 "{%- set loop_messages = messages[1:] -%}{%- else -%}{%- set system = '' -%}"
                 "{%- set loop_messages = messages -%}{%- endif -%}")
TEMPLATES = {
    "chatml": ("{%- for m in messages -%}{{ '<|im_start|>' + m['role'] + '\\n' + m['content'] + '<|im_end|>\\n' }}"
               "{%- endfor -%}{%- if add_generation_prompt -%}{{ '<|im_start|>assistant\\n' }}{%- endif -%}"),
    "llama2": (_SYSTEM_FIRST + "{%- for m in loop_messages -%}{%- if m['role'] == 'assistant' -%}"
               "{{ ' ' + m['content'] + ' ' + eos_token }}{%- else -%}{{ bos_token + '[INST] ' }}"
               "{%- if loop.first and system -%}{{ '<<SYS>>\\n' + system + '\\n<</SYS>>\\n\\n' }}{%- endif -%}"
               "{{ m['content'] + ' [/INST]' }}{%- endif -%}{%- endfor -%}"),
    "llama3": ("{{ bos_token }}{%- for m in messages -%}{{ '<|start_header_id|>' + m['role'] + '<|end_header_id|>\\n\\n'"
               " + m['content'] + '<|eot_id|>' }}{%- endfor -%}{%- if add_generation_prompt -%}"
               "{{ '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{%- endif -%}"),
    "mistral": (_SYSTEM_FIRST + "{{ bos_token }}{%- for m in loop_messages -%}{%- if m['role'] == 'assistant' -%}"
                "{{ m['content'] + eos_token }}{%- else -%}{{ '[INST] ' }}{%- if loop.first and system -%}"
                "{{ system + '\\n\\n' }}{%- endif -%}{{ m['content'] + ' [/INST]' }}{%- endif -%}{%- endfor -%}"),
    "alpaca": (_SYSTEM_FIRST + "{{ (system or 'Below is an instruction that describes a task. Write a response that "
               "appropriately completes the request.') + '\\n\\n' }}{%- for m in loop_messages -%}"
               "{%- if m['role'] == 'assistant' -%}{{ m['content'] + eos_token + '\\n\\n' }}{%- else -%}"
               "{{ '### Instruction:\\n' + m['content'] + '\\n\\n### Response:\\n' }}{%- endif -%}{%- endfor -%}"),
    "vicuna": (_SYSTEM_FIRST + "{{ (system or 'A chat between a curious user and an artificial intelligence "
               "assistant. The assistant gives helpful, detailed, and polite answers to the user\\'s questions.') + "
               "' ' }}{%- for m in loop_messages -%}{%- if m['role'] == 'assistant' -%}"
               "{{ m['content'] + eos_token }}{%- else -%}{{ 'USER: ' + m['content'] + ' ASSISTANT:' }}{%- endif -%}"
               "{%- endfor -%}"),
}
TEMPLATE_NAMES = ("model", "plain", *TEMPLATES)
# the tokens each named template writes as one special token; a vocabulary without them would spell them in pieces
_TEMPLATE_TOKENS = {"chatml": ("<|im_start|>", "<|im_end|>"),
                    "llama3": ("<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>")}


def use_template(tokenizer: Any, name: str | None) -> Any:
    """Give `tokenizer` the named template (`TEMPLATES`; None or "model": its own; "plain": tell's plain one). A
    template whose turn tokens the vocabulary lacks is refused by name (training would learn to spell them)."""
    if name in (None, "model"):
        return tokenizer
    if name == "plain":
        tokenizer.chat_template = None
        return tokenizer
    if name not in TEMPLATES:
        raise TellError(f"unknown template {name!r}; expected one of {list(TEMPLATE_NAMES)}", field="template")
    unk = getattr(tokenizer, "unk_token_id", None)
    missing = [t for t in _TEMPLATE_TOKENS.get(name, ())
               if tokenizer.convert_tokens_to_ids(t) in (None, unk) or len(tokenizer(t, add_special_tokens=False)
                                                                         ["input_ids"]) != 1]
    if missing:
        raise TellError(f"the {name} template needs {missing} as single tokens and this tokenizer has none of "
                        "them; choose a template that ends turns with the EOS token (llama2, mistral, alpaca, "
                        "vicuna) or the model's own", field="template")
    if name in ("llama2", "mistral", "alpaca", "vicuna") and tokenizer.eos_token is None:
        raise TellError(f"the {name} template closes answers with the EOS token and this tokenizer has none",
                        field="template")
    tokenizer.chat_template = TEMPLATES[name]
    _STOPS.pop(tokenizer, None)  # its end-of-turn tokens changed
    return tokenizer
