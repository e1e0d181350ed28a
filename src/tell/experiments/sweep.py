"""`sweep`: the paper's experiments as a grid of cells, each prepare -> train -> eval in its own folder.

Methods (each a recipe over the same data; `T` task-token budgets, `R` general ratios, `S` seeds):
* `base`           the model without training (one cell per seed);
* `sft`            task data only, no anchor, 1 epoch (the paper's SFT), per T x S;
* `sft-matched`    task data only, gone over again and again for exactly the number of optimizer steps
                   of the tell cell it is paired with (T x R x S): the fair baseline the paper lacks;
* `general-only`   the tell cell's general data only (same general tokens), per T x R x S;
* `tell`           anchor + task + general, extensively shuffled, per T x R x S;
* `tell-no-anchor` the same without the anchor.

Cells are keyed by a hash of their resolved settings. With one seed the subsets are nested across
budgets (see `tell.data.mix`), so a curve's points differ only in the data added. A rerun skips
finished cells and resumes unfinished ones; a failing cell is recorded with its error and the sweep goes on.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
import traceback
from dataclasses import dataclass, field, replace
from pathlib import Path

from tell.artifacts import EvalDir, MixtureDir, RunDir
from tell.config import EvalConfig, PrepareConfig, SweepSpec, TrainConfig, as_float, build, check_value
from tell.data.mix import seeded_order
from tell.data.prepare import length_report, prepare
from tell.errors import TellError
from tell.experiments.executors import ExecutorOptions, run_cells
from tell.experiments.methods import METHOD_NAMES, METHODS
from tell.io import atomic_open, write_json
from tell.train.schedule import optimizer_steps


@dataclass
class Cell:
    method: str
    seed: int
    task_tokens: int | None = None     # requested budget (None for base / general-only)
    ratio: float | None = None
    general_tokens: int | None = None  # general-only: the paired tell cell's achieved general tokens
    max_steps: int | None = None       # sft-matched: the paired tell cell's optimizer steps
    anchor: bool = False
    lr: float | None = None            # the learning rate (one of the method's lr grid); None for base
    pair: str | None = None            # the tell cell a baseline is paired with (method@budget/ratio/seed)
    extra: dict = field(default_factory=dict)

    def data_settings(self, spec: SweepSpec) -> dict:
        """What fixes the cell's mixture: cells that share it (lr candidates, sft and sft-matched) share one."""
        return {"task": _portable(spec.task), "general": [_portable(g) for g in self.general_inputs(spec)],
                "validation": validation_settings(spec), "tokenizer": spec.tokenizer or spec.model,
                "task_tokens": self.task_tokens if self.method != "general-only" else 0,
                "ratio": 0.0 if self.method in ("sft", "sft-matched")
                else (self.ratio if self.general_tokens is None else None),
                "general_tokens": self.general_tokens, "anchor": self.anchor_text(spec),
                "anchor_placement": spec.anchor_placement, "seed": self.seed,
                **({"anchor_in_budget": True} if spec.anchor_in_budget else {})}

    def general_inputs(self, spec: SweepSpec) -> list[str]:
        """The general data the cell's mixture draws from (none for sft; the placebo set for tell-placebo)."""
        if self.method in ("sft", "sft-matched"):
            return []
        return list(spec.placebo_general if self.method == "tell-placebo" else spec.general)

    def anchor_text(self, spec: SweepSpec) -> str | None:
        if not self.anchor:
            return None
        return spec.random_anchor if self.method == "tell-random-anchor" else spec.anchor

    def settings(self, spec: SweepSpec) -> dict:
        return {"method": self.method, "seed": self.seed, "task_tokens": self.task_tokens, "ratio": self.ratio,
                "general_tokens": self.general_tokens, "max_steps": self.max_steps, "anchor": self.anchor,
                "lr": self.lr, "model": spec.model, "data": self.data_settings(spec), "train": spec.train,
                "decoding": spec.decoding, "eval": spec.eval, "general_eval": spec.general_eval,
                "eval_limit": spec.eval_limit, **({"task_eval": spec.task_eval} if spec.task_eval else {})}

    def key(self, spec: SweepSpec) -> str:
        return f"{self.method}-{_digest(self.settings(spec))}"

    def data_key(self, spec: SweepSpec) -> str:
        return f"mix-{_digest(self.data_settings(spec))}"


def _portable(path: str | None) -> str | None:
    """A sweep's own pool files are named relative to the sweep folder, so that cell keys do not change
    with how --out is spelt or where the folder is moved."""
    if path and Path(path).parent.name == POOLS:
        return f"{POOLS}/{Path(path).name}"
    return path


def validation_settings(spec: SweepSpec) -> dict | None:
    """What fixes the validation hold-out (None: no lr choice to make, nothing held out)."""
    grid = spec.lr_grid if isinstance(spec.lr_grid, dict) else {}  # normalised by load_spec / Sweep
    if not any(len(v) > 1 for v in grid.values()):
        return None
    return {"task_examples": spec.validation_task_examples, "general_examples": spec.validation_general_examples,
            "seed": spec.validation_seed}


def _digest(settings: dict) -> str:
    return hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()[:10]


class CellDir:
    """A sweep cell's folder: cell.json (its settings), run/ (a RunDir), eval/ (an EvalDir), validation.json
    (losses on the sweep's validation split) and status.json (done or failed, written last). Its mixture
    lives in the sweep's mixtures/ folder, shared by the cells that train on the same data."""

    def __init__(self, cells_dir: Path, key: str):
        self.key, self.path = key, cells_dir / key
        self.cell_path, self.status_path = self.path / "cell.json", self.path / "status.json"
        self.validation_path = self.path / "validation.json"
        self.run, self.eval = RunDir(self.path / "run"), EvalDir(self.path / "eval")

    def status(self) -> dict:
        """status.json; a cell marked done whose eval (or started run) has lost its metrics.json is "todo" again:
        the rerun redoes what is missing (training resumes or is skipped, eval reuses its predictions)."""
        st = json.loads(self.status_path.read_text()) if self.status_path.is_file() else {"status": "todo"}
        if st["status"] == "done" and (not self.eval.finished() or (self.run.started() and not self.run.finished())):
            return st | {"status": "todo", "redo": "metrics.json missing"}
        return st


def mixture_dir(spec: SweepSpec, out: Path, cell: Cell) -> MixtureDir:
    return MixtureDir(out / "mixtures" / cell.data_key(spec))


def prepare_cell(spec: SweepSpec, out: Path, cell: Cell) -> dict:
    """The cell's mixture (prepared once, shared by the cells with the same data); returns its manifest."""
    data = mixture_dir(spec, out, cell)
    n = train_max_length(spec)
    if data.exists():
        m = data.verify()
        if (m.get("lengths") or {}).get("train_max_length") != n:  # prepared for another training length
            m["lengths"] = length_report([r for _, r in data.records()], n, "keep", m.get("tokenizer") or {})
        return m
    d = cell.data_settings(spec)
    # the settings name the sweep's own pools relative to its folder; prepare reads the real paths
    cfg = PrepareConfig(task=spec.task, general=cell.general_inputs(spec), tokenizer=d["tokenizer"],
                        task_tokens=d["task_tokens"], ratio=d["ratio"], general_tokens=d["general_tokens"],
                        anchor=d["anchor"], no_anchor=not d["anchor"], anchor_placement=d["anchor_placement"],
                        seed=d["seed"], out=str(data.path), progress=False, train_max_length=n,
                        anchor_in_budget=spec.anchor_in_budget,
                        token_cache=str(out / "token_counts"))  # every cell's prepare counts a text once
    return prepare(cfg)


def train_max_length(spec: SweepSpec) -> int:
    """The training length the cells use (their mixtures report the examples over it)."""
    return int(spec.train.get("max_length", TrainConfig.max_length))


def cell_steps(cell: Cell, manifest: dict | None, batch_size: int) -> tuple[int, float]:
    """(optimizer steps, passes over the mixture) a cell trains."""
    if not manifest:
        return 0, 0.0
    examples = manifest["mixture"]["examples"]
    if cell.max_steps:
        return cell.max_steps, cell.max_steps * batch_size / examples
    return optimizer_steps(examples, batch_size), 1.0


def load_spec(path: str) -> SweepSpec:
    spec = build(SweepSpec, yaml_path=path)
    if not spec.model:
        raise TellError("no model", file=path, field="model")
    unknown = [m for m in spec.methods if m not in METHOD_NAMES]
    if unknown:
        raise TellError(f"unknown method(s) {unknown}; expected some of {list(METHOD_NAMES)}", file=path,
                        field="methods")
    needs_task = set(spec.methods) - {"base", "general-only"}
    if needs_task and not (spec.task and spec.task_tokens):
        raise TellError("methods other than base need task data and task_tokens", file=path, field="task_tokens")
    paired = {m.name for m in METHODS.values() if m.per_ratio}
    if paired & set(spec.methods) and not (spec.ratios and spec.general):
        raise TellError("tell and its paired baselines need general data and ratios", file=path, field="ratios")
    if {"tell", "tell-random-anchor"} & set(spec.methods) and not spec.anchor:
        raise TellError("the tell method needs an anchor", file=path, field="anchor")
    if "tell-placebo" in spec.methods and not spec.placebo_general:
        raise TellError("tell-placebo needs placebo general data", file=path, field="placebo_general")
    rule = spec.paired_ratios
    if not (rule in ("all", "max") or isinstance(rule, dict) and set(rule) <= paired | {"default"}
            and set(rule.values()) <= {"all", "max"}):
        raise TellError(f"expected all, max or a mapping of {sorted(paired)} (or default) -> all | max, got {rule!r}",
                        file=path, field="paired_ratios")
    if not (spec.eval or spec.task_eval):
        raise TellError("no eval sets", file=path, field="eval")
    for group, cls in (("train", TrainConfig), ("decoding", EvalConfig)):
        names = {f for f in cls.__dataclass_fields__}
        bad = [k for k in getattr(spec, group) if k not in names]
        if bad:
            raise TellError(f"unknown setting(s) {bad}; expected fields of `tell {'train' if group == 'train' else 'eval'}`",
                            file=path, field=group)
        for k, v in getattr(spec, group).items():  # typed as `tell train --config` would type them
            getattr(spec, group)[k] = check_value(cls, k, v, f"{path} ({group})")
    spec.lr_grid = _lr_grid(spec, path)
    if spec.efficiency_ratio != "all" and not isinstance(spec.efficiency_ratio, (int, float)):
        raise TellError(f"expected a number or 'all', got {spec.efficiency_ratio!r}", file=path, field="efficiency_ratio")
    return spec


def check_eval_sets(spec: SweepSpec, path: str) -> None:
    """Every eval set is a file or a built data set's name, checked when the sweep starts (not in `load_spec`:
    `tell report` and the recipe check read specs whose eval files need not exist on this machine)."""
    from tell.data.builders import BUILDERS

    for group in ("eval", "general_eval", "task_eval"):
        for name in getattr(spec, group):
            p = Path(str(name))
            if p.is_file() or (str(name).partition(":")[0] in BUILDERS and not p.exists()):
                continue
            what = "is a folder" if p.is_dir() else "is neither a file nor a data set name"
            raise TellError(f"eval set '{name}' {what}; expected an eval file or one of {sorted(BUILDERS)} "
                            "(is-en-news:en-is, agieval:SUBTASK)", file=path, field=group)


def _lr_grid(spec: SweepSpec, path: str) -> dict[str, list[float]]:
    """The lr candidates of every trained method: {method: [lr, ...]} (one candidate: no choice to make)."""
    default = float(spec.train.get("learning_rate", TrainConfig.learning_rate))
    raw = spec.lr_grid
    if raw is None:
        raw = {"default": [default]}
    elif isinstance(raw, list):
        raw = {"default": raw}
    if not isinstance(raw, dict):
        raise TellError("expected a list of learning rates or a mapping of method -> list", file=path, field="lr_grid")
    unknown = sorted(set(raw) - set(METHOD_NAMES) - {"default"})
    if unknown:
        raise TellError(f"unknown method(s) {unknown}; expected some of {list(METHOD_NAMES)} or 'default'",
                        file=path, field="lr_grid")
    grid = {}
    for m in spec.methods:
        if m == "base":
            continue
        lrs = raw.get(m, raw.get("default", [default]))
        lrs = [as_float(x) for x in (lrs if isinstance(lrs, list) else [lrs])]  # YAML reads 1e-4 as text
        if not lrs or not all(isinstance(x, (int, float)) and not isinstance(x, bool) and 0 < x < float("inf")
                              for x in lrs):
            raise TellError(f"expected a list of positive learning rates for {m}, got {lrs!r}", file=path,
                            field="lr_grid")
        grid[m] = sorted({float(x) for x in lrs})
    if "learning_rate" in spec.train and any(len(v) > 1 for v in grid.values()):
        raise TellError("give learning rates in lr_grid or train.learning_rate, not both", file=path, field="lr_grid")
    return grid


class Sweep:
    def __init__(self, spec: SweepSpec, out: str | Path, spec_path: str | None = None):
        self.out, self.spec_path = Path(out), spec_path
        self.cells_dir = self.out / "cells"
        self.batch_size = int(spec.train.get("batch_size", 16))
        # a spec built in code (not by load_spec) gets its lr grid normalised here too; doing it twice is a no-op
        spec = replace(spec, lr_grid=_lr_grid(spec, spec_path or "the sweep spec"))
        if "tell-random-anchor" in spec.methods and not spec.random_anchor:
            spec = replace(spec, random_anchor=draw_random_anchor(spec))
        self.spec = hold_out_validation(spec, self.out)

    # ---- the grid -----------------------------------------------------------------------------------------

    def _prepare(self, cell: Cell) -> dict:
        return prepare_cell(self.spec, self.out, cell)

    def _trained(self, method: str, seed: int, **kw) -> list[Cell]:
        """One cell per learning-rate candidate of the method."""
        return [Cell(method, seed, lr=lr, **kw) for lr in self.spec.lr_grid[method]]

    def plan(self) -> list[tuple[Cell, dict | None]]:
        """Every cell with its mixture manifest (None for base). Tell mixtures are prepared first: their
        achieved budgets fix their paired baselines."""
        sp, cells = self.spec, []
        for seed in sp.seeds:
            if "base" in sp.methods:
                cells.append((Cell("base", seed), None))
            for t in sp.task_tokens:
                if "sft" in sp.methods:
                    cells += [(c, self._prepare(c)) for c in self._trained("sft", seed, task_tokens=t, ratio=0.0)]
                for r in sp.ratios:
                    cells += self._plan_ratio(seed, t, r)
        return cells

    def _plan_ratio(self, seed: int, t: int, r: float) -> list[tuple[Cell, dict | None]]:
        sp, cells = self.spec, []
        tell = Cell("tell", seed, task_tokens=t, ratio=r, anchor=True)
        tm = self._prepare(tell) if sp.anchor else None
        if "tell" in sp.methods:
            cells += [(c, tm) for c in self._trained("tell", seed, task_tokens=t, ratio=r, anchor=True)]
        pair = f"tell@{t}/{r:g}/{seed}"
        for method in ("tell-no-anchor", "tell-placebo", "tell-random-anchor"):
            if method in sp.methods and self._paired_at(method, r):
                cells += [(c, self._prepare(c)) for c in self._trained(
                    method, seed, task_tokens=t, ratio=r, pair=pair, anchor=method == "tell-random-anchor")]
        # The paired baselines follow the tell cell's achieved budgets (no anchor: its twin's).
        ref = tm or self._prepare(Cell("tell-no-anchor", seed, task_tokens=t, ratio=r))
        if "general-only" in sp.methods and r > 0 and self._paired_at("general-only", r):
            cells += [(c, self._prepare(c)) for c in self._trained(
                "general-only", seed, ratio=r, general_tokens=ref["budget"]["general_tokens"], pair=pair,
                extra={"task_tokens_requested": t})]
        if "sft-matched" in sp.methods and r > 0 and self._paired_at("sft-matched", r):
            steps = optimizer_steps(ref["mixture"]["examples"], self.batch_size)
            cells += [(c, self._prepare(c)) for c in self._trained("sft-matched", seed, task_tokens=t, ratio=r,
                                                                    max_steps=steps, pair=pair)]
        return cells

    def _paired_at(self, method: str, r: float) -> bool:
        """Whether a method paired with tell runs at ratio r (spec paired_ratios: all, max, or per method)."""
        rule = self.spec.paired_ratios
        rule = rule.get(method, rule.get("default", "all")) if isinstance(rule, dict) else rule
        return rule == "all" or r == max(self.spec.ratios)

    # ---- running ------------------------------------------------------------------------------------------

    def run(self, workers: int = 1, dry_run: bool = False, log=print, executor: ExecutorOptions | None = None
            ) -> list[dict]:
        """Plan, run what is not done on the chosen engine, wait for cells other drivers hold, collect."""
        check_eval_sets(self.spec, self.spec_path or "the sweep spec")  # before any cell trains
        opts = executor or executor_options(self.spec, workers=workers)
        self.out.mkdir(parents=True, exist_ok=True)
        if self.spec_path:
            with atomic_open(self.out / "spec.yaml") as f:
                f.write(Path(self.spec_path).read_text())
        plan = self.plan()
        self._log_plan(plan, log, opts)
        if dry_run:
            return []
        todo = [cell for cell, _ in plan if self._status(cell.key(self.spec)) != "done"]
        from tqdm.auto import tqdm

        with tqdm(total=len(todo), desc="sweep", unit=" cell", disable=None, leave=False) as bar:
            statuses = run_cells(opts, self.spec, self.out, todo, lambda st: (self._report(st, log), bar.update(1)))
        if any(st["status"] == "submitted" for st in statuses):
            log(f"submitted {len(todo)} cell(s) to {opts.name}; run the same `tell sweep` again to collect them")
            return []
        self._wait_for_others([c for c in todo if self._status(c.key(self.spec)) not in ("done", "failed")], log, opts)
        rows = self.collect(plan)
        failed = [c.key(self.spec) for c, _ in plan if self._status(c.key(self.spec)) == "failed"]
        if failed:
            log(f"{len(failed)} cell(s) failed (see their status.json): {failed}")
        self.outcome = {"cells": len(plan), "failed": failed}  # `tell sweep` exits 1 when every cell failed
        return rows

    def _wait_for_others(self, cells: list, log, opts: ExecutorOptions, poll: float = 2.0) -> None:
        """Cells another driver holds: wait until they finish, or run them here once their claim is stale."""
        from tell.experiments.claims import Claim

        if cells:
            log(f"{len(cells)} cell(s) are running under another driver; waiting for them")
        while cells:
            left = []
            for cell in cells:
                cd = CellDir(self.cells_dir, cell.key(self.spec))
                if cd.status()["status"] in ("done", "failed"):
                    continue
                if Claim(cd.path).stale() or not (cd.path / Claim.FILE).exists():
                    self._report(run_cells(ExecutorOptions(), self.spec, self.out, [cell], lambda st: None)[0], log)
                    if self._status(cd.key) in ("done", "failed"):
                        continue
                left.append(cell)
            cells = left
            if cells:
                time.sleep(poll)

    def _log_plan(self, plan, log, opts: ExecutorOptions) -> None:
        """The grid, what each cell trains, and what is left to do (with a time estimate from finished cells)."""
        total_tokens = total_steps = 0
        log(f"{'cell':<28} {'lr':>8} {'task tok':>9} {'general tok':>12} {'ratio':>7} {'passes':>7} {'steps':>6} status")
        for cell, m in plan:
            key = cell.key(self.spec)
            status = self._status(key)
            steps, passes = self.steps(cell, m)
            tokens = m["mixture"]["tokens"] * passes if m else 0
            total_tokens += tokens if status != "done" else 0
            total_steps += steps if status != "done" else 0
            b = m["budget"] if m else {}
            lr = f"{cell.lr:.1e}" if cell.lr else "-"
            log(f"{key:<28} {lr:>8} {b.get('task_tokens', 0):>9,} {b.get('general_tokens', 0):>12,} "
                f"{cell.ratio if cell.ratio is not None else '-':>7} {passes:>7.2f} {steps:>6} {status}")
        evals = len(plan) * (len(self.spec.eval) + len(self.spec.general_eval) + len(self.spec.task_eval))
        log(f"{len(plan)} cells; still to train: {int(total_tokens):,} tokens in {total_steps:,} optimizer steps; "
            f"{evals} cell x eval-set evaluations")
        self._log_lengths(plan, log)
        done = [CellDir(self.cells_dir, p.parent.name).status() for p in self.cells_dir.glob("*/status.json")]
        done = [d for d in done if d["status"] == "done" and d.get("tokens_trained")]
        cells = sum(1 for c, _ in plan if self._status(c.key(self.spec)) != "done")
        gpus = max(opts.gpus_per_cell, 0)
        log(f"executor: {opts.name} ({cells} cell(s) to run; {_placement(opts)})")
        rate, source = None, ""
        if done and total_tokens:
            rate = sum(d["tokens_trained"] for d in done) / sum(d["wall_s"] for d in done)
            source = f"measured: training + eval of the {len(done)} finished cell(s)"
        elif self.spec.throughput and total_tokens:
            rate, source = self.spec.throughput, "declared in the spec (throughput)"
        if rate:
            hours = total_tokens / rate / 3600
            gpu_hours = f", about {hours * gpus:.2f} GPU-hours at {gpus} GPU(s) per cell" if gpus else ""
            log(f"estimate: about {hours * 60:.1f} cell-minutes at {rate:,.0f} tokens/s ({source}){gpu_hours}")

    def _log_lengths(self, plan, log) -> None:
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

    def steps(self, cell: Cell, m: dict | None) -> tuple[int, float]:
        return cell_steps(cell, m, self.batch_size)

    def _status(self, key: str) -> str:
        return CellDir(self.cells_dir, key).status()["status"]

    @staticmethod
    def _report(status: dict, log) -> None:
        if status["status"] == "busy":
            log(f"{status['cell']}: running under another driver ({status.get('owner')})")
            return
        msg = f"{status['cell']}: {status['status']} ({status.get('wall_s', 0):.1f}s)"
        if status["status"] == "failed":
            msg += f": {status['error']}"
        log(msg)

    def collect(self, plan) -> list[dict]:
        """results.csv/.jsonl, item_scores.jsonl and lr_selection.json from the cells' own files."""
        from tell.experiments.results import collect

        return collect(self.spec, self.out, [(c, c.key(self.spec), m) for c, m in plan])


def _placement(opts: ExecutorOptions) -> str:
    if opts.name == "local":
        return f"{opts.workers} worker(s) on this machine, {opts.gpus_per_cell} GPU(s) pinned per worker"
    if opts.name == "ray":
        return (f"one Ray task per cell with {opts.cpus_per_cell} CPU(s) and {opts.gpus_per_cell} GPU(s), on "
                f"{opts.ray_address or os.environ.get('RAY_ADDRESS') or 'a local Ray started for the run'}")
    s = opts.slurm
    return (f"one Slurm job per cell{' (a job array)' if s.get('array', True) else ''}, partition "
            f"{s.get('partition', 'default')}, {opts.gpus_per_cell} GPU(s), {s.get('time_min', 1440)} min")


def executor_options(spec: SweepSpec, *, workers: int | None = None, **cli) -> ExecutorOptions:
    """The spec's `executor:` mapping, with what the command line gives on top (None: not given)."""
    e = dict(spec.executor)
    known = set(ExecutorOptions.__dataclass_fields__)
    unknown = sorted(set(e) - known)
    if unknown:
        raise TellError(f"unknown executor setting(s) {unknown}; expected some of {sorted(known)}", field="executor")
    if workers is not None and workers != 1:
        e["workers"] = workers
    e.update({k: v for k, v in cli.items() if v is not None})
    return ExecutorOptions(**e)


# ---- the validation split ----------------------------------------------------------------------------------

VALIDATION, POOLS = "validation", "pools"


def draw_random_anchor(spec: SweepSpec) -> str:
    """The sweep's random anchor: words of the tokenizer's vocabulary, as many tokens as the anchor (a seeded
    draw, so every run of the sweep gets the same one; it is part of the cells' keys and manifests)."""
    from tell.data.anchor import Anchor, random_anchor
    from tell.models import load_tokenizer

    tok = load_tokenizer(spec.tokenizer or spec.model)
    return random_anchor(tok, Anchor(spec.anchor, spec.anchor_placement), seed=0)["text"]


def hold_out_validation(spec: SweepSpec, out: Path) -> SweepSpec:
    """With an lr grid to choose from, hold task and general examples out of every budget once for the whole
    sweep (validation/task.jsonl, validation/general.jsonl; a seeded choice) and train from the rest
    (pools/). Without a choice to make, the spec is returned as it is. A folder whose split was made with
    other settings or inputs is refused (its cells were chosen on another split)."""
    settings = validation_settings(spec)
    if settings is None:
        return spec
    folder, pools = out / VALIDATION, out / POOLS
    inputs = {"task": [spec.task] if spec.task else [], "general": list(spec.general)}
    ident = settings | {"inputs": {k: [_input_id(i) for i in v] for k, v in inputs.items()}}
    if (folder / "split.json").is_file():
        old = json.loads((folder / "split.json").read_text())
        if old.get("identity") != ident:
            raise TellError("the sweep folder holds a validation split made with other settings or inputs; "
                            "choose a new --out (or restore them)", file=str(folder / "split.json"))
    else:
        split = {name: _split(spec, name, inputs[name], n, folder, pools)
                 for name, n in (("task", settings["task_examples"]), ("general", settings["general_examples"]))}
        write_json(folder / "split.json", {"identity": ident, **split})
    return replace(spec, task=str(pools / "task.jsonl") if spec.task else None,
                   general=[str(pools / "general.jsonl")] if spec.general else [])


def _input_id(spec: str) -> str:
    from tell.data.loading import is_local
    from tell.io import sha256_file

    return f"sha256:{sha256_file(spec)}" if is_local(spec) and Path(spec).is_file() else spec


def _split(spec: SweepSpec, name: str, inputs: list[str], n: int, folder: Path, pools: Path) -> dict:
    from tell.data.loading import load_records

    recs = [r for i in inputs for r in load_records(i, source=name, progress=False).records]
    held_keys = {r.key for r in seeded_order(recs, spec.validation_seed, f"validation-{name}")[:n]}
    held = [r for r in recs if r.key in held_keys]
    pool = [r for r in recs if r.key not in held_keys]  # duplicates of a held-out example go with it
    if inputs and not pool:
        raise TellError(f"the {name} data ({len(recs)} examples) cannot spare {n} for validation",
                        field=f"validation_{name}_examples")
    _write_records(folder / f"{name}.jsonl", held)
    _write_records(pools / f"{name}.jsonl", pool)
    return {"held_out": len(held), "pool": len(pool), "inputs": inputs}


def _write_records(path: Path, recs) -> None:
    with atomic_open(path) as f:
        for r in recs:
            f.write(json.dumps(r.to_json(), ensure_ascii=False) + "\n")


def validation_losses(spec: SweepSpec, out: Path, run: RunDir) -> dict:
    """Mean answer loss of the trained adapter on the held-out task (with the run's anchor) and general
    examples, and the per-example values."""
    from tell.data.loading import load_records
    from tell.eval.loss import answer_losses
    from tell.models import load_for_inference

    model, tok = load_for_inference(spec.model, str(run.path), dtype=spec.train.get("dtype", "auto"))
    anchor = run.anchor()
    doc = {}
    for name in ("task", "general"):
        path = out / VALIDATION / f"{name}.jsonl"
        recs = load_records(str(path), source=name, progress=False).records if path.stat().st_size else []
        if name == "task" and anchor:
            recs = [anchor.apply(r) for r in recs]
        losses = answer_losses(model, tok, recs, max_length=int(spec.train.get("max_length", 1024)))
        finite = [x for x in losses if x == x]
        doc[f"{name}_loss"] = sum(finite) / len(finite) if finite else None
        doc[f"{name}_items"] = len(finite)
    return doc


# ---- one cell ------------------------------------------------------------------------------------------------

def _train_cell(spec: SweepSpec, out: Path, cd: CellDir, cell: Cell) -> tuple[str, int, int]:
    """(adapter run folder, optimizer steps, tokens trained); resumes an interrupted run."""
    from tell.train.run import train

    m = prepare_cell(spec, out, cell)
    if not cd.run.finished():
        train(TrainConfig(**({"save_steps": 0} | spec.train | {
            "mixture": str(mixture_dir(spec, out, cell).path), "model": spec.model, "out": str(cd.run.path),
            "seed": cell.seed, "learning_rate": cell.lr, "max_steps": cell.max_steps, "progress": False,
            "resume": cd.run.started()})))
    if (out / VALIDATION / "split.json").is_file() and not cd.validation_path.is_file():
        write_json(cd.validation_path, validation_losses(spec, out, cd.run))
    steps = cd.run.metrics()["steps"]
    batch_size = int(spec.train.get("batch_size", 16))
    return str(cd.run.path), steps, int(m["mixture"]["tokens"] * cell_steps(cell, m, batch_size)[1])


def run_cell(spec: SweepSpec, out: Path, cell: Cell) -> dict:
    """prepare (cached) -> train (resumed if interrupted) -> validation losses -> eval (resumed).
    Errors are recorded, not raised."""
    from tell.eval.run import evaluate

    cd = CellDir(out / "cells", cell.key(spec))
    cd.path.mkdir(parents=True, exist_ok=True)
    before = earlier_parts_s(cd)
    # status "todo" until the cell ends, with the time of the parts before this one and when this one started
    write_json(cd.status_path, {"cell": cd.key, "status": "todo", "wall_s": before, "started": time.time()})
    write_json(cd.cell_path, cell.settings(spec) | {"key": cd.key, "pair": cell.pair, "data_key": cell.data_key(spec)})
    t0 = time.perf_counter()
    try:
        adapter, steps, tokens = _train_cell(spec, out, cd, cell) if cell.method != "base" else (None, 0, 0)
        evaluate(EvalConfig(**(spec.decoding | {
            "model": spec.model, "adapter": adapter, "data": list(spec.eval),
            "general_data": list(spec.general_eval), "task_data": list(spec.task_eval),
            "data_dir": spec.data_dir, "out": str(cd.eval.path),
            "limit": spec.eval_limit, "sample_seed": cell.seed, "metric": spec.metric, "progress": False,
            # base and no-anchor cells see no anchor; tell cells get theirs from the run's manifest
            "no_anchor": not cell.anchor})))
        status = {"cell": cd.key, "status": "done", "optimizer_steps": steps, "tokens_trained": tokens}
    except Exception as e:  # a failing cell must not stop the sweep
        status = {"cell": cd.key, "status": "failed", "error": f"{type(e).__name__}: {e}",
                  "traceback": traceback.format_exc()[-4000:]}
    status["wall_s"] = before + time.perf_counter() - t0  # every part of a resumed cell, not only this one
    write_json(cd.status_path, status)
    return status


def earlier_parts_s(cd: CellDir) -> float:
    """Seconds the cell's earlier unfinished parts ran (a failed one, or one that was killed), so that a resumed
    cell's wall_s counts all of its parts. A killed part wrote no end time: it is counted up to the last file it
    wrote in run/ or eval/ (train_log.jsonl, checkpoints, predictions)."""
    st = cd.status()
    if st["status"] == "done":  # redone from the start: the earlier figures are not this part's
        return 0.0
    before = float(st.get("wall_s") or 0.0)
    if "started" in st:  # the part that wrote this was killed
        files = [p for root in (cd.run.path, cd.eval.path) if root.is_dir() for p in root.rglob("*") if p.is_file()]
        last = max((p.stat().st_mtime for p in files), default=st["started"])
        before += max(0.0, last - st["started"])
    return before
