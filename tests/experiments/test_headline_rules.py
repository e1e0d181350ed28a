"""The pre-registered readings of docs/halu_headline.md (`tell.experiments.readings`, which the demo study and
`benchmarks/halu_headline_results.py` share):
an interval decides H8a (E > 1) and H8b (E >= 4) either way, and a floor is a bound only where the SFT ladder
leaves the floor within 4x."""

from __future__ import annotations

import sys

import pytest

from conftest import REPO

sys.path.insert(0, str(REPO / "benchmarks"))
from halu_headline_results import markers, reproduction  # noqa: E402
from tell.experiments.readings import reading  # noqa: E402

LADDER = [(535, 0.0), (1070, 0.2), (2140, 0.6), (4280, 0.9)]


def e(x, lo, hi):
    return {"computed": True, "efficiency": x, "ci95": [lo, hi]}


@pytest.mark.parametrize("hid, eff, verdict", [
    ("H8a", e(3, 1.5, 6), "supported"), ("H8a", e(0.8, None, 1.0), "contradicted"), ("H8a", e(2, 0.7, 5), "inconclusive"),
    ("H8b", e(6, 4.0, None), "supported"), ("H8b", e(2, 1.1, 3.9), "contradicted"), ("H8b", e(5, 3, 7), "inconclusive"),
])
def test_an_interval_decides_either_way(hid, eff, verdict):
    assert reading(hid, eff, 0.5, LADDER, 0.05, 0.95, 535)[0] == verdict


def test_a_tell_floor_is_a_bound_where_sft_leaves_the_floor_within_4x():
    floor_e = {"computed": True, "efficiency": 1.0, "bound": "upper", "ci95": [None, 1.0]}
    # sft leaves the floor at 2x: E < 2 contradicts E >= 4, says nothing on E > 1
    assert reading("H8b", floor_e, 0.0, LADDER, 0.05, 0.95, 535) == ("contradicted (bound)",
                                                                     "tell is at the floor while sft at 2x is not: E < 2")
    assert reading("H8a", floor_e, 0.0, LADDER, 0.05, 0.95, 535)[0] == "inconclusive (floor)"
    # sft off the floor at one example: E <= 1
    assert reading("H8a", floor_e, 0.0, [(535, 0.3)] + LADDER[1:], 0.05, 0.95, 535)[0] == "contradicted (bound)"
    # no sft budget within 4x leaves the floor: nothing decided
    late = [(535, 0.0), (1070, 0.0), (2140, 0.01), (4280, 0.9)]
    assert reading("H8b", floor_e, 0.0, late, 0.05, 0.95, 535)[0] == "inconclusive (floor)"


def test_a_tell_ceiling_beyond_the_ladder_supports_both_as_a_bound():
    top = {"computed": True, "efficiency": 8.0, "bound": "lower", "ci95": [8.0, None]}
    assert reading("H8b", top, 0.97, LADDER, 0.05, 0.95, 535)[0] == "supported (bound)"
    assert reading("H8a", top, 0.97, LADDER, 0.05, 0.95, 535)[0] == "supported (bound)"


class _Point:
    def __init__(self, method, budget, value):
        self.method, self.budget, self.value = method, budget, value


class _Data:
    def __init__(self, ladder):
        self._pts = {i: _Point("sft", b, v) for i, (b, v) in enumerate(ladder)}

    def points(self, set_name, metric):
        return self._pts if (set_name, metric) == ("halu-cot-json", "json_strict") else {}


def _results_with_part1(tmp_path, ladder):
    begin, end = markers(1)
    rows = [f"| halu-cot-json | json_strict | sft | {b:,} | 0 | 3 | {v:.3f} | [0.000, 1.000] |" for b, v in ladder]
    rows.append("| halu-cot-json | json_lenient | sft | 535 | 0 | 3 | 0.140 | [0.070, 0.210] |")  # another metric
    path = tmp_path / "RESULTS.md"
    path.write_text("\n".join(["# results", begin, "| set | metric | method |", *rows, end, ""]))
    return path


def test_part2_ladder_is_checked_against_part1_both_ways(tmp_path):
    results = _results_with_part1(tmp_path, LADDER)
    same = reproduction(_Data(LADDER), results)
    assert same[-1].startswith("- every ladder mean equals part 1's") and "| 1,070 | 0.200 | 0.200 | yes |" in same
    moved = reproduction(_Data([(535, 0.0), (1070, 0.25), (2140, 0.6), (4280, 0.9)]), results)
    assert "| 1,070 | 0.200 | 0.250 | NO |" in moved and moved[-1].startswith("- 1 of 4 ladder budgets differ")
    # a part 2 that lacks some of part 1's budgets is no reproduction, however its other means compare
    short = reproduction(_Data(LADDER[:2]), results)
    assert short[-1].startswith(f"- {len(LADDER) - 2} of {len(LADDER)} ladder budgets differ")
    assert f"| {LADDER[-1][0]:,} | " in "\n".join(short) and " | - | NO |" in "\n".join(short)
    assert reproduction(_Data([]), results)[-1].startswith(f"- {len(LADDER)} of {len(LADDER)}")
    assert "no reproduction check" in reproduction(_Data(LADDER), tmp_path / "missing.md")[0]
