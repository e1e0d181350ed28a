"""Pre-registered readings of token-efficiency (GUIDE §6): one rule for the demo study (`tell.synthetic.study`)
and the real-model headlines (`benchmarks/halu_headline_results.py`), so that H8 can come out either way.

E is the SFT task budget that reaches tell's score at its budget, over that budget, read off the SFT ladder with
its joint interval over seeds and items (`tell.experiments.stats.token_efficiency`). Two readings:

* **H8a** E > 1 (tell is more token-efficient than sft): supported when the interval's low end is > 1,
  contradicted when its high end is <= 1;
* **H8b** E >= 4 (the low end of the paper's claim): supported when the low end is >= 4, contradicted when the
  high end is < 4; inconclusive otherwise.

A floor or a ceiling is a bound where the ladder makes it one. If tell's mean is below the floor while sft
leaves the floor at k times tell's budget (k <= 4), E < k: "contradicted (bound)" for a reading whose threshold
is >= k; only a floor that no ladder budget within 4x leaves stays "inconclusive (floor)". If tell's mean is
above the ceiling while sft at the ladder's top (m times tell's budget) is not, E >= m: "supported (bound)" when m
reaches the threshold. An interval end beyond the ladder counts as the bound it is (0 below it, infinity above).
"""

from __future__ import annotations

# reading -> (threshold, strict: E must exceed it; else E must reach it), claim
READINGS = {"H8a": (1.0, True, "tell is more token-efficient than sft (E > 1)"),
            "H8b": (4.0, False, "tell is at least 4x as token-efficient as sft (E >= 4, the low end of the "
                                "paper's claim)")}
FLOOR_REACH = 4.0  # a tell floor is a bound only where sft leaves the floor within this multiple of tell's budget


def _meets(x: float, t: float, strict: bool) -> bool:
    return x > t if strict else x >= t


def reading(hid: str, e: dict, tell_value: float, sft: list[tuple[int, float]], floor: float, ceiling: float,
            budget: int) -> tuple[str, str]:
    """(verdict, why) of reading `hid` (H8a, H8b) for one tell point: its efficiency entry `e`, its mean, the SFT
    ladder as (requested budget, mean) smallest first, the declared floor and ceiling, tell's requested budget."""
    t, strict, _ = READINGS[hid]
    if tell_value < floor:
        above = [b for b, v in sft if v >= floor]
        if not above or min(above) > FLOOR_REACH * budget:
            return "inconclusive (floor)", f"tell is at the floor and no SFT budget within {FLOOR_REACH:g}x leaves it"
        bound = min(above) / budget  # sft leaves the floor at this multiple: E is below it
        if bound <= t:
            return "contradicted (bound)", f"tell is at the floor while sft at {bound:g}x is not: E < {bound:g}"
        return "inconclusive (floor)", f"tell is at the floor; sft first leaves it at {bound:g}x, above {t:g}"
    if tell_value > ceiling and sft and sft[-1][1] <= ceiling:
        top = sft[-1][0] / budget
        return ("supported (bound)" if _meets(top, t, strict) else "inconclusive (ceiling)",
                f"tell is above the ceiling while sft at {top:g}x is not: E >= {top:g}")
    if not e.get("computed"):
        return "inconclusive", f"no efficiency: {e.get('reason')}"
    lo, hi = e["ci95"]
    lo = 0.0 if lo is None else lo  # below the smallest budget
    hi = float("inf") if hi is None else hi  # beyond the ladder
    verdict = ("supported" if _meets(lo, t, strict) else "contradicted" if not _meets(hi, t, strict)
               else "inconclusive")
    return verdict, f"E {e['efficiency']:.3g}x, interval [{lo:.3g}, {'inf' if hi == float('inf') else f'{hi:.3g}'}]"
