"""`report`: a sweep folder's evidence as tables, plots and verdicts a careful reviewer can check (GUIDE §6).

Inputs (only `results.jsonl` is required; whatever else is missing, the report says what it cannot do):

* `results.jsonl`: one row per (cell, eval set, metric); rows with `health` other than "ok" (or None, the
  base model) are listed under Run health and used nowhere else; rows with `selected` False (learning-rate
  candidates the rule did not keep) appear only in the lr-selection table.
* `item_scores.jsonl`: per-item scores, so that intervals are a bootstrap over seeds AND items, crossed, and
  comparisons are paired on the same seeds and items (`tell.experiments.stats`). Without them a point's
  interval is the seed min/max of per-seed item intervals, which is not a confidence interval, and no
  comparison gets a verdict.
* `lr_selection.json`: every learning-rate candidate, the chosen one and the declared rule.
* `spec.yaml`: `primary_metric`, `efficiency_ratio` (declared before running), `seeds`.

Outputs: report.md, report.html (self-contained), report_files/*.png, findings.json (every paired
comparison, machine-readable, the same numbers as the Findings and Forgetting tables) and
token_efficiency.json. Numbers and verdicts are computed here, never typed; the report does not know the
commit it was made from, so whoever publishes it names the commit, the date and the command.
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from tell.errors import TellError
from tell.experiments.methods import METHODS
from tell.experiments.stats import Resampler, estimate, fit_scaling, paired, token_efficiency
from tell.io import atomic_open

RESAMPLES = 1000        # bootstrap replicates per interval
BOOT_SEED = 0           # the replicates are a function of (seeds, items, RESAMPLES, BOOT_SEED): joint across cells
MIN_SEEDS = 3           # GUIDE §6 rule 4: no verdict with fewer seeds
GREY = "#999999"        # methods the table does not know
CROSSED = "95% bootstrap over seeds and items, crossed (tell.experiments.stats.Resampler)"
ENVELOPE = "seed min/max of per-seed item intervals (no item scores: not a confidence interval)"
HOW_CROSSED = ("Each replicate draws the seeds with replacement and one resample of the test items shared by every "
               "drawn seed; comparisons are paired on the same seeds and items (`tell.experiments.stats`).")
HOW_ENVELOPE = ("Without item scores there is no bootstrap: comparisons are differences of seed means on the common "
                "seeds, with no interval and no verdict.")
NO_VERDICT = f"fewer than {MIN_SEEDS} seeds: no verdict"
NO_ITEMS_VERDICT = "no verdict (no item scores: no paired interval)"
# (label, the other method, whether it pairs at the tell cell's ratio; sft has ratio 0 and pairs at the budget)
COMPARISONS = (("tell vs sft", "sft", False), ("tell vs sft-matched", "sft-matched", True),
               ("tell vs tell-no-anchor", "tell-no-anchor", True), ("tell vs general-only", "general-only", True),
               ("tell vs tell-placebo", "tell-placebo", True), ("tell vs tell-random-anchor", "tell-random-anchor", True))
VERDICTS = ("better", "worse", "no detectable difference")
_DEFAULTS = {"role": "task", "lr": None, "selected": True, "health": "ok", "health_reason": "", "cell": None}
NOT_JUDGED = "not judged"  # the start of a health reason for runs too short to judge (tell.experiments.results)
_LOWER_IS_BETTER = ("loss", "perplexity")  # every metric tell's eval writes is higher-is-better


def color(method: str) -> str:
    m = METHODS.get(method)
    return m.color if m else GREY


# ==================================================================================================== loading

def load_results(folder: str | Path) -> list[dict]:
    """The rows of `results.jsonl` as written (old or new columns)."""
    p = Path(folder) / "results.jsonl"
    if not p.is_file():
        raise TellError("no results.jsonl; expected a folder written by `tell sweep`", file=str(folder))
    return [json.loads(line) for line in p.read_text().splitlines() if line.strip()]


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
    _points: dict = field(default_factory=dict)

    def points(self, set_name: str, metric: str) -> dict[tuple, Point]:
        if (set_name, metric) not in self._points:
            self._points[(set_name, metric)] = _points(self, set_name, metric)
        return self._points[(set_name, metric)]

    def task_sets(self) -> list[str]:
        return [s for s in self.sets if self.roles[s] != "general"]


def _read_spec(folder: Path, notes: list[str]) -> dict:
    p = folder / "spec.yaml"
    if not p.is_file():
        notes.append("no spec.yaml: no declared primary metric, efficiency ratio or seeds")
        return {}
    import yaml

    try:
        spec = yaml.safe_load(p.read_text())
    except yaml.YAMLError as e:
        notes.append(f"spec.yaml could not be read ({type(e).__name__}); its declarations are not used")
        return {}
    return spec if isinstance(spec, dict) else {}


def _read_lr(folder: Path, notes: list[str]) -> dict | None:
    p = folder / "lr_selection.json"
    if not p.is_file():
        notes.append("no lr_selection.json: the folder does not record how learning rates were chosen")
        return None
    return json.loads(p.read_text())


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
    evidence = [r for r in rows if is_evidence(r) and r["value"] is not None]
    # A failed cell is one row with no set, metric or value: it belongs to Run health only.
    sets = list(dict.fromkeys(r["set"] for r in rows if r.get("set") is not None and r.get("metric") is not None))
    roles = {s: next((r["role"] for r in rows if r["set"] == s), "task") for s in sets}
    metrics = {s: list(dict.fromkeys(r["metric"] for r in rows if r["set"] == s and r.get("metric") is not None))
               for s in sets}
    want = primary or spec.get("primary_metric")
    prim = {s: want if want in ms else ms[0] for s, ms in metrics.items()}
    return SweepData(folder, rows, evidence, _read_items(folder, notes), _read_lr(folder, notes), spec, notes,
                     has_health, sets, roles, metrics, prim)


def _read_items(folder: Path, notes: list[str]) -> dict:
    """(set, metric) -> point key -> {seed: scores}, over healthy selected lines, aligned on the items every
    cell of the set scored."""
    p = folder / "item_scores.jsonl"
    if not p.is_file():
        notes.append("no item_scores.jsonl: intervals are the " + ENVELOPE + "; comparisons get no verdict")
        return {}
    by_set: dict[str, list[dict]] = defaultdict(list)
    for line in p.read_text().splitlines():
        if line.strip():
            d = _normalize(json.loads(line))
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


def find(pts: dict[tuple, Point], method: str, budget: int | None = None, ratio: float | None = None,
         any_ratio: bool = False) -> Point | None:
    """The point of `method` at a budget (None: any, e.g. base) and ratio (any_ratio: whichever it has)."""
    for (m, b, r), p in pts.items():
        if m == method and (budget is None or b == budget) and (any_ratio or r == ratio):
            return p
    return None


# ================================================================================================ comparisons

def _orient(metric: str, verdict: str) -> str:
    """stats.paired calls a positive difference better; for a lower-is-better metric it is worse."""
    if any(w in metric.lower() for w in _LOWER_IS_BETTER):
        return {"better": "worse", "worse": "better"}.get(verdict, verdict)
    return verdict


def compare(a: Point, b: Point, metric: str) -> dict | None:
    """a - b paired on their common seeds (and items, when both have item scores); None with no common seed."""
    if a.scores and b.scores and set(a.scores) & set(b.scores):
        try:
            res = paired(a.scores, b.scores, RESAMPLES, BOOT_SEED, MIN_SEEDS)
        except ValueError as e:
            return {"diff": None, "ci95": [None, None], "seeds": 0, "seeds_used": [], "items": None,
                    "a_value": a.value, "b_value": b.value, "verdict": f"no verdict ({e})", "interval": "none"}
        res["verdict"] = _orient(metric, res["verdict"])
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
            res = b and compare(t, b, metric)
            if res:
                out.append({"section": "findings", "set": set_name, "role": data.roles[set_name], "metric": metric,
                            "task_tokens": t.budget, "ratio": t.ratio, "comparison": label,
                            "a": {"method": "tell", "ratio": t.ratio}, "b": {"method": other, "ratio": b.ratio},
                            **res})
    return out


def forgetting(data: SweepData, set_name: str, metric: str) -> list[dict]:
    """Every trained cell against the base model on a general set, paired on common seeds and items."""
    pts, out = data.points(set_name, metric), []
    base = find(pts, "base", any_ratio=True)
    if base is None:
        return out
    for p in sorted(pts.values(), key=lambda p: (p.method, p.budget, p.ratio or 0)):
        if p.method == "base":
            continue
        res = compare(p, base, metric)
        if res:
            out.append({"section": "forgetting", "set": set_name, "role": data.roles[set_name], "metric": metric,
                        "task_tokens": p.budget, "ratio": p.ratio, "comparison": f"{p.method} vs base",
                        "a": {"method": p.method, "ratio": p.ratio}, "b": {"method": "base", "ratio": None}, **res})
    return out


# ================================================================================================= formatting

def num(x, digits: int = 4) -> str:
    if x is None:
        return "-"
    return "0" if abs(x) < 1e-12 else f"{x:.{digits}g}"  # a difference of 1e-18 is rounding, not a number


def ci_text(lo, hi) -> str:
    return "-" if lo is None or hi is None else f"[{num(lo)}, {num(hi)}]"


def range_text(lo, hi, fmt=num) -> str:
    """An interval whose ends may lie outside the measured range (None), as stats gives x0 and midpoints."""
    if lo is None and hi is None:
        return "not identified (both ends outside the measured range)"
    return f"[{'below the measured range' if lo is None else fmt(lo)}, {'beyond it' if hi is None else fmt(hi)}]"


def ratio_text(r) -> str:
    return "-" if r is None else f"{r:g}"


def budget_text(b) -> str:
    return "-" if not b else f"{int(b):,}"


def lr_text(lr) -> str:
    return "-" if lr is None else f"{lr:.3g}"


def point_text(p: Point | None) -> str:
    return "-" if p is None else f"{num(p.value)} {ci_text(p.lo, p.hi)} (n={len(p.seeds)})"


def table(header: list[str], rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)] + \
           ["| " + " | ".join(str(c) for c in r) + " |" for r in rows] + [""]


def _slug(*parts) -> str:
    return "_".join(str(p).replace(":", "-").replace("/", "-").replace("+", "p").replace(" ", "-") for p in parts)


# ======================================================================================================= plots

def _fig(width: float = 6.4):
    import matplotlib.pyplot as plt

    return plt.subplots(figsize=(width, 4.2))


def _save(fig, path: Path) -> None:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    with atomic_open(path, "wb") as f:
        f.write(buf.getvalue())


def _finish(fig, ax, figs_dir: Path, stem: str, xlabel: str | None, ylabel: str, title: str,
            logx: bool = True) -> list[str]:
    """Label, save (atomically) and close a figure; return its Markdown lines."""
    import matplotlib.pyplot as plt

    if xlabel:
        if logx:
            ax.set_xscale("log")
        ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    handles, labels = ax.get_legend_handles_labels()
    if handles:
        uniq = dict(zip(labels, handles))
        ax.legend(uniq.values(), uniq.keys(), fontsize=7)
    _save(fig, figs_dir / f"{stem}.png")
    plt.close(fig)
    return [f"![{title}](report_files/{stem}.png)", ""]


def _yerr(pts: list[Point]) -> list[list[float]]:
    lo = [max(p.value - p.lo, 0) if p.lo is not None else 0 for p in pts]
    hi = [max(p.hi - p.value, 0) if p.hi is not None else 0 for p in pts]
    return [lo, hi]


def _plot_task_scaling(figs: Path, set_name: str, metric: str, pts: dict[tuple, Point]) -> list[str]:
    """Metric vs requested task tokens per method (tell at every ratio, the others at the largest)."""
    ratios = sorted({p.ratio for p in pts.values() if p.method == "tell" and p.ratio is not None})
    top = ratios[-1] if ratios else None
    lines = defaultdict(list)
    for p in pts.values():
        if p.method != "base" and p.budget and (p.method in ("tell", "sft") or p.ratio in (None, top)):
            lines[(p.method, p.ratio)].append(p)
    if not lines:
        return []
    fig, ax = _fig()
    for (m, r), ps in sorted(lines.items(), key=lambda kv: (kv[0][0], kv[0][1] is None, kv[0][1] or 0)):
        ps = sorted(ps, key=lambda p: p.budget)
        label = m if m == "sft" or r is None else f"{m} (ratio {r:g})"
        ax.errorbar([p.budget for p in ps], [p.value for p in ps], yerr=_yerr(ps), marker="o", capsize=3,
                    label=label, color=color(m), alpha=1.0 if m != "tell" or r == top else 0.45)
    base = find(pts, "base", any_ratio=True)
    if base:
        ax.axhline(base.value, linestyle="--", color=color("base"), label="base")
        if base.lo is not None and base.hi is not None:
            ax.axhspan(base.lo, base.hi, color=color("base"), alpha=0.12)
    return _finish(fig, ax, figs, _slug("task_scaling", set_name, metric), "task tokens (requested budget)", metric,
                   f"{set_name}: {metric} vs task tokens")


def _logistic(x, lo, hi, k, x0):
    return lo + (hi - lo) / (1.0 + np.exp(-k * (np.asarray(x) - x0)))


def _plot_general_scaling(figs: Path, set_name: str, metric: str, budget: int, fitres: dict,
                          no_anchor: list[Point]) -> list[str]:
    """The tell points of one budget vs general tokens (values on the seeds common to all of them), the
    no-anchor twins, and the chosen fit drawn only when there is one and a verdict is allowed."""
    fig, ax = _fig()
    pp = [q for q in fitres["points"] if q["general"] > 0]
    if pp:
        ax.errorbar([q["general"] for q in pp], [q["value"] for q in pp], marker="o", capsize=3, linestyle="none",
                    yerr=[[max(q["value"] - (q["lo"] if q["lo"] is not None else q["value"]), 0) for q in pp],
                          [max((q["hi"] if q["hi"] is not None else q["value"]) - q["value"], 0) for q in pp]],
                    color=color("tell"), label="tell")
    na = sorted((p for p in no_anchor if p.general > 0), key=lambda p: p.general)
    if na:
        ax.errorbar([p.general for p in na], [p.value for p in na], yerr=_yerr(na), marker="s", capsize=3,
                    linestyle="none", color=color("tell-no-anchor"), label="tell-no-anchor")
    fit = fitres["fit"]
    if fit.get("fitted") and fitres["verdict_ok"] and pp and fit["shape"] != "not identified":
        best = fit["best"]
        par = fit["models"][best]["params"]
        x = np.linspace(*fit["x_range_log10"], 200)
        y = {"constant": lambda: np.full_like(x, par["c"]), "line": lambda: par["intercept"] + par["slope"] * x,
             "logistic": lambda: _logistic(x, par["lo"], par["hi"], par["k"], par["x0"])}[best]()
        ax.plot(10 ** x, y, color=color("tell"), alpha=0.6, label=f"chosen fit: {fit['shape']}")
        mid = fit["models"].get("logistic", {}).get("midpoint_tokens") if best == "logistic" else None
        if mid:
            ax.axvline(mid, color=color("tell"), linestyle=":", alpha=0.6)
    return _finish(fig, ax, figs, _slug("general_scaling", set_name, metric, budget), "general tokens", metric,
                   f"{set_name}: {metric} vs general tokens, {budget:,} task tokens")


def _plot_bars(figs: Path, set_name: str, metric: str, kind: str, methods: tuple,
               cells: list[tuple], lookup) -> list[str]:
    fig, ax = _fig(max(6.4, 0.6 * len(cells) * len(methods)))
    width = 0.8 / len(methods)
    for j, m in enumerate(methods):
        ps = [lookup(m, b, r) for b, r in cells]
        err = [[_yerr([p])[i][0] if p else 0 for p in ps] for i in (0, 1)]
        ax.bar([i + j * width for i in range(len(ps))], [p.value if p else float("nan") for p in ps], width,
               yerr=err, capsize=2, label=m, color=color(m))
    ax.set_xticks([i + width * (len(methods) - 1) / 2 for i in range(len(cells))])
    ax.set_xticklabels([f"{b:,}\nratio {r:g}" for b, r in cells], fontsize=7)
    title = f"{set_name}: {metric}, " + ("anchor vs no anchor" if kind == "anchor" else "ablation")
    return _finish(fig, ax, figs, _slug(kind, set_name, metric), None, metric, title)


def _plot_forgetting(figs: Path, gset: str, gmetric: str, tset: str, tmetric: str, budget: int,
                     gpts: dict, tpts: dict) -> list[str]:
    """Task score (x) vs general score (y) of every cell at one budget, and the base model."""
    pairs = [(tpts[k], g) for k, g in gpts.items() if k in tpts and (g.budget == budget or g.method == "base")]
    if len(pairs) < 2:
        return []
    fig, ax = _fig()
    for t, g in pairs:
        ax.errorbar([t.value], [g.value], xerr=_yerr([t]), yerr=_yerr([g]), marker="o", capsize=2,
                    color=color(g.method), label=g.method)
        if g.ratio:
            ax.annotate(f"{g.ratio:g}", (t.value, g.value), fontsize=6, xytext=(3, 3), textcoords="offset points")
    return _finish(fig, ax, figs, _slug("forgetting", gset, gmetric, budget), f"{tset}: {tmetric} (task)",
                   f"{gset}: {gmetric} (general)", f"what each method keeps at {budget:,} task tokens "
                   "(labels: ratio)", logx=False)


# ==================================================================================================== sections

@dataclass
class Out:
    """What the sections write: Markdown lines, plots, findings.json and token_efficiency.json entries."""
    figs: Path
    md: list[str] = field(default_factory=list)
    findings: list[dict] = field(default_factory=list)
    efficiency: list[dict] = field(default_factory=list)


# 1. header and run health ------------------------------------------------------------------------------------

def section_header(data: SweepData, title: str | None) -> list[str]:
    cells = {r["cell"] for r in data.rows}
    bad = {r["cell"] for r in data.rows if not healthy(r)}
    finished = {r["cell"] for r in data.rows if r["value"] is not None}
    unselected = {r["cell"] for r in data.rows if healthy(r) and not r["selected"]}
    seeds = sorted({r["seed"] for r in data.rows})
    declared = data.spec.get("seeds")
    kinds = {p.interval for pts in data._points.values() for p in pts.values()}
    interval = CROSSED if kinds == {CROSSED} else ENVELOPE if kinds <= {ENVELOPE} else \
        f"{CROSSED} where item scores exist; else the {ENVELOPE}"
    md = [f"# {title or data.folder.name}: TELL sweep report", "",
          f"{len(cells)} cells in results.jsonl, {len(finished)} finished with results (methods: "
          f"{', '.join(sorted({r['method'] for r in data.rows}))}); seeds "
          f"{seeds}" + (f" (the spec declares {declared})" if declared else "") + f"; {len(bad)} unstable or failed "
          "cell(s) left out of every point, fit, comparison and finding (see Run health); "
          f"{len(unselected)} learning-rate candidate cell(s) not kept by the rule, used only in the lr table.", "",
          f"Intervals: {interval}. " + (HOW_CROSSED if CROSSED in interval else HOW_ENVELOPE)
          + f" A verdict needs at least {MIN_SEEDS} seeds; every metric is read as higher-is-better, except losses and perplexities (lower is better).", "",
          "This report does not know the commit it was made from: whoever publishes it names the commit, the "
          "date and the command.", ""]
    if data.notes:
        md += ["What this folder cannot give:", ""] + [f"- {n}" for n in data.notes] + [""]
    return md


def section_health(data: SweepData) -> list[str]:
    md = ["## Run health", ""]
    if not data.has_health:
        return md + ["Not recorded (an older sweep): every row is taken as healthy.", ""]
    bad = {}
    for r in data.rows:
        if not healthy(r):
            bad.setdefault(r["cell"], r)
    unjudged = {r["cell"] for r in data.rows if healthy(r) and str(r.get("health_reason") or "").startswith(
        NOT_JUDGED)}
    if unjudged:
        md += [f"{len(unjudged)} healthy-marked cell(s) trained too few optimizer steps for the loss trends to be "
               "judged: they were checked for non-finite losses only (their reason says so). Their points are "
               "shown, but read them with that in mind.", ""]
    if not bad:
        return md + [f"None of the {len({r['cell'] for r in data.rows})} cells is unstable or failed.", ""]
    md.append(f"{len(bad)} cell(s) unstable or failed: left out of every point, fit, comparison and finding.")
    md.append("")
    rows = [[r["method"], budget_text(r["budget"]), ratio_text(r["ratio"]), r["seed"], lr_text(r["lr"]),
             "yes" if r["selected"] else "no", r["health"], r.get("health_reason") or "-"]
            for r in sorted(bad.values(), key=lambda r: (r["method"], r["budget"], r["ratio"] or 0, r["seed"]))]
    return md + table(["method", "task tokens", "ratio", "seed", "lr", "selected lr", "health", "reason"], rows)


# 2. points ---------------------------------------------------------------------------------------------------

def section_points(data: SweepData, set_name: str, metric: str) -> list[str]:
    pts = sorted(data.points(set_name, metric).values(), key=lambda p: (p.method, p.budget, p.ratio or 0))
    if not pts:
        return []
    kinds = list(dict.fromkeys(p.interval for p in pts))
    md = [f"### {set_name}: {metric}", "", "Value: mean over seeds of the mean over items; interval: "
          + "; or ".join(kinds) + ". n = seeds.", ""]
    rows = [[p.method, budget_text(p.budget), ratio_text(p.ratio), f"{p.general:,.0f}", len(p.seeds), num(p.value),
             ci_text(p.lo, p.hi), "seeds x items" if p.interval == CROSSED else "seed min/max (not a CI)",
             NO_VERDICT if len(p.seeds) < MIN_SEEDS else ""] for p in pts]
    return md + table(["method", "task tokens", "ratio", "general tokens", "seeds", "value", "95% interval",
                       "interval", "note"], rows)


# 3. findings -------------------------------------------------------------------------------------------------

def _finding_rows(fs: list[dict]) -> list[list[str]]:
    return [[f["metric"], budget_text(f["task_tokens"]), ratio_text(f["ratio"]), f["comparison"], f["seeds"],
             num(f["a_value"]), num(f["b_value"]), num(f["diff"]), ci_text(*f["ci95"]), f["verdict"]] for f in fs]


FINDINGS_HEADER = ["metric", "task tokens", "ratio", "comparison", "seeds", "tell", "other", "difference",
                   "paired 95% interval", "verdict"]


def summary(fs: list[dict], label: str) -> str:
    """One sentence: how many cells of a comparison kind were better, worse, no different, or had no verdict."""
    n = len(fs)
    c = {v: sum(f["verdict"] == v for f in fs) for v in VERDICTS}
    nv = n - sum(c.values())
    return (f"{label}: better in {c['better']} of {n} cells, worse in {c['worse']}, no detectable difference in "
            f"{c['no detectable difference']}, no verdict in {nv}.")


def section_findings(data: SweepData, out: Out) -> list[str]:
    md = ["## Findings", "", "Every tell cell against each baseline at the same task budget (sft: ratio 0; the "
          "others: the same ratio), as the difference tell - other, paired on the common seeds and items. "
          "Generated by the report; nothing here is typed by hand. Each interval holds for its own cell: "
          "of the cells where there is no true difference, about 1 in 20 gets \"better\" or \"worse\" by "
          "chance (no correction for multiple comparisons). Task sets only: general sets are in Forgetting.", ""]
    any_rows = False
    for s in data.task_sets():
        fs = [f for m in data.metrics[s] for f in findings(data, s, m)]
        if not fs:
            continue
        any_rows = True
        out.findings += fs
        md += [f"### {s} ({data.roles[s]} set)", ""] + table(FINDINGS_HEADER, _finding_rows(fs))
        for label, _, _ in COMPARISONS:
            kind = [f for f in fs if f["comparison"] == label]
            if kind:
                md.append("- " + summary(kind, label))
        md.append("")
    if not any_rows:
        md += ["No comparison: no tell cell has a baseline at its budget and ratio.", ""]
    return md


# 4. forgetting -----------------------------------------------------------------------------------------------

def section_forgetting(data: SweepData, out: Out) -> list[str]:
    md = ["## Forgetting: general-ability sets against the base model", ""]
    gsets = [s for s in data.sets if data.roles[s] == "general"]
    if not gsets:
        return md + ["No general-ability set (role \"general\") in this sweep: forgetting is not measured.", ""]
    md += ["Change = cell - base on the same seeds and items (the base model is evaluated once per seed); a "
           "negative change is ability lost.", ""]
    tsets = data.task_sets()
    for g in gsets:
        fs = [f for m in data.metrics[g] for f in forgetting(data, g, m)]
        out.findings += fs
        if not fs:
            md += [f"### {g}", "", "No base cell to compare with.", ""]
            continue
        rows = [[f["metric"], f["a"]["method"], budget_text(f["task_tokens"]), ratio_text(f["ratio"]), f["seeds"],
                 num(f["b_value"]), num(f["a_value"]), num(f["diff"]), ci_text(*f["ci95"]), f["verdict"]] for f in fs]
        md += [f"### {g}", ""] + table(["metric", "method", "task tokens", "ratio", "seeds", "base", "cell",
                                        "change", "paired 95% interval", "verdict"], rows)
        md.append(summary(fs, f"{g}, trained cells vs base").replace("better", "higher").replace("worse", "lower"))
        md.append("")
        if tsets:
            md += _forgetting_plots(data, out, g, tsets[0])
    return md


def _forgetting_plots(data: SweepData, out: Out, gset: str, tset: str) -> list[str]:
    gm, tm = data.primary[gset], data.primary[tset]
    gpts, tpts = data.points(gset, gm), data.points(tset, tm)
    md = []
    for b in sorted({p.budget for p in gpts.values() if p.budget}):
        md += _plot_forgetting(out.figs, gset, gm, tset, tm, b, gpts, tpts)
    return md


# 5. scaling fits ---------------------------------------------------------------------------------------------

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


def _fit_models_table(fit: dict) -> list[str]:
    rows = []
    for name, e in fit["models"].items():
        ci = e.get("ci95") or {}
        params = ", ".join(f"{k}={num(v)}" for k, v in e["params"].items())
        cis = ", ".join(f"{k} {range_text(*v) if k == 'x0' else ci_text(*v)}" for k, v in ci.items()
                        if k != "midpoint_tokens") or "-"
        rows.append([name + (" (chosen)" if name == fit["best"] else ""), params, cis, num(e["rmse"]),
                     num(e["loo_rmse"])])
    return table(["model", "parameters (x = log10 general tokens)", "95% intervals", "RMSE", "LOO RMSE"], rows)


def fit_lines(res: dict) -> list[str]:
    fit = res["fit"]
    restricted = len(res["common_seeds"]) < len(res["all_seeds"])
    md = [f"**{res['metric']}, {res['task_tokens']:,} task tokens**: tell at {len(res['points'])} ratio(s); "
          f"seeds common to every point: {res['common_seeds']} (n={len(res['common_seeds'])})"
          + (f", restricted from {res['all_seeds']} so that every point has the same seeds" if restricted else "")
          + ".", ""]
    if res["points"]:
        md += table(["ratio", "general tokens", "value (common seeds)", "95% interval"],
                    [[ratio_text(q["ratio"]), f"{q['general']:,.0f}", num(q["value"]), ci_text(q["lo"], q["hi"])]
                     for q in res["points"]])
    if not fit.get("fitted"):
        return md + [f"No fit: {fit['reason']}.", ""]
    md += _fit_models_table(fit)
    for name, why in fit.get("not_fitted", {}).items():
        md.append(f"- {name} not fitted: {why}.")
    if not res["verdict_ok"]:
        return md + [f"Shape: {NO_VERDICT} (the models above are numbers only).", ""]
    md.append(f"Shape: **{fit['shape']}** ({fit['shape_reason']}).")
    lg = fit["models"].get("logistic")
    if fit["shape"] == "S-curve":
        ci = (lg.get("ci95") or {}).get("midpoint_tokens") or [None, None]
        tokens = range_text(*ci, fmt=lambda v: f"{v:,.0f}")
        md.append(f"Midpoint: {lg['midpoint']:,.0f} general tokens; 95% interval {tokens}.")
    else:
        md.append("Midpoint: not identified (the chosen shape is not an S-curve with its midpoint inside the "
                  "measured range).")
    if fit.get("replicate_refits") is None:
        md.append("No parameter intervals: no item scores, so no bootstrap replicates.")
    return md + [""]


def section_scaling(data: SweepData, out: Out, set_name: str) -> list[str]:
    md = []
    for metric in data.metrics[set_name]:
        pts = data.points(set_name, metric)
        budgets = sorted({p.budget for p in pts.values() if p.method == "tell"})
        for b in budgets:
            res = scaling_fit(data, set_name, metric, b)
            md += fit_lines(res)
            if metric == data.primary[set_name]:
                na = [p for p in pts.values() if p.method == "tell-no-anchor" and p.budget == b]
                md += _plot_general_scaling(out.figs, set_name, metric, b, res, na)
    if md:
        md = [f"### {set_name}: scaling with general tokens", "", "Per task budget, the tell points against general "
              "tokens; constant, line and rising logistic in log10(general tokens) compared by leave-one-out "
              "error (`stats.fit_scaling`); a curve is drawn only for the chosen model, with at least "
              f"{MIN_SEEDS} seeds.", ""] + md
    return md


# 6. anchor and ablation bars ---------------------------------------------------------------------------------

def section_bars(data: SweepData, out: Out, set_name: str) -> list[str]:
    metric = data.primary[set_name]
    pts = data.points(set_name, metric)
    top = max((p.ratio for p in pts.values() if p.method == "tell" and p.ratio is not None), default=None)

    def lookup(m, b, r):
        if m == "base":
            return find(pts, "base", any_ratio=True)
        return find(pts, m, b, any_ratio=True) if m == "sft" else find(pts, m, b, r)

    md = []
    for kind, methods in (("anchor", ("tell", "tell-no-anchor")),
                          ("ablation", ("base", "general-only", "sft", "sft-matched", "tell"))):
        cells = sorted({(p.budget, p.ratio) for p in pts.values() if p.method == methods[-1] and p.ratio is not None
                        and (kind == "anchor" or p.ratio == top)})
        if kind == "anchor":
            cells = [c for c in cells if lookup("tell-no-anchor", *c)]
        if not cells:
            continue
        md += _plot_bars(out.figs, set_name, metric, kind, methods, cells, lookup)
        md += [f"{'Anchor vs no anchor' if kind == 'anchor' else 'Ablation'} ({metric}): value [95% interval] "
               "(n = seeds); the paired differences are in Findings.", ""]
        md += table(["task tokens", "ratio"] + list(methods),
                    [[budget_text(b), ratio_text(r)] + [point_text(lookup(m, b, r)) for m in methods]
                     for b, r in cells])
    return md


# 7. token-efficiency -----------------------------------------------------------------------------------------

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


def efficiency_text(e: dict) -> tuple[str, str, str]:
    """(SFT-equivalent tokens, efficiency, interval) in words, with the bound the stats module gives."""
    if not e.get("computed"):
        return "-", "-", e.get("reason") or "-"
    eq, x = f"{e['sft_equivalent_tokens']:,.0f}", f"{e['efficiency']:.3g}x"
    if e["bound"] == "lower":
        eq, x = f"> {eq} (beyond every SFT budget)", f"at least {x} (lower bound)"
    elif e["bound"] == "upper":
        eq, x = f"<= {eq} (the smallest SFT budget already reaches it)", f"at most {x} (upper bound)"
    lo, hi = e["ci95"]
    if lo is None and hi is None and e.get("interval", "").startswith("none"):
        ci = "no interval (no item scores)"
    else:
        ci = (f"[{'below the smallest budget' if lo is None else f'{lo:.3g}x'}, "
              f"{'unbounded above' if hi is None else f'{hi:.3g}x'}]")
    return eq, x, ci


def section_efficiency(data: SweepData, out: Out) -> list[str]:
    md = ["## Token-efficiency", "", "SFT task tokens that reach a tell cell's score (SFT curve made monotone, "
          "interpolated linearly in log tokens; `stats.token_efficiency`), as a multiple of the tell cell's "
          "requested task tokens; the interval is from joint bootstrap replicates on the seeds common to the "
          "tell cell and every SFT budget. Needs at least 4 SFT budgets.", ""]
    for s in data.task_sets():
        for metric in data.metrics[s]:
            md += _efficiency_table(data, out, s, metric)
    return md


def _efficiency_table(data: SweepData, out: Out, set_name: str, metric: str) -> list[str]:
    pts = data.points(set_name, metric)
    sfts = sorted((p for p in pts.values() if p.method == "sft" and p.budget), key=lambda p: p.budget)
    tells = [p for p in pts.values() if p.method == "tell" and p.budget]
    if not sfts or not tells:
        return []
    ratios, why, declared = efficiency_ratios(data, pts)
    md, rows = [f"### {set_name}: {metric}", "", why, ""], []
    for t in sorted((t for t in tells if t.ratio in ratios), key=lambda t: (t.budget, t.ratio)):
        e, common = efficiency(sfts, t)
        eq, x, ci = efficiency_text(e)
        note = NO_VERDICT if e.get("computed") and len(common) < MIN_SEEDS else ""
        rows.append([budget_text(t.budget), ratio_text(t.ratio), len(common), num(e.get("tell_value")), eq, x, ci,
                     note])
        out.efficiency.append({"set": set_name, "metric": metric, "general_ratio": t.ratio,
                               "tell_task_tokens": t.budget, "declared_ratio": declared,
                               "seeds_used": common, **e,
                               # the keys of the earlier format, kept for readers of it (tell demo's headline)
                               "ratio": e.get("efficiency"), "beyond_sft_curve": e.get("bound") == "lower",
                               "at_or_below_sft_start": e.get("bound") == "upper",
                               "sft_equivalent_tokens": e.get("sft_equivalent_tokens")})
    if not rows:
        return md
    return md + table(["tell task tokens", "ratio", "seeds", "tell score", "SFT tokens for the same score",
                       "efficiency", "95% interval", "note"], rows)


# 8. learning-rate selection ----------------------------------------------------------------------------------

def section_lr(data: SweepData) -> list[str]:
    md = ["## Learning-rate selection", ""]
    sel = data.lr_selection
    if not sel:
        return md + ["Not recorded: this folder has no lr_selection.json, so it cannot show that every method "
                     "got its learning rate from the same rule on validation data.", ""]
    md += [f"Rule (declared before running): {sel.get('rule') or 'not stated'}", ""]
    rows = []
    for g in sel.get("groups", []):
        for c in g.get("candidates", []):
            chosen = c.get("lr") == g.get("chosen_lr") and g.get("chosen_lr") is not None
            rows.append([g.get("method"), budget_text(g.get("task_tokens_requested")), ratio_text(g.get("ratio")),
                         lr_text(c.get("lr")), _seeds(c.get("seeds")), _seeds(c.get("unstable_seeds")),
                         _seeds(c.get("pending_seeds")), num(c.get("val_task")), num(c.get("val_general_loss")),
                         "**chosen**" if chosen else "", g.get("reason", "") if chosen or g.get("chosen_lr") is None
                         else ""])
    return md + ["Validation numbers are the ones the rule reads (see its text for what val_task measures).", ""] + \
        table(["method", "task tokens", "ratio", "lr", "seeds", "unstable seeds", "pending seeds",
               "validation task", "validation general loss", "chosen", "reason"], rows)


def _seeds(s) -> str:
    """Seeds as a list or a count (the sweep writes counts); 0 is a count, not a missing value."""
    if s is None or s == []:
        return "-" if s is None else "0"
    return ", ".join(str(x) for x in s) if isinstance(s, list) else str(s)


# ====================================================================================================== report

def section_set(data: SweepData, out: Out, set_name: str) -> list[str]:
    """A set's points (every metric), its plot against task tokens, scaling fits and bars (task sets)."""
    md = [f"## {set_name} ({data.roles[set_name]} set): points", ""]
    for metric in data.metrics[set_name]:
        md += section_points(data, set_name, metric)
    metric = data.primary[set_name]
    md += _plot_task_scaling(out.figs, set_name, metric, data.points(set_name, metric))
    if data.roles[set_name] != "general":
        md += section_scaling(data, out, set_name) + section_bars(data, out, set_name)
    return md


def make_report(folder: str | Path, primary: str | None = None, title: str | None = None) -> Path:
    """Write report.md, report.html, report_files/*.png, findings.json and token_efficiency.json."""
    import matplotlib

    matplotlib.use("Agg")
    folder = Path(folder)
    data = load_sweep(folder, primary)
    out = Out(folder / "report_files")
    out.figs.mkdir(exist_ok=True)
    for old in out.figs.glob("*.png"):  # plots of an earlier report that this one may not redraw
        old.unlink()
    md = section_health(data) + section_findings(data, out) + section_forgetting(data, out)
    for s in data.sets:
        md += section_set(data, out, s)
    md += section_efficiency(data, out) + section_lr(data)
    # The header goes last so that it can say what the sections found missing (notes) and which intervals ran.
    _write(folder, out, "\n".join(section_header(data, title) + md) + "\n")
    return folder / "report.md"


def _json_safe(x):
    if isinstance(x, dict):
        return {k: _json_safe(v) for k, v in x.items() if k != "replicates"}
    if isinstance(x, (list, tuple)):
        return [_json_safe(v) for v in x]
    if isinstance(x, np.generic):
        return x.item()
    if isinstance(x, float) and not math.isfinite(x):
        return None
    return x


def _write(folder: Path, out: Out, text: str) -> None:
    for name, obj in (("findings.json", out.findings), ("token_efficiency.json", out.efficiency)):
        with atomic_open(folder / name) as f:
            f.write(json.dumps(_json_safe(obj), indent=2) + "\n")
    with atomic_open(folder / "report.md") as f:
        f.write(text)
    with atomic_open(folder / "report.html") as f:
        f.write(_html(text, out.figs))


# ======================================================================================================== html

def _cells(row: str) -> list[str]:
    return [c.strip() for c in row.strip().strip("|").split("|")]


def _inline(s: str) -> str:
    s = html.escape(s)
    parts = s.split("**")
    return "".join(f"<b>{p}</b>" if i % 2 else p for i, p in enumerate(parts))


def _html_table(rows: list[str]) -> str:
    rows = [r for r in rows if not set(r.replace("|", "").strip()) <= {"-"}]
    return "<table>" + "".join(
        "<tr>" + "".join(f"<{t}>{_inline(c)}</{t}>" for c in _cells(r) for t in ["th" if i == 0 else "td"]) + "</tr>"
        for i, r in enumerate(rows)) + "</table>"


def _html(md: str, figs_dir: Path) -> str:
    """A self-contained page: the Markdown's headings, paragraphs, lists, tables and images (inlined)."""
    out = ["<!doctype html><meta charset='utf-8'><title>TELL report</title>",
           "<style>body{font-family:sans-serif;max-width:1100px;margin:auto}table{border-collapse:collapse}"
           "td,th{border:1px solid #ccc;padding:2px 6px;font-size:13px}img{max-width:100%}</style>"]
    tbl: list[str] = []
    for line in md.splitlines() + [""]:
        if line.startswith("|"):
            tbl.append(line)
            continue
        if tbl:
            out.append(_html_table(tbl))
            tbl = []
        for prefix, tag in (("### ", "h3"), ("## ", "h2"), ("# ", "h1"), ("- ", "li")):
            if line.startswith(prefix):
                out.append(f"<{tag}>{_inline(line[len(prefix):])}</{tag}>")
                break
        else:
            if line.startswith("!["):
                alt, src = line[2:].split("](", 1)
                data = base64.b64encode((figs_dir.parent / src.rstrip(")")).read_bytes()).decode()
                out.append(f"<img alt='{html.escape(alt)}' src='data:image/png;base64,{data}'>")
            elif line.strip():
                out.append(f"<p>{_inline(line)}</p>")
    return "\n".join(out) + "\n"
