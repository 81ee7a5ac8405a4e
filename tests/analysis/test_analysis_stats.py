"""analysis.stats against scipy / plain numpy computed independently."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as sps

from spokentod.analysis import stats


def test_mean_ci_matches_scipy_t_interval_and_drops_missing():
    x = [3.1, 2.9, None, 3.6, float("nan"), 2.2, 3.0]
    clean = np.array([3.1, 2.9, 3.6, 2.2, 3.0])
    e = stats.mean_ci(x)
    lo, hi = sps.t.interval(0.95, len(clean) - 1, loc=clean.mean(), scale=sps.sem(clean))
    assert e.n == 5 and e.mean == pytest.approx(clean.mean())
    assert (e.lo, e.hi) == (pytest.approx(lo), pytest.approx(hi))


def test_mean_ci_small_samples():
    assert stats.mean_ci([]).n == 0 and math.isnan(stats.mean_ci([None]).mean)
    one = stats.mean_ci([4.0])
    assert one.mean == 4.0 and one.n == 1 and math.isnan(one.lo)


@pytest.mark.parametrize("k,n", [(0, 10), (3, 10), (10, 10), (27, 120)])
def test_rate_ci_is_wilson(k, n):
    e = stats.rate_ci([True] * k + [False] * (n - k) + [None])
    ci = sps.binomtest(k, n).proportion_ci(0.95, method="wilson")
    assert e.n == n and e.mean == pytest.approx(k / n)
    assert (e.lo, e.hi) == (pytest.approx(ci.low), pytest.approx(ci.high))


def test_pearson_matches_scipy_fisher_z():
    rng = np.random.default_rng(1)
    x = rng.normal(size=60)
    y = 0.6 * x + rng.normal(size=60)
    xs, ys = list(x), list(y)
    xs[3], ys[7] = None, None  # pairs with a missing side are dropped
    keep = [i for i in range(60) if i not in (3, 7)]
    ref = sps.pearsonr(x[keep], y[keep])
    ci = ref.confidence_interval(0.95)
    c = stats.pearson_ci(xs, ys)
    assert c.n == 58
    assert c.r == pytest.approx(ref.statistic) and c.p == pytest.approx(ref.pvalue)
    assert (c.lo, c.hi) == (pytest.approx(ci.low), pytest.approx(ci.high))


def test_pearson_undefined_cases():
    assert math.isnan(stats.pearson_ci([1, 1, 1, 1], [1, 2, 3, 4]).r)  # constant side
    assert math.isnan(stats.pearson_ci([1, 2], [2, 1]).r)
    assert math.isnan(stats.pearson_ci([1, 2, 3], [1, 3, 2]).lo)  # n = 3: r but no Fisher-z interval


def _naive_bootstrap(a, b, n_boot, seed):
    """Loop version of a paired dialogue bootstrap, written independently of stats.py."""
    rng = np.random.default_rng(seed)
    ids = sorted(set(a) & set(b))
    out = []
    for _ in range(n_boot):
        pick = [ids[i] for i in rng.integers(0, len(ids), len(ids))]
        va = np.concatenate([a[i] for i in pick])
        vb = np.concatenate([b[i] for i in pick])
        out.append(va.mean() - vb.mean())
    return np.percentile(out, [2.5, 97.5])


def test_cluster_bootstrap_agrees_with_a_naive_loop():
    rng = np.random.default_rng(2)
    hard = rng.normal(0, 10, 40)  # per-dialogue difficulty shared by both systems
    a = {f"d{i}": list(70 + hard[i] + rng.normal(0, 3, 4)) for i in range(40)}
    b = {f"d{i}": list(66 + hard[i] + rng.normal(0, 3, 4)) for i in range(40)}
    d = stats.cluster_bootstrap_diff(a, b, n_boot=4000, seed=0)
    va, vb = np.concatenate(list(a.values())), np.concatenate(list(b.values()))
    assert d.paired and d.clusters == 40
    assert d.diff == pytest.approx(va.mean() - vb.mean())
    lo, hi = _naive_bootstrap({k: np.array(v) for k, v in a.items()}, {k: np.array(v) for k, v in b.items()},
                              4000, 123)
    assert d.lo == pytest.approx(lo, abs=0.25) and d.hi == pytest.approx(hi, abs=0.25)
    assert d.lo > 0 and d.p < 0.01  # a 4-point gap with shared difficulty is clear when paired
    unpaired = stats.cluster_bootstrap_diff(a, {f"x{k}": v for k, v in b.items()}, n_boot=4000)
    assert not unpaired.paired and (unpaired.hi - unpaired.lo) > 2 * (d.hi - d.lo)


def test_cluster_bootstrap_no_difference_and_missing_values():
    rng = np.random.default_rng(3)
    a = {f"d{i}": list(rng.normal(50, 5, 3)) + [None] for i in range(30)}
    b = {f"d{i}": list(rng.normal(50, 5, 3)) for i in range(30)}
    d = stats.cluster_bootstrap_diff(a, b)
    assert d.lo < 0 < d.hi and d.p > 0.05
    one = stats.cluster_bootstrap_diff({"d0": [1.0]}, {"d0": [2.0]})
    assert one.diff == -1.0 and math.isnan(one.lo)


def test_slope_difference_matches_polyfit_and_resolves_a_real_decline():
    rng = np.random.default_rng(1)
    a, b = {}, {}
    for d in range(30):
        level = rng.normal(0, 0.2)  # a dialogue's difficulty, shared by both systems (paired)
        a[f"d{d}"] = [(t, level + 0.5 - 0.05 * t + rng.normal(0, 0.05)) for t in range(1, 7)]
        b[f"d{d}"] = [(t, level + 0.5 + rng.normal(0, 0.05)) for t in range(1, 7)]
    a["d0"].append((7, None))  # missing: dropped, not a zero
    b["d0"].append((7, float("nan")))
    r = stats.cluster_bootstrap_slope_diff(a, b, n_boot=500)
    xs = [(x, y) for d in a.values() for x, y in d if y is not None]
    assert r.a == pytest.approx(np.polyfit(*zip(*xs), 1)[0])
    assert r.a == pytest.approx(-0.05, abs=0.01) and abs(r.b) < 0.01
    assert r.lo < r.diff < r.hi < 0 and r.p < 0.01 and r.clusters == 30
    assert r.a_lo < r.a < r.a_hi and r.b_lo < 0 < r.b_hi
    same = stats.cluster_bootstrap_slope_diff(b, b, n_boot=200)
    assert same.diff == 0 and same.lo == same.hi == 0  # paired: identical systems differ by exactly 0


def test_slope_difference_without_enough_dialogues_has_no_interval():
    r = stats.cluster_bootstrap_slope_diff({"x": [(1, 1.0), (2, 0.0)]}, {"x": [(1, 0.0), (2, 0.0)]})
    assert r.diff == pytest.approx(-1.0) and math.isnan(r.lo) and r.clusters == 1


def test_slope_difference_of_runs_that_reached_one_turn_only_has_no_interval():
    # every dialogue of one system has replies at R1 only: no slope in any draw, so no interval (not a crash)
    one = {d: [(1, 0.5)] for d in "abc"}
    many = {d: [(1, 0.5), (2, 0.4)] for d in "abc"}
    r = stats.cluster_bootstrap_slope_diff(one, many, n_boot=50)
    assert math.isnan(r.a) and math.isnan(r.lo) and math.isnan(r.hi) and math.isnan(r.p)
    assert r.b == pytest.approx(-0.1) and r.b_lo == pytest.approx(-0.1)
