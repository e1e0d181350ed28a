"""Artifacts checked against each other, resumes that never silently start over or reuse stale work, and what
killed runs leave behind (issue 16: silent wrong results, other)."""

from __future__ import annotations

import hashlib
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

from conftest import write_jsonl
from tell.cli import main
from tell.experiments.config import SweepSpec
from tell.prepare import PrepareConfig
from tell.train.config import TrainConfig
from tell.errors import TellError
from tell.train.run import train

J = json.dumps


def _cfg(mixture, model, out, **kw) -> TrainConfig:
    base = dict(mixture=str(mixture), model=str(model), out=str(out), progress=False, save_steps=0,
                micro_batch_size=2, batch_size=4)
    return TrainConfig(**(base | kw))


def _cut(mix: Path, keep: int) -> None:
    lines = (mix / "mixture.jsonl").read_bytes().splitlines(keepends=True)
    (mix / "mixture.jsonl").write_bytes(b"".join(lines[:keep]))


def _reseal(mix: Path) -> None:
    """A manifest that agrees with a hand-edited mixture (sha256 and lines): another, valid mixture."""
    m = json.loads((mix / "manifest.json").read_text())
    data = (mix / "mixture.jsonl").read_bytes()
    m["mixture"] |= {"sha256": hashlib.sha256(data).hexdigest(), "examples": data.count(b"\n")}
    (mix / "manifest.json").write_text(J(m))


def _weights(run: Path) -> dict[str, torch.Tensor]:
    return load_file(str(run / "adapter" / "adapter_model.safetensors"))


def _same_weights(a: Path, b: Path) -> bool:
    x, y = _weights(a), _weights(b)
    return x.keys() == y.keys() and max((x[k] - y[k]).abs().max().item() for k in x) < 1e-6


# ---- mixture <-> manifest -----------------------------------------------------------------------------------

def test_prepare_replacing_a_mixture_removes_the_old_manifest_first(toy_mixture, tiny_model, hf_tokenizer_dir, tmp_path,
                                                                     monkeypatch, capsys):
    import tell.prepare as P

    mix = tmp_path / "mix"
    shutil.copytree(toy_mixture, mix)
    old = (mix / "mixture.jsonl").read_bytes()
    d = toy_mixture.parent

    def killed(*a, **k):  # the process dies after mixture.jsonl is replaced, before the new manifest is written
        raise KeyboardInterrupt

    monkeypatch.setattr(P, "write_json", killed)
    with pytest.raises(KeyboardInterrupt):
        P.prepare(PrepareConfig(task=str(d / "task.jsonl"), general=[str(d / "general.jsonl")],
                                tokenizer=str(hf_tokenizer_dir), ratio=1.0, anchor="task", out=str(mix), progress=False))
    assert (mix / "mixture.jsonl").read_bytes() != old  # the new mixture is in place ...
    assert not (mix / "manifest.json").exists()          # ... and the old manifest is gone, not left beside it
    assert main(["train", "--mixture", str(mix), "--model", str(tiny_model), "--out", str(tmp_path / "run"),
                 "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "no manifest.json" in err and err.count("\n") == 1


def test_every_reader_refuses_a_mixture_missing_lines(toy_mixture, tiny_model, tmp_path, capsys):
    from tell.experiments.cell import Cell, prepare_cell

    mix = tmp_path / "mix"
    shutil.copytree(toy_mixture, mix)
    _cut(mix, 20)
    for args in (["train", "--mixture", str(mix), "--model", str(tiny_model), "--out", str(tmp_path / "run"),
                  "--no-progress"],
                 ["probe", "--model", str(tiny_model), "--task", str(mix), "--examples", "4", "--out",
                  str(tmp_path / "probe")]):
        assert main(args) == 2, args[0]
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "mixture.jsonl (20 lines" in err and "does not match manifest.json" in err
    assert not (tmp_path / "run").exists() and not (tmp_path / "probe").exists()
    # The sweep reads its mixtures the same way: a damaged one is refused, not trained on.
    d = toy_mixture.parent
    spec = SweepSpec(model=str(tiny_model), task=str(d / "task.jsonl"), general=[str(d / "general.jsonl")],
                     anchor="task", eval=["x.jsonl"], task_tokens=[120], ratios=[1.0], seeds=[7])
    cell = Cell.make(spec, tmp_path / "sw", "tell", 7, task_tokens=120, ratio=1.0)
    manifest = prepare_cell(cell)
    assert prepare_cell(cell)["mixture"] == manifest["mixture"]  # read back, verified
    _cut(cell.mixture.path, 3)
    with pytest.raises(TellError, match="does not match manifest.json"):
        prepare_cell(cell)


def test_resume_refuses_another_mixture_accepts_the_same_folder_spelt_otherwise_and_keeps_the_whole_loss(
        toy_mixture, tiny_model, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    shutil.copytree(toy_mixture, "mix")
    full = train(_cfg("mix", tiny_model, "run", save_steps=3, max_steps=7))
    assert full["train_loss"] > 0
    shutil.copytree("run", "first")
    Path("run/metrics.json").unlink()  # as if killed after the last checkpoint
    saved = Path("mix/mixture.jsonl").read_bytes(), Path("mix/manifest.json").read_bytes()
    _cut(Path("mix"), 30)
    _reseal(Path("mix"))  # re-prepared with other data: a valid mixture, but not the run's
    with pytest.raises(TellError, match="another mixture"):
        train(_cfg("./mix/", tiny_model, "run", save_steps=3, max_steps=7, resume=True))
    Path("mix/mixture.jsonl").write_bytes(saved[0])
    Path("mix/manifest.json").write_bytes(saved[1])
    again = train(_cfg("./mix/", tiny_model, "./run/", save_steps=3, max_steps=7, resume=True))
    # nothing is left to train (HF alone would train an 8th step past max_steps): the same adapter
    assert again["resumed_from"] == "checkpoint-7" and again["steps"] == 7 and _same_weights(Path("first"), Path("run"))
    # train_loss is the mean per step of the whole train_log.jsonl, not of the last (here empty) part
    assert again["train_loss"] == pytest.approx(full["train_loss"], rel=1e-9)
    Path("run/metrics.json").unlink()
    with pytest.raises(TellError, match=r"differ from the run's: \['lora_r'\]"):
        train(_cfg("mix", tiny_model, "run", save_steps=3, max_steps=7, resume=True, lora_r=4))


# ---- checkpoints -----------------------------------------------------------------------------------------------

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
    train(_cfg(toy_mixture, tiny_model, tmp_path / "run", save_steps=1, save_total_limit=1, max_steps=4))
    assert [d[0] for d in deleted] == ["checkpoint-1", "checkpoint-2", "checkpoint-3"]
    # each deletion came after a newer checkpoint was marked complete, and began with the old one's marker
    assert all(newest != name and newest_done and not marker_left for name, newest, newest_done, marker_left in deleted)
    assert [p.name for p in (tmp_path / "run" / "checkpoints").iterdir()] == ["checkpoint-4"]


def _cmd(mixture, model, out, *extra):
    return [sys.executable, "-m", "tell.cli", "train", "--mixture", str(mixture), "--model", str(model), "--out",
            str(out), "--save-steps", "1", "--save-total-limit", "1", "--micro-batch-size", "2", "--batch-size", "4",
            "--max-steps", "8", "--no-progress", *extra]


def test_sigkill_with_save_total_limit_1_never_loses_the_resume_point(toy_mixture, tiny_model, tmp_path):
    env = dict(os.environ, HF_HUB_OFFLINE="1", CUDA_VISIBLE_DEVICES="")
    full = tmp_path / "full"  # the same settings as _cmd, in this process
    train(_cfg(toy_mixture, tiny_model, full, save_steps=1, save_total_limit=1, max_steps=8))
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
    train(_cfg(toy_mixture, tiny_model, run, save_steps=3, save_total_limit=3, max_steps=9))
    full = tmp_path / "full_adapter"
    shutil.copytree(run, full)
    (run / "metrics.json").unlink()
    ckpts = run / "checkpoints"
    assert sorted(p.name for p in ckpts.iterdir()) == ["checkpoint-3", "checkpoint-6", "checkpoint-9"]
    # A truncated optimizer file in the newest complete checkpoint: the previous one is used, and said so.
    opt = ckpts / "checkpoint-9" / "optimizer.pt"
    opt.write_bytes(opt.read_bytes()[:100])
    m = train(_cfg(toy_mixture, tiny_model, run, save_steps=3, save_total_limit=3, max_steps=9, resume=True))
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
        train(_cfg(toy_mixture, tiny_model, run, save_steps=3, save_total_limit=3, max_steps=9, resume=True))
    # Checkpoints present but none marked complete (the kill the old rotation order allowed): refused too.
    (ckpts / "checkpoint-9" / "tell_complete.json").unlink()
    with pytest.raises(TellError, match="none was marked complete .* delete " + re.escape(f"{ckpts} and resume")):
        train(_cfg(toy_mixture, tiny_model, run, save_steps=3, save_total_limit=3, max_steps=9, resume=True))
    assert not (run / "metrics.json").exists()


# ---- eval predictions ------------------------------------------------------------------------------------------

def test_eval_resume_redoes_predictions_of_a_replaced_adapter_or_reordered_data(toy_mixture, tiny_model, tmp_path,
                                                                                monkeypatch, capsys):
    from tell.eval import generate as G

    run, other = tmp_path / "run", tmp_path / "other"
    train(_cfg(toy_mixture, tiny_model, run, learning_rate=5e-3))
    train(_cfg(toy_mixture, tiny_model, other, learning_rate=5e-3, seed=7))
    rows = [{"prompt": f"judge castle river {w}", "response": J({"thought": "x", "hallucination": "no"}),
             "source": "task", "origin": "x", "row": i, "meta": {"kind": "json", "role": "task", "label": "no"}}
            for i, w in enumerate(["ocean", "cloud", "forest", "island", "market", "bridge"])]
    data = write_jsonl(tmp_path / "eval.jsonl", rows)
    calls = []
    real = G.generate_batch
    monkeypatch.setattr(G, "generate_batch", lambda *a, **k: calls.append(len(a[2])) or real(*a, **k))
    args = ["eval", "--model", str(tiny_model), "--adapter", str(run), "--data", str(data), "--out",
            str(tmp_path / "ev"), "--batch-size", "2", "--max-new-tokens", "5", "--no-progress", "--bootstrap", "20"]

    def rerun() -> tuple[int, dict, list[dict]]:
        calls.clear()
        assert main(args) == 0, capsys.readouterr().err
        metrics = json.loads((tmp_path / "ev" / "metrics.json").read_text())
        preds = [json.loads(x) for x in (tmp_path / "ev" / "predictions.jsonl").read_text().splitlines()]
        s = metrics["sets"][str(data)]
        # every row was made by what metrics.json names, and there is one row per item
        assert len(preds) == len(rows) == s["items"]
        assert all(p["made_by"]["adapter_sha256"] == metrics["adapter_sha256"] and
                   p["made_by"]["data_sha256"] == s["data_sha256"] for p in preds)
        return sum(calls), metrics, preds

    n, first, _ = rerun()
    assert n == 6
    assert rerun()[0] == 0  # nothing changed: nothing redone
    shutil.rmtree(run / "adapter")
    shutil.copytree(other / "adapter", run / "adapter")  # the adapter replaced in the same run folder
    n, second, _ = rerun()
    assert n == 6 and second["adapter_sha256"] != first["adapter_sha256"]
    write_jsonl(data, rows[3:] + rows[:3])  # the same items, other lines
    n, third, _ = rerun()
    assert n == 6 and third["sets"][str(data)]["data_sha256"] != second["sets"][str(data)]["data_sha256"]


# ---- sweep time, temp files ----------------------------------------------------------------------------------

def test_a_resumed_cell_counts_the_time_of_every_part(tmp_path):
    from tell.experiments.cell import CellDir, earlier_parts_s
    from tell.io import write_json

    cd = CellDir(tmp_path / "cells", "tell-abc")
    cd.run.path.mkdir(parents=True)
    assert earlier_parts_s(cd) == 0.0
    start = time.time() - 100
    write_json(cd.status_path, {"cell": cd.key, "status": "todo", "wall_s": 5.0, "started": start})
    log = cd.run.path / "train_log.jsonl"
    log.write_text("{}\n")
    os.utime(log, (start + 30, start + 30))  # the killed part's last write
    (cd.path / "claim.json").write_text("{}")  # files outside run/ and eval/ (written now) do not count
    assert earlier_parts_s(cd) == pytest.approx(35.0, abs=0.01)
    write_json(cd.status_path, {"cell": cd.key, "status": "failed", "wall_s": 42.0})
    assert earlier_parts_s(cd) == 42.0
    write_json(cd.status_path, {"cell": cd.key, "status": "done", "wall_s": 42.0})
    assert earlier_parts_s(cd) == 42.0  # done, but its metrics are missing: it is redone, and its time counts
    write_json(cd.run.metrics_path, {"steps": 1})
    write_json(cd.eval.metrics_path, {"sets": {}})
    assert cd.status()["status"] == "done" and earlier_parts_s(cd) == 0.0  # a complete cell redone: from 0


def test_temp_files_of_killed_writers_are_removed_by_the_next_successful_write(toy_mixture, tiny_model, tmp_path):
    from tell.io import _HOST, write_json

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()  # a pid that no longer runs
    folder = tmp_path / "f"
    folder.mkdir()
    stale = [folder / f".a.json.{dead.pid}@{_HOST}.x1.tmp", folder / ".a.json.abc123.tmp"]
    alive = [folder / f".a.json.{os.getppid()}@{_HOST}.x2.tmp", folder / f".a.json.{dead.pid}@elsewhere.x3.tmp"]
    for p in stale + alive:
        p.write_text("half")
    write_json(folder / "a.json", {})
    assert sorted(p.name for p in folder.iterdir()) == sorted(["a.json"] + [p.name for p in alive])
    # A killed run's leftovers in its folder go once the rerun succeeds.
    run = tmp_path / "run"
    train(_cfg(toy_mixture, tiny_model, run, save_steps=2, max_steps=3))
    (run / "metrics.json").unlink()
    (run / f".train_log.jsonl.{dead.pid}@{_HOST}.y.tmp").write_text("half")
    (run / f".metrics.json.{dead.pid}@{_HOST}.z.tmp").write_text("half")
    (run / "adapter.tmp").mkdir()
    train(_cfg(toy_mixture, tiny_model, run, save_steps=2, max_steps=3, resume=True))
    assert not [p.name for p in run.iterdir() if p.name.endswith(".tmp")]
