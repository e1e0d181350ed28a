"""`tell.experiments.cell` and the spec it is resolved from: keys, typed configs, time of resumed parts."""

from __future__ import annotations

import os
import time

import pytest


def test_a_resumed_cell_counts_the_time_of_every_part(tmp_path):
    from tell.experiments.cell import CellDir, earlier_parts_s
    from tell.io import write_json

    cd = CellDir(tmp_path / "cells", "tell-abc")
    cd.run.path.mkdir(parents=True)
    assert earlier_parts_s(cd) == 0.0
    start = time.time() - 100
    write_json(cd.status_path, {"cell": cd.key, "status": "todo", "wall_s": 5.0, "started": start})
    log = cd.run.path / "train_log.jsonl"
    log.write_text("{}\n")
    os.utime(log, (start + 30, start + 30))  # the killed part's last write
    (cd.path / "claim.json").write_text("{}")  # files outside run/ and eval/ (written now) do not count
    assert earlier_parts_s(cd) == pytest.approx(35.0, abs=0.01)
    write_json(cd.status_path, {"cell": cd.key, "status": "failed", "wall_s": 42.0})
    assert earlier_parts_s(cd) == 42.0
    write_json(cd.status_path, {"cell": cd.key, "status": "done", "wall_s": 42.0})
    assert earlier_parts_s(cd) == 42.0  # done, but its metrics are missing: it is redone, and its time counts
    write_json(cd.run.metrics_path, {"steps": 1})
    write_json(cd.eval.metrics_path, {"sets": {}})
    assert cd.status()["status"] == "done" and earlier_parts_s(cd) == 0.0  # a complete cell redone: from 0


def test_cell_keys_are_those_of_tell_0_2_so_finished_sweeps_are_not_redone(tmp_path):
    """Keys (and mixture keys) of every method, computed by the Cell class of commit 9cfe0b8 for this spec: a
    change to what a key hashes would make every existing sweep folder redo its cells."""
    from tell.experiments.cell import Cell
    from tell.experiments.config import SweepSpec

    spec = SweepSpec(model="/m/base", task="/d/task.jsonl", general=["/d/general.jsonl"],
                     placebo_general=["/d/placebo.jsonl"], anchor="Answer in JSON.", random_anchor="zq xv",
                     eval=["e.jsonl"], general_eval=["g.jsonl"], task_tokens=[500], ratios=[4.0], seeds=[1],
                     methods=["base", "sft", "sft-matched", "general-only", "tell", "tell-no-anchor", "tell-placebo",
                              "tell-random-anchor"], lr_grid={"default": [1e-3, 3e-3]}, train={"batch_size": 8})
    pair = {"pair": "tell@500/4/1"}
    plans = [("base", {}, "base-c56781e9aa", "mix-a13a91fbc6"),
             ("sft", {"task_tokens": 500, "ratio": 0.0, "lr": 1e-3}, "sft-89ff918811", "mix-e8fd78688c"),
             ("sft-matched", {"task_tokens": 500, "ratio": 4.0, "max_steps": 7, "lr": 1e-3, **pair},
              "sft-matched-1a0e47f4b8", "mix-e8fd78688c"),
             ("general-only", {"ratio": 4.0, "general_tokens": 2000, "extra": {"task_tokens_requested": 500},
                               "lr": 3e-3, **pair}, "general-only-ac7f87bab3", "mix-8a4653d99b"),
             ("tell", {"task_tokens": 500, "ratio": 4.0, "lr": 1e-3}, "tell-26d97106cb", "mix-a1ca445f94"),
             ("tell-no-anchor", {"task_tokens": 500, "ratio": 4.0, "lr": 1e-3, **pair}, "tell-no-anchor-0e2198770a",
              "mix-bbe07e9efe"),
             ("tell-placebo", {"task_tokens": 500, "ratio": 4.0, "lr": 1e-3, **pair}, "tell-placebo-71a2d86641",
              "mix-72814a9a03"),
             ("tell-random-anchor", {"task_tokens": 500, "ratio": 4.0, "lr": 1e-3, **pair},
              "tell-random-anchor-76770ced78", "mix-b4038b20c9")]
    for method, plan, key, data_key in plans:
        cell = Cell.make(spec, tmp_path / "a", method, 1, **plan)
        assert (cell.key, cell.data_key) == (key, data_key), method
        assert Cell.make(spec, tmp_path / "elsewhere", method, 1, **plan).key == key  # not on where the folder is
        assert cell.dir.path == tmp_path / "a" / "cells" / key
    # what each cell is resolved into: typed configs read from the spec once
    sft = Cell.make(spec, tmp_path, "sft-matched", 1, task_tokens=500, ratio=4.0, max_steps=7, lr=1e-3)
    assert sft.train.batch_size == 8 and sft.train.max_steps == 7 and sft.train.learning_rate == 1e-3
    assert sft.prepare.general == [] and sft.prepare.ratio == 0.0 and sft.prepare.no_anchor
    assert sft.eval.adapter == str(sft.dir.run.path) and sft.eval.no_anchor
    tell = Cell.make(spec, tmp_path, "tell", 1, task_tokens=500, ratio=4.0, lr=1e-3)
    assert tell.prepare.anchor == "Answer in JSON." and not tell.eval.no_anchor and tell.validation is not None
    rnd = Cell.make(spec, tmp_path, "tell-random-anchor", 1, task_tokens=500, ratio=4.0, lr=1e-3)
    placebo = Cell.make(spec, tmp_path, "tell-placebo", 1, task_tokens=500, ratio=4.0, lr=1e-3)
    assert rnd.prepare.anchor == "zq xv" and placebo.prepare.general == ["/d/placebo.jsonl"]
    base = Cell.make(spec, tmp_path, "base", 1)
    assert base.train is None and base.prepare is None and base.eval.adapter is None


def test_a_spec_refuses_what_a_sweep_cannot_run_naming_the_field():
    from tell.errors import TellError
    from tell.experiments.config import SweepSpec

    ok = dict(model="m", task="t.jsonl", general=["g.jsonl"], anchor="a", eval=["e.jsonl"], task_tokens=[100],
              ratios=[1.0])
    assert SweepSpec(**ok).lr_grid == {m: [1e-4] for m in ("sft", "sft-matched", "general-only", "tell",
                                                          "tell-no-anchor")}
    for bad, field in ((dict(seeds=[1, 1]), "seeds"), (dict(ratios=[1.0, 1.0]), "ratios"),
                       (dict(anchor=None), "anchor"), (dict(methods=["tell-placebo"]), "placebo_general"),
                       (dict(train={"batch_size": 0}), "batch_size"), (dict(decoding={"nope": 1}), "decoding.nope"),
                       (dict(lr_grid={"tell": [-1]}), "lr_grid"), (dict(eval=[]), "eval")):
        with pytest.raises(TellError, match=f"field '{field}'"):
            SweepSpec(**(ok | bad))
