"""Where a sweep's cells run: this machine (a process pool, one GPU pinned per worker), a Ray cluster (one
task per cell), or Slurm through submitit (one job per cell, or a job array). tell writes no scheduler:
each engine schedules; tell only submits cells and reads what they wrote.

Every engine runs `run_claimed`: a cell first takes its claim (`tell.experiments.claims`), so two drivers
on one out folder never run the same cell, and a cell another driver finished meanwhile is not redone.
The out folder is assumed shared by every machine (NFS and the like); the cells' own files are the truth
that `results.csv` is rebuilt from.
"""

from __future__ import annotations

import json
import os
import pickle
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from tell.errors import TellError
from tell.experiments.cell import Cell, run_cell
from tell.io import append, atomic_open

EXECUTORS = ("local", "ray", "slurm")


def run_claimed(cell: Cell, verbose: bool = False) -> dict:
    """run_cell under the cell's claim; {"status": "busy"} when a live owner holds it."""
    from tell.experiments.claims import Claim
    from tell.train import run as train_run

    notice = dict(train_run.FEW_STEPS_NOTICE)  # restored after the cell: a driver running cells in-process goes on
    if not verbose:
        quiet_libraries()

    cd = cell.dir
    claim = Claim(cd.path)
    if not claim.acquire():
        train_run.FEW_STEPS_NOTICE.update(notice)
        return {"cell": cd.key, "status": "busy", "owner": (claim.holder() or {}).get("owner")}
    try:
        st = cd.status()
        if st["status"] == "done":  # finished by another driver between our plan and our claim
            return st
        append(cd.path / "attempts.jsonl", json.dumps({"owner": claim.owner, "start": time.time()}) + "\n")
        return run_cell(cell)
    finally:
        claim.release()
        train_run.FEW_STEPS_NOTICE.update(notice)


def quiet_libraries() -> None:
    """A sweep prints one line per cell: the libraries' own bars and notices (weights loading, per-step
    dicts) are turned off in the process that runs cells, unless --verbose; so are the libraries' FutureWarnings
    (deprecations inside transformers / peft / accelerate that a user cannot act on) and tell's per-run "too few
    optimizer steps" notice, which the report's Run health states once for the sweep."""
    import transformers

    from tell.models import ignore_library_warnings
    from tell.train import run as train_run

    ignore_library_warnings(every=True)
    train_run.FEW_STEPS_NOTICE["on"] = False

    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    try:
        import datasets
        datasets.utils.logging.disable_progress_bar()
        datasets.utils.logging.set_verbosity_error()
    except ImportError:
        pass


@dataclass
class ExecutorOptions:
    """How cells are placed; from the spec's `executor:` mapping and the command line."""
    name: str = "local"
    workers: int = 1                 # local: cells in parallel
    gpus_per_cell: int = 0           # local, ray, slurm
    cpus_per_cell: int = 1           # ray, slurm
    ray_address: str | None = None   # ray: an existing cluster (default: RAY_ADDRESS, else a local Ray)
    slurm: dict = field(default_factory=dict)  # partition, time_min, account, array, cluster ("local" for tests)
    wait: bool = True                # slurm: wait for the jobs (False: submit, exit; a later call collects)
    verbose: bool = False            # the libraries' own output (weights-loading bars, notices) in cells


def run_cells(opts: ExecutorOptions, out: Path, cells: list[Cell], on_status: Callable[[dict], None]) -> list[dict]:
    """Run `cells` (of the sweep folder `out`) on the chosen engine; returns the statuses (busy ones included)."""
    if opts.name not in EXECUTORS:
        raise TellError(f"unknown executor '{opts.name}'; expected one of {list(EXECUTORS)}", field="executor")
    engine = {"local": _local, "ray": _ray, "slurm": _slurm}[opts.name]
    return engine(opts, Path(out), cells, on_status)


# ---- local ------------------------------------------------------------------------------------------------

def _local(opts: ExecutorOptions, out: Path, cells: list[Cell], on_status) -> list[dict]:
    from concurrent.futures import ProcessPoolExecutor, as_completed
    import multiprocessing as mp

    statuses = []
    if opts.workers <= 1:
        for cell in cells:
            statuses.append(run_claimed(cell, opts.verbose))
            on_status(statuses[-1])
        return statuses
    gpus = _gpu_count()
    workers = opts.workers
    if gpus and opts.gpus_per_cell:
        workers = min(workers, gpus // opts.gpus_per_cell)
        if workers < 1:
            raise TellError(f"{opts.gpus_per_cell} GPUs per cell but this machine has {gpus}", field="gpus_per_cell")
    ctx = mp.get_context("spawn")  # CUDA_VISIBLE_DEVICES must be set before a worker initialises CUDA
    slots = ctx.Queue()
    for w in range(workers):
        slots.put(list(range(w * opts.gpus_per_cell, (w + 1) * opts.gpus_per_cell)) if gpus else [])
    threads = max(1, (os.cpu_count() or 1) // workers)
    with ProcessPoolExecutor(max_workers=workers, mp_context=ctx, initializer=_init_worker,
                             initargs=(slots, threads)) as ex:
        futures = [ex.submit(run_claimed, cell, opts.verbose) for cell in cells]
        for fut in as_completed(futures):
            statuses.append(fut.result())
            on_status(statuses[-1])
    return statuses


def _gpu_count() -> int:
    try:
        import torch
        return torch.cuda.device_count()
    except Exception:
        return 0


def _init_worker(slots, threads: int) -> None:
    """One worker's GPUs (its own slice, pinned for its whole life) and its share of the CPU threads."""
    gpus = slots.get()
    if gpus:
        os.environ["CUDA_VISIBLE_DEVICES"] = ",".join(map(str, gpus))
    import torch
    torch.set_num_threads(threads)


# ---- ray --------------------------------------------------------------------------------------------------

def _ray(opts: ExecutorOptions, out: Path, cells: list[Cell], on_status) -> list[dict]:
    try:
        import ray
    except ImportError:
        raise TellError("the ray executor needs Ray: pip install -e .[ray]", field="executor") from None
    address = opts.ray_address or os.environ.get("RAY_ADDRESS")
    started = not ray.is_initialized()
    if started:  # an existing cluster when one is named, else a new local Ray for this run ("local": never
        # attach to a leftover local instance, e.g. one a killed driver left behind)
        ray.init(address=address or "local", include_dashboard=False, log_to_driver=False,
                 **({} if address else {"num_cpus": max(os.cpu_count() or 1, opts.cpus_per_cell)}))
    task = ray.remote(num_cpus=opts.cpus_per_cell, num_gpus=opts.gpus_per_cell, max_retries=0)(run_claimed)
    pending = {task.remote(cell, opts.verbose): cell for cell in cells}
    statuses = []
    try:
        while pending:
            done, _ = ray.wait(list(pending), num_returns=1)
            for ref in done:
                cell = pending.pop(ref)
                try:
                    st = ray.get(ref)
                except Exception as e:  # the task itself died (out of memory, node lost): record, go on
                    st = _died(cell, e)
                statuses.append(st)
                on_status(st)
    finally:
        if started:
            ray.shutdown()
    return statuses


def _died(cell: Cell, e: BaseException) -> dict:
    from tell.io import write_json

    cd = cell.dir
    st = {"cell": cd.key, "status": "failed", "error": f"{type(e).__name__}: {e}",
          "traceback": "".join(traceback.format_exception(e))[-4000:], "wall_s": 0.0}
    cd.path.mkdir(parents=True, exist_ok=True)
    write_json(cd.status_path, st)
    return st


# ---- slurm ------------------------------------------------------------------------------------------------

JOBS = "jobs.pkl"  # submitit Job objects of this folder's submitted cells (picklable, as submitit intends)


def _slurm(opts: ExecutorOptions, out: Path, cells: list[Cell], on_status) -> list[dict]:
    try:
        import submitit
    except ImportError:
        raise TellError("the slurm executor needs submitit: pip install -e .[slurm]", field="executor") from None
    folder = out / "slurm"
    jobs = _load_jobs(folder)
    keys = {c.key: c for c in cells}
    # Cells whose job (from an earlier driver) is still queued or running are waited for, not resubmitted.
    attached = {k: j for k, j in jobs.items() if k in keys and not j.done()}
    todo = [c for k, c in keys.items() if k not in attached]
    if todo:
        ex = submitit.AutoExecutor(folder=folder / "%j", cluster=opts.slurm.get("cluster"))
        ex.update_parameters(**_slurm_parameters(opts))
        n = len(todo)
        new = ex.map_array(run_claimed, todo, [opts.verbose] * n) \
            if opts.slurm.get("array", True) else [ex.submit(run_claimed, c, opts.verbose) for c in todo]
        jobs.update({c.key: j for c, j in zip(todo, new)})
        _save_jobs(folder, jobs)
    if not opts.wait:
        return [{"cell": k, "status": "submitted", "job": str(jobs[k].job_id)} for k in keys]
    statuses = []
    for k in keys:
        try:
            st = jobs[k].result()
        except Exception as e:
            st = _died(keys[k], e)
        statuses.append(st)
        on_status(st)
    return statuses


def _slurm_parameters(opts: ExecutorOptions) -> dict:
    s = opts.slurm
    params = {"timeout_min": int(s.get("time_min", 24 * 60)), "cpus_per_task": opts.cpus_per_cell,
              "gpus_per_node": opts.gpus_per_cell, "name": s.get("name", "tell-sweep")}
    if s.get("partition"):
        params["slurm_partition"] = s["partition"]
    if s.get("account"):
        params["slurm_account"] = s["account"]
    if s.get("array_parallelism"):
        params["slurm_array_parallelism"] = int(s["array_parallelism"])
    return params


def _load_jobs(folder: Path) -> dict:
    p = folder / JOBS
    if not p.is_file():
        return {}
    with open(p, "rb") as f:
        return pickle.load(f)


def _save_jobs(folder: Path, jobs: dict) -> None:
    with atomic_open(folder / JOBS, "wb") as f:
        pickle.dump(jobs, f)
