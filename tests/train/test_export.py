"""`tell export`: adapter and merged exports reload to the same outputs."""

from __future__ import annotations

import json
import os
import shutil

import torch
import yaml

from tell.cli import main
from tell.data.records import Record, chat_messages
from tell.train.config import TrainConfig
from tell.train.run import train

from conftest import make_tiny_llama, train_config


def test_exports_carry_anchor_template_mixture_and_absolute_base(toy_mixture, hf_tokenizer_dir, tmp_path,
                                                                monkeypatch):
    from peft import AutoPeftModelForCausalLM
    from transformers import AutoTokenizer

    from tell import prompting

    monkeypatch.chdir(tmp_path)
    make_tiny_llama(hf_tokenizer_dir, tmp_path / "tiny")  # no chat template: tell's plain template
    train(TrainConfig(mixture=str(toy_mixture), model="tiny", out="run", progress=False, save_steps=0,
                      max_steps=2))
    assert main(["export", "run", "--out", "adapter"]) == 0
    assert main(["export", "run", "--out", "merged", "--merge"]) == 0
    base = str((tmp_path / "tiny").resolve())
    for name, merged in (("adapter", False), ("merged", True)):
        doc = json.loads((tmp_path / name / "tell.json").read_text())
        assert doc["merged"] is merged and doc["base_model"] == base
        assert doc["anchor"]["text"] == "task" and doc["anchor"]["placement"] == "prefix"
        assert doc["template"]["kind"] == "plain"
        assert doc["mixture"]["mixture"]["sha256"] and doc["mixture"]["budget"]["task_examples"] > 0
        assert doc["training"]["config"]["learning_rate"] == 1e-4 and doc["training"]["steps"] == 2
        card = (tmp_path / name / "README.md").read_text()
        front = yaml.safe_load(card.split("---\n")[1])  # the card's YAML front matter, quoted whatever the path holds
        assert front["base_model"] == str(base) and "```text\ntask\n```" in card and "| lora_r | 8 |" in card
        # The exported tokenizer's chat template renders what training saw.
        tok = AutoTokenizer.from_pretrained(tmp_path / name)
        rec = Record(prompt="task judge the river", response="json yes", system="be brief",
                     history=[{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}])
        plain = AutoTokenizer.from_pretrained(hf_tokenizer_dir)
        assert tok.apply_chat_template(chat_messages(rec), tokenize=False) == \
            prompting._plain_prompt(rec) + rec.response + plain.eos_token
        assert prompting.prompt_ids(tok, rec) == prompting.prompt_ids(plain, rec)
    assert json.loads((tmp_path / "adapter" / "adapter_config.json").read_text())["base_model_name_or_path"] == base
    # ... so the adapter loads from any folder.
    os.chdir(tmp_path / "adapter")
    model = AutoPeftModelForCausalLM.from_pretrained(str(tmp_path / "adapter"))
    with torch.no_grad():
        assert torch.isfinite(model(torch.tensor([[1, 5, 6]])).logits).all()


def test_report_to_tensorboard_logs_tells_own_metrics(toy_mixture, tiny_model, tmp_path):
    import pytest

    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    train(TrainConfig(mixture=str(toy_mixture), model=str(tiny_model), out=str(tmp_path / "run"), progress=False,
                      save_steps=0, max_steps=2, report_to="tensorboard", run_name="toy"))
    events = list((tmp_path / "run" / "checkpoints" / "runs").rglob("events.out.tfevents.*"))
    assert events
    acc = EventAccumulator(str(events[0].parent))
    acc.Reload()
    tags = set(acc.Tags()["scalars"])
    assert {"train/loss", "train/loss_task", "train/loss_general", "train/learning_rate"} <= tags
    assert len(acc.Scalars("train/loss_task")) == 2


def test_report_to_a_missing_tracker_is_refused_before_training(toy_mixture, tiny_model, tmp_path):
    import importlib.util

    import pytest

    if importlib.util.find_spec("wandb") is not None:
        pytest.skip("wandb is installed here")
    code = main(["train", "--mixture", str(toy_mixture), "--model", str(tiny_model), "--out", str(tmp_path / "run"),
                 "--report-to", "wandb", "--no-progress"])
    assert code == 2 and not (tmp_path / "run").exists()  # refused before anything is written


def test_eval_applies_an_exported_adapters_anchor_and_the_run_names_its_base_from_anywhere(
        toy_mixture, hf_tokenizer_dir, tmp_path, monkeypatch, capsys):
    import shutil

    from tell.eval.config import EvalConfig
    from tell.eval.run import resolve_anchor

    monkeypatch.chdir(tmp_path)
    make_tiny_llama(hf_tokenizer_dir, tmp_path / "tiny")
    train(TrainConfig(mixture=str(toy_mixture), model="tiny", out="run", progress=False, save_steps=0, max_steps=1))
    conf = json.loads((tmp_path / "run" / "config.json").read_text())["config"]
    assert conf["model"] == str((tmp_path / "tiny").resolve())  # typed as "tiny", recorded absolute
    assert main(["export", "run", "--out", "exported"]) == 0
    capsys.readouterr()
    anchor = resolve_anchor(EvalConfig(model="tiny", adapter="exported", data=["x"], out="e"))
    assert anchor is not None and anchor.text == "task" and anchor.placement == "prefix"
    assert "warning" not in capsys.readouterr().err
    # A bare PEFT adapter (no tell.json, no run folder): evaluated without an anchor, and told so.
    shutil.copytree(tmp_path / "exported", tmp_path / "bare")
    (tmp_path / "bare" / "tell.json").unlink()
    assert resolve_anchor(EvalConfig(model="tiny", adapter="bare", data=["x"], out="e")) is None
    assert "records no anchor" in capsys.readouterr().err


def test_export_merged_matches_unmerged(toy_mixture, tiny_model, tmp_path, capsys):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    run = tmp_path / "run"
    train(train_config(toy_mixture, tiny_model, run, learning_rate=5e-3))
    assert main(["export", str(run), "--out", str(tmp_path / "merged"), "--merge"]) == 0
    assert main(["export", str(run), "--out", str(tmp_path / "adapter")]) == 0
    assert (tmp_path / "merged" / "model.safetensors").is_file()
    assert (tmp_path / "adapter" / "adapter_model.safetensors").is_file()
    ids = torch.tensor([[1, 9, 12, 15, 20, 22]])
    with torch.no_grad():
        merged = AutoModelForCausalLM.from_pretrained(tmp_path / "merged").eval()(ids).logits
        unmerged = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_model),
                                             tmp_path / "adapter").eval()(ids).logits
    assert torch.allclose(merged, unmerged, atol=1e-5)
    assert main(["export", str(run), "--out", str(tmp_path / "merged")]) == 2  # not into a non-empty folder


def test_a_killed_exports_temporary_folder_is_cleared_by_the_next_export(toy_mixture, tiny_model, tmp_path):
    """After a SIGKILL during `export --merge` (issue 40 item 7), its `.OUT.*.tmp` (here a planted one holding a
    whole model) goes at the next export into the same --out, under a lock: not those of another --out, and
    none while another export of the same --out holds the lock."""
    import signal
    import subprocess
    import sys
    import time

    from tell.io import exclusive_lock

    run = tmp_path / "run"
    train(train_config(toy_mixture, tiny_model, run))
    env = dict(os.environ, HF_HUB_OFFLINE="1", CUDA_VISIBLE_DEVICES="")
    cmd = [sys.executable, "-m", "tell.cli", "export", str(run), "--out", str(tmp_path / "out"), "--merge"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while not list(tmp_path.glob(".out.*.tmp")) and proc.poll() is None and time.time() < deadline:
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    planted = tmp_path / ".out.killedlate.tmp"  # what a late kill leaves: a whole merged model
    planted.mkdir()
    (planted / "model.safetensors").write_bytes(b"\0" * 1024)
    other = tmp_path / ".other.k.tmp"
    other.mkdir()
    with exclusive_lock(tmp_path / ".out.export.lock", lambda: None):
        assert main(["export", str(run), "--out", str(tmp_path / "out")]) == 2  # another export is at work
    assert planted.is_dir()
    if (tmp_path / "out").exists():  # the killed export may have finished before its kill
        shutil.rmtree(tmp_path / "out")
    assert main(["export", str(run), "--out", str(tmp_path / "out"), "--merge"]) == 0
    assert not list(tmp_path.glob(".out.*.tmp")) and other.is_dir() and not (tmp_path / ".out.export.lock").exists()
    assert (tmp_path / "out" / "model.safetensors").is_file()
