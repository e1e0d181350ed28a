"""Issue 25's hostile round 3, beyond its examples: every command's writes, empty outcomes and ambiguous input."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from tell.cli import main
from tell.errors import TellError

from conftest import REPO, fake_source, train_config, write_jsonl


@pytest.fixture(scope="module")
def run1(toy_mixture, tiny_model, tmp_path_factory):
    from tell.train.run import train

    out = tmp_path_factory.mktemp("r") / "run"
    train(train_config(toy_mixture, tiny_model, out, max_steps=1))
    return out


def _err(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    return err


def test_export_never_deletes_a_folder_of_the_users_and_writes_files_as_open_would(run1, tmp_path, capsys):
    mine = tmp_path / "precious.tmp"
    mine.mkdir()
    (mine / "notes.txt").write_text("mine")
    assert main(["export", str(run1), "--out", str(tmp_path / "precious")]) == 0
    assert (mine / "notes.txt").read_text() == "mine"
    umask = os.umask(0o022)
    os.umask(umask)
    assert stat.S_IMODE((tmp_path / "precious" / "tell.json").stat().st_mode) == 0o666 & ~umask
    assert stat.S_IMODE((tmp_path / "precious").stat().st_mode) == 0o777 & ~umask
    assert not list(tmp_path.glob(".precious.*"))


def test_a_library_writer_refused_for_space_is_one_line_and_leaves_nothing(run1, tmp_path):
    code = ("import sys; from tell.cli import main; sys.exit(main(['export', sys.argv[1], '--out', sys.argv[2], "
            "'--merge']))")
    proc = subprocess.run(["bash", "-c", f'ulimit -f 16; exec "{sys.executable}" -c "{code}" "$0" "$1"',
                           str(run1), str(tmp_path / "merged")], capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(REPO / "src")})
    lines = [x for x in proc.stderr.splitlines() if x.startswith("tell:") or "Traceback" in x]
    assert proc.returncode == 2 and lines and lines[-1].startswith("tell: error: a write was refused"), proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "merged").exists() and not list(tmp_path.glob(".merged.*"))


def test_eval_refuses_an_out_folder_holding_another_commands_output(run1, tiny_model, tmp_path, capsys):
    ev = write_jsonl(tmp_path / "ev.jsonl", [{"prompt": "judge a", "response": "x", "meta": {"kind": "cloze"}}])
    before = (run1 / "metrics.json").read_bytes()
    assert main(["eval", "--model", str(tiny_model), "--adapter", str(run1), "--data", str(ev), "--greedy",
                 "--out", str(run1)]) == 2
    assert "holds another command's output (config.json" in _err(capsys)
    assert (run1 / "metrics.json").read_bytes() == before


def test_eval_refuses_ambiguous_sets_and_anchor_flags(tiny_model, tmp_path, capsys):
    ev = write_jsonl(tmp_path / "ev.jsonl", [{"prompt": "judge a", "response": "x", "meta": {"kind": "cloze"}}])
    base = ["eval", "--model", str(tiny_model), "--greedy", "--out", str(tmp_path / "o")]
    assert main(base + ["--data", str(ev), "--general-data", str(ev)]) == 2
    assert "given more than once" in _err(capsys)
    assert main(base + ["--data", str(ev), "--anchor", "x", "--no-anchor"]) == 2
    assert "contradict" in _err(capsys)
    assert main(base + ["--lm-eval", ","]) == 2
    assert "no task name" in _err(capsys)
    assert not (tmp_path / "o").exists()


def test_a_torn_or_edited_json_of_a_folder_is_one_line(run1, tiny_model, tmp_path, capsys):
    import shutil

    ev = write_jsonl(tmp_path / "ev.jsonl", [{"prompt": "judge a", "response": "x", "meta": {"kind": "cloze"}}])
    out = tmp_path / "ev"
    out.mkdir()
    (out / "eval_config.json").write_text('{"model": "x", "dat')
    assert main(["eval", "--model", str(tiny_model), "--data", str(ev), "--greedy", "--out", str(out)]) == 2
    assert "not valid JSON" in _err(capsys)
    dup = tmp_path / "dup"
    shutil.copytree(run1, dup)
    text = (dup / "mixture_manifest.json").read_text().rstrip()
    (dup / "mixture_manifest.json").write_text(text[:-1] + ', "anchor": null}')
    assert main(["eval", "--model", str(tiny_model), "--adapter", str(dup), "--data", str(ev), "--greedy",
                 "--out", str(tmp_path / "e2")]) == 2
    assert "key 'anchor' appears twice" in _err(capsys)


def _spec(tmp_path, toy_mixture, tiny_model, **more) -> Path:
    d = toy_mixture.parent
    y = tmp_path / "spec.yaml"
    y.write_text(json.dumps({"model": str(tiny_model), "task": str(d / "task.jsonl"), "general": [str(d / "general.jsonl")],
                             "anchor": "task", "eval": [str(d / "task.jsonl")], "metric": "cloze", "task_tokens": [120],
                             "ratios": [1], "methods": ["tell"]} | more))
    return y


@pytest.mark.parametrize("more, says", [
    ({"train": {"max_steps": 2}}, "field 'train.max_steps': is set by each cell (the method"),
    ({"decoding": {"limit": 3}}, "field 'decoding.limit': is set by each cell (eval_limit)"),
    ({"train": {"seed": 1}}, "field 'train.seed': is set by each cell"),
    ({"methods": []}, "field 'methods': is empty"),
    ({"seeds": []}, "field 'seeds': is empty"),
])
def test_sweep_specs_that_would_be_overridden_or_plan_nothing_are_refused(toy_mixture, tiny_model, tmp_path, capsys,
                                                                          more, says):
    assert main(["sweep", str(_spec(tmp_path, toy_mixture, tiny_model, **more)), "--out", str(tmp_path / "o"),
                 "--dry-run"]) == 2
    assert says in _err(capsys)


def test_one_setting_under_two_spellings_and_a_key_value_twice_are_refused(tmp_path, capsys):
    y = tmp_path / "p.yaml"
    y.write_text("task_tokens: 800\ntask-tokens: 2000\n")
    assert main(["prepare", "--config", str(y)]) == 2
    assert "'task_tokens' and 'task-tokens' are one setting" in _err(capsys)
    assert main(["train", "--mixture", "m", "--model", "x", "--out", str(tmp_path / "r"), "--training-arg",
                 "adam_beta2=0.9", "--training-arg", "adam_beta2=0.95"]) == 2
    assert "['adam_beta2'] given more than once" in _err(capsys)


def test_a_ratio_that_rounds_the_general_budget_to_nothing_is_refused(tmp_path, capsys):
    q = REPO / "examples" / "quickstart"
    assert main(["prepare", "--task", str(q / "task.jsonl"), "--general", str(q / "general.jsonl"), "--tokenizer",
                 str(q / "tokenizer"), "--task-tokens", "800", "--ratio", "0.0001", "--out", str(tmp_path / "m"),
                 "--no-progress"]) == 2
    assert "general budget of 0 tokens" in _err(capsys) and not (tmp_path / "m").exists()


def test_a_data_set_built_from_an_empty_source_file_is_refused(tmp_path, capsys):
    src = fake_source(tmp_path / "src")
    (src / "gsm8k" / "test.jsonl").write_text("")
    assert main(["data", "build", "gsm8k", "--source", str(src), "--out", str(tmp_path / "d")]) == 2
    assert "gives 0 items for ['test']" in _err(capsys)
    assert not (tmp_path / "d" / "gsm8k" / "manifest.json").exists()


def test_anchor_generate_with_nothing_kept_fails_and_leaves_no_old_anchor(toy_mixture, tiny_model, tmp_path, capsys):
    d, out = toy_mixture.parent, tmp_path / "an"
    out.mkdir()
    (out / "anchor.txt").write_text("an earlier run's anchor\n")
    argv = ["anchor", "generate", "--model", str(tiny_model), "--task", str(d / "task.jsonl"), "--general",
            str(d / "general.jsonl"), "--examples", "4", "--out", str(out)]
    assert main(argv + ["--candidates", "0"]) == 2
    assert "field 'candidates'" in _err(capsys)
    assert main(argv + ["--candidates", "2", "--max-new-tokens", "4", "--min-words", "30", "--max-words", "40"]) == 2
    assert "no candidate was kept: 2 rejected" in capsys.readouterr().err
    assert not (out / "anchor.txt").exists()
    assert len(json.loads((out / "candidates.json").read_text())["rejected"]) == 2


def test_full_disk_detection_reads_the_chain():
    from tell.io import full_disk

    try:
        try:
            raise OSError(27, "File too large")
        except OSError as inner:
            raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos") from inner
    except RuntimeError as e:
        assert full_disk(e)
    assert full_disk(Exception("File too large (os error 27)"))
    assert not full_disk(RuntimeError("shape mismatch"))
    assert not full_disk(TellError("x"))


def _planted_sweep(folder: Path) -> Path:
    from synthetic.test_study import world, write

    return write(folder, world({"tell": 0.6, "sft": 0.0, "sft-matched": 0.02, "tell-no-anchor": 0.2}))


def _edit_jsonl(path: Path, edit) -> None:
    rows = [json.loads(x) for x in path.read_text().splitlines()]
    edit(rows)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


@pytest.mark.parametrize("damage, where", [
    (lambda f: _edit_jsonl(f / "results.jsonl", lambda rs: rs.append({})), "results.jsonl:67: field 'method'"),
    (lambda f: _edit_jsonl(f / "results.jsonl", lambda rs: rs.append([1, 2])), "results.jsonl:67: expected a JSON obj"),
    (lambda f: _edit_jsonl(f / "results.jsonl", lambda rs: rs[0].update(value="x")), "results.jsonl:1: field 'value'"),
    (lambda f: _edit_jsonl(f / "item_scores.jsonl", lambda rs: rs[0].update(values=rs[0]["values"][:3])),
     "item_scores.jsonl:1: field 'values': 50 item ids but 3 scores"),
    (lambda f: _edit_jsonl(f / "item_scores.jsonl", lambda rs: rs.append({"seed": 0})), "item_scores.jsonl:67: field"),
    (lambda f: (f / "item_scores.jsonl").write_text((f / "item_scores.jsonl").read_text()[:-30]), "not a JSON row"),
    (lambda f: (f / "lr_selection.json").write_text('{"a": '), "lr_selection.json: not valid JSON"),
    (lambda f: (f / "lr_selection.json").write_text("[]"), "lr_selection.json: expected an object with a 'groups'"),
])
def test_a_damaged_sweep_file_is_one_line_naming_file_line_and_field(tmp_path, capsys, damage, where):
    folder = _planted_sweep(tmp_path / "sw")
    damage(folder)
    assert main(["report", str(folder)]) == 2
    err = _err(capsys)
    assert where in err and "rebuild it with `tell sweep`" in err, err
    assert not (folder / "report.md").exists()


def test_a_torn_cell_status_is_one_line_that_says_how_to_redo_the_cell(tmp_path):
    from tell.experiments.cell import CellDir

    cd = CellDir(tmp_path / "cells", "tell-abc")
    cd.path.mkdir(parents=True)
    assert cd.status() == {"status": "todo"}
    for text in ('{"status": "do', '{"status": "maybe"}', "[]"):
        cd.status_path.write_text(text)
        with pytest.raises(TellError, match=r"delete the cell's folder .*tell-abc.* redoes it") as e:
            cd.status()
        assert e.value.file == str(cd.status_path)


def test_a_token_cache_that_is_a_file_is_refused_by_name(hf_tokenizer_dir, tmp_path):
    from tell.data.tokens import CachedCounter, load_counter

    cache = tmp_path / "counts"
    cache.write_text("mine")
    with pytest.raises(TellError, match="is a file; expected a folder for the token-count cache"):
        CachedCounter(load_counter(str(hf_tokenizer_dir)), cache)
    assert cache.read_text() == "mine"


def test_a_built_set_without_meta_kind_is_refused_as_any_eval_file_is(tmp_path, capsys):
    from tell.data.builders import DATASET_MANIFEST
    from tell.eval.config import EvalConfig
    from tell.eval.run import resolve_set

    root = tmp_path / "data" / "halu-cot-json"
    root.mkdir(parents=True)
    (root / DATASET_MANIFEST).write_text("{}")
    write_jsonl(root / "test.jsonl", [{"prompt": "p", "response": "r"}])
    with pytest.raises(TellError, match="no meta.kind; give --metric"):
        resolve_set("halu-cot-json", EvalConfig(data_dir=str(tmp_path / "data")))



@pytest.mark.parametrize("argv, said", [
    (["sweep", "s.yaml", "--out", "o", "--workers", "0"], "--workers: expected a whole number >= 1, got 0"),
    (["sweep", "s.yaml", "--out", "o", "--workers", "-3"], "--workers: expected a whole number >= 1, got -3"),
    (["sweep", "s.yaml", "--out", "o", "--gpus-per-cell", "-1"], "--gpus-per-cell: expected a whole number >= 0"),
    (["demo", "--workers", "0"], "--workers: expected a whole number >= 1, got 0"),
    (["probe", "--model", "m", "--task", "t.jsonl", "--layers", "1,1", "--out", "o"], "distinct layer numbers"),
])
def test_counts_that_mean_nothing_are_refused_before_anything_runs(tmp_path, monkeypatch, capsys, argv, said):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as e:
        code = main(argv)
        raise SystemExit(code)
    assert e.value.code == 2
    assert said in capsys.readouterr().err
    assert not list(tmp_path.iterdir())


def test_an_eval_rerun_with_another_adapter_never_keeps_the_first_adapters_predictions(run1, toy_mixture, tiny_model,
                                                                                       tmp_path, capsys):
    """Issue 40 item 8: into the same --out, another adapter is refused (its path is a setting); the same path
    holding another adapter's files (replaced in place) has every prediction made again, by the new adapter."""
    import shutil

    from tell.train.run import train

    other = tmp_path / "other"
    train(train_config(toy_mixture, tiny_model, other, max_steps=2, seed=7, learning_rate=5e-2))
    ev = write_jsonl(tmp_path / "ev.jsonl", [{"prompt": f"judge {w}", "response": "x", "meta": {"kind": "cloze"}}
                                             for w in ("a", "b", "c")])
    here = tmp_path / "here"
    shutil.copytree(run1, here)
    out = tmp_path / "e"
    args = lambda adapter: ["eval", "--model", str(tiny_model), "--adapter", str(adapter), "--data", str(ev),  # noqa
                            "--greedy", "--max-new-tokens", "4", "--out", str(out), "--no-progress"]
    assert main(args(here)) == 0
    first = [json.loads(x) for x in (out / "predictions.jsonl").read_text().splitlines()]
    capsys.readouterr()
    assert main(args(other)) == 2
    assert "other settings ['adapter']" in _err(capsys)
    shutil.rmtree(here / "adapter")
    shutil.copytree(other / "adapter", here / "adapter")  # another adapter at the same path
    assert main(args(here)) == 0
    again = [json.loads(x) for x in (out / "predictions.jsonl").read_text().splitlines()]
    metrics = json.loads((out / "metrics.json").read_text())
    sha = json.loads((other / "metrics.json").read_text())["adapter_sha256"]["adapter_model.safetensors"]
    assert metrics["adapter_sha256"] == sha != first[0]["made_by"]["adapter_sha256"]
    assert len(again) == 3 and {p["made_by"]["adapter_sha256"] for p in again} == {sha}, again


def test_an_eval_of_a_run_whose_manifest_anchor_was_edited_after_training_is_refused(run1, tiny_model, tmp_path,
                                                                                    capsys):
    """Issue 40 item 8: config.json records the anchor training saw; a manifest copy edited since is refused by
    every command that reads the run's anchor (eval, export), never used to prompt."""
    import shutil

    ev = write_jsonl(tmp_path / "ev.jsonl", [{"prompt": "judge a", "response": "x", "meta": {"kind": "cloze"}}])
    run = tmp_path / "run"
    shutil.copytree(run1, run)
    manifest = json.loads((run / "mixture_manifest.json").read_text())
    assert manifest["anchor"] and json.loads((run / "config.json").read_text())["anchor"] == manifest["anchor"]
    manifest["anchor"]["text"] = "an anchor training never saw"
    (run / "mixture_manifest.json").write_text(json.dumps(manifest))
    argv = ["eval", "--model", str(tiny_model), "--adapter", str(run), "--task-data", str(ev), "--greedy",
            "--max-new-tokens", "2", "--out", str(tmp_path / "e"), "--no-progress"]
    assert main(argv) == 2
    assert "anchor differs from the one the run was trained with" in _err(capsys)
    assert not (tmp_path / "e").exists()
    assert main(["export", str(run), "--out", str(tmp_path / "x")]) == 2
    assert "anchor differs" in _err(capsys)
    assert not (tmp_path / "x").exists() and not list(tmp_path.glob(".x*"))
    assert main(argv[:4] + [str(run1)] + argv[5:]) == 0  # the unedited run evaluates
