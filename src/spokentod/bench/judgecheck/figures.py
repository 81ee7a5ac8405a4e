"""The figures of a judge-check, from per-reply scores: pairwise accuracy with a bootstrap CI over
dialogues, flag rates, test-retest and between-judge agreement. Plain dicts in, plain dicts out (JSON).

`Scores` maps (kind, dialogue id, turn) to (value or None, reason when None) for one scorer.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

from spokentod.analysis.stats import pearson_ci, rate_ci

Scores = Mapping[tuple[str, str, int], tuple[float | None, str | None]]
NAN = float("nan")


def _f(x: float) -> float | None:
    """JSON has no NaN: an undefined figure is null."""
    return None if x is None or not math.isfinite(x) else float(x)


def cluster_bootstrap_mean(groups: Mapping[str, list[float]], n_boot: int = 2000, seed: int = 0,
                           level: float = 0.95) -> tuple[float, float, float]:
    """(mean, lo, hi) of all values, resampling the groups (dialogues) with replacement: each resample's
    mean is sum / count over the drawn groups. No interval from fewer than two groups."""
    ids = [k for k, v in groups.items() if v]
    sums = np.array([sum(groups[k]) for k in ids], dtype=float)
    counts = np.array([len(groups[k]) for k in ids], dtype=float)
    if not ids:
        return NAN, NAN, NAN
    mean = float(sums.sum() / counts.sum())
    if len(ids) < 2:
        return mean, NAN, NAN
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, len(ids), size=(n_boot, len(ids)))
    boot = sums[draws].sum(axis=1) / counts[draws].sum(axis=1)
    lo, hi = np.percentile(boot, [100 * (1 - level) / 2, 100 * (1 + level) / 2])
    return mean, float(lo), float(hi)


def outcome(gold: float, other: float, better: int) -> float:
    """1 when the scorer prefers gold, 0 when it prefers the corruption, 1/2 for a tie."""
    d = (gold - other) * better
    return 1.0 if d > 0 else 0.0 if d < 0 else 0.5


def pairwise(scores: Scores, positions: Iterable[tuple[str, int]], corruption: str, better: int,
             n_boot: int = 2000, seed: int = 0) -> dict[str, Any]:
    """Pairwise accuracy of one scorer on gold vs one corruption, over the positions where the corruption
    exists. A pair with a missing value on either side is counted as missing with its reason, not scored."""
    per: dict[str, list[float]] = defaultdict(list)
    missing: Counter = Counter()
    ties = 0
    for did, turn in positions:
        c = scores.get((corruption, did, turn))
        g = scores.get(("gold", did, turn))
        if c is None:
            continue  # the corruption was not built here (counted in the check's `skipped`)
        if g is None or g[0] is None:
            missing[f"gold: {g[1] if g else 'not scored'}"] += 1
            continue
        if c[0] is None:
            missing[f"{corruption}: {c[1]}"] += 1
            continue
        o = outcome(g[0], c[0], better)
        ties += o == 0.5
        per[did].append(o)
    acc, lo, hi = cluster_bootstrap_mean(per, n_boot, seed)
    pairs = sum(len(v) for v in per.values())
    return {"accuracy": _f(acc), "ci_low": _f(lo), "ci_high": _f(hi), "pairs": pairs, "ties": ties,
            "dialogues": len(per), "missing": sum(missing.values()), "missing_reasons": dict(missing)}


def flag_rate(scores: Scores, kind: str) -> dict[str, Any]:
    """Share of `kind`'s replies a presence flag (0/1 scorer) is raised on, Wilson 95 % CI."""
    vals = [v for (k, _, _), (v, _) in scores.items() if k == kind and v is not None]
    reasons = Counter(r for (k, _, _), (v, r) in scores.items() if k == kind and v is None)
    est = rate_ci(vals)
    return {"rate": _f(est.mean), "ci_low": _f(est.lo), "ci_high": _f(est.hi), "n": est.n,
            "missing": sum(reasons.values()), "missing_reasons": dict(reasons)}


def kappa(a: list[float], b: list[float]) -> float:
    """Cohen's kappa of two 0/1 raters; NaN when chance agreement is total (both constant)."""
    x, y = np.asarray(a) > 0.5, np.asarray(b) > 0.5
    if not len(x):
        return NAN
    po = float((x == y).mean())
    pe = float(x.mean() * y.mean() + (1 - x.mean()) * (1 - y.mean()))
    return NAN if pe >= 1 else (po - pe) / (1 - pe)


def agreement(a: list[float], b: list[float], binary: bool) -> dict[str, Any]:
    """How two series of the same items agree: Pearson r (scores) or agreement and kappa (flags), exact
    agreement and mean absolute difference always."""
    n = len(a)
    out: dict[str, Any] = {"n": n, "exact": _f(float(np.mean(np.asarray(a) == np.asarray(b)))) if n else None,
                           "mean_abs_diff": _f(float(np.mean(np.abs(np.asarray(a) - np.asarray(b))))) if n else None}
    if binary:
        out["kappa"] = _f(kappa(a, b))
    else:
        r = pearson_ci(a, b)
        out |= {"r": _f(r.r), "r_ci_low": _f(r.lo), "r_ci_high": _f(r.hi)}
    return out


def retest(repeats: Mapping[tuple[str, str, int], list[float]], binary: bool) -> dict[str, Any]:
    """Agreement of a judge with itself: its first two repeat values of each reply judged more than once."""
    pairs = [(v[0], v[1]) for v in repeats.values() if len(v) >= 2]
    sds = [float(np.std(v)) for v in repeats.values() if len(v) >= 2]
    out = agreement([p[0] for p in pairs], [p[1] for p in pairs], binary)
    return out | {"mean_sd": _f(float(np.mean(sds))) if sds else None,
                  "replies_with_one_value": sum(1 for v in repeats.values() if len(v) == 1)}


def between(a: Scores, b: Scores, binary: bool) -> dict[str, Any]:
    """Agreement of two judges on the same replies (every kind pooled)."""
    keys = [k for k in a if k in b and a[k][0] is not None and b[k][0] is not None]
    return agreement([a[k][0] for k in keys], [b[k][0] for k in keys], binary)


def preference_agreement(a: Scores, b: Scores, positions: Iterable[tuple[str, int]], corruptions: Iterable[str],
                         better: int) -> dict[str, Any]:
    """Share of (gold, corruption) pairs on which two scorers reach the same verdict (gold, corruption, tie)."""
    same = n = 0
    for did, turn in positions:
        for c in corruptions:
            got = [(s.get(("gold", did, turn)), s.get((c, did, turn))) for s in (a, b)]
            if all(g and x and g[0] is not None and x[0] is not None for g, x in got):
                n += 1
                same += outcome(got[0][0][0], got[0][1][0], better) == outcome(got[1][0][0], got[1][1][0], better)
    return {"pairs": n, "same_verdict": _f(same / n) if n else None}
