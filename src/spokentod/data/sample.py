"""Stratified sampling of dialogues (the reference paper drew 500 SalesBot 2.0 dialogues this way).

Each stratum gets n * size / total dialogues, rounded by the largest-remainder method so the sizes
sum to exactly n and every stratum is within one dialogue of its proportional share.
"""

from __future__ import annotations

import random
from collections import defaultdict
from collections.abc import Iterable

from spokentod.data.schema import Dialogue

NO_INTENT = "none"  # stratum of dialogues without an intent
STRATA = ("intent", "source")


def stratum_of(d: Dialogue, stratify: str | None) -> str:
    if stratify is None:
        return "all"
    if stratify == "intent":
        return d.intent.type if d.intent is not None else NO_INTENT
    if stratify == "source":
        return d.source
    raise ValueError(f"cannot stratify by {stratify!r}; use one of {', '.join(STRATA)} or None")


def allocate(sizes: dict[str, int], n: int) -> dict[str, int]:
    """Largest-remainder allocation of n over strata of the given sizes (n <= sum of sizes).

    Integer arithmetic keeps it exact; ties in the remainder go to the larger stratum, then by name,
    so the allocation never depends on dict order or float rounding.
    """
    total = sum(sizes.values())
    if total == 0:
        return {k: 0 for k in sizes}
    alloc = {k: n * s // total for k, s in sizes.items()}
    left = n - sum(alloc.values())
    by_remainder = sorted(sizes, key=lambda k: (-(n * sizes[k] % total), -sizes[k], k))
    for k in by_remainder[:left]:
        alloc[k] += 1
    return alloc


def stratified_sample(dialogues: Iterable[Dialogue], n: int, stratify: str | None = "intent",
                      seed: int = 0) -> list[Dialogue]:
    """Sample n dialogues keeping the distribution of `stratify` ("intent", "source" or None = simple
    random sample). Deterministic for a seed; the result keeps the input order.

    If n >= the number of dialogues, all of them are returned (in input order): there is nothing to
    sample, and silently returning fewer than asked would be worse than returning everything.
    """
    ds = list(dialogues)
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    if stratify is not None and stratify not in STRATA:
        raise ValueError(f"cannot stratify by {stratify!r}; use one of {', '.join(STRATA)} or None")
    if n >= len(ds):
        return ds
    members: dict[str, list[int]] = defaultdict(list)
    for i, d in enumerate(ds):
        members[stratum_of(d, stratify)].append(i)
    picked: list[int] = []
    for key, k in allocate({key: len(v) for key, v in members.items()}, n).items():
        # One generator per stratum, seeded by (seed, stratum): a stratum's pick does not change when
        # another stratum is added or resized. String seeds are hashed with SHA-512, stable across runs.
        picked += random.Random(f"{seed}:{key}").sample(members[key], k)
    return [ds[i] for i in sorted(picked)]
