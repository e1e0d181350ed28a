"""A sweep's grid: every cell a spec asks for, with its mixture's manifest, and what the grid will cost.

Tell mixtures are prepared first: their achieved budgets fix their paired baselines (`Method.follows`): the
budget twins (tell-no-anchor, tell-placebo, tell-random-anchor) take tell's task budget and ratio,
general-only its achieved general tokens, sft-matched its optimizer steps. Every trained method gets one cell
per learning-rate candidate.
"""

from __future__ import annotations

import os
from pathlib import Path

from tell.experiments.cell import Cell, CellDir, prepare_cell
from tell.experiments.config import SweepSpec, amounts_at, general_ratio
from tell.experiments.executors import ExecutorOptions
from tell.experiments.methods import BUDGET_TWINS
from tell.train.schedule import optimizer_steps

Plan = list[tuple[Cell, "dict | None"]]  # each cell with its mixture's manifest (None for base)


class Planner:
    def __init__(self, spec: SweepSpec, out: Path):
        self.spec, self.out = spec, out

    def cell(self, method: str, seed: int, **plan) -> Cell:
        return Cell.make(self.spec, self.out, method, seed, **plan)

    def _trained(self, method: str, seed: int, manifest: dict | None = None, **plan) -> Plan:
        """One cell per learning-rate candidate of the method, with its (shared) mixture."""
        cells = [self.cell(method, seed, lr=lr, **plan) for lr in self.spec.lr_grid[method]]
        return [(c, manifest or prepare_cell(c)) for c in cells]

    def plan(self) -> Plan:
        sp, cells = self.spec, []
        for seed in sp.seeds:
            if "base" in sp.methods:
                cells.append((self.cell("base", seed), None))
            for t in sp.task_tokens:
                if "sft" in sp.methods:
                    cells += self._trained("sft", seed, task_tokens=t, ratio=0.0)
                for r, g in self.ratios_at(t):
                    cells += self._plan_ratio(seed, t, r, g)
            for t in sp.sft_ladder:  # the SFT curve beyond the budgets tell runs at
                if t not in sp.task_tokens:
                    cells += self._trained("sft", seed, task_tokens=t, ratio=0.0)
        return cells

    def ratios_at(self, t: int) -> list[tuple[float, int | None]]:
        """(ratio, general tokens) of every point tell runs at task budget t: each declared ratio (its general
        budget that ratio times the task tokens achieved), then each declared general amount (exactly that many
        general tokens, whatever the task tokens achieved; the ratio amount / t)."""
        amounts = amounts_at(self.spec.general_tokens, t)
        return [(r, None) for r in self.spec.ratios] + [(general_ratio(g, t), g) for g in amounts]

    def _plan_ratio(self, seed: int, t: int, r: float, g: int | None = None) -> Plan:
        sp, cells = self.spec, []
        at = {"task_tokens": t, "ratio": r} | ({"general_tokens": g} if g is not None else {})
        tm = prepare_cell(self.cell("tell", seed, **at)) if sp.anchor else None
        if "tell" in sp.methods:
            cells += self._trained("tell", seed, tm, **at)
        pair = f"tell@{t}/{r:g}/{seed}"
        for method in BUDGET_TWINS:
            if method in sp.methods and self._paired_at(method, r, t):
                cells += self._trained(method, seed, pair=pair, **at)
        # general-only and sft-matched follow the tell cell's achieved budgets (no anchor: its twin's)
        ref = tm or prepare_cell(self.cell("tell-no-anchor", seed, **at))
        if "general-only" in sp.methods and r > 0 and self._paired_at("general-only", r, t):
            cells += self._trained("general-only", seed, ratio=r, general_tokens=ref["budget"]["general_tokens"],
                                   pair=pair, extra={"task_tokens_requested": t})
        if "sft-matched" in sp.methods and r > 0 and self._paired_at("sft-matched", r, t):
            steps = optimizer_steps(ref["mixture"]["examples"], sp.train_value("batch_size"))
            cells += self._trained("sft-matched", seed, task_tokens=t, ratio=r, max_steps=steps, pair=pair)
        return cells

    def _paired_at(self, method: str, r: float, t: int) -> bool:
        """Whether a method paired with tell runs at ratio r of task budget t (spec paired_task_tokens, then
        paired_ratios: all, max, min, or per method; max and min among the ratios at that budget)."""
        if self.spec.paired_task_tokens and t not in self.spec.paired_task_tokens:
            return False
        rule = self.spec.paired_ratios
        rule = rule.get(method, rule.get("default", "all")) if isinstance(rule, dict) else rule
        here = [x for x, _ in self.ratios_at(t)]
        if rule == "min":
            return r == min((x for x in here if x > 0), default=None)
        return rule == "all" or r == max(here)


def log_plan(spec: SweepSpec, cells_dir: Path, plan: Plan, log, opts: ExecutorOptions) -> None:
    """The grid, what each cell trains, and what is left to do (with a time estimate from finished cells)."""
    total_tokens = total_steps = 0
    log(f"{'cell':<28} {'lr':>8} {'task tok':>9} {'general tok':>12} {'ratio':>7} {'passes':>7} {'steps':>6} status")
    for cell, m in plan:
        status = cell.dir.status()["status"]
        steps, passes = cell.steps(m)
        tokens = m["mixture"]["tokens"] * passes if m else 0
        total_tokens += tokens if status != "done" else 0
        total_steps += steps if status != "done" else 0
        b = m["budget"] if m else {}
        lr = f"{cell.lr:.1e}" if cell.lr else "-"
        log(f"{cell.key:<28} {lr:>8} {b.get('task_tokens', 0):>9,} {b.get('general_tokens', 0):>12,} "
            f"{cell.ratio if cell.ratio is not None else '-':>7} {passes:>7.2f} {steps:>6} {status}")
    evals = len(plan) * (len(spec.eval) + len(spec.general_eval) + len(spec.task_eval))
    log(f"{len(plan)} cells; still to train: {int(total_tokens):,} tokens in {total_steps:,} optimizer steps; "
        f"{evals} cell x eval-set evaluations")
    _log_lengths(plan, log)
    cells = sum(1 for c, _ in plan if c.dir.status()["status"] != "done")
    log(f"executor: {opts.name} ({cells} cell(s) to run; {_placement(opts)})")
    _log_estimate(spec, cells_dir, total_tokens, log, max(opts.gpus_per_cell, 0))


def _log_estimate(spec: SweepSpec, cells_dir: Path, total_tokens: float, log, gpus: int) -> None:
    done = [CellDir(cells_dir, p.parent.name).status() for p in cells_dir.glob("*/status.json")]
    done = [d for d in done if d["status"] == "done" and d.get("tokens_trained")]
    rate, source = None, ""
    if done and total_tokens:
        rate = sum(d["tokens_trained"] for d in done) / sum(d["wall_s"] for d in done)
        source = f"measured: training + eval of the {len(done)} finished cell(s)"
    elif spec.throughput and total_tokens:
        rate, source = spec.throughput, "declared in the spec (throughput)"
    if rate:
        hours = total_tokens / rate / 3600
        gpu_hours = f", about {hours * gpus:.2f} GPU-hours at {gpus} GPU(s) per cell" if gpus else ""
        log(f"estimate: about {hours * 60:.1f} cell-minutes at {rate:,.0f} tokens/s ({source}){gpu_hours}")


def _log_lengths(plan: Plan, log) -> None:
    """The longest example of any cell's mixture against train.max_length (as prepare counted them)."""
    reports = [m["lengths"] for _, m in plan if m and m.get("lengths")]
    if not reports:
        return
    n, who = reports[0]["train_max_length"], reports[0]["counted_by"].get("name")
    longest = {s: max(r[s]["longest"] for r in reports) for s in ("task", "general")}
    over = {s: max(r[s]["over_train_max_length"] or 0 for r in reports) for s in ("task", "general")}
    verdict = "every example fits" if not any(over.values()) else (
        f"up to {over['task']:,} task and {over['general']:,} general examples per cell are longer: training "
        "cuts them (raise train.max_length)")
    log(f"lengths: longest task example {longest['task']:,} tokens, general {longest['general']:,} (counted by "
        f"{who}, without chat-template tokens); train max_length {n:,}: {verdict}")


def _placement(opts: ExecutorOptions) -> str:
    if opts.name == "local":
        return f"{opts.workers} worker(s) on this machine, {opts.gpus_per_cell} GPU(s) pinned per worker"
    if opts.name == "ray":
        return (f"one Ray task per cell with {opts.cpus_per_cell} CPU(s) and {opts.gpus_per_cell} GPU(s), on "
                f"{opts.ray_address or os.environ.get('RAY_ADDRESS') or 'a local Ray started for the run'}")
    s = opts.slurm
    return (f"one Slurm job per cell{' (a job array)' if s.get('array', True) else ''}, partition "
            f"{s.get('partition', 'default')}, {opts.gpus_per_cell} GPU(s), {s.get('time_min', 1440)} min")
