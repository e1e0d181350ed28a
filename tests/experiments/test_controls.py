"""Declared positive controls and the floor/ceiling rule of a sweep's report (tell.experiments.controls), on
planted results: a failed control stops every verdict, a floor or a ceiling decides nothing."""

from __future__ import annotations

import json

import numpy as np
import pytest
import yaml

from experiments.test_report import N, cell, md_table, report, section, write_sweep
from tell.errors import TellError
from tell.experiments.config import SweepSpec

SPEC = {"model": "m", "seeds": [0, 1, 2]}
LEARNT = {"id": "C1", "claim": "the task is learnable", "method": "sft-matched", "set": "tsk", "at_least": 0.2,
          "over": "base"}
HEALTHY = {"id": "C2", "claim": "the runs are healthy", "healthy": True}


def share(p):
    return (np.arange(N) < round(p * N)).astype(float)


def world(base=0.0, matched=0.6, tell=0.8, sft=0.1, **kw):
    seeds = range(3)
    return ([cell("base", None, None, s, share(base)) for s in seeds]
            + [cell("sft", 1000, 0, s, share(sft)) for s in seeds]
            + [cell("sft-matched", 1000, 1.0, s, share(matched), **kw) for s in seeds]
            + [cell("tell", 1000, 1.0, s, share(tell)) for s in seeds])


def test_passing_controls_leave_verdicts_and_are_listed_with_their_values(tmp_path):
    md, fj = report(write_sweep(tmp_path / "sw", world(), spec=SPEC | {"controls": [LEARNT, HEALTHY]}))
    rows = md_table(section(md, "## Controls"), "control")
    assert [r[0] for r in rows] == ["C1", "C2"] and [r[-1] for r in rows] == ["yes", "yes"]
    assert float(rows[0][4]) == pytest.approx(0.6)  # sft-matched 0.6 - base 0.0
    assert "All controls passed" in md
    assert {f["comparison"]: f["verdict"] for f in fj}["tell vs sft"] == "better"
    saved = json.loads((tmp_path / "sw" / "controls.json").read_text())
    assert [c["passed"] for c in saved] == [True, True]


def test_a_failed_control_judges_nothing_but_keeps_the_numbers(tmp_path):
    # sft-matched learns only 0.1 over the base: below the declared 0.2, so tell's clear win is not judged
    md, fj = report(write_sweep(tmp_path / "sw", world(base=0.1, matched=0.2),
                                spec=SPEC | {"controls": [LEARNT, HEALTHY]}))
    assert [r[-1] for r in md_table(section(md, "## Controls"), "control")] == ["NO", "yes"]
    assert "Control(s) C1 failed: no comparison is judged" in md
    assert fj and all(f["verdict"] == "not judged (control C1 failed)" for f in fj)
    f = next(f for f in fj if f["comparison"] == "tell vs sft")
    assert f["diff"] == pytest.approx(0.7) and f["ci95"][0] > 0  # the numbers stay


def test_an_unhealthy_selected_cell_fails_the_health_control(tmp_path):
    cells = world(health="unstable", reason="loss rose")
    md, fj = report(write_sweep(tmp_path / "sw", cells, spec=SPEC | {"controls": [HEALTHY]}))
    (row,) = md_table(section(md, "## Controls"), "control")
    assert row[-1] == "NO" and "3 failed or unstable" in row[3]
    assert all(f["verdict"].startswith("not judged") for f in fj)


def test_a_failed_cell_fails_the_health_control_even_when_no_selected_cell_is_unhealthy(tmp_path):
    """A method whose every lr candidate failed has no selected cell: the failure must still count (it did not
    once, and a calibration whose cells all failed to import read as healthy)."""
    sw = write_sweep(tmp_path / "sw", world(), spec=SPEC | {"controls": [HEALTHY]})
    failed = {"method": "sft", "task_tokens": 2000, "general_tokens": 0, "ratio": 0.0, "seed": 0, "lr": 1e-3,
              "selected": False, "health": "failed", "health_reason": "ImportError: no module", "set": None,
              "role": None, "metric": None, "value": None, "cell": "sft-2000-failed", "run_dir": "cells/x"}
    with open(sw / "results.jsonl", "a") as f:
        f.write(json.dumps(failed) + "\n")
    md, fj = report(sw)
    (row,) = md_table(section(md, "## Controls"), "control")
    assert row[-1] == "NO" and "sft-2000-failed" in row[3]
    assert all(f["verdict"].startswith("not judged") for f in fj)


def test_a_failed_lr_candidate_with_a_healthy_sibling_does_not_fail_the_health_control(tmp_path):
    """Issue 37, item 4: C5 counts the cells the lr rule could select. A failed candidate whose sibling (same
    method, budget, ratio, seed; another lr) is healthy is listed in run health but passes the control; the same
    failure with no healthy sibling (its only lr) still fails it."""
    def failed_at(lr, budget):
        return {"method": "sft-matched", "task_tokens": budget, "task_tokens_requested": budget,
                "general_tokens": 0, "ratio": 1.0, "seed": 0, "lr": lr, "selected": False, "health": "failed",
                "health_reason": "loss diverged", "set": None, "role": None, "metric": None, "value": None,
                "cell": f"sft-matched-{budget}-{lr}", "run_dir": "cells/x"}

    sw = write_sweep(tmp_path / "sw", world(), spec=SPEC | {"controls": [HEALTHY]})
    with open(sw / "results.jsonl", "a") as f:
        f.write(json.dumps(failed_at(3e-3, 1000)) + "\n")
    md, fj = report(sw)
    (row,) = md_table(section(md, "## Controls"), "control")
    assert row[-1] == "yes" and "0 failed or unstable" in row[3]
    assert "| sft-matched | 1,000 | 1 | 0 | 0.003 | no | failed | loss diverged |" in md  # still in run health
    assert not any(f["verdict"].startswith("not judged") for f in fj)
    with open(sw / "results.jsonl", "a") as f:  # seed 0 at a budget where no candidate is healthy
        f.write(json.dumps(failed_at(3e-3, 2000)) + "\n")
    md, fj = report(sw)
    (row,) = md_table(section(md, "## Controls"), "control")
    assert row[-1] == "NO" and "sft-matched-2000-0.003" in row[3] and "sft-matched-1000-0.003" not in row[3]


def test_a_control_on_a_missing_method_or_set_does_not_pass(tmp_path):
    ghost = LEARNT | {"set": "nowhere"}
    md, fj = report(write_sweep(tmp_path / "sw", world(), spec=SPEC | {"controls": [ghost]}))
    (row,) = md_table(section(md, "## Controls"), "control")
    assert row[-1] == "NO" and "no eval set 'nowhere'" in row[3]


def test_floor_and_ceiling_make_a_comparison_inconclusive_whatever_its_interval(tmp_path):
    # tell 0.175 vs sft 0.0: the interval excludes 0, but both arms sit below the declared floor
    md, fj = report(write_sweep(tmp_path / "lo", world(tell=0.175, sft=0.0), spec=SPEC | {"floor": 0.2}))
    f = next(f for f in fj if f["comparison"] == "tell vs sft")
    assert f["ci95"][0] > 0 and f["verdict"] == "inconclusive (floor)"
    assert "Declared floor 0.2" in section(md, "## Controls")
    # without the floor the same numbers are "better": the rule, not the data, changed the verdict
    _, fj2 = report(write_sweep(tmp_path / "nofloor", world(tell=0.175, sft=0.0), spec=SPEC))
    assert next(f for f in fj2 if f["comparison"] == "tell vs sft")["verdict"] == "better"
    _, fj3 = report(write_sweep(tmp_path / "hi", world(tell=1.0, sft=0.975, matched=0.975),
                                spec=SPEC | {"ceiling": 0.95}))
    assert next(f for f in fj3 if f["comparison"] == "tell vs sft")["verdict"] == "inconclusive (ceiling)"
    # one arm inside the scale: judged as usual
    _, fj4 = report(write_sweep(tmp_path / "mid", world(tell=0.5, sft=0.0), spec=SPEC | {"floor": 0.05}))
    assert next(f for f in fj4 if f["comparison"] == "tell vs sft")["verdict"] == "better"


def test_a_controls_set_or_metric_the_sweep_cannot_give_is_refused_when_the_spec_is_read(tmp_path):
    """Not after every cell trained (issue 40 item 6): a set named by its file's stem, a typo in a metric."""
    from tell.cli import main

    sets = {"eval": ["halu-cot-json"], "general_eval": ["data/gsm8k-test-32.jsonl"]}
    ok = {"id": "C1", "claim": "x", "method": "sft", "set": "gsm8k-test-32.jsonl", "metric": "accuracy",
          "at_least": 0.1}
    SweepSpec(model="m", task="t", task_tokens=[10], methods=["base", "sft"], controls=[ok], **sets)
    for bad, said in (({"set": "gsm8k-test-32"}, "'gsm8k-test-32' is not one of the sweep's eval sets"),
                      ({"set": "halu"}, "expected one of \\['halu-cot-json'"),
                      ({"metric": "json_stirct"}, "metric 'json_stirct' is no metric")):
        with pytest.raises(TellError, match=said):
            SweepSpec(model="m", task="t", task_tokens=[10], methods=["base", "sft"], controls=[ok | bad], **sets)
    # and the CLI's --dry-run refuses it in one line, exit 2, before planning anything
    spec = tmp_path / "s.yaml"
    spec.write_text(yaml.safe_dump({"model": "m", "task": "t.jsonl", "task_tokens": [10], "methods": ["base", "sft"],
                                    "controls": [ok | {"set": "gsm8k-test-32"}], **sets}))
    assert main(["sweep", str(spec), "--out", str(tmp_path / "o"), "--dry-run"]) == 2
    assert not (tmp_path / "o").exists()


def test_a_control_may_list_methods_and_holds_for_each(tmp_path):
    """(issue 37 item 9) "the task is not free": base and sft (each) at most 0.15. The value shown is the one
    nearest to failing (the largest under at_most, the smallest under at_least), so one method over the bound
    fails it."""
    free = {"id": "C4", "claim": "the task is not free", "method": ["base", "sft"], "set": "tsk", "at_most": 0.15}
    md, _ = report(write_sweep(tmp_path / "ok", world(base=0.0, sft=0.1), spec=SPEC | {"controls": [free]}))
    (row,) = md_table(section(md, "## Controls"), "control")
    assert row[-1] == "yes" and float(row[4]) == pytest.approx(0.1) and "base, sft (each)" in row[2]
    md, fj = report(write_sweep(tmp_path / "no", world(base=0.3, sft=0.1), spec=SPEC | {"controls": [free]}))
    (row,) = md_table(section(md, "## Controls"), "control")
    assert row[-1] == "NO" and float(row[4]) == pytest.approx(0.3)
    assert fj and all(f["verdict"].startswith("not judged") for f in fj)
    learnt = free | {"method": ["sft-matched", "tell"], "at_least": 0.7}
    learnt.pop("at_most")
    md, _ = report(write_sweep(tmp_path / "least", world(matched=0.6, tell=0.8), spec=SPEC | {"controls": [learnt]}))
    (row,) = md_table(section(md, "## Controls"), "control")
    assert row[-1] == "NO" and float(row[4]) == pytest.approx(0.6)  # the smaller one decides


@pytest.mark.parametrize("controls, expected", [
    ({"id": "C1"}, "controls"),
    ([{"id": "C1", "claim": "x", "method": [], "set": "t", "at_most": 0.1}], "at least one method"),
    ([{"id": "C1", "claim": "x", "method": ["sft", "base"], "set": "t", "at_most": 0.1, "over": "base"}],
     "takes no over"),
    ([{"id": "C1", "claim": "x", "method": ["sft", "tell"], "set": "t", "at_most": 0.1}],
     "'tell' is not one of the sweep's methods"),
    ([{"id": "C1", "claim": "x", "method": "sft", "set": "t"}], "exactly one of at_least / at_most"),
    ([{"id": "C1", "claim": "x", "method": "tell", "set": "t", "at_least": 0.1}], "not one of the sweep's methods"),
    ([{"id": "C1", "claim": "x", "method": "sft", "set": "t", "at_least": 0.1, "bogus": 1}], "unknown key"),
    ([{"id": "C1", "claim": "x", "healthy": True}, {"id": "C1", "claim": "y", "healthy": True}], "more than once"),
])
def test_malformed_controls_are_refused_by_field(controls, expected):
    with pytest.raises(TellError, match=expected):
        SweepSpec(model="m", task="t", task_tokens=[10], methods=["base", "sft"], eval=["x"], controls=controls)
    with pytest.raises(TellError, match="floor"):
        SweepSpec(model="m", methods=["base"], eval=["x"], floor=0.9, ceiling=0.1)
