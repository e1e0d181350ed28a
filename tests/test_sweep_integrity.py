"""Sweeps that fail, name what does not exist or lost a file, and eval files whose records say their kind
(issue 16). Base-only sweeps on the tiny model: nothing is trained, so the file is fast."""

from __future__ import annotations

import json

from conftest import write_jsonl
from tell.cli import main


def _row(i: int, kind: str | None = "cloze", **meta) -> dict:
    meta = {"kind": kind, "answer": "json yes", **meta} if kind else {}
    return {"prompt": f"judge castle {i}", "response": "json yes", "meta": meta}


def _spec(tmp_path, model, evals, **more):
    y = tmp_path / "spec.yaml"
    y.write_text(json.dumps({"name": "t", "model": str(model), "methods": ["base"], "eval": [str(e) for e in evals],
                             "seeds": [7], "decoding": {"greedy": True, "max_new_tokens": 2, "bootstrap": 20}} | more))
    return y


def test_a_sweep_whose_every_cell_failed_exits_1(tmp_path, capsys):
    ev = write_jsonl(tmp_path / "e.jsonl", [_row(i) for i in range(2)])
    spec = _spec(tmp_path, tmp_path / "no_such_model", [ev], seeds=[7, 8])
    assert main(["sweep", str(spec), "--out", str(tmp_path / "sw")]) == 1
    err = capsys.readouterr().err
    assert "tell: error: all 2 cell(s) failed; see" in err and "Traceback" not in err


def test_an_unknown_eval_set_is_refused_before_any_cell_runs(tmp_path, tiny_model, capsys):
    ev = write_jsonl(tmp_path / "e.jsonl", [_row(i) for i in range(2)])
    spec = _spec(tmp_path, tiny_model, [ev, "halu-cot-jsn"])
    assert main(["sweep", str(spec), "--out", str(tmp_path / "sw")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "field 'eval': eval set 'halu-cot-jsn' is neither a file nor a data set name" in err
    assert not (tmp_path / "sw" / "cells").exists()
    spec = _spec(tmp_path, tiny_model, [ev], general_eval=[str(tmp_path)])
    assert main(["sweep", str(spec), "--out", str(tmp_path / "sw")]) == 2
    err = capsys.readouterr().err
    assert "field 'general_eval'" in err and "is a folder" in err


def test_a_finished_cell_that_lost_its_eval_metrics_is_redone(tmp_path, tiny_model, capsys):
    ev = write_jsonl(tmp_path / "e.jsonl", [_row(i) for i in range(3)])
    spec, out = _spec(tmp_path, tiny_model, [ev]), tmp_path / "sw"
    assert main(["sweep", str(spec), "--out", str(out)]) == 0
    [metrics] = list(out.glob("cells/*/eval/metrics.json"))
    before = json.loads(metrics.read_text())["sets"]
    metrics.unlink()
    assert main(["sweep", str(spec), "--out", str(out)]) == 0
    assert json.loads(metrics.read_text())["sets"] == before
    assert json.loads(metrics.parent.parent.joinpath("status.json").read_text())["status"] == "done"
    assert len((out / "results.jsonl").read_text().splitlines()) >= 1


def test_eval_reads_meta_kind_of_prompt_response_records_and_refuses_mixed_kinds(tmp_path, tiny_model, capsys):
    from tell.eval.config import EvalConfig
    from tell.eval.run import _file_set

    plain = write_jsonl(tmp_path / "plain.jsonl", [_row(i) for i in range(2)])  # no source/origin keys
    assert _file_set(str(plain), EvalConfig()).kind == "cloze"
    mixed = write_jsonl(tmp_path / "mixed.jsonl", [_row(0), _row(1), _row(2, "mcq", choices=["A", "B"])])
    out = tmp_path / "ev"
    assert main(["eval", "--model", str(tiny_model), "--data", str(mixed), "--out", str(out), "--greedy",
                 "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "field 'meta.kind': row 3 is of kind 'mcq' but row 1 of kind 'cloze'" in err, err
    assert "expected one kind per eval file" in err and not out.exists()
    unknown = write_jsonl(tmp_path / "unknown.jsonl", [_row(0, "clozee")])
    assert main(["eval", "--model", str(tiny_model), "--data", str(unknown), "--out", str(out), "--greedy",
                 "--no-progress"]) == 2
    assert "field 'meta.kind': unknown kind 'clozee'" in capsys.readouterr().err
    partly = write_jsonl(tmp_path / "partly.jsonl", [_row(0), _row(1, None)])
    assert main(["eval", "--model", str(tiny_model), "--data", str(partly), "--out", str(out), "--greedy",
                 "--no-progress"]) == 2
    assert "row 2 is without meta.kind but row 1 of kind 'cloze'" in capsys.readouterr().err
