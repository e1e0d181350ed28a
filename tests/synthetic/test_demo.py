"""The leverage world and `tell demo`."""

from __future__ import annotations

import json

import pytest
import yaml

from tell.cli import main
from tell.eval.metrics import score_format
from tell.synthetic.study import NOT_TESTED
from tell.synthetic.world import ANCHOR, FORMAT_REGEX, LEVERAGE, PHRASES, SKILLS, TASK_SKILLS, World, WorldConfig

SMALL = WorldConfig(n_items=8, min_len=2, max_len=4, pretrain_sentences=500, general_examples=600, task_train=40,
                    task_test=16, general_test=16)


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


def test_world_is_deterministic_per_seed(tmp_path):
    a = World(SMALL).write(tmp_path / "a")
    b = World(SMALL).write(tmp_path / "b")
    c = World(WorldConfig(**{**SMALL.__dict__, "seed": 1})).write(tmp_path / "c")
    for name in ("task_train", "task_test", "general", "placebo", "general_test", "pretrain"):
        assert a[name].read_bytes() == b[name].read_bytes()
        assert a[name].read_bytes() != c[name].read_bytes()


def test_the_base_model_is_a_function_of_the_pretraining_fields_only():
    """cached_base keys a base by WorldConfig.pretraining(): worlds that differ elsewhere (general data, task pool,
    leverage share, task prompt) must give the same pretraining text and tokenizer vocabulary, and a pretraining
    field must change them."""
    from dataclasses import replace

    a = World(SMALL)
    b = World(replace(SMALL, leverage=0.6, task_train=80, general_examples=900, task_prompt="instructed"))
    assert a.pretrain_text() == b.pretrain_text() and a.vocabulary() == b.vocabulary()
    assert a.cfg.pretraining() == b.cfg.pretraining()
    for field, value in (("seed", 1), ("max_len", 3), ("pretrain_sentences", 400)):
        c = World(replace(SMALL, **{field: value}))
        assert c.pretrain_text() != a.pretrain_text() and c.cfg.pretraining() != a.cfg.pretraining()


def test_world_task_needs_cipher_and_its_format_and_test_is_unseen():
    w = World(SMALL)
    train, test = w.task("train"), w.task("test")
    assert not {r["prompt"] for r in train} & {r["prompt"] for r in test}
    for r in train + test:
        xs = r["prompt"].split(": ", 1)[1].split()
        assert r["response"] == f"{{ result : {' '.join(w.code[x] for x in xs)} ; size : {len(xs)} }}"
        assert score_format(r["response"], FORMAT_REGEX, r["response"]) == {"format": 1.0, "correct": 1.0}
    assert all(w.code[x] != x and w.code[x] != w.table[x] for x in w.items)  # unlike copy and map
    assert len(World(WorldConfig()).task("test")) >= 256 and len(World(WorldConfig()).general_test(256)) == 256


def test_leverage_skill_is_absent_from_pretraining_and_taught_by_general_data_at_its_share():
    w = World(SMALL)
    text = w.pretrain_text()
    wordings = [p for p in PHRASES[LEVERAGE]]
    assert not any(p in line for line in text for p in wordings) and not any(LEVERAGE in line for line in text)
    # every "SKILL xs gives ys" sentence states a pretraining skill, and none states the cipher's pairs
    for line in text:
        words = line.split()
        if "gives" in words and not line.startswith(("###", "the word")):
            skill, rest = words[0], words[1:-1]
            i = rest.index("gives")
            xs, ys = rest[:i], rest[i + 1:]
            assert skill in SKILLS and ys == w.apply(skill, xs)
    general = World(WorldConfig(**{**SMALL.__dict__, "general_examples": 3000})).general()
    share = sum(r["skill"] == LEVERAGE for r in general) / len(general)
    assert abs(share - 0.2) < 0.03
    assert {r["prompt"].split(":")[0] for r in general if r["skill"] == LEVERAGE} == set(wordings)  # varied wording
    assert all(r["response"].split() == w.apply(LEVERAGE, r["prompt"].split(": ", 1)[1].split())
               for r in general if r["skill"] == LEVERAGE)
    none = World(WorldConfig(**{**SMALL.__dict__, "leverage": 0.0})).general()
    assert not any(r["skill"] == LEVERAGE for r in none)


def test_placebo_has_the_general_token_count_and_none_of_the_tasks_skills(tmp_path):
    from tell.data.tokens import load_counter
    from tell.synthetic.pretrain import build_tokenizer

    w = World(SMALL)
    general, placebo = w.general(), w.placebo()
    assert not any(r["skill"] in TASK_SKILLS for r in placebo) and any(r["skill"] in TASK_SKILLS for r in general)
    tok_dir = tmp_path / "tok"
    build_tokenizer(w).save_pretrained(tok_dir)
    counter = load_counter(str(tok_dir))
    count = lambda rows: sum(counter.count([r["prompt"] + "\n" + r["response"] for r in rows]))  # noqa: E731
    assert count(general) == count(placebo)
    for g, p in zip(general, placebo):  # example by example: same list, as many prompt and answer tokens
        assert g["prompt"].split(": ")[1] == p["prompt"].split(": ")[1]
        assert len(g["prompt"].split()) == len(p["prompt"].split())
        assert len(g["response"].split()) == len(p["response"].split())
        assert p["response"].split() == w.apply(p["skill"], p["prompt"].split(": ", 1)[1].split())
    assert placebo == w.placebo()  # seeded


@pytest.mark.parametrize("out, fmt, ok", [
    ("{ result : ka lo ; size : 2 }", 1, 1), ("{  result : ka lo ;\\nsize : 2 }".replace("\\n", "\n"), 1, 1),
    ("{ result : lo ka ; size : 2 }", 1, 0), ("result : ka lo ; size : 2", 0, 0), ("{ result : ; size : 2 }", 0, 0),
])
def test_format_metric(out, fmt, ok):
    assert score_format(out, FORMAT_REGEX, "{ result : ka lo ; size : 2 }") == {"format": float(fmt), "correct": float(ok)}


def test_demo_quick_runs_writes_its_findings_and_is_deterministic(tmp_path, capsys):
    assert main(["demo", "--quick", "--out", str(tmp_path / "demo"), "--cache", str(tmp_path / "cache")]) == 0
    cap = capsys.readouterr()
    out = cap.out
    # a quiet console: sft's few steps are said once in the report, not once per cell; no shard-writing bar
    assert "optimizer step(s)" not in cap.err and "Writing model shards" not in cap.err, cap.err[-2000:]
    assert "controls (small base): " in out and "Findings:" in out
    sweep = tmp_path / "demo" / "sweep"
    rows = [json.loads(x) for x in (sweep / "results.jsonl").read_text().splitlines()]
    assert {r["method"] for r in rows} == {"base", "sft", "sft-matched", "general-only", "tell", "tell-no-anchor",
                                           "tell-placebo", "tell-random-anchor"}
    assert {r["metric"] for r in rows} == {"format_adherence", "accuracy"}
    assert {r["role"] for r in rows} == {"task", "general"}  # the general-skill test runs in every cell
    # the no-anchor twin runs at every ratio (450 and 1,500 general tokens at 150), the other controls at the largest
    assert {r["ratio"] for r in rows if r["method"] == "tell-no-anchor"} == {3.0, 10.0}
    (given,) = {r["general_tokens"] for r in rows if r["method"] == "tell" and r["ratio"] == 10.0}
    assert abs(given - 1500) < 60  # the amount asked for, to within an example
    assert {r["ratio"] for r in rows if r["method"] == "tell-placebo"} == {10.0}
    assert (sweep / "report.md").is_file() and (sweep / "report.html").is_file()
    # Equal examples: every method's mixture at the budget holds the same task examples (seed 0); the anchor's
    # tokens are recorded beside the budget; the random anchor is as many tokens as the real one.
    mixes = [json.loads(m.read_text()) for m in (sweep / "mixtures").glob("*/manifest.json")]
    task_ids = {json.dumps(sorted(json.loads(x)["id"] for x in (m.parent / "mixture.jsonl").read_text().splitlines()
                                  if json.loads(x)["source"] == "task"))
                for m in (sweep / "mixtures").glob("*/manifest.json")
                if json.loads(m.read_text())["budget"]["task_tokens_requested"]}
    assert len(task_ids) == 1
    anchors = {m["anchor"]["text"] for m in mixes if m["anchor"]}
    assert len(anchors) == 2 and ANCHOR in anchors
    (random_anchor,) = anchors - {ANCHOR}
    assert len(random_anchor.split()) == len(ANCHOR.split()) and not set(random_anchor.split()) & set(ANCHOR.split())
    assert all(m["budget"]["anchor_tokens"] == 3 * m["budget"]["task_examples"] for m in mixes if m["anchor"])
    study = json.loads((tmp_path / "demo" / "study.json").read_text())
    small = study["sizes"]["small"]
    assert set(small) == {"controls", "reach", "H1", "H2", "H3", "H4a", "H4b", "H5", "H6", "H8a", "H8b"}
    assert small["reach"]["study_budget"] and "design check (small: " in out
    assert [c["id"] for c in small["controls"]] == ["C1", "C2", "C3", "C4", "C5"]
    # the controls are the sweep's own declared ones: its report judges them too, with the same values
    spec_controls = yaml.safe_load((tmp_path / "demo" / "spec.yaml").read_text())["controls"]
    assert [c["id"] for c in spec_controls] == ["C1", "C2", "C3", "C4", "C5"]
    reported = {c["id"]: c["value"] for c in json.loads((sweep / "controls.json").read_text())}
    assert reported == {c["id"]: c["value"] for c in small["controls"]}
    # the quick world is too small to pass its controls; whatever they say, one seed supports or refutes nothing
    verdicts = {h: f["verdict"] for h, f in small.items() if h not in ("controls", "reach")}
    assert all(v in ("not judged", NOT_TESTED) or v.startswith("inconclusive") for v in verdicts.values()), verdicts
    if not all(c["passed"] for c in small["controls"]):
        assert set(verdicts.values()) == {"not judged", NOT_TESTED} and "FAILED" in out
    assert verdicts["H5"] == NOT_TESTED  # two general amounts planned: the plan says so, whatever the controls
    md = (tmp_path / "demo" / "study.md").read_text()
    assert "model.safetensors sha256" in md and "| H3:" in md
    # The pretrained base is an ordinary HF model dir, cached, copied to the demo folder and reused next time.
    (base,) = list((tmp_path / "cache").glob("base-*"))
    assert (base / "config.json").is_file() and (base / "tokenizer.json").is_file()
    assert (tmp_path / "demo" / "base" / "model.safetensors").read_bytes() == (base / "model.safetensors").read_bytes()
    # The cached base is reused, and a fresh sweep of the demo's own spec gives the same numbers: one trained
    # cell (tell at the largest ratio, at each learning rate) and the base, rerun into a new folder.
    from tell.synthetic.demo import PLANS, cached_base

    msgs = []
    quick = PLANS["quick"]
    assert cached_base(World(quick.world), quick.bases["small"], tmp_path / "cache", log=msgs.append) == base
    assert any("using the cached base model" in m for m in msgs)

    spec = yaml.safe_load((tmp_path / "demo" / "spec.yaml").read_text()) | {
        "methods": ["base", "tell"], "general_tokens": [1500], "sft_ladder": [], "controls": []}
    (tmp_path / "again.yaml").write_text(yaml.safe_dump(spec))
    assert main(["sweep", str(tmp_path / "again.yaml"), "--out", str(tmp_path / "again")]) == 0
    capsys.readouterr()
    values = lambda d, keep: sorted((r["method"], r["ratio"], r["lr"], r["set"].split("/")[-1], r["metric"],  # noqa
                                     r["value"]) for r in (json.loads(x) for x in (d / "results.jsonl")
                                                           .read_text().splitlines()) if keep(r))
    rerun = values(tmp_path / "again", lambda r: True)
    assert {m for m, *_ in rerun} == {"base", "tell"}
    assert len({lr for m, _, lr, *_ in rerun if m == "tell"}) == len(quick.lr_grid)
    assert values(sweep, lambda r: r["method"] == "base" or (r["method"] == "tell" and r["ratio"] == 10.0)) == rerun
    _cpu_example_spec_runs_on_the_demo_world(tmp_path, capsys)


@pytest.mark.slow
def test_task_is_unsolved_by_general_data_alone_and_solved_by_plenty_of_task_data(tmp_path):
    """The world's claim, on the study's small base: general data alone (which teach the cipher) do not solve
    the task; plenty of task data (the whole pool, 3 epochs) do."""
    from tell.eval.config import EvalConfig
    from tell.eval.run import evaluate
    from tell.prepare import PrepareConfig, prepare
    from tell.synthetic.demo import STUDY, cached_base
    from tell.train.config import TrainConfig
    from tell.train.run import train

    world = World(STUDY.world)
    files = world.write(tmp_path / "world")
    base = cached_base(world, STUDY.bases["small"], tmp_path / "cache", log=lambda *_: None)
    scores = {}
    for name, kw in (("general-only", dict(task_tokens=0, general_tokens=60000, general=[str(files["general"])])),
                     ("plenty-of-task", dict(ratio=0.0))):
        mix = tmp_path / name / "data"
        prepare(PrepareConfig(task=str(files["task_train"]), tokenizer=str(base), out=str(mix), progress=False, **kw))
        train(TrainConfig(mixture=str(mix), model=str(base), out=str(tmp_path / name / "run"), progress=False,
                          save_steps=0, epochs=3 if name == "plenty-of-task" else 1, learning_rate=3e-3, **STUDY.train))
        m = evaluate(EvalConfig(model=str(base), adapter=str(tmp_path / name / "run"), data=[str(files["task_test"])],
                                out=str(tmp_path / name / "eval"), greedy=True, max_new_tokens=24, progress=False,
                                bootstrap=100, limit=128))
        scores[name] = {k: v["value"] for k, v in next(iter(m["sets"].values()))["metrics"].items()}
    assert scores["general-only"]["format_adherence"] < 0.05 and scores["general-only"]["accuracy"] < 0.05
    assert scores["plenty-of-task"]["format_adherence"] > 0.9 and scores["plenty-of-task"]["accuracy"] > 0.2


@pytest.mark.parametrize("flag", ["--out", "--cache"])
def test_demo_into_a_file_is_refused_in_one_line(tmp_path, capsys, flag):
    from tell.cli import main

    f = tmp_path / "taken.txt"
    f.write_text("mine\n")
    argv = ["demo", "--quick", "--out", str(tmp_path / "d"), flag, str(f)] if flag == "--cache" else \
        ["demo", "--quick", "--out", str(f)]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and str(f) in err[0] and "is a file" in err[0]
    assert f.read_text() == "mine\n" and not (tmp_path / "d").exists()


def test_the_shipped_base_is_the_demo_plans_and_its_checksum_is_checked():
    """(issue 37 item 8) `tell demo` runs on a base shipped with tell, so every machine runs the same one: it is
    the base the demo's and the study's plan ask for (their world's pretraining fields, SMALL), and its
    model.safetensors has the sha256 its shipped.json records, with the command and commit that made it."""
    from dataclasses import asdict

    from tell.io import sha256_file
    from tell.synthetic.demo import MADE_BY, PLANS, SMALL, base_key, shipped_base

    for name in ("demo", "study"):
        plan = PLANS[name]
        assert plan.bases["small"] == SMALL
        path = shipped_base(base_key(World(plan.world), SMALL))
        assert path is not None, name
    made = json.loads((path / MADE_BY).read_text())
    assert made["sha256"] == sha256_file(path / "model.safetensors") and made["command"] and made["commit"]
    world = json.loads((path / "tell_world.json").read_text())
    assert world["pretraining"] == asdict(SMALL) and world["world"] == World(PLANS["demo"].world).cfg.pretraining()
    assert shipped_base(base_key(World(PLANS["quick"].world), PLANS["quick"].bases["small"])) is None


def test_a_shipped_base_is_copied_into_the_cache_and_a_damaged_one_refused(tmp_path):
    from tell.errors import TellError
    from tell.io import sha256_file
    from tell.synthetic.demo import MADE_BY, PLANS, base_key, cached_base

    quick = PLANS["quick"]
    world, cfg = World(quick.world), quick.bases["small"]
    ship = tmp_path / "bases" / f"base-{base_key(world, cfg)}"
    ship.mkdir(parents=True)
    (ship / "model.safetensors").write_bytes(b"weights")
    (ship / "tell_world.json").write_text("{}")
    (ship / MADE_BY).write_text(json.dumps({"sha256": sha256_file(ship / "model.safetensors"), "command": "c",
                                            "commit": "x"}))
    msgs = []
    got = cached_base(world, cfg, tmp_path / "cache", log=msgs.append, shipped=tmp_path / "bases")
    assert got.parent == tmp_path / "cache" and (got / "model.safetensors").read_bytes() == b"weights"
    assert any("shipped with tell" in m for m in msgs) and not any("pretraining" in m for m in msgs)
    # a base cached earlier that is not the shipped one (pretrained here, or a half-finished copy) is replaced
    (got / "model.safetensors").write_bytes(b"pretrained here")
    (got / MADE_BY).unlink()
    again = cached_base(world, cfg, tmp_path / "cache", log=msgs.append, shipped=tmp_path / "bases")
    assert again == got and (got / "model.safetensors").read_bytes() == b"weights" and (got / MADE_BY).is_file()
    msgs.clear()
    cached_base(world, cfg, tmp_path / "cache", log=msgs.append, shipped=tmp_path / "bases")
    assert any("using the cached base model" in m and "shipped with tell" in m for m in msgs)  # now reused
    (ship / "model.safetensors").write_bytes(b"tampered")
    with pytest.raises(TellError, match="sha256"):
        cached_base(world, cfg, tmp_path / "cache2", log=msgs.append, shipped=tmp_path / "bases")
    assert not (tmp_path / "cache2" / got.name).exists()  # nothing half-copied
    for broken in ("{not json", json.dumps({"command": "c"})):  # unreadable, or no sha256: one line, not a traceback
        (ship / MADE_BY).write_text(broken)
        with pytest.raises(TellError, match="cannot be read.*--pretrain-base"):
            cached_base(world, cfg, tmp_path / "cache3", log=msgs.append, shipped=tmp_path / "bases")


def test_pretrain_base_keeps_its_own_cache_beside_the_shipped_one(tmp_path, monkeypatch):
    """`--pretrain-base` (shipped=None) pretrains into base-KEY-local when a base is shipped for the key, so a
    later plain `tell demo` still gets the shipped base and a later --pretrain-base its own."""
    import tell.synthetic.demo as demo
    from tell.synthetic.demo import DEMO, SMALL, base_key

    made = []

    def fake_pretrain(world, path, cfg, log=print):
        path.mkdir(parents=True)
        (path / "tell_world.json").write_text("{}")
        (path / "model.safetensors").write_bytes(b"local")
        made.append(path)
        return path

    monkeypatch.setattr(demo, "pretrain", fake_pretrain)
    world = World(DEMO.world)
    mine = demo.cached_base(world, SMALL, tmp_path, log=lambda m: None, shipped=None)
    assert mine.name == f"base-{base_key(world, SMALL)}-local" and made == [mine]
    shipped = demo.cached_base(world, SMALL, tmp_path, log=lambda m: None)
    assert shipped.name == f"base-{base_key(world, SMALL)}" and (shipped / demo.MADE_BY).is_file()
    assert demo.cached_base(world, SMALL, tmp_path, log=lambda m: None, shipped=None) == mine and len(made) == 1
