"""`tell train` and `tell export` on tiny local models."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from conftest import make_tiny_llama
from tell.cli import main
from tell.train.config import TrainConfig
from tell.data.records import Record
from tell.errors import TellError
from tell.artifacts import MixtureDir
from tell.train.batching import IGNORE, Collator, tokenize_mixture
from tell.train.run import train

CHAT = ("{% for m in messages %}{{ '<s> ' + m['role'] + ' ' + m['content'] + ' </s> ' }}{% endfor %}"
        "{% if add_generation_prompt %}{{ '<s> assistant ' }}{% endif %}")


def cfg(mixture, model, out, **kw) -> TrainConfig:
    base = dict(mixture=str(mixture), model=str(model), out=str(out), progress=False, save_steps=0)
    base.update(kw)
    return TrainConfig(**base)


def adapter_weights(run: Path) -> dict[str, torch.Tensor]:
    return load_file(str(run / "adapter" / "adapter_model.safetensors"))


def test_loss_goes_down_lora_changes_base_does_not_and_adapter_reloads(toy_mixture, tiny_model, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    run = tmp_path / "run"
    m = train(cfg(toy_mixture, tiny_model, run, epochs=4, learning_rate=5e-3, lora_r=16))
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


def test_prompt_masking_plain_and_chat(toy_mixture, tiny_model, hf_tokenizer_dir, tmp_path):
    from transformers import AutoTokenizer

    from tell.prompting import answer_ids, prompt_ids

    for template in (None, CHAT):
        tok = AutoTokenizer.from_pretrained(tiny_model)
        tok.chat_template = template
        data = tokenize_mixture(MixtureDir(toy_mixture), tok, max_length=512, length_policy="truncate",
                                train_on_prompt=False, progress=False)
        first = json.loads((toy_mixture / "mixture.jsonl").read_text().splitlines()[0])
        rec = Record(prompt=first["prompt"], response=first["response"], system=first["system"])
        p, a = prompt_ids(tok, rec), answer_ids(tok, rec)
        ex = data.examples[0]
        assert ex["input_ids"] == p + a
        assert ex["labels"] == [IGNORE] * len(p) + a
        assert a[-1] == tok.eos_token_id  # the answer is closed, so the model learns to stop
        whole = tokenize_mixture(MixtureDir(toy_mixture), tok, max_length=512, length_policy="truncate",
                                 train_on_prompt=True, progress=False).examples[0]
        assert whole["labels"] == [IGNORE] + whole["input_ids"][1:]
    assert tok.decode(p).count("<s>") == 2  # the chat template was used: a turn marker per message


def test_length_policy_counts(toy_mixture, tiny_model):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model)
    lens = [len(e["input_ids"]) for e in tokenize_mixture(MixtureDir(toy_mixture), tok, max_length=512,
                                                          length_policy="truncate", train_on_prompt=False,
                                                          progress=False).examples]
    cut = sorted(lens)[len(lens) // 2]
    t = tokenize_mixture(MixtureDir(toy_mixture), tok, max_length=cut, length_policy="truncate",
                         train_on_prompt=False, progress=False)
    d = tokenize_mixture(MixtureDir(toy_mixture), tok, max_length=cut, length_policy="drop",
                         train_on_prompt=False, progress=False)
    longer = sum(n > cut for n in lens)
    assert t.counts["truncated"] + t.counts["dropped_no_answer"] == longer and t.counts["kept"] == len(lens) - t.counts["dropped_no_answer"]
    assert d.counts["dropped_too_long"] == longer and d.counts["kept"] == len(lens) - longer
    assert all(len(e["input_ids"]) <= cut and any(x != IGNORE for x in e["labels"]) for e in t.examples)
    # A prompt that fills the whole budget leaves no answer token: dropped, never fed.
    with pytest.raises(TellError, match="no example is left to train on"):
        tokenize_mixture(MixtureDir(toy_mixture), tok, max_length=3, length_policy="truncate",
                         train_on_prompt=False, progress=False)


def test_answer_and_eos_cuts_are_counted_warned_and_no_task_example_left_is_refused(toy_mixture, tiny_model,
                                                                                    tmp_path, capsys):
    from transformers import AutoTokenizer

    from tell.prompting import encode

    tok = AutoTokenizer.from_pretrained(tiny_model)
    lens = [(r.source, len(p), len(p) + len(a)) for _, r in MixtureDir(toy_mixture).records() for p, a in [encode(tok, r)]]
    cut = min(n for s, _, n in lens if s == "task") - 1  # every task example loses its last token (EOS)
    data = tokenize_mixture(MixtureDir(toy_mixture), tok, max_length=cut, length_policy="truncate",
                            train_on_prompt=False, progress=False)
    for source in ("task", "general"):  # a cut always takes the answer's end and its EOS
        assert data.counts[f"answer_cut_{source}"] == sum(s == source and p < cut < n for s, p, n in lens)
    assert data.counts["answer_cut_task"] == data.counts["examples_task"] > 0
    assert not any(e["input_ids"][-1] == tok.eos_token_id for e in data.examples if e["source"] == 1)
    m = train(cfg(toy_mixture, tiny_model, tmp_path / "cut", max_length=cut, max_steps=1))
    err = capsys.readouterr().err
    assert f"tell: warning: at --max-length {cut}" in err and f"{data.counts['answer_cut_task']:,} task" in err
    assert m["length_policy"]["answer_cut_task"] == data.counts["answer_cut_task"]
    assert json.loads((tmp_path / "cut" / "metrics.json").read_text())["length_policy"] == m["length_policy"]
    # Every task example over the length, dropped: 0 task tokens would be trained -> refused (a sweep cell fails).
    shortest_task = min(n for s, _, n in lens if s == "task")
    assert any(n < shortest_task for s, _, n in lens if s == "general")  # general examples would survive
    code = main(["train", "--mixture", str(toy_mixture), "--model", str(tiny_model), "--out", str(tmp_path / "none"),
                 "--max-length", str(shortest_task - 1), "--length-policy", "drop", "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2 and "0 task tokens would be trained" in err and err.count("\n") == 1
    assert not (tmp_path / "none" / "metrics.json").exists()


def test_packed_loss_equals_padded_loss(toy_mixture, tiny_model):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model)
    model = AutoModelForCausalLM.from_pretrained(tiny_model, attn_implementation="sdpa").eval()
    ex = tokenize_mixture(MixtureDir(toy_mixture), tok, max_length=512, length_policy="truncate",
                          train_on_prompt=True, progress=False).examples[:8]

    def loss(batch):
        labels, _ = batch.pop("labels"), batch.pop("token_source")
        logits = model(**batch, use_cache=False).logits[:, :-1].float()  # a cache disables packed masks
        ce = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.size(-1)), labels[:, 1:].reshape(-1),
                                               ignore_index=IGNORE, reduction="sum")
        return ce / (labels[:, 1:] != IGNORE).sum(), batch["input_ids"].numel()

    packed, packed_cells = loss(Collator(tok.pad_token_id, packed=True, row_length=512)(ex))
    padded, padded_cells = loss(Collator(tok.pad_token_id, packed=False, row_length=512)(ex))
    assert packed_cells < padded_cells  # fewer computed positions
    assert torch.allclose(packed, padded, atol=1e-5), (packed, padded)
    # Without the block-diagonal mask (examples attending to each other) the loss would differ.
    b = Collator(tok.pad_token_id, packed=True, row_length=512)(ex)
    b["position_ids"] = torch.arange(b["input_ids"].shape[1]).expand_as(b["input_ids"])
    leaky, _ = loss(b)
    assert not torch.allclose(leaky, padded, atol=1e-4)


def test_trainer_consumes_the_mixture_in_order(toy_mixture, tiny_model, tmp_path, monkeypatch):
    from transformers import AutoTokenizer

    seen: list[list[int]] = []
    original = Collator.__call__

    def spy(self, batch):
        seen.extend(e["input_ids"] for e in batch)
        return original(self, batch)

    monkeypatch.setattr(Collator, "__call__", spy)
    train(cfg(toy_mixture, tiny_model, tmp_path / "run"))
    tok = AutoTokenizer.from_pretrained(tiny_model)
    expected = [e["input_ids"] for e in tokenize_mixture(MixtureDir(toy_mixture), tok, max_length=1024,
                                                         length_policy="truncate", train_on_prompt=False,
                                                         progress=False).examples]
    assert seen == expected


def test_existing_run_is_not_overwritten_and_resume_checks_settings(toy_mixture, tiny_model, tmp_path):
    run = tmp_path / "run"
    train(cfg(toy_mixture, tiny_model, run))
    with pytest.raises(TellError, match="already holds a run"):
        train(cfg(toy_mixture, tiny_model, run))
    with pytest.raises(TellError, match="already finished"):
        train(cfg(toy_mixture, tiny_model, run, resume=True))
    with pytest.raises(TellError, match="nothing to resume"):
        train(cfg(toy_mixture, tiny_model, tmp_path / "new", resume=True))


def test_divergence_stops_with_clear_message(toy_mixture, tiny_model, tmp_path, capsys):
    run = tmp_path / "run"
    code = main(["train", "--mixture", str(toy_mixture), "--model", str(tiny_model), "--out", str(run),
                 "--learning-rate", "50", "--save-steps", "2", "--no-progress", "--divergence-factor", "3"])
    err = capsys.readouterr().err.splitlines()[-1]  # earlier lines: library warnings
    assert code == 2 and err.startswith("tell: error: ") and "training stopped: the loss" in err
    assert not (run / "adapter").exists() and not (run / "metrics.json").exists()
    assert "checkpoint-" in err or "no checkpoint was saved" in err


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


def test_export_merged_matches_unmerged(toy_mixture, tiny_model, tmp_path, capsys):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    run = tmp_path / "run"
    train(cfg(toy_mixture, tiny_model, run, learning_rate=5e-3))
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


def test_chat_model_trains_through_cli(toy_mixture, hf_tokenizer_dir, tmp_path, capsys):
    model = make_tiny_llama(hf_tokenizer_dir, tmp_path / "chat_model", chat_template=CHAT)
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
    m = train(cfg(toy_mixture, tiny_model, run, max_steps=1, learning_rate=1e-2, warmup_ratio=0.03))
    assert m["steps"] == 1
    lora_b = {k: v for k, v in adapter_weights(run).items() if "lora_B" in k}
    assert lora_b and all(v.abs().sum() > 0 for v in lora_b.values())  # lora_B starts at zero
    assert m["health"]["verdict"] == "ok" and m["health"]["few_steps"] is True
    assert "only 1 optimizer step" in capsys.readouterr().err


def test_health_verdicts_of_a_normal_run_and_an_absurd_learning_rate(toy_mixture, tiny_model, tmp_path):
    m = train(cfg(toy_mixture, tiny_model, tmp_path / "ok", batch_size=4, learning_rate=5e-3))
    assert m["steps"] >= 20 and m["health"]["verdict"] == "ok", m["health"]["reasons"]
    assert json.loads((tmp_path / "ok" / "metrics.json").read_text())["health"]["verdict"] == "ok"
    with pytest.raises(TellError, match="training stopped: the loss became nan"):
        train(cfg(toy_mixture, tiny_model, tmp_path / "absurd", batch_size=4, learning_rate=30.0,
                  divergence_factor=1e9))
    assert not (tmp_path / "absurd" / "metrics.json").exists()


def test_training_args_pass_through_and_refusals(toy_mixture, tiny_model, tmp_path, capsys):
    from tell.artifacts import RunDir
    from tell.train.run import training_arguments

    args = training_arguments(cfg(toy_mixture, tiny_model, tmp_path / "a", training_args={"adam_beta2": 0.95}),
                              RunDir(tmp_path / "a"), 1)
    assert args.adam_beta2 == 0.95 and args.learning_rate == 1e-4 and args.train_sampling_strategy == "sequential"
    for bad, msg in (({"learning_rate": 1.0}, "set by tell itself"), ({"no_such_setting": 1}, "unknown")):
        with pytest.raises(TellError, match=msg):
            training_arguments(cfg(toy_mixture, tiny_model, tmp_path / "b", training_args=bad), RunDir(tmp_path / "b"), 1)
    # The flag form: KEY=VALUE, the value read as YAML, repeatable.
    rc = main(["train", "--mixture", str(toy_mixture), "--model", str(tiny_model), "--out", str(tmp_path / "c"),
               "--training-arg", "adam_beta2=0.95", "--training-arg", "warmup_steps=3", "--no-progress"])
    assert rc == 2 and "set by tell itself" in capsys.readouterr().err
    assert not (tmp_path / "c").exists()
