"""`tell.train.trainer`: complete checkpoints, resume that never silently starts over, torn log lines."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tell.errors import TellError
from tell.train.run import train

from conftest import cut_mixture, reseal_mixture, small_train_config

J = json.dumps


def _weights(run: Path) -> dict[str, torch.Tensor]:
    return load_file(str(run / "adapter" / "adapter_model.safetensors"))


def _same_weights(a: Path, b: Path) -> bool:
    x, y = _weights(a), _weights(b)
    return x.keys() == y.keys() and max((x[k] - y[k]).abs().max().item() for k in x) < 1e-6


def _cmd(mixture, model, out, *extra):
    return [sys.executable, "-m", "tell.cli", "train", "--mixture", str(mixture), "--model", str(model), "--out",
            str(out), "--save-steps", "1", "--save-total-limit", "1", "--micro-batch-size", "2", "--batch-size", "4",
            "--max-steps", "8", "--no-progress", *extra]


def adapter_weights(run: Path) -> dict[str, torch.Tensor]:
    return load_file(str(run / "adapter" / "adapter_model.safetensors"))


def _resume_cmd(mixture, model, out, *extra):
    return [sys.executable, "-m", "tell.cli", "train", "--mixture", str(mixture), "--model", str(model), "--out",
            str(out), "--save-steps", "3", "--save-total-limit", "3", "--micro-batch-size", "2", "--batch-size", "4",
            "--epochs", "3", "--no-progress", *extra]


def test_resume_after_sigkill_matches_uninterrupted_run(toy_mixture, tiny_model, tmp_path):
    env = dict(os.environ, HF_HUB_OFFLINE="1", CUDA_VISIBLE_DEVICES="")
    full = tmp_path / "full"
    subprocess.run(_resume_cmd(toy_mixture, tiny_model, full), check=True, env=env, capture_output=True)
    steps = json.loads((full / "metrics.json").read_text())["steps"]

    killed = tmp_path / "killed"
    proc = subprocess.Popen(_resume_cmd(toy_mixture, tiny_model, killed), env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    marker = killed / "checkpoints" / "checkpoint-6" / "tell_complete.json"
    deadline = time.time() + 120
    while not marker.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (killed / "metrics.json").exists(), "the run finished before it could be killed"
    done = max(int(p.name.split("-")[1]) for p in (killed / "checkpoints").glob("checkpoint-*"))
    assert 6 <= done < steps
    # A checkpoint folder being written when the process died is never taken for a complete one.
    partial = killed / "checkpoints" / f"checkpoint-{steps - 1}"
    partial.mkdir(exist_ok=True)
    (partial / "adapter_model.safetensors").write_bytes(b"half-written")
    r = subprocess.run(_resume_cmd(toy_mixture, tiny_model, killed, "--resume"), env=env, capture_output=True,
                       text=True)
    assert r.returncode == 0, r.stderr[-2000:]
    m = json.loads((killed / "metrics.json").read_text())
    assert m["steps"] == steps and m["resumed_from"].startswith("checkpoint-") and m["resumed_from"] != partial.name
    a, b = adapter_weights(full), adapter_weights(killed)
    assert a.keys() == b.keys()
    assert max((a[k] - b[k]).abs().max().item() for k in a) < 1e-6
    # Same sample order: the logs agree step for step (lines past the checkpoint were redone, not doubled).
    la = [json.loads(x) for x in (full / "train_log.jsonl").read_text().splitlines()]
    lb = [json.loads(x) for x in (killed / "train_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in lb] == [r["step"] for r in la]
    assert [(r["tokens_task"], r["tokens_general"]) for r in lb] == [(r["tokens_task"], r["tokens_general"]) for r in la]
    assert all(abs(x["loss"] - y["loss"]) < 1e-5 for x, y in zip(la, lb))


def test_resume_refuses_another_mixture_accepts_the_same_folder_spelt_otherwise_and_keeps_the_whole_loss(
        toy_mixture, tiny_model, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    shutil.copytree(toy_mixture, "mix")
    full = train(small_train_config("mix", tiny_model, "run", save_steps=3, max_steps=7))
    assert full["train_loss"] > 0
    shutil.copytree("run", "first")
    Path("run/metrics.json").unlink()  # as if killed after the last checkpoint
    saved = Path("mix/mixture.jsonl").read_bytes(), Path("mix/manifest.json").read_bytes()
    cut_mixture(Path("mix"), 30)
    reseal_mixture(Path("mix"))  # re-prepared with other data: a valid mixture, but not the run's
    with pytest.raises(TellError, match="another mixture"):
        train(small_train_config("./mix/", tiny_model, "run", save_steps=3, max_steps=7, resume=True))
    Path("mix/mixture.jsonl").write_bytes(saved[0])
    Path("mix/manifest.json").write_bytes(saved[1])
    again = train(small_train_config("./mix/", tiny_model, "./run/", save_steps=3, max_steps=7, resume=True))
    # nothing is left to train (HF alone would train an 8th step past max_steps): the same adapter
    assert again["resumed_from"] == "checkpoint-7" and again["steps"] == 7 and _same_weights(Path("first"), Path("run"))
    # train_loss is the mean per step of the whole train_log.jsonl, not of the last (here empty) part
    assert again["train_loss"] == pytest.approx(full["train_loss"], rel=1e-9)
    Path("run/metrics.json").unlink()
    with pytest.raises(TellError, match=r"differ from the run's: \['lora_r'\]"):
        train(small_train_config("mix", tiny_model, "run", save_steps=3, max_steps=7, resume=True, lora_r=4))


def test_a_new_checkpoint_is_complete_before_any_older_one_is_deleted(toy_mixture, tiny_model, tmp_path,
                                                                       monkeypatch):
    import tell.train.trainer as T

    deleted = []
    real = shutil.rmtree

    def spy(path, *a, **k):
        path = Path(path)
        if path.parent.name != "checkpoints":
            return real(path, *a, **k)
        newest = max(T.checkpoints(path.parent), key=lambda p: int(p.name.split("-")[1]))
        deleted.append((path.name, newest.name, (newest / T.COMPLETE).is_file(), (path / T.COMPLETE).exists()))
        return real(path, *a, **k)

    monkeypatch.setattr(T.shutil, "rmtree", spy)
    train(small_train_config(toy_mixture, tiny_model, tmp_path / "run", save_steps=1, save_total_limit=1, max_steps=4))
    assert [d[0] for d in deleted] == ["checkpoint-1", "checkpoint-2", "checkpoint-3"]
    # each deletion came after a newer checkpoint was marked complete, and began with the old one's marker
    assert all(newest != name and newest_done and not marker_left for name, newest, newest_done, marker_left in deleted)
    assert [p.name for p in (tmp_path / "run" / "checkpoints").iterdir()] == ["checkpoint-4"]


def test_sigkill_with_save_total_limit_1_never_loses_the_resume_point(toy_mixture, tiny_model, tmp_path):
    env = dict(os.environ, HF_HUB_OFFLINE="1", CUDA_VISIBLE_DEVICES="")
    full = tmp_path / "full"  # the same settings as _cmd, in this process
    train(small_train_config(toy_mixture, tiny_model, full, save_steps=1, save_total_limit=1, max_steps=8))
    killed = tmp_path / "killed"
    proc = subprocess.Popen(_cmd(toy_mixture, tiny_model, killed), env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    ckpts = killed / "checkpoints"
    deadline = time.time() + 120
    while not (ckpts / "checkpoint-4").is_dir() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.002)
    proc.send_signal(signal.SIGKILL)  # while checkpoint-4 is being written, and checkpoint-3 rotated away
    proc.wait()
    assert not (killed / "metrics.json").exists(), "the run finished before it could be killed"
    r = subprocess.run(_cmd(toy_mixture, tiny_model, killed, "--resume"), env=env, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]
    m = json.loads((killed / "metrics.json").read_text())
    assert m["resumed_from"] and int(m["resumed_from"].split("-")[1]) >= 3 and m["steps"] == 8
    assert _same_weights(full, killed)
    assert m["train_loss"] == pytest.approx(json.loads((full / "metrics.json").read_text())["train_loss"], rel=1e-4)


def test_resume_never_silently_starts_over(toy_mixture, tiny_model, tmp_path, capsys):
    run = tmp_path / "run"
    train(small_train_config(toy_mixture, tiny_model, run, save_steps=3, save_total_limit=3, max_steps=9))
    full = tmp_path / "full_adapter"
    shutil.copytree(run, full)
    (run / "metrics.json").unlink()
    ckpts = run / "checkpoints"
    assert sorted(p.name for p in ckpts.iterdir()) == ["checkpoint-3", "checkpoint-6", "checkpoint-9"]
    # A truncated optimizer file in the newest complete checkpoint: the previous one is used, and said so.
    opt = ckpts / "checkpoint-9" / "optimizer.pt"
    opt.write_bytes(opt.read_bytes()[:100])
    m = train(small_train_config(toy_mixture, tiny_model, run, save_steps=3, save_total_limit=3, max_steps=9, resume=True))
    err = capsys.readouterr().err
    assert "checkpoint-9 is damaged (optimizer.pt has 100 bytes" in err and "resuming from checkpoint-6" in err
    assert m["resumed_from"] == "checkpoint-6" and _same_weights(full, run)
    # No usable complete checkpoint left: refused, saying what to delete.
    (run / "metrics.json").unlink()
    for p in ckpts.iterdir():
        if p.name != "checkpoint-9":
            shutil.rmtree(p)
    opt.write_bytes(opt.read_bytes()[:100])
    with pytest.raises(TellError, match=re.escape(f"delete {ckpts / 'checkpoint-9'} and resume")):
        train(small_train_config(toy_mixture, tiny_model, run, save_steps=3, save_total_limit=3, max_steps=9, resume=True))
    # Checkpoints present but none marked complete (the kill the old rotation order allowed): refused too.
    (ckpts / "checkpoint-9" / "tell_complete.json").unlink()
    with pytest.raises(TellError, match="none was marked complete .* delete " + re.escape(f"{ckpts} and resume")):
        train(small_train_config(toy_mixture, tiny_model, run, save_steps=3, save_total_limit=3, max_steps=9, resume=True))
    assert not (run / "metrics.json").exists()


def test_resume_drops_a_torn_last_log_line(tmp_path):
    from tell.artifacts import RunDir
    from tell.train.run import _trim_log

    run = RunDir(tmp_path)
    rows = [{"step": s, "loss": 1.0, "tokens_task": s, "tokens_general": 2 * s} for s in (1, 2, 3)]
    run.log_path.write_text("".join(json.dumps(r) + "\n" for r in rows) + '{"step": 4, "lo')
    assert _trim_log(run, 2) == (2, 4)
    assert run.log() == rows[:2] and run.log_path.read_text().endswith("}\n")
