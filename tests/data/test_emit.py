"""`tell prepare --emit`: the mixture in TRL's / LLaMA-Factory's formats, in its order, and TRL's SFTTrainer
reading it (issue 13)."""

from __future__ import annotations

import json

import pytest

from tell.artifacts import MixtureDir
from tell.cli import main
from tell.data.records import chat_messages

from conftest import alpaca_rows, write_jsonl

TEMPLATE = ("{% for m in messages %}<{{ m.role }}> {{ m.content }} </s> {% endfor %}"
            "{% if add_generation_prompt %}<assistant> {% endif %}")


def _mix(tmp_path, tok, *emit):
    task = write_jsonl(tmp_path / "task.jsonl", alpaca_rows(12, "task", seed=1))
    general = write_jsonl(tmp_path / "general.jsonl", alpaca_rows(60, "general", seed=2))
    argv = ["prepare", "--task", str(task), "--general", str(general), "--tokenizer", str(tok), "--ratio", "2",
            "--anchor", "judge task", "--anchor-placement", "system", "--out", str(tmp_path / "mix"), "--no-progress"]
    for e in emit:
        argv += ["--emit", e]
    assert main(argv) == 0
    return tmp_path / "mix"


def _jsonl(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_emitted_files_keep_the_mixture_and_its_order(tmp_path, hf_tokenizer_dir):
    out = _mix(tmp_path, hf_tokenizer_dir, "messages", "prompt-completion")
    recs = [r for _, r in MixtureDir(out).records()]
    msgs, pc = _jsonl(out / "mixture.messages.jsonl"), _jsonl(out / "mixture.prompt-completion.jsonl")
    assert len(msgs) == len(pc) == len(recs)
    for rec, m, p in zip(recs, msgs, pc):
        system = [{"role": "system", "content": rec.system}] if rec.system else []
        expect = system + [{"role": "user", "content": rec.prompt}, {"role": "assistant", "content": rec.response}]
        assert m == {"messages": expect}
        assert p == {"prompt": expect[:-1], "completion": expect[-1:]}
        assert rec.source != "task" or rec.system.startswith("judge task")  # the anchor travels as placed
    manifest = json.loads((out / "manifest.json").read_text())
    assert set(manifest["emitted"]) == {"messages", "prompt-completion"}
    assert manifest["emitted"]["messages"]["examples"] == len(recs)
    with pytest.raises(SystemExit):
        main(["prepare", "--emit", "alpaca"])


def test_emitted_tool_use_is_in_hugging_faces_shape(tmp_path):
    from tell.data.emit import emit_row
    from tell.data.records import Record

    rec = Record(prompt='{"temp": 21}', response="21 degrees", prompt_role="tool",
                 history=[{"role": "user", "content": "weather?"},
                          {"role": "tool_call", "content": '{"name": "get_weather", "arguments": {"city": "paris"}}'}],
                 tools=[{"name": "get_weather", "parameters": {}}])
    row = emit_row("messages", rec)
    assert row["tools"] == rec.tools
    assert row["messages"][1] == {"role": "assistant", "content": "", "tool_calls": [
        {"type": "function", "function": {"name": "get_weather", "arguments": {"city": "paris"}}}]}
    assert row["messages"][2] == {"role": "tool", "content": '{"temp": 21}'}


def test_trl_sft_trainer_reads_the_emitted_mixture(tmp_path, hf_tokenizer_dir):
    trl = pytest.importorskip("trl")
    import datasets
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    out = _mix(tmp_path, hf_tokenizer_dir, "messages", "prompt-completion")
    tok = AutoTokenizer.from_pretrained(hf_tokenizer_dir)
    tok.chat_template = TEMPLATE
    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(vocab_size=len(tok), hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                                         num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=256,
                                         pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id,
                                         eos_token_id=tok.eos_token_id))
    first = next(MixtureDir(out).records())[1]
    for name in ("mixture.prompt-completion.jsonl", "mixture.messages.jsonl"):
        ds = datasets.load_dataset("json", data_files=str(out / name), split="train")
        args = trl.SFTConfig(output_dir=str(tmp_path / "trl"), max_steps=2, per_device_train_batch_size=4,
                             report_to=[], save_strategy="no", use_cpu=True, logging_steps=1, max_length=128,
                             dataset_num_proc=None)
        trainer = trl.SFTTrainer(model=model, args=args, train_dataset=ds, processing_class=tok)
        row = trainer.train_dataset[0]
        ours = tok(tok.apply_chat_template(chat_messages(first), tokenize=False), add_special_tokens=False)["input_ids"]
        assert row["input_ids"][:len(ours)] == ours  # the file's first example first, through the template
        if name.startswith("mixture.prompt-completion"):  # TRL masks the prompt, as tell does
            assert 0 < sum(x != -100 for x in row["labels"]) < len(row["input_ids"])
        trainer.train()
        assert all(torch.isfinite(torch.tensor(h["loss"])) for h in trainer.state.log_history if "loss" in h)


def test_each_emit_comes_with_trainer_configs_that_keep_the_order(tmp_path, hf_tokenizer_dir):
    """LLaMA-Factory, axolotl and ms-swift configs beside the messages file, TRL's beside prompt-completion; TRL's
    is read back by TRL's own parser and its dataset loads in the mixture's order."""
    import subprocess

    import datasets
    import yaml
    from trl import ModelConfig, ScriptArguments, SFTConfig, TrlParser
    from trl.scripts.utils import DatasetMixtureConfig

    out = _mix(tmp_path, hf_tokenizer_dir, "messages", "prompt-completion")
    manifest = json.loads((out / "manifest.json").read_text())
    assert set(manifest["emitted"]["messages"]["configs"]) == {
        "trainers/dataset_info.json", "trainers/llamafactory_sft.yaml", "trainers/axolotl.yaml", "trainers/swift_sft.sh"}
    assert set(manifest["emitted"]["prompt-completion"]["configs"]) == {"trainers/trl_sft.yaml"}
    assert not list(out.rglob("*.next"))

    trl_yaml = (out / "trainers" / "trl_sft.yaml").read_text()
    assert "# on a CPU, add: use_cpu: true and bf16: false" in trl_yaml
    cpu = tmp_path / "trl_cpu.yaml"  # as its comment says (TRL's SFTConfig defaults to bf16, a GPU's)
    cpu.write_text(trl_yaml + "use_cpu: true\nbf16: false\n")
    _, sft, model, mixture = TrlParser((ScriptArguments, SFTConfig, ModelConfig, DatasetMixtureConfig)) \
        .parse_yaml_file(str(cpu))
    assert sft.train_sampling_strategy == "sequential" and sft.num_train_epochs == 1 and sft.completion_only_loss
    assert model.use_peft and model.lora_r == 8 and model.model_name_or_path == str(hf_tokenizer_dir.resolve())
    ds = datasets.load_dataset("json", data_files=mixture.datasets[0].data_files, split="train")
    assert [r["completion"] for r in ds] == [r["completion"] for r in _jsonl(out / "mixture.prompt-completion.jsonl")]

    lf = yaml.safe_load((out / "trainers" / "llamafactory_sft.yaml").read_text())
    info = json.loads((out / "trainers" / "dataset_info.json").read_text())[lf["dataset"]]
    assert lf["disable_shuffling"] is True and lf["dataset_dir"] == str((out / "trainers").resolve())
    assert "template" not in lf and lf["val_size"] == 0  # the tokenizer's own chat template, every row trained on
    assert info["formatting"] == "sharegpt" and info["columns"]["messages"] == "messages"
    assert info["file_name"] == str((out / "mixture.messages.jsonl").resolve())
    ax = yaml.safe_load((out / "trainers" / "axolotl.yaml").read_text())
    assert ax["shuffle_merged_datasets"] is False and ax["curriculum_sampling"] is True
    assert ax["datasets"][0]["path"] == info["file_name"] and ax["num_epochs"] == 1
    sh = (out / "trainers" / "swift_sft.sh").read_text()
    assert "--dataset_shuffle false" in sh and "--train_dataloader_shuffle false" in sh and info["file_name"] in sh
    assert "--split_dataset_ratio 0 " in sh and ax["val_set_size"] == 0  # no row held out for validation
    assert subprocess.run(["bash", "-n", str(out / "trainers" / "swift_sft.sh")]).returncode == 0

    # a prepare into the same folder without --emit leaves no config of a mixture that is gone
    _mix(tmp_path, hf_tokenizer_dir)
    assert not (out / "trainers").exists() and not (out / "mixture.messages.jsonl").exists()


def test_emitted_script_and_configs_keep_hostile_paths_exactly(tmp_path, hf_tokenizer_dir):
    """A folder (and tokenizer path) with a space, `$(...)`, backticks and quotes: the ms-swift script passes each
    path as one word and runs nothing when the user runs it; the YAML and JSON configs read back the same paths."""
    import shutil
    import subprocess

    import yaml

    where = tmp_path / "my runs $(touch PWNED) `touch PWNED2` it's \"q\""
    where.mkdir()
    tok = where / "tok dir $(touch PWNED3)"
    shutil.copytree(hf_tokenizer_dir, tok)
    out = _mix(where, tok, "messages", "prompt-completion")
    data = str((out / "mixture.messages.jsonl").resolve())
    script = out / "trainers" / "swift_sft.sh"
    # the script run with a `swift` that prints its arguments, one per line
    bindir = tmp_path / "bin"
    bindir.mkdir()
    (bindir / "swift").write_text("#!/bin/sh\nfor a in \"$@\"; do printf '%s\\n' \"$a\"; done\n")
    (bindir / "swift").chmod(0o755)
    env = {"PATH": f"{bindir}:/usr/bin:/bin"}
    run = subprocess.run(["bash", str(script)], cwd=tmp_path, env=env, capture_output=True, text=True, check=True)
    args = run.stdout.splitlines()
    assert args[args.index("--dataset") + 1] == data and args[args.index("--model") + 1] == str(tok.resolve())
    assert not list(tmp_path.rglob("PWNED*"))
    lf = yaml.safe_load((out / "trainers" / "llamafactory_sft.yaml").read_text())
    ax = yaml.safe_load((out / "trainers" / "axolotl.yaml").read_text())
    trl = yaml.safe_load((out / "trainers" / "trl_sft.yaml").read_text())
    info = json.loads((out / "trainers" / "dataset_info.json").read_text())["tell_mixture"]
    assert lf["dataset_dir"] == str((out / "trainers").resolve()) and lf["model_name_or_path"] == str(tok.resolve())
    assert info["file_name"] == ax["datasets"][0]["path"] == data
    assert trl["datasets"][0]["data_files"] == str((out / "mixture.prompt-completion.jsonl").resolve())
