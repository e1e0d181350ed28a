"""tell.experiments.stats on synthetic numbers whose answers are known (no model, no files)."""

from __future__ import annotations

import json
import math
import time

import numpy as np
import pytest

from tell.experiments.stats import Resampler, estimate, fit_scaling, paired, token_efficiency


def width(ci) -> float:
    return ci[1] - ci[0]


def bernoulli_cell(rng, p_items, seeds, seed_sd=0.0):
    """{seed: 0/1 scores}, item i correct with probability p_i (+ a per-seed offset)."""
    out = {}
    for s in seeds:
        p = np.clip(p_items + rng.normal(0, seed_sd) if seed_sd else p_items, 0, 1)
        out[s] = (rng.random(p_items.size) < p).astype(float)
    return out


def logistic(x, lo, hi, k, x0):
    return lo + (hi - lo) / (1 + np.exp(-k * (np.asarray(x) - x0)))


G8 = np.logspace(3, 8, 8)  # 8 general-token budgets, 5 decades

X8 = np.log10(G8)

SFT_T = [1e3, 1e4, 1e5, 1e6]

SFT_V = [0.1, 0.3, 0.5, 0.7]  # 0.2 per decade: log10 tokens = 3 + (v - 0.1) / 0.2 along the whole curve


def test_resampler_deterministic_order_free_and_seed_dependent():
    rng = np.random.default_rng(1)
    sc = {s: rng.random(50) for s in (3, 7, 11)}
    r1 = Resampler([3, 7, 11], 50, resamples=300, seed=5).replicates(sc)
    r2 = Resampler([11, 3, 7], 50, resamples=300, seed=5).replicates(sc)
    r3 = Resampler([3, 7, 11], 50, resamples=300, seed=6).replicates(sc)
    assert r1.shape == (300,)
    np.testing.assert_array_equal(r1, r2)
    assert not np.allclose(r1, r3)


def test_replicates_equal_a_naive_loop_over_the_same_draws():
    """The vectorised counts-and-matmul form gives exactly the crossed bootstrap written out by hand."""
    rng = np.random.default_rng(2)
    seeds, n, b = [0, 1, 2, 3], 17, 40
    sc = {s: rng.random(n) for s in seeds}
    got = Resampler(seeds, n, resamples=b, seed=9).replicates(sc)
    draw = np.random.default_rng(9)
    seed_idx = draw.integers(0, len(seeds), size=(b, len(seeds)))
    item_idx = draw.integers(0, n, size=(b, n))
    x = np.stack([sc[s] for s in seeds])
    want = [np.mean([x[si, item_idx[r]].mean() for si in seed_idx[r]]) for r in range(b)]
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-12)


def test_replicates_centre_on_the_point_estimate_and_are_fast():
    rng = np.random.default_rng(3)
    sc = bernoulli_cell(rng, rng.uniform(0.2, 0.9, 1000), range(10), seed_sd=0.05)
    t = time.perf_counter()
    rs = Resampler(range(10), 1000, resamples=1000, seed=0)
    reps = rs.replicates(sc)
    elapsed = time.perf_counter() - t
    point = rs.point(sc)
    assert point == pytest.approx(np.mean([v.mean() for v in sc.values()]))
    assert abs(reps.mean() - point) < 0.003
    assert elapsed < 1.0, f"1000 resamples x 10 seeds x 1000 items took {elapsed:.2f}s"


def test_resampler_refuses_wrong_seeds_lengths_and_nan():
    rs = Resampler([0, 1, 2], 10, resamples=20)
    ok = {s: np.zeros(10) for s in (0, 1, 2)}
    rs.replicates(ok)
    with pytest.raises(ValueError, match="missing \\[2\\], extra \\[5\\]"):
        rs.replicates({0: np.zeros(10), 1: np.zeros(10), 5: np.zeros(10)})
    with pytest.raises(ValueError, match="9 items per seed.*built for 10"):
        rs.replicates({s: np.zeros(9) for s in (0, 1, 2)})
    with pytest.raises(ValueError, match="different numbers of items"):
        rs.replicates({0: np.zeros(10), 1: np.zeros(10), 2: np.zeros(9)})
    with pytest.raises(ValueError, match="NaN"):
        rs.replicates({0: np.zeros(10), 1: np.zeros(10), 2: np.r_[np.zeros(9), np.nan]})
    with pytest.raises(ValueError, match="duplicate"):
        Resampler([1, 1], 10)
    with pytest.raises(ValueError):
        Resampler([], 10)


def test_seed_noise_widens_the_interval():
    rng = np.random.default_rng(4)
    items = rng.random(400)
    agree = {s: items.copy() for s in range(5)}
    # The same items, every seed shifted by its own offset: identical item spread, seeds disagree by +-0.1.
    differ = {s: items + off for s, off in zip(range(5), (-0.1, -0.05, 0.0, 0.05, 0.1))}
    w_agree, w_differ = width(estimate(agree)["ci95"]), width(estimate(differ)["ci95"])
    # Seed part alone: the bootstrapped mean of 5 offsets has sd = population sd / sqrt(5) = 0.0707 / 2.236.
    assert w_differ > 1.5 * w_agree
    assert math.sqrt(w_differ ** 2 - w_agree ** 2) == pytest.approx(2 * 1.96 * 0.0707 / math.sqrt(5), rel=0.15)


def test_item_noise_matches_the_binomial_standard_error():
    rng = np.random.default_rng(5)
    n = 2000
    items = (rng.random(n) < 0.5).astype(float)
    p = items.mean()
    e = estimate({s: items for s in range(4)}, resamples=2000)
    expected = 2 * 1.96 * math.sqrt(p * (1 - p) / n)
    assert width(e["ci95"]) == pytest.approx(expected, rel=0.12)
    assert e["value"] == pytest.approx(p)


def test_crossed_design_does_not_shrink_item_noise_with_more_seeds():
    rng = np.random.default_rng(6)
    items = (rng.random(1000) < 0.7).astype(float)
    w1 = width(estimate({0: items}, resamples=2000)["ci95"])
    w10 = width(estimate({s: items for s in range(10)}, resamples=2000)["ci95"])
    # Resampling items independently per seed would give w10 ~ w1 / sqrt(10) ~ 0.32 w1.
    assert w10 == pytest.approx(w1, rel=0.12)


def test_estimate_keys_single_seed_and_single_item():
    e = estimate({0: np.array([1.0])})
    assert e["ci95"] == [None, None] and e["seeds"] == 1 and e["items"] == 1 and not e["verdict_ok"]
    e = estimate({0: np.array([1.0, 0.0, 1.0, 1.0])})
    assert e["ci95"][0] is not None and e["ci95"][0] < e["value"] == 0.75 < e["ci95"][1] and not e["verdict_ok"]
    e = estimate({s: np.array([1.0, 0.0]) for s in range(3)})
    assert e["verdict_ok"] and e["replicates"].shape == (1000,)
    json.dumps({k: v for k, v in e.items() if k != "replicates"})


def test_interval_coverage_on_simulated_experiments():
    """200 experiments (fresh items, seeds and answers each); truth 0.5 by symmetry. 95% should cover ~95%."""
    rng = np.random.default_rng(7)
    covered = 0
    for _ in range(200):
        p_items = rng.beta(0.5, 0.5, 200)
        sc = bernoulli_cell(rng, p_items, range(5), seed_sd=0.01)
        lo, hi = estimate(sc, resamples=400)["ci95"]
        covered += lo <= 0.5 <= hi
    assert 0.88 * 200 <= covered <= 0.99 * 200, covered
    print(f"coverage {covered / 200:.3f}")


def test_paired_constant_shift_is_exact_and_better_and_swap_is_worse():
    rng = np.random.default_rng(8)
    b = {s: rng.random(100) for s in range(4)}
    a = {s: v + 0.2 for s, v in b.items()}
    r = paired(a, b)
    assert r["diff"] == pytest.approx(0.2, abs=1e-12)
    assert width(r["ci95"]) < 1e-12 and r["ci95"][0] == pytest.approx(0.2, abs=1e-12)
    assert r["verdict"] == "better" and r["seeds"] == 4 and r["items"] == 100 and r["seeds_used"] == [0, 1, 2, 3]
    s = paired(b, a)
    assert s["diff"] == pytest.approx(-0.2, abs=1e-12) and s["verdict"] == "worse"
    json.dumps(r)


def test_paired_same_distribution_is_no_detectable_difference():
    rng = np.random.default_rng(9)
    p = rng.uniform(0.3, 0.9, 300)
    a, b = bernoulli_cell(rng, p, range(5)), bernoulli_cell(rng, p, range(5))
    r = paired(a, b)
    assert r["ci95"][0] < 0 < r["ci95"][1]
    assert r["verdict"] == "no detectable difference"


def test_paired_two_seeds_gives_no_verdict_but_numbers():
    b = {s: np.linspace(0, 1, 50) for s in (0, 1)}
    a = {s: v + 0.1 for s, v in b.items()}
    r = paired(a, b)
    assert r["verdict"] == "no verdict (2 seeds < 3)"
    assert r["diff"] == pytest.approx(0.1) and r["ci95"][0] == pytest.approx(0.1)


def test_paired_uses_common_seeds_and_refuses_mismatches():
    a = {s: np.full(10, 0.5) for s in (0, 1, 2, 3)}
    b = {s: np.full(10, 0.25) for s in (1, 2, 3, 4)}
    r = paired(a, b)
    assert r["seeds_used"] == [1, 2, 3] and r["seeds"] == 3 and r["diff"] == pytest.approx(0.25)
    with pytest.raises(ValueError, match="no seed in common"):
        paired({0: np.zeros(10)}, {1: np.zeros(10)})
    with pytest.raises(ValueError, match="same items"):
        paired({0: np.zeros(10)}, {0: np.zeros(11)})


def test_pairing_is_much_narrower_than_unpaired_when_items_are_correlated():
    rng = np.random.default_rng(10)
    z = rng.random(300)  # item difficulty shared by both cells dominates the scores
    a = {s: z + 0.02 + rng.normal(0, 0.01, 300) for s in range(3)}
    b = {s: z + rng.normal(0, 0.01, 300) for s in range(3)}
    r = paired(a, b)
    unpaired = math.hypot(width(estimate(a)["ci95"]), width(estimate(b)["ci95"]))
    assert width(r["ci95"]) < 0.2 * unpaired
    assert r["verdict"] == "better" and r["diff"] == pytest.approx(0.02, abs=0.005)


def test_fit_scaling_refuses_four_ratios():
    g = [0, 1e4, 1e5, 1e6, 1e7]  # the 0 (pure task) point has no log and is excluded
    r = fit_scaling(g, [0.1, 0.2, 0.3, 0.5, 0.6])
    assert r["fitted"] is False and "6" in r["reason"] and "4 distinct" in r["reason"]
    assert r["shape"] == "not identified" and r["excluded_nonpositive"] == 1 and r["distinct_x"] == 4
    json.dumps(r)
    with pytest.raises(ValueError):
        fit_scaling(g, [0.1, 0.2, 0.3, 0.5, 0.6], min_points=4)
    with pytest.raises(ValueError):
        fit_scaling(g, [0.1, 0.2, float("nan"), 0.5, 0.6])


def test_fit_scaling_recovers_a_known_s_curve():
    rng = np.random.default_rng(11)
    y = logistic(X8, 0.1, 0.7, 2.5, 5.5) + rng.normal(0, 0.005, 8)
    reps = y + rng.normal(0, 0.005, (500, 8))
    r = fit_scaling(G8, y, reps)
    assert r["fitted"] and r["best"] == "logistic" and r["shape"] == "S-curve"
    lg = r["models"]["logistic"]
    assert lg["params"]["x0"] == pytest.approx(5.5, abs=0.1)
    assert lg["params"]["hi"] == pytest.approx(0.7, abs=0.03) and lg["params"]["lo"] == pytest.approx(0.1, abs=0.03)
    assert lg["midpoint"] == pytest.approx(10 ** lg["params"]["x0"])
    assert lg["ci95"]["x0"][0] < 5.5 < lg["ci95"]["x0"][1]
    assert lg["ci95"]["midpoint_tokens"][0] == pytest.approx(10 ** lg["ci95"]["x0"][0])
    assert lg["loo_rmse"] < r["models"]["line"]["loo_rmse"] < r["models"]["constant"]["loo_rmse"]
    assert r["replicate_refits"] == 200
    json.dumps(r)


def test_fit_scaling_line_is_not_called_an_s_curve():
    rng = np.random.default_rng(12)
    y = 0.05 + 0.08 * X8 + rng.normal(0, 0.005, 8)
    reps = y + rng.normal(0, 0.005, (300, 8))
    r = fit_scaling(G8, y, reps)
    assert r["shape"] == "line in log tokens" and r["best"] == "line"
    assert r["models"]["line"]["params"]["slope"] == pytest.approx(0.08, abs=0.005)
    lo, hi = r["models"]["line"]["ci95"]["slope"]
    assert lo < 0.08 < hi


def test_fit_scaling_midpoint_beyond_the_data_is_not_identified():
    # The true midpoint (10^10 tokens) is two decades past the largest budget: the data see only the foot.
    y = logistic(X8, 0.1, 0.9, 1.2, 10.0)
    rng = np.random.default_rng(16)
    r = fit_scaling(G8, y, y + rng.normal(0, 0.002, (100, 8)))
    lg = r["models"]["logistic"]
    assert r["best"] == "logistic"  # it is the best description of the foot of the curve ...
    assert lg["midpoint"] == "not identified" and lg["params"]["x0"] is None and lg["midpoint_tokens"] is None
    assert r["shape"] == "not identified" and "midpoint" in r["shape_reason"]  # ... but no S-curve is named
    assert lg["ci95"]["x0"][1] is None and lg["ci95"]["midpoint_tokens"][1] is None
    assert lg["replicate_midpoints_not_identified"] > 0.5


def test_fit_scaling_constant_picks_constant():
    r = fit_scaling(G8, [0.4] * 8)
    assert r["best"] == "constant" and r["shape"] == "constant"
    rng = np.random.default_rng(13)
    r = fit_scaling(G8, 0.4 + rng.normal(0, 0.01, 8))
    assert r["best"] == "constant" and r["shape"] == "constant"
    assert r["models"]["constant"]["params"]["c"] == pytest.approx(0.4, abs=0.01)


def test_token_efficiency_refuses_three_budgets():
    r = token_efficiency(SFT_T[:3], SFT_V[:3], None, 1e3, 0.4, None)
    assert r["computed"] is False and "3 distinct SFT budgets" in r["reason"] and "4" in r["reason"]
    # A repeated budget is one budget, not two.
    r = token_efficiency(SFT_T[:3] + [1e5], SFT_V[:3] + [0.5], None, 1e3, 0.4, None)
    assert r["computed"] is False


def test_token_efficiency_exact_interpolation():
    r = token_efficiency(SFT_T, SFT_V, None, 1e3, 0.4, None)
    assert r["computed"] and r["bound"] is None
    assert r["sft_equivalent_tokens"] == pytest.approx(10 ** 4.5)
    assert r["efficiency"] == pytest.approx(10 ** 1.5)
    assert r["ci95"] == [None, None]
    json.dumps(r)


def test_token_efficiency_running_maximum():
    # The dip at 1e5 is lifted to 0.5 (the running maximum), so 0.55 lies between 0.5 at 1e5 and 0.7 at 1e6,
    # a quarter of the way; interpolating from the raw 0.3 would give 10^5.625 instead.
    r = token_efficiency(SFT_T, [0.1, 0.5, 0.3, 0.7], None, 1e2, 0.55, None)
    assert r["sft_equivalent_tokens"] == pytest.approx(10 ** 5.25)
    r = token_efficiency(SFT_T, [0.1, 0.5, 0.3, 0.7], None, 1e2, 0.4, None)
    assert r["sft_equivalent_tokens"] == pytest.approx(10 ** 3.75)  # 0.1 -> 0.5 over one decade


def test_token_efficiency_bounds_at_the_ends():
    low = token_efficiency(SFT_T, SFT_V, None, 1e3, 0.9, None)
    assert low["bound"] == "lower" and low["sft_equivalent_tokens"] == pytest.approx(1e6)
    assert low["efficiency"] == pytest.approx(1e3)
    up = token_efficiency(SFT_T, SFT_V, None, 1e4, 0.1, None)
    assert up["bound"] == "upper" and up["sft_equivalent_tokens"] == pytest.approx(1e3)
    assert up["efficiency"] == pytest.approx(0.1)


def test_token_efficiency_interval_known_answer_and_contains_point():
    rng = np.random.default_rng(14)
    b = 2000
    sft_reps = np.tile(SFT_V, (b, 1))  # SFT without noise: the interval comes from tell's value alone
    tell_reps = 0.4 + rng.normal(0, 0.03, b)
    r = token_efficiency(SFT_T, SFT_V, sft_reps, 1e3, 0.4, tell_reps)
    q = np.percentile(tell_reps, [2.5, 97.5])
    want = 10 ** (3 + (q - 0.1) / 0.2) / 1e3
    assert r["ci95"] == pytest.approx(list(want), rel=1e-9)
    assert r["ci95"][0] < r["efficiency"] < r["ci95"][1]
    assert r["replicates_beyond"] == 0 and r["replicates_below"] == 0
    # Joint noise on both sides: the interval still brackets the point.
    sft_noisy = np.array(SFT_V) + rng.normal(0, 0.03, (b, 4))
    r = token_efficiency(SFT_T, SFT_V, sft_noisy, 1e3, 0.4, tell_reps)
    assert r["ci95"][0] < r["efficiency"] < r["ci95"][1]


def test_token_efficiency_interval_unbounded_beyond_the_curve():
    rng = np.random.default_rng(15)
    tell_reps = 0.72 + rng.normal(0, 0.03, 1000)  # about three quarters of replicates beat every SFT budget
    r = token_efficiency(SFT_T, SFT_V, np.tile(SFT_V, (1000, 1)), 1e3, 0.72, tell_reps)
    assert r["bound"] == "lower" and r["ci95"][1] is None and r["sft_equivalent_ci95"][1] is None
    assert r["ci95"][0] is not None and r["ci95"][0] < 1e3
    assert 0.6 < r["replicates_beyond"] < 0.9
    # Every replicate beyond the curve: the low end is the largest budget (a lower bound), the high end None.
    r = token_efficiency(SFT_T, SFT_V, np.tile(SFT_V, (500, 1)), 1e3, 0.95, np.full(500, 0.95))
    assert r["ci95"] == [pytest.approx(1e3), None] and r["replicates_beyond"] == 1
    # Every replicate at or below the start: the high end is the smallest budget (an upper bound), low None.
    r = token_efficiency(SFT_T, SFT_V, np.tile(SFT_V, (500, 1)), 1e2, 0.05, np.full(500, 0.05))
    assert r["bound"] == "upper" and r["ci95"] == [None, pytest.approx(10.0)] and r["replicates_below"] == 1


def test_token_efficiency_refuses_bad_replicates():
    with pytest.raises(ValueError, match="both"):
        token_efficiency(SFT_T, SFT_V, np.zeros((10, 4)), 1e3, 0.4, None)
    with pytest.raises(ValueError, match="rows"):
        token_efficiency(SFT_T, SFT_V, np.zeros((10, 4)), 1e3, 0.4, np.zeros(9))
    with pytest.raises(ValueError):
        token_efficiency(SFT_T, SFT_V, np.zeros((10, 3)), 1e3, 0.4, np.zeros(10))
    with pytest.raises(ValueError):
        token_efficiency([0, 1e4, 1e5, 1e6], SFT_V, None, 1e3, 0.4, None)
