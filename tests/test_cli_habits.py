"""What LLaMA-Factory, axolotl and TRL users type: underscore flags, their names for tell's settings, the
`CONFIG.yaml key=value` command line, "did you mean", several trackers, named chat templates (issue 24 item 4)."""

from __future__ import annotations

import importlib.util
import json

import pytest
import yaml

from tell.cli import _config, _parse, build_parser, main
from tell.errors import TellError
from tell.train.config import TrainConfig


def _train_cfg(argv: list[str]) -> TrainConfig:
    return _config(TrainConfig, _parse(build_parser(), ["train", *argv]))


def test_underscore_flags_and_llama_factory_names_set_tells_fields():
    cfg = _train_cfg(["--mixture", "m", "--model", "x", "--out", "r", "--lora_rank", "4", "--cutoff_len=64",
                      "--num-train-epochs", "2", "--learning_rate", "2e-4", "--lora_target", "all", "--use_dora"])
    assert (cfg.lora_r, cfg.max_length, cfg.epochs, cfg.learning_rate, cfg.target_modules, cfg.dora) == \
        (4, 64, 2.0, 2e-4, "all", True)
    # a value that looks like a flag name is a value: only flag names are re-spelt
    cfg = _train_cfg(["--mixture", "m", "--model", "x", "--out", "r", "--training-arg", "eval_accumulation_steps=2"])
    assert cfg.training_args == {"eval_accumulation_steps": 2}


def test_config_yaml_then_key_value_words_then_flags(tmp_path):
    conf = tmp_path / "run.yaml"
    conf.write_text(yaml.safe_dump({"mixture": "m", "model_name_or_path": "x", "output_dir": "r", "cutoff_len": 64,
                                    "lora_rank": 16, "seed": 1}))
    cfg = _train_cfg([str(conf), "lora_rank=4", "learning_rate=3e-4", "--seed", "9"])
    assert (cfg.model, cfg.out, cfg.max_length, cfg.lora_r, cfg.learning_rate, cfg.seed) == ("x", "r", 64, 4, 3e-4, 9)
    with pytest.raises(TellError, match="neither a CONFIG.yaml"):
        _train_cfg([str(conf), "lora_rank"])
    with pytest.raises(TellError, match="two configs given"):
        _train_cfg(["--config", str(conf), str(conf)])
    with pytest.raises(TellError, match=r"field 'lora_r': expected a whole number >= 1"):
        _train_cfg([str(conf), "lora_r=0"])


def test_one_setting_under_two_names_is_refused(tmp_path):
    conf = tmp_path / "run.yaml"
    conf.write_text("max_length: 64\ncutoff_len: 128\n")
    with pytest.raises(TellError, match=r"'max_length' and 'cutoff_len' are one setting \(max_length\)"):
        _train_cfg([str(conf)])


def test_mistyped_yaml_key_setting_and_flag_get_did_you_mean(tmp_path, capsys):
    conf = tmp_path / "run.yaml"
    conf.write_text("mixture: m\nmodel: x\nout: r\nlerning_rate: 1.0e-4\n")
    assert main(["train", "--config", str(conf)]) == 2
    err = capsys.readouterr().err
    assert f"{conf}: field 'lerning_rate': unknown setting; did you mean learning_rate?" in err
    assert main(["train", "--mixture", "m", "--model", "x", "--out", "r", "lora_rnak=4"]) == 2
    assert "did you mean lora_rank" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        main(["train", "--mixture", "m", "--lerning-rate", "1e-4"])
    assert e.value.code == 2
    assert "unrecognized arguments: --lerning-rate (did you mean --learning-rate" in capsys.readouterr().err
    with pytest.raises(SystemExit):  # a flag tell does not have is not "near" one that shares only the dashes
        main(["train", "--mixture", "m", "--dry-run", "--rank", "4"])
    err = capsys.readouterr().err
    assert "unrecognized arguments: --dry-run --rank (did you mean --lora-rank?)" in err, err


def test_sweep_train_overrides_take_aliases_and_suggest_names():
    from tell.experiments.config import SweepSpec

    spec = SweepSpec(model="x", task="t.jsonl", eval=["e.jsonl"], task_tokens=[100], ratios=[1.0], general=["g.jsonl"], methods=["sft"],
                     train={"cutoff_len": 64, "lora_rank": 4})
    assert spec.train == {"max_length": 64, "lora_r": 4}
    with pytest.raises(TellError, match=r"field 'train.lerning_rate': unknown setting; did you mean learning_rate"):
        SweepSpec(model="x", task="t.jsonl", eval=["e.jsonl"], task_tokens=[100], ratios=[1.0], general=["g.jsonl"], methods=["sft"],
                  train={"lerning_rate": 1e-4})


def test_several_trackers_at_once(monkeypatch, toy_mixture, tiny_model, tmp_path):
    from tell.artifacts import RunDir
    from tell.train.run import training_arguments

    from conftest import train_config

    with pytest.raises(TellError, match="needs the wandb package"):
        training_arguments(train_config(toy_mixture, tiny_model, tmp_path / "a", report_to="tensorboard,wandb"),
                           RunDir(tmp_path / "a"), 1)
    for bad in ("tensorboard,tensorboard", "tensorboard,comet", "none,wandb", ""):
        with pytest.raises(TellError, match="field 'report_to'"):
            train_config(toy_mixture, tiny_model, tmp_path / "b", report_to=bad)
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: object() if name == "wandb" else real(name, *a))
    args = training_arguments(train_config(toy_mixture, tiny_model, tmp_path / "c", report_to="tensorboard, wandb"),
                              RunDir(tmp_path / "c"), 1)
    assert args.report_to == ["tensorboard", "wandb"]
    none = training_arguments(train_config(toy_mixture, tiny_model, tmp_path / "d"), RunDir(tmp_path / "d"), 1)
    assert none.report_to in ([], ["none"], "none")


# ---- named chat templates ------------------------------------------------------------------------------------

def _tokenizer(hf_tokenizer_dir, extra=()):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(hf_tokenizer_dir)
    if extra:
        tok.add_special_tokens({"additional_special_tokens": list(extra)})
    return tok


def test_named_templates_render_known_formats_and_end_answers(hf_tokenizer_dir):
    from tell.data.records import Record
    from tell.prompting import TEMPLATES, encode, prompt_text, stop_ids, use_template

    rec = Record(prompt="is the river", response="yes", system="be brief")
    tok = use_template(_tokenizer(hf_tokenizer_dir), "llama2")
    assert prompt_text(tok, rec) == "<s>[INST] <<SYS>>\nbe brief\n<</SYS>>\n\nis the river [/INST]"
    tok = use_template(_tokenizer(hf_tokenizer_dir), "alpaca")
    assert prompt_text(tok, rec) == "be brief\n\n### Instruction:\nis the river\n\n### Response:\n"
    specials = ("<|im_start|>", "<|im_end|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>")
    for name in TEMPLATES:
        tok = use_template(_tokenizer(hf_tokenizer_dir, specials), name)
        prompt, answer = encode(tok, rec)
        closing = {"chatml": "<|im_end|>", "llama3": "<|eot_id|>"}.get(name, "</s>")
        assert tok.convert_tokens_to_ids(closing) in answer, name
        assert tok.convert_tokens_to_ids(closing) in stop_ids(tok), name
        assert "yes" in tok.decode(answer) and "yes" not in tok.decode(prompt), name
    tok = use_template(_tokenizer(hf_tokenizer_dir, specials), "chatml")
    assert prompt_text(tok, rec) == ("<|im_start|>system\nbe brief<|im_end|>\n<|im_start|>user\nis the river"
                                     "<|im_end|>\n<|im_start|>assistant\n")


def test_a_template_whose_turn_tokens_the_vocabulary_lacks_is_refused(hf_tokenizer_dir):
    from tell.prompting import use_template

    with pytest.raises(TellError, match=r"the chatml template needs \['<\|im_start\|>', '<\|im_end\|>'\]"):
        use_template(_tokenizer(hf_tokenizer_dir), "chatml")
    with pytest.raises(TellError, match="unknown template"):
        use_template(_tokenizer(hf_tokenizer_dir), "zephyr-x")


def test_train_template_is_kept_by_the_adapter_and_used_by_eval(toy_mixture, tiny_model, tmp_path):
    from tell.models import inference_tokenizer
    from tell.prompting import TEMPLATES
    from tell.train.run import train

    from conftest import train_config

    train(train_config(toy_mixture, tiny_model, tmp_path / "run", max_steps=1, template="llama2"))
    assert json.loads((tmp_path / "run" / "config.json").read_text())["config"]["template"] == "llama2"
    tok = inference_tokenizer(str(tiny_model), tmp_path / "run" / "adapter")
    assert tok.chat_template == TEMPLATES["llama2"]
    assert main(["export", str(tmp_path / "run"), "--out", str(tmp_path / "exp")]) == 0
    assert json.loads((tmp_path / "exp" / "tell.json").read_text())["template"]["chat_template"] == TEMPLATES["llama2"]


def test_example_configs_are_valid_for_their_command():
    """examples/train_lora, train_qlora and eval (LLaMA-Factory's layout): each file's first line names its command,
    and the file is read by that command's config group, aliases and all, without an error."""
    from pathlib import Path

    from tell.config import build
    from tell.eval.config import EvalConfig
    from tell.prepare import PrepareConfig

    groups = {"prepare": PrepareConfig, "train": TrainConfig, "eval": EvalConfig}
    root = Path(__file__).resolve().parents[1] / "examples"
    files = sorted(p for d in ("train_lora", "train_qlora", "eval") for p in (root / d).glob("*.yaml"))
    assert len(files) >= 5
    for path in files:
        command = path.read_text().splitlines()[0].split()[2]
        cfg = build(groups[command], yaml_path=str(path))
        assert cfg.out, path
    qlora = build(TrainConfig, yaml_path=str(root / "train_qlora" / "llama2_7b_qlora_tell.yaml"))
    assert qlora.quantization == "4bit" and qlora.max_length == 1024
