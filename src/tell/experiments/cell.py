"""One sweep cell: what the grid decided (method, seed, budgets, lr), resolved once into its key, its folder and
the typed configs of its three stages, and `run_cell`, which reads as a recipe: prepare, train, evaluate.

Cells are keyed by a hash of their resolved settings (`Cell.settings`), which name the sweep's own pool files
relative to the sweep folder, so a key does not change with how --out is spelt. Cells that train on the same
data (lr candidates, sft and sft-matched) share one mixture in the sweep's mixtures/ folder.
"""

from __future__ import annotations

import hashlib
import json
import time
import traceback
from dataclasses import dataclass, field, replace
from pathlib import Path

from tell.artifacts import EvalDir, MixtureDir, RunDir, read_json
from tell.errors import TellError
from tell.eval.config import EvalConfig
from tell.experiments.config import SweepSpec
from tell.experiments.methods import METHODS, Method
from tell.experiments.validation import POOLS, VALIDATION, validation_losses, validation_settings
from tell.io import write_json
from tell.models import gguf_provenance
from tell.prepare import PrepareConfig, length_report, prepare
from tell.train.config import TrainConfig
from tell.train.schedule import optimizer_steps


class CellDir:
    """A sweep cell's folder: cell.json (its settings), run/ (a RunDir), eval/ (an EvalDir), validation.json
    (losses on the sweep's validation split) and status.json (done or failed, written last)."""

    def __init__(self, cells_dir: Path, key: str):
        self.key, self.path = key, cells_dir / key
        self.cell_path, self.status_path = self.path / "cell.json", self.path / "status.json"
        self.validation_path = self.path / "validation.json"
        self.run, self.eval = RunDir(self.path / "run"), EvalDir(self.path / "eval")

    def status(self) -> dict:
        """status.json; a cell marked done whose eval (or started run) has lost its metrics.json is "todo" again:
        the rerun redoes what is missing (training resumes or is skipped, eval reuses its predictions)."""
        if not self.status_path.is_file():
            return {"status": "todo"}
        redo = f"delete the cell's folder ({self.path}) and `tell sweep` on the same --out redoes it"
        st = read_json(self.status_path, "a sweep cell's status", redo)
        if not isinstance(st, dict) or st.get("status") not in ("done", "failed", "todo"):
            raise TellError(f"expected an object whose status is done or failed; {redo}", file=str(self.status_path),
                            field="status")
        if st["status"] == "done" and (not self.eval.finished() or (self.run.started() and not self.run.finished())):
            return st | {"status": "todo", "redo": "metrics.json missing"}
        return st


@dataclass(frozen=True)
class Cell:
    """A cell as the grid decides it (the first fields) and as it runs (the rest, resolved by `Cell.make`)."""

    method: str
    seed: int
    task_tokens: int | None = None     # requested budget (None for base / general-only)
    ratio: float | None = None
    general_tokens: int | None = None  # exactly this many general tokens (general-only: the paired tell cell's achieved
    #                                   general tokens; tell and its twins: the spec's general_tokens amount)
    max_steps: int | None = None       # sft-matched: the paired tell cell's optimizer steps
    lr: float | None = None            # the learning rate (one of the method's lr grid); None for base
    pair: str | None = None            # the tell cell a baseline is paired with (method@budget/ratio/seed)
    extra: dict = field(default_factory=dict)
    # resolved once from the spec and the sweep folder
    key: str = ""
    data_key: str = ""
    settings: dict = field(default_factory=dict, repr=False)
    dir: CellDir | None = field(default=None, repr=False)
    mixture: MixtureDir | None = field(default=None, repr=False)
    prepare: PrepareConfig | None = field(default=None, repr=False)  # None for base
    train: TrainConfig | None = field(default=None, repr=False)      # None for base
    eval: EvalConfig | None = field(default=None, repr=False)
    validation: Path | None = field(default=None, repr=False)        # the sweep's split, when lrs are chosen

    @property
    def spec_method(self) -> Method:
        return METHODS[self.method]

    @property
    def anchor(self) -> bool:
        return self.spec_method.anchor is not None

    @property
    def batch_size(self) -> int:
        return self.train.batch_size if self.train else 0

    @classmethod
    def make(cls, spec: SweepSpec, out: Path, method: str, seed: int, **plan) -> "Cell":
        cell = cls(method, seed, **plan)
        data = cell._data_settings(spec)
        settings = {"method": method, "seed": seed, "task_tokens": cell.task_tokens, "ratio": cell.ratio,
                    "general_tokens": cell.general_tokens, "max_steps": cell.max_steps, "anchor": cell.anchor,
                    "lr": cell.lr, "model": spec.model, "data": data, "train": spec.train,
                    "decoding": spec.decoding, "eval": spec.eval, "general_eval": spec.general_eval,
                    "eval_limit": spec.eval_limit, **({"task_eval": spec.task_eval} if spec.task_eval else {}),
                    # a GGUF base is keyed by its file's content: a new release of the package is a new model
                    **({"model_gguf": g["sha256"]} if (g := gguf_provenance(spec.model)) else {})}
        key, data_key = f"{method}-{_digest(settings)}", f"mix-{_digest(data)}"
        cd, mix = CellDir(out / "cells", key), MixtureDir(out / "mixtures" / data_key)
        trains = cell.spec_method.trains
        return replace(cell, key=key, data_key=data_key, settings=settings, dir=cd, mixture=mix,
                       prepare=cell._prepare_config(spec, out, data, mix) if trains else None,
                       train=cell._train_config(spec, cd, mix) if trains else None,
                       eval=cell._eval_config(spec, cd),
                       validation=out / VALIDATION if trains and validation_settings(spec) else None)

    def _general_inputs(self, spec: SweepSpec) -> list[str]:
        """The general data the cell's mixture draws from (none for sft; the placebo set for tell-placebo)."""
        which = self.spec_method.general
        return [] if which is None else list(spec.placebo_general if which == "placebo" else spec.general)

    def _anchor_text(self, spec: SweepSpec) -> str | None:
        which = self.spec_method.anchor
        return None if which is None else (spec.random_anchor if which == "random" else spec.anchor)

    def _data_settings(self, spec: SweepSpec) -> dict:
        """What fixes the cell's mixture: cells that share it (lr candidates, sft and sft-matched) share one."""
        m = self.spec_method
        # base has no mixture: its settings keep the form they have had since 0.1 (the spec's general data, its
        # budget None), so that its key, and so its folder, does not change
        general = self._general_inputs(spec) if m.trains else list(spec.general)
        return {"task": _portable(spec.task), "general": [_portable(g) for g in general],
                "validation": validation_settings(spec), "tokenizer": spec.tokenizer or spec.model,
                "task_tokens": self.task_tokens if m.task or not m.trains else 0,
                "ratio": 0.0 if m.ratio_zero else (self.ratio if self.general_tokens is None else None),
                "general_tokens": self.general_tokens, "anchor": self._anchor_text(spec),
                "anchor_placement": spec.anchor_placement, "seed": self.seed,
                **({"anchor_in_budget": True} if spec.anchor_in_budget else {})}

    def _prepare_config(self, spec: SweepSpec, out: Path, d: dict, mix: MixtureDir) -> PrepareConfig:
        # the settings name the sweep's own pools relative to its folder; prepare reads the real paths
        return PrepareConfig(task=spec.task, general=self._general_inputs(spec), tokenizer=d["tokenizer"],
                             task_tokens=d["task_tokens"], ratio=d["ratio"], general_tokens=d["general_tokens"],
                             anchor=d["anchor"], no_anchor=not d["anchor"], anchor_placement=d["anchor_placement"],
                             seed=d["seed"], out=str(mix.path), progress=False,
                             train_max_length=spec.train_value("max_length"), anchor_in_budget=spec.anchor_in_budget,
                             token_cache=str(out / "token_counts"))  # every cell's prepare counts a text once

    def _train_config(self, spec: SweepSpec, cd: CellDir, mix: MixtureDir) -> TrainConfig:
        return TrainConfig(**({"save_steps": 0} | spec.train | {
            "mixture": str(mix.path), "model": spec.model, "out": str(cd.run.path), "seed": self.seed,
            "learning_rate": self.lr, "max_steps": self.max_steps, "progress": False}))

    def _eval_config(self, spec: SweepSpec, cd: CellDir) -> EvalConfig:
        # a named train template is the base cell's too (trained cells' adapters carry it in their tokenizer)
        template = {"template": spec.train["template"]} if spec.train.get("template") not in (None, "model") else {}
        return EvalConfig(**(template | spec.decoding | {
            "model": spec.model, "adapter": str(cd.run.path) if self.spec_method.trains else None,
            "data": list(spec.eval), "general_data": list(spec.general_eval), "task_data": list(spec.task_eval),
            "data_dir": spec.data_dir, "out": str(cd.eval.path), "limit": spec.eval_limit,
            "sample_seed": self.seed, "metric": spec.metric, "progress": False,
            # base and no-anchor cells see no anchor; tell cells get theirs from the run's manifest
            "no_anchor": not self.anchor}))

    def steps(self, manifest: dict | None) -> tuple[int, float]:
        """(optimizer steps, passes over the mixture) the cell trains."""
        if not manifest or not self.train:
            return 0, 0.0
        examples = manifest["mixture"]["examples"]
        if self.max_steps:  # sft-matched (a sweep refuses train.max_steps: this is the cell's own)
            return self.max_steps, self.max_steps * self.batch_size / examples
        return optimizer_steps(examples, self.batch_size, self.train.epochs), self.train.epochs


def _portable(path: str | dict | None) -> str | dict | None:
    """A sweep's own pool files are named relative to the sweep folder, so that cell keys do not change
    with how --out is spelt or where the folder is moved. A mapped input ({path, columns, ...}) is kept whole."""
    if isinstance(path, dict):
        return path
    if path and Path(path).parent.name == POOLS:
        return f"{POOLS}/{Path(path).name}"
    return path


def _digest(settings: dict) -> str:
    return hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()[:10]


# ---- running one cell ----------------------------------------------------------------------------------------

def prepare_cell(cell: Cell) -> dict:
    """The cell's mixture (prepared once, shared by the cells with the same data); returns its manifest. Two
    drivers planning one sweep folder at once prepare it once: the second waits on a lock beside the folder,
    then reads what the first wrote."""
    from tell.io import exclusive_lock

    cell.mixture.path.parent.mkdir(parents=True, exist_ok=True)
    with exclusive_lock(cell.mixture.path.with_name(cell.mixture.path.name + ".lock"), lambda: None):
        if not cell.mixture.exists():
            return prepare(cell.prepare)
    m = cell.mixture.verify()  # prepared by an earlier cell or driver: read back and verified
    n = cell.prepare.train_max_length
    if (m.get("lengths") or {}).get("train_max_length") != n:  # prepared for another training length
        m["lengths"] = length_report([r for _, r in cell.mixture.records()], n, "keep", m.get("tokenizer") or {})
    return m


def train_cell(cell: Cell) -> tuple[str, int, int]:
    """(adapter run folder, optimizer steps, tokens trained); resumes an interrupted run."""
    from tell.train.run import train

    cd = cell.dir
    m = prepare_cell(cell)
    if not cd.run.finished():
        train(replace(cell.train, resume=cd.run.started()))
    if cell.validation is not None and not cd.validation_path.is_file():
        write_json(cd.validation_path, validation_losses(cell.validation, cell.train.model, cd.run,
                                                         dtype=cell.train.dtype, max_length=cell.train.max_length))
    return str(cd.run.path), cd.run.metrics()["steps"], int(m["mixture"]["tokens"] * cell.steps(m)[1])


def run_cell(cell: Cell) -> dict:
    """prepare (cached) -> train (resumed if interrupted) -> validation losses -> eval (resumed).
    Errors are recorded, not raised."""
    from tell.eval.run import evaluate

    cd = cell.dir
    cd.path.mkdir(parents=True, exist_ok=True)
    before = earlier_parts_s(cd)
    # status "todo" until the cell ends, with the time of the parts before this one and when this one started
    write_json(cd.status_path, {"cell": cd.key, "status": "todo", "wall_s": before, "started": time.time()})
    write_json(cd.cell_path, cell.settings | {"key": cd.key, "pair": cell.pair, "data_key": cell.data_key})
    t0 = time.perf_counter()
    try:
        steps, tokens = train_cell(cell)[1:] if cell.train else (0, 0)
        reuse_greedy_base(cell)
        evaluate(cell.eval)
        status = {"cell": cd.key, "status": "done", "optimizer_steps": steps, "tokens_trained": tokens}
    except Exception as e:  # a failing cell must not stop the sweep
        status = {"cell": cd.key, "status": "failed", "error": f"{type(e).__name__}: {e}",
                  "traceback": traceback.format_exc()[-4000:]}
    status["wall_s"] = before + time.perf_counter() - t0  # every part of a resumed cell, not only this one
    write_json(cd.status_path, status)
    return status


def _seedless(settings: dict) -> dict:
    s = {k: v for k, v in settings.items() if k not in ("seed", "key", "pair", "data_key")}
    return s | {"data": {k: v for k, v in (s.get("data") or {}).items() if k != "seed"}}


def reuse_greedy_base(cell: Cell) -> None:
    """Greedy decoding makes the base model answer the same at every seed: a base cell with no predictions yet
    starts from those of a base cell of another seed (same settings otherwise). The eval store redoes any row
    whose `made_by` (which leaves the sampling seed out under greedy decoding) differs, so a copy is never
    trusted blindly; a partial copy (the other cell still running) is resumed."""
    import shutil

    from tell.io import atomic_open

    mine = cell.dir.eval.predictions_path
    if cell.train is not None or not cell.eval.greedy or mine.exists():
        return
    want = _seedless(json.loads(json.dumps(cell.settings, default=str)))  # as cell.json holds it
    for other in sorted(cell.dir.path.parent.glob("base-*/cell.json")):
        theirs = EvalDir(other.parent / "eval").predictions_path
        if other.parent == cell.dir.path or not theirs.is_file():
            continue
        if _seedless(json.loads(other.read_text(encoding="utf-8"))) == want:
            mine.parent.mkdir(parents=True, exist_ok=True)
            with open(theirs, encoding="utf-8") as src, atomic_open(mine) as dst:
                shutil.copyfileobj(src, dst)
            return


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
