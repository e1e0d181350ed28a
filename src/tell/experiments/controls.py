"""A sweep's declared positive controls and its floor and ceiling (GUIDE §6): an experiment can refute a method
only if it could have shown it working, so no comparison is judged until the controls the spec declared, before
running, have passed; and a comparison whose two arms both sit below the floor (or above the ceiling) measured
the scale's end, not the methods, so it is inconclusive whatever its interval says.

A control is a mapping in the spec's `controls:` list:

* `{id, claim, method, set, at_least, [metric], [over]}`: the method's mean over seeds (healthy, selected cells;
  its largest task budget and ratio when it has several) on the eval set, `metric` defaulting to the set's
  primary one, is >= `at_least`; with `over: METHOD`, the difference from that method's mean is.
  `at_most` instead of `at_least` bounds it from above (e.g. "the task is not free"). `method` may be a list:
  the bound holds for each method, and the value reported is the one nearest to failing (the smallest under
  `at_least`, the largest under `at_most`); a list takes no `over`.
* `{id, claim, healthy: true}`: no selected cell is unstable, and no cell the lr rule could select failed (a
  failed lr candidate whose sibling at the same method, budget, ratio and seed is healthy does not count; run
  health lists it: `tell.experiments.evidence.unhealthy_cells`).

A control the sweep cannot measure (no such method, set or metric) does not pass. `tell.synthetic.controls`
holds the demo world's own controls; this module serves every sweep.
"""

from __future__ import annotations

from typing import Any

from tell.errors import TellError

KEYS = {"id", "claim", "method", "set", "metric", "at_least", "at_most", "over", "healthy"}


def set_names(sets: list[str]) -> list[str]:
    """The names a control may give an eval set of the spec: as listed, or a file's last path component (the
    report's results name a set as the spec lists it; `_mean` also takes the file name)."""
    return list(dict.fromkeys([*sets, *(s.split("/")[-1] for s in sets)]))


def check_declared(controls: Any, methods: list[str], sets: list[str] | None = None) -> list[dict]:
    """The spec's `controls:` refused entry by entry when malformed (field controls[i]). With the spec's eval
    sets, a control's set and metric are resolved here too, so that a typo (or a file's stem where its name is
    meant) is refused before any cell trains, not found after the grid has run."""
    from tell.eval.kinds import METRIC_NAMES

    if not isinstance(controls, list):
        raise TellError(f"expected a list of controls, got {type(controls).__name__}", field="controls")
    ids = []
    for i, c in enumerate(controls):
        where = f"controls[{i}]"
        if not isinstance(c, dict):
            raise TellError(f"expected a mapping with id, claim and a rule, got {c!r}", field=where)
        if set(c) - KEYS:
            raise TellError(f"unknown key(s) {sorted(set(c) - KEYS)}; expected some of {sorted(KEYS)}", field=where)
        if not isinstance(c.get("id"), str) or not isinstance(c.get("claim"), str):
            raise TellError("a control needs an id and a claim (text)", field=where)
        ids.append(c["id"])
        if c.get("healthy") is True:
            if set(c) - {"id", "claim", "healthy"}:
                raise TellError("a health control takes only id, claim and healthy: true", field=where)
            continue
        bounds = [k for k in ("at_least", "at_most") if k in c]
        if len(bounds) != 1 or not _number(c[bounds[0]]):
            raise TellError("expected exactly one of at_least / at_most, a number", field=where)
        if not isinstance(c.get("set"), str):
            raise TellError("expected the eval set the control reads (set: NAME)", field=where)
        if isinstance(c.get("method"), list) and (not c["method"] or "over" in c):
            raise TellError("a list of methods needs at least one method and takes no over", field=where)
        for k in ("method", "over"):
            for m in methods_of(c.get(k)) if (k == "method" or k in c) else []:
                if m not in methods:
                    raise TellError(f"{k} {m!r} is not one of the sweep's methods {methods}", field=where)
        if sets is not None and c["set"] not in set_names(sets):
            raise TellError(f"set {c['set']!r} is not one of the sweep's eval sets; expected one of "
                            f"{set_names(sets)}", field=where)
        if "metric" in c and c["metric"] not in METRIC_NAMES:
            raise TellError(f"metric {c['metric']!r} is no metric an eval set reports; expected one of "
                            f"{list(METRIC_NAMES)}", field=where)
    twice = sorted({i for i in ids if ids.count(i) > 1})
    if twice:
        raise TellError(f"control id(s) {twice} given more than once", field="controls")
    return controls


def methods_of(value: Any) -> list:
    """A control's method(s) as a list (a single method, or the list it gives; anything else as one entry)."""
    return list(value) if isinstance(value, list) else [value]


def _number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and x == x and abs(x) != float("inf")


def rule(c: dict) -> str:
    """The control's rule in words, as the report prints it."""
    if c.get("healthy"):
        return "no selected cell unstable, no failed cell the lr rule could select"
    bound = f">= {c['at_least']:g}" if "at_least" in c else f"<= {c['at_most']:g}"
    who = ", ".join(methods_of(c["method"])) + (" (each)" if isinstance(c["method"], list) else "")
    what = f"{who} {c.get('metric') or 'primary metric'} on {c['set']}"
    return f"{what} minus {c['over']}'s {bound}" if c.get("over") else f"{what} {bound}"


def _mean(data: Any, c: dict, method: str) -> tuple[float | None, str]:
    """(mean over seeds, its point in words) of the method's point at its largest budget and ratio."""
    set_name = c["set"] if c["set"] in data.sets else next((s for s in data.sets if s.split("/")[-1] == c["set"]),
                                                            None)
    if set_name is None:
        return None, f"no eval set {c['set']!r} in the results"
    metric = c.get("metric") or data.primary[set_name]
    if metric not in data.metrics[set_name]:
        return None, f"no metric {metric!r} on {set_name}"
    pts = [p for p in data.points(set_name, metric).values() if p.method == method]
    if not pts:
        return None, f"no healthy, selected {method} cell"
    p = max(pts, key=lambda p: (p.budget or 0, p.ratio or 0))
    return p.value, f"{method} {p.value:.3f} ({metric}, {len(p.seeds)} seed(s))"


def check(declared: list[dict], data: Any, unhealthy: list[str]) -> list[dict]:
    """Every declared control with its measured value and whether it passed."""
    out = []
    for c in declared:
        if c.get("healthy"):
            value, passed = float(len(unhealthy)), not unhealthy
            measured = f"{len(unhealthy)} failed or unstable cell(s) the lr rule could select" + (
                f": {unhealthy[:3]}" if unhealthy else "")
        elif isinstance(c["method"], list):
            means = [_mean(data, c, m) for m in c["method"]]
            values = [v for v, _ in means]
            value = None if None in values else (min(values) if "at_least" in c else max(values))
            measured = "; ".join(said for _, said in means)
        else:
            value, measured = _mean(data, c, c["method"])
            if value is not None and c.get("over"):
                other, said = _mean(data, c, c["over"])
                value = None if other is None else value - other
                measured = f"{measured} - {said}"
        if not c.get("healthy"):
            bound = c.get("at_least", c.get("at_most"))
            passed = value is not None and (value >= bound if "at_least" in c else value <= bound)
        out.append({"id": c["id"], "claim": c["claim"], "rule": rule(c), "value": value, "passed": bool(passed),
                    "measured": measured})
    return out


def failed(results: list[dict]) -> list[str]:
    return [c["id"] for c in results if not c["passed"]]


def bounded(res: dict, floor: float | None, ceiling: float | None, lower_is_better: bool) -> dict:
    """A comparison's verdict made inconclusive when both arms' means lie below the floor or above the ceiling
    (declared in the metric's units; not applied to lower-is-better metrics, whose scale has no fixed end)."""
    a, b = res.get("a_value"), res.get("b_value")
    if lower_is_better or a is None or b is None:
        return res
    if floor is not None and max(a, b) < floor:
        return res | {"verdict": "inconclusive (floor)",
                      "verdict_reason": f"both arms below the floor {floor:g} ({a:.3f}, {b:.3f})"}
    if ceiling is not None and min(a, b) > ceiling:
        return res | {"verdict": "inconclusive (ceiling)",
                      "verdict_reason": f"both arms above the ceiling {ceiling:g} ({a:.3f}, {b:.3f})"}
    return res
