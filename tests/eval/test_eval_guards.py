"""`tell eval` guards (issue 25): an altered adapter is refused, a changed adapter never reuses old predictions,
settings that are checked."""

from __future__ import annotations

import json

import pytest

from tell.cli import main
from tell.train.config import TrainConfig
from tell.train.run import train

from conftest import write_jsonl


@pytest.fixture(scope="module")
def trained(toy_mixture, tiny_model, tmp_path_factory):
    run = tmp_path_factory.mktemp("guards") / "run"
    train(TrainConfig(mixture=str(toy_mixture), model=str(tiny_model), out=str(run), progress=False, save_steps=0,
                      micro_batch_size=2, batch_size=4, max_steps=2, learning_rate=5e-3))
    return run


def _eval_file(path):
    rows = [{"prompt": f"judge castle river {w}", "response": json.dumps({"thought": "x", "hallucination": "no"}),
             "meta": {"kind": "json", "role": "task", "label": "no"}}
            for w in ["ocean", "cloud", "forest", "island"]]
    return write_jsonl(path, rows)


def _args(model, adapter, data, out):
    return ["eval", "--model", str(model), "--adapter", str(adapter), "--data", str(data), "--out", str(out),
            "--batch-size", "2", "--max-new-tokens", "3", "--no-progress", "--bootstrap", "10"]


def _count_generations(monkeypatch) -> list[int]:
    """The batch sizes of every generate_batch call from here on (what an eval run generated, not reused)."""
    from tell.eval import generate as G

    calls: list[int] = []
    real = G.generate_batch
    monkeypatch.setattr(G, "generate_batch", lambda *a, **k: calls.append(len(a[2])) or real(*a, **k))
    return calls


def test_train_records_the_adapter_checksums(trained):
    metrics = json.loads((trained / "metrics.json").read_text())
    sums = json.loads((trained / "adapter" / "tell_adapter.json").read_text())["files"]
    assert set(sums) == {"adapter_model.safetensors"}
    assert metrics["adapter_sha256"] == {"adapter_model.safetensors": sums["adapter_model.safetensors"]["sha256"]}


def test_an_adapter_whose_weight_bytes_were_altered_is_refused(trained, tiny_model, tmp_path, capsys):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(trained, run)
    weights = run / "adapter" / "adapter_model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-3] ^= 0xFF  # a byte of the last tensor's values: the file still loads, with other weights
    weights.write_bytes(bytes(data))
    out = tmp_path / "ev"
    assert main(_args(tiny_model, run, _eval_file(tmp_path / "eval.jsonl"), out)) == 2
    err = capsys.readouterr().err
    assert "adapter_model.safetensors changed since `tell train` saved it" in err and err.count("\n") == 1, err
    assert not out.exists()  # refused before anything was written
    # every command that loads an adapter refuses it the same way (models.resolve_adapter checks the sums)
    exported = tmp_path / "exported"
    assert main(["export", str(run), "--out", str(exported)]) == 2
    err = capsys.readouterr().err
    assert "changed since `tell train` saved it" in err and err.count("\n") == 1, err
    assert not exported.exists() or not any(exported.iterdir())
    probe = tmp_path / "probe"
    assert main(["probe", "--model", str(tiny_model), "--adapter", str(run), "--task", str(tmp_path / "eval.jsonl"),
                 "--general", str(tmp_path / "eval.jsonl"), "--anchor", "judge", "--out", str(probe)]) == 2
    err = capsys.readouterr().err
    assert "changed since `tell train` saved it" in err and err.count("\n") == 1, err
    assert not probe.exists() or not any(probe.iterdir())


def test_an_eval_rerun_redoes_predictions_when_adapter_config_changed(trained, tiny_model, tmp_path, monkeypatch,
                                                                     capsys):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(trained, run)
    calls = _count_generations(monkeypatch)
    args = _args(tiny_model, run, _eval_file(tmp_path / "eval.jsonl"), tmp_path / "ev")
    assert main(args) == 0, capsys.readouterr().err
    assert sum(calls) == 4
    calls.clear()
    assert main(args) == 0
    assert sum(calls) == 0  # nothing changed: nothing redone
    # The same weights, another scale (lora_alpha): other outputs, so the saved predictions are not this adapter's.
    conf = run / "adapter" / "adapter_config.json"
    c = json.loads(conf.read_text())
    c["lora_alpha"] = c["lora_alpha"] * 4
    conf.write_text(json.dumps(c))
    calls.clear()
    assert main(args) == 0, capsys.readouterr().err
    assert sum(calls) == 4
    preds = [json.loads(x) for x in (tmp_path / "ev" / "predictions.jsonl").read_text().splitlines()]
    assert len(preds) == 4 and len({json.dumps(p["made_by"]["adapter_folder_sha256"]) for p in preds}) == 1


def test_an_eval_rerun_redoes_predictions_when_the_base_weights_were_replaced_in_place(trained, tiny_model, tmp_path,
                                                                                      monkeypatch, capsys):
    """The base folder's name is the same, its weights are not: the saved predictions are another model's."""
    import shutil

    from safetensors.torch import load_file, save_file

    base = tmp_path / "base"
    shutil.copytree(tiny_model, base)
    calls = _count_generations(monkeypatch)
    args = _args(base, trained, _eval_file(tmp_path / "eval.jsonl"), tmp_path / "ev")
    assert main(args) == 0, capsys.readouterr().err
    assert sum(calls) == 4
    calls.clear()
    assert main(args) == 0
    assert sum(calls) == 0
    weights = base / "model.safetensors"
    tensors = {k: v * 1.5 for k, v in load_file(str(weights)).items()}
    save_file(tensors, str(weights), metadata={"format": "pt"})
    calls.clear()
    assert main(args) == 0, capsys.readouterr().err
    assert sum(calls) == 4


def test_a_negative_bootstrap_is_refused(tiny_model, tmp_path, capsys):
    out = tmp_path / "ev"
    code = main(["eval", "--model", str(tiny_model), "--data", str(_eval_file(tmp_path / "eval.jsonl")), "--out",
                 str(out), "--bootstrap", "-5", "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2 and "bootstrap" in err and err.count("\n") == 1, err
    assert not out.exists()


def test_a_chat_template_that_raises_in_eval_is_one_line(hf_tokenizer_dir, tmp_path, capsys):
    from conftest import make_tiny_llama

    template = ("{% for m in messages %}{{ m['role'] + ' ' + m['content'] + ' </s> ' }}{% endfor %}"
                "{% if add_generation_prompt %}{{ raise_exception('this template takes no generation prompt') }}"
                "{% endif %}")
    model = make_tiny_llama(hf_tokenizer_dir, tmp_path / "bad_template", chat_template=template)
    capsys.readouterr()
    code = main(["eval", "--model", str(model), "--data", str(_eval_file(tmp_path / "eval.jsonl")), "--out",
                 str(tmp_path / "ev"), "--max-new-tokens", "3", "--no-progress", "--bootstrap", "10"])
    err = capsys.readouterr().err
    assert code == 2 and "the chat template of" in err and "takes no generation prompt" in err, err
    assert "Traceback" not in err and [x for x in err.splitlines() if "tell: error" in x][0] == err.splitlines()[-1]
    # probe renders prompts the same way (tell.prompting): the same one line, nothing written
    probe = tmp_path / "probe"
    code = main(["probe", "--model", str(model), "--task", str(tmp_path / "eval.jsonl"), "--general",
                 str(tmp_path / "eval.jsonl"), "--anchor", "judge", "--out", str(probe)])
    err = capsys.readouterr().err
    assert code == 2 and "the chat template of" in err and "takes no generation prompt" in err, err
    assert "Traceback" not in err and not probe.exists()
