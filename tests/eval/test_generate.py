"""`tell.eval.generate`: batched generation equals one-at-a-time, padding, default lengths."""

from __future__ import annotations


def test_batched_greedy_equals_one_at_a_time(tiny_model):
    import torch
    from transformers import AutoModelForCausalLM

    from tell.eval.generate import generate_batch
    from tell.models import load_tokenizer

    tok = load_tokenizer(str(tiny_model))
    model = AutoModelForCausalLM.from_pretrained(tiny_model).eval()
    g = torch.Generator().manual_seed(0)
    prompts = [torch.randint(4, 60, (n,), generator=g).tolist() for n in (3, 9, 5, 12, 7, 4)]
    kw = dict(max_new_tokens=12, greedy=True, temperature=0.3, top_k=20, top_p=0.7, repetition_penalty=1.0, seed=0)
    batched = generate_batch(model, tok, prompts, **kw)
    single = [generate_batch(model, tok, [p], **kw)[0] for p in prompts]
    assert batched == single and any(batched)


def test_batched_generation_with_the_papers_penalty_ignores_padding_when_pad_is_eos(tiny_model):
    """Llama-2 and Qwen have no pad token: pad = EOS, and left padding puts EOS into padded rows only. A
    repetition penalty that counted padding would penalise EOS there alone, so an output would depend on its
    batch. transformers' penalty skips the left padding (from the attention mask); this checks it stays so."""
    import torch
    from transformers import AutoModelForCausalLM, LogitsProcessorList, RepetitionPenaltyLogitsProcessor

    from tell.eval.generate import generate_batch
    from tell.models import load_tokenizer

    tok = load_tokenizer(str(tiny_model))
    tok.pad_token = tok.eos_token
    model = AutoModelForCausalLM.from_pretrained(tiny_model).eval()
    g = torch.Generator().manual_seed(0)
    prompts = [torch.randint(4, 60, (n,), generator=g).tolist() for n in (3, 9, 5, 12, 7, 4)]
    with torch.no_grad():  # EOS ties with the token the model emits most: a 1.05 penalty on EOS flips it
        first = [int(model(torch.tensor([p])).logits[0, -1].argmax()) for p in prompts]
        top = max(set(first), key=first.count)
        model.lm_head.weight[tok.eos_token_id] = model.lm_head.weight[top]
    kw = dict(max_new_tokens=12, greedy=True, temperature=0.3, top_k=20, top_p=0.7, repetition_penalty=1.05, seed=0)
    batched = generate_batch(model, tok, prompts, **kw)
    single = [generate_batch(model, tok, [p], **kw)[0] for p in prompts]
    assert batched == single

    # The control: a penalty that counts the padding makes the batched outputs differ (the test can fail).
    width = max(map(len, prompts))
    ids = torch.tensor([[tok.pad_token_id] * (width - len(p)) + p for p in prompts])
    mask = (torch.arange(width)[None] >= torch.tensor([width - len(p) for p in prompts])[:, None]).long()
    out = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=12, do_sample=False,
                         pad_token_id=tok.pad_token_id, top_k=None, top_p=None, temperature=None,
                         logits_processor=LogitsProcessorList([RepetitionPenaltyLogitsProcessor(1.05)]))
    counted = [tok.decode(r[width:], skip_special_tokens=True) for r in out]
    assert counted != single


def test_a_shared_opening_run_once_gives_the_outputs_of_one_at_a_time(tiny_model):
    """Prompts sharing a long opening (an eval set's instruction) get it computed once into a fixed-size KV
    cache copied to every row, with the padding between the opening and each row's own part: the outputs
    equal one-at-a-time generation (no sharing there), also with the paper's repetition penalty and pad = EOS."""
    import torch
    from transformers import AutoModelForCausalLM

    from tell.eval import generate as G
    from tell.models import load_tokenizer

    tok = load_tokenizer(str(tiny_model))
    tok.pad_token = tok.eos_token
    model = AutoModelForCausalLM.from_pretrained(tiny_model).eval()
    g = torch.Generator().manual_seed(1)
    opening = torch.randint(4, 60, (G.MIN_SHARED_PREFIX + 6,), generator=g).tolist()
    prompts = [opening + torch.randint(4, 60, (n,), generator=g).tolist() for n in (1, 9, 4, 13)]
    assert G.shared_prefix(prompts) >= len(opening)  # the sharing path is the one under test
    for penalty in (1.0, 1.05):
        kw = dict(max_new_tokens=10, greedy=True, temperature=1.0, top_k=0, top_p=1.0, repetition_penalty=penalty,
                  seed=0)
        batched = G.generate_batch(model, tok, prompts, **kw)
        single = [G.generate_batch(model, tok, [p], **kw)[0] for p in prompts]
        assert batched == single and any(batched)


def test_shared_prefix_leaves_every_prompt_a_token_of_its_own():
    from tell.eval.generate import shared_prefix

    assert shared_prefix([[1, 2, 3, 4], [1, 2, 3, 5]]) == 3
    assert shared_prefix([[1, 2, 3], [1, 2, 3, 4]]) == 2  # the shorter one keeps its last token
    assert shared_prefix([[7, 2], [1, 2]]) == 0


def test_default_generation_length_covers_the_longest_reference(tiny_model):
    from tell.data.records import Record
    from tell.eval.run import default_max_new_tokens
    from tell.models import load_tokenizer

    tok = load_tokenizer(str(tiny_model))
    long = [Record(prompt="p", response=" ".join(["river"] * 1200)), Record(prompt="p", response="castle")]
    assert default_max_new_tokens("translation", long, tok) == int(1200 * 1.25) + 16  # past the kind's 1,024
    assert default_max_new_tokens("mcq", [Record(prompt="p", response="B")], tok) == 32  # the kind's default


def test_rows_that_stopped_leave_the_batch_and_the_outputs_stay_those_of_one_call(tiny_model, monkeypatch):
    """Greedy decoding looks every RETIRE_EVERY tokens for rows that generated a stop token and drops them (and
    their KV-cache rows) from the batch: the batch shrinks as answers end, and every output equals both one call
    over the whole batch (no retiring) and one-at-a-time generation, with and without a shared opening and the
    paper's repetition penalty. With pad = EOS made likely, this also holds the padding between a shared opening
    and each row's own part away from the penalty (transformers skips only left padding): padded with EOS, the
    padded rows had EOS penalised and stopped otherwise than alone."""
    import torch
    from transformers import AutoModelForCausalLM

    from tell.eval import generate as G
    from tell.models import load_tokenizer

    tok = load_tokenizer(str(tiny_model))
    tok.pad_token = tok.eos_token
    model = AutoModelForCausalLM.from_pretrained(tiny_model).eval()
    g = torch.Generator().manual_seed(3)
    lengths = (3, 9, 5, 12, 7, 4, 6, 10)
    with torch.no_grad():  # EOS made as likely as a frequent token, so rows stop at different steps
        probe = [torch.randint(4, 60, (n,), generator=g).tolist() for n in lengths]
        first = [int(model(torch.tensor([p])).logits[0, -1].argmax()) for p in probe]
        model.lm_head.weight[tok.eos_token_id] = model.lm_head.weight[max(set(first), key=first.count)] * 1.02
    sizes: list[int] = []
    real = model.generate

    def spy(*a, **kw):
        sizes.append(kw["input_ids"].shape[0])
        return real(*a, **kw)

    monkeypatch.setattr(model, "generate", spy)
    opening = torch.randint(4, 60, (G.MIN_SHARED_PREFIX + 3,), generator=g).tolist()
    for shared in (False, True):
        prompts = [(opening if shared else []) + torch.randint(4, 60, (n,), generator=g).tolist() for n in lengths]
        for penalty in (1.0, 1.05):
            kw = dict(max_new_tokens=14, greedy=True, temperature=1.0, top_k=0, top_p=1.0,
                      repetition_penalty=penalty, seed=0)
            monkeypatch.setattr(G, "RETIRE_EVERY", 1000)
            one_call = G.generate_batch(model, tok, prompts, **kw)
            monkeypatch.setattr(G, "RETIRE_EVERY", 2)
            sizes.clear()
            retiring = G.generate_batch(model, tok, prompts, **kw)
            single = [G.generate_batch(model, tok, [p], **kw)[0] for p in prompts]
            assert retiring == one_call == single, (shared, penalty, retiring == one_call, one_call == single)
            batch = sizes[:sizes.index(1)] if 1 in sizes else sizes  # the batched call's, before the single ones
            # some rows stopped early (the batch shrank), others wrote on (generate() was called again after)
            assert batch[0] == len(prompts) and batch[-1] < batch[0] and batch == sorted(batch, reverse=True), batch
            assert any(one_call)
