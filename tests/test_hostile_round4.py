"""Issue 25's classes, a fourth hostile round: damaged records read silently, folder entries and links that are
no files, invisible anchors, sweep specs that name one thing twice, empty reports, unequal probe groups and a
checkpoint half-written by a full disk. Each case failed (or was silent) before its fix."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tell.cli import main
from tell.errors import TellError

from conftest import REPO, fake_source, train_config, write_jsonl


@pytest.fixture(scope="module")
def export1(toy_mixture, tiny_model, tmp_path_factory):
    from tell.train.run import train

    root = tmp_path_factory.mktemp("r4")
    train(train_config(toy_mixture, tiny_model, root / "run", max_steps=1))
    assert main(["export", str(root / "run"), "--out", str(root / "export")]) == 0
    return root


def _err(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    return err


def _ulimited(argv: list[str], blocks: int) -> subprocess.CompletedProcess:
    code = "import sys; from tell.cli import main; sys.exit(main(sys.argv[1:]))"
    return subprocess.run(["bash", "-c", f'ulimit -f {blocks}; exec "{sys.executable}" -c "{code}" "$@"', "x", *argv],
                          capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(REPO / "src")})


def test_an_exports_record_edited_or_torn_is_refused_not_read_without_its_anchor(export1, tiny_model, tmp_path,
                                                                                capsys):
    import shutil

    ev = write_jsonl(tmp_path / "ev.jsonl", [{"prompt": "judge a", "response": "x", "meta": {"kind": "cloze"}}])
    text = (export1 / "export" / "tell.json").read_text().rstrip()
    for name, damaged, says in (("dup", text[:-1] + ', "anchor": null}\n', "key 'anchor' appears twice"),
                                ("torn", text[:100], "not valid JSON"), ("list", "[]", "expected an object")):
        shutil.copytree(export1 / "export", tmp_path / name)
        (tmp_path / name / "tell.json").write_text(damaged)
        assert main(["eval", "--model", str(tiny_model), "--adapter", str(tmp_path / name), "--task-data", str(ev),
                     "--greedy", "--out", str(tmp_path / f"ev-{name}")]) == 2, name
        err = _err(capsys)
        assert "tell.json" in err and says in err, err
        assert not (tmp_path / f"ev-{name}" / "predictions.jsonl").exists()


def test_a_folder_input_names_what_it_does_not_read_and_refuses_data_names_it_cannot(data_files, hf_tokenizer_dir,
                                                                                    tmp_path, capsys):
    rows = data_files["task"].read_text().splitlines()
    fold = tmp_path / "fold"
    (fold / "sub").mkdir(parents=True)
    (fold / "part-0.jsonl").write_text("\n".join(rows[:10]) + "\n")
    (fold / "sub" / "part-1.jsonl").write_text("\n".join(rows[10:]) + "\n")
    base = ["prepare", "--general", str(data_files["general1"]), "--tokenizer", str(hf_tokenizer_dir), "--ratio", "1",
            "--no-progress"]
    assert main(base + ["--task", str(fold), "--out", str(tmp_path / "ok")]) == 0
    err = capsys.readouterr().err
    assert "1 entry not read" in err and "sub/" in err and "**" in err, err
    manifest = json.loads((tmp_path / "ok" / "manifest.json").read_text())
    assert manifest["inputs"]["task"][0]["skipped_files"] == ["sub/"]
    for name, make, says in (("part-2.jsonl", lambda p: p.symlink_to("nowhere.jsonl"), "a broken symlink"),
                             ("part-3.jsonl", os.mkfifo, "not a regular file (a FIFO)")):
        make(fold / name)
        assert main(base + ["--task", str(fold), "--out", str(tmp_path / name)]) == 2
        err = _err(capsys)
        assert name in err and says in err, err
        assert not (tmp_path / name).exists()
        (fold / name).unlink()
    (tmp_path / "la").symlink_to(tmp_path / "lb")
    (tmp_path / "lb").symlink_to(tmp_path / "la")
    assert main(base + ["--task", str(tmp_path / "la"), "--out", str(tmp_path / "loop")]) == 2
    assert "a symlink loop" in _err(capsys)  # a local path, never looked up as a Hub data set


def test_a_jsonl_in_another_encoding_says_so(data_files, hf_tokenizer_dir, tmp_path, capsys):
    bad = tmp_path / "latin.jsonl"
    bad.write_bytes('{"prompt": "caf\u00e9 au lait", "response": "oui"}\n'.encode("latin-1"))
    assert main(["prepare", "--task", str(bad), "--general", str(data_files["general1"]), "--tokenizer",
                 str(hf_tokenizer_dir), "--ratio", "1", "--no-progress", "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "not UTF-8 text (byte 0xe9" in err and "surrogates" not in err, err


def test_data_build_refuses_a_source_row_with_a_key_twice_another_encoding_or_no_file(tmp_path, capsys):
    for name, write, says in (
            ("dup", lambda p: p.write_text('{"question": "2+2?", "question": "3+3?", "answer": "#### 4"}\n'),
             "key 'question' appears twice"),
            ("utf16", lambda p: p.write_bytes('{"question": "2+2?"}\n'.encode("utf-16")), "not UTF-8 text (byte 0xff"),
            ("fifo", os.mkfifo, "not a regular file (a FIFO)")):
        src = fake_source(tmp_path / f"src-{name}")
        (src / "gsm8k" / "test.jsonl").unlink()
        write(src / "gsm8k" / "test.jsonl")
        assert main(["data", "build", "gsm8k", "--source", str(src), "--out", str(tmp_path / name)]) == 2, name
        err = _err(capsys)
        assert "test.jsonl" in err and says in err, err
        assert not (tmp_path / name / "gsm8k" / "test.jsonl").exists()


def test_an_adapter_export_refused_for_space_is_one_line_and_leaves_nothing(export1, tmp_path):
    proc = _ulimited(["export", str(export1 / "run"), "--out", str(tmp_path / "exp")], 4)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith("tell: error: a write was refused"), proc.stderr
    assert not (tmp_path / "exp").exists() and not list(tmp_path.glob(".exp.*"))


@pytest.mark.parametrize("flag", [["--anchor", "\u200b\u200b"], ["--anchor", ""], ["--anchor-file", "FILE"]])
def test_an_anchor_that_shows_nothing_is_refused_never_taken_as_no_anchor(flag, data_files, hf_tokenizer_dir,
                                                                         tmp_path, capsys):
    if flag[1] == "FILE":
        (tmp_path / "anchor.txt").write_text("\u200b\u2060\n")
        flag = ["--anchor-file", str(tmp_path / "anchor.txt")]
    assert main(["prepare", "--task", str(data_files["task"]), "--general", str(data_files["general1"]),
                 "--tokenizer", str(hf_tokenizer_dir), "--ratio", "1", "--no-progress", "--out", str(tmp_path / "o"),
                 *flag]) == 2
    err = _err(capsys)
    assert "the anchor" in err and ("invisible characters (U+" in err or "is empty" in err), err
    assert not (tmp_path / "o").exists()


def test_the_anchor_generator_rejects_a_candidate_of_invisible_words():
    from tell.experiments.anchor_gen import clean

    assert clean("\u200b \u200b \u2060", [], 2, 10) == (None, "empty")
    assert clean("\u200b judge this json", [], 2, 10)[0] == "\u200b judge this json"


def test_anchor_generate_ranks_on_equal_groups_when_the_task_set_is_small(tiny_model, toy_mixture, tmp_path,
                                                                           monkeypatch):
    from tell.eval import generate as G

    monkeypatch.setattr(G, "generate_batch", lambda *a, **k: ["Judge whether the reply is right."])
    d = toy_mixture.parent
    task = write_jsonl(tmp_path / "task.jsonl", [json.loads(x) for x in
                                                 (d / "task.jsonl").read_text().splitlines()[:3]])
    assert main(["anchor", "generate", "--model", str(tiny_model), "--task", str(task), "--general",
                 str(d / "general.jsonl"), "--candidates", "1", "--examples", "12", "--min-words", "1",
                 "--out", str(tmp_path / "a")]) == 0
    doc = json.loads((tmp_path / "a" / "candidates.json").read_text())
    assert doc["probe_groups"] == {"task": 3, "general": 3}, doc["probe_groups"]


@pytest.mark.parametrize("change, field", [
    ({"eval": ["EV", "EV"]}, "eval"), ({"general_eval": ["EV"]}, "general_eval"),
    ({"lr_grid": [1e-3, 1e-3]}, "lr_grid"), ({"general": ["GEN", "GEN"]}, "general"),
    ({"anchor": "\u200b"}, "anchor")])
def test_a_sweep_spec_naming_a_set_or_candidate_twice_is_refused_before_any_cell(change, field, tiny_model,
                                                                                 toy_mixture, tmp_path, capsys):
    d = toy_mixture.parent
    ev = write_jsonl(tmp_path / "ev.jsonl", [{"prompt": "judge a", "response": "x", "meta": {"kind": "cloze"}}])
    sub = {"EV": str(ev), "GEN": str(d / "general.jsonl")}
    spec = {"name": "t", "model": str(tiny_model), "task": str(d / "task.jsonl"), "general": [str(d / "general.jsonl")],
            "anchor": "task", "eval": [str(ev)], "task_tokens": [120], "ratios": [1], "methods": ["tell"],
            "seeds": [7]}
    spec |= {k: [sub.get(x, x) if isinstance(x, str) else x for x in v] if isinstance(v, list) else v
             for k, v in change.items()}
    (tmp_path / "spec.yaml").write_text(json.dumps(spec))
    assert main(["sweep", str(tmp_path / "spec.yaml"), "--out", str(tmp_path / "sw"), "--dry-run"]) == 2
    err = _err(capsys)
    assert f"field '{field}'" in err and ("more than once" in err or "invisible characters" in err), err


def test_a_report_of_a_sweep_whose_every_cell_failed_is_an_error_that_counts_them(tmp_path):
    from tell.experiments.evidence import load_sweep

    sw = tmp_path / "sw"
    sw.mkdir()
    row = {"cell": "tell-1", "method": "tell", "task_tokens": 0, "general_tokens": 0, "ratio": 1.0, "seed": 0,
           "set": None, "metric": None, "value": None, "health": "failed", "health_reason": "TellError: boom",
           "selected": True, "lr": 1e-3}
    (sw / "results.jsonl").write_text(json.dumps(row) + "\n" + json.dumps(row | {"cell": "tell-2"}) + "\n")
    with pytest.raises(TellError, match=r"2 cell\(s\) and none finished with results \(2 failed\).*boom"):
        load_sweep(sw)
    # cells that diverged still have their values: the report shows them in its run health section
    unstable = {**row, "set": "/w/ev.jsonl", "metric": "accuracy", "value": 0.4, "health": "unstable"}
    (sw / "results.jsonl").write_text(json.dumps(unstable) + "\n")
    assert load_sweep(sw).rows[0]["health"] == "unstable"


def test_a_sweep_spec_with_a_source_mapping_twice_is_one_error_not_a_traceback():
    from tell.experiments.config import SweepSpec, check_spec

    with pytest.raises(TellError, match="given more than once"):
        check_spec(SweepSpec(name="t", model="m", task="t.jsonl", general=[{"path": "a.jsonl"}, {"path": "a.jsonl"}],
                             anchor="task", eval=["e.jsonl"], task_tokens=[10], ratios=[1], methods=["tell"],
                             seeds=[0]))


def test_a_probe_uses_equal_groups_when_one_set_is_smaller_than_examples(tiny_model, toy_mixture, tmp_path,
                                                                          capsys):
    d = toy_mixture.parent
    task = write_jsonl(tmp_path / "task.jsonl", [json.loads(x) for x in
                                                 (d / "task.jsonl").read_text().splitlines()[:3]])
    assert main(["probe", "--model", str(tiny_model), "--task", str(task), "--general", str(d / "general.jsonl"),
                 "--anchor", "judge json", "--examples", "20", "--bootstrap", "0", "--no-random-prefix",
                 "--out", str(tmp_path / "p")]) == 0
    assert "both groups use 3" in capsys.readouterr().err
    groups = json.loads((tmp_path / "p" / "probe.json").read_text())["groups"]
    assert groups["general"] == groups["task"] == 3, groups


def test_a_checkpoint_the_disk_refused_is_removed_so_resume_trains_again(toy_mixture, tiny_model, tmp_path):
    out = tmp_path / "run"
    argv = ["train", "--mixture", str(toy_mixture), "--model", str(tiny_model), "--out", str(out), "--max-steps",
            "1", "--no-progress"]
    proc = _ulimited(argv, 24)
    assert proc.returncode == 2 and "a write was refused" in proc.stderr and "--resume" in proc.stderr, proc.stderr
    from tell.io import disk_of
    mount = disk_of(out).split(" (")[0]  # the error names the disk the run writes to, not only "the disk"
    assert f"under {out} on {mount} (" in proc.stderr and "GiB free of" in proc.stderr, proc.stderr
    assert not list((out / "checkpoints").glob("checkpoint-*")), list(out.rglob("*"))
    assert main(argv + ["--resume"]) == 0
    assert (out / "adapter" / "adapter_model.safetensors").is_file()
