"""A sweep's validation split: with learning rates to choose from, task and general examples are held out of
every budget once for the whole sweep (validation/task.jsonl, validation/general.jsonl; a seeded choice) and
the cells train from the rest (pools/). Each trained cell's answer losses on it choose its method's learning
rate (`tell.experiments.results.LR_RULE`); the test sets are never used to choose anything."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

from tell.artifacts import RunDir
from tell.data.mix import seeded_order
from tell.errors import TellError
from tell.experiments.config import SweepSpec
from tell.io import atomic_open, write_json

VALIDATION, POOLS = "validation", "pools"


def validation_settings(spec: SweepSpec) -> dict | None:
    """What fixes the validation hold-out (None: no lr choice to make, nothing held out)."""
    grid = spec.lr_grid if isinstance(spec.lr_grid, dict) else {}  # normalised by SweepSpec itself
    if not any(len(v) > 1 for v in grid.values()):
        return None
    return {"task_examples": spec.validation_task_examples, "general_examples": spec.validation_general_examples,
            "seed": spec.validation_seed}


def hold_out_validation(spec: SweepSpec, out: Path) -> SweepSpec:
    """The spec whose task and general data are the pools left after the hold-out (made once; without a choice
    to make, the spec as it is). A folder whose split was made with other settings or inputs is refused (its
    cells were chosen on another split)."""
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


def _input_id(spec: str | dict) -> str | dict:
    from tell.data.loading import is_local
    from tell.io import sha256_file

    if isinstance(spec, dict):  # a mapped input: its file by checksum, its mapping as given
        return {k: _input_id(v) if k == "path" else v for k, v in spec.items()}
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


def validation_losses(folder: Path, model_name: str, run: RunDir, *, dtype: str, max_length: int) -> dict:
    """Mean answer loss of the trained adapter on the held-out task (with the run's anchor) and general
    examples of `folder`, and how many items each mean is over."""
    from tell.data.loading import load_records
    from tell.eval.loss import answer_losses
    from tell.models import load_for_inference

    model, tok = load_for_inference(model_name, str(run.path), dtype=dtype)
    anchor = run.anchor()
    doc = {}
    for name in ("task", "general"):
        path = folder / f"{name}.jsonl"
        recs = load_records(str(path), source=name, progress=False).records if path.stat().st_size else []
        if name == "task" and anchor:
            recs = [anchor.apply(r) for r in recs]
        losses = answer_losses(model, tok, recs, max_length=max_length)
        finite = [x for x in losses if x == x]
        doc[f"{name}_loss"] = sum(finite) / len(finite) if finite else None
        doc[f"{name}_items"] = len(finite)
    return doc
