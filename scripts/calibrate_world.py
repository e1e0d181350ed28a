"""Calibrate the leverage world against its positive controls only (docs/study.md, issue 23).

    python scripts/calibrate_world.py --plan demo --out /tmp/cal --world task_prompt=instructed --base steps=2000

Runs the control cells of a demo plan and nothing else: base, sft at the study's budget and its ladder, and
general-only at the largest general budget (the methods `tell.synthetic.controls` reads), then prints C1-C5,
the SFT ladder's means and the study budget the control-side rule gives (`study.control_side_budget`).
No TELL cell is trained, so no knob setting can be chosen by which method wins. Each run appends one JSON
line (knobs, controls, seconds, commit) to --record, from which docs/study.md's calibration table is written
(`--table`).
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import time
from dataclasses import asdict, replace
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
CONTROL_METHODS = ["base", "sft", "general-only"]


def _knobs(pairs: list[str]) -> dict:
    out = {}
    for p in pairs:
        k, _, v = p.partition("=")
        value = yaml.safe_load(v)
        if isinstance(value, str) and re.fullmatch(r"[+-]?\d+(\.\d*)?[eE][+-]?\d+", value):
            value = float(value)  # YAML 1.1 reads 1e-3 as text (it wants 1.0e-3): a number is meant
        out[k] = value
    return out


def calibrate(plan_name: str, out: Path, world_knobs: dict, base_knobs: dict, plan_knobs: dict, seeds: list[int],
              cache: Path, workers: int = 1, methods: list[str] = CONTROL_METHODS) -> dict:
    from tell.experiments.evidence import load_sweep
    from tell.experiments.executors import ExecutorOptions
    from tell.experiments.sweep import Sweep, load_spec
    from tell.synthetic.controls import check_controls, declared
    from tell.synthetic.demo import PLANS, cached_base, spec_for
    from tell.synthetic.world import World

    t0 = time.perf_counter()
    plan = replace(PLANS[plan_name], **plan_knobs)  # sft_ladder, lr_grid, task_tokens, train (micro-batch)
    world = World(replace(plan.world, **world_knobs))
    base_cfg = replace(plan.bases["small"], **base_knobs)
    files = world.write(out / "world")
    base = cached_base(world, base_cfg, cache, log=lambda m: print(m, file=sys.stderr))
    spec = spec_for(plan, files, base) | {"methods": methods, "seeds": seeds, "controls": declared(methods),
                                           "name": f"calibration of {plan.name}"}
    if not plan.general_tokens:  # version 3: general-only at the largest ratio (v4: at the plan's general amount)
        spec |= {"ratios": [max(plan.ratios)], "paired_ratios": "all"}
    if "sft" not in methods:
        spec["sft_ladder"] = []
    spec_path = out / "spec.yaml"
    spec_path.write_text(yaml.safe_dump(spec, sort_keys=False))
    Sweep(load_spec(str(spec_path)), out / "sweep", spec_path=str(spec_path)).run(
        log=lambda m: None, executor=ExecutorOptions(workers=workers))
    data = load_sweep(out / "sweep", "accuracy")
    controls = check_controls(data)
    kept = lr_kept(out / "sweep")
    means = sft_means(data)
    return {"plan": plan_name, "world": asdict(world.cfg), "base": asdict(base_cfg), "seeds": seeds, "methods": methods,
            "task_tokens": list(plan.task_tokens), "sft_ladder": list(plan.sft_ladder), "lr_grid": list(plan.lr_grid),
            "controls": {c["id"]: {"value": c["value"], "passed": c["passed"]} for c in controls},
            "lr_kept": kept, "sft_means": means, "control_side_budget": budget_by_rule(means),
            "seconds": round(time.perf_counter() - t0), "commit": _commit(),
            "date": time.strftime("%Y-%m-%d")}


def sft_means(data) -> dict[str, float]:
    """sft's task accuracy at every budget of the ladder (mean over the healthy, selected seeds): what the study's
    budget is chosen from (issue 37 item 1; `tell.synthetic.study.control_side_budget`)."""
    from tell.synthetic.controls import TASK_TEST

    task = next((s for s in data.sets if s.split("/")[-1].startswith(TASK_TEST)), None)
    if task is None or "accuracy" not in data.metrics.get(task, []):
        return {}
    return {str(p.budget): p.value for p in sorted(data.points(task, "accuracy").values(), key=lambda p: p.budget)
            if p.method == "sft"}


def budget_by_rule(means: dict[str, float]) -> int | None:
    from tell.synthetic.study import control_side_budget

    return control_side_budget([(int(b), v) for b, v in means.items()])


def lr_kept(sweep: Path) -> list[dict]:
    """The learning rate the sweep's lr rule kept for each control method and budget (lr_selection.json): what
    a plan with a single learning rate may take from the calibration."""
    path = sweep / "lr_selection.json"
    groups = json.loads(path.read_text())["groups"] if path.is_file() else []
    return [{"method": g["method"], "task_tokens": g.get("task_tokens_requested"), "ratio": g.get("ratio"),
             "lr": g.get("chosen_lr")} for g in groups]


def _commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True,
                              check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def _kept(r: dict) -> str:
    """How often the lr rule kept each learning rate, e.g. "3e-3 x7, 2e-3 x2" ("-" when not recorded)."""
    from collections import Counter

    counts = Counter(g["lr"] for g in r.get("lr_kept") or [] if g["lr"] is not None)
    return ", ".join(f"{lr:g} x{n}" for lr, n in counts.most_common()) or "-"


def _budget(r: dict) -> str:
    """The study budget the control-side rule gives, with the sft means it reads ("-" before it was recorded)."""
    if not r.get("sft_means"):
        return "-"
    means = ", ".join(f"{int(b):,}: {v:.3g}" for b, v in r["sft_means"].items())
    return f"{r['control_side_budget']:,} (sft {means})" if r.get("control_side_budget") else f"none (sft {means})"


def table(record: Path) -> list[str]:
    """docs/study.md's calibration table: every setting tried and the controls it gave, in order."""
    rows = [json.loads(line) for line in record.read_text().splitlines() if line.strip()]
    md = ["| # | plan | world knobs | base knobs | plan knobs | methods | seeds | C1 | C2 | C3 | C4 | C5 | all pass | "
          "lr kept (groups) | budget by rule | commit |", "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for i, r in enumerate(rows, 1):
        c = r["controls"]
        cell = lambda k: f"{c[k]['value']:.3g}" if c[k]["value"] is not None else "-"  # noqa: E731
        md.append(f"| {i} | {r['plan']} | `{r.get('world_knobs') or {}}` | `{r.get('base_knobs') or {}}` | "
                  f"`{r.get('plan_knobs') or {}}` | {', '.join(r.get('methods', CONTROL_METHODS))} | "
                  f"{r['seeds']} | " + " | ".join(cell(k) + ("" if c[k]["passed"] else " (fails)")
                                                 for k in ("C1", "C2", "C3", "C4", "C5"))
                  + f" | {'yes' if all(v['passed'] for v in c.values()) else 'no'} | {_kept(r)} | "
                  f"{_budget(r)} | {r['commit']} |")
    return md


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--plan", default="demo", choices=("quick", "demo", "study"))
    ap.add_argument("--out", type=Path, required=False)
    ap.add_argument("--world", nargs="*", default=[], metavar="KEY=VALUE", help="WorldConfig knobs")
    ap.add_argument("--base", nargs="*", default=[], metavar="KEY=VALUE", help="BaseModelConfig knobs")
    ap.add_argument("--plan-knobs", nargs="*", default=[], metavar="KEY=VALUE",
                    help="DemoPlan knobs: sft_ladder=[...], lr_grid=[...], task_tokens=[...], train={...}")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--cache", type=Path, default=Path.home() / ".cache" / "tell" / "demo")
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--methods", nargs="+", default=CONTROL_METHODS, choices=CONTROL_METHODS,
                    help="a subset of the control methods (base: C1; general-only: C2; sft: C3); the controls "
                         "of the methods left out are recorded as not measured (and so not passed)")
    ap.add_argument("--record", type=Path, default=REPO / "docs" / "calibration.jsonl")
    ap.add_argument("--table", action="store_true", help="print the calibration table of --record and exit")
    ap.add_argument("--write-study", action="store_true",
                    help="write the calibration table of --record into docs/study.md (between its calibration "
                         "markers) and exit")
    args = ap.parse_args(argv)
    if args.table:
        print("\n".join(table(args.record)))
        return 0
    if args.write_study:
        from tell.io import atomic_open

        study = REPO / "docs" / "study.md"
        text = study.read_text(encoding="utf-8")
        begin, end = "<!-- calibration:begin -->", "<!-- calibration:end -->"
        head, rest = text.split(begin, 1)
        _, tail = rest.split(end, 1)
        with atomic_open(study) as f:
            f.write(head + begin + "\n\n" + "\n".join(table(args.record)) + "\n\n" + end + tail)
        print(f"wrote the calibration table ({len(table(args.record)) - 2} trials) into {study}")
        return 0
    if args.out is None:
        ap.error("--out is required")
    wk, bk, pk = _knobs(args.world), _knobs(args.base), _knobs(args.plan_knobs)
    pk = {k: tuple(v) if isinstance(v, list) else v for k, v in pk.items()}
    res = calibrate(args.plan, args.out, wk, bk, pk, args.seeds, args.cache, args.workers, args.methods) | {
        "world_knobs": wk, "base_knobs": bk, "plan_knobs": {k: list(v) if isinstance(v, tuple) else v
                                                            for k, v in pk.items()}}
    with open(args.record, "a", encoding="utf-8") as f:
        f.write(json.dumps(res) + "\n")
    for k, c in res["controls"].items():
        print(f"{k}: {'pass' if c['passed'] else 'FAIL'} ({c['value']})")
    if res["sft_means"]:  # what the study's budget is chosen from: control cells only (issue 37 item 1)
        print("sft ladder (task accuracy, mean over seeds): " + ", ".join(f"{int(b):,} {v:.3f}"
                                                                          for b, v in res["sft_means"].items()))
        print(f"study budget by the control-side rule (a quarter of the first budget >= the floor): "
              f"{res['control_side_budget']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
