"""The demo world's positive controls (docs/study.md, declared before any world change), as the declared
`controls:` of its sweep specs: `tell.synthetic.demo.spec_for` writes them into every spec, and
`tell.experiments.controls` judges them like any other sweep's (the report's controls section, controls.json).
What is particular to the world is only which of its test sets each control reads (`SETS`).

* C1 the base model does its own pretraining skills: base accuracy on the general test >= 0.85;
* C2 general data alone teach the leverage skill: general-only (the largest general budget) on the cipher
  test (the cipher in the general data's wordings) >= 0.8;
* C3 the task is learnable from task data: sft at the largest budget of the SFT ladder >= 0.5 task accuracy;
* C4 the task is not free: base and general-only (each) <= 0.05 task accuracy;
* C5 the runs are healthy: no selected cell unstable, no failed cell the lr rule could select (a failed lr
  candidate with a healthy sibling is reported in run health and does not fail the world: issue 37, item 4).

A control that the sweep cannot measure (a method or a test set missing), that its spec does not declare, or
that its spec declares otherwise than here (a threshold, method or set changed), does not pass.
"""

from __future__ import annotations

from tell.experiments import controls as ctl
from tell.experiments.evidence import SweepData, unhealthy_cells

PRIMARY = "accuracy"
# the world's file stems (tell.synthetic.world) and the file names its specs list them by
GENERAL_TEST, CIPHER_TEST, TASK_TEST = "general_test", "cipher_test", "task_test"
SETS = {stem: f"{stem}.jsonl" for stem in (GENERAL_TEST, CIPHER_TEST, TASK_TEST)}

CONTROLS = (
    {"id": "C1", "claim": "the base model does its own pretraining skills", "method": "base",
     "set": SETS[GENERAL_TEST], "metric": PRIMARY, "at_least": 0.85},
    {"id": "C2", "claim": "general data alone teach the leverage skill", "method": "general-only",
     "set": SETS[CIPHER_TEST], "metric": PRIMARY, "at_least": 0.8},
    {"id": "C3", "claim": "the task is learnable from task data", "method": "sft", "set": SETS[TASK_TEST],
     "metric": PRIMARY, "at_least": 0.5},
    {"id": "C4", "claim": "the task is not free", "method": ["base", "general-only"], "set": SETS[TASK_TEST],
     "metric": PRIMARY, "at_most": 0.05},
    {"id": "C5", "claim": "the runs are healthy", "healthy": True},
)


def declared(methods: list[str]) -> list[dict]:
    """The controls a spec of these methods can declare (a control needs its methods in the sweep; one left out
    is not measured, and `check_controls` counts it as failed)."""
    return [dict(c) for c in CONTROLS if all(m in methods for m in ctl.methods_of(c.get("method", [])))]


def check_controls(data: SweepData) -> list[dict]:
    """Every control of the world, measured as the sweep's spec declared it (`tell.experiments.controls.check`):
    one the spec does not declare (an older sweep, or a plan without its methods) is reported as not measured and
    does not pass. A sweep written before controls were declared (no `controls:`) is judged by `CONTROLS`."""
    spec = data.spec.get("controls")
    given = {c["id"]: c for c in (list(CONTROLS) if spec is None else spec)}
    results = {r["id"]: r for r in ctl.check(list(given.values()), data, unhealthy_cells(data.rows))}
    out = []
    for c in CONTROLS:
        r = results.get(c["id"])
        if r is None:
            r = {"id": c["id"], "claim": c["claim"], "rule": ctl.rule(c), "value": None, "passed": False,
                 "measured": "not declared by this sweep's spec (not measured)"}
        elif given[c["id"]] != c:  # a spec may not weaken (or change) what was declared before the study
            r = r | {"passed": False, "rule": ctl.rule(c),
                     "measured": f"the spec declares it as '{ctl.rule(given[c['id']])}', not as pre-registered "
                                 f"(docs/study.md): {r['measured']}"}
        out.append(r)
    return out + [r for i, r in results.items() if i not in {c["id"] for c in CONTROLS}]


def failed(controls: list[dict]) -> list[str]:
    return ctl.failed(controls)
