"""Small, dependency-light statistics for the bench report: every function takes plain sequences, drops
None/NaN (missing is never zero), and returns the n it actually used.

- `mean_ci`: mean with a Student-t 95 % interval. It treats replies as independent; turns of one dialogue
  are correlated, so this interval is somewhat narrow. System *differences* use `cluster_bootstrap_diff`,
  which resamples whole dialogues and so accounts for that.
- `rate_ci`: a proportion (failure presence) with the Wilson interval, which stays inside [0, 1] and is
  sensible at 0 % or 100 %, unlike a t interval on 0/1 values.
- `pearson_ci`: Pearson r with a Fisher-z interval (r ± z / sqrt(n - 3) on atanh scale).
- `cluster_bootstrap_diff`: mean(A) - mean(B) with a percentile bootstrap over dialogues, paired when the
  two systems ran the same dialogues.
- `cluster_bootstrap_slope_diff`: degradation per turn (OLS slope of a metric on R1..Rn) of two systems
  and its difference, with the same bootstrap over dialogues.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

LEVEL = 0.95
NAN = float("nan")


def clean(values: Iterable[float | None]) -> np.ndarray:
    """Floats without None/NaN/inf (bools become 0/1)."""
    arr = np.array([float(v) for v in values if v is not None], dtype=float)
    return arr[np.isfinite(arr)]


@dataclass(frozen=True)
class Estimate:
    mean: float
    lo: float
    hi: float
    n: int


def mean_ci(values: Iterable[float | None], level: float = LEVEL) -> Estimate:
    from scipy import stats

    x = clean(values)
    n = len(x)
    if n == 0:
        return Estimate(NAN, NAN, NAN, 0)
    m = float(x.mean())
    if n == 1:
        return Estimate(m, NAN, NAN, 1)  # no spread from one value: say so instead of a zero-width interval
    half = float(stats.t.ppf(0.5 + level / 2, n - 1) * x.std(ddof=1) / math.sqrt(n))
    return Estimate(m, m - half, m + half, n)


def rate_ci(values: Iterable[float | bool | None], level: float = LEVEL) -> Estimate:
    """Share of true values (anything > 0.5) with the Wilson score interval."""
    from scipy import stats

    x = clean(values)
    n = len(x)
    if n == 0:
        return Estimate(NAN, NAN, NAN, 0)
    p = float((x > 0.5).mean())
    z = float(stats.norm.ppf(0.5 + level / 2))
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return Estimate(p, max(0.0, centre - half), min(1.0, centre + half), n)


def percentile(values: Iterable[float | None], q: float) -> float:
    x = clean(values)
    return float(np.percentile(x, q)) if len(x) else NAN


@dataclass(frozen=True)
class Correlation:
    r: float
    lo: float
    hi: float
    n: int
    p: float


def _finite_pairs(x: Sequence[float | None], y: Sequence[float | None]) -> np.ndarray:
    """[n, 2] array of the (x, y) pairs where both values exist and are finite."""
    pairs = np.array([(float(a), float(b)) for a, b in zip(x, y, strict=True) if a is not None and b is not None],
                     dtype=float).reshape(-1, 2)
    return pairs[np.isfinite(pairs).all(axis=1)]


def pearson_ci(x: Sequence[float | None], y: Sequence[float | None], level: float = LEVEL) -> Correlation:
    """Pearson r over the pairs where both values exist; NaN r when either side is constant or n < 3."""
    from scipy import stats

    pairs = _finite_pairs(x, y)
    n = len(pairs)
    if n < 3 or np.ptp(pairs[:, 0]) == 0 or np.ptp(pairs[:, 1]) == 0:
        return Correlation(NAN, NAN, NAN, n, NAN)
    r = float(np.corrcoef(pairs[:, 0], pairs[:, 1])[0, 1])
    r = max(-1.0, min(1.0, r))
    t = r * math.sqrt((n - 2) / max(1e-300, 1 - r * r))
    p = float(2 * stats.t.sf(abs(t), n - 2))
    if n <= 3:  # Fisher z needs n > 3 (its standard error is 1/sqrt(n - 3))
        return Correlation(r, NAN, NAN, n, p)
    z = math.atanh(min(max(r, -0.999999999999), 0.999999999999))
    half = float(stats.norm.ppf(0.5 + level / 2)) / math.sqrt(n - 3)
    return Correlation(r, math.tanh(z - half), math.tanh(z + half), n, p)


@dataclass(frozen=True)
class Difference:
    mean_a: float
    mean_b: float
    diff: float  # mean_a - mean_b
    lo: float
    hi: float
    p: float  # two-sided bootstrap p: twice the smaller tail beyond 0
    clusters: int  # dialogues resampled (shared ones when paired)
    paired: bool


def _sums(groups: Mapping[str, Iterable[float | None]], ids: list[str]) -> tuple[np.ndarray, np.ndarray]:
    vals = [clean(groups.get(i, ())) for i in ids]
    return np.array([v.sum() for v in vals]), np.array([len(v) for v in vals], dtype=float)


def cluster_bootstrap_diff(a: Mapping[str, Iterable[float | None]], b: Mapping[str, Iterable[float | None]],
                           n_boot: int = 2000, seed: int = 0, level: float = LEVEL) -> Difference:
    """mean(A) - mean(B) over replies, resampling dialogues (clusters) with replacement.

    `a` and `b` map a dialogue id to that system's values in it. When the systems share dialogues, only
    the shared ones are used and both are resampled with the same draw (paired: the dialogue's difficulty
    cancels out); otherwise each side is resampled on its own. Each bootstrap mean is a ratio
    (sum of values / count of values in the drawn dialogues), the usual cluster estimator.
    """
    ids_a = [k for k in a if len(clean(a[k]))]
    ids_b = [k for k in b if len(clean(b[k]))]
    shared = sorted(set(ids_a) & set(ids_b))
    paired = len(shared) >= 2
    rng = np.random.default_rng(seed)
    if paired:
        ids_a = ids_b = shared
    if len(ids_a) < 2 or len(ids_b) < 2:
        ma = _ratio(*_sums(a, ids_a))
        mb = _ratio(*_sums(b, ids_b))
        return Difference(ma, mb, ma - mb, NAN, NAN, NAN, min(len(ids_a), len(ids_b)), paired)
    sa, ca = _sums(a, ids_a)
    sb, cb = _sums(b, ids_b)
    wa = _weights(rng, len(ids_a), n_boot)
    wb = wa if paired else _weights(rng, len(ids_b), n_boot)
    with np.errstate(invalid="ignore", divide="ignore"):
        boot = (wa @ sa) / (wa @ ca) - (wb @ sb) / (wb @ cb)
    boot = boot[np.isfinite(boot)]
    ma, mb = _ratio(sa, ca), _ratio(sb, cb)
    lo, hi = np.percentile(boot, [100 * (1 - level) / 2, 100 * (1 + level) / 2])
    p = min(1.0, 2 * min((boot <= 0).mean(), (boot >= 0).mean()))
    return Difference(ma, mb, ma - mb, float(lo), float(hi), float(p), len(ids_a) if paired else
                      min(len(ids_a), len(ids_b)), paired)


def _ratio(s: np.ndarray, c: np.ndarray) -> float:
    return float(s.sum() / c.sum()) if c.sum() else NAN


def _weights(rng: np.random.Generator, k: int, n_boot: int) -> np.ndarray:
    """How often each of k clusters is drawn in each of n_boot resamples (rows sum to k)."""
    draws = rng.integers(0, k, size=(n_boot, k)) + np.arange(n_boot)[:, None] * k  # one bincount for all rows
    return np.bincount(draws.ravel(), minlength=n_boot * k).reshape(n_boot, k).astype(float)


@dataclass(frozen=True)
class ClusterMean:
    mean: float
    lo: float
    hi: float
    p: float  # two-sided bootstrap p of the mean being 0
    n: int  # values
    clusters: int


def cluster_bootstrap_mean(groups: Mapping[str, Iterable[float | None]], n_boot: int = 2000, seed: int = 0,
                           level: float = LEVEL, min_clusters: int = 2) -> ClusterMean:
    """Mean of all values with a percentile bootstrap over clusters (dialogues), each resample's mean the
    ratio estimator (sum / count over the drawn clusters). For paired differences (self − gold of the same
    reply), where one dialogue's replies are correlated. No interval from fewer than `min_clusters`
    clusters (k clusters give at most C(2k-1, k) distinct resamples: 3 for k = 2, 126 for k = 5)."""
    ids = [k for k in groups if len(clean(groups[k]))]
    s, c = _sums(groups, ids)
    mean = _ratio(s, c)
    if len(ids) < max(2, min_clusters):
        return ClusterMean(mean, NAN, NAN, NAN, int(c.sum()), len(ids))
    w = _weights(np.random.default_rng(seed), len(ids), n_boot)
    with np.errstate(invalid="ignore", divide="ignore"):
        boot = (w @ s) / (w @ c)
    boot = boot[np.isfinite(boot)]
    lo, hi = np.percentile(boot, [100 * (1 - level) / 2, 100 * (1 + level) / 2])
    p = min(1.0, 2 * min((boot <= 0).mean(), (boot >= 0).mean()))
    return ClusterMean(mean, float(lo), float(hi), float(p), int(c.sum()), len(ids))


def spearman_ci(x: Sequence[float | None], y: Sequence[float | None], level: float = LEVEL) -> Correlation:
    """Spearman rank correlation over the pairs where both values exist, with a Fisher-z interval using the
    Fieller-Hartley-Pearson standard error sqrt(1.06 / (n - 3)); NaN when a side is constant or n < 3."""
    from scipy import stats

    pairs = _finite_pairs(x, y)
    n = len(pairs)
    if n < 3 or np.ptp(pairs[:, 0]) == 0 or np.ptp(pairs[:, 1]) == 0:
        return Correlation(NAN, NAN, NAN, n, NAN)
    res = stats.spearmanr(pairs[:, 0], pairs[:, 1])
    rho, p = float(res.statistic), float(res.pvalue)
    if n <= 3:
        return Correlation(rho, NAN, NAN, n, p)
    z = math.atanh(min(max(rho, -0.999999999999), 0.999999999999))
    half = float(stats.norm.ppf(0.5 + level / 2)) * math.sqrt(1.06 / (n - 3))
    return Correlation(rho, math.tanh(z - half), math.tanh(z + half), n, p)


@dataclass(frozen=True)
class SlopeDifference:
    a: float  # slope of A: change of the metric per turn (OLS over all of A's (turn, value) points)
    b: float
    diff: float  # a - b
    lo: float  # bootstrap interval of diff
    hi: float
    p: float
    clusters: int  # dialogues used (shared ones when paired)
    a_lo: float = NAN  # bootstrap intervals of each slope alone
    a_hi: float = NAN
    b_lo: float = NAN
    b_hi: float = NAN


def _slope_sums(points: Mapping[str, Iterable[tuple[float, float | None]]], ids: list[str]) -> np.ndarray:
    """Per cluster [n, Σx, Σy, Σxy, Σx²] of its finite points: a weighted sum of rows is a resample's OLS."""
    rows = []
    for i in ids:
        xy = np.array([(x, y) for x, y in points[i] if y is not None and math.isfinite(y)], dtype=float).reshape(-1, 2)
        x, y = xy[:, 0], xy[:, 1]
        rows.append([len(x), x.sum(), y.sum(), (x * y).sum(), (x * x).sum()])
    return np.array(rows, dtype=float).reshape(-1, 5)


def _ols_slope(s: np.ndarray) -> np.ndarray:
    """Slope from summed [n, Σx, Σy, Σxy, Σx²] (last axis); NaN where x does not vary."""
    n, sx, sy, sxy, sxx = np.moveaxis(s, -1, 0)
    with np.errstate(invalid="ignore", divide="ignore"):
        den = n * sxx - sx * sx
        return np.where(den > 0, (n * sxy - sx * sy) / np.where(den > 0, den, 1), NAN)


def cluster_bootstrap_slope_diff(a: Mapping[str, Iterable[tuple[float, float | None]]],
                                 b: Mapping[str, Iterable[tuple[float, float | None]]], n_boot: int = 2000,
                                 seed: int = 0, level: float = LEVEL) -> SlopeDifference:
    """Degradation by turn: the OLS slope of value on turn for A and for B (pooled over dialogues) and
    slope(A) − slope(B), with a percentile bootstrap over dialogues — paired (one draw for both) on the
    shared dialogues when there are ≥ 2, since a dialogue that gets harder with each turn does so for both.

    `a` and `b` map a dialogue id to its (turn, value) points; missing values (None/NaN) are dropped."""
    def usable(m: Mapping) -> list[str]:
        return [k for k in m if any(y is not None and math.isfinite(y) for _, y in m[k])]

    ids_a, ids_b = usable(a), usable(b)
    shared = sorted(set(ids_a) & set(ids_b))
    paired = len(shared) >= 2
    if paired:
        ids_a = ids_b = shared
    sa, sb = _slope_sums(a, ids_a), _slope_sums(b, ids_b)
    ma, mb = float(_ols_slope(sa.sum(0))), float(_ols_slope(sb.sum(0)))
    k = len(shared) if paired else min(len(ids_a), len(ids_b))
    if len(ids_a) < 2 or len(ids_b) < 2:
        return SlopeDifference(ma, mb, ma - mb, NAN, NAN, NAN, k)
    rng = np.random.default_rng(seed)
    wa = _weights(rng, len(ids_a), n_boot)
    wb = wa if paired else _weights(rng, len(ids_b), n_boot)
    boot_a, boot_b = _ols_slope(wa @ sa), _ols_slope(wb @ sb)
    boot = boot_a - boot_b
    q = [100 * (1 - level) / 2, 100 * (1 + level) / 2]

    def interval(x: np.ndarray) -> tuple[float, float]:  # NaN when no draw had a slope (one turn position)
        x = x[np.isfinite(x)]
        return tuple(float(v) for v in np.percentile(x, q)) if len(x) else (NAN, NAN)

    ok = boot[np.isfinite(boot)]
    p = min(1.0, 2 * min((ok <= 0).mean(), (ok >= 0).mean())) if len(ok) else NAN
    return SlopeDifference(ma, mb, ma - mb, *interval(boot), float(p), k, *interval(boot_a), *interval(boot_b))
