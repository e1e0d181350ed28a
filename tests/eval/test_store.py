"""`tell.eval.store`: an eval rerun redoes the predictions of a replaced adapter or reordered data."""

from __future__ import annotations

import json
import shutil

from tell.cli import main
from tell.train.run import train

from conftest import small_train_config, write_jsonl

J = json.dumps


def test_eval_resume_redoes_predictions_of_a_replaced_adapter_or_reordered_data(toy_mixture, tiny_model, tmp_path,
                                                                                monkeypatch, capsys):
    from tell.eval import generate as G

    run, other = tmp_path / "run", tmp_path / "other"
    train(small_train_config(toy_mixture, tiny_model, run, learning_rate=5e-3))
    train(small_train_config(toy_mixture, tiny_model, other, learning_rate=5e-3, seed=7))
    rows = [{"prompt": f"judge castle river {w}", "response": J({"thought": "x", "hallucination": "no"}),
             "source": "task", "origin": "x", "row": i, "meta": {"kind": "json", "role": "task", "label": "no"}}
            for i, w in enumerate(["ocean", "cloud", "forest", "island", "market", "bridge"])]
    data = write_jsonl(tmp_path / "eval.jsonl", rows)
    calls = []
    real = G.generate_batch
    monkeypatch.setattr(G, "generate_batch", lambda *a, **k: calls.append(len(a[2])) or real(*a, **k))
    args = ["eval", "--model", str(tiny_model), "--adapter", str(run), "--data", str(data), "--out",
            str(tmp_path / "ev"), "--batch-size", "2", "--max-new-tokens", "5", "--no-progress", "--bootstrap", "20"]

    def rerun() -> tuple[int, dict, list[dict]]:
        calls.clear()
        assert main(args) == 0, capsys.readouterr().err
        metrics = json.loads((tmp_path / "ev" / "metrics.json").read_text())
        preds = [json.loads(x) for x in (tmp_path / "ev" / "predictions.jsonl").read_text().splitlines()]
        s = metrics["sets"][str(data)]
        # every row was made by what metrics.json names, and there is one row per item
        assert len(preds) == len(rows) == s["items"]
        assert all(p["made_by"]["adapter_sha256"] == metrics["adapter_sha256"] and
                   p["made_by"]["data_sha256"] == s["data_sha256"] for p in preds)
        return sum(calls), metrics, preds

    n, first, _ = rerun()
    assert n == 6
    assert rerun()[0] == 0  # nothing changed: nothing redone
    shutil.rmtree(run / "adapter")
    shutil.copytree(other / "adapter", run / "adapter")  # the adapter replaced in the same run folder
    n, second, _ = rerun()
    assert n == 6 and second["adapter_sha256"] != first["adapter_sha256"]
    write_jsonl(data, rows[3:] + rows[:3])  # the same items, other lines
    n, third, _ = rerun()
    assert n == 6 and third["sets"][str(data)]["data_sha256"] != second["sets"][str(data)]["data_sha256"]


def test_a_failed_rerun_keeps_metrics_until_a_row_changes_and_edited_rows_are_counted(toy_mixture, tiny_model,
                                                                                      tmp_path, monkeypatch, capsys):
    import tell.eval.run as R

    run, other = tmp_path / "run", tmp_path / "other"
    train(small_train_config(toy_mixture, tiny_model, run, learning_rate=5e-3))
    train(small_train_config(toy_mixture, tiny_model, other, learning_rate=5e-3, seed=7))
    rows = [{"prompt": f"judge castle river {w}", "response": J({"thought": "x", "hallucination": "no"}),
             "meta": {"kind": "json", "role": "task", "label": "no"}} for w in ("ocean", "cloud", "forest", "island")]
    data = write_jsonl(tmp_path / "eval.jsonl", rows)
    ev = tmp_path / "ev"
    args = ["eval", "--model", str(tiny_model), "--adapter", str(run), "--data", str(data), "--out", str(ev),
            "--max-new-tokens", "5", "--no-progress", "--bootstrap", "20"]
    assert main(args) == 0
    good = (ev / "metrics.json").read_text()
    with open(ev / "predictions.jsonl", "a") as f:  # rows tell never writes: counted, dropped, nothing redone
        f.write("{}\n[1, 2]\n")
    assert main(args) == 0
    assert "2 saved row(s) are not predictions tell writes" in capsys.readouterr().err
    assert len((ev / "predictions.jsonl").read_text().splitlines()) == 4
    good = (ev / "metrics.json").read_text()  # this rerun's (its own timestamp): the last good result

    def full(*a, **k):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(R, "subtask_averages", full)  # fails after the predictions, before metrics.json
    assert main(args) == 2
    assert (ev / "metrics.json").read_text() == good  # no row changed: the last good result stands
    shutil.rmtree(run / "adapter")
    shutil.copytree(other / "adapter", run / "adapter")  # now every row is redone, then the write fails
    assert main(args) == 2
    assert not (ev / "metrics.json").exists()  # metrics never stand beside rows they were not computed from
    monkeypatch.undo()
    assert main(args) == 0 and json.loads((ev / "metrics.json").read_text())["adapter_sha256"] != json.loads(good)[
        "adapter_sha256"]
