"""`tell demo`: the whole of tell, for real, in the leverage world, on a laptop CPU in minutes.

1. write the world's data (task pool, task test set, general instructions, pretraining text);
2. pretrain the tiny base model (cached under ~/.cache/tell/demo and reused);
3. run a sweep per base size: base, sft, sft-matched, tell, tell-no-anchor, tell-placebo and tell-random-anchor
   over the plan's ratios and seeds, learning rates chosen on a validation split;
4. write each sweep's report and OUT/study.md: a verdict per hypothesis of docs/study.md (synthetic/study.py).

The results are whatever the runs give: the world was changed only for learnability, once, before the
study (docs/study.md), never so that TELL wins.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from tell.errors import TellError
from tell.experiments.executors import ExecutorOptions
from tell.io import atomic_open
from tell.synthetic.pretrain import BaseModelConfig, pretrain
from tell.synthetic.study import NOT_TESTED
from tell.synthetic.world import ANCHOR, World, WorldConfig


@dataclass(frozen=True)
class DemoPlan:
    name: str
    world: WorldConfig
    bases: dict                        # size -> BaseModelConfig ("small" first; "large" has >= 4x its parameters)
    task_tokens: tuple[int, ...]
    ratios: tuple[float, ...]
    seeds: tuple[int, ...]
    eval_items: int
    lr_grid: tuple[float, ...]
    sft_ladder: tuple[int, ...] = ()   # more sft budgets, floor to ceiling (control C3, H8)
    methods: tuple[str, ...] = ("base", "sft", "sft-matched", "general-only", "tell", "tell-no-anchor",
                                "tell-placebo", "tell-random-anchor")
    paired_ratios: dict = field(default_factory=lambda: {"tell-no-anchor": "all", "default": "max"})
    train: dict = field(default_factory=lambda: {"micro_batch_size": 16, "max_length": 128})
    general_tokens: object = ()        # exact general amounts for tell (a list, or task budget -> list): v4
    paired_task_tokens: tuple[int, ...] = ()  # the budget the paired methods run at (the study's budget): v4
    one_base: str = NOT_TESTED         # H7's verdict with one base model


# Version 3, as calibrated against the positive controls only (docs/study.md section 6, trials 12-14: C1-C5 pass
# at world seeds 0, 1 and 2): 2,500 pretraining steps, a task pool of 2,400, a leverage share of 0.3, 4 examples
# per optimizer step, and an SFT ladder up to 38,400 task tokens.
SMALL = BaseModelConfig(hidden=128, layers=2, heads=4, intermediate=384, seq_len=64, batch=32, steps=2500, lr=2e-3)
# calibration trials 17-18 (docs/study.md section 6): the wider base pretrains longer at a lower learning rate
LARGE = BaseModelConfig(hidden=256, layers=2, heads=4, intermediate=768, seq_len=64, batch=32, steps=5000, lr=1e-3)
WORLD = WorldConfig(task_train=2400, leverage=0.3)
TRAIN = {"batch_size": 4, "micro_batch_size": 4, "max_length": 128}
LADDER = (300, 600, 1200, 2400, 4800, 9600, 19200, 38400)  # sft beyond the study's budget: the SFT curve (C3, H8)
# Version 4 (issue 37; docs/study.md, "Version 4", declared before any v4 cell ran). The world, the small base, the
# training settings and the SFT ladder are version 3's; what changes is where tell is measured.
# The study's task budget by the control-side rule (`tell.synthetic.study.control_side_budget`): a quarter of the
# smallest ladder budget whose sft mean leaves the floor, in calibration trial 21 (control cells only, world seed 0).
BUDGET = 2400
# The general amount: the one C2 was calibrated at (330 x version 3's 150 task tokens; general-only learns the
# cipher from it: C2), the same at every tell budget so that tell's curve in task tokens is read at one amount.
GENERAL = 49_500
# H5's curve in general tokens at the study's budget: 6 amounts, halving down from GENERAL (ratios 0.65 to 20.6).
H5_AMOUNTS = (1550, 3100, 6200, 12_400, 24_750, GENERAL)
PAIRED = {"default": "max"}  # the paired methods at the study's budget and GENERAL only
# The pre-registered study: the small arm (no large base passed C1-C5 at world seeds 0, 1 and 2: calibration
# trials 17-20), tell at half, one and two times the budget, 5 seeds, lr chosen by the rule.
STUDY = DemoPlan("tell demo --study", WORLD, {"small": SMALL}, (BUDGET // 2, BUDGET, 2 * BUDGET), (),
                 (0, 1, 2, 3, 4), 256, (2e-3, 3e-3), LADDER, train=TRAIN, paired_ratios=PAIRED,
                 general_tokens={BUDGET // 2: (GENERAL,), BUDGET: H5_AMOUNTS, 2 * BUDGET: (GENERAL,)},
                 paired_task_tokens=(BUDGET,),
                 one_base="not tested (no large base passes its controls at world seeds 0-2)")
# `tell demo`: the study's paired point with 3 seeds (H1-H4, H6, H8 decidable; H5 needs the general amounts, H7 a
# second base). One learning rate, so that it fits 10 minutes on 2 cores: 3e-3, the one the lr rule kept most often
# among the control cells of calibration trials 12-14 (docs/study.md section 6).
DEMO = DemoPlan("tell demo", WORLD, {"small": SMALL}, (BUDGET,), (), (0, 1, 2), 256, (3e-3,), LADDER, train=TRAIN,
                paired_ratios=PAIRED, general_tokens=(GENERAL,), paired_task_tokens=(BUDGET,))
# CI: a small world and a briefly pretrained base; one seed, so every verdict is "inconclusive". Its general
# amounts (ratios 3 and 10 at its budget) take version 4's path: exact general tokens, paired at one budget.
QUICK = DemoPlan("tell demo --quick",
                 WorldConfig(pretrain_sentences=8000, general_examples=3000, task_train=200, task_test=32,
                             general_test=32),
                 {"small": BaseModelConfig(hidden=128, layers=2, heads=4, intermediate=384, seq_len=64, batch=32,
                                           steps=300, lr=2e-3)},
                 (150,), (), (0,), 32, (1e-2,), general_tokens=(450, 1500), paired_task_tokens=(150,))
PLANS = {"study": STUDY, "demo": DEMO, "quick": QUICK}


SHIPPED = Path(__file__).resolve().parent / "bases"  # pretrained bases shipped with tell (made by MADE_BY)
MADE_BY = "shipped.json"


def base_key(world: World, cfg: BaseModelConfig) -> str:
    """What a base is a function of: the pretraining text's world fields and its own settings."""
    import hashlib
    from dataclasses import asdict

    return hashlib.sha256(json.dumps([world.cfg.pretraining(), asdict(cfg)], sort_keys=True).encode()).hexdigest()[:12]


def shipped_base(key: str, shipped: Path = SHIPPED) -> Path | None:
    """The base shipped with tell for this key, when its model.safetensors has the sha256 its shipped.json
    records (so every machine runs the same base: pretraining is not bit-identical across CPUs); a shipped base
    that is damaged (a file missing, shipped.json unreadable, another sha256) is refused in one line, never used."""
    path = shipped / f"base-{key}"
    if not (path / MADE_BY).is_file():
        return None
    _check_shipped(path)
    return path


def _check_shipped(path: Path) -> dict:
    """shipped.json of a base folder, after checking that its model.safetensors is the one it records."""
    from tell.io import sha256_file

    damaged = "a damaged install; reinstall tell, or run `tell demo --pretrain-base`"
    try:
        made = json.loads((path / MADE_BY).read_text())
        want = made["sha256"]
        got = sha256_file(path / "model.safetensors")
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise TellError(f"the shipped base cannot be read ({type(e).__name__}: {e}): {damaged}",
                        file=str(path)) from None
    if got != want:
        raise TellError(f"the shipped base's model.safetensors has sha256 {got}, its {MADE_BY} records {want}: "
                        f"{damaged}", file=str(path / "model.safetensors"))
    return made


def cached_base(world: World, cfg: BaseModelConfig, cache: Path, log=print, shipped: Path | None = SHIPPED) -> Path:
    """The base model for (world, cfg). With a base shipped for it (and `shipped` given): that base, copied into
    the cache once (a cached copy that is not it, e.g. one pretrained here, is replaced). Otherwise, or with
    `shipped=None` (`tell demo --pretrain-base`): one pretrained on this machine, cached as base-KEY-local when a
    shipped one exists (so neither shadows the other), as base-KEY when none does."""
    import os
    import shutil

    key = base_key(world, cfg)
    ship = shipped_base(key, shipped) if shipped is not None else None
    made = json.loads((ship / MADE_BY).read_text()) if ship else None  # checked by shipped_base
    local = shipped is None and (SHIPPED / f"base-{key}" / MADE_BY).is_file()  # ours, beside the shipped one
    path = cache / (f"base-{key}-local" if local else f"base-{key}")
    if (path / "tell_world.json").is_file() and (made is None or _same_weights(path, made)):
        log(f"[tell demo] using the cached base model {path}"
            + (" (the base shipped with tell)" if (path / MADE_BY).is_file() else ""))
        return path
    cache.mkdir(parents=True, exist_ok=True)
    if ship is not None:
        log(f"[tell demo] using the base model shipped with tell (model.safetensors sha256 {made['sha256'][:16]}..., "
            f"made by `{made.get('command', '?')}` at {made.get('commit', '?')}); cached in {path}")
        tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}")
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.copytree(ship, tmp)
        shutil.rmtree(path, ignore_errors=True)
        os.replace(tmp, path)
        return path
    log(f"[tell demo] pretraining the base model ({cfg.steps} steps; cached afterwards in {path})")
    return pretrain(world, path, cfg, log=log)


def _same_weights(cached: Path, made: dict) -> bool:
    """Whether a cached base is the shipped one (`made`: its shipped.json): the same record and weights."""
    from tell.io import sha256_file

    try:
        return json.loads((cached / MADE_BY).read_text()) == made and \
            sha256_file(cached / "model.safetensors") == made["sha256"]
    except (OSError, ValueError, KeyError):
        return False


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


def spec_for(plan: DemoPlan, files: dict[str, Path], base: Path) -> dict:
    """The plan's sweep spec, with the world's positive controls and the study's floor and ceiling declared in it
    (`tell.synthetic.controls`), so that the sweep's own report judges them as `tell demo`'s study does."""
    from tell.synthetic.controls import declared
    from tell.synthetic.study import CEILING, FLOOR

    general_tokens = ({str(k): list(v) for k, v in plan.general_tokens.items()}
                      if isinstance(plan.general_tokens, dict) else list(plan.general_tokens))
    v4 = {"general_tokens": general_tokens, "paired_task_tokens": list(plan.paired_task_tokens)} \
        if plan.general_tokens else {}
    return {"name": plan.name, "model": str(base), "task": str(files["task_train"]),
            "general": [str(files["general"])], "placebo_general": [str(files["placebo"])],
            "anchor": ANCHOR, "eval": [str(files["task_test"])],
            "general_eval": [str(files["general_test"]), str(files["cipher_test"])],
            "eval_limit": plan.eval_items, "methods": list(plan.methods),
            "task_tokens": list(plan.task_tokens), "sft_ladder": list(plan.sft_ladder), "ratios": list(plan.ratios),
            "seeds": list(plan.seeds), **v4,
            "efficiency_ratio": "all" if plan.general_tokens else max(plan.ratios),
            "lr_grid": list(plan.lr_grid), "train": plan.train,
            "decoding": {"greedy": True, "max_new_tokens": 24, "batch_size": 64, "bootstrap": 200},
            "primary_metric": "accuracy", "paired_ratios": plan.paired_ratios,
            "controls": declared(list(plan.methods)), "floor": FLOOR, "ceiling": CEILING}


def _folders(out: Path, size: str) -> tuple[Path, Path]:
    """(base model copy, sweep folder) of one base size; the small one keeps the plain names."""
    return (out / "base", out / "sweep") if size == "small" else (out / f"base-{size}", out / f"sweep-{size}")


def run_demo(out: str | Path, quick: bool = False, workers: int | None = None, cache: str | Path | None = None,
             log=print, verbose: bool = False, study: bool = False, pretrain_base: bool = False) -> Path:
    from tell.experiments.report import make_report
    from tell.experiments.sweep import Sweep, load_spec
    from tell.synthetic.study import write_study

    import os

    from tell.io import expect_folder

    out = expect_folder(out)  # a file there is refused in one line before any work, not a traceback later
    if cache is not None:
        expect_folder(cache)
    t0 = time.perf_counter()
    plan = PLANS["study" if study else "quick" if quick else "demo"]
    if workers is None:
        workers = 1 if quick else max(1, min(2, os.cpu_count() or 1))
    out = Path(out)
    world = World(plan.world)
    log(f"[tell demo] writing the leverage world into {out / 'world'}")
    files = world.write(out / "world")
    sweeps, bases, fresh = {}, {}, {}
    for size, base_cfg in plan.bases.items():
        msgs: list[str] = []
        cached = cached_base(world, base_cfg, Path(cache or Path.home() / ".cache" / "tell" / "demo"),
                             log=lambda m: (msgs.append(m), log(m)), shipped=None if pretrain_base else SHIPPED)
        fresh[size] = "pretrained" if any("pretraining the base model" in m for m in msgs) else \
            "shipped" if (cached / MADE_BY).is_file() else "cached"
        base_dir, sweep_dir = _folders(out, size)
        bases[size] = link_base(cached, base_dir)
        spec_path = out / ("spec.yaml" if size == "small" else f"spec-{size}.yaml")
        with atomic_open(spec_path) as f:
            f.write(f"# tell sweep {spec_path} --out {sweep_dir}\n# written by `{plan.name}` ({size} base model)\n"
                    + yaml.safe_dump(spec_for(plan, files, bases[size]), sort_keys=False))
        spec = load_spec(str(spec_path))
        amounts = f"general tokens {spec.general_tokens}" if plan.general_tokens else f"ratios {list(plan.ratios)}"
        log(f"[tell demo] {size} base: {len(spec.methods)} methods x task budgets {list(plan.task_tokens)} x "
            f"{amounts} x seeds {list(plan.seeds)} x learning rates {list(plan.lr_grid)}")
        Sweep(spec, sweep_dir, spec_path=str(spec_path)).run(
            log=lambda m: log(f"  {m}"), executor=ExecutorOptions(workers=workers, verbose=verbose))
        make_report(sweep_dir, primary="accuracy", title=f"{plan.name}: {size} base")
        sweeps[size] = sweep_dir
    report = write_study(out, sweeps, study_header(plan, bases, time.perf_counter() - t0, fresh), plan.one_base)
    log(headline(out))
    log(f"[tell demo] done in {time.perf_counter() - t0:.0f}s. Findings: {report}; per-size reports: "
        + ", ".join(str(p / "report.md") for p in sweeps.values()))
    return report


def base_checksum(base: Path) -> str:
    from tell.io import sha256_file

    return sha256_file(base / "model.safetensors")


def study_header(plan: DemoPlan, bases: dict[str, Path], seconds: float, fresh: dict | None = None) -> list[str]:
    from dataclasses import asdict

    lines = [f"# {plan.name}: the leverage world's pre-registered study", "",
             "Hypotheses and decision rules: docs/study.md (written before the study ran). The per-size reports "
             "(report.md in each sweep folder) hold every cell, run health, the learning-rate choice and the plots.",
             "", f"- world: `{json.dumps(asdict(plan.world))}`",
             f"- task budget {list(plan.task_tokens)} tokens; "
             + (f"general tokens {_amounts(plan.general_tokens)} (paired methods at {list(plan.paired_task_tokens)} "
                f"task tokens); " if plan.general_tokens else f"ratios {list(plan.ratios)}; ") + f"seeds {list(plan.seeds)}; "
             f"lr candidates {list(plan.lr_grid)}; {plan.eval_items} test items per set",
             f"- methods {list(plan.methods)}; paired ratios {plan.paired_ratios}"]
    for size, base in bases.items():
        cfg = asdict(plan.bases[size])
        took = json.loads((base / "tell_world.json").read_text()).get("seconds")
        how = (fresh or {}).get(size)
        how = {True: "pretrained", False: "cached"}.get(how, how)  # a study.md header written before 'shipped'
        when = {"pretrained": "pretrained in this run", "shipped": "the base shipped with tell (pretrained once, "
                "bases/*/shipped.json)"}.get(how, "taken from the cache (pretrained earlier)")
        lines.append(f"- {size} base: `{json.dumps(cfg)}`, {_parameters(base):,} parameters, "
                     f"model.safetensors sha256 {base_checksum(base)}; {when}"
                     + (f", pretraining {took:.0f} s" if isinstance(took, (int, float)) else ""))
    lines.append(f"- this run (resumed parts not counted): {seconds:.0f} s, base pretraining included where it ran")
    return lines


def _amounts(general_tokens) -> str:
    """A plan's general amounts in words: one list for every budget, or budget: list."""
    if isinstance(general_tokens, dict):
        return "; ".join(f"at {t:,} task tokens {list(v)}" for t, v in general_tokens.items())
    return f"{list(general_tokens)} at every budget"


def _parameters(base: Path) -> int:
    import math

    from safetensors import safe_open

    with safe_open(str(base / "model.safetensors"), "pt") as f:
        return sum(math.prod(f.get_slice(k).get_shape()) for k in f.keys())


def headline(out: Path) -> str:
    """One line per hypothesis and base size: the verdict (study.json)."""
    from tell.synthetic.study import reach_line

    doc = json.loads((out / "study.json").read_text())
    lines = ["[tell demo] findings (rule and intervals: study.md):"]
    for size, fs in doc["sizes"].items():
        bad = [c for c in fs["controls"] if not c["passed"]]
        lines.append(f"  controls ({size} base): " + ("all passed" if not bad else "FAILED " + "; ".join(
            f"{c['id']} ({c['rule']}; measured {c['value'] if c['value'] is None else round(c['value'], 3)})"
            for c in bad) + " - no hypothesis is judged"))
        if "reach" in fs:
            lines.append(f"  design check ({reach_line(size, fs['reach'])})")
        for hid, f in fs.items():
            if hid not in ("controls", "reach"):
                lines.append(f"  {hid} ({size} base): {f['verdict']} - {f['claim']}; {f['reason']}")
    lines.append(f"  H7: {doc['H7']['verdict']} - {doc['H7']['claim']}")
    return "\n".join(lines)
