"""The scores (definitions in the package docstring): JGA exact and normalized + fuzzy, slot P/R/F1,
slot-key F1, per-domain JGA, a bootstrap CI over dialogues, WER; score_files reads, builds the ontology and
scores in one call."""

from __future__ import annotations

import gc
import json
import os
from itertools import compress
from operator import attrgetter
from pathlib import Path
from typing import Any

import numpy as np

from spokentod.data import corpora
from spokentod.dst.data import normalize as N
from spokentod.dst.data import ontology as O
from spokentod.dst.data.ontology import Matcher, Ontology
from spokentod.dst.score.matching import IS_SET, UNKNOWN, Codes, Side, match_slots, per_domain_jga
from spokentod.dst.score.states import (
    Predictions,
    TurnState,
    read_predictions,
    read_references,
    references_from_dialogues,
)
from spokentod.dst.score.wer import wer_scores
from spokentod.errors import DataError


def _prf(tp: int, fp: int, fn: int) -> tuple[float, float, float]:
    p = tp / (tp + fp) if tp + fp else 1.0 if not fn else 0.0
    r = tp / (tp + fn) if tp + fn else 1.0 if not fp else 0.0
    return p, r, 2 * p * r / (p + r) if p + r else 0.0


_INDEX, _ORDINAL, _DIALOGUE, _ITEMS, _TRANSCRIPT, _ACTIVE = (
    attrgetter(a) for a in ("index", "ordinal", "dialogue_id", "items", "transcript", "active_domains"))


def score(references: list[list[TurnState]], predictions: Predictions, matcher: Matcher,
          policy: N.Policy = N.DEFAULT_POLICY, bootstrap: int = 0, seed: int = 0, ci: float = 0.95,
          max_examples: int = 10) -> dict:
    """Score predictions against references (see the package docstring for every definition)."""
    # Scoring allocates many small objects and no reference cycles; with a corpus loaded, each automatic
    # full collection walks every object alive and took more time than the scoring itself.
    enabled = gc.isenabled()
    gc.disable()
    try:
        return _score(references, predictions, matcher, policy, bootstrap, seed, ci, max_examples)
    finally:
        if enabled:
            gc.enable()


def _score(references: list[list[TurnState]], predictions: Predictions, matcher: Matcher, policy: N.Policy,
           bootstrap: int, seed: int, ci: float, max_examples: int) -> dict:
    turns = [t for dlg in references for t in dlg]
    if predictions.indexing == "index" and None in map(_INDEX, turns):
        raise DataError("references", message="these references number user turns 0, 1, 2 ... "
                        "(MultiWOZ_Evaluation format): read the predictions with turn_index='ordinal' "
                        "(--turn-index ordinal)")
    codes = Codes()
    gold = Side(True, matcher, policy, codes)
    pred = Side(False, matcher, policy, codes, like=gold)  # reuses gold's rows; gold's turns go in first
    number = _INDEX if predictions.indexing == "index" else _ORDINAL
    keys = list(zip(map(_DIALOGUE, turns), map(number, turns)))
    found = list(map(predictions.turns.get, keys))
    gold.add_turns(range(len(turns)), list(map(_ITEMS, turns)))  # first: its slots complete the schema
    matched = list(compress(range(len(turns)), found))  # TurnStates are truthy, None is not
    pred.add_turns(matched, list(map(_ITEMS, filter(None, found))))
    has_pred = np.zeros(len(turns), dtype=bool)
    has_pred[matched] = True
    missing = [f"{keys[n][0]}:{keys[n][1]}" for n in np.flatnonzero(~has_pred).tolist()]
    turn_dialogue = np.repeat(np.arange(len(references)), [len(d) for d in references]).astype(np.int64)
    wer_pairs = [(t.transcript, (p.transcript or "") if p else "", t.items) for t, p in zip(turns, found)
                 if t.transcript] if any(map(IS_SET, map(_TRANSCRIPT, predictions.turns.values()))) else []

    T, K = len(turns), len(codes.key_names) + 1
    g, p = gold.slots("n", T, K), pred.slots("n", T, K)
    m = match_slots(g, p, T, K, codes)
    turn_right = has_pred & (m["tp"] == m["n_pred"]) & (m["n_pred"] == m["n_gold"])
    mx = match_slots(gold.slots("x", T, K), pred.slots("x", T, K), T, K, codes)
    turn_right_exact = has_pred & (mx["tp"] == mx["n_pred"]) & (mx["n_pred"] == mx["n_gold"])
    per_domain, per_domain_turns = per_domain_jga(codes, g, p, m["slot_right"], has_pred,
                                               list(map(_ACTIVE, turns)))

    is_unknown = np.asarray([k[0] == UNKNOWN for k in codes.key_names] + [False], dtype=bool)
    unknown_slots = p["key"][is_unknown[p["key"]]]
    right = np.bincount(turn_dialogue, weights=turn_right, minlength=len(references))
    n_turns = np.bincount(turn_dialogue, minlength=len(references)).astype(float)
    tp, n_pred, n_gold, ktp = (int(m[k].sum()) for k in ("tp", "n_pred", "n_gold", "key_tp"))
    sp, sr, sf = _prf(tp, n_pred - tp, n_gold - tp)
    kp, kr, kf = _prf(ktp, n_pred - ktp, n_gold - ktp)
    used = set(compress(keys, found))
    extra = [f"{k[0]}:{k[1]}" for k in predictions.turns if k not in used] \
        if len(used) < len(predictions.turns) else []
    out: dict[str, Any] = {
        "turns": T, "dialogues": len(references),
        "jga": float(turn_right.mean()) if T else 0.0,
        "jga_exact": float(turn_right_exact.mean()) if T else 0.0,
        "slot_precision": sp, "slot_recall": sr, "slot_f1": sf,
        "slot_key_precision": kp, "slot_key_recall": kr, "slot_key_f1": kf,
        "slot_tp": tp, "slot_pred": n_pred, "slot_gold": n_gold, "slot_key_tp": ktp,  # for pooled stats
        "missing_turns": len(missing), "extra_turns": len(extra),
        "malformed_records": len(predictions.problems), "duplicate_records": predictions.duplicates,
        "unknown_slot_predictions": len(unknown_slots),
        "per_domain": per_domain, "per_domain_turns": per_domain_turns,
        "fuzzy_threshold": matcher.threshold, "slot_threshold": matcher.slot_threshold,
        "policy": {"dontcare": policy.dontcare, "none": policy.none},
        "examples": {"missing": missing[:max_examples], "extra": extra[:max_examples],
                     "malformed": [str(x) for x in predictions.problems[:max_examples]],
                     "unknown_slots": sorted({codes.key_names[k][1] for k in unknown_slots})[:max_examples]},
    }
    if bootstrap > 0 and T:
        out["jga_ci"] = bootstrap_ci(right, n_turns, bootstrap, seed, ci)
        out["jga_ci_level"] = ci
    if wer_pairs:
        out.update(wer_scores(wer_pairs))
    return out


def bootstrap_ci(right: np.ndarray, n: np.ndarray, samples: int, seed: int = 0,
                 ci: float = 0.95) -> list[float]:
    """Percentile CI of sum(right)/sum(n), dialogues resampled with replacement (vectorized, in chunks)."""
    rng = np.random.default_rng(seed)
    stats = np.empty(samples)
    chunk = max(1, 2_000_000 // max(1, len(n)))
    for lo in range(0, samples, chunk):
        idx = rng.integers(0, len(n), size=(min(chunk, samples - lo), len(n)))
        stats[lo:lo + len(idx)] = right[idx].sum(1) / np.maximum(n[idx].sum(1), 1)
    a = (1 - ci) / 2
    return [float(np.quantile(stats, a)), float(np.quantile(stats, 1 - a))]


def score_files(predictions: str | os.PathLike, references: str | os.PathLike,
                references_corpus: str | None = None,
                ontology: str | Ontology | None = "auto", data_dir: str | os.PathLike | None = None,
                fuzzy_threshold: float = 90.0, slot_threshold: float = 80.0, exclude_test_values: bool = True,
                policy: N.Policy = N.DEFAULT_POLICY, turn_index: str = "index", bootstrap: int = 0,
                seed: int = 0) -> dict:
    """Read, build the ontology ("auto": guessed from the reference domains) and score."""
    if references_corpus:
        refs = references_from_dialogues(corpora.load(references_corpus, references))
    else:
        refs = read_references(references, turn_index)
    preds = read_predictions(predictions, turn_index)
    if ontology == "auto":
        ontology = O.guess({N.canonical_domain(it[0]) for d in refs for t in d for it in t.items})
    onto = ontology if isinstance(ontology, Ontology) or ontology is None else \
        O.load(ontology, data_dir, exclude_test_values)
    matcher = Matcher(onto, fuzzy_threshold, slot_threshold, policy)
    result = score(refs, preds, matcher, policy, bootstrap, seed)
    result["ontology"] = onto.describe() if onto else None
    return result


def score_empty_states(references: str | os.PathLike, predictions: str | os.PathLike,
                       ontology: str | Ontology | None = "auto", bootstrap: int = 0) -> dict:
    """The score of predicting an empty state at every reference turn: the floor a tracker's JGA is read
    against (turns whose gold state is still empty count right). Those predictions are written to
    `predictions` (a file a person can open), then scored like any tracker's."""
    refs = [json.loads(x) for x in Path(references).read_text(encoding="utf-8").splitlines() if x.strip()]
    out = Path(predictions)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("".join(json.dumps({"dialogue_id": r["dialogue_id"], "turn": r["turn"], "state": {}}) + "\n"
                           for r in refs), encoding="utf-8")
    return score_files(out, references, ontology=ontology, bootstrap=bootstrap)
