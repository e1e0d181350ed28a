"""`tell demo`: the whole of tell, for real, in the leverage world, on a laptop CPU in minutes.

1. write the world's data (task pool, task test set, general instructions, pretraining text);
2. pretrain the tiny base model (cached under ~/.cache/tell/demo and reused);
3. run a sweep: base, sft, sft-matched, general-only, tell, tell-no-anchor over task budgets and
   general ratios, with repeats;
4. write the report (plots, tables, token-efficiency) and print the headline numbers.

The results are whatever the runs give: the world is tuned only so that the task is learnable within the
budget (see the findings in benchmarks/RESULTS.md), never so that TELL wins.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from tell.experiments.executors import ExecutorOptions
from tell.experiments.methods import METHOD_NAMES
from tell.synthetic.pretrain import BaseModelConfig, pretrain
from tell.synthetic.world import ANCHOR, World, WorldConfig


@dataclass(frozen=True)
class DemoPlan:
    world: WorldConfig
    base: BaseModelConfig
    task_tokens: tuple[int, ...]
    ratios: tuple[float, ...]
    seeds: tuple[int, ...]
    eval_items: int
    train: dict = field(default_factory=dict)


FULL = DemoPlan(
    world=WorldConfig(n_items=8, min_len=2, max_len=4, pretrain_sentences=20000, general_examples=12000,
                      task_train=400, task_test=64),
    base=BaseModelConfig(hidden=128, layers=2, heads=4, intermediate=384, seq_len=64, batch=32, steps=1000, lr=2e-3),
    task_tokens=(300, 1000, 3000), ratios=(1.0, 3.0, 10.0, 30.0), seeds=(0, 1), eval_items=64,
    train={"learning_rate": 1e-2, "micro_batch_size": 16, "max_length": 128})
QUICK = DemoPlan(
    world=WorldConfig(n_items=8, min_len=2, max_len=4, pretrain_sentences=8000, general_examples=3000,
                      task_train=200, task_test=32),
    base=BaseModelConfig(hidden=128, layers=2, heads=4, intermediate=384, seq_len=64, batch=32, steps=300, lr=2e-3),
    task_tokens=(300, 1000), ratios=(3.0, 10.0), seeds=(0,), eval_items=32,
    train={"learning_rate": 1e-2, "micro_batch_size": 16, "max_length": 128})


def cached_base(world: World, cfg: BaseModelConfig, cache: Path, log=print) -> Path:
    import hashlib
    from dataclasses import asdict

    key = hashlib.sha256(json.dumps([asdict(world.cfg), asdict(cfg)], sort_keys=True).encode()).hexdigest()[:12]
    path = cache / f"base-{key}"
    if (path / "tell_world.json").is_file():
        log(f"[tell demo] using the cached base model {path}")
        return path
    log(f"[tell demo] pretraining the base model ({cfg.steps} steps; cached afterwards in {path})")
    cache.mkdir(parents=True, exist_ok=True)
    return pretrain(world, path, cfg, log=log)


def link_base(cached: Path, dest: Path) -> Path:
    """A copy of the cached base model at a stable path in the demo folder, so that sweep specs of your own
    (examples/sweeps/demo_cpu.yaml) can name it."""
    import shutil

    if not (dest / "tell_world.json").is_file() or (dest / "tell_world.json").read_bytes() != \
            (cached / "tell_world.json").read_bytes():
        tmp = dest.with_name(dest.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.copytree(cached, tmp)
        shutil.rmtree(dest, ignore_errors=True)
        tmp.rename(dest)
    return dest


def spec_for(plan: DemoPlan, files: dict[str, Path], base: Path, name: str) -> dict:
    return {"name": name, "model": str(base), "task": str(files["task_train"]), "general": [str(files["general"])],
            "anchor": ANCHOR, "eval": [str(files["task_test"])], "general_eval": [str(files["general_test"])],
            "eval_limit": plan.eval_items,
            "methods": list(METHOD_NAMES),
            "task_tokens": list(plan.task_tokens), "ratios": list(plan.ratios), "seeds": list(plan.seeds),
            "train": plan.train, "decoding": {"greedy": True, "max_new_tokens": 24, "batch_size": 64, "bootstrap": 1000},
            "primary_metric": "format_adherence", "paired_ratios": "max"}


def run_demo(out: str | Path, quick: bool = False, workers: int = 1, cache: str | Path | None = None,
             log=print, verbose: bool = False) -> Path:
    from tell.experiments.report import make_report
    from tell.experiments.sweep import Sweep, load_spec

    t0 = time.perf_counter()
    plan = QUICK if quick else FULL
    out = Path(out)
    world = World(plan.world)
    log(f"[tell demo] writing the leverage world ({'quick' if quick else 'full'}) into {out / 'world'}")
    files = world.write(out / "world")
    cached = cached_base(world, plan.base, Path(cache or Path.home() / ".cache" / "tell" / "demo"), log=log)
    base = link_base(cached, out / "base")
    spec_path = out / "spec.yaml"
    spec_path.write_text("# tell sweep " + str(spec_path) + " --out " + str(out / "sweep") + "\n"
                         "# written by `tell demo`: the demo's sweep over the leverage world\n"
                         + yaml.safe_dump(spec_for(plan, files, base, "tell demo" + (" --quick" if quick else "")),
                                          sort_keys=False))
    spec = load_spec(str(spec_path))
    log(f"[tell demo] sweep: {len(spec.methods)} methods x task budgets {list(plan.task_tokens)} x ratios "
        f"{list(plan.ratios)} x seeds {list(plan.seeds)}")
    Sweep(spec, out / "sweep", spec_path=str(spec_path)).run(
        log=lambda m: log(f"  {m}"), executor=ExecutorOptions(workers=workers, verbose=verbose))
    report = make_report(out / "sweep", primary="format_adherence", title=spec.name)
    log(headline(out / "sweep"))
    log(f"[tell demo] done in {time.perf_counter() - t0:.0f}s. Report: {report} (and report.html beside it)")
    return report


def headline(sweep_dir: Path) -> str:
    """A few lines: the primary metric per method at the largest ratio, and the report's verdict counts."""
    from collections import Counter

    from tell.experiments.report import aggregate, load_results

    rows = load_results(sweep_dir)
    task_set = next(r["set"] for r in rows if r.get("set") and r.get("role", "task") == "task")
    lines = [f"[tell demo] {task_set}: mean over seeds (healthy runs, learning rates as selected):"]
    for metric in ("format_adherence", "accuracy"):
        agg = aggregate(rows, task_set, metric)
        ratios = sorted({k[2] for k in agg if k[0] == "tell" and k[2] is not None})
        for t in sorted({k[1] for k in agg if k[0] == "tell"}):
            parts = [f"{m} {agg[key]['value']:.2f}" for m, r in (("base", None), ("sft", 0.0), *(
                (m, ratios[-1]) for m in ("sft-matched", "general-only", "tell", "tell-no-anchor")))
                if (key := (m, 0, None) if m == "base" else (m, t, r)) in agg]
            lines.append(f"  {metric} at {t} task tokens (ratio {ratios[-1]:g} where it applies): " + ", ".join(parts))
    findings = sweep_dir / "findings.json"
    verdicts = Counter((f["comparison"], f["verdict"]) for f in json.loads(findings.read_text())) \
        if findings.is_file() else Counter()
    for (comparison, verdict), n in sorted(verdicts.items()):
        lines.append(f"  {comparison}: {verdict} in {n} cell(s) (report: Findings / Forgetting)")
    return "\n".join(lines)
