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


JSON_ANSWER = '{"thought": "The response says the gas plants absorb is oxygen.", "hallucination": "yes"}'


def test_llama2_tokenizer_built_here_matches_sentencepiece(llama2_tokenizer):
    sp, tok = llama2_tokenizer
    assert len(tok) == 32000 and sp.get_piece_size() == 32000
    for text in ("Hello world", JSON_ANSWER, "### Response:\n" + JSON_ANSWER, "Þetta er íslenska 🙂 über"):
        ids = tok(text, add_special_tokens=False)["input_ids"]
        assert ids and ids == sp.encode(text)


def test_answer_is_tokenized_with_its_prompt_llama2(llama2_tokenizer):
    """The label ids are what greedy decoding must emit after the prompt: `{"`, not the `▁{"` SentencePiece
    gives the answer tokenized alone."""
    sp, tok = llama2_tokenizer
    rec = Record(prompt="Judge the response. Reply in JSON.", response=JSON_ANSWER)
    p, a = encode(tok, rec)
    assert p == prompt_ids(tok, rec)
    whole = [tok.bos_token_id] + sp.encode("### Instruction:\nJudge the response. Reply in JSON.\n\n### Response:\n"
                                           + JSON_ANSWER)
    assert p + a == whole + [tok.eos_token_id]
    assert tok.convert_ids_to_tokens(a[0]) == '{"'
    assert tok.convert_ids_to_tokens(sp.encode(JSON_ANSWER)[0]) == '▁{"'  # the old way: a token never emitted


def test_answer_is_tokenized_with_its_prompt_byte_level_bpe(tmp_path):
    from tokenizers import ByteLevelBPETokenizer
    from transformers import PreTrainedTokenizerFast

    corpus = ["### Instruction:\nsort the list\n\n### Response:\n{ result : a b ; size : 2 }"] * 50 + \
             ["the response is yes", "hello world {", ":\n{"] * 20
    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(corpus, vocab_size=300, min_frequency=1, special_tokens=["<|endoftext|>"])
    tok = PreTrainedTokenizerFast(tokenizer_object=bpe._tokenizer, eos_token="<|endoftext|>")
    rec = Record(prompt="sort the list", response="{ result : a b ; size : 2 }")
    p, a = encode(tok, rec)
    whole = tok("### Instruction:\nsort the list\n\n### Response:\n{ result : a b ; size : 2 }",
                add_special_tokens=False)["input_ids"]
    assert p == prompt_ids(tok, rec) and p + a == whole + [tok.eos_token_id]


# Tiny chat templates in the shapes of Gemma, Llama-3 and Qwen (ChatML): each closes a turn with its own token.
TEMPLATES = {
    "<end_of_turn>": ("{% for m in messages %}<start_of_turn>{{ m['role'] }} {{ m['content'] }}<end_of_turn>"
                      "{% endfor %}{% if add_generation_prompt %}<start_of_turn>assistant {% endif %}"),
    "<|eot_id|>": ("{% for m in messages %}<|start_header_id|>{{ m['role'] }}<|end_header_id|> {{ m['content'] }}"
                   "<|eot_id|>{% endfor %}{% if add_generation_prompt %}<|start_header_id|>assistant<|end_header_id|> "
                   "{% endif %}"),
    "<|im_end|>": ("{% for m in messages %}<|im_start|>{{ m['role'] }} {{ m['content'] }}<|im_end|>{% endfor %}"
                   "{% if add_generation_prompt %}<|im_start|>assistant {% endif %}"),
}


@pytest.mark.parametrize("end", list(TEMPLATES))
def test_generation_stops_at_the_templates_end_of_turn(end, hf_tokenizer_dir, tmp_path):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from conftest import make_tiny_llama
    from tell.eval.generate import generate_batch
    from tell.prompting import stop_ids

    tok = AutoTokenizer.from_pretrained(hf_tokenizer_dir)
    specials = sorted({t for t in ("<start_of_turn>", "<end_of_turn>", "<|start_header_id|>", "<|end_header_id|>",
                                   "<|eot_id|>", "<|im_start|>", "<|im_end|>") if t in TEMPLATES[end]})
    tok.add_special_tokens({"additional_special_tokens": specials})
    tok.save_pretrained(tmp_path / "tok")
    model_dir = make_tiny_llama(tmp_path / "tok", tmp_path / "m", chat_template=TEMPLATES[end])
    tok = AutoTokenizer.from_pretrained(model_dir)
    eot = tok.convert_tokens_to_ids(end)
    assert eot in stop_ids(tok) and tok.eos_token_id in stop_ids(tok)
    rec = Record(prompt="judge the answer", response="yes")
    assert encode(tok, rec)[1][-1] == eot  # the template closes the answer with it: training teaches it

    model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    ids = prompt_ids(tok, rec)
    with torch.no_grad():  # make the end-of-turn token the model's first choice after this prompt
        logits = model(torch.tensor([ids])).logits[0, -1]
        top = int(logits.argmax())
        assert logits[top] > 0
        model.lm_head.weight[eot] = 2 * model.lm_head.weight[top]
    kw = dict(max_new_tokens=6, greedy=True, temperature=0.3, top_k=20, top_p=0.7, repetition_penalty=1.0, seed=0)
    assert generate_batch(model, tok, [ids], **kw) == [""]  # stopped at once
    out = model.generate(input_ids=torch.tensor([ids]), max_new_tokens=6, do_sample=False,
                         eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    assert out.shape[1] - len(ids) == 6 and int(out[0, len(ids)]) == eot  # EOS alone would have run on
