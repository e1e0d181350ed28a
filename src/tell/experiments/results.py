"""A sweep's results, rebuilt from the cells' own files every time (so never half-written or double-counted):

    results.csv / results.jsonl   one row per (cell, eval set, metric), per seed, with the run's health and lr;
                                  a failed cell is one row with its error (value empty)
    item_scores.jsonl             per-item scores of every metric that is a mean over items (for intervals
                                  over seeds and items, and paired comparisons on the same items)
    lr_selection.json             every lr candidate's validation losses and health, and the one kept
"""

from __future__ import annotations

import csv
import json
from collections import defaultdict
from pathlib import Path

from tell.eval.kinds import KINDS, item_scores
from tell.experiments.cell import Cell, CellDir
from tell.io import atomic_open, write_json

RESULT_FIELDS = ("method", "task_tokens", "general_tokens", "ratio", "seed", "lr", "selected", "health",
                 "health_reason", "set", "role", "metric", "value", "ci_low", "ci_high", "tokens_trained",
                 "optimizer_steps", "wall_s", "run_dir", "task_tokens_requested", "cell", "higher_is_better")

LR_RULE = ("for each method, task budget and ratio, every learning-rate candidate is trained on every seed and "
           "scored on the validation split (task and general examples held out of every budget; never a test "
           "set); candidates with an unstable or failed seed are out; the kept one has the lowest mean "
           "task-answer validation loss over seeds, ties going to the lower general validation loss, then the "
           "smaller learning rate")


def _group(cell) -> tuple:
    return (cell.method, cell.task_tokens or cell.extra.get("task_tokens_requested"), cell.ratio)


def _health(cd: CellDir, cell: Cell, st: dict) -> tuple[str | None, str]:
    """(ok | unstable | failed | None for base, reason)."""
    if not cell.train:
        return None, ""
    if st["status"] == "failed":
        return "failed", st.get("error", "")
    h = cd.run.metrics().get("health") or {"verdict": "ok", "reasons": []}  # runs from before health existed
    reason = "; ".join(h.get("reasons", []))
    if h["verdict"] == "ok" and h.get("few_steps"):
        steps = h.get("checks", {}).get("steps")
        reason = f"not judged: {steps} optimizer step(s), too few for trends; only non-finite losses checked"
    return h["verdict"], reason


def select_lrs(cells: list[Cell], statuses: dict) -> tuple[dict, list[dict]]:
    """({group: chosen lr}, the lr_selection table) by LR_RULE."""
    groups: dict[tuple, dict[float, list]] = defaultdict(lambda: defaultdict(list))
    for cell in cells:
        if cell.train:
            groups[_group(cell)][cell.lr].append(statuses[cell.key])
    chosen, table = {}, []
    for g, by_lr in groups.items():
        cands = []
        for lr, sts in sorted(by_lr.items()):
            ok = [s for s in sts if s["health"] == "ok" and s["validation"]]
            mean = lambda k: (sum(s["validation"][k] for s in ok) / len(ok)) if ok and all(
                s["validation"].get(k) is not None for s in ok) else None
            cands.append({"lr": lr, "seeds": len(sts), "unstable_seeds": sum(s["health"] in ("unstable", "failed")
                                                                           for s in sts),
                          "pending_seeds": sum(s["health"] is None for s in sts),
                          "val_task": mean("task_loss"), "val_general_loss": mean("general_loss")})
        eligible = [c for c in cands if not c["unstable_seeds"] and not c["pending_seeds"] and c["val_task"] is not None]
        if len(cands) == 1:
            chosen[g], reason = cands[0]["lr"], "the only candidate"
        elif eligible:
            best = min(eligible, key=lambda c: (c["val_task"], c["val_general_loss"] if c["val_general_loss"]
                                                 is not None else float("inf"), c["lr"]))
            chosen[g], reason = best["lr"], "lowest validation task loss among healthy candidates"
        else:
            chosen[g], reason = None, "no candidate with every seed finished and healthy"
        table.append({"method": g[0], "task_tokens_requested": g[1], "ratio": g[2], "candidates": cands,
                      "chosen_lr": chosen[g], "reason": reason})
    return chosen, table


def _cell_status(cd: CellDir, cell: Cell) -> dict:
    st = cd.status()
    if st["status"] not in ("done", "failed"):
        return {"status": st["status"], "health": None, "reason": "", "validation": None}
    health, reason = _health(cd, cell, st)
    val = json.loads(cd.validation_path.read_text()) if cd.validation_path.is_file() else None
    return {**st, "health": health, "reason": reason, "validation": val}


def _rows(cell: Cell, cd: CellDir, st: dict, manifest: dict | None, selected: bool) -> tuple[list[dict], list[dict]]:
    """(result rows, item-score lines) of one finished or failed cell."""
    b = manifest["budget"] if manifest else {}
    base = {"method": cell.method, "task_tokens": b.get("task_tokens", 0), "general_tokens": b.get("general_tokens", 0),
            "ratio": cell.ratio,  # base: None; sft: 0.0 (its plan's)
            "seed": cell.seed, "lr": cell.lr, "selected": selected, "health": st["health"],
            "health_reason": st["reason"], "tokens_trained": st.get("tokens_trained", 0),
            "optimizer_steps": st.get("optimizer_steps", 0), "wall_s": round(st.get("wall_s", 0.0), 3),
            "run_dir": str(cd.path), "task_tokens_requested": cell.task_tokens or cell.extra.get("task_tokens_requested"),
            "cell": cd.key}
    if st["status"] == "failed":
        return [base | {"set": None, "role": None, "metric": None, "value": None, "ci_low": None, "ci_high": None}], []
    rows, items = [], []
    metrics = cd.eval.metrics()
    preds = _predictions(cd)
    for set_name, s in metrics["sets"].items():
        ordered = sorted(preds.get(set_name, []), key=lambda r: r["id"])
        for metric, v in s["metrics"].items():
            rows.append(base | {"set": set_name, "role": s.get("role", "task"), "metric": metric, "value": v["value"],
                                "ci_low": v["ci95"][0], "ci_high": v["ci95"][1],
                                "higher_is_better": _higher_is_better(s)})
            values = [item_scores(s["kind"], metric, r) for r in ordered]
            if values and all(x is not None for x in values):
                items.append({k: base[k] for k in ("cell", "method", "task_tokens_requested", "ratio", "seed", "lr",
                                                   "selected", "health")}
                             | {"set": set_name, "role": s.get("role", "task"), "metric": metric,
                                "ids": [r["id"] for r in ordered], "values": values})
    for name, s in metrics.get("averages", {}).items():  # e.g. the AGIEval average over its sub-tasks
        for metric, v in s["metrics"].items():
            rows.append(base | {"set": f"{name} (average)", "role": s.get("role", "general"), "metric": metric,
                                "value": v["value"], "ci_low": v["ci95"][0], "ci_high": v["ci95"][1],
                                "higher_is_better": _higher_is_better(s)})
    return rows, items


def _higher_is_better(s: dict) -> bool:
    """The direction of a set's metrics, from its metric kind (an average over sub-tasks: theirs)."""
    return KINDS[s["kind"]].higher_is_better if s.get("kind") in KINDS else True


def _predictions(cd: CellDir) -> dict[str, list[dict]]:
    out = defaultdict(list)
    if cd.eval.predictions_path.is_file():
        for line in cd.eval.predictions_path.read_text(encoding="utf-8").splitlines():
            r = json.loads(line)
            out[r["set"]].append(r)
    return out


def collect(out: Path, plan: list[tuple[Cell, dict | None]]) -> list[dict]:
    """Rebuild the three files of the sweep folder `out` from its cells' folders; returns the result rows."""
    statuses = {cell.key: _cell_status(cell.dir, cell) for cell, _ in plan}
    chosen, table = select_lrs([cell for cell, _ in plan], statuses)
    rows, items = [], []
    for cell, manifest in plan:
        st = statuses[cell.key]
        if st["status"] not in ("done", "failed"):
            continue
        selected = not cell.train or chosen.get(_group(cell)) == cell.lr
        r, i = _rows(cell, cell.dir, st, manifest, selected)
        rows += r
        items += i
    _write(out, rows, items, table)
    return rows


def _write(out: Path, rows: list[dict], items: list[dict], table: list[dict]) -> None:
    with atomic_open(out / "results.jsonl") as f:
        for r in rows:
            f.write(json.dumps(r) + "\n")
    with atomic_open(out / "results.csv") as f:
        w = csv.DictWriter(f, fieldnames=RESULT_FIELDS)
        w.writeheader()
        w.writerows(rows)
    with atomic_open(out / "item_scores.jsonl") as f:
        for r in items:
            f.write(json.dumps(r) + "\n")
    write_json(out / "lr_selection.json", {"rule": LR_RULE, "groups": table})
