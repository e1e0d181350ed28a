"""Evaluation during training: `tell train --eval-data SET --eval-steps N` (issue 24 item 1)."""

from __future__ import annotations

import json
import random

import pytest
import torch
from safetensors.torch import load_file

from tell.artifacts import RunDir
from tell.cli import main
from tell.train.run import train

from conftest import WORDS, train_config, write_jsonl


def _sets(tmp_path):
    rng = random.Random(5)
    task = write_jsonl(tmp_path / "task_eval.jsonl", [
        {"prompt": "judge " + " ".join(rng.choices(WORDS[10:30], k=4)), "response": "json yes thought no",
         "meta": {"kind": "cloze"}} for _ in range(12)])
    gen = []
    for _ in range(12):
        words = rng.choices(WORDS[10:30], k=3)
        gen.append({"prompt": "reverse " + " ".join(words), "response": " ".join(words[::-1]), "meta": {"kind": "cloze"}})
    return task, write_jsonl(tmp_path / "general_eval.jsonl", gen)


def test_evaluations_are_logged_every_n_steps_and_leave_the_training_as_it_was(toy_mixture, tiny_model, tmp_path):
    task, gen = _sets(tmp_path)
    kw = dict(max_steps=5, batch_size=4, micro_batch_size=2, lora_dropout=0.2, learning_rate=5e-3)
    train(train_config(toy_mixture, tiny_model, tmp_path / "plain", **kw))
    metrics = train(train_config(toy_mixture, tiny_model, tmp_path / "live", **kw, eval_data=[str(task)],
                                 eval_general_data=[str(gen)], eval_steps=2, eval_limit=8, eval_max_new_tokens=6))
    run = RunDir(tmp_path / "live")
    evals = run.eval_log()
    assert [r["step"] for r in evals] == [2, 4, 5]  # every 2 steps and after the last
    for r in evals:
        assert set(r["eval"]) == {str(task), str(gen)}
        assert r["eval"][str(task)]["role"] == "task" and r["eval"][str(gen)]["role"] == "general"
        assert all(s["items"] == 8 and 0 <= s["metrics"]["accuracy"]["value"] <= 1 for s in r["eval"].values())
    assert metrics["eval_during_training"]["steps"] == [2, 4, 5]
    # the loss rows, the health verdict and the adapter are those of the run without evaluations
    assert [r["loss"] for r in run.log()] == [r["loss"] for r in RunDir(tmp_path / "plain").log()]
    assert metrics["health"]["verdict"] == RunDir(tmp_path / "plain").metrics()["health"]["verdict"]
    a = load_file(tmp_path / "plain" / "adapter" / "adapter_model.safetensors")
    b = load_file(tmp_path / "live" / "adapter" / "adapter_model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_a_resumed_run_keeps_its_evaluations_once_each_and_redoes_those_after_its_checkpoint(toy_mixture,
                                                                                            tiny_model, tmp_path):
    """Killed after step 6 with checkpoint-3 left: the resume drops the log rows after step 3 (the loss rows and
    the evaluation at 4, which the lost steps produced), and the evaluations at 4 and 6 are made again by the
    resumed training, with the values of the run never interrupted; each step's evaluation appears once."""
    import shutil

    task, gen = _sets(tmp_path)
    kw = dict(max_steps=6, batch_size=4, micro_batch_size=2, save_steps=3, save_total_limit=3, learning_rate=5e-3,
              eval_data=[str(task)], eval_general_data=[str(gen)], eval_steps=2, eval_limit=6, eval_max_new_tokens=4)
    run = tmp_path / "run"
    train(train_config(toy_mixture, tiny_model, run, **kw))
    full = RunDir(run).eval_log()
    assert [r["step"] for r in full] == [2, 4, 6]
    (run / "metrics.json").unlink()
    shutil.rmtree(run / "checkpoints" / "checkpoint-6")
    metrics = train(train_config(toy_mixture, tiny_model, run, **kw, resume=True))
    assert metrics["resumed_from"] == "checkpoint-3"
    again = RunDir(run).eval_log()
    assert [r["step"] for r in again] == [2, 4, 6] and metrics["eval_during_training"]["steps"] == [2, 4, 6]
    values = lambda rows: [{k: {m: v["value"] for m, v in res["metrics"].items()} for k, res in r["eval"].items()}
                           for r in rows]  # noqa: E731
    assert values(again) == values(full)
    assert [r["step"] for r in RunDir(run).log()] == sorted({r["step"] for r in RunDir(run).log()})  # once each


def test_task_sets_get_the_runs_anchor_and_general_sets_none(toy_mixture, tiny_model, tmp_path):
    from transformers import AutoTokenizer

    from tell.data.anchor import Anchor
    from tell.train.live_eval import load_sets

    task, gen = _sets(tmp_path)
    tok = AutoTokenizer.from_pretrained(tiny_model)
    cfg = train_config(toy_mixture, tiny_model, tmp_path / "r", eval_data=[str(task)], eval_general_data=[str(gen)],
                       eval_steps=1, eval_limit=3)
    from transformers import AutoModelForCausalLM

    sets = load_sets(cfg, AutoModelForCausalLM.from_pretrained(tiny_model), tok, Anchor("task", "prefix", "\n"))
    by_role = {s.role: s for s in sets}
    assert len(by_role["task"].items) == 3
    assert all(tok.decode(ids).count("task") == 1 for ids in by_role["task"].ids)
    assert not any("task" in tok.decode(ids) for ids in by_role["general"].ids)


def test_hf_evaluation_settings_and_half_given_evaluations_are_refused_before_anything_is_written(
        toy_mixture, tiny_model, tmp_path, capsys):
    base = ["train", "--mixture", str(toy_mixture), "--model", str(tiny_model), "--no-progress"]
    assert main(base + ["--out", str(tmp_path / "a"), "--training-arg", "eval_strategy=steps"]) == 2
    err = capsys.readouterr().err
    assert "--eval-data SET" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "a").exists()
    assert main(base + ["--out", str(tmp_path / "b"), "--eval-steps", "2"]) == 2
    assert "needs both --eval-data" in capsys.readouterr().err and not (tmp_path / "b").exists()
    empty = write_jsonl(tmp_path / "empty.jsonl", [])
    assert main(base + ["--out", str(tmp_path / "c"), "--eval-data", str(empty), "--eval-steps", "2"]) == 2
    assert not (tmp_path / "c" / "config.json").exists()


def test_eval_steps_under_fsdp_or_zero3_is_refused_before_anything_is_written(toy_mixture, tiny_model, tmp_path,
                                                                              capsys, monkeypatch):
    """Live evaluation generates on the main process alone: with the weights sharded across processes (FSDP,
    DeepSpeed ZeRO-3; asked for by --training-arg or by accelerate launch's environment) it would hang, so it is
    refused by name; ZeRO-2 keeps the whole model on every process and is not refused."""
    from tell.train.run import _sharded

    task, _ = _sets(tmp_path)
    args = ["train", "--mixture", str(toy_mixture), "--model", str(tiny_model), "--no-progress", "--eval-data",
            str(task), "--eval-steps", "1"]
    assert main(args + ["--out", str(tmp_path / "a"), "--training-arg", "fsdp=full_shard"]) == 2
    err = capsys.readouterr().err
    assert "(FSDP) cannot do" in err and "tell eval" in err and len(err.strip().splitlines()) == 1
    ds = tmp_path / "ds.json"
    ds.write_text(json.dumps({"zero_optimization": {"stage": 3}}))
    assert main(args + ["--out", str(tmp_path / "b"), "--training-arg", f"deepspeed={ds}"]) == 2
    assert "(DeepSpeed ZeRO-3) cannot do" in capsys.readouterr().err
    with monkeypatch.context() as m:
        m.setenv("ACCELERATE_USE_FSDP", "true")
        assert main(args + ["--out", str(tmp_path / "c")]) == 2
    assert not any((tmp_path / x).exists() for x in "abc")
    assert _sharded({"fsdp": "no_shard"}) is None and _sharded({"fsdp": "shard_grad_op auto_wrap"}) == "FSDP"
    with monkeypatch.context() as m:  # accelerate launch's FSDP1 NO_SHARD: data parallel, not refused
        m.setenv("ACCELERATE_USE_FSDP", "true")
        m.setenv("FSDP_SHARDING_STRATEGY", "NO_SHARD")
        assert _sharded({}) is None
        m.setenv("FSDP_VERSION", "2")  # FSDP2 has no NO_SHARD: it always shards
        assert _sharded({}) == "FSDP"
    monkeypatch.setenv("ACCELERATE_USE_DEEPSPEED", "true")
    monkeypatch.setenv("ACCELERATE_DEEPSPEED_ZERO_STAGE", "3")
    assert _sharded({}) == "DeepSpeed ZeRO-3"
    assert _sharded({"deepspeed": {"zero_optimization": {"stage": 2}}}) is None  # the file's stage wins
    monkeypatch.setenv("ACCELERATE_DEEPSPEED_ZERO_STAGE", "2")
    assert _sharded({}) is None
    monkeypatch.delenv("ACCELERATE_DEEPSPEED_ZERO_STAGE")
    monkeypatch.setenv("ACCELERATE_DEEPSPEED_CONFIG_FILE", str(ds))  # accelerate's deepspeed_config_file
    assert _sharded({}) == "DeepSpeed ZeRO-3"


def test_evaluations_reach_the_trackers(toy_mixture, tiny_model, tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    task, _ = _sets(tmp_path)
    train(train_config(toy_mixture, tiny_model, tmp_path / "run", max_steps=2, eval_data=[str(task)], eval_steps=1,
                       eval_limit=4, eval_max_new_tokens=4, report_to="tensorboard"))
    events = list((tmp_path / "run" / "checkpoints" / "runs").rglob("events.out.tfevents.*"))
    acc = EventAccumulator(str(events[0].parent))
    acc.Reload()
    tag = f"eval/{task.stem}/accuracy"  # the tracker's eval section, as the README says (eval/SET/METRIC)
    assert tag in acc.Tags()["scalars"] and [s.step for s in acc.Scalars(tag)] == [1, 2]
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["eval_during_training"]["steps"] == [1, 2]


def test_eval_files_without_meta_kind_take_eval_metric(toy_mixture, tiny_model, tmp_path, capsys):
    """`tell eval --metric`'s twin: an eval file of plain prompt/response rows is scored during training."""
    task, _ = _sets(tmp_path)
    plain = write_jsonl(tmp_path / "plain.jsonl", [{k: v for k, v in json.loads(x).items() if k != "meta"}
                                                   for x in task.read_text().splitlines()])
    args = ["train", "--model", str(tiny_model), "--mixture", str(toy_mixture), "--max-steps", "1", "--no-progress",
            "--eval-data", str(plain), "--eval-steps", "1", "--eval-limit", "2", "--eval-max-new-tokens", "2"]
    assert main(args + ["--out", str(tmp_path / "a")]) == 2
    assert "no meta.kind" in capsys.readouterr().err
    assert main(args + ["--out", str(tmp_path / "b"), "--eval-metric", "cloze"]) == 0
    rows = [json.loads(x) for x in (tmp_path / "b" / "train_log.jsonl").read_text().splitlines()]
    assert [r["eval"][str(plain)]["kind"] for r in rows if "eval" in r] == ["cloze"]
