"""How a record becomes model input, shared by training and inference so both see the same text.

Models with a chat template get it (`tokenizer.apply_chat_template`): system text, earlier turns, the user
prompt (with the anchor where `prepare` placed it), then the answer. Models without one get the plain
template below (Alpaca-style), BOS when the tokenizer adds one, and EOS after the answer:

    {system}\\n\\n                       (only when there is system text)
    ### Instruction:\\n{user}\\n\\n### Response:\\n{assistant}\\n\\n   (each earlier turn)
    ### Instruction:\\n{prompt}\\n\\n### Response:\\n{response}<eos>

The prompt ids are the ones generation is given; the answer ids are cut from the prompt and answer
tokenized together (`_split_joint`), so that they are the tokens generation must emit after that prompt.
"""

from __future__ import annotations

import weakref
from typing import Any

from tell.data.records import Record
from tell.errors import TellError

PLAIN_TURN = "### Instruction:\n{user}\n\n### Response:\n"


def _messages(rec: Record, fold_system: bool = False) -> list[dict[str, str]]:
    msgs = [dict(t) for t in rec.history] + [{"role": "user", "content": rec.prompt}]
    if rec.system:
        if fold_system:  # templates that refuse a system role (Gemma) get it at the start of the first turn
            msgs[0] = {"role": msgs[0]["role"], "content": f"{rec.system}\n\n{msgs[0]['content']}"}
        else:
            msgs.insert(0, {"role": "system", "content": rec.system})
    return msgs


def _plain_prompt(rec: Record) -> str:
    text = f"{rec.system}\n\n" if rec.system else ""
    turns = rec.history
    for i in range(0, len(turns) - 1, 2):
        text += PLAIN_TURN.format(user=turns[i]["content"]) + turns[i + 1]["content"] + "\n\n"
    return text + PLAIN_TURN.format(user=rec.prompt)


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
        return tokenizer.apply_chat_template(_messages(rec), tokenize=False, add_generation_prompt=True), False
    except Exception:
        if not rec.system:
            raise
        return tokenizer.apply_chat_template(_messages(rec, True), tokenize=False, add_generation_prompt=True), True


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
        full = tokenizer.apply_chat_template(_messages(rec, fold) + [{"role": "assistant", "content": rec.response}],
                                             tokenize=False)
        if not full.startswith(prompt):
            # Training would then see other prompt tokens than generation is given: refuse, say how to fix it.
            name = getattr(tokenizer, "name_or_path", "") or "the tokenizer"
            raise TellError(f"the chat template of {name} renders the prompt differently once the answer is added "
                            f"(record {rec.origin}:{rec.row}): its add_generation_prompt=True output must be a prefix "
                            "of the whole conversation; fix the template, or remove the tokenizer's chat template "
                            "(chat_template.jinja / 'chat_template' in tokenizer_config.json) to use tell's plain "
                            "template")
        ids = lambda text: tokenizer(text, add_special_tokens=False)["input_ids"]  # noqa: E731
        return _split_joint(ids(prompt), ids(full), lambda: ids(full[len(prompt):]))
    text = _plain_prompt(rec)
    eos = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []
    p, a = _split_joint(_plain_ids(tokenizer, text), _plain_ids(tokenizer, text + rec.response),
                        lambda: tokenizer(rec.response, add_special_tokens=False)["input_ids"])
    return p, a + eos


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
    special = set(getattr(tokenizer, "all_special_ids", [])) | set(getattr(tokenizer, "added_tokens_decoder", {}))
    for i in range(len(a)):
        if marker in tokenizer.decode(a[:i + 1]):  # the answer's text is complete: what follows closes it
            return {a[i + 1]} & special if i + 1 < len(a) else set()
    return set()
