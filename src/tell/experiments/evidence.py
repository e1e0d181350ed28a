"""The evidence of a sweep folder, as numbers: points (intervals over seeds and items), paired comparisons with
verdicts, forgetting against the base model, scaling fits and token-efficiency, and notes on what the folder
cannot give. No plotting and no file writes: `tell.experiments.report` renders what `gather` returns, and the
pre-registered study (`tell.synthetic.study`) judges its hypotheses on the same numbers.

Inputs (only `results.jsonl` is required; whatever else is missing becomes a note):

* `results.jsonl`: one row per (cell, eval set, metric); rows with `health` other than "ok" (or None, the
  base model) are used nowhere but Run health; rows with `selected` False (learning-rate candidates the rule
  did not keep) only in the lr-selection table.
* `item_scores.jsonl`: per-item scores, so that intervals are a bootstrap over seeds AND items, crossed, and
  comparisons are paired on the same seeds and items (`tell.experiments.stats`). Without them a point's
  interval is the seed min/max of per-seed item intervals, which is not a confidence interval, and no
  comparison gets a verdict.
* `lr_selection.json`: every learning-rate candidate, the chosen one and the declared rule.
* `spec.yaml`: `primary_metric`, `efficiency_ratio` (declared before running), `seeds`.
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from tell.errors import TellError
from tell.experiments.majority import LABEL_METRICS, beside_majority as _beside_majority, majority as _majority
from tell.experiments import controls as ctl
from tell.eval.kinds import LOWER_IS_BETTER_NAMES
from tell.experiments.stats import Resampler, estimate, fit_scaling, paired, token_efficiency


RESAMPLES = 1000        # bootstrap replicates per interval

BOOT_SEED = 0           # the replicates are a function of (seeds, items, RESAMPLES, BOOT_SEED): joint across cells

MIN_SEEDS = 3           # GUIDE §6 rule 4: no verdict with fewer seeds

CROSSED = "95% bootstrap over seeds and items, crossed (tell.experiments.stats.Resampler)"

ENVELOPE = "seed min/max of per-seed item intervals (no item scores: not a confidence interval)"

HOW_CROSSED = ("Each replicate draws the seeds with replacement and one resample of the test items shared by every "
               "drawn seed; comparisons are paired on the same seeds and items (`tell.experiments.stats`).")

HOW_ENVELOPE = ("Without item scores there is no bootstrap: comparisons are differences of seed means on the common "
                "seeds, with no interval and no verdict.")

NO_VERDICT = f"fewer than {MIN_SEEDS} seeds: no verdict"

NO_ITEMS_VERDICT = "no verdict (no item scores: no paired interval)"

COMPARISONS = (("tell vs sft", "sft", False), ("tell vs sft-matched", "sft-matched", True),
               ("tell vs tell-no-anchor", "tell-no-anchor", True), ("tell vs general-only", "general-only", True),
               ("tell vs tell-placebo", "tell-placebo", True), ("tell vs tell-random-anchor", "tell-random-anchor", True))

VERDICTS = ("better", "worse", "no detectable difference")

_DEFAULTS = {"role": "task", "lr": None, "selected": True, "health": "ok", "health_reason": "", "cell": None}

NOT_JUDGED = "not judged"  # the start of a health reason for runs too short to judge (tell.experiments.results)

def load_results(folder: str | Path) -> list[dict]:
    """The rows of `results.jsonl` as written (old or new columns), each checked to be a row `tell sweep` writes."""
    p = Path(folder) / "results.jsonl"
    if not p.is_file():
        raise TellError("no results.jsonl; expected a folder written by `tell sweep`", file=str(folder))
    return _jsonl_rows(p, _ROW_FIELDS)


_NUMBER = (int, float)
_NAME = (str,)
# what each row must hold (a failed cell's row has no set, metric or value), and the types a value may take
_ROW_FIELDS = {"method": (_NAME, True), "seed": ((int,), True), "set": (_NAME, False), "metric": (_NAME, False),
               "value": (_NUMBER, False), "ratio": (_NUMBER, False), "task_tokens_requested": (_NUMBER, False)}
_ITEM_FIELDS = {"method": (_NAME, True), "seed": ((int,), True), "set": (_NAME, True), "metric": (_NAME, True),
                "ids": ((list,), True), "values": ((list,), True), "ratio": (_NUMBER, False)}
REBUILD = "rebuild it with `tell sweep` on the same --out (finished cells are not rerun)"


def _jsonl_rows(p: Path, fields: dict) -> list[dict]:
    """The JSON objects of a sweep's .jsonl file, one per line, each with `fields` ({name: (types, required)}) of
    the right types; a torn, edited or foreign line is one error naming the file, line and field."""
    rows = []
    for n, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:  # the sweep writes it atomically: a torn line is damage, not data
            raise TellError(f"not a JSON row ({e.msg}); {REBUILD}", file=str(p), line=n) from None
        if not isinstance(row, dict):
            raise TellError(f"expected a JSON object per line, found {type(row).__name__}; {REBUILD}", file=str(p),
                            line=n)
        for name, (types, required) in fields.items():
            v = row.get(name)
            if v is None and not required:
                continue
            if v is None or not isinstance(v, types) or isinstance(v, bool):
                found = "nothing" if v is None else f"{type(v).__name__} {json.dumps(v)[:40]}"
                raise TellError(f"expected {' or '.join(t.__name__ for t in types)}, found {found}; {REBUILD}",
                                file=str(p), line=n, field=name)
        if "ids" in fields and len(row["ids"]) != len(row["values"]):
            raise TellError(f"{len(row['ids'])} item ids but {len(row['values'])} scores; {REBUILD}", file=str(p),
                            line=n, field="values")
        rows.append(row)
    return rows


def _normalize(r: dict) -> dict:
    """A row (or item-score line) with the new columns defaulted and its point key fields typed."""
    r = dict(r)
    for k, v in _DEFAULTS.items():
        if r.get(k) is None and not (k == "health" and "health" in r):  # an explicit None health: the base model
            r[k] = v
    r["selected"] = r["selected"] is not False
    r["value"] = r.get("value")
    r["budget"] = r.get("task_tokens_requested") or 0
    r["ratio"] = None if r.get("ratio") is None else float(r["ratio"])
    r["seed"] = int(r["seed"])
    r["cell"] = r["cell"] or r.get("run_dir") or f"{r['method']}/{r['budget']}/{r['ratio']}/{r['seed']}/{r['lr']}"
    return r

def healthy(r: dict) -> bool:
    return r["health"] in ("ok", None)

def unhealthy_cells(rows: list[dict]) -> list[str]:
    """The cells a health control counts: every selected unstable one, and every failed cell the lr rule could
    have selected, selected or not (a method whose every lr candidate failed has no selected cell at all). A
    failed lr candidate whose sibling (same method, budget, ratio and seed, another lr) is healthy is not counted:
    the rule had a healthy cell to choose there; run health still lists it (issue 37, item 4)."""
    rows = [_normalize(r) for r in rows]
    sibling = lambda r: (r["method"], r["budget"], r["ratio"], r["seed"])  # noqa: E731
    fine = {sibling(r) for r in rows if healthy(r) and r["selected"]}  # a sibling the rule kept
    return sorted({r["cell"] for r in rows if (r["health"] == "failed" and sibling(r) not in fine)
                   or (r["selected"] and not healthy(r))})


def is_evidence(r: dict) -> bool:
    """Healthy and kept by the lr rule: the only rows that become points, fits, comparisons or findings."""
    return healthy(r) and r["selected"]

def point_key(r: dict) -> tuple:
    return r["method"], r["budget"], r["ratio"]

def aggregate(rows: list[dict], set_name: str, metric: str) -> dict[tuple, dict]:
    """(method, requested task budget, ratio) -> value (mean over seeds), lo/hi (seed min/max of the per-seed
    intervals: not a confidence interval), seeds and achieved task / general tokens, over healthy selected rows.
    A quick summary for the demo's headline; the report's own points come from `_points`."""
    groups = defaultdict(list)
    for r in map(_normalize, rows):
        if r["set"] == set_name and r["metric"] == metric and r["value"] is not None and is_evidence(r):
            groups[point_key(r)].append(r)
    out = {}
    for k, rs in groups.items():
        lows = [r["ci_low"] for r in rs if r.get("ci_low") is not None]
        highs = [r["ci_high"] for r in rs if r.get("ci_high") is not None]
        mean = lambda key: sum(r.get(key) or 0 for r in rs) / len(rs)  # noqa: E731
        out[k] = {"value": mean("value"), "lo": min(lows) if lows else None, "hi": max(highs) if highs else None,
                  "seeds": len({r["seed"] for r in rs}), "task_achieved": mean("task_tokens"),
                  "general": mean("general_tokens")}
    return out

@dataclass
class Point:
    """One (method, budget, ratio) cell of a (set, metric) over its seeds."""
    method: str
    budget: int
    ratio: float | None
    value: float
    lo: float | None
    hi: float | None
    seeds: list[int]
    interval: str                       # CROSSED or ENVELOPE
    general: float                      # achieved general tokens (mean over seeds)
    seed_values: dict[int, float]       # per-seed values from results.jsonl
    scores: dict | None = None          # {seed: per-item scores} when item scores exist
    items: int | None = None

@dataclass
class SweepData:
    folder: Path
    rows: list[dict]                    # every row, normalised
    evidence: list[dict]                # healthy and selected
    items: dict                         # (set, metric) -> {point key: {seed: np.ndarray}}
    lr_selection: dict | None
    spec: dict
    notes: list[str]                    # what the folder cannot give, in words
    has_health: bool
    sets: list[str]
    roles: dict[str, str]
    metrics: dict[str, list[str]]
    primary: dict[str, str]
    lower_better: set = field(default_factory=set)  # the (set, metric) pairs that are lower-is-better
    _points: dict = field(default_factory=dict)
    _majority: dict = field(default_factory=dict)

    def points(self, set_name: str, metric: str) -> dict[tuple, Point]:
        if (set_name, metric) not in self._points:
            self._points[(set_name, metric)] = _points(self, set_name, metric)
        return self._points[(set_name, metric)]

    def lower_is_better(self, set_name: str, metric: str) -> bool:
        return (set_name, metric) in self.lower_better

    def interval_kinds(self) -> set[str]:
        """How the intervals of the points computed so far were made (CROSSED, ENVELOPE)."""
        return {p.interval for pts in self._points.values() for p in pts.values()}

    def task_sets(self) -> list[str]:
        return [s for s in self.sets if self.roles[s] != "general"]

    def majority_rate(self, set_name: str) -> dict | None:
        """The majority-class rate of the set's scored items: {rate, label, items}, the label accuracy of answering
        that label to every item (what a label metric must beat to show anything), from the gold labels a cell's
        predictions recorded (every cell scores the same first `eval_limit` items); None without them."""
        if set_name not in self._majority:
            self._majority[set_name] = _majority(self.folder, set_name)
        return self._majority[set_name]

def _read_spec(folder: Path, notes: list[str]) -> dict:
    p = folder / "spec.yaml"
    if not p.is_file():
        notes.append("no spec.yaml: no declared primary metric, efficiency ratio or seeds")
        return {}
    from tell.config import load_yaml  # the one YAML reader: duplicate keys and alias bombs refused

    try:
        return load_yaml(str(p))
    except TellError as e:
        notes.append(f"spec.yaml could not be read ({e}); its declarations are not used")
        return {}


def _read_lr(folder: Path, notes: list[str]) -> dict | None:
    p = folder / "lr_selection.json"
    if not p.is_file():
        notes.append("no lr_selection.json: the folder does not record how learning rates were chosen")
        return None
    from tell.artifacts import read_json

    doc = read_json(p, "the learning-rate choice `tell sweep` writes", REBUILD)
    if not isinstance(doc, dict) or not isinstance(doc.get("groups"), list):
        raise TellError(f"expected an object with a 'groups' list (the learning-rate choice); {REBUILD}",
                        file=str(p))
    return doc

def load_sweep(folder: str | Path, primary: str | None = None) -> SweepData:
    """Everything the report reads from a sweep folder, with defaults for older folders and notes on gaps."""
    folder = Path(folder)
    raw = load_results(folder)
    if not raw:
        raise TellError("results.jsonl holds no finished cell", file=str(folder))
    rows, notes = [_normalize(r) for r in raw], []
    has_health = any("health" in r for r in raw)
    if not has_health:
        notes.append("results.jsonl has no health column (an older sweep): run health was not checked and "
                     "every row is taken as healthy")
    spec = _read_spec(folder, notes)
    _refuse_duplicates(raw, folder / "results.jsonl")
    undefined: dict[str, int] = {}
    for r in rows:  # NaN (label precision with no "yes" predicted) or inf: no number to average, said so
        if isinstance(r["value"], float) and not math.isfinite(r["value"]):
            undefined[f"{r['set']}: {r['metric']}"] = undefined.get(f"{r['set']}: {r['metric']}", 0) + 1
            r["value"] = None
    if undefined:
        notes.append("rows whose value is not a finite number (undefined for that cell, e.g. a precision with "
                     "nothing predicted), left out of every point, comparison and finding: " +
                     ", ".join(f"{k} ({n})" for k, n in undefined.items()))
    evidence = [r for r in rows if is_evidence(r) and r["value"] is not None]
    if not any(r["value"] is not None for r in rows):  # every cell failed: a report of nothing is no result
        cells = {r.get("cell") or id(r): r for r in rows}.values()
        counts = {h: sum(r["health"] == h for r in cells) for h in dict.fromkeys(r["health"] for r in cells)}
        why = next((r.get("health_reason") for r in cells if r.get("health_reason")), "")
        raise TellError(f"results.jsonl holds {len(cells)} cell(s) and none finished with results ("
                        + ", ".join(f"{n} {h}" for h, n in counts.items()) + ")" + (f"; first reason: {why}"[:300]
                                                                                   if why else "")
                        + "; fix what the cells' status.json say and run `tell sweep` again", file=str(folder))
    # A failed cell is one row with no set, metric or value: it belongs to Run health only.
    sets = list(dict.fromkeys(r["set"] for r in rows if r.get("set") is not None and r.get("metric") is not None))
    roles = {s: next((r["role"] for r in rows if r["set"] == s), "task") for s in sets}
    metrics = {s: list(dict.fromkeys(r["metric"] for r in rows if r["set"] == s and r.get("metric") is not None))
               for s in sets}
    want = primary or spec.get("primary_metric")
    prim = {s: want if want in ms else ms[0] for s, ms in metrics.items()}
    lower = {(r["set"], r["metric"]) for r in rows if r.get("metric") is not None and not higher_is_better(r)}
    return SweepData(folder, rows, evidence, _read_items(folder, notes), _read_lr(folder, notes), spec, notes,
                     has_health, sets, roles, metrics, prim, lower)

def _refuse_duplicates(raw: list[dict], path: Path) -> None:
    """A row twice (the same cell, set and metric: an appended copy, a merge of two folders) would be averaged in
    twice: refused by line."""
    seen: dict[tuple, int] = {}
    for n, r in enumerate(raw, 1):
        if r.get("set") is None or r.get("metric") is None:
            continue  # a failed cell's row
        key = (r.get("cell") or r.get("run_dir") or (r["method"], r.get("task_tokens_requested"), r.get("ratio"),
                                                      r["seed"], r.get("lr")), r["set"], r["metric"])
        key = tuple(json.dumps(k, sort_keys=True, default=str) for k in key)
        if key in seen:
            raise TellError(f"the same cell, set and metric as row {seen[key]} (a duplicated row would be averaged "
                            f"in twice); {REBUILD}", file=str(path), line=n)
        seen[key] = n


def _read_items(folder: Path, notes: list[str]) -> dict:
    """(set, metric) -> point key -> {seed: scores}, over healthy selected lines, aligned on the items every
    cell of the set scored."""
    p = folder / "item_scores.jsonl"
    if not p.is_file():
        notes.append("no item_scores.jsonl: intervals are the " + ENVELOPE + "; comparisons get no verdict")
        return {}
    by_set: dict[str, list[dict]] = defaultdict(list)
    for line in _jsonl_rows(p, _ITEM_FIELDS):
        d = _normalize(line)
        if is_evidence(d):
            by_set[d["set"]].append(d)
    out: dict = {}
    for set_name, lines in by_set.items():
        ids = _common_ids(set_name, lines, notes)
        for d in lines:
            vals = np.asarray(d["values"] if d["ids"] == ids else _reorder(d, ids), dtype=np.float64)
            if vals.size == 0 or not np.all(np.isfinite(vals)):
                notes.append(f"{set_name}/{d['metric']}: {d['cell']} has no or non-finite item scores; left out")
                continue
            cell = out.setdefault((set_name, d["metric"]), {}).setdefault(point_key(d), {})
            if d["seed"] in cell:
                notes.append(f"{set_name}/{d['metric']}: two item-score lines for {point_key(d)} seed {d['seed']};"
                             " the first is used")
                continue
            cell[d["seed"]] = vals
    return out

def _common_ids(set_name: str, lines: list[dict], notes: list[str]) -> list:
    common = set(lines[0]["ids"])
    for d in lines[1:]:
        common &= set(d["ids"])
    ids = [i for i in lines[0]["ids"] if i in common]
    most = max(len(d["ids"]) for d in lines)
    if len(ids) < most:
        notes.append(f"{set_name}: {most - len(ids)} item(s) not scored by every cell were left out "
                     f"({len(ids)} items kept, so that every comparison is on the same items)")
    return ids

def _reorder(d: dict, ids: list) -> list:
    pos = {i: j for j, i in enumerate(d["ids"])}
    return [d["values"][pos[i]] for i in ids]

def _points(data: SweepData, set_name: str, metric: str) -> dict[tuple, Point]:
    groups = defaultdict(list)
    for r in data.evidence:
        if r["set"] == set_name and r["metric"] == metric:
            groups[point_key(r)].append(r)
    items = data.items.get((set_name, metric), {})
    out = {}
    for key, rs in groups.items():
        seed_values = {r["seed"]: float(r["value"]) for r in rs}
        general = sum(r.get("general_tokens") or 0 for r in rs) / len(rs)
        sc = items.get(key)
        if sc and set(sc) != set(seed_values):
            data.notes.append(f"{set_name}/{metric} {key}: results rows for seeds {sorted(seed_values)} but item "
                              f"scores for {sorted(sc)}; the point uses the seeds with item scores")
        if sc:
            est = estimate(sc, RESAMPLES, BOOT_SEED)
            out[key] = Point(*key, est["value"], *est["ci95"], sorted(sc), CROSSED, general, seed_values, sc,
                             est["items"])
            continue
        lows = [r["ci_low"] for r in rs if r.get("ci_low") is not None]
        highs = [r["ci_high"] for r in rs if r.get("ci_high") is not None]
        out[key] = Point(*key, sum(seed_values.values()) / len(seed_values), min(lows) if lows else None,
                         max(highs) if highs else None, sorted(seed_values), ENVELOPE, general, seed_values)
    return out

def top_ratios(pts: dict) -> dict:
    """{task budget: tell's largest ratio at it} (with one general amount each budget has its own)."""
    top: dict = {}
    for p in pts.values():
        if p.method == "tell" and p.ratio is not None:
            top[p.budget] = max(top.get(p.budget, p.ratio), p.ratio)
    return top


def find(pts: dict[tuple, Point], method: str, budget: int | None = None, ratio: float | None = None,
         any_ratio: bool = False) -> Point | None:
    """The point of `method` at a budget (None: any, e.g. base) and ratio (any_ratio: whichever it has)."""
    for (m, b, r), p in pts.items():
        if m == method and (budget is None or b == budget) and (any_ratio or r == ratio):
            return p
    return None

def higher_is_better(r: dict) -> bool:
    """A row's direction: the `higher_is_better` its metric kind gave it (`tell.eval.kinds.MetricKind`), or for
    rows of sweeps from before that column, the metric's name (losses and perplexities are lower-is-better)."""
    if r.get("higher_is_better") is not None:
        return bool(r["higher_is_better"])
    return not any(w in str(r.get("metric", "")).lower() for w in LOWER_IS_BETTER_NAMES)


def _orient(lower_is_better: bool, verdict: str) -> str:
    """stats.paired calls a positive difference better; for a lower-is-better metric it is worse."""
    if lower_is_better:
        return {"better": "worse", "worse": "better"}.get(verdict, verdict)
    return verdict


def compare(a: Point, b: Point, metric: str, lower_is_better: bool = False) -> dict | None:
    """a - b paired on their common seeds (and items, when both have item scores); None with no common seed."""
    if a.scores and b.scores and set(a.scores) & set(b.scores):
        try:
            res = paired(a.scores, b.scores, RESAMPLES, BOOT_SEED, MIN_SEEDS)
        except ValueError as e:
            return {"diff": None, "ci95": [None, None], "seeds": 0, "seeds_used": [], "items": None,
                    "a_value": a.value, "b_value": b.value, "verdict": f"no verdict ({e})", "interval": "none"}
        res["verdict"] = _orient(lower_is_better, res["verdict"])
        return {**res, "interval": "paired bootstrap over the common seeds and items"}
    common = sorted(set(a.seed_values) & set(b.seed_values))
    if not common:
        return None
    av = sum(a.seed_values[s] for s in common) / len(common)
    bv = sum(b.seed_values[s] for s in common) / len(common)
    verdict = NO_ITEMS_VERDICT if len(common) >= MIN_SEEDS else f"no verdict ({len(common)} seeds < {MIN_SEEDS})"
    return {"diff": av - bv, "ci95": [None, None], "seeds": len(common), "seeds_used": common, "items": None,
            "a_value": av, "b_value": bv, "verdict": verdict, "interval": "none: no item scores"}

def findings(data: SweepData, set_name: str, metric: str) -> list[dict]:
    """Every tell cell against each baseline that exists at its budget (and ratio): the Findings rows."""
    pts, out = data.points(set_name, metric), []
    tells = sorted((p for p in pts.values() if p.method == "tell"), key=lambda p: (p.budget, p.ratio or 0))
    for t in tells:
        for label, other, same_ratio in COMPARISONS:
            b = find(pts, other, t.budget, t.ratio) if same_ratio else find(pts, other, t.budget, any_ratio=True)
            res = b and _bounded(data, set_name, metric, compare(t, b, metric, data.lower_is_better(set_name, metric)))
            if res:
                out.append({"section": "findings", "set": set_name, "role": data.roles[set_name], "metric": metric,
                            "task_tokens": t.budget, "ratio": t.ratio, "comparison": label,
                            "a": {"method": "tell", "ratio": t.ratio}, "b": {"method": other, "ratio": b.ratio},
                            **res, **_beside_majority(data, set_name, metric, t, b)})
    return out

def _bounded(data: SweepData, set_name: str, metric: str, res: dict | None) -> dict | None:
    """The spec's declared floor and ceiling applied to a comparison (`tell.experiments.controls.bounded`)."""
    if res is None:
        return None
    return ctl.bounded(res, data.spec.get("floor"), data.spec.get("ceiling"), data.lower_is_better(set_name, metric))


def forgetting(data: SweepData, set_name: str, metric: str) -> list[dict]:
    """Every trained cell against the base model on a general set, paired on common seeds and items."""
    pts, out = data.points(set_name, metric), []
    base = find(pts, "base", any_ratio=True)
    if base is None:
        return out
    for p in sorted(pts.values(), key=lambda p: (p.method, p.budget, p.ratio or 0)):
        if p.method == "base":
            continue
        res = _bounded(data, set_name, metric, compare(p, base, metric, data.lower_is_better(set_name, metric)))
        if res:
            out.append({"section": "forgetting", "set": set_name, "role": data.roles[set_name], "metric": metric,
                        "task_tokens": p.budget, "ratio": p.ratio, "comparison": f"{p.method} vs base",
                        "a": {"method": p.method, "ratio": p.ratio}, "b": {"method": "base", "ratio": None}, **res})
    return out

def scaling_fit(data: SweepData, set_name: str, metric: str, budget: int) -> dict:
    """The tell points of one budget on the seeds common to all of them, with joint replicates from one
    Resampler, and `stats.fit_scaling` on them."""
    tells = sorted((p for p in data.points(set_name, metric).values() if p.method == "tell" and p.budget == budget),
                   key=lambda p: p.ratio or 0)
    all_seeds = sorted(set().union(*(p.seeds for p in tells)))
    common = sorted(set.intersection(*(set(p.seeds) for p in tells)))
    res = {"set": set_name, "metric": metric, "task_tokens": budget, "all_seeds": all_seeds, "common_seeds": common,
           "verdict_ok": len(common) >= MIN_SEEDS, "points": []}
    if not common:
        res["fit"] = {"fitted": False, "reason": "no seed is common to every tell point of this budget"}
        return res
    reps = None
    if all(p.scores for p in tells):
        rs = Resampler(common, tells[0].items, RESAMPLES, BOOT_SEED)
        cols = [rs.replicates({s: p.scores[s] for s in common}) for p in tells]
        reps = np.column_stack(cols)
        values = [rs.point({s: p.scores[s] for s in common}) for p in tells]
        cis = [np.percentile(c, [2.5, 97.5]).tolist() for c in cols]
    else:
        values = [sum(p.seed_values[s] for s in common) / len(common) for p in tells]
        cis = [[None, None]] * len(tells)
    res["points"] = [{"ratio": p.ratio, "general": p.general, "value": v, "lo": c[0], "hi": c[1]}
                     for p, v, c in zip(tells, values, cis)]
    res["fit"] = fit_scaling([p.general for p in tells], values, reps)
    return res

def efficiency_ratios(data: SweepData, pts: dict) -> tuple[list[float], str, bool]:
    """The ratios at which token-efficiency is read, the sentence that says why, and whether it was declared."""
    ratios = sorted({p.ratio for p in pts.values() if p.method == "tell" and p.ratio is not None})
    declared = data.spec.get("efficiency_ratio")
    if isinstance(declared, (int, float)) and not isinstance(declared, bool):
        if float(declared) not in ratios:
            return [], f"Read at ratio {declared:g}, declared in the spec; no tell cell has that ratio.", True
        return [float(declared)], (f"Read at ratio {declared:g}, declared in the spec (the other ratios are not "
                                   "read)."), True
    return ratios, ("No single ratio was declared in the spec (efficiency_ratio: "
                    f"{declared if declared is not None else 'none'}), so every ratio is shown and none was chosen: "
                    "do not pick the best one afterwards."), False

def efficiency(sfts: list[Point], tell: Point) -> tuple[dict, list[int]]:
    """stats.token_efficiency for one tell cell, with joint replicates over the seeds common to it and every
    SFT budget. Budgets are the requested task tokens of both (the same definition on both sides)."""
    common = sorted(set(tell.seeds).intersection(*(set(p.seeds) for p in sfts)))
    if not common:
        return {"computed": False, "reason": "no seed is common to the tell cell and every SFT budget"}, []
    budgets = [p.budget for p in sfts]
    if tell.scores and all(p.scores for p in sfts):
        rs = Resampler(common, tell.items, RESAMPLES, BOOT_SEED)
        sub = lambda p: {s: p.scores[s] for s in common}  # noqa: E731
        sv = [rs.point(sub(p)) for p in sfts]
        reps = np.column_stack([rs.replicates(sub(p)) for p in sfts])
        res = token_efficiency(budgets, sv, reps, tell.budget, rs.point(sub(tell)), rs.replicates(sub(tell)))
    else:
        mean = lambda p: sum(p.seed_values[s] for s in common) / len(common)  # noqa: E731
        res = token_efficiency(budgets, [mean(p) for p in sfts], None, tell.budget, mean(tell), None)
    return res, common


# ================================================================================================== gathering

@dataclass
class Evidence:
    """Every number the report shows, computed before anything is rendered (so the notes are complete)."""
    data: SweepData
    findings: dict[str, list[dict]]               # task set -> tell vs each baseline (every metric)
    forgetting: dict[str, list[dict]]             # general set -> every trained cell vs base (every metric)
    fits: dict[tuple[str, str], list[dict]]       # (task set, metric) -> scaling_fit per tell budget
    efficiency: dict[tuple[str, str], dict]       # (task set, metric) -> {why, declared, entries}
    controls: list[dict] = field(default_factory=list)  # the spec's declared controls, measured

    @property
    def judged(self) -> bool:
        """No comparison is judged unless every declared control passed."""
        return not ctl.failed(self.controls)

    def findings_json(self) -> list[dict]:
        """findings.json: the Findings rows, then the Forgetting rows, in the report's order."""
        return [f for fs in self.findings.values() for f in fs] + [f for fs in self.forgetting.values() for f in fs]

    def efficiency_json(self) -> list[dict]:
        """token_efficiency.json: one entry per tell cell read, in the report's order."""
        return [e for eff in self.efficiency.values() for e in eff["entries"]]


def gather(data: SweepData) -> Evidence:
    for s in data.sets:  # every point first: what they find missing goes into the notes
        for m in data.metrics[s]:
            data.points(s, m)
    general = [s for s in data.sets if data.roles[s] == "general"]
    fits, eff = {}, {}
    for s in data.task_sets():
        for m in data.metrics[s]:
            budgets = sorted({p.budget for p in data.points(s, m).values() if p.method == "tell"})
            fits[(s, m)] = [scaling_fit(data, s, m, b) for b in budgets]
            e = efficiency_entries(data, s, m)
            if e is not None:
                eff[(s, m)] = e
    ev = Evidence(data, {s: [f for m in data.metrics[s] for f in findings(data, s, m)] for s in data.task_sets()},
                  {g: [f for m in data.metrics[g] for f in forgetting(data, g, m)] for g in general}, fits, eff)
    declared = data.spec.get("controls") or []
    if declared:
        ev.controls = ctl.check(declared, data, unhealthy_cells(data.rows))
    if not ev.judged:  # the numbers stay; no verdict is drawn from them
        why = f"not judged (control {', '.join(ctl.failed(ev.controls))} failed)"
        for row in ev.findings_json():
            row["verdict"], row["verdict_reason"] = why, "a declared control failed: nothing is judged"
    return ev


def efficiency_entries(data: SweepData, set_name: str, metric: str) -> dict | None:
    """Token-efficiency of every tell cell at the ratios read (None: no SFT ladder or no tell cell)."""
    pts = data.points(set_name, metric)
    sfts = sorted((p for p in pts.values() if p.method == "sft" and p.budget), key=lambda p: p.budget)
    tells = [p for p in pts.values() if p.method == "tell" and p.budget]
    if not sfts or not tells:
        return None
    ratios, why, declared = efficiency_ratios(data, pts)
    entries = []
    for t in sorted((t for t in tells if t.ratio in ratios), key=lambda t: (t.budget, t.ratio)):
        e, common = efficiency(sfts, t)
        entries.append({"set": set_name, "metric": metric, "general_ratio": t.ratio, "tell_task_tokens": t.budget,
                        "declared_ratio": declared, "seeds_used": common, **e,
                        # the keys of the earlier format, kept for readers of it (tell demo's headline)
                        "ratio": e.get("efficiency"), "beyond_sft_curve": e.get("bound") == "lower",
                        "at_or_below_sft_start": e.get("bound") == "upper",
                        "sft_equivalent_tokens": e.get("sft_equivalent_tokens")})
    return {"why": why, "declared": declared, "entries": entries}
