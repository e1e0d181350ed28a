"""The `tell` command: bad values, files and folders refused in one line, exit code 2, nothing written; a closed
pipe."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tell.cli import main

from conftest import write_jsonl


def _reseal(mix: Path) -> None:
    """Give a hand-edited mixture a manifest that agrees with it (sha256 and lines)."""
    import hashlib

    m = json.loads((mix / "manifest.json").read_text())
    data = (mix / "mixture.jsonl").read_bytes()
    m["mixture"] |= {"sha256": hashlib.sha256(data).hexdigest(), "examples": data.count(b"\n")}
    (mix / "manifest.json").write_text(json.dumps(m))


def _tell_row(meta: dict) -> dict:
    return {"prompt": "which is it", "response": "A", "source": "task", "origin": "x", "meta": meta}


@pytest.fixture
def world(tmp_path, toy_mixture, tiny_model, hf_tokenizer_dir, data_files) -> dict:
    """Paths every case may use; broken artifacts are copies made in tmp_path."""
    w = {"tmp": tmp_path, "mix": toy_mixture, "model": tiny_model, "tok": hf_tokenizer_dir,
         "task": data_files["task"], "general": data_files["general1"], "out": tmp_path / "out"}
    w["file"] = tmp_path / "a_file"
    w["file"].write_text("keep me\n")
    w["eval"] = write_jsonl(tmp_path / "eval.jsonl", [_tell_row({"kind": "cloze"})] * 2)
    w["mcq"] = write_jsonl(tmp_path / "mcq.jsonl", [_tell_row({"kind": "mcq", "choices": 5})])
    w["number"] = write_jsonl(tmp_path / "number.jsonl", ['{"prompt": "a b", "response": 5}'])
    (tmp_path / "utf16.json").write_bytes(b"\xff\xfe" + '[{"prompt": "a", "response": "b"}]'.encode("utf-16-le"))
    (tmp_path / "utf16.csv").write_bytes(b"\xff\xfeprompt,response\na,b\n")
    (tmp_path / "utf16.yaml").write_bytes(b"\xff\xfelearning_rate: 1.0e-4\n")
    (tmp_path / "lr.yaml").write_text("learning_rate: -1.0e-4\n")
    (tmp_path / "lr_text.yaml").write_text("learning_rate: lots\n")
    for name in ("no_mixture", "torn_manifest", "number_mixture"):
        shutil.copytree(toy_mixture, tmp_path / name)
    (tmp_path / "no_mixture" / "mixture.jsonl").unlink()
    m = tmp_path / "torn_manifest" / "manifest.json"
    m.write_text(m.read_text()[:100])
    lines = (tmp_path / "number_mixture" / "mixture.jsonl").read_text().splitlines()
    lines[3] = json.dumps(json.loads(lines[3]) | {"response": 5})
    (tmp_path / "number_mixture" / "mixture.jsonl").write_text("\n".join(lines) + "\n")
    _reseal(tmp_path / "number_mixture")  # the manifest agrees with the edit: the record itself is refused
    (tmp_path / "no_tokenizer").mkdir()
    shutil.copy(tiny_model / "config.json", tmp_path / "no_tokenizer")
    (tmp_path / "a_folder").mkdir()
    (tmp_path / "adapter").mkdir()
    (tmp_path / "adapter" / "adapter_config.json").write_text("{}")  # export checks --out before reading it
    (tmp_path / "sweep").mkdir()
    (tmp_path / "sweep" / "results.jsonl").write_text(json.dumps({"method": "base", "seed": 1, "set": "s",
                                                                  "metric": "accuracy", "value": 0.5}) + "\n")
    (tmp_path / "spec.yaml").write_text(f"model: {tiny_model}\nmethods: [base]\neval: [x.jsonl]\n"
                                        "train: {learning_rate: -1.0}\n")
    return w


def _train(w, *more):
    return ["train", "--mixture", str(w["mix"]), "--model", str(w["model"]), "--out", str(w["out"]),
            "--no-progress", *more]


def _eval(w, *more, data="eval"):
    return ["eval", "--model", str(w["model"]), "--data", str(w[data]) if data in w else data,
            "--out", str(w["out"]), "--greedy", "--no-progress", *more]


def _prepare(w, *more, task=None):
    return ["prepare", "--task", str(task or w["task"]), "--general", str(w["general"]), "--tokenizer",
            str(w["tok"]), "--ratio", "1", "--out", str(w["out"]), "--no-progress", *more]


def _probe(w, *more):
    return ["probe", "--model", str(w["model"]), "--task", str(w["task"]), "--general", str(w["general"]),
            "--anchor", "task", "--out", str(w["out"]), *more]


CASES = [
    # values that meant something else
    ("eval-limit-0", lambda w: _eval(w, "--limit", "0"), "field 'limit': expected a whole number >= 1, got 0"),
    ("eval-limit-negative", lambda w: _eval(w, "--limit", "-4"), "field 'limit'"),
    ("train-max-steps-0", lambda w: _train(w, "--max-steps", "0"), "field 'max_steps': expected a whole number >= 1"),
    ("train-warmup-ratio-1.5", lambda w: _train(w, "--warmup-ratio", "1.5"),
     "field 'warmup_ratio': expected a share between 0 and 1, got 1.5"),
    ("report-unknown-metric", lambda w: ["report", str(w["tmp"] / "sweep"), "--metric", "nonsense"],
     "no metric 'nonsense' in the results; expected one of ['accuracy']"),
    # values that raised tracebacks
    ("train-lr-negative", lambda w: _train(w, "--learning-rate", "-1"), "field 'learning_rate': expected a finite number > 0"),
    ("train-lr-nan", lambda w: _train(w, "--learning-rate", "nan"), "got nan"),
    ("train-lr-negative-yaml", lambda w: ["train", "--config", str(w["tmp"] / "lr.yaml"), "--mixture", str(w["mix"]),
                                          "--model", str(w["model"]), "--out", str(w["out"])],
     "lr.yaml: field 'learning_rate': expected a finite number > 0"),
    ("train-lr-text-yaml", lambda w: ["train", "--config", str(w["tmp"] / "lr_text.yaml")],
     "field 'learning_rate': expected float, got str 'lots'"),
    ("sweep-train-lr-negative", lambda w: ["sweep", str(w["tmp"] / "spec.yaml"), "--out", str(w["out"])],
     "(train): field 'learning_rate': expected a finite number > 0"),
    ("train-epochs-0", lambda w: _train(w, "--epochs", "0"), "field 'epochs'"),
    ("config-not-utf8", lambda w: ["train", "--config", str(w["tmp"] / "utf16.yaml")], "not UTF-8 text (byte 0xff"),
    ("data-json-not-utf8", lambda w: _prepare(w, task=w["tmp"] / "utf16.json"), "utf16.json: not UTF-8 text"),
    ("data-csv-not-utf8", lambda w: _prepare(w, task=w["tmp"] / "utf16.csv"), "utf16.csv: not UTF-8 text"),
    ("anchor-file-not-utf8", lambda w: _prepare(w, "--anchor-file", str(w["tmp"] / "utf16.csv")),
     "field 'anchor_file': not UTF-8 text"),
    ("mixture-missing", lambda w: ["train", "--mixture", str(w["tmp"] / "no_mixture"), "--model", str(w["model"]),
                                   "--out", str(w["out"])], "no mixture.jsonl"),
    ("manifest-truncated", lambda w: ["train", "--mixture", str(w["tmp"] / "torn_manifest"), "--model",
                                      str(w["model"]), "--out", str(w["out"])], "manifest.json: not valid JSON"),
    ("mixture-response-number", lambda w: ["train", "--mixture", str(w["tmp"] / "number_mixture"), "--model",
                                           str(w["model"]), "--out", str(w["out"]), "--no-progress"],
     "mixture.jsonl:4: not a mixture record (ValueError: field 'response': expected a string, got int)"),
    ("data-response-number", lambda w: _prepare(w, task=w["number"]), "field 'response': expected a string, got int"),
    ("eval-batch-size-0", lambda w: _eval(w, "--batch-size", "0"), "field 'batch_size'"),
    ("eval-temperature-0-sampling", lambda w: [a for a in _eval(w, "--temperature", "0") if a != "--greedy"],
     "field 'temperature': expected a temperature > 0 for sampling (or --greedy)"),
    ("eval-shots-negative", lambda w: _eval(w, "--shots", "-1"), "field 'shots': expected a whole number >= 0"),
    ("eval-mcq-choices-number", lambda w: _eval(w, data="mcq"), "field 'meta.choices': expected the option letters"),
    ("prepare-ratio-nan", lambda w: _prepare(w, "--ratio", "nan"), "field 'ratio': expected a finite number >= 0, got nan"),
    ("prepare-ratio-inf", lambda w: _prepare(w, "--ratio", "inf"), "got inf"),
    ("prepare-out-file", lambda w: _prepare(w, "--out", str(w["file"])), "field 'out': expected a folder, not an existing file"),
    ("train-out-file", lambda w: _train(w, "--out", str(w["file"])), "field 'out': expected a folder"),
    ("eval-out-file", lambda w: _eval(w, "--out", str(w["file"])), "field 'out': expected a folder"),
    ("export-out-file", lambda w: ["export", str(w["tmp"] / "adapter"), "--out", str(w["file"])],
     "field 'out': is a file; expected a new or empty folder"),
    ("probe-layers-text", lambda w: _probe(w, "--layers", "abc"), "field 'layers': expected middle, all, or distinct layer numbers"),
    ("probe-examples-0", lambda w: _probe(w, "--examples", "0"), "field 'examples': expected a whole number >= 2"),
    ("probe-examples-1", lambda w: _probe(w, "--examples", "1"), "got 1"),
    # misleading messages
    ("model-path-missing", lambda w: _eval(w, "--model", str(w["tmp"] / "no" / "model")), "no such model folder"),
    ("model-path-relative-missing", lambda w: _eval(w, "--model", "./no_model_here"), "no such model folder"),
    ("prepare-tokenizer-path-missing", lambda w: _prepare(w, "--tokenizer", "./no/such/dir"),
     "./no/such/dir: no such folder or file; expected a tokenizer folder"),
    ("prepare-tokenizer-nested-missing", lambda w: _prepare(w, "--tokenizer", "no/such/dir"),
     "no/such/dir: no such folder"),
    ("prepare-tokenizer-file-name-missing", lambda w: _prepare(w, "--tokenizer", "tok.json"), "tok.json: no such folder"),
    ("prepare-tokenizer-json-file", lambda w: _prepare(w, "--tokenizer", str(w["tok"] / "tokenizer.json")),
     "tokenizer.json: is a file; expected a tokenizer folder"),
    ("model-nested-missing", lambda w: _eval(w, "--model", "no/such/dir"), "no/such/dir: no such model folder"),
    ("eval-data-set-not-built", lambda w: _eval(w, data=str(w["tmp"] / "data" / "gsm8k" / "test.jsonl")),
     "test.jsonl: no such file; the data set gsm8k is not built here: run `tell data build gsm8k --out"),
    ("prepare-data-set-not-built", lambda w: _prepare(w, task=w["tmp"] / "data" / "halu-cot-json" / "train.jsonl"),
     "the data set halu-cot-json is not built here: run `tell data build halu-cot-json --out"),
    ("model-without-tokenizer", lambda w: _eval(w, "--model", str(w["tmp"] / "no_tokenizer")),
     "no tokenizer files in the folder (none of tokenizer.json"),
    ("eval-bad-row-no-skip-hint", lambda w: _eval(w, "--metric", "cloze", data="number"),
     "(format 'prompt_response')"),
    ("prepare-task-folder", lambda w: _prepare(w, task=w["tmp"] / "a_folder"), "a_folder: is a folder; expected a data file"),
    ("prepare-eval-file-folder", lambda w: _prepare(w, "--eval-file", str(w["tmp"] / "a_folder")), "is a folder"),
    ("eval-data-folder", lambda w: _eval(w, data=str(w["tmp"] / "a_folder")), "a_folder: is a folder; expected an eval file"),
    ("probe-task-folder", lambda w: [a if a != str(w["task"]) else str(w["tmp"] / "a_folder") for a in _probe(w)],
     "is a folder without manifest.json"),
]


@pytest.mark.parametrize("make_argv,expected", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_refused_in_one_line_exit_2_nothing_written(world, capsys, make_argv, expected):
    code = main(make_argv(world))
    out, err = capsys.readouterr()
    assert code == 2, err
    assert err.startswith("tell: error:") and err.count("\n") == 1 and "Traceback" not in err, err
    assert expected in err, err
    assert "--skip-invalid" not in err or make_argv(world)[0] == "prepare"
    assert not world["out"].exists()  # nothing half-written, e.g. config.json before a refused learning rate
    assert world["file"].read_text() == "keep me\n"


def test_broken_pipe_exits_quietly(tmp_path, data_files, hf_tokenizer_dir):
    """`tell prepare ... | head -1`: the reader goes away; no traceback, the exit code a SIGPIPE'd tool gives."""
    r, w = os.pipe()
    os.close(r)  # the reader is gone before tell writes
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1] / "src")}
    argv = ["prepare", "--task", str(data_files["task"]), "--general", str(data_files["general1"]), "--tokenizer",
            str(hf_tokenizer_dir), "--ratio", "1", "--out", str(tmp_path / "mix"), "--no-progress"]
    p = subprocess.run([sys.executable, "-m", "tell.cli", *argv], stdout=w, stderr=subprocess.PIPE, env=env,
                       timeout=300)
    os.close(w)
    assert p.returncode == 141 and p.stderr == b"", p.stderr.decode()
    assert (tmp_path / "mix" / "manifest.json").is_file()  # the work was done; only the summary had no reader
