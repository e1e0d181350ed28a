"""`tell eval`, its metrics and the data set builders."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from conftest import SHARED, write_jsonl
from tell.cli import main
from tell.data.answers import gsm8k_number, strip_lead_in
from tell.data.builders import build, halu_key
from tell.eval import metrics as M

J = json.dumps


# ---- metrics against hand-checked cases ------------------------------------------------------------------

@pytest.mark.parametrize("text, strict, lenient, pred", [
    (J({"thought": "fine", "hallucination": "no"}), 1, 1, "no"),
    ("\n " + J({"thought": "t", "hallucination": "yes"}) + "\n", 1, 1, "yes"),        # JSON allows whitespace
    (J({"thought": "t", "hallucination": "no", "extra": 1}), 0, 1, "no"),            # extra key: not strict
    ("```json\n" + J({"thought": "t", "hallucination": "yes"}) + "\n```", 0, 1, "yes"),  # fenced: lenient only
    ("Sure! " + J({"thought": "t", "hallucination": "No"}), 0, 1, "no"),
    (J({"thought": "t", "hallucination": "maybe"}), 0, 0, None),
    (J({"thought": 3, "hallucination": "no"}), 0, 1, "no"),                          # thought must be a string
    (J({"hallucination": "no"}), 0, 1, "no"),
    ("{'thought': 't', 'hallucination': 'no'}", 0, 0, None),                          # Python dict, not JSON
    ("yes", 0, 0, None),
])
def test_json_adherence(text, strict, lenient, pred):
    s = M.score_json(text, "no")
    assert (s["strict"], s["lenient"], s["pred"]) == (strict, lenient, pred)
    assert s["correct"] == float(pred == "no")


def test_label_metrics_by_hand():
    # gold:  y y n n n ; pred: y n y n (unparsed)
    items = [M.score_json(J({"thought": "", "hallucination": p}), g) if p else M.score_json("garbage", g)
             for p, g in (("yes", "yes"), ("no", "yes"), ("yes", "no"), ("no", "no"), (None, "no"))]
    m = M.json_metrics(items, seed=0, resamples=200)
    assert m["json_strict"]["value"] == pytest.approx(0.8)
    assert m["label_accuracy"]["value"] == pytest.approx(2 / 4)        # on the 4 parsed
    assert m["label_accuracy_all"]["value"] == pytest.approx(2 / 5)
    assert m["label_precision"]["value"] == pytest.approx(1 / 2)       # tp 1, predicted yes 2
    assert m["label_recall"]["value"] == pytest.approx(1 / 2)          # tp 1, gold yes 2 (parsed)
    assert m["label_f1"]["value"] == pytest.approx(1 / 2)
    lo, hi = m["json_strict"]["ci95"]
    assert lo <= 0.8 <= hi and lo < hi


def test_bootstrap_interval_is_seeded_and_narrows():
    rng = np.random.default_rng(1)
    small, large = rng.random(30) < 0.4, rng.random(3000) < 0.4
    a, b = M.mean_metric(small, seed=3), M.mean_metric(small, seed=3)
    assert a == b and a["ci95"][0] < a["value"] < a["ci95"][1]
    w_small = np.diff(a["ci95"])[0]
    w_large = np.diff(M.mean_metric(large, seed=3)["ci95"])[0]
    assert w_large < w_small / 5


def test_translation_metrics_match_sacrebleu_and_strip_lead_in():
    from sacrebleu.metrics import BLEU, CHRF

    refs = ["Sure, here is the English translation: \n\n the cat sat on the mat today", "a dog ran in the park"]
    hyps = ["Sure, here is the English translation: the cat sat on a mat today", "the dog ran in a park"]
    m = M.translation_metrics(hyps, refs, seed=0, resamples=100)
    clean_h, clean_r = [strip_lead_in(h) for h in hyps], [strip_lead_in(r) for r in refs]
    assert clean_r[0] == "the cat sat on the mat today"
    assert m["chrf++"]["value"] == pytest.approx(CHRF(word_order=2).corpus_score(clean_h, [clean_r]).score)
    assert m["bleu"]["value"] == pytest.approx(BLEU().corpus_score(clean_h, [clean_r]).score)


def test_optional_metrics_fail_clearly(tmp_path):
    from tell.errors import TellError

    with pytest.raises(TellError, match="bleurt"):
        M.translation_metrics(["a"], ["a"], seed=0, resamples=10, bleurt=str(tmp_path))


@pytest.mark.parametrize("text, number", [("so 3 + 4 = 7\n#### 7", "7"), ("#### 1,234", "1234"),
                                          ("The answer is 12.", "12"), ("It costs $3.50 in all", "3.50"),
                                          ("no digits", None)])
def test_gsm8k_number(text, number):
    assert gsm8k_number(text) == number


@pytest.mark.parametrize("text, pred", [("(B) because", "B"), ("The answer is C.", "C"), ("Answer: (A)", "A"),
                                        ("I think it is A, C", "AC"), ("a dog", None), ("E", "E")])
def test_mcq_letter(text, pred):
    assert M.score_mcq(text, "A")["pred"] == pred


# ---- builders --------------------------------------------------------------------------------------------

HALU_HEAD = "Role and Goal: judge.\n\nConsider the following task:\n'relatives' : \n'user_query' : {q}\n'chatgpt_response' : {r}"


def fake_source(root: Path) -> Path:
    """A tiny copy of the public files, laid out like ../shared/data."""
    general = [{"ID": str(i), "user_query": f"query {i}", "chatgpt_response": f"answer {i}\nline two",
                "hallucination": "yes" if i % 3 == 0 else "no", "hallucination_spans": [f"answer {i}"] if i % 3 == 0 else []}
               for i in range(12)]
    write_jsonl(root / "halueval" / "general_data.jsonl", general)
    write_jsonl(root / "tell" / "test_Halu_CoT_JSON.jsonl",
                [{"prompt": HALU_HEAD.replace("Consider", "Consider").format(q=g["user_query"], r=g["chatgpt_response"]),
                  "response": g["hallucination"]} for g in general[:4]])
    for d, lang in (("en-is", "Icelandic"), ("is-en", "English")):
        for stem in ("dev", "test"):
            write_jsonl(root / "tell" / f"{stem}-{d}.jsonl",
                        [{"query": f"Translate this into {lang}.\n\n text {i}",
                          "response": f"Sure, here is the {lang} translation: \n\n out {i}"} for i in range(5)])
    write_jsonl(root / "gsm8k" / "train.jsonl", [{"question": "1+1?", "answer": "1+1=2\n#### 2"}])
    write_jsonl(root / "gsm8k" / "test.jsonl", [{"question": "2+2?", "answer": "#### 4"}])
    return root


def test_builders_on_small_copies(tmp_path):
    src = fake_source(tmp_path / "src")
    m = build("halu-cot-json", tmp_path / "data", source=str(src))
    assert m["splits"] == {"train": 8, "test": 4}
    train = [json.loads(x) for x in (tmp_path / "data/halu-cot-json/train.jsonl").read_text().splitlines()]
    assert all(json.loads(r["response"])["hallucination"] == r["meta"]["label"] for r in train)
    yes = next(r for r in train if r["meta"]["label"] == "yes")
    assert '"answer' in json.loads(yes["response"])["thought"] and yes["prompt"].startswith("Role and Goal: judge.")
    m = build("is-en-news", tmp_path / "data", source=str(src))
    rec = json.loads((tmp_path / "data/is-en-news/en-is/test.jsonl").read_text().splitlines()[0])
    assert rec["meta"]["instruction"] == "Translate this into Icelandic." and rec["meta"]["source_text"] == "text 0"
    assert rec["meta"]["reference"] == "out 0"
    build("gsm8k", tmp_path / "data", source=str(src))
    assert json.loads((tmp_path / "data/gsm8k/test.jsonl").read_text())["meta"]["answer"] == "4"


def test_malformed_source_row_names_file_line_and_field(tmp_path, capsys):
    from tell.errors import TellError

    src = fake_source(tmp_path / "src")
    # A blank line first: the reported number is the file's line (1-based), not the row's index.
    write_jsonl(src / "gsm8k" / "test.jsonl", [{"question": "2+2?", "answer": "#### 4"}, "", {"question": "3+3?"}])
    with pytest.raises(TellError) as e:
        build("gsm8k", tmp_path / "data", source=str(src))
    assert str(e.value).startswith("gsm8k/test.jsonl:3: field 'answer': missing from this source row; "
                                   "expected a string")
    assert (e.value.file, e.value.line, e.value.field) == ("gsm8k/test.jsonl", 3, "answer")
    # The wrong type is named too, and the command says it in one line, exit code 2, nothing written.
    write_jsonl(src / "tell" / "dev-en-is.jsonl", [{"query": ["not", "text"], "response": "r"}])
    assert main(["data", "build", "is-en-news", "--source", str(src), "--out", str(tmp_path / "data")]) == 2
    err = capsys.readouterr().err
    assert err == "tell: error: tell/dev-en-is.jsonl:1: field 'query': expected a string, got list " \
                  "(line numbers are 1-based)\n"
    assert not (tmp_path / "data").exists()


@pytest.mark.skipif(not (SHARED / "data" / "halueval").is_dir(), reason="no ../shared/data")
def test_halu_train_has_zero_overlap_with_the_official_test(tmp_path):
    import re

    m = build("halu-cot-json", tmp_path, source=str(SHARED / "data"))
    assert m["splits"] == {"train": 3001, "test": 1506}  # 4,507 HaluEval items = 3,001 + 1,506
    pat = re.compile(r"'user_query' : (.*?)\n'chatgpt_response' : (.*)\Z", re.S)
    keys = lambda split: {halu_key(*pat.search(json.loads(x)["prompt"]).groups())
                          for x in (tmp_path / f"halu-cot-json/{split}.jsonl").read_text().splitlines()}
    test, train = keys("test"), keys("train")
    assert len(test) == 1506 and not (test & train)


# ---- generation and the command ---------------------------------------------------------------------------

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


def test_eval_cli_end_to_end_with_anchor_and_resume(tmp_path, tiny_model, toy_mixture, monkeypatch, capsys):
    from tell.train.config import TrainConfig
    from tell.eval import generate as G
    from tell.train.run import train

    run = tmp_path / "run"
    train(TrainConfig(mixture=str(toy_mixture), model=str(tiny_model), out=str(run), progress=False, save_steps=0))
    task = write_jsonl(tmp_path / "task_eval.jsonl", [
        {"prompt": f"judge castle river {i}", "response": J({"thought": "x", "hallucination": "no"}),
         "source": "task", "origin": "x", "meta": {"kind": "json", "role": "task", "label": "no"}} for i in range(5)])
    general = write_jsonl(tmp_path / "general_eval.jsonl", [
        {"question": f"add {i}", "answer": f"#### {i}"} for i in range(4)])
    calls = []
    real = G.generate_batch
    monkeypatch.setattr(G, "generate_batch", lambda *a, **k: calls.append(len(a[2])) or real(*a, **k))
    args = ["eval", "--model", str(tiny_model), "--adapter", str(run), "--data", str(task), "--data", str(general),
            "--metric", "gsm8k", "--out", str(tmp_path / "ev"), "--batch-size", "2", "--max-new-tokens", "6",
            "--no-progress", "--bootstrap", "50"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "task_eval.jsonl (5 items)" in out and "accuracy" in out
    metrics = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    task_set = metrics["sets"][str(task)]
    assert task_set["anchor"]["text"] == "task" and set(task_set["metrics"]) >= {"json_strict", "json_lenient", "label_f1"}
    assert metrics["sets"][str(general)]["metrics"]["accuracy"]["value"] is not None
    preds = [json.loads(x) for x in (tmp_path / "ev" / "predictions.jsonl").read_text().splitlines()]
    assert len(preds) == 9
    # The run's anchor (prefix "task") reaches the task prompts; general questions stay as they were.
    assert all("task\njudge castle river" in p["input"] for p in preds if p["set"] == str(task))
    assert all("task\n" not in p["input"] for p in preds if p["set"] == str(general))
    assert sum(calls) == 9
    # Kill simulation: drop the last two lines and tear the one before; a rerun redoes only those batches.
    lines = (tmp_path / "ev" / "predictions.jsonl").read_text().splitlines()
    (tmp_path / "ev" / "predictions.jsonl").write_text("\n".join(lines[:-3] + [lines[-3][:15]]) + "\n")
    calls.clear()
    assert main(args) == 0
    assert 0 < sum(calls) <= 4
    again = [json.loads(x) for x in (tmp_path / "ev" / "predictions.jsonl").read_text().splitlines()]
    assert sorted((p["set"], p["id"]) for p in again) == sorted((p["set"], p["id"]) for p in preds)
    # Other settings in the same folder are refused.
    capsys.readouterr()
    assert main(args[:-2] + ["--bootstrap", "60"]) == 2
    assert "other settings ['bootstrap']" in capsys.readouterr().err


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


def test_json_official_follows_the_official_rewrite_as_described():
    """../shared/paper/official_eval.md: quotes to ', the thought key restored, yes -> no, then json.loads.
    Taken literally, that rewrite breaks every output that has a quoted string value (the restored
    `"thought": "` opens a string the rewritten `'` cannot close), so only quote-free outputs parse."""
    from tell.eval.metrics import json_metrics, official_rewrite, score_json

    good = J({"thought": "The response is right.", "hallucination": "yes"})
    assert official_rewrite(good) == "{\"thought\": \"The response is right.', 'hallucination': 'no'}"
    assert score_json(good, "yes")["official"] == 0.0 and score_json(good, "yes")["strict"] == 1.0
    assert score_json("{}", "no")["official"] == 1.0 and score_json("no JSON here", "no")["official"] == 0.0
    items = [score_json(x, "no") for x in ("{}", "[1, 2]", "nothing", good)]
    assert json_metrics(items, seed=0, resamples=50)["json_official"]["value"] == 0.5


# ---- the paper's protocol: fixed 2-shot, lengths, OpenBookQA, the AGIEval average, GSM8K as the task -------

def test_two_shot_is_one_fixed_pair_by_default_per_item_on_request(tmp_path):
    from tell.eval.config import EvalConfig
    from tell.eval.run import resolve_set, set_inputs

    src = fake_source(tmp_path / "src")
    build("is-en-news", tmp_path / "data", source=str(src))
    (es,) = resolve_set("is-en-news:en-is", EvalConfig(data_dir=str(tmp_path / "data")))
    shots = lambda mode, seed=42: [tuple(t["content"] for t in r.history)  # noqa: E731
                                   for r in set_inputs(es, EvalConfig(shot_mode=mode, shot_seed=seed), None)[1]]
    fixed, per_item = shots("fixed"), shots("per-item")
    assert len(fixed) == 5 and len(set(fixed)) == 1 and len(fixed[0]) == 4  # 2 shots = 2 user + 2 assistant turns
    assert len(set(per_item)) > 1 and shots("per-item") == per_item  # seeded
    assert shots("fixed", 7) != fixed or shots("fixed", 8) != fixed  # the pair follows --shot-seed


def test_default_generation_length_covers_the_longest_reference(tiny_model):
    from tell.data.records import Record
    from tell.eval.run import default_max_new_tokens
    from tell.models import load_tokenizer

    tok = load_tokenizer(str(tiny_model))
    long = [Record(prompt="p", response=" ".join(["river"] * 1200)), Record(prompt="p", response="castle")]
    assert default_max_new_tokens("translation", long, tok) == int(1200 * 1.25) + 16  # past the kind's 1,024
    assert default_max_new_tokens("mcq", [Record(prompt="p", response="B")], tok) == 32  # the kind's default


def _obqa_ai2(i: int) -> dict:
    return {"id": f"q{i}", "question": {"stem": f"Which is a planet {i}?", "choices": [
        {"text": t, "label": lab} for t, lab in zip(("a river", "a planet", "a cloud", "a candle"), "ABCD")]},
        "answerKey": "B"}


def test_openbookqa_builder_local_copy_and_hub_parquet(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from tell.errors import TellError
    from tell.eval.metrics import score_mcq

    src = tmp_path / "src"
    for split in ("train", "test"):  # AI2's original JSONL layout, in a local copy
        write_jsonl(src / "openbookqa" / f"{split}.jsonl", [_obqa_ai2(i) for i in range(3)])
    m = build("openbookqa", tmp_path / "a", source=str(src))
    assert m["splits"] == {"train": 3, "test": 3} and set(m["source_sha256"]) == {"openbookqa/train.jsonl",
                                                                                  "openbookqa/test.jsonl"}
    rec = json.loads((tmp_path / "a/openbookqa/test.jsonl").read_text().splitlines()[0])
    assert rec["meta"] == {"kind": "mcq", "role": "general", "label": "B", "choices": ["A", "B", "C", "D"]}
    assert rec["prompt"].startswith("Which is a planet 0?\n\n(A) a river\n(B) a planet") and rec["response"] == "B"
    assert score_mcq("The answer is (B).", rec["meta"]["label"], rec["meta"]["choices"])["correct"] == 1.0
    # The Hub's Parquet layout (allenai/openbookqa, main): read from the download cache when the local folder has
    # no copy (a pre-filled cache: the test never downloads).
    cache = tmp_path / "cache"
    for split in ("train", "test"):
        rows = [{"id": f"h{i}", "question_stem": f"What grows {i}?", "choices": {"text": ["stone", "tree", "glass", "iron"],
                 "label": ["A", "B", "C", "D"]}, "answerKey": "B"} for i in range(2)]
        (cache / "openbookqa").mkdir(parents=True, exist_ok=True)
        pq.write_table(pa.Table.from_pylist(rows), cache / "openbookqa" / f"{split}.parquet")
    (tmp_path / "nocopy").mkdir()
    m = build("openbookqa", tmp_path / "b", source=str(tmp_path / "nocopy"), cache=str(cache))
    assert m["splits"] == {"train": 2, "test": 2} and "openbookqa/test.parquet" in m["source_sha256"]
    rec = json.loads((tmp_path / "b/openbookqa/test.jsonl").read_text().splitlines()[1])
    assert rec["prompt"].startswith("What grows 1?\n\n(A) stone\n(B) tree") and rec["meta"]["label"] == "B"
    bad = _obqa_ai2(0) | {"answerKey": "E"}
    write_jsonl(src / "openbookqa" / "test.jsonl", [bad])
    with pytest.raises(TellError, match=r"openbookqa/test.jsonl:1: field 'answerKey': expected the answer key"):
        build("openbookqa", tmp_path / "c", source=str(src))


def test_agieval_average_and_gsm8k_scored_as_the_task(tmp_path, tiny_model):
    """Several AGIEval sub-tasks -> an `agieval` average (each sub-task counts once); --task-data makes GSM8K a
    task set that gets the anchor (paper A.4); the generation length used is recorded."""
    from tell.eval.config import EvalConfig
    from tell.data.builders import AGIEVAL_EN, AGIEVAL_ZH
    from tell.eval.run import evaluate

    src = fake_source(tmp_path / "src")
    for name in AGIEVAL_EN + AGIEVAL_ZH:
        write_jsonl(src / "agieval" / f"{name}.jsonl", [
            {"passage": None, "question": f"{name} question {i}", "options": ["(A) river", "(B) ocean"], "label": "A"}
            for i in range(3)] + [{"passage": None, "question": "no gold", "options": ["(A) a", "(B) b"], "label": []}])
    for name in ("agieval", "gsm8k"):
        build(name, tmp_path / "data", source=str(src))
    # an item without a gold answer (one jec-qa-kd item has `label: []`) cannot be scored: left out
    assert len((tmp_path / "data" / "agieval" / "jec-qa-kd" / "test.jsonl").read_text().splitlines()) == 3
    res = evaluate(EvalConfig(model=str(tiny_model), data=["agieval:aqua-rat", "agieval:lsat-ar"], task_data=["gsm8k"],
                              data_dir=str(tmp_path / "data"), anchor="task", greedy=True, limit=2, bootstrap=20,
                              out=str(tmp_path / "ev"), progress=False))
    subs = [res["sets"][f"agieval:{n}"]["metrics"]["accuracy"]["value"] for n in ("aqua-rat", "lsat-ar")]
    avg = res["averages"]["agieval"]
    assert avg["sets"] == ["agieval:aqua-rat", "agieval:lsat-ar"] and avg["items"] == 4
    assert avg["metrics"]["accuracy"]["value"] == pytest.approx(sum(subs) / 2)
    gsm = res["sets"]["gsm8k"]
    assert gsm["role"] == "task" and gsm["anchor"]["text"] == "task"
    assert res["sets"]["agieval:aqua-rat"]["anchor"] is None  # general-ability sets never get it
    assert gsm["decoding"]["max_new_tokens"] == 384 and res["sets"]["agieval:aqua-rat"]["decoding"]["max_new_tokens"] == 32
    preds = [json.loads(x) for x in (tmp_path / "ev" / "predictions.jsonl").read_text().splitlines()]
    assert all("task\n2+2?" in p["input"] for p in preds if p["set"] == "gsm8k")
    assert json.loads((tmp_path / "ev" / "metrics.json").read_text())["averages"] == res["averages"]
