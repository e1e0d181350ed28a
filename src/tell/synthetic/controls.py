"""The study's positive controls (docs/study.md, declared before any world change): an experiment can refute
a method only if it could have shown it working, so these are checked, on runs that are not TELL-vs-baseline
comparisons, before any hypothesis is judged. Each reads the sweep's evidence (`tell.experiments.evidence`):
means over seeds of the healthy, selected cells.

* C1 the base model does its own pretraining skills: base accuracy on the general test >= 0.85;
* C2 general data alone teach the leverage skill: general-only (the largest general budget) on the cipher
  test (the cipher in the general data's wordings) >= 0.8;
* C3 the task is learnable from task data: sft at the largest budget of the SFT ladder >= 0.5 task accuracy;
* C4 the task is not free: base and general-only <= 0.05 task accuracy at the study's budget;
* C5 the runs are healthy: no selected cell unstable, no failed cell the lr rule could select (a failed lr
  candidate with a healthy sibling is reported in run health and does not fail the world: issue 37, item 4).

A control that the sweep cannot measure (a method or a test set missing) does not pass.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from tell.experiments.evidence import SweepData, unhealthy_cells

PRIMARY = "accuracy"
GENERAL_TEST, CIPHER_TEST = "general_test", "cipher_test"  # the world's file stems (tell.synthetic.world)


@dataclass(frozen=True)
class Control:
    id: str
    claim: str
    rule: str
    threshold: float


CONTROLS = (
    Control("C1", "the base model does its own pretraining skills", "base general-test accuracy >= 0.85", 0.85),
    Control("C2", "general data alone teach the leverage skill",
            "general-only (largest general budget) cipher-test accuracy >= 0.8", 0.8),
    Control("C3", "the task is learnable from task data", "sft at the ladder's largest budget: task accuracy >= 0.5",
            0.5),
    Control("C4", "the task is not free", "base and general-only task accuracy <= 0.05 at the study's budget", 0.05),
    Control("C5", "the runs are healthy", "no selected cell unstable, no failed cell the lr rule could select", 0.0),
)


def _set(data: SweepData, stem: str | None, role: str) -> str | None:
    """The set named like the world's file `stem` (any set of the role when no stem is given)."""
    sets = [s for s in data.sets if (data.roles[s] == "general") == (role == "general")]
    if stem is None:
        return sets[0] if sets else None
    return next((s for s in sets if Path(s).stem == stem), None)


def _value(data: SweepData, set_name: str | None, method: str, budget: int | None = None,
           top_ratio: bool = False) -> float | None:
    """Mean over seeds of a method's point on a set (at a budget; at its largest ratio when asked)."""
    if set_name is None or PRIMARY not in data.metrics.get(set_name, []):
        return None
    pts = [p for p in data.points(set_name, PRIMARY).values() if p.method == method
           and (budget is None or p.budget == budget)]
    if top_ratio and pts:
        top = max(p.ratio or 0 for p in pts)
        pts = [p for p in pts if (p.ratio or 0) == top]
    return pts[0].value if pts else None


def study_budget(data: SweepData) -> int | None:
    """The task budget the hypotheses are judged at: tell's (the largest, when there are several)."""
    task = _set(data, None, "task")
    budgets = [p.budget for p in data.points(task, PRIMARY).values() if p.method == "tell"] if task else []
    return max(budgets, default=None)


def check_controls(data: SweepData) -> list[dict]:
    """Every control with its measured value and whether it passed (None values never pass)."""
    task, general, cipher = _set(data, None, "task"), _set(data, GENERAL_TEST, "general"), \
        _set(data, CIPHER_TEST, "general")
    budget = study_budget(data)
    ladder = [p for p in data.points(task, PRIMARY).values() if p.method == "sft"] if task else []
    top_sft = max(ladder, key=lambda p: p.budget) if ladder else None
    c1 = _value(data, general, "base")
    c2 = _value(data, cipher, "general-only", top_ratio=True)
    c3 = top_sft.value if top_sft else None
    free = [_value(data, task, "base"), _value(data, task, "general-only", top_ratio=True)]
    bad = unhealthy_cells(data.rows)
    values = {"C1": (c1, c1 is not None and c1 >= 0.85, "base on the general test"),
              "C2": (c2, c2 is not None and c2 >= 0.8, "general-only on the cipher test"),
              "C3": (c3, c3 is not None and c3 >= 0.5,
                     f"sft at {top_sft.budget:,} task tokens" if top_sft else "no sft cell"),
              "C4": (max(free) if None not in free else None, None not in free and max(free) <= 0.05,
                     f"base, general-only at {budget} task tokens: {free}"),
              "C5": (float(len(bad)), not bad, f"{len(bad)} failed or unstable cell(s) the lr rule could select"
                     + (f": {bad[:3]}" if bad else ""))}
    return [{"id": c.id, "claim": c.claim, "rule": c.rule, "value": values[c.id][0], "passed": bool(values[c.id][1]),
             "measured": values[c.id][2]} for c in CONTROLS]


def failed(controls: list[dict]) -> list[str]:
    return [c["id"] for c in controls if not c["passed"]]
