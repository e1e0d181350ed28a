"""`tell.synthetic.study` and `controls` on planted sweep folders whose answers are known: controls first, a floor
or a ceiling decides nothing, H8a and H8b from the SFT ladder (a floor a bound where the ladder makes it one), and
what the plan cannot test says so."""

from __future__ import annotations

import json

import numpy as np

from tell.experiments.evidence import load_sweep
from tell.synthetic.controls import check_controls
import pytest

from tell.errors import TellError
from tell.synthetic.study import CEILING, FLOOR, NOT_TESTED, judge, rejudge, study_findings, write_study

N = 50  # items per test set
BUDGET, RATIO = 150, 330.0


def scores(mean: float) -> list[float]:
    k = round(mean * N)
    return [1.0] * k + [0.0] * (N - k)


def write(folder, cells, spec=None):
    """cells: (method, budget, ratio, {set stem: accuracy}, health); 3 seeds each, the same items per seed; `spec`
    the sweep's spec.yaml (what the study reads of the plan), none when not given."""
    folder.mkdir(parents=True)
    if spec is not None:
        (folder / "spec.yaml").write_text(json.dumps(spec))
    rows, lines = [], []
    for method, budget, ratio, by_set, health in cells:
        for seed in (0, 1, 2):
            key = f"{method}-{budget}-{ratio}-{seed}"
            for stem, acc in by_set.items():
                role = "task" if stem == "task_test" else "general"
                meta = {"role": role, "lr": None if method == "base" else 1e-3, "selected": True,
                        "health": None if method == "base" else health, "health_reason": "", "cell": key}
                rows.append({"method": method, "task_tokens": budget or 0, "general_tokens": int((budget or 0) * ratio),
                             "ratio": None if method == "base" else ratio, "seed": seed, "set": f"/w/{stem}.jsonl",
                             "metric": "accuracy", "value": acc, "ci_low": acc, "ci_high": acc,
                             "task_tokens_requested": budget, "higher_is_better": True, **meta})
                lines.append({"cell": key, "method": method, "task_tokens_requested": budget,
                              "ratio": None if method == "base" else ratio, "seed": seed, "set": f"/w/{stem}.jsonl",
                              "metric": "accuracy", **meta, "ids": list(range(N)), "values": scores(acc)})
    (folder / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (folder / "item_scores.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    return folder


def world(task: dict, *, base_general=0.9, cipher=0.9, ladder=(0.0, 0.1, 0.3, 0.6, 0.8), unstable=False):
    """A sweep in which the controls pass unless told otherwise; `task`: method -> task accuracy at the budget."""
    g = {"general_test": 0.9}
    cells = [("base", None, 0.0, {"task_test": 0.0, "general_test": base_general, "cipher_test": 0.0}, None),
             ("general-only", None, RATIO, {"task_test": 0.0, "general_test": 0.9, "cipher_test": cipher}, "ok")]
    for b, acc in zip((BUDGET, 300, 600, 1200, 2400), ladder):
        cells.append(("sft", b, 0.0, {"task_test": task.get("sft", acc) if b == BUDGET else acc, **g}, "ok"))
    for m, acc in task.items():
        if m != "sft":
            cells.append((m, BUDGET, RATIO, {"task_test": acc, **g}, "unstable" if unstable and m == "tell" else "ok"))
    return cells


def test_a_floor_or_a_ceiling_is_inconclusive_never_contradicted():
    floor = {"ci95": [-0.01, 0.01], "seeds": 5, "a_value": 0.0, "b_value": 0.0}
    assert judge(floor)[0] == "inconclusive (floor)"
    assert judge(floor | {"a_value": FLOOR + 0.01})[0] == "contradicted"  # one arm off the floor: judged
    top = {"ci95": [-0.01, 0.01], "seeds": 5, "a_value": CEILING + 0.02, "b_value": 1.0}
    assert judge(top)[0] == "inconclusive (ceiling)"
    assert judge({"ci95": [0.1, 0.3], "seeds": 5, "a_value": 0.5, "b_value": 0.3})[0] == "supported"


def test_controls_pass_then_hypotheses_are_judged_and_h8_reads_the_ladder(tmp_path):
    folder = write(tmp_path / "sw", world({"tell": 0.6, "sft": 0.0, "sft-matched": 0.02, "tell-no-anchor": 0.2,
                                           "tell-placebo": 0.0, "tell-random-anchor": 0.6}))
    doc = study_findings({"small": folder})
    fs = doc["sizes"]["small"]
    assert all(c["passed"] for c in fs["controls"]), fs["controls"]
    assert fs["H1"]["verdict"] == "supported" and fs["H4a"]["verdict"] == "supported"
    assert fs["H4b"]["verdict"] == "contradicted"  # equal arms off the floor: a real null
    # tell at 150 tokens scores what sft reaches at 1,200 (0.6 on the ladder): efficiency 8x, interval above 1 and 4
    assert fs["H8a"]["verdict"] == fs["H8b"]["verdict"] == "supported", (fs["H8a"], fs["H8b"])
    assert abs(fs["H8a"]["efficiency"] - 8.0) < 0.5
    assert fs["H5"]["verdict"] == NOT_TESTED and doc["H7"]["verdict"] == NOT_TESTED  # one ratio, one base
    md = write_study(tmp_path, {"small": folder}, ["# planted"]).read_text()
    assert "Decision rule: each paired hypothesis" in md and "| C3: the task is learnable" in md
    assert "control(s)" not in md.split("## Findings")[1].split("| hypothesis |")[0]


def test_both_arms_at_the_floor_are_inconclusive_in_the_study(tmp_path):
    folder = write(tmp_path / "sw", world({"tell": 0.0, "sft": 0.0, "sft-matched": 0.0, "tell-no-anchor": 0.0}))
    fs = study_findings({"small": folder})["sizes"]["small"]
    assert all(c["passed"] for c in fs["controls"])
    for hid in ("H1", "H2", "H4a"):
        assert fs[hid]["verdict"] == "inconclusive (floor)", fs[hid]
    # tell at the floor while sft leaves it at 300 = 2x tell's budget: E < 2, which contradicts E >= 4 as a bound
    # and says nothing on E > 1
    assert fs["H8a"]["verdict"] == "inconclusive (floor)" and "2x" in fs["H8a"]["reason"], fs["H8a"]
    assert fs["H8b"]["verdict"] == "contradicted (bound)" and "E < 2" in fs["H8b"]["reason"], fs["H8b"]


def test_a_floor_no_ladder_budget_within_4x_leaves_decides_nothing(tmp_path):
    folder = write(tmp_path / "sw", world({"tell": 0.0, "sft": 0.0}, ladder=(0.0, 0.0, 0.0, 0.6, 0.8)))
    fs = study_findings({"small": folder})["sizes"]["small"]
    assert all(c["passed"] for c in fs["controls"])
    assert fs["H8a"]["verdict"] == fs["H8b"]["verdict"] == "inconclusive (floor)", (fs["H8a"], fs["H8b"])


def test_h5_over_enough_ratios_at_the_floor_is_inconclusive_not_a_constant(tmp_path):
    cells = world({"sft": 0.0})
    ratios = (1, 2.5, 7, 18, 50, 125, 330)
    cells += [("tell", BUDGET, r, {"task_test": 0.0, "general_test": 0.9}, "ok") for r in ratios]
    fs = study_findings({"small": write(tmp_path / "sw", cells, {"ratios": list(ratios)})})["sizes"]["small"]
    assert fs["H5"]["verdict"] == "inconclusive (floor)", fs["H5"]  # a flat line at 0 is no "constant" shape
    # whether H5 is tested is the plan's to say, not the finished cells': 7 planned, 2 measured is still tested
    few = write(tmp_path / "few", world({"sft": 0.0}) + cells[-2:], {"ratios": list(ratios)})
    assert study_findings({"small": few})["sizes"]["small"]["H5"]["verdict"] != NOT_TESTED
    two = write(tmp_path / "two", cells, {"ratios": [1, 330], "general_tokens": {str(BUDGET): [300, 600, 900]}})
    h5 = study_findings({"small": two})["sizes"]["small"]["H5"]
    assert h5["verdict"] == NOT_TESTED and h5["ratios"] == 5 and "5 general amount(s)" in h5["reason"]


def test_rejudge_judges_the_stored_cells_again_and_keeps_the_header(tmp_path):
    out = tmp_path / "study"
    write(out / "sweep", world({"tell": 0.0, "sft": 0.0, "sft-matched": 0.0, "tell-no-anchor": 0.0}))
    with pytest.raises(TellError, match="not a finished study folder"):
        rejudge(out, "at commit x")
    write_study(out, {"small": out / "sweep"}, ["# tell demo --study: planted", "", "- small base: planted"])
    doc = json.loads((out / "study.json").read_text())
    doc["sizes"]["small"]["H5"]["verdict"] = "contradicted (constant)"  # what an older rule wrote
    (out / "study.json").write_text(json.dumps(doc))
    for commit in ("abc1234", "def5678"):  # judged twice: one note, the latest
        md = rejudge(out, f"at commit {commit} from the stored cells").read_text()
    head = md.split("## Findings")[0]
    assert head.startswith("# tell demo --study: planted") and "- small base: planted" in head
    assert head.count("- re-judged ") == 1 and "def5678" in head
    assert json.loads((out / "study.json").read_text())["sizes"]["small"]["H5"]["verdict"] == NOT_TESTED


def test_a_failed_control_judges_nothing_and_says_which(tmp_path):
    for kw, failing in ((dict(base_general=0.4), "C1"), (dict(cipher=0.3), "C2"),
                        (dict(ladder=(0.0, 0.0, 0.1, 0.2, 0.3)), "C3"), (dict(unstable=True), "C5")):
        folder = write(tmp_path / failing, world({"tell": 0.6, "sft": 0.0}, **kw))
        doc = study_findings({"small": folder})
        fs = doc["sizes"]["small"]
        assert [c["id"] for c in fs["controls"] if not c["passed"]] == [failing]
        for hid in ("H1", "H2", "H3", "H4a", "H4b", "H6", "H8a", "H8b"):
            assert fs[hid]["verdict"] == "not judged" and failing in fs[hid]["reason"], (failing, hid, fs[hid])
        assert fs["H5"]["verdict"] == doc["H7"]["verdict"] == NOT_TESTED  # one ratio, one base: the plan says so


def test_a_task_the_base_already_solves_fails_c4(tmp_path):
    cells = world({"tell": 0.6, "sft": 0.0})
    cells[0] = ("base", None, 0.0, {"task_test": 0.3, "general_test": 0.9, "cipher_test": 0.0}, None)
    controls = {c["id"]: c for c in check_controls(load_sweep(write(tmp_path / "sw", cells), "accuracy"))}
    assert not controls["C4"]["passed"] and np.isclose(controls["C4"]["value"], 0.3)
    assert all(controls[c]["passed"] for c in ("C1", "C2", "C3", "C5"))


def test_the_design_check_says_whether_the_budget_can_show_the_papers_effect(tmp_path):
    from tell.synthetic.demo import headline
    from tell.synthetic.study import PAPER_EFFICIENCY

    arms = {"tell": 0.0, "sft": 0.0, "sft-matched": 0.0, "tell-no-anchor": 0.0}
    # sft leaves the floor at 300 task tokens, twice the study's 150: a budget that can show a 2x-plus effect
    near = study_findings({"small": write(tmp_path / "near", world(arms))})["sizes"]["small"]
    assert near["reach"]["sft_leaves_floor_at"] == 300 and near["reach"]["needed_efficiency"] == 2.0
    assert near["reach"]["decidable"]
    # sft leaves it only at 2,400 (16x): more than the paper's largest claim, so a floor there decides nothing
    far_dir = write(tmp_path / "far", world(arms, ladder=(0.0, 0.0, 0.0, 0.04, 0.6)))
    far = study_findings({"small": far_dir})["sizes"]["small"]
    assert far["reach"]["needed_efficiency"] == 16.0 > PAPER_EFFICIENCY and not far["reach"]["decidable"]
    assert far["H1"]["verdict"] == near["H1"]["verdict"] == "inconclusive (floor)"  # it changes no verdict
    md = write_study(tmp_path / "far-out", {"small": far_dir}, ["# planted"]).read_text()
    assert "2,400 task tokens, 16x the study's budget of 150" in md and "the paper's own claim predicts" in md
    assert "design check (small: sft first leaves the floor 0.05 at 2,400" in headline(tmp_path / "far-out")
    # a ladder that never leaves the floor gives no multiple at all
    flat = study_findings({"small": write(tmp_path / "flat", world(arms, ladder=(0.0,) * 5))})["sizes"]["small"]
    assert flat["reach"]["sft_leaves_floor_at"] is None and not flat["reach"]["decidable"]


def test_the_study_budget_comes_from_the_control_side_rule():
    """(issue 37 item 1) a quarter of the smallest ladder budget whose sft mean reaches the floor."""
    from tell.synthetic.study import control_side_budget

    assert control_side_budget([(4800, 0.001), (9600, 0.069), (19200, 0.78), (38400, 0.98)]) == 2400
    assert control_side_budget([(300, 0.0), (600, FLOOR), (1200, 0.5)]) == 150  # at the floor counts as off it
    assert control_side_budget([(600, 0.0), (1200, 0.04)]) is None  # never leaves it: no budget by the rule
    assert control_side_budget([(1200, 0.5), (600, 0.2)]) == 150  # the smallest budget, in whatever order given


def test_tell_on_a_budget_ladder_is_judged_at_the_paired_budget_and_its_own_ratio(tmp_path):
    """(issue 37 item 2) tell at 75, 150 and 300 task tokens with one general amount (ratios 660, 330, 165): the
    paired hypotheses and H8 at the budget the spec pairs at (150, ratio 330), not at tell's largest budget or
    at the largest ratio of any budget; H8's curve lists the efficiency at every tell budget."""
    cells = world({"tell": 0.6, "sft": 0.0, "sft-matched": 0.02, "tell-no-anchor": 0.2})
    cells += [("tell", 75, 660.0, {"task_test": 0.3, "general_test": 0.9}, "ok"),
              ("tell", 300, 165.0, {"task_test": 0.8, "general_test": 0.9}, "ok")]
    spec = {"task_tokens": [75, BUDGET, 300], "ratios": [], "general_tokens": [int(BUDGET * RATIO)],
            "paired_task_tokens": [BUDGET]}
    fs = study_findings({"small": write(tmp_path / "sw", cells, spec)})["sizes"]["small"]
    assert fs["H1"]["task_tokens"] == BUDGET and fs["H1"]["ratio"] == RATIO and fs["H1"]["verdict"] == "supported"
    assert fs["H8a"]["task_tokens"] == BUDGET and abs(fs["H8a"]["efficiency"] - 8.0) < 0.5
    curve = {c["task_tokens"]: c for c in fs["H8a"]["curve"]}
    assert sorted(curve) == [75, BUDGET, 300] and curve[75]["ratio"] == 660.0
    assert curve[75]["tell_value"] == pytest.approx(0.3) and curve[300]["tell_value"] == pytest.approx(0.8)
    for hid in ("H2", "H3", "H4a", "H4b", "H6", "H8b"):
        assert fs[hid]["task_tokens"] == BUDGET and fs[hid].get("ratio", RATIO) == RATIO, (hid, fs[hid])
    assert fs["H2"]["verdict"] == "supported" and fs["H8b"]["verdict"] == "supported"
    md = write_study(tmp_path, {"small": tmp_path / "sw"}, ["# planted"]).read_text()
    assert "| H8 curve: tell at 75 task tokens |" in md
    # baselines planted at another budget change nothing; a missing tell cell at the declared point is missing
    # (never replaced by the next ratio down), and the paired budget is the largest of several
    more = cells + [("sft-matched", 300, 165.0, {"task_test": 0.9, "general_test": 0.9}, "ok"),
                    ("tell", BUDGET, 100.0, {"task_test": 0.9, "general_test": 0.9}, "ok")]
    fs2 = study_findings({"small": write(tmp_path / "more", more, spec)})["sizes"]["small"]
    assert {h: fs2[h]["verdict"] for h in ("H1", "H2", "H8a")} == {h: fs[h]["verdict"] for h in ("H1", "H2", "H8a")}
    gone = [c for c in more if not (c[0] == "tell" and c[1] == BUDGET and c[2] == RATIO)]
    fs3 = study_findings({"small": write(tmp_path / "gone", gone, spec)})["sizes"]["small"]
    assert fs3["H1"]["verdict"] == "inconclusive" and fs3["H1"]["reason"] == "not run in this study"
    assert fs3["H8a"]["verdict"] == "inconclusive" and "ratio 330" in fs3["H8a"]["reason"]
    assert [c["task_tokens"] for c in fs3["H8a"]["curve"]] == [75, 300]  # the curve stays where it was measured
    two = spec | {"paired_task_tokens": [75, BUDGET]}
    assert study_findings({"small": write(tmp_path / "two", cells, two)})["sizes"]["small"]["H1"]["task_tokens"] \
        == BUDGET


def test_what_the_plan_cannot_test_says_so_before_any_control_is_judged(tmp_path):
    """(issue 37 items 5, 8) with one base, H7 reads the plan's own reason (the study's: no large base passed its
    controls), also when a control failed; H5 with too few planned amounts stays "not tested" likewise."""
    from tell.synthetic.demo import PLANS

    folder = write(tmp_path / "sw", world({"tell": 0.6, "sft": 0.0}, base_general=0.4))  # C1 fails
    study = PLANS["study"].one_base
    assert study.startswith("not tested") and "large base" in study
    doc = study_findings({"small": folder}, study)
    assert doc["H7"]["verdict"] == study
    assert doc["sizes"]["small"]["H5"]["verdict"] == NOT_TESTED  # one ratio planned (no spec: one measured)
    assert doc["sizes"]["small"]["H1"]["verdict"] == "not judged"
    assert study_findings({"small": folder})["H7"]["verdict"] == NOT_TESTED == PLANS["demo"].one_base


def test_the_study_judges_the_controls_its_spec_declared(tmp_path):
    """(issue 37 item 9) the controls come from the sweep's spec (one home with every sweep's): a threshold the
    spec declares is the one applied, and a world control the spec leaves out is not measured and fails."""
    from tell.synthetic.controls import CONTROLS

    for c1 in (0.95, 0.1):  # stricter (fails on the data), laxer (would pass on it)
        declared = [dict(c) | ({"at_least": c1} if c["id"] == "C1" else {}) for c in CONTROLS if c["id"] != "C2"]
        folder = write(tmp_path / f"sw{c1}", world({"tell": 0.6, "sft": 0.0}), {"controls": declared})
        doc = study_findings({"small": folder})
        got = {c["id"]: c for c in doc["sizes"]["small"]["controls"]}
        # changed either way, C1 fails: the spec cannot move a pre-registered control; its own value is shown
        assert not got["C1"]["passed"] and got["C1"]["value"] == pytest.approx(0.9), got["C1"]
        assert f">= {c1:g}" in got["C1"]["measured"] and "not as pre-registered" in got["C1"]["measured"]
        assert ">= 0.85" in got["C1"]["rule"]
        assert not got["C2"]["passed"] and "not declared" in got["C2"]["measured"]
        assert all(got[i]["passed"] for i in ("C3", "C4", "C5"))
        assert doc["sizes"]["small"]["H1"]["verdict"] == "not judged"
    # the same controls as declared pass as they did before controls were declared
    folder = write(tmp_path / "same", world({"tell": 0.6, "sft": 0.0}), {"controls": [dict(c) for c in CONTROLS]})
    assert all(c["passed"] for c in study_findings({"small": folder})["sizes"]["small"]["controls"])
