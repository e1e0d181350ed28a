"""The demo study's hypotheses and their verdicts (pre-registered in docs/study.md before the study ran).

Each paired hypothesis compares two methods at the study's task budget and its largest general ratio, on
the same seeds and test items (`tell.experiments.evidence.compare`: a bootstrap over seeds and items, crossed),
and is judged by one rule with a smallest effect of interest `DELTA` on the metric's scale:

* supported     the 95% interval of (a - b) lies above 0;
* contradicted  the 95% interval lies below +DELTA (any effect is smaller than what the claim needs);
* inconclusive  otherwise, or fewer than 3 common seeds, or a method missing from the sweep; and
  "inconclusive (floor)" / "inconclusive (ceiling)" whenever both arms' means lie below `FLOOR` (above
  `CEILING`): a comparison of two methods that both learnt nothing (or both everything) measures the world,
  not the methods, so it can neither support nor contradict.

Before any hypothesis is judged, the world's positive controls (`CONTROLS`, docs/study.md) are checked on runs
that are not TELL-vs-baseline comparisons; if one fails, nothing is judged and every verdict says which
control failed. H8 (token-efficiency, E) is read twice off the SFT ladder at the study's budget and its largest
ratio, by `tell.experiments.readings` (the rule the real-model headlines use; docs/study.md, version 4): H8a
E > 1 and H8b E >= 4, each able to come out either way, a floor or a ceiling a bound where the ladder makes it one.

A hypothesis the plan cannot test reads "not tested by `tell demo` (`--study` tests it)", not a floor: H5 with
fewer than `H5_RATIOS` ratios, H7 with one base model.

H5 (S-curve) is judged from the report's scaling fit of tell's primary metric over its ratios: supported
when the rising logistic has the lowest leave-one-out error and its midpoint lies inside the measured range
("S-curve"), contradicted when a constant or a line in log tokens fits better, inconclusive otherwise
(midpoint outside the range, fewer than 6 ratios or 3 seeds). H7 compares each paired effect between the two
base models: the difference of the effects (large - small), paired on seeds and items; supported (size
changes the answers) when some hypothesis gets different verdicts at the two sizes and its difference of
effects has an interval excluding 0; contradicted when every hypothesis gets the same verdict at both sizes
and every difference's interval lies within +-DELTA; inconclusive otherwise.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from tell.experiments.evidence import (BOOT_SEED, MIN_SEEDS, RESAMPLES, Point, SweepData, compare, find, load_sweep,
                                       scaling_fit)
from tell.experiments.evidence import efficiency_entries
from tell.experiments.readings import READINGS, reading
from tell.experiments.stats import paired
from tell.synthetic.controls import CIPHER_TEST, GENERAL_TEST, check_controls, failed
from tell.errors import TellError
from tell.io import atomic_open
from tell.mdtext import Markup, table, text

DELTA = 0.05           # smallest effect of interest (absolute, on the 0..1 scale of accuracy)
FLOOR, CEILING = 0.05, 0.95  # both arms' means below FLOOR (above CEILING): the comparison decides nothing
RULE = (f"each paired hypothesis compares a with b on the same seeds and test items (95% bootstrap over seeds and "
        f"items, crossed): supported when the interval of a - b lies above 0, contradicted when it lies below "
        f"+{DELTA}, inconclusive otherwise or with fewer than 3 seeds, and inconclusive (floor) / (ceiling) when "
        f"both means lie below {FLOOR} / above {CEILING}. The positive controls are checked first: if one fails, "
        "no hypothesis is judged.")
PRIMARY = "accuracy"   # the task metric the verdicts use (format_adherence is reported beside it)
PAPER_EFFICIENCY = 10.0  # the paper's largest token-efficiency: "up to nearly an order of magnitude" over SFT


@dataclass(frozen=True)
class Hypothesis:
    id: str
    claim: str
    a: str          # method expected to be better
    b: str
    role: str       # "task" or "general" (the eval set it is judged on)


PAIRED = (
    Hypothesis("H1", "tell beats sft at equal task examples", "tell", "sft", "task"),
    Hypothesis("H2", "tell beats sft-matched (task data only, the same optimizer steps)", "tell", "sft-matched",
               "task"),
    Hypothesis("H3", "tell beats tell with the placebo general set (transfer, not more steps)", "tell",
               "tell-placebo", "task"),
    Hypothesis("H4a", "the anchor beats no anchor", "tell", "tell-no-anchor", "task"),
    Hypothesis("H4b", "the real anchor beats a random anchor of the same token length", "tell",
               "tell-random-anchor", "task"),
    Hypothesis("H6", "tell keeps general skills better than sft-matched", "tell", "sft-matched", "general"),
)
H5 = "task accuracy rises along an S-curve in general tokens (tell, 6 general amounts or more)"
H7 = "the answers to H1-H6 change with the size of the base model"
H8 = {hid: claim for hid, (_, _, claim) in READINGS.items()}  # H8a, H8b
H5_RATIOS = 6  # fewest general amounts over which H5's curve is judged
NOT_TESTED = "not tested by `tell demo` (`--study` tests it)"
BUDGET_FRACTION = 4  # the study's budget: a quarter of the smallest ladder budget whose sft mean leaves the floor


def control_side_budget(ladder: list[tuple[int, float | None]]) -> int | None:
    """Issue 37 item 1, declared before it was applied: the study's task budget from the control side, a quarter
    of the smallest SFT-ladder budget whose sft mean (over seeds, control cells only) reaches the floor; None when
    sft never leaves it. If tell is k times as token-efficient as sft, tell there scores what sft scores at k/4 of
    that budget, so a tell floor there bounds k below 4 and a tell above it needs k >= 4: either can come out."""
    off = leaves_floor_at(ladder)
    return None if off is None else off // BUDGET_FRACTION


def leaves_floor_at(ladder: list[tuple[int, float | None]]) -> int | None:
    """The smallest ladder budget whose sft mean reaches the floor (None: sft never leaves it)."""
    return next((b for b, v in sorted(ladder) if v is not None and v >= FLOOR), None)


def study_budget(data: SweepData) -> int | None:
    """The task budget the hypotheses are judged at: the one the spec pairs tell's baselines at
    (`paired_task_tokens`, one budget: version 4), else tell's largest (version 3 and older sweeps)."""
    paired = data.spec.get("paired_task_tokens") or []
    if paired:  # several: the largest of them (every paired method ran there)
        return max(int(t) for t in paired)
    task = _set(data, "task")
    budgets = [p.budget for p in data.points(task, _metric(data, task)).values() if p.method == "tell"] if task else []
    return max(budgets, default=None)


def planned_ratios(data: SweepData, budget: int | None) -> list[float]:
    """The ratios the spec plans tell at at `budget` (its ratios, and its general_tokens there as amount /
    budget): what decides whether H5 is tested and which point is the study's, whatever cells have finished. A
    folder whose spec plans neither (no spec.yaml) gives the ratios its tell cells have at that budget."""
    from tell.experiments.config import amounts_at, general_ratio

    if budget is None:
        return []
    spec = data.spec
    if spec.get("ratios") or spec.get("general_tokens"):
        return sorted({float(r) for r in spec.get("ratios") or []}
                      | {general_ratio(g, budget) for g in amounts_at(spec.get("general_tokens"), budget)})
    task = _set(data, "task")
    return sorted({p.ratio for p in data.points(task, _metric(data, task)).values()
                   if p.method == "tell" and p.budget == budget and p.ratio is not None}) if task else []


def declared_ratio(data: SweepData, budget: int | None) -> float | None:
    """The ratio a budget's hypotheses are read at: the largest the plan has there (a missing cell there is
    missing, never replaced by another ratio)."""
    return max(planned_ratios(data, budget), default=None)


def judge(res: dict | None) -> tuple[str, str]:
    """(verdict, reason) of one paired comparison by the rule above."""
    if res is None:
        return "inconclusive", "not run in this study"
    a, b = res.get("a_value"), res.get("b_value")
    if a is not None and b is not None and max(a, b) < FLOOR:
        return "inconclusive (floor)", f"both arms below the floor {FLOOR} ({a:.3f}, {b:.3f}): nothing to compare"
    if a is not None and b is not None and min(a, b) > CEILING:
        return "inconclusive (ceiling)", f"both arms above the ceiling {CEILING} ({a:.3f}, {b:.3f})"
    lo, hi = res.get("ci95") or (None, None)
    if res.get("seeds", 0) < MIN_SEEDS or lo is None:
        return "inconclusive", res.get("verdict") or f"fewer than {MIN_SEEDS} seeds"
    if lo > 0:
        return "supported", f"95% interval [{lo:.3f}, {hi:.3f}] above 0"
    if hi < DELTA:
        return "contradicted", f"95% interval [{lo:.3f}, {hi:.3f}] below +{DELTA}"
    return "inconclusive", f"95% interval [{lo:.3f}, {hi:.3f}] spans 0 and +{DELTA}"


def _set(data: SweepData, role: str) -> str | None:
    """The task test set, or the general test (not the cipher test, a control's set)."""
    sets = [s for s in data.sets if (data.roles[s] == "general") == (role == "general")]
    named = [s for s in sets if Path(s).stem == GENERAL_TEST]
    return (named or [s for s in sets if Path(s).stem != CIPHER_TEST] or [None])[0]


def _metric(data: SweepData, set_name: str) -> str:
    return PRIMARY if PRIMARY in data.metrics[set_name] else data.metrics[set_name][0]


def _pair(data: SweepData, h: Hypothesis) -> tuple[Point | None, Point | None, str | None]:
    set_name = _set(data, h.role)
    if set_name is None:
        return None, None, None
    pts = data.points(set_name, _metric(data, set_name))
    budget = study_budget(data)
    ratio = declared_ratio(data, budget)  # the largest the plan has at the study's budget (each budget its own)
    if ratio is None:
        return None, None, set_name
    a = find(pts, h.a, budget, ratio)
    b = find(pts, h.b, budget, any_ratio=True) if h.b == "sft" else find(pts, h.b, budget, ratio)
    return a, b, set_name


def size_findings(data: SweepData) -> dict:
    """The controls, then every hypothesis but H7 on one sweep (one base model): judged only when every
    control passed."""
    controls = check_controls(data)
    out = {"controls": controls, "reach": reach(data), **_judged(data)}
    bad = failed(controls)
    if bad:
        why = f"not judged: control(s) {', '.join(bad)} failed (" + "; ".join(
            f"{c['id']} {c['rule']}, measured {_fmt(c['value'])}" for c in controls if not c["passed"]) + ")"
        for hid in [h.id for h in PAIRED] + ["H5", *H8]:
            if not out[hid]["verdict"].startswith("not tested"):  # what the plan cannot test says so, first
                out[hid] |= {"verdict": "not judged", "reason": why}
    return out


def reach(data: SweepData) -> dict:
    """Design check, reported beside the controls (not one of them: it changes no verdict). If tell were k times
    as token-efficient as sft, it would score at the study's budget what sft scores at k times that budget; so
    the smallest budget of the SFT ladder whose accuracy leaves the floor, divided by the study's budget, is the
    efficiency tell needs before its accuracy at the study's budget can leave the floor at all. Where that
    multiple exceeds the paper's largest claim, a floor at the study's budget is what the claim itself predicts,
    and the paired task hypotheses cannot be decided there."""
    set_name, budget = _set(data, "task"), study_budget(data)
    ladder = sorted((p.budget, p.value) for p in data.points(set_name, PRIMARY).values()
                    if p.method == "sft") if set_name and PRIMARY in data.metrics.get(set_name, []) else []
    off = leaves_floor_at(ladder)
    fold = off / budget if off and budget else None
    return {"study_budget": budget, "ladder": ladder, "sft_leaves_floor_at": off, "needed_efficiency": fold,
            "paper_efficiency": PAPER_EFFICIENCY, "decidable": fold is not None and fold <= PAPER_EFFICIENCY}


def reach_line(size: str, r: dict) -> str:
    """One sentence on the design check for `size`."""
    if not r["ladder"] or not r["study_budget"]:
        return f"{size}: no SFT ladder or no tell cell, nothing to read."
    if r["sft_leaves_floor_at"] is None:
        return (f"{size}: sft stays below the floor {FLOOR} on the whole ladder (up to {r['ladder'][-1][0]:,} task "
                f"tokens), so no efficiency of tell can be read off it.")
    k = r["needed_efficiency"]
    return (f"{size}: sft first leaves the floor {FLOOR} at {r['sft_leaves_floor_at']:,} task tokens, {k:.3g}x the "
            f"study's budget of {r['study_budget']:,}; tell's accuracy at that budget can leave the floor only if tell "
            f"is more than {k:.3g}x as token-efficient as sft, against the paper's up to {PAPER_EFFICIENCY:.3g}x: "
            + ("the budget can show the paper's effect." if r["decidable"] else
               "a floor there is what the paper's own claim predicts, so it decides nothing about TELL."))


def _judged(data: SweepData) -> dict:
    out = {}
    for h in PAIRED:
        a, b, set_name = _pair(data, h)
        metric = _metric(data, set_name)
        res = compare(a, b, metric, data.lower_is_better(set_name, metric)) if a and b else None
        verdict, reason = judge(res)
        out[h.id] = {"claim": h.claim, "a": h.a, "b": h.b, "set": set_name, "verdict": verdict, "reason": reason,
                     "task_tokens": a.budget if a else None, "ratio": a.ratio if a else None,
                     **({k: res[k] for k in ("diff", "ci95", "seeds", "items", "a_value", "b_value")} if res else {})}
    out["H5"] = _h5(data)
    return out | _h8(data)


def _h8(data: SweepData) -> dict[str, dict]:
    """H8a and H8b: tell's token-efficiency at the study's budget and largest ratio, read off the SFT ladder."""
    set_name = _set(data, "task")
    metric = _metric(data, set_name) if set_name else PRIMARY
    eff = efficiency_entries(data, set_name, metric) if set_name else None
    budget = study_budget(data)
    every = (eff or {}).get("entries", [])

    def at(t: int) -> dict | None:  # the entry at a budget's declared point
        r = declared_ratio(data, t)
        return next((e for e in every if e["tell_task_tokens"] == t and e["general_ratio"] == r), None)

    # tell's curve beside sft's (reported, not judged): the efficiency at every tell budget, at its declared point
    curve = [{"task_tokens": t, "ratio": e["general_ratio"], "tell_value": e.get("tell_value"),
              "efficiency": e.get("efficiency"), "ci95": e.get("ci95"), "bound": e.get("bound")}
             for t in sorted({e["tell_task_tokens"] for e in every}) if (e := at(t))]
    e = at(budget) if budget is not None else None
    if e is None:
        return {hid: {"claim": claim, "verdict": "inconclusive", "curve": curve,
                      "reason": f"no SFT ladder or no tell cell at the study's point ({budget} task tokens, ratio "
                                f"{declared_ratio(data, budget)})"} for hid, claim in H8.items()}
    ladder = sorted((p.budget, p.value) for p in data.points(set_name, metric).values() if p.method == "sft")
    lo, hi = e.get("ci95") or (None, None)
    doc = {"efficiency": e.get("efficiency"), "ci95": [lo, hi], "bound": e.get("bound"),
           "tell_value": e.get("tell_value"), "task_tokens": e["tell_task_tokens"], "ratio": e["general_ratio"],
           "seeds": len(e.get("seeds_used", []))}
    out = {}
    for hid, claim in H8.items():
        if doc["seeds"] < MIN_SEEDS or doc["tell_value"] is None:
            verdict, reason = "inconclusive", e.get("reason") or f"fewer than {MIN_SEEDS} seeds"
        else:
            verdict, reason = reading(hid, e, doc["tell_value"], ladder, FLOOR, CEILING, budget)
        out[hid] = doc | {"claim": claim, "verdict": verdict, "reason": reason}
    out["H8a"]["curve"] = curve
    return out


def _h5(data: SweepData) -> dict:
    set_name = _set(data, "task")
    budget = study_budget(data)
    planned = len(planned_ratios(data, budget))
    if planned < H5_RATIOS:  # the plan's to say, before any cell is looked at
        at = f" at {budget:,} task tokens" if budget else ""
        return {"claim": H5, "verdict": NOT_TESTED, "ratios": planned,
                "reason": f"{planned} general amount(s) in this plan{at}; the S-curve is judged over {H5_RATIOS} or "
                          "more"}
    tells = [p for p in data.points(set_name, _metric(data, set_name)).values()
             if p.method == "tell" and p.budget == budget]
    if not tells:
        return {"claim": H5, "verdict": "inconclusive", "reason": f"no tell cell at {budget:,} task tokens"}
    fit = scaling_fit(data, set_name, _metric(data, set_name), budget)
    f = fit["fit"]
    shape = f.get("shape") if f.get("fitted") else None
    top = max(p.value for p in tells)
    if top < FLOOR:  # a flat line at 0 is the floor: it measures the world, not the shape of tell's curve
        verdict, reason = "inconclusive (floor)", f"tell's accuracy is below the floor {FLOOR} at every ratio " \
                                                  f"(highest {top:.3f}): no curve to judge"
    elif not fit["verdict_ok"] or not f.get("fitted"):
        verdict, reason = "inconclusive", f.get("reason") or f"fewer than {MIN_SEEDS} common seeds"
    elif shape == "S-curve":
        verdict, reason = "supported", f["shape_reason"]
    elif shape in ("constant", "line in log tokens"):
        verdict, reason = "contradicted", f"{shape}: {f['shape_reason']}"
    else:
        verdict, reason = "inconclusive", f["shape_reason"]
    lg = (f.get("models") or {}).get("logistic") or {}
    return {"claim": H5, "verdict": verdict, "reason": reason, "shape": shape, "ratios": len(fit["points"]),
            "midpoint_tokens": lg.get("midpoint_tokens"), "points": fit["points"]}


def _effect_scores(data: SweepData, h: Hypothesis) -> dict | None:
    a, b, _ = _pair(data, h)
    if not (a and b and a.scores and b.scores):
        return None
    return {s: a.scores[s] - b.scores[s] for s in set(a.scores) & set(b.scores)}


def size_change(small: SweepData, large: SweepData, per_size: dict[str, dict]) -> dict:
    """H7: each paired effect at the large base minus at the small one, and the rule above."""
    rows, differs, within = {}, False, True
    for h in PAIRED:
        es, el = _effect_scores(small, h), _effect_scores(large, h)
        vs, vl = per_size["small"][h.id]["verdict"], per_size["large"][h.id]["verdict"]
        res = None
        if es and el and set(es) & set(el):
            res = paired(el, es, RESAMPLES, BOOT_SEED, MIN_SEEDS)
        lo, hi = (res or {}).get("ci95") or (None, None)
        excludes0 = lo is not None and (lo > 0 or hi < 0)
        differs |= vs != vl and excludes0
        within &= vs == vl and lo is not None and -DELTA < lo and hi < DELTA
        rows[h.id] = {"small": vs, "large": vl, "diff_of_effects": (res or {}).get("diff"),
                      "ci95": [lo, hi], "seeds": (res or {}).get("seeds")}
    h5 = (per_size["small"]["H5"]["verdict"], per_size["large"]["H5"]["verdict"])
    rows["H5"] = {"small": h5[0], "large": h5[1]}
    within &= h5[0] == h5[1]
    verdict = "supported" if differs else "contradicted" if within else "inconclusive"
    return {"claim": H7, "verdict": verdict, "by_hypothesis": rows}


def study_findings(sweeps: dict[str, Path], one_base: str = NOT_TESTED) -> dict:
    """{size: findings} for each sweep folder, and H7 when both a small and a large one exist (with one, H7 reads
    `one_base`: the plan's reason it is not tested)."""
    datas = {size: load_sweep(folder, PRIMARY) for size, folder in sweeps.items()}
    per_size = {size: size_findings(d) for size, d in datas.items()}
    doc = {"rule": {"delta": DELTA, "primary_metric": PRIMARY, "min_seeds": MIN_SEEDS,
                    "interval": "95% paired bootstrap over seeds and items, crossed"}, "sizes": per_size}
    bad = {size: failed(fs["controls"]) for size, fs in per_size.items() if failed(fs["controls"])}
    if not {"small", "large"} <= set(datas):
        doc["H7"] = {"claim": H7, "verdict": one_base, "reason": "one base model in this plan"}
    elif bad:
        doc["H7"] = {"claim": H7, "verdict": "not judged", "reason": "control(s) failed: " + "; ".join(
            f"{size} base {', '.join(ids)}" for size, ids in bad.items())}
    else:
        doc["H7"] = size_change(datas["small"], datas["large"], per_size)
    return doc


def _fmt(x) -> str:
    return "-" if x is None else f"{x:+.3f}" if isinstance(x, float) else str(x)


def _verdict(verdict, reason=None) -> Markup:
    return Markup(f"**{text(verdict)}**" + (f" ({text(reason)})" if reason else ""))


def findings_markdown(doc: dict) -> list[str]:
    """The findings table: one row per hypothesis and base model, then H7 (every cell escaped: `mdtext.table`)."""
    md = ["Positive controls (judged before any hypothesis; if one fails, nothing is judged):", ""]
    md += table(["control", "base", "rule", "measured", "value", "passed"],
                [[f"{c['id']}: {c['claim']}", size, c["rule"], c["measured"], _fmt(c["value"]),
                  _verdict("yes" if c["passed"] else "NO")]
                 for size, fs in doc["sizes"].items() for c in fs["controls"]])[:-1]
    reach = [f"- {text(reach_line(size, fs['reach']))}" for size, fs in doc["sizes"].items() if "reach" in fs]
    if reach:  # a study.json written before the check holds none
        md += ["", "Design check (reported, not a control; changes no verdict): can the study's task budget show "
               "the paper's effect?", ""] + reach
    rows = []
    for size, fs in doc["sizes"].items():
        for h in PAIRED:
            f = fs[h.id]
            ci = f.get("ci95") or [None, None]
            rows.append([f"{h.id}: {h.claim}", size, f"{h.a} vs {h.b} ({f.get('set') and Path(f['set']).stem}, "
                         f"ratio {f.get('ratio')})", _fmt(f.get("a_value")), _fmt(f.get("b_value")),
                         f"{_fmt(f.get('diff'))} [{_fmt(ci[0])}, {_fmt(ci[1])}]", f.get("seeds", "-"),
                         _verdict(f["verdict"], f["reason"])])
        h5 = fs["H5"]
        rows.append([f"H5: {H5}", size, f"tell over {h5.get('ratios', 0)} ratios", "", "", f"shape: {h5.get('shape')}",
                     "", _verdict(h5["verdict"], h5["reason"])])
        for hid, claim in H8.items():
            h8 = fs.get(hid) or {"verdict": "not judged", "reason": "not in this study.json (written before v4)"}
            ci = h8.get("ci95") or [None, None]
            rows.append([f"{hid}: {claim}", size, "tell vs the SFT ladder", _fmt(h8.get("tell_value")), "",
                         f"efficiency {_fmt(h8.get('efficiency'))} [{_fmt(ci[0])}, {_fmt(ci[1])}]",
                         h8.get("seeds", "-"), _verdict(h8["verdict"], h8["reason"])])
        for c in fs.get("H8a", {}).get("curve") or []:  # tell's curve beside sft's: reported, not judged
            ci = c.get("ci95") or [None, None]
            rows.append([f"H8 curve: tell at {c['task_tokens']:,} task tokens", size,
                         f"tell (ratio {c.get('ratio')}) vs the SFT ladder", _fmt(c.get("tell_value")), "",
                         f"efficiency {_fmt(c.get('efficiency'))} [{_fmt(ci[0])}, {_fmt(ci[1])}]", "",
                         "reported" + (f" ({'an' if c['bound'] == 'upper' else 'a'} {text(c['bound'])} bound)"
                                      if c.get("bound") else "")])
    md += [""] + table(["hypothesis", "base", "comparison", "a", "b", "a - b [95% interval]", "seeds", "verdict"],
                       rows)[:-1]
    h7 = doc["H7"]
    md += ["", f"**H7** ({text(H7)}): **{text(h7['verdict'])}**" + (f" ({text(h7['reason'])})" if h7.get("reason")
                                                                      else "") + "."]
    if "by_hypothesis" in h7:
        md += [""] + table(["hypothesis", "verdict (small)", "verdict (large)", "effect large - small [95% interval]"],
                           [[hid, r["small"], r["large"], f"{_fmt(r.get('diff_of_effects'))} "
                             f"[{_fmt((r.get('ci95') or [None, None])[0])}, {_fmt((r.get('ci95') or [None, None])[1])}]"]
                            for hid, r in h7["by_hypothesis"].items()])[:-1]
    return md


def write_study(out: Path, sweeps: dict[str, Path], header: list[str], one_base: str = NOT_TESTED) -> Path:
    """study.json and study.md in `out` (atomic)."""
    doc = study_findings(sweeps, one_base)
    with atomic_open(out / "study.json") as f:
        json.dump(doc, f, indent=1, default=str)
    md = header + ["", "## Findings", "", f"Decision rule: {text(RULE)}",
                   ""] + findings_markdown(doc)
    with atomic_open(out / "study.md") as f:
        f.write("\n".join(md) + "\n")
    return out / "study.md"


def rejudge(out: Path, note: str, one_base: str | None = None) -> Path:
    """Judge a finished study folder again from its stored cells (no cell is trained): the sweep folders it holds
    (`sweep`, `sweep-SIZE`) and the header of its study.md are kept, and `note` (which commit judged, and why) is
    added to the header. For a change of the judging rules after a run (docs/study.md says when that happened).
`one_base`: H7's verdict with one base model (the plan's `one_base`; default: what the folder's study.json said)."""
    out = Path(out)
    md = out / "study.md"
    if not md.is_file() or not (out / "study.json").is_file():
        raise TellError("not a finished study folder (no study.md / study.json): run `tell demo --study` to the end "
                        "first", file=str(out))
    sweeps = {"small": out / "sweep"} if (out / "sweep" / "results.jsonl").is_file() else {}
    sweeps |= {p.name.removeprefix("sweep-"): p for p in sorted(out.glob("sweep-*")) if (p / "results.jsonl").is_file()}
    if not sweeps:
        raise TellError("holds no sweep folder with results.jsonl", file=str(out))
    header = md.read_text().split("\n## Findings", 1)[0].rstrip().splitlines()
    header = [h for h in header if not h.startswith("- re-judged ")] + [f"- re-judged {note}"]
    if one_base is None:  # the plan's reason as the folder's study.json gave it
        was = json.loads((out / "study.json").read_text()).get("H7", {}).get("verdict", "")
        one_base = was if was.startswith("not tested") else NOT_TESTED
    return write_study(out, sweeps, header, one_base)
