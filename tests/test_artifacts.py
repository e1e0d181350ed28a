"""`tell.artifacts`: a mixture folder's files checked against each other, and mixture records refused by file, line
and field."""

from __future__ import annotations

import json
import shutil

import pytest

from tell.cli import main
from tell.errors import TellError
from tell.experiments.config import SweepSpec
from tell.prepare import PrepareConfig

from conftest import cut_mixture, reseal_mixture, train_argv


def test_a_prepare_killed_before_its_manifest_leaves_the_old_pair_that_train_reads(toy_mixture, tiny_model,
                                                                                   hf_tokenizer_dir, tmp_path,
                                                                                   monkeypatch):
    """Issue 25: the new mixture waits beside the old pair until the manifest switches; a prepare killed before
    that leaves the old mixture and its manifest, which verify and train still accept."""
    import tell.prepare as P
    from tell.artifacts import MixtureDir

    mix = tmp_path / "mix"
    shutil.copytree(toy_mixture, mix)
    old, old_manifest = (mix / "mixture.jsonl").read_bytes(), (mix / "manifest.json").read_bytes()
    d = toy_mixture.parent

    def killed(*a, **k):  # the process dies where the new manifest would be written
        raise KeyboardInterrupt

    monkeypatch.setattr(P, "write_json", killed)
    with pytest.raises(KeyboardInterrupt):
        P.prepare(PrepareConfig(task=str(d / "task.jsonl"), general=[str(d / "general.jsonl")],
                                tokenizer=str(hf_tokenizer_dir), ratio=1.0, anchor="task", out=str(mix), progress=False))
    assert (mix / "mixture.jsonl").read_bytes() == old and (mix / "manifest.json").read_bytes() == old_manifest
    assert MixtureDir(mix).verify()["mixture"]["sha256"] == json.loads(old_manifest)["mixture"]["sha256"]
    assert main(["train", "--mixture", str(mix), "--model", str(tiny_model), "--out", str(tmp_path / "run"),
                 "--no-progress", "--max-steps", "1", "--micro-batch-size", "2", "--batch-size", "2"]) == 0


def test_every_reader_refuses_a_mixture_missing_lines(toy_mixture, tiny_model, tmp_path, capsys):
    from tell.experiments.cell import Cell, prepare_cell

    mix = tmp_path / "mix"
    shutil.copytree(toy_mixture, mix)
    cut_mixture(mix, 20)
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
    cut_mixture(cell.mixture.path, 3)
    with pytest.raises(TellError, match="does not match manifest.json"):
        prepare_cell(cell)


@pytest.mark.parametrize("edit,expected", [
    (lambda r: r | {"response": ""}, "field 'response': is empty"),
    (lambda r: r | {"response": "  \n"}, "field 'response': is empty"),
    (lambda r: r | {"prompt": ["a", "b"]}, "field 'prompt': expected a string, got list"),
    (lambda r: r | {"history": [{"role": "user"}]}, "field 'history[0]': expected {\"role\""),
    (lambda r: r | {"history": [{"role": "narrator", "content": "x"}]}, "field 'history[0]'"),
    (lambda r: r | {"history": "earlier"}, "field 'history': expected a list of turns, got str"),
], ids=["empty", "blank", "prompt-list", "history-no-content", "history-role", "history-text"])
def test_bad_mixture_records_are_refused_with_file_line_and_field(toy_mixture, tiny_model, tmp_path, capsys,
                                                                  edit, expected):
    mix = tmp_path / "mix"
    shutil.copytree(toy_mixture, mix)
    lines = (mix / "mixture.jsonl").read_text().splitlines()
    lines[2] = json.dumps(edit(json.loads(lines[2])))
    (mix / "mixture.jsonl").write_text("\n".join(lines) + "\n")
    reseal_mixture(mix)
    assert main(train_argv(mix, tiny_model, tmp_path / "run")) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "mixture.jsonl:3: " in err and expected in err, err
    assert not (tmp_path / "run").exists()


def test_a_mixture_whose_answers_are_all_empty_is_refused(toy_mixture, tiny_model, tmp_path, capsys):
    mix = tmp_path / "mix"
    shutil.copytree(toy_mixture, mix)
    rows = [json.loads(x) | {"response": ""} for x in (mix / "mixture.jsonl").read_text().splitlines()]
    (mix / "mixture.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    reseal_mixture(mix)
    assert main(train_argv(mix, tiny_model, tmp_path / "run")) == 2
    assert "mixture.jsonl:1: " in capsys.readouterr().err
