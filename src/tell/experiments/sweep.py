"""`sweep`: the paper's experiments as a grid of cells, each prepare -> train -> eval in its own folder.

Methods (each a recipe over the same data; `T` task-token budgets, `R` general ratios, `S` seeds):
* `base`           the model without training (one cell per seed);
* `sft`            task data only, no anchor, 1 epoch (the paper's SFT), per T x S;
* `sft-matched`    task data only, gone over again and again for exactly the number of optimizer steps
                   of the tell cell it is paired with (T x R x S): the fair baseline the paper lacks;
* `general-only`   the tell cell's general data only (same general tokens), per T x R x S;
* `tell`           anchor + task + general, extensively shuffled, per T x R x S;
* `tell-no-anchor` the same without the anchor.

The grid is planned by `tell.experiments.plan`, each cell is a `tell.experiments.cell.Cell` (keyed by a hash of
its resolved settings) run by `run_cell` on the chosen engine (`tell.experiments.executors`), and the results
table is rebuilt from the cells' own files (`tell.experiments.results`). With one seed the subsets are nested
across budgets (see `tell.data.mix`), so a curve's points differ only in the data added. A rerun skips
finished cells and resumes unfinished ones; a failing cell is recorded with its error and the sweep goes on.
"""

from __future__ import annotations

import json

import time
from dataclasses import dataclass, replace
from pathlib import Path

from tell.config import build
from tell.errors import TellError
from tell.experiments.cell import Cell
from tell.experiments.config import SweepSpec
from tell.experiments.executors import ExecutorOptions, run_cells
from tell.experiments.plan import Plan, Planner, log_plan
from tell.experiments.validation import hold_out_validation
from tell.io import atomic_open


def load_spec(path: str) -> SweepSpec:
    """A sweep spec from YAML, checked as it is made (`SweepSpec.__post_init__`); errors name the file."""
    return build(SweepSpec, yaml_path=path)


def check_eval_sets(spec: SweepSpec, path: str) -> None:
    """Every eval set is a file or a built data set's name, checked when the sweep starts (not when the spec is
    made: `tell report` and the recipe check read specs whose eval files need not exist on this machine)."""
    from tell.data.builders import BUILDERS, not_built

    for group in ("eval", "general_eval", "task_eval"):
        for name in getattr(spec, group):
            p = Path(str(name))
            if p.is_file() or (str(name).partition(":")[0] in BUILDERS and not p.exists()):
                continue
            if not p.exists() and (hint := not_built(p)):
                raise TellError(f"eval set '{name}': no such file; {hint}", file=path, field=group)
            what = "is a folder" if p.is_dir() else "is neither a file nor a data set name"
            raise TellError(f"eval set '{name}' {what}; expected an eval file or one of {sorted(BUILDERS)} "
                            "(is-en-news:en-is, agieval:SUBTASK)", file=path, field=group)


CONTAMINATION = "contamination.json"


def check_contamination(spec: SweepSpec, out: Path) -> list[str]:
    """Overlap of the task data every cell draws from with each eval set (`tell.data.contamination`: exact prompt
    copies and 13-gram overlaps, the anchor and the eval set's template left out), at plan time, before any cell
    trains. Written to OUT/contamination.json (the report's header lists it). Exact copies are refused, unless the
    spec declares `contamination: warn`; 13-gram overlaps are reported. Returns the lines for the sweep's log."""
    from tell.data import contamination
    from tell.data.loading import load_records
    from tell.eval.config import EvalConfig
    from tell.eval.run import resolve_set

    if not spec.task:
        return []
    from tell.data.builders import BUILDERS, DATASET_MANIFEST

    task = load_records(spec.task, source="task", progress=False).records
    cfg = EvalConfig(data_dir=spec.data_dir, metric=spec.metric)
    sets, unbuilt = {}, []
    for name in (str(n) for group in ("eval", "task_eval", "general_eval") for n in getattr(spec, group)):
        built = name.partition(":")[0]
        if not Path(name).is_file() and built in BUILDERS and \
                not (Path(spec.data_dir) / built / DATASET_MANIFEST).is_file():
            unbuilt.append(name)  # its first evaluation builds it (a download, maybe): checked on a later run
            continue
        sets.update({es.name: es.records for es in resolve_set(name, cfg)})
    reports = contamination.check(sets, task, None)
    with atomic_open(out / CONTAMINATION) as f:
        f.write(json.dumps({"task": spec.task, "task_examples": len(task), "policy": spec.contamination,
                            "sets": reports, "not_checked": unbuilt}, indent=1, default=str) + "\n")
    lines = [f"contamination: {name}: not checked yet (not built in {spec.data_dir}/; the next run checks it)"
             for name in unbuilt]
    gram = f"ngram{contamination.N}_overlap"
    lines += [f"contamination: {r['eval']}: {r['exact_overlap']} exact copies and {r[gram]} {contamination.N}-gram "
              f"overlaps of {r['examples']} items with the task data ({len(task)} examples; {CONTAMINATION})"
              for r in reports]
    exact = [r for r in reports if r["exact_overlap"]]
    if exact and spec.contamination != "warn":
        r = exact[0]
        raise TellError(f"{r['exact_overlap']} item(s) of eval set {r['eval']!r} are exact copies of task training "
                        f"prompts (rows {r['exact_rows'][:5]}); remove them, or declare `contamination: warn` in the "
                        f"spec to run anyway (see {out / CONTAMINATION})", field="contamination")
    return lines


@dataclass
class Outcome:
    """How a sweep run ended: `tell sweep` exits 1 when every cell failed."""
    cells: int
    failed: list[str]
    submitted: bool = False


class Sweep:
    def __init__(self, spec: SweepSpec, out: str | Path, spec_path: str | None = None):
        self.out, self.spec_path = Path(out), spec_path
        self.cells_dir = self.out / "cells"
        if "tell-random-anchor" in spec.methods and not spec.random_anchor:
            spec = replace(spec, random_anchor=draw_random_anchor(spec))
        self.spec = hold_out_validation(spec, self.out)
        self.outcome: Outcome | None = None

    def plan(self) -> Plan:
        """Every cell with its mixture manifest (None for base)."""
        return Planner(self.spec, self.out).plan()

    def run(self, workers: int = 1, dry_run: bool = False, log=print, executor: ExecutorOptions | None = None
            ) -> list[dict]:
        """Plan, run what is not done on the chosen engine, wait for cells other drivers hold, collect."""
        check_eval_sets(self.spec, self.spec_path or "the sweep spec")  # before any cell trains
        opts = executor or executor_options(self.spec, workers=workers)
        self.out.mkdir(parents=True, exist_ok=True)
        if self.spec_path:
            with atomic_open(self.out / "spec.yaml") as f:
                f.write(Path(self.spec_path).read_text())
        contaminated = check_contamination(self.spec, self.out)  # before any cell is planned or trained
        plan = self.plan()
        log_plan(self.spec, self.cells_dir, plan, log, opts)
        for line in contaminated:
            log(line)
        if dry_run:
            return []
        todo = [cell for cell, _ in plan if _status(cell) != "done"]
        from tqdm.auto import tqdm

        with tqdm(total=len(todo), desc="sweep", unit=" cell", disable=None, leave=False) as bar:
            statuses = run_cells(opts, self.out, todo, lambda st: (_report(st, log), bar.update(1)))
        if any(st["status"] == "submitted" for st in statuses):
            log(f"submitted {len(todo)} cell(s) to {opts.name}; run the same `tell sweep` again to collect them")
            self.outcome = Outcome(len(plan), [], submitted=True)
            return []
        self._wait_for_others([c for c in todo if _status(c) not in ("done", "failed")], log)
        rows = self.collect(plan)
        failed = [c.key for c, _ in plan if _status(c) == "failed"]
        if failed:
            log(f"{len(failed)} cell(s) failed (see their status.json): {failed}")
        self.outcome = Outcome(len(plan), failed)
        return rows

    def _wait_for_others(self, cells: list[Cell], log, poll: float = 2.0) -> None:
        """Cells another driver holds: wait until they finish, or run them here once their claim is stale."""
        from tell.experiments.claims import Claim

        if cells:
            log(f"{len(cells)} cell(s) are running under another driver; waiting for them")
        while cells:
            left = []
            for cell in cells:
                if _status(cell) in ("done", "failed"):
                    continue
                if Claim(cell.dir.path).stale() or not (cell.dir.path / Claim.FILE).exists():
                    _report(run_cells(ExecutorOptions(), self.out, [cell], lambda st: None)[0], log)
                    if _status(cell) in ("done", "failed"):
                        continue
                left.append(cell)
            cells = left
            if cells:
                time.sleep(poll)

    def collect(self, plan: Plan) -> list[dict]:
        """results.csv/.jsonl, item_scores.jsonl and lr_selection.json from the cells' own files."""
        from tell.experiments.results import collect

        return collect(self.out, plan)


def _status(cell: Cell) -> str:
    return cell.dir.status()["status"]


def _report(status: dict, log) -> None:
    if status["status"] == "busy":
        log(f"{status['cell']}: running under another driver ({status.get('owner')})")
        return
    msg = f"{status['cell']}: {status['status']} ({status.get('wall_s', 0):.1f}s)"
    if status["status"] == "failed":
        msg += f": {status['error']}"
    log(msg)


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


def draw_random_anchor(spec: SweepSpec) -> str:
    """The sweep's random anchor: words of the model's vocabulary, as many of the model's tokens as the anchor (a
    seeded draw, so every run of the sweep gets the same one; it is part of the cells' keys and manifests). The
    model's tokenizer, not the budget counter (which may be a SentencePiece file): the model is what reads it."""
    from tell.data.anchor import Anchor, random_anchor
    from tell.models import load_tokenizer

    tok = load_tokenizer(spec.model)
    return random_anchor(tok, Anchor(spec.anchor, spec.anchor_placement), seed=0)["text"]
