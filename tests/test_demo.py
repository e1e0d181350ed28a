"""The leverage world and `tell demo`."""

from __future__ import annotations

import json

import pytest

from tell.cli import main
from tell.eval.metrics import score_format
from tell.synthetic.world import FORMAT_REGEX, World, WorldConfig

SMALL = WorldConfig(n_items=8, min_len=2, max_len=4, pretrain_sentences=500, general_examples=300, task_train=40,
                    task_test=16)


def test_world_is_deterministic_per_seed(tmp_path):
    a = World(SMALL).write(tmp_path / "a")
    b = World(SMALL).write(tmp_path / "b")
    c = World(WorldConfig(**{**SMALL.__dict__, "seed": 1})).write(tmp_path / "c")
    for name in ("task_train", "task_test", "general", "pretrain"):
        assert a[name].read_bytes() == b[name].read_bytes()
        assert a[name].read_bytes() != c[name].read_bytes()


def test_world_task_needs_its_format_and_sort_and_test_is_unseen():
    w = World(SMALL)
    train, test = w.task("train"), w.task("test")
    assert not {r["prompt"] for r in train} & {r["prompt"] for r in test}
    for r in train + test:
        xs = r["prompt"].split(": ", 1)[1].split()
        assert r["response"] == f"{{ result : {' '.join(w.apply('sort', xs))} ; size : {len(xs)} }}"
        assert score_format(r["response"], FORMAT_REGEX, r["response"]) == {"format": 1.0, "correct": 1.0}
    # General data never show the task's format or its query (share = 0).
    assert not any("result" in g["response"] or g["prompt"].startswith("Process") for g in w.general())
    shared = World(WorldConfig(**{**SMALL.__dict__, "share": 0.5})).general()
    assert any(g["prompt"].startswith("Process") and "{" not in g["response"] for g in shared)


@pytest.mark.parametrize("out, fmt, ok", [
    ("{ result : ka lo ; size : 2 }", 1, 1), ("{  result : ka lo ;\\nsize : 2 }".replace("\\n", "\n"), 1, 1),
    ("{ result : lo ka ; size : 2 }", 1, 0), ("result : ka lo ; size : 2", 0, 0), ("{ result : ; size : 2 }", 0, 0),
])
def test_format_metric(out, fmt, ok):
    assert score_format(out, FORMAT_REGEX, "{ result : ka lo ; size : 2 }") == {"format": float(fmt), "correct": float(ok)}


def test_demo_quick_runs_and_writes_its_report(tmp_path, capsys):
    assert main(["demo", "--quick", "--out", str(tmp_path / "demo"), "--cache", str(tmp_path / "cache")]) == 0
    out = capsys.readouterr().out
    assert "Report:" in out and "format_adherence at" in out
    sweep = tmp_path / "demo" / "sweep"
    rows = [json.loads(x) for x in (sweep / "results.jsonl").read_text().splitlines()]
    assert {r["method"] for r in rows} == {"base", "sft", "sft-matched", "general-only", "tell", "tell-no-anchor"}
    assert {r["metric"] for r in rows} == {"format_adherence", "accuracy"}
    assert {r["role"] for r in rows} == {"task", "general"}  # the general-skill test runs in every cell
    assert (sweep / "report.md").is_file() and (sweep / "report.html").is_file()
    assert len(list((sweep / "report_files").glob("*.png"))) >= 4
    # The pretrained base is an ordinary HF model dir, cached, copied to the demo folder and reused next time.
    (base,) = list((tmp_path / "cache").glob("base-*"))
    assert (base / "config.json").is_file() and (base / "tokenizer.json").is_file()
    assert (tmp_path / "demo" / "base" / "model.safetensors").read_bytes() == (base / "model.safetensors").read_bytes()
    assert main(["demo", "--quick", "--out", str(tmp_path / "demo2"), "--cache", str(tmp_path / "cache")]) == 0
    assert "using the cached base model" in capsys.readouterr().out
    _cpu_example_spec_runs_on_the_demo_world(tmp_path, capsys)


def _cpu_example_spec_runs_on_the_demo_world(tmp_path, capsys):
    """examples/sweeps/demo_cpu.yaml (an lr grid, 3 seeds, a general eval set) on the quick demo's world: the
    report shows run health, the lr choice, paired verdicts and forgetting."""
    from conftest import REPO

    text = (REPO / "examples" / "sweeps" / "demo_cpu.yaml").read_text()
    assert "lr_grid" in text and "general_eval" in text and "seeds: [0, 1, 2]" in text
    spec = tmp_path / "demo_cpu.yaml"
    spec.write_text(text.replace("out/demo-quick", str(tmp_path / "demo")))
    out = tmp_path / "cpu"
    assert main(["sweep", str(spec), "--out", str(out)]) == 0
    assert main(["report", str(out)]) == 0
    capsys.readouterr()
    md = (out / "report.md").read_text()
    for section in ("## Run health", "## Findings", "## Forgetting", "## Learning-rate selection"):
        assert section in md, section
    # sft at 300 task tokens is 1-2 optimizer steps: health says it could not judge them, not "healthy"
    assert "too few optimizer steps for the loss trends to be judged" in md
    findings = json.loads((out / "findings.json").read_text())
    verdicts = {f["verdict"] for f in findings}
    assert verdicts <= {"better", "worse", "no detectable difference"} and verdicts  # 3 seeds: real verdicts
    assert {f["comparison"] for f in findings if f["section"] == "forgetting"} >= {"tell vs base", "sft vs base"}
    assert any(f["comparison"].startswith("tell vs sft-matched") for f in findings)
    sel = json.loads((out / "lr_selection.json").read_text())
    assert {g["method"] for g in sel["groups"]} == {"sft", "sft-matched", "tell"}
    assert all(len(g["candidates"]) == 2 for g in sel["groups"])


@pytest.mark.slow
def test_task_needs_task_data_general_only_fails_plenty_of_task_data_succeeds(tmp_path):
    """The world's claim: general data alone do not solve the task; plenty of task data do."""
    from tell.config import EvalConfig, PrepareConfig, TrainConfig
    from tell.data.prepare import prepare
    from tell.eval.run import evaluate
    from tell.synthetic.demo import FULL, cached_base
    from tell.train.run import train

    world = World(FULL.world)
    files = world.write(tmp_path / "world")
    base = cached_base(world, FULL.base, tmp_path / "cache", log=lambda *_: None)
    scores = {}
    for name, kw in (("general-only", dict(task_tokens=0, general_tokens=60000, general=[str(files["general"])])),
                     ("plenty-of-task", dict(ratio=0.0))):
        mix = tmp_path / name / "data"
        prepare(PrepareConfig(task=str(files["task_train"]), tokenizer=str(base), out=str(mix), progress=False, **kw))
        train(TrainConfig(mixture=str(mix), model=str(base), out=str(tmp_path / name / "run"), progress=False,
                          save_steps=0, epochs=3 if name == "plenty-of-task" else 1, **FULL.train))
        m = evaluate(EvalConfig(model=str(base), adapter=str(tmp_path / name / "run"), data=[str(files["task_test"])],
                                out=str(tmp_path / name / "eval"), greedy=True, max_new_tokens=24, progress=False,
                                bootstrap=100))
        scores[name] = {k: v["value"] for k, v in next(iter(m["sets"].values()))["metrics"].items()}
    assert scores["general-only"]["format_adherence"] < 0.05 and scores["general-only"]["accuracy"] < 0.05
    assert scores["plenty-of-task"]["format_adherence"] > 0.9 and scores["plenty-of-task"]["accuracy"] > 0.2
