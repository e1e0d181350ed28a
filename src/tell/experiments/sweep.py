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

import csv
import hashlib
import json
import os
import time
import traceback
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path

from tell.artifacts import EvalDir, MixtureDir, RunDir
from tell.config import EvalConfig, PrepareConfig, SweepSpec, TrainConfig, build
from tell.data.prepare import prepare
from tell.errors import TellError
from tell.experiments.methods import METHOD_NAMES
from tell.io import atomic_open, write_json
from tell.train.schedule import optimizer_steps
RESULT_FIELDS = ("method", "task_tokens", "general_tokens", "ratio", "seed", "set", "metric", "value", "ci_low",
                 "ci_high", "tokens_trained", "optimizer_steps", "wall_s", "run_dir", "task_tokens_requested")


@dataclass
class Cell:
    method: str
    seed: int
    task_tokens: int | None = None     # requested budget (None for base / general-only)
    ratio: float | None = None
    general_tokens: int | None = None  # general-only: the paired tell cell's achieved general tokens
    max_steps: int | None = None       # sft-matched: the paired tell cell's optimizer steps
    anchor: bool = False
    pair: str | None = None            # key of the tell cell a baseline is paired with
    extra: dict = field(default_factory=dict)

    def settings(self, spec: SweepSpec) -> dict:
        s = {"method": self.method, "seed": self.seed, "task_tokens": self.task_tokens, "ratio": self.ratio,
             "general_tokens": self.general_tokens, "max_steps": self.max_steps, "anchor": self.anchor,
             "model": spec.model, "task": spec.task, "general": spec.general, "tokenizer": spec.tokenizer,
             "anchor_text": spec.anchor if self.anchor else None, "anchor_placement": spec.anchor_placement,
             "train": spec.train, "decoding": spec.decoding, "eval": spec.eval, "eval_limit": spec.eval_limit}
        return s

    def key(self, spec: SweepSpec) -> str:
        blob = json.dumps(self.settings(spec), sort_keys=True, default=str)
        return f"{self.method}-{hashlib.sha256(blob.encode()).hexdigest()[:10]}"


class CellDir:
    """A sweep cell's folder: cell.json (its settings), data/ (a MixtureDir), run/ (a RunDir), eval/ (an
    EvalDir) and status.json (done or failed, written last)."""

    def __init__(self, cells_dir: Path, key: str):
        self.key, self.path = key, cells_dir / key
        self.cell_path, self.status_path = self.path / "cell.json", self.path / "status.json"
        self.data, self.run, self.eval = MixtureDir(self.path / "data"), RunDir(self.path / "run"), EvalDir(self.path / "eval")

    def status(self) -> dict:
        return json.loads(self.status_path.read_text()) if self.status_path.is_file() else {"status": "todo"}


def prepare_cell(spec: SweepSpec, cells_dir: Path, cell: Cell) -> dict:
    """The cell's mixture (prepared once, cached in the cell folder); returns its manifest."""
    data = CellDir(cells_dir, cell.key(spec)).data
    if data.exists():
        return data.manifest()
    cfg = PrepareConfig(task=spec.task, general=list(spec.general), tokenizer=spec.tokenizer or spec.model,
                        task_tokens=cell.task_tokens if cell.method != "general-only" else 0,
                        ratio=cell.ratio if cell.general_tokens is None else None,
                        general_tokens=cell.general_tokens, anchor=spec.anchor if cell.anchor else None,
                        no_anchor=not cell.anchor, anchor_placement=spec.anchor_placement, seed=cell.seed,
                        out=str(data.path), progress=False)
    if cell.method in ("sft", "sft-matched"):
        cfg.ratio, cfg.general = 0.0, []
    return prepare(cfg)


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
    if {"tell", "tell-no-anchor", "general-only", "sft-matched"} & set(spec.methods) and not (spec.ratios and spec.general):
        raise TellError("tell and its paired baselines need general data and ratios", file=path, field="ratios")
    if "tell" in spec.methods and not spec.anchor:
        raise TellError("the tell method needs an anchor", file=path, field="anchor")
    if not spec.eval:
        raise TellError("no eval sets", file=path, field="eval")
    for group, cls in (("train", TrainConfig), ("decoding", EvalConfig)):
        names = {f for f in cls.__dataclass_fields__}
        bad = [k for k in getattr(spec, group) if k not in names]
        if bad:
            raise TellError(f"unknown setting(s) {bad}; expected fields of `tell {'train' if group == 'train' else 'eval'}`",
                            file=path, field=group)
    return spec


class Sweep:
    def __init__(self, spec: SweepSpec, out: str | Path, spec_path: str | None = None):
        self.spec, self.out = spec, Path(out)
        self.cells_dir = self.out / "cells"
        self.spec_path = spec_path
        self.batch_size = int(spec.train.get("batch_size", 16))

    # ---- the grid -----------------------------------------------------------------------------------------

    def _prepare(self, cell: Cell) -> dict:
        return prepare_cell(self.spec, self.cells_dir, cell)

    def plan(self) -> list[tuple[Cell, dict | None]]:
        """Every cell with its mixture manifest (None for base). Tell cells are prepared first: their
        achieved budgets fix their paired baselines."""
        sp, cells = self.spec, []
        for seed in sp.seeds:
            if "base" in sp.methods:
                cells.append((Cell("base", seed), None))
            for t in sp.task_tokens:
                if "sft" in sp.methods:
                    c = Cell("sft", seed, task_tokens=t, ratio=0.0)
                    cells.append((c, self._prepare(c)))
                for r in sp.ratios:
                    tell = Cell("tell", seed, task_tokens=t, ratio=r, anchor=True)
                    tm = self._prepare(tell) if sp.anchor else None
                    if "tell" in sp.methods:
                        cells.append((tell, tm))
                    if sp.paired_ratios == "max" and r != max(sp.ratios):
                        continue
                    if "tell-no-anchor" in sp.methods:
                        c = Cell("tell-no-anchor", seed, task_tokens=t, ratio=r)
                        cells.append((c, self._prepare(c)))
                    # The paired baselines follow the tell cell's achieved budgets (no anchor: its twin's).
                    ref = tm or self._prepare(Cell("tell-no-anchor", seed, task_tokens=t, ratio=r))
                    if "general-only" in sp.methods and r > 0:
                        c = Cell("general-only", seed, ratio=r, general_tokens=ref["budget"]["general_tokens"],
                                 pair=tell.key(sp), extra={"task_tokens_requested": t})
                        cells.append((c, self._prepare(c)))
                    if "sft-matched" in sp.methods and r > 0:
                        steps = optimizer_steps(ref["mixture"]["examples"], self.batch_size)
                        c = Cell("sft-matched", seed, task_tokens=t, ratio=r, max_steps=steps, pair=tell.key(sp))
                        cells.append((c, self._prepare(c)))
        return cells

    # ---- running ------------------------------------------------------------------------------------------

    def run(self, workers: int = 1, dry_run: bool = False, log=print) -> list[dict]:
        self.out.mkdir(parents=True, exist_ok=True)
        if self.spec_path:
            with atomic_open(self.out / "spec.yaml") as f:
                f.write(Path(self.spec_path).read_text())
        plan = self.plan()
        total_tokens = total_steps = 0
        log(f"{'cell':<28} {'task tok':>9} {'general tok':>12} {'ratio':>7} {'passes':>7} {'steps':>6} status")
        for cell, m in plan:
            key = cell.key(self.spec)
            status = self._status(key)
            steps, passes = self.steps(cell, m)
            tokens = m["mixture"]["tokens"] * passes if m else 0
            total_tokens += tokens if status != "done" else 0
            total_steps += steps if status != "done" else 0
            b = m["budget"] if m else {}
            log(f"{key:<28} {b.get('task_tokens', 0):>9,} {b.get('general_tokens', 0):>12,} "
                f"{cell.ratio if cell.ratio is not None else '-':>7} {passes:>7.2f} {steps:>6} {status}")
        evals = len(plan) * len(self.spec.eval)
        log(f"{len(plan)} cells; still to train: {int(total_tokens):,} tokens in {total_steps:,} optimizer steps; "
            f"{evals} cell x eval-set evaluations")
        done = [CellDir(self.cells_dir, p.parent.name).status() for p in self.cells_dir.glob("*/status.json")]
        done = [d for d in done if d["status"] == "done" and d.get("tokens_trained")]
        if done and total_tokens:
            rate = sum(d["tokens_trained"] for d in done) / sum(d["wall_s"] for d in done)
            log(f"estimate: about {total_tokens / rate / 60:.1f} min at the {rate:,.0f} tokens/s (training + eval) "
                f"of the {len(done)} finished cell(s)")
        if dry_run:
            return []
        todo = [(cell, m) for cell, m in plan if self._status(cell.key(self.spec)) != "done"]
        if workers <= 1:
            for cell, m in todo:
                self._report(run_cell(self.spec, self.cells_dir, cell), log)
        else:
            threads = max(1, (os.cpu_count() or 1) // workers)
            with ProcessPoolExecutor(max_workers=workers, initializer=_limit_threads, initargs=(threads,)) as ex:
                futures = [ex.submit(run_cell, self.spec, self.cells_dir, cell) for cell, _ in todo]
                for fut in as_completed(futures):
                    self._report(fut.result(), log)
        rows = self.collect(plan)
        failed = [c.key(self.spec) for c, _ in plan if self._status(c.key(self.spec)) == "failed"]
        if failed:
            log(f"{len(failed)} cell(s) failed (see their status.json): {failed}")
        return rows

    def steps(self, cell: Cell, m: dict | None) -> tuple[int, float]:
        return cell_steps(cell, m, self.batch_size)

    def _status(self, key: str) -> str:
        return CellDir(self.cells_dir, key).status()["status"]

    @staticmethod
    def _report(status: dict, log) -> None:
        msg = f"{status['cell']}: {status['status']} ({status.get('wall_s', 0):.1f}s)"
        if status["status"] == "failed":
            msg += f": {status['error']}"
        log(msg)

    def collect(self, plan) -> list[dict]:
        """The tidy results table from every finished cell -> results.csv + results.jsonl."""
        rows = []
        for cell, m in plan:
            cd = CellDir(self.cells_dir, cell.key(self.spec))
            st = cd.status()
            if st["status"] != "done":
                continue
            folder, metrics = cd.path, cd.eval.metrics()
            b = m["budget"] if m else {}
            for set_name, s in metrics["sets"].items():
                for metric, v in s["metrics"].items():
                    rows.append({
                        "method": cell.method, "task_tokens": b.get("task_tokens", 0),
                        "general_tokens": b.get("general_tokens", 0),
                        "ratio": cell.ratio if cell.method not in ("base", "sft") else (0.0 if cell.method == "sft" else None),
                        "seed": cell.seed, "set": set_name, "metric": metric, "value": v["value"],
                        "ci_low": v["ci95"][0], "ci_high": v["ci95"][1],
                        "tokens_trained": st.get("tokens_trained", 0), "optimizer_steps": st.get("optimizer_steps", 0),
                        "wall_s": round(st.get("wall_s", 0.0), 3), "run_dir": str(folder),
                        "task_tokens_requested": cell.task_tokens or cell.extra.get("task_tokens_requested")})
        with atomic_open(self.out / "results.jsonl") as f:
            for r in rows:
                f.write(json.dumps(r) + "\n")
        with atomic_open(self.out / "results.csv") as f:
            w = csv.DictWriter(f, fieldnames=RESULT_FIELDS)
            w.writeheader()
            w.writerows(rows)
        return rows


def _limit_threads(n: int) -> None:
    import torch
    torch.set_num_threads(n)


def _train_cell(spec: SweepSpec, cd: CellDir, cell: Cell) -> tuple[str, int, int]:
    """(adapter run folder, optimizer steps, tokens trained); resumes an interrupted run."""
    from tell.train.run import train

    m = prepare_cell(spec, cd.path.parent, cell)
    if not cd.run.finished():
        train(TrainConfig(**({"save_steps": 0} | spec.train | {
            "mixture": str(cd.data.path), "model": spec.model, "out": str(cd.run.path), "seed": cell.seed,
            "max_steps": cell.max_steps, "progress": False, "resume": cd.run.started()})))
    steps = cd.run.metrics()["steps"]
    batch_size = int(spec.train.get("batch_size", 16))
    return str(cd.run.path), steps, int(m["mixture"]["tokens"] * cell_steps(cell, m, batch_size)[1])


def run_cell(spec: SweepSpec, cells_dir: Path, cell: Cell) -> dict:
    """prepare (cached) -> train (resumed if interrupted) -> eval (resumed). Errors are recorded, not raised."""
    from tell.eval.run import evaluate

    cd = CellDir(cells_dir, cell.key(spec))
    cd.path.mkdir(parents=True, exist_ok=True)
    write_json(cd.cell_path, cell.settings(spec) | {"key": cd.key, "pair": cell.pair})
    t0 = time.perf_counter()
    try:
        adapter, steps, tokens = _train_cell(spec, cd, cell) if cell.method != "base" else (None, 0, 0)
        evaluate(EvalConfig(**(spec.decoding | {
            "model": spec.model, "adapter": adapter, "data": list(spec.eval), "data_dir": spec.data_dir,
            "out": str(cd.eval.path), "limit": spec.eval_limit, "sample_seed": cell.seed,
            "metric": spec.metric, "progress": False,
            # base and no-anchor cells see no anchor; tell cells get theirs from the run's manifest
            "no_anchor": not cell.anchor})))
        status = {"cell": cd.key, "status": "done", "optimizer_steps": steps, "tokens_trained": tokens}
    except Exception as e:  # a failing cell must not stop the sweep
        status = {"cell": cd.key, "status": "failed", "error": f"{type(e).__name__}: {e}",
                  "traceback": traceback.format_exc()[-4000:]}
    status["wall_s"] = time.perf_counter() - t0
    write_json(cd.status_path, status)
    return status
