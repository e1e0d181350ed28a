"""`tell train` on tiny local models: loss, LoRA vs base weights, order, divergence, DDP, pass-through args."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tell.artifacts import MixtureDir
from tell.cli import main
from tell.errors import TellError
from tell.train.batching import Collator, tokenize_mixture
from tell.train.run import train

from conftest import CHAT_TEMPLATE, make_tiny_llama, train_config


def adapter_weights(run: Path) -> dict[str, torch.Tensor]:
    return load_file(str(run / "adapter" / "adapter_model.safetensors"))


def test_loss_goes_down_lora_changes_base_does_not_and_adapter_reloads(toy_mixture, tiny_model, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    run = tmp_path / "run"
    m = train(train_config(toy_mixture, tiny_model, run, epochs=4, learning_rate=5e-3, lora_r=16))
    log = [json.loads(line) for line in (run / "train_log.jsonl").read_text().splitlines()]
    first, last = log[0]["loss"], log[-1]["loss"]
    assert last < 0.7 * first, (first, last)
    assert m["steps"] == len(log) and m["examples"] > 0
    # The split loss and the token counts are logged, and add up.
    assert all(r["loss_general"] is not None for r in log) and any(r["loss_task"] is not None for r in log)
    assert log[-1]["tokens_task"] > 0 and log[-1]["tokens_general"] > 3 * log[-1]["tokens_task"] * 0.5
    assert all("learning_rate" in r and r["tokens_per_s"] > 0 for r in log)

    base = AutoModelForCausalLM.from_pretrained(tiny_model)
    trained = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_model), run / "adapter")
    lora_b = {k: v for k, v in adapter_weights(run).items() if "lora_B" in k}
    assert lora_b and all(v.abs().sum() > 0 for v in lora_b.values())  # lora_B starts at zero
    base_after = trained.get_base_model().state_dict()
    for k, v in base.state_dict().items():
        k2 = k.replace(".weight", ".base_layer.weight") if k.replace(".weight", ".base_layer.weight") in base_after else k
        assert torch.equal(v, base_after[k2]), k
    ids = torch.tensor([[1, 5, 6, 7, 8]])
    trained.eval()
    with torch.no_grad():
        a = trained(ids).logits
        b = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_model), run / "adapter").eval()(ids).logits
        assert torch.allclose(a, b) and not torch.allclose(a, base(ids).logits, atol=1e-4)
    # Run folder: resolved config, manifest copy, tokenizer next to the adapter, metrics.
    conf = json.loads((run / "config.json").read_text())
    assert conf["config"]["lora_r"] == 16 and conf["seeds"]["training"] == 42 and "torch" in conf["packages"]
    assert (run / "mixture_manifest.json").is_file() and (run / "adapter" / "tokenizer.json").is_file()


def test_trainer_consumes_the_mixture_in_order(toy_mixture, tiny_model, tmp_path, monkeypatch):
    from transformers import AutoTokenizer

    seen: list[list[int]] = []
    original = Collator.__call__

    def spy(self, batch):
        seen.extend(e["input_ids"] for e in batch)
        return original(self, batch)

    monkeypatch.setattr(Collator, "__call__", spy)
    train(train_config(toy_mixture, tiny_model, tmp_path / "run"))
    tok = AutoTokenizer.from_pretrained(tiny_model)
    expected = [e["input_ids"] for e in tokenize_mixture(MixtureDir(toy_mixture), tok, max_length=1024,
                                                         length_policy="truncate", train_on_prompt=False,
                                                         progress=False).examples]
    assert seen == expected


def test_existing_run_is_not_overwritten_and_resume_checks_settings(toy_mixture, tiny_model, tmp_path):
    run = tmp_path / "run"
    train(train_config(toy_mixture, tiny_model, run))
    with pytest.raises(TellError, match="already holds a run"):
        train(train_config(toy_mixture, tiny_model, run))
    with pytest.raises(TellError, match="already finished"):
        train(train_config(toy_mixture, tiny_model, run, resume=True))
    with pytest.raises(TellError, match="nothing to resume"):
        train(train_config(toy_mixture, tiny_model, tmp_path / "new", resume=True))


def test_divergence_stops_with_clear_message(toy_mixture, tiny_model, tmp_path, capsys):
    run = tmp_path / "run"
    code = main(["train", "--mixture", str(toy_mixture), "--model", str(tiny_model), "--out", str(run),
                 "--learning-rate", "50", "--save-steps", "2", "--no-progress", "--divergence-factor", "3"])
    err = capsys.readouterr().err.splitlines()[-1]  # earlier lines: library warnings
    assert code == 2 and err.startswith("tell: error: ") and "training stopped: the loss" in err
    assert not (run / "adapter").exists() and not (run / "metrics.json").exists()
    assert "checkpoint-" in err or "no checkpoint was saved" in err


def test_chat_model_trains_through_cli(toy_mixture, hf_tokenizer_dir, tmp_path, capsys):
    model = make_tiny_llama(hf_tokenizer_dir, tmp_path / "chat_model", chat_template=CHAT_TEMPLATE)
    code = main(["train", "--mixture", str(toy_mixture), "--model", str(model), "--out", str(tmp_path / "run"),
                 "--no-progress", "--packing", "off", "--target-modules", "q_proj,v_proj"])
    out = capsys.readouterr().out
    assert code == 0 and "trained" in out
    keys = adapter_weights(tmp_path / "run").keys()
    assert any("q_proj" in k for k in keys) and not any("mlp" in k for k in keys)
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["packing"] is False


def test_ddp_two_cpu_processes_match_one_process(toy_mixture, tiny_model, tmp_path):
    env = dict(os.environ, HF_HUB_OFFLINE="1", CUDA_VISIBLE_DEVICES="", OMP_NUM_THREADS="1")
    common = ["--mixture", str(toy_mixture), "--model", str(tiny_model), "--no-progress", "--lora-dropout", "0",
              "--micro-batch-size", "2", "--batch-size", "8", "--save-steps", "0"]
    subprocess.run([sys.executable, "-m", "tell.cli", "train", *common, "--out", str(tmp_path / "one")], check=True,
                   env=env, capture_output=True)
    r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "-m", "tell.cli",
                        "train", *common, "--out", str(tmp_path / "two")], env=env, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-3000:]
    a, b = adapter_weights(tmp_path / "one"), adapter_weights(tmp_path / "two")
    assert max((a[k] - b[k]).abs().max().item() for k in a) < 1e-5


def test_a_single_optimizer_step_changes_the_adapter_and_is_recorded_as_few_steps(toy_mixture, tiny_model, tmp_path,
                                                                                  capsys):
    """HF's linear warm-up runs its first step at learning rate 0, so a one-step run (15 task examples at
    batch 16) trained nothing; tell's schedule starts above zero."""
    run = tmp_path / "run"
    m = train(train_config(toy_mixture, tiny_model, run, max_steps=1, learning_rate=1e-2, warmup_ratio=0.03))
    assert m["steps"] == 1
    lora_b = {k: v for k, v in adapter_weights(run).items() if "lora_B" in k}
    assert lora_b and all(v.abs().sum() > 0 for v in lora_b.values())  # lora_B starts at zero
    assert m["health"]["verdict"] == "ok" and m["health"]["few_steps"] is True
    assert "only 1 optimizer step" in capsys.readouterr().err


def test_training_args_pass_through_and_refusals(toy_mixture, tiny_model, tmp_path, capsys):
    from tell.artifacts import RunDir
    from tell.train.run import training_arguments

    args = training_arguments(train_config(toy_mixture, tiny_model, tmp_path / "a", training_args={"adam_beta2": 0.95}),
                              RunDir(tmp_path / "a"), 1)
    assert args.adam_beta2 == 0.95 and args.learning_rate == 1e-4 and args.train_sampling_strategy == "sequential"
    for bad, msg in (({"learning_rate": 1.0}, "set by tell itself"), ({"no_such_setting": 1}, "unknown")):
        with pytest.raises(TellError, match=msg):
            training_arguments(train_config(toy_mixture, tiny_model, tmp_path / "b", training_args=bad), RunDir(tmp_path / "b"), 1)
    # The flag form: KEY=VALUE, the value read as YAML, repeatable.
    rc = main(["train", "--mixture", str(toy_mixture), "--model", str(tiny_model), "--out", str(tmp_path / "c"),
               "--training-arg", "adam_beta2=0.95", "--training-arg", "warmup_steps=3", "--no-progress"])
    assert rc == 2 and "set by tell itself" in capsys.readouterr().err
    assert not (tmp_path / "c").exists()


def test_the_console_shows_a_compact_line_per_step_without_none_and_no_library_future_warning(toy_mixture, tiny_model,
                                                                                              tmp_path):
    """With progress on, transformers printed a dict per step (`{'loss': '7.6', 'loss_task': None, ...}`) and
    peft a FutureWarning (`is_gradient_checkpointing` is deprecated); train_log.jsonl keeps every key."""
    env = dict(os.environ, HF_HUB_OFFLINE="1", CUDA_VISIBLE_DEVICES="", PYTHONWARNINGS="default",
               PYTHONPATH=str(Path(__file__).resolve().parents[2] / "src"))
    run = tmp_path / "run"
    r = subprocess.run([sys.executable, "-m", "tell.cli", "train", "--mixture", str(toy_mixture), "--model",
                        str(tiny_model), "--out", str(run), "--micro-batch-size", "1", "--batch-size", "1",
                        "--max-steps", "6", "--logging-steps", "1", "--save-steps", "0"],
                       env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    log = [json.loads(line) for line in (run / "train_log.jsonl").read_text().splitlines()]
    assert len(log) == 6 and any(row["loss_task"] is None for row in log)  # a step of general examples only
    assert all({"loss_task", "loss_general", "tokens_task"} <= set(row) for row in log)
    steps = [line for line in r.stdout.splitlines() if line.startswith("step ")]
    assert [s.split(":")[0] for s in steps[:6]] == [f"step {i}/6" for i in range(1, 7)], r.stdout
    assert all("loss " in s and "tokens_general " in s for s in steps[:6])
    assert "None" not in r.stdout and not any("total_flos" in s for s in steps), r.stdout
    assert not any(line.startswith("{") for line in r.stdout.splitlines()), r.stdout  # no dict per step
    assert "FutureWarning" not in r.stderr, r.stderr[-3000:]


def test_no_progress_silences_library_bars_and_the_summary_reads_as_words(toy_mixture, tiny_model, tmp_path, capsys):
    from tell.cli import main

    assert main(["train", "--mixture", str(toy_mixture), "--model", str(tiny_model), "--out", str(tmp_path / "r"),
                 "--max-steps", "1", "--save-steps", "0", "--no-progress"]) == 0
    out, err = capsys.readouterr()
    assert "Loading weights" not in err and "Writing model shards" not in err
    line = next(x for x in out.splitlines() if "length policy" in x)
    assert "{" not in line and "(length policy truncate, max length 1,024)" in line


@pytest.mark.parametrize("sort", [True, False])
def test_padded_steps_group_their_examples_by_length_and_keep_the_mixtures_steps(toy_mixture, tiny_model, tmp_path,
                                                                                  monkeypatch, sort):
    """Padded training sorts each optimizer step's examples by length before cutting them into micro-batches
    (`sort_within_step`): every step trains on the very examples the mixture's order gives it, steps in order,
    with fewer padded cells; off, the micro-batches follow the mixture exactly."""
    from transformers import AutoTokenizer

    seen: list[list[list[int]]] = []
    original = Collator.__call__

    def spy(self, batch):
        seen.append([e["input_ids"] for e in batch])
        return original(self, batch)

    monkeypatch.setattr(Collator, "__call__", spy)
    train(train_config(toy_mixture, tiny_model, tmp_path / "run", packing="off", batch_size=8, micro_batch_size=2,
                       sort_within_step=sort))
    tok = AutoTokenizer.from_pretrained(tiny_model)
    expected = [e["input_ids"] for e in tokenize_mixture(MixtureDir(toy_mixture), tok, max_length=1024,
                                                         length_policy="truncate", train_on_prompt=False,
                                                         progress=False).examples]
    flat = [x for mb in seen for x in mb]
    assert len(flat) == len(expected)
    steps = lambda xs: [sorted(map(tuple, xs[i:i + 8])) for i in range(0, len(xs), 8)]  # noqa: E731
    assert steps(flat) == steps(expected)  # the same examples in every step, the steps in the mixture's order
    cells = lambda mbs: sum(len(mb) * max(map(len, mb)) for mb in mbs)  # noqa: E731
    in_order = [expected[i:i + 2] for i in range(0, len(expected), 2)]
    if sort:
        assert flat != expected and cells(seen) < cells(in_order)
    else:
        assert flat == expected
