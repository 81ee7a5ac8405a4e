"""File names inside a run directory (see the package docstring for the tree)."""

from __future__ import annotations

import re
from pathlib import Path

from spokentod.data.synth import safe_name

RESULTS = "results"
METRICS = "metrics"
AUDIO_IN = "audio_in"
AUDIO_OUT = "audio_out"
SUMMARY = "summary.json"  # under metrics/
METRIC_CACHE = "cache.sqlite"  # under metrics/

Shard = tuple[int, int]  # (i, n), 1-based: shard i of n
_RESULTS_NAME = re.compile(r"^(?P<system>.+?)(?:\.shard-(?P<i>\d+)-of-(?P<n>\d+))?\.jsonl$")


def shard_suffix(shard: Shard) -> str:
    return "" if shard[1] == 1 else f".shard-{shard[0]}-of-{shard[1]}"


def run_meta_name(shard: Shard = (1, 1)) -> str:
    return f"run{shard_suffix(shard)}.json"


def plan_name(shard: Shard = (1, 1)) -> str:
    return f"plan{shard_suffix(shard)}.json"


def lock_name(shard: Shard = (1, 1)) -> str:
    return f".run{shard_suffix(shard)}.lock"


def results_name(system: str, shard: Shard = (1, 1)) -> str:
    return f"{system}{shard_suffix(shard)}.jsonl"


def parse_results_name(name: str) -> tuple[str, Shard] | None:
    """``text.shard-2-of-4.jsonl`` → ("text", (2, 4)); None for other files."""
    m = _RESULTS_NAME.match(name)
    if not m:
        return None
    return m["system"], (int(m["i"]), int(m["n"])) if m["i"] else (1, 1)


def metrics_name(system: str) -> str:
    return f"{system}.jsonl"


def reply_audio(system: str, dialogue_id: str, turn: int, seed: int, attempt: int, several_seeds: bool) -> Path:
    """Where a reply's audio goes, relative to the run directory.

    Attempt 1 of a turn writes ``<turn:03d>.wav`` (``<turn:03d>.s<seed>.wav`` when the run has several
    seeds); a retry writes ``<turn:03d>.a<k>.wav``, so a file a record refers to is never overwritten.
    """
    name = f"{turn:03d}"
    if several_seeds:
        name += f".s{seed}"
    if attempt > 1:
        name += f".a{attempt}"
    return Path(AUDIO_OUT) / system / safe_name(dialogue_id) / f"{name}.wav"
