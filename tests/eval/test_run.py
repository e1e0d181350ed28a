"""`tell eval` end to end: the anchor, resume, k-shot choice, AGIEval averages, metric kinds."""

from __future__ import annotations

import json

import pytest

from tell.cli import main
from tell.data.builders import build

from conftest import fake_source, write_jsonl

J = json.dumps


def _row(i: int, kind: str | None = "cloze", **meta) -> dict:
    meta = {"kind": kind, "answer": "json yes", **meta} if kind else {}
    return {"prompt": f"judge castle {i}", "response": "json yes", "meta": meta}


def test_eval_reads_meta_kind_of_prompt_response_records_and_refuses_mixed_kinds(tmp_path, tiny_model, capsys):
    from tell.eval.config import EvalConfig
    from tell.eval.run import _file_set

    plain = write_jsonl(tmp_path / "plain.jsonl", [_row(i) for i in range(2)])  # no source/origin keys
    assert _file_set(str(plain), EvalConfig()).kind == "cloze"
    mixed = write_jsonl(tmp_path / "mixed.jsonl", [_row(0), _row(1), _row(2, "mcq", choices=["A", "B"])])
    out = tmp_path / "ev"
    assert main(["eval", "--model", str(tiny_model), "--data", str(mixed), "--out", str(out), "--greedy",
                 "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "field 'meta.kind': row 3 is of kind 'mcq' but row 1 of kind 'cloze'" in err, err
    assert "expected one kind per eval file" in err and not out.exists()
    unknown = write_jsonl(tmp_path / "unknown.jsonl", [_row(0, "clozee")])
    assert main(["eval", "--model", str(tiny_model), "--data", str(unknown), "--out", str(out), "--greedy",
                 "--no-progress"]) == 2
    assert "field 'meta.kind': unknown kind 'clozee'" in capsys.readouterr().err
    partly = write_jsonl(tmp_path / "partly.jsonl", [_row(0), _row(1, None)])
    assert main(["eval", "--model", str(tiny_model), "--data", str(partly), "--out", str(out), "--greedy",
                 "--no-progress"]) == 2
    assert "row 2 is without meta.kind but row 1 of kind 'cloze'" in capsys.readouterr().err


def test_eval_cli_end_to_end_with_anchor_and_resume(tmp_path, tiny_model, toy_mixture, monkeypatch, capsys):
    from tell.eval import generate as G
    from tell.train.config import TrainConfig
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


def test_agieval_average_and_gsm8k_scored_as_the_task(tmp_path, tiny_model):
    """Several AGIEval sub-tasks -> an `agieval` average (each sub-task counts once); --task-data makes GSM8K a
    task set that gets the anchor (paper A.4); the generation length used is recorded."""
    from tell.data.builders import AGIEVAL_EN, AGIEVAL_ZH
    from tell.eval.config import EvalConfig
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


def test_the_default_generation_length_is_cut_to_the_context_and_an_explicit_one_that_cannot_fit_refused(
        tmp_path, tiny_model, capsys):
    """A set's default --max-new-tokens (the kind's, or its longest reference x 1.25 + 16) ran past the model's
    context (max_position_embeddings) less the prompt."""
    import shutil

    small = tmp_path / "small_context"
    shutil.copytree(tiny_model, small)
    config = json.loads((small / "config.json").read_text())
    (small / "config.json").write_text(J(config | {"max_position_embeddings": 40}))
    data = write_jsonl(tmp_path / "e.jsonl", [_row(i) for i in range(3)])
    args = ["eval", "--model", str(small), "--data", str(data), "--greedy", "--no-progress", "--bootstrap", "20"]

    from tell.eval.config import EvalConfig
    from tell.eval.run import _file_set, default_max_new_tokens
    from tell.models import load_tokenizer
    from tell.prompting import prompt_ids

    tok = load_tokenizer(str(small))
    es = _file_set(str(data), EvalConfig())
    longest = max(len(prompt_ids(tok, r)) for r in es.records)
    room = 40 - longest
    assert 0 < room < default_max_new_tokens(es.kind, es.records, tok)  # the default would run past the context

    assert main(args + ["--out", str(tmp_path / "ev")]) == 0
    err = capsys.readouterr().err
    assert err.count(f"generating at most {room} new tokens (the default") == 1, err
    assert f"the model's context of 40 tokens after the longest prompt of {data} ({longest} tokens)" in err
    metrics = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    assert metrics["sets"][str(data)]["decoding"]["max_new_tokens"] == room

    assert main(args + ["--out", str(tmp_path / "ev2"), "--max-new-tokens", str(room + 1)]) == 2
    err = capsys.readouterr().err
    last = err.splitlines()[-1]  # after transformers' "Loading weights" bar
    assert last.startswith("tell: error: ") and err.count("tell: error:") == 1 and "Traceback" not in err, err
    assert f"field 'max_new_tokens': {room + 1} new tokens do not fit in the model's" in last
    assert f"expected at most {room}" in err and not (tmp_path / "ev2").exists()  # refused before anything is written
    assert main(args + ["--out", str(tmp_path / "ev3"), "--max-new-tokens", str(room)]) == 0
    assert "generating at most" not in capsys.readouterr().err
