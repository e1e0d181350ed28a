"""A sweep whose cells evaluate during training (`train: {eval_steps, eval_data}`): the report plots it."""

from __future__ import annotations

import json

from tell.artifacts import RunDir
from tell.cli import main

from conftest import write_jsonl


def test_a_sweeps_training_evaluations_are_logged_per_cell_and_plotted(tmp_path, tiny_model, toy_mixture):
    d = toy_mixture.parent
    ev = write_jsonl(tmp_path / "eval.jsonl", [
        {"prompt": f"judge castle {w}", "response": "json yes thought no",
         "meta": {"kind": "cloze", "role": "task", "answer": "json yes thought no"}} for w in ["river", "ocean", "cloud"]])
    spec = tmp_path / "spec.yaml"
    spec.write_text(json.dumps({
        "name": "live", "model": str(tiny_model), "task": str(d / "task.jsonl"), "general": [str(d / "general.jsonl")],
        "anchor": "task", "eval": [str(ev)], "task_tokens": [120], "ratios": [1], "seeds": [7],
        "methods": ["sft", "tell"],
        "train": {"learning_rate": 0.01, "micro_batch_size": 4, "batch_size": 4, "eval_steps": 1,
                  "eval_data": [str(ev)], "eval_limit": 2, "eval_max_new_tokens": 3},
        "decoding": {"greedy": True, "max_new_tokens": 4, "bootstrap": 20}}))
    out = tmp_path / "sw"
    assert main(["sweep", str(spec), "--out", str(out)]) == 0
    for cell in out.glob("cells/*/run"):
        run = RunDir(cell)
        steps = run.metrics()["steps"]
        assert [r["step"] for r in run.eval_log()] == list(range(1, steps + 1))
    assert main(["report", str(out)]) == 0
    md = (out / "report.md").read_text()
    assert "## During training" in md
    plots = list((out / "report_files").glob("during_*.png"))
    assert len(plots) == 1 and plots[0].stat().st_size > 1000


def test_the_during_training_plot_shows_each_sets_primary_metric(tmp_path):
    """An eval set scored with several metrics during training is plotted with its primary one: the sweep's own
    set of that name's, else the report's --primary or the spec's primary_metric; the first only when none is."""
    from types import SimpleNamespace

    import matplotlib

    from tell.experiments.report import section_training_evals

    matplotlib.use("Agg")
    cell = tmp_path / "cells" / "c1"
    (cell / "run").mkdir(parents=True)
    rows = [{"step": s, "epoch": 0.5 * s, "eval": {
        "halu": {"role": "task", "metrics": {"json_valid": {"value": 1.0}, "accuracy": {"value": 0.2 * s}}},
        "gen": {"role": "general", "metrics": {"exact_match": {"value": 0.5}, "accuracy": {"value": 0.4}}}}}
        for s in (1, 2)]
    (cell / "run" / "train_log.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    evidence = [{"run_dir": str(cell), "cell": "c1", "method": "tell", "ratio": 1.0, "seed": 1}]
    figs = tmp_path / "figs"
    figs.mkdir()

    def plotted(primary, spec, cli=None):
        md = section_training_evals(SimpleNamespace(evidence=evidence, primary=primary, spec=spec), figs, cli)
        return sorted(line.split("(report_files/")[1].rstrip(")") for line in md if line.startswith("!["))

    assert plotted({"halu": "accuracy"}, {}) == ["during_gen_exact_match.png", "during_halu_accuracy.png"]
    assert plotted({}, {"primary_metric": "accuracy"}) == ["during_gen_accuracy.png", "during_halu_accuracy.png"]
    assert plotted({}, {"primary_metric": "accuracy"}, "exact_match") == ["during_gen_exact_match.png",
                                                                           "during_halu_json_valid.png"]
