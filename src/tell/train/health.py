"""Is a training run healthy? A verdict on the `train_log.jsonl` that a run writes.

GUIDE section 6.2: only healthy runs are evidence. A run whose loss on its own training data rises, or that
diverges, has failed and must be reported as failed. The old guard (stop when the loss passes 10x the first
loss) missed the real failure seen here: at too high a learning rate the general-token loss rose from ~1.5
to ~2.1 within ~100 steps and never came back.

`assess(log, warmup_steps)` reads the logged rows (keys `step`, `loss`, `loss_task`, `loss_general`, ...;
a null loss means the step had no tokens of that kind) and applies these rules to each of the three loss
series separately (nulls skipped):

1. Non-finite. Any NaN/inf (or non-numeric) loss value anywhere -> unstable.
2. Divergence (series with >= MIN_SERIES_POINTS points). Smooth the series with a trailing median over
   w = clamp(round(SMOOTH_FRACTION * points), MIN_WINDOW, MAX_WINDOW) points, so short runs get small
   windows. Track the running minimum m of the smoothed series;
       limit = m + max(REL_RISE * m, ABS_RISE, NOISE_K * s),
   s = noise of the smoothed series = 1.2533 * sigma / sqrt(w), sigma = per-point noise from first
   differences (the larger of a MAD and an sd estimate, / sqrt 2). If the smoothed series is above the limit
   from some point to the end of the log, for at least w smoothed points, and the log ends after warm-up
   -> unstable; the reason names the series, the step where it crossed, the minimum and the end value.
   Why the noise term: the running minimum of a noisy series sits a few noise units below its level, so
   without it a noisy but flat task loss would look like a rise. Why w points of persistence: noise alone
   can lift the last few smoothed values; a real divergence stays up.
3. Trend (after warm-up: step > warmup_steps). Compare the first and the last quarter of the points:
   unstable when median(last) > median(first) * (1 + TREND_RISE), the rise is > ABS_RISE, and a one-sided
   Mann-Whitney test (last > first) gives p < TREND_ALPHA. Needs MIN_PART_POINTS points per quarter; with
   fewer, `checks` says so and the series is not judged (task loss on a tiny task set is often only a
   handful of noisy points). Medians and ranks, because one odd batch must not decide a verdict; the rank
   test bounds the false alarms on a flat series at TREND_ALPHA whatever its noise.
   Rule 3 catches slow rises (1.5 -> 1.8) that stay under REL_RISE; rule 2 catches a rise that happened
   early (within the first quarter) and stayed.
4. Few steps. A run with fewer than MIN_STEPS optimizer steps (`total_steps`, else the last logged step)
   cannot show a trend: rules 2-3 are skipped, the verdict stays "ok" unless rule 1 fires, and the result
   carries `few_steps: True` with a note.

ABS_RISE keeps a loss that has converged near zero (task loss 0.01 -> 0.03) from counting as a rise.

Returned: {"verdict": "ok" | "unstable", "reasons": [str], "few_steps": bool, "checks": {...}}, all plain
JSON (non-finite numbers appear as strings). `assess_file(path)` reads a log file first, ignoring a torn
(unparseable) last line, as a killed process leaves it; without `warmup_steps` it takes the warm-up to end
where the logged learning rate first reaches its peak.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
from scipy.stats import mannwhitneyu

from tell.errors import TellError

SERIES = ("loss", "loss_task", "loss_general")
LABELS = {"loss": "loss (loss)", "loss_task": "task-token loss (loss_task)",
          "loss_general": "general-token loss (loss_general)"}

MIN_STEPS = 20           # fewer optimizer steps than this: no trend can be judged
REL_RISE = 0.20          # divergence: smoothed loss this far (relative) above its running minimum, to the end
TREND_RISE = 0.10        # trend: last-quarter median this far (relative) above the first-quarter median
ABS_RISE = 0.05          # nats; any rise must also be this large (losses that converged near zero)
NOISE_K = 6.0            # divergence must also exceed this many noise units of the smoothed series
TREND_ALPHA = 1e-3       # trend: one-sided Mann-Whitney p-value (last quarter > first quarter) below this
SMOOTH_FRACTION = 0.10   # smoothing window as a fraction of the series' points ...
MIN_WINDOW, MAX_WINDOW = 3, 50   # ... clamped to this range
MIN_SERIES_POINTS = 20   # divergence is not judged on fewer points
MIN_PART_POINTS = 7      # trend: points per quarter needed (5 vs 5 cannot reach p < 1e-3)

_MAD_TO_SD = 1.4826      # MAD of a normal sample -> its standard deviation
_MEDIAN_SE = 1.2533      # sd of a sample median / (sd / sqrt n), for normal data


def _number(v: Any) -> float | None:
    """A logged value as a float; None for null/missing; NaN for anything that is not a number."""
    if v is None:
        return None
    if isinstance(v, bool):
        return math.nan
    try:
        return float(v)
    except (TypeError, ValueError):
        return math.nan


def _json_num(x: float) -> float | str:
    x = float(x)
    return round(x, 6) if math.isfinite(x) else str(x)


def _noise(values: np.ndarray) -> float:
    """Per-point noise sd from first differences (so a trend does not count as noise), / sqrt 2. The larger
    of a MAD-based and an sd-based estimate: the MAD alone, on a few dozen points, is sometimes far too
    small, and too small a noise makes noise look like a rise; outliers can only make this larger."""
    if len(values) < 3:
        return 0.0
    d = np.diff(values)
    mad = _MAD_TO_SD * np.median(np.abs(d - np.median(d)))
    return float(max(mad, np.std(d, ddof=1)) / math.sqrt(2))


def _divergence(name: str, steps: np.ndarray, vals: np.ndarray, warmup: int) -> tuple[dict, str | None]:
    n = len(vals)
    if n < MIN_SERIES_POINTS:
        return {"judged": False, "note": f"{n} points (< {MIN_SERIES_POINTS}): divergence not judged"}, None
    if steps[-1] <= warmup:
        return {"judged": False, "note": f"the log ends at step {int(steps[-1])}, within warm-up"}, None
    w = int(min(MAX_WINDOW, max(MIN_WINDOW, round(SMOOTH_FRACTION * n))))
    sm = np.median(np.lib.stride_tricks.sliding_window_view(vals, w), axis=1)  # sm[j] ends at point j+w-1
    sm_steps = steps[w - 1:]
    noise = _MEDIAN_SE * _noise(vals) / math.sqrt(w)
    runmin = np.minimum.accumulate(sm)
    limit = runmin + np.maximum(np.maximum(REL_RISE * runmin, ABS_RISE), NOISE_K * noise)
    above = sm > limit
    check = {"judged": True, "window": w, "noise": _json_num(noise), "running_min": _json_num(runmin[-1]),
             "last_smoothed": _json_num(sm[-1]), "limit": _json_num(limit[-1]), "diverged_at": None}
    # The final stretch of points above the limit; sm[0] is its own minimum, so the stretch starts at k >= 1,
    # and the running minimum no longer changes from k on (every later value is above it).
    k = int(np.flatnonzero(~above)[-1]) + 1
    # A rise must last a full window of raw points: noise alone can lift the last few smoothed values.
    if len(sm) - k < w:
        return check, None
    i_min = int(np.argmin(sm[:k]))
    check["diverged_at"] = int(sm_steps[k])
    reason = (f"{LABELS[name]} diverged: its smoothed value ({w}-point median) rose from a minimum of "
              f"{sm[i_min]:.3g} (step {int(sm_steps[i_min])}) to {sm[k]:.3g} at step {int(sm_steps[k])}, above "
              f"the limit {limit[k]:.3g}, and stayed above it to the end ({sm[-1]:.3g} at step "
              f"{int(sm_steps[-1])})")
    return check, reason


def _trend(name: str, steps: np.ndarray, vals: np.ndarray, warmup: int) -> tuple[dict, str | None]:
    post = vals[steps > warmup]
    part = len(post) // 4
    if part < MIN_PART_POINTS:
        return {"judged": False, "note": f"{len(post)} points after warm-up: fewer than {MIN_PART_POINTS} per "
                                         "quarter, trend not judged"}, None
    head, tail = post[:part], post[-part:]
    first, last = float(np.median(head)), float(np.median(tail))
    # A rank test needs no noise estimate (one from ~40 sparse task points is itself too noisy) and, for a
    # flat series, flags at most TREND_ALPHA of runs whatever the noise.
    p = float(mannwhitneyu(tail, head, alternative="greater").pvalue)
    rose = last > first * (1 + TREND_RISE) and last - first > ABS_RISE and p < TREND_ALPHA
    check = {"judged": True, "part_points": part, "first": _json_num(first), "last": _json_num(last),
             "p_value": _json_num(p), "rose": bool(rose)}
    if not rose:
        return check, None
    return check, (f"{LABELS[name]} rose from {first:.3g} to {last:.3g} after warm-up (median of the first vs "
                   f"the last {part} logged points after step {warmup}; rank test p = {p:.2g})")


def _non_finite(rows: Sequence[Mapping]) -> list[dict]:
    bad = []
    for r in rows:
        for key in SERIES:
            v = _number(r.get(key))
            if v is not None and not math.isfinite(v):
                bad.append({"step": r.get("step"), "key": key, "value": str(r.get(key))})
    return bad


def _step(r: Any) -> float | None:
    v = _number(r.get("step")) if isinstance(r, Mapping) else None
    return v if v is not None and math.isfinite(v) else None


def assess(log: Sequence[Mapping], warmup_steps: int, *, total_steps: int | None = None) -> dict:
    """The verdict on one run's logged rows (see the module docstring for the rules)."""
    rows = sorted((r for r in log if _step(r) is not None), key=_step)
    notes = [f"{len(log) - len(rows)} rows without a numeric step were ignored"] if len(rows) < len(log) else []
    last_step = int(_step(rows[-1])) if rows else 0
    steps_run = int(total_steps) if total_steps is not None else last_step
    if total_steps is not None and last_step < total_steps:
        notes.append(f"the log ends at step {last_step} of {total_steps}")
    few = steps_run < MIN_STEPS
    if not rows:
        notes.append("the log has no rows: nothing to judge")
    elif few:
        notes.append(f"{steps_run} optimizer steps (< {MIN_STEPS}): too few to judge divergence or a trend; "
                     "only non-finite losses are checked")
    reasons = []
    bad = _non_finite(rows)
    if bad:
        more = f" ({len(bad)} non-finite values in all)" if len(bad) > 1 else ""
        reasons.append(f"non-finite loss: {bad[0]['key']} = {bad[0]['value']} at step {bad[0]['step']}{more}")
    series = {}
    for name in SERIES:
        pts = [(_step(r), v) for r in rows if (v := _number(r.get(name))) is not None and math.isfinite(v)]
        entry: dict[str, Any] = {"points": len(pts)}
        series[name] = entry
        if not pts or few or any(b["key"] == name for b in bad):
            continue  # nothing to smooth, too short to judge, or already failed by rule 1
        steps, vals = np.array([p[0] for p in pts]), np.array([p[1] for p in pts])
        entry["divergence"], why_div = _divergence(name, steps, vals, warmup_steps)
        entry["trend"], why_trend = _trend(name, steps, vals, warmup_steps)
        reasons += [why for why in (why_div, why_trend) if why]
    grad_bad = sum(1 for r in rows if (g := _number(r.get("grad_norm"))) is not None and not math.isfinite(g))
    checks = {
        "steps": steps_run, "last_logged_step": last_step, "rows": len(rows), "warmup_steps": warmup_steps,
        "total_steps": total_steps, "few_steps": few, "non_finite": bad[:10], "non_finite_count": len(bad),
        # fp16 loss scaling skips steps with an inf gradient, so this alone is not a verdict.
        "grad_norm_non_finite": grad_bad, "series": series, "notes": notes,
        "constants": {"MIN_STEPS": MIN_STEPS, "REL_RISE": REL_RISE, "TREND_RISE": TREND_RISE, "ABS_RISE": ABS_RISE,
                      "NOISE_K": NOISE_K, "TREND_ALPHA": TREND_ALPHA, "SMOOTH_FRACTION": SMOOTH_FRACTION,
                      "MIN_WINDOW": MIN_WINDOW, "MAX_WINDOW": MAX_WINDOW, "MIN_SERIES_POINTS": MIN_SERIES_POINTS,
                      "MIN_PART_POINTS": MIN_PART_POINTS},
    }
    return {"verdict": "unstable" if reasons else "ok", "reasons": reasons, "few_steps": few, "checks": checks}


def read_log(path: str | Path) -> tuple[list[dict], bool]:
    """The rows of a train_log.jsonl and whether a torn (unparseable) last line was dropped. A bad line
    anywhere else is a damaged file, not a killed writer: TellError naming the line."""
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError as e:
        raise TellError(f"cannot read the training log ({e.strerror or e})", file=str(path)) from e
    numbered = [(i, line) for i, line in enumerate(lines, 1) if line.strip()]
    rows, torn = [], False
    for j, (i, line) in enumerate(numbered):
        try:
            row = json.loads(line)  # Python's json reads the NaN/Infinity that json.dumps writes
        except ValueError:
            row = None
        if isinstance(row, dict):
            rows.append(row)
        elif j == len(numbered) - 1:
            torn = True  # the process was killed mid-write; every earlier row is whole
        else:
            raise TellError("not a JSON object; expected one training-log row per line", file=str(path), line=i)
    return rows, torn


def _warmup_from_lr(rows: Sequence[Mapping]) -> int | None:
    """Warm-up ends where the logged learning rate first reaches its peak (within one step: HF logs the
    rate after the scheduler has stepped)."""
    lrs = [(s, v) for r in rows if (s := _step(r)) is not None and (v := _number(r.get("learning_rate"))) is not None
           and math.isfinite(v)]
    if not lrs:
        return None
    peak = max(v for _, v in lrs)
    first = min(s for s, v in lrs if v >= peak * (1 - 1e-9))
    return max(0, int(first) - 1)


def assess_file(path: str | Path, warmup_steps: int | None = None, *, total_steps: int | None = None) -> dict:
    """`assess` on a train_log.jsonl. Without `warmup_steps`, it is read off the logged learning rate."""
    rows, torn = read_log(path)
    rows = [r for r in rows if "eval" not in r]  # evaluations during training (`tell.train.live_eval`) hold no loss
    inferred = warmup_steps is None
    if inferred:
        warmup_steps = _warmup_from_lr(rows) or 0
    out = assess(rows, warmup_steps, total_steps=total_steps)
    out["checks"].update(file=str(path), torn_last_line=torn, warmup_inferred=inferred)
    if torn:
        out["checks"]["notes"].append("the last line was torn (unparseable) and was ignored")
    return out
