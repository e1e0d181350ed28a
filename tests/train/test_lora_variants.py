"""DoRA, rsLoRA and QLoRA (`tell train --dora / --rslora / --quantization`)."""

from __future__ import annotations

import importlib.util
import json

import pytest
import torch
from safetensors.torch import load_file

from tell.cli import main
from tell.errors import TellError
from tell.models import quantization_config
from tell.train.run import train

from conftest import train_config


def test_dora_and_rslora_train_record_and_merge_to_the_same_outputs(toy_mixture, tiny_model, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    run = tmp_path / "run"
    train(train_config(toy_mixture, tiny_model, run, max_steps=3, dora=True, rslora=True, learning_rate=1e-2))
    conf = json.loads((run / "adapter" / "adapter_config.json").read_text())
    assert conf["use_dora"] is True and conf["use_rslora"] is True
    weights = load_file(run / "adapter" / "adapter_model.safetensors")
    magnitudes = [k for k in weights if "lora_magnitude_vector" in k]
    assert magnitudes, "a DoRA adapter holds a magnitude vector per adapted layer"
    recorded = json.loads((run / "config.json").read_text())["config"]
    assert recorded["dora"] is True and recorded["rslora"] is True and recorded["quantization"] is None

    assert main(["export", str(run), "--out", str(tmp_path / "merged"), "--merge"]) == 0
    card = (tmp_path / "merged" / "README.md").read_text()
    assert "| dora | True |" in card and "| rslora | True |" in card
    ids = torch.tensor([[1, 5, 6, 7, 8]])
    with torch.no_grad():
        peft = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_model), run / "adapter").eval()
        merged = AutoModelForCausalLM.from_pretrained(tmp_path / "merged").eval()
        base = AutoModelForCausalLM.from_pretrained(tiny_model).eval()
        want, got, before = peft(ids).logits, merged(ids).logits, base(ids).logits
    assert (want - before).abs().max() > 1e-3, "three steps at lr 1e-2 move the outputs"
    assert torch.allclose(want, got, atol=1e-4), "the merged DoRA model computes what base + adapter computes"


def test_quantization_on_a_cpu_is_refused_before_anything_is_written(toy_mixture, tiny_model, tmp_path, capsys):
    if torch.cuda.is_available():
        pytest.skip("this machine has a CUDA GPU")
    out = tmp_path / "run"
    rc = main(["train", "--mixture", str(toy_mixture), "--model", str(tiny_model), "--out", str(out),
               "--quantization", "4bit", "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 2 and "needs a CUDA GPU" in err and "quantization" in err and len(err.strip().splitlines()) == 1
    assert not out.exists()


def test_quantization_without_bitsandbytes_names_the_package(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "bitsandbytes" else real(name, *a))
    with pytest.raises(TellError, match="needs the bitsandbytes package"):
        quantization_config("8bit")


def test_quantization_configs_are_qlora_nf4_and_8bit(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: object() if name == "bitsandbytes" else real(name, *a))
    q4 = quantization_config("4bit", "auto")
    assert q4.load_in_4bit and q4.bnb_4bit_quant_type == "nf4" and q4.bnb_4bit_use_double_quant
    assert q4.bnb_4bit_compute_dtype == torch.bfloat16
    assert quantization_config("4bit", "float16").bnb_4bit_compute_dtype == torch.float16
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)  # a T4: no bf16
    assert quantization_config("4bit", "auto").bnb_4bit_compute_dtype == torch.float16
    q8 = quantization_config("8bit")
    assert q8.load_in_8bit and not q8.load_in_4bit
    assert quantization_config(None) is None
    with pytest.raises(TellError, match="expected one of"):
        quantization_config("3bit")


def test_llama_factorys_lora_target_all_trains_every_linear_layer(toy_mixture, tiny_model, tmp_path):
    """`lora_target: all` (the shipped example's value) adapts what PEFT's all-linear does, and trains."""
    from transformers import AutoModelForCausalLM

    from tell.train.model import add_lora

    def adapted(target: str) -> set[str]:
        m = add_lora(AutoModelForCausalLM.from_pretrained(tiny_model), r=2, alpha=4, dropout=0.0,
                     target_modules=target)
        return {n.rsplit(".lora_A", 1)[0] for n, _ in m.named_parameters() if ".lora_A" in n}

    every = adapted("all")
    assert every == adapted("all-linear") and len(every) > len(adapted("q_proj,v_proj")) > 0
    run = tmp_path / "run"
    train(train_config(toy_mixture, tiny_model, run, max_steps=1, target_modules="all"))
    conf = json.loads((run / "adapter" / "adapter_config.json").read_text())
    assert len(conf["target_modules"]) > 2
