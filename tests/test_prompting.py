"""`tell.prompting`: how a record becomes model input, and what happens when a chat template misbehaves."""

from __future__ import annotations

import pytest

from tell.data.records import Record
from tell.errors import TellError
from tell.prompting import encode, prompt_ids

REC = Record(prompt="judge the answer", response="yes", origin="task.jsonl", row=3)
# Well-behaved: the generation prompt ("<assistant>") is exactly how the assistant turn starts.
GOOD = ("{% for m in messages %}<{{ m['role'] }}>{{ m['content'] }}{% if m['role'] == 'assistant' %}</s>{% endif %}"
        "{% endfor %}{% if add_generation_prompt %}<assistant>{% endif %}")
# Misbehaving: the generation prompt is a marker the full conversation never contains.
BAD = GOOD.replace("{% if add_generation_prompt %}<assistant>", "{% if add_generation_prompt %}<reply>")


def _tok(hf_tokenizer_dir, template):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(hf_tokenizer_dir)
    tok.chat_template = template
    return tok


def test_good_chat_template_splits_prompt_and_answer(hf_tokenizer_dir):
    tok = _tok(hf_tokenizer_dir, GOOD)
    p, a = encode(tok, REC)
    assert p == prompt_ids(tok, REC) and p  # training sees exactly what generation is given
    assert tok.decode(a).replace(" ", "") == "yes</s>"


def test_chat_template_that_changes_the_prompt_is_a_user_error(hf_tokenizer_dir):
    tok = _tok(hf_tokenizer_dir, BAD)
    with pytest.raises(TellError) as e:
        encode(tok, REC)
    msg = str(e.value)
    assert "\n" not in msg
    assert msg.startswith(f"the chat template of {hf_tokenizer_dir} renders the prompt differently once the answer "
                          "is added (record task.jsonl:3)")
    assert "fix the template, or remove the tokenizer's chat template" in msg and "plain template" in msg
