"""Gold context vs free-running, paired: the same system run both ways on the same dialogues and seeds
(`history: [gold, self]` in a bench config, or two entries that differ only in `history`).

With gold context the system sees the reference agent turns before each user turn; free-running (`self`)
it sees its own earlier replies instead. Their difference on the same reply slot (dialogue, user turn,
seed), self − gold, separates error build-up on a system's own replies from what the context itself does
to it. At R1 both modes saw the same context, so the R1 difference is the system's own run-to-run noise.

Pairs are found from the run's recorded config (run.json `config.systems`): two systems of one run whose
settings are equal except `history` (and `concurrency`, which changes speed, not replies), one gold and
one self. Differences use only reply slots where both systems have the metric; confidence intervals are a
percentile bootstrap over dialogues (stats.cluster_bootstrap_mean), since one dialogue's turns are
correlated, and more so when free-running.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from spokentod.analysis import stats
from spokentod.analysis.aggregate import phases
from spokentod.analysis.load import Bench, ReplyMetrics, metric

ALL = "all turns"
MIN_DIALOGUES = 5  # fewer dialogues than this: a mean without a CI (a bootstrap over 2-4 clusters is too coarse)
_IGNORED = ("history", "concurrency")  # what may differ between the two systems of a pair


@dataclass(frozen=True)
class Pair:
    name: str  # what the report calls it: the shared name ("cascade" for cascade-gold/cascade-self)
    gold: str  # system labels as the report shows them
    free: str  # the free-running (`history: self`) system


def _shared_name(a: str, b: str) -> str:
    for suffix_a, suffix_b in (("-gold", "-self"), ("_gold", "_self")):
        if a.endswith(suffix_a) and b.endswith(suffix_b) and a[: -len(suffix_a)] == b[: -len(suffix_b)]:
            return a[: -len(suffix_a)]
    return f"{a} / {b}"


def _systems_config(meta: dict[str, Any]) -> dict[str, dict[str, Any]]:
    for where in (meta.get("config"), meta.get("protocol")):
        if isinstance(where, dict) and isinstance(where.get("systems"), dict):
            return {k: v for k, v in where["systems"].items() if isinstance(v, dict)}
    return {}


def find_pairs(bench: Bench) -> list[Pair]:
    """Every (gold, self) pair of systems in one run whose configs differ only in `history`."""
    pairs = []
    for run in bench.runs:
        cfg = _systems_config(run.meta)
        same = {s: {k: v for k, v in c.items() if k not in _IGNORED} for s, c in cfg.items()}
        golds = [s for s in run.systems if s in cfg and cfg[s].get("history", "gold") == "gold"]
        selfs = [s for s in run.systems if s in cfg and cfg[s].get("history") == "self"]
        for g in golds:
            for s in selfs:
                if same[g] == same[s]:
                    gl, sl = bench.label[(run.name, g)], bench.label[(run.name, s)]
                    pairs.append(Pair(_shared_name(gl, sl), gl, sl))
    return pairs


def _slots(bench: Bench, label: str) -> dict[tuple[str, int, int], ReplyMetrics]:
    return {(r.dialogue_id, r.turn, r.seed): r for r in bench.replies if r.system == label}


def paired_metrics(bench: Bench, pair: Pair) -> list[str]:
    """Metrics both systems of the pair have on at least one shared reply slot (latency included)."""
    gold, own = _slots(bench, pair.gold), _slots(bench, pair.free)
    names = {n for k in gold.keys() & own.keys() for n in gold[k].values.keys() & own[k].values.keys()}
    return [n for n in bench.metrics if n in names]


def differences(bench: Bench, pair: Pair, name: str) -> list[tuple[ReplyMetrics, ReplyMetrics, float]]:
    """(gold reply, self reply, self − gold) for every shared slot where both have `name`."""
    gold, own = _slots(bench, pair.gold), _slots(bench, pair.free)
    return [(gold[k], own[k], own[k].values[name] - gold[k].values[name]) for k in sorted(gold.keys() & own.keys())
            if name in gold[k].values and name in own[k].values]


def _row(pair: Pair, name: str, diffs: list[tuple[ReplyMetrics, ReplyMetrics, float]], n_boot: int,
         seed: int) -> dict[str, Any]:
    by: dict[str, list[float]] = defaultdict(list)
    for g, _, d in diffs:
        by[g.dialogue_id].append(d)
    e = stats.cluster_bootstrap_mean(by, n_boot=n_boot, seed=seed, min_clusters=MIN_DIALOGUES)
    gold = stats.clean(g.values[name] for g, _, _ in diffs)
    own = stats.clean(s.values[name] for _, s, _ in diffs)
    return {"pair": pair.name, "gold": pair.gold, "free": pair.free, "metric": name,
            "mean_gold": float(gold.mean()) if len(gold) else stats.NAN,
            "mean_self": float(own.mean()) if len(own) else stats.NAN, "diff": e.mean, "ci_low": e.lo,
            "ci_high": e.hi, "p": e.p, "n": e.n, "dialogues": e.clusters, "significant": bool(e.lo > 0 or e.hi < 0)}  # False when NaN


def per_turn(bench: Bench, pairs: Iterable[Pair] | None = None, n_boot: int = 2000, seed: int = 0
             ) -> list[dict[str, Any]]:
    """Per pair, metric and R_k: mean gold, mean self, mean difference (self − gold) with its bootstrap CI,
    and the phase most of that turn's replies are in (phases need not line up across dialogues)."""
    rows = []
    for pair in find_pairs(bench) if pairs is None else pairs:
        for name in paired_metrics(bench, pair):
            by_turn: dict[int, list] = defaultdict(list)
            for item in differences(bench, pair, name):
                if item[0].ordinal is not None:
                    by_turn[item[0].ordinal].append(item)
            for k in sorted(by_turn):
                counts = defaultdict(int)
                for g, _, _ in by_turn[k]:
                    counts[g.phase or "(none)"] += 1
                rows.append({**_row(pair, name, by_turn[k], n_boot, seed), "turn": k,
                             "phase": max(counts, key=counts.get)})
    return rows


def per_phase(bench: Bench, pairs: Iterable[Pair] | None = None, n_boot: int = 2000, seed: int = 0
              ) -> list[dict[str, Any]]:
    """Per pair and metric: the mean difference over all turns and within each phase (chit-chat →
    transition → task), with bootstrap CIs over dialogues."""
    rows = []
    order = [ALL, *phases(bench)]
    for pair in find_pairs(bench) if pairs is None else pairs:
        for name in paired_metrics(bench, pair):
            diffs = differences(bench, pair, name)
            for p in order:
                mine = diffs if p == ALL else [x for x in diffs if (x[0].phase or "(none)") == p]
                if mine:
                    rows.append({**_row(pair, name, mine, n_boot, seed), "phase": p})
    return rows


def worse(row: dict[str, Any]) -> bool | None:
    """Whether free-running is significantly worse on this row's metric (None: no better direction)."""
    better = metric(row["metric"]).better
    if not better or not row["significant"]:
        return None if not better else False
    return row["diff"] * better < 0
