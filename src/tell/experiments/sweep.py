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
import math
import os
import time
import traceback
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path

from tell.config import EvalConfig, PrepareConfig, SweepSpec, TrainConfig, build
from tell.data.prepare import MANIFEST, prepare, read_manifest
from tell.errors import TellError
from tell.io import atomic_open, write_json

METHODS = ("base", "sft", "sft-matched", "general-only", "tell", "tell-no-anchor")
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


def load_spec(path: str) -> SweepSpec:
    spec = build(SweepSpec, yaml_path=path)
    if not spec.model:
        raise TellError("no model", file=path, field="model")
    unknown = [m for m in spec.methods if m not in METHODS]
    if unknown:
        raise TellError(f"unknown method(s) {unknown}; expected some of {list(METHODS)}", file=path, field="methods")
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
        """The cell's mixture (cached in the cell folder); returns its manifest."""
        folder = self.cells_dir / cell.key(self.spec) / "data"
        if (folder / MANIFEST).is_file():
            return read_manifest(folder)
        sp = self.spec
        cfg = PrepareConfig(task=sp.task, general=list(sp.general), tokenizer=sp.tokenizer or sp.model,
                            task_tokens=cell.task_tokens if cell.method != "general-only" else 0,
                            ratio=cell.ratio if cell.general_tokens is None else None,
                            general_tokens=cell.general_tokens, anchor=sp.anchor if cell.anchor else None,
                            no_anchor=not cell.anchor, anchor_placement=sp.anchor_placement, seed=cell.seed,
                            out=str(folder), progress=False)
        if cell.method in ("sft", "sft-matched"):
            cfg.ratio, cfg.general = 0.0, []
        return prepare(cfg)

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
                        steps = math.ceil(ref["mixture"]["examples"] / self.batch_size)
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
        done = [json.loads(p.read_text()) for p in self.cells_dir.glob("*/status.json")]
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
        """(optimizer steps, passes over the mixture) a cell will train."""
        if not m:
            return 0, 0.0
        per_epoch = math.ceil(m["mixture"]["examples"] / self.batch_size)
        if cell.max_steps:
            return cell.max_steps, cell.max_steps * self.batch_size / m["mixture"]["examples"]
        return per_epoch, 1.0

    def _status(self, key: str) -> str:
        p = self.cells_dir / key / "status.json"
        return json.loads(p.read_text())["status"] if p.is_file() else "todo"

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
            folder = self.cells_dir / cell.key(self.spec)
            if self._status(cell.key(self.spec)) != "done":
                continue
            st = json.loads((folder / "status.json").read_text())
            metrics = json.loads((folder / "eval" / "metrics.json").read_text())
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


def run_cell(spec: SweepSpec, cells_dir: Path, cell: Cell) -> dict:
    """prepare (cached) -> train (resumed if interrupted) -> eval (resumed). Errors are recorded, not raised."""
    from tell.eval.run import evaluate
    from tell.train.run import train

    key = cell.key(spec)
    folder = cells_dir / key
    folder.mkdir(parents=True, exist_ok=True)
    write_json(folder / "cell.json", cell.settings(spec) | {"key": key, "pair": cell.pair})
    t0 = time.perf_counter()
    status = {"cell": key, "status": "running"}
    try:
        adapter, steps, tokens = None, 0, 0
        if cell.method != "base":
            sweep = Sweep(spec, cells_dir.parent)
            m = sweep._prepare(cell)
            run = folder / "run"
            if not (run / "metrics.json").is_file():
                tc = TrainConfig(**({"save_steps": 0} | spec.train | {
                    "mixture": str(folder / "data"), "model": spec.model, "out": str(run), "seed": cell.seed,
                    "max_steps": cell.max_steps, "progress": False, "resume": (run / "config.json").is_file()}))
                train(tc)
            tm = json.loads((run / "metrics.json").read_text())
            adapter, steps = str(run), tm["steps"]
            tokens = int(m["mixture"]["tokens"] * sweep.steps(cell, m)[1])
        ec = EvalConfig(**(spec.decoding | {
            "model": spec.model, "adapter": adapter, "data": list(spec.eval), "data_dir": spec.data_dir,
            "out": str(folder / "eval"), "limit": spec.eval_limit, "sample_seed": cell.seed,
            "metric": spec.metric, "progress": False,
            # base and no-anchor cells see no anchor; tell cells get theirs from the run's manifest
            "no_anchor": not cell.anchor}))
        evaluate(ec)
        status = {"cell": key, "status": "done", "optimizer_steps": steps, "tokens_trained": tokens}
    except Exception as e:  # a failing cell must not stop the sweep
        status = {"cell": key, "status": "failed", "error": f"{type(e).__name__}: {e}",
                  "traceback": traceback.format_exc()[-4000:]}
    status["wall_s"] = time.perf_counter() - t0
    write_json(folder / "status.json", status)
    return status
