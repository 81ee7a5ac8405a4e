"""Dialogue state tracking scores: JGA (exact and normalized + fuzzy), slot P/R/F1, slot-key F1, per-domain
JGA, bootstrap CI, WER and entity WER.

Inputs (predictions or references; the format is detected from the content):
  JSONL    one record per user turn: {"dialogue_id", "turn", "state": {domain: {slot: value}},
           "transcript"?, "active_domains"?}. ``turn`` is the schema's Turn.index (position in the
           dialogue counting both speakers: MultiWOZ user turns are 0, 2, 4 ...) or, with
           ``turn_index="ordinal"``, the 0-based count of user turns.
  MultiWOZ_Evaluation JSON  {dialogue_id: [{"state": ..., "active_domains"?: [...]}, ...]}, one entry
           per user turn in order (so always ordinal).
  Dialogues from a corpus loader (``references_from_dialogues``): user turns that carry a state.
A state may also be MultiWOZ 2.1's {domain: {"semi": {...}, "book": {...}}} or flat {"hotel-area": v}.
Dialogue ids are compared lower-cased without a ".json" suffix (MultiWOZ_Evaluation writes "mul0484").

Definitions (every count is over reference user turns):
  jga           a turn is right when, after normalization (normalize.py) and fuzzy matching (ontology.py),
                the predicted slots are exactly the reference slots and each value is an accepted one.
  jga_exact     the same with values only lower-cased and trimmed (slot names still canonical).
  slot_*        micro-averaged over all turns: a predicted slot is a true positive when the reference has
                that slot with an accepted value; slot_key_* ignores values.
  per_domain    JGA over the turns where the domain is active in the reference: its ``active_domains``
                when given, else the domains present in the reference state; only that domain's slots count.
  missing turns (no valid prediction, malformed ones included) are wrong and all their reference slots are
                false negatives; extra turns (predictions for turns the references lack) are reported and
                otherwise ignored; predicted slot names that map to no schema slot are wrong.
  jga_ci        percentile bootstrap over dialogues (turns of one dialogue are not independent).
  wer           corpus WER of predicted transcripts against reference user utterances, normalized with
                spokentod.metrics.text.normalize_for_wer; computed when any prediction has a transcript,
                a turn without one counting as an empty hypothesis.
  entity_wer    the same alignment, errors counted only on reference words inside a span that spells a
                reference state value (deletions and substitutions of those words, insertions inside a span);
                yes/no slots (parking, internet) and dontcare are not entities.
"""

from __future__ import annotations

import gc
import json
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from itertools import chain
from pathlib import Path
from typing import Any

import numpy as np

from spokentod.dst import normalize as N
from spokentod.dst.ontology import Matcher, Ontology
from spokentod.errors import DataError, Problem

Item = tuple[str, str, Any]  # raw (domain, slot, value); value is a str or a tuple of str
UNKNOWN = "<unknown>"


@dataclass
class TurnState:
    dialogue_id: str
    ordinal: int
    index: int | None
    items: tuple[Item, ...]
    transcript: str | None = None
    active_domains: tuple[str, ...] | None = None


@dataclass
class Predictions:
    turns: dict[tuple[str, int], TurnState]
    indexing: str  # "index" or "ordinal": what the keys' int means
    problems: list[Problem] = field(default_factory=list)
    duplicates: int = 0


def dialogue_key(did: Any) -> str:
    return str(did).strip().lower().removesuffix(".json")


# --- reading ---------------------------------------------------------------------------------------

def _value(v: Any, where: str) -> Any:
    if v is None or isinstance(v, str):
        return v
    if isinstance(v, bool):
        return str(v).lower()
    if isinstance(v, (int, float)):
        return str(v)
    if isinstance(v, (list, tuple)) and all(isinstance(x, (str, int, float)) for x in v):
        return tuple(str(x) for x in v)
    raise ValueError(f"{where}: expected a string or a list of strings, got {type(v).__name__}")


def flatten_state(state: Any, pool: dict | None = None) -> tuple[Item, ...]:
    """Any accepted state layout → raw (domain, slot, value) items. Raises ValueError when malformed.
    With a `pool`, equal items become one object: states are cumulative, so the same item recurs turn after
    turn, and the scorer's per-item memo then hits on identity instead of comparing strings."""
    if not isinstance(state, dict):
        raise ValueError(f"state: expected an object {{domain: {{slot: value}}}}, got {type(state).__name__}")
    out: list[Item] = []
    for d, slots in state.items():
        if isinstance(slots, dict) and any(isinstance(slots.get(p), dict) for p in ("semi", "book")):
            for part in ("semi", "book"):  # MultiWOZ 2.1 metadata; "booked" holds results, not state
                for s, v in (slots.get(part) or {}).items():
                    if s != "booked":
                        name = f"book {s}" if part == "book" else s
                        out.append((d, name, _value(v, f"state.{d}.{part}.{s}")))
        elif isinstance(slots, dict):
            out.extend((d, s, _value(v, f"state.{d}.{s}")) for s, v in slots.items())
        elif "-" in str(d):  # flat "hotel-area": value
            dom, _, s = str(d).partition("-")
            out.append((dom, s, _value(slots, f"state.{d}")))
        else:
            raise ValueError(f"state.{d}: expected an object {{slot: value}}, got {type(slots).__name__}")
    if pool is None:
        return tuple(i for i in out if i[2] is not None)
    return tuple(pool.setdefault(i, i) for i in out if i[2] is not None)


def _records(path: Path) -> tuple[str, list[tuple[str, Any]]]:
    """("mwz_eval", [(dialogue_id, [entries])]) or ("jsonl", [(location, record-or-error)])."""
    text = path.read_text(encoding="utf-8")
    if text.lstrip()[:1] in ("{", "["):
        try:
            obj = json.loads(text)
        except json.JSONDecodeError:
            obj = None  # several JSON lines, or broken: read line by line below
        if isinstance(obj, dict) and obj and all(isinstance(v, list) for v in obj.values()):
            return "mwz_eval", list(obj.items())
        if isinstance(obj, list):
            return "jsonl", [(f"item {i}", r) for i, r in enumerate(obj)]
    out: list[tuple[str, Any]] = []
    for n, line in enumerate(text.splitlines(), 1):
        if line.strip():
            try:
                out.append((f"line {n}", json.loads(line)))
            except json.JSONDecodeError as e:
                out.append((f"line {n}", ValueError(f"malformed JSON: {e.msg}")))
    return "jsonl", out


def read_states(path: str | os.PathLike, turn_index: str = "index",
                ) -> tuple[list[TurnState], str, list[Problem]]:
    """Read a JSONL or MultiWOZ_Evaluation file → (turn states, indexing, problems found)."""
    if turn_index not in ("index", "ordinal"):
        raise ValueError("turn_index must be 'index' or 'ordinal'")
    p = Path(path)
    if not p.is_file():
        raise DataError(str(p), message="file does not exist")
    kind, recs = _records(p)
    out: list[TurnState] = []
    pool: dict = {}
    problems: list[Problem] = []
    if kind == "mwz_eval":
        for did, entries in recs:
            for k, e in enumerate(entries):
                try:
                    if not isinstance(e, dict) or "state" not in e:
                        raise ValueError("expected an object with 'state'")
                    items = flatten_state(e["state"], pool)
                    out.append(TurnState(dialogue_key(did), k, None, items, e.get("transcript"),
                                         _domains(e.get("active_domains"))))
                except ValueError as err:
                    problems.append(Problem(str(p), f"{did} turn {k}", None, str(err)))
        return out, "ordinal", problems
    for loc, r in recs:
        try:
            if isinstance(r, Exception):
                raise r
            if not isinstance(r, dict):
                raise ValueError("expected a JSON object")
            for key in ("dialogue_id", "turn", "state"):
                if key not in r:
                    raise ValueError(f"missing field {key!r}")
            turn = r["turn"]
            whole = isinstance(turn, int) and not isinstance(turn, bool) and turn >= 0
            if not (whole or (isinstance(turn, str) and turn.isdigit())):
                raise ValueError(f"field 'turn' must be a non-negative integer, got {turn!r}")
            t, items = int(turn), flatten_state(r["state"], pool)
            index = t if turn_index == "index" else None
            out.append(TurnState(dialogue_key(r["dialogue_id"]), t, index, items,
                                 r.get("transcript", r.get("text")), _domains(r.get("active_domains"))))
        except ValueError as err:
            problems.append(Problem(str(p), loc, None, str(err)))
    return out, turn_index, problems


def _active(md: dict) -> tuple[str, ...] | None:
    """Loader metadata: "active_domains", or SGD's "services_in_turn" (the services of the turn's frames)."""
    v = md.get("active_domains", md.get("services_in_turn"))
    return _domains(v) if isinstance(v, (list, tuple)) else None


def _domains(v: Any) -> tuple[str, ...] | None:
    if v is not None and not isinstance(v, (list, tuple)):
        raise ValueError(f"active_domains: expected a list, got {type(v).__name__}")
    return None if v is None else tuple(N.canonical_domain(d) for d in v)


def read_predictions(path: str | os.PathLike, turn_index: str = "index") -> Predictions:
    """Predictions keyed by (dialogue, turn). Malformed records and duplicates are reported, never fatal."""
    states, indexing, problems = read_states(path, turn_index)
    preds = Predictions({}, indexing, problems)
    for ts in states:
        key = (ts.dialogue_id, ts.index if indexing == "index" else ts.ordinal)
        if key in preds.turns:
            preds.duplicates += 1  # keep the first: a rerun appended to the file must not win silently
            continue
        preds.turns[key] = ts
    return preds


def read_references(path: str | os.PathLike, turn_index: str = "index") -> list[list[TurnState]]:
    """References from a file (strict: a malformed record is an error), grouped by dialogue in order."""
    states, _, problems = read_states(path, turn_index)
    if problems:
        raise DataError.many(problems)
    dialogues: dict[str, list[TurnState]] = {}
    seen: set[tuple[str, int]] = set()
    for ts in states:
        if (ts.dialogue_id, ts.ordinal) in seen:
            raise DataError(str(path), ts.dialogue_id, "turn", f"turn {ts.ordinal} is given twice")
        seen.add((ts.dialogue_id, ts.ordinal))
        dialogues.setdefault(ts.dialogue_id, []).append(ts)
    for turns in dialogues.values():
        turns.sort(key=lambda t: t.ordinal)
        for k, t in enumerate(turns):  # with Turn.index keys the ordinal is the rank among user turns
            t.ordinal = k
    return list(dialogues.values())


def references_from_dialogues(dialogues: Iterable) -> list[list[TurnState]]:
    """spokentod Dialogues (corpus loaders) → references: user turns that carry a state."""
    out, pool = [], {}
    for d in dialogues:
        turns = [t for t in d.user_turns if t.state is not None]
        out.append([TurnState(dialogue_key(d.id), k, t.index, flatten_state(t.state, pool), t.text,
                              _active(t.metadata)) for k, t in enumerate(turns)])
    return [d for d in out if d]


# --- scoring ---------------------------------------------------------------------------------------

def _prf(tp: int, fp: int, fn: int) -> tuple[float, float, float]:
    p = tp / (tp + fp) if tp + fp else 1.0 if not fn else 0.0
    r = tp / (tp + fn) if tp + fn else 1.0 if not fp else 0.0
    return p, r, 2 * p * r / (p + r) if p + r else 0.0


class _Memo(dict):
    """Raw item → its row number, computed on first use; `map(memo.__getitem__, items)` runs in C."""

    def __init__(self, compute):
        super().__init__()
        self.compute = compute

    def __missing__(self, it):
        row = self[it] = self.compute(it)
        return row


class _Codes:
    """Integer ids shared by both sides: slot keys (with their domain) and (key, value) pairs."""

    def __init__(self):
        self.keys: dict[tuple[str, str], int] = {}
        self.key_names: list[tuple[str, str]] = []
        self.pairs: dict[tuple[int, str], int] = {}
        self.domains: dict[str, int] = {}

    def key(self, key: tuple[str, str]) -> int:
        i = self.keys.get(key)
        if i is None:
            i = self.keys[key] = len(self.key_names)
            self.key_names.append(key)
            self.domain(key[0])
        return i

    def pair(self, key_id: int, value: str) -> int:
        return self.pairs.setdefault((key_id, value), len(self.pairs))

    def domain(self, d: str) -> int:
        return self.domains.setdefault(d, len(self.domains))


class _Side:
    """One side's turns as integer arrays. Each distinct raw (domain, slot, value) item is canonicalized once
    (``row`` memo: states are cumulative, so items repeat turn after turn); a turn then only appends item
    numbers, and all comparisons are numpy operations over every turn at once."""

    def __init__(self, gold: bool, matcher: Matcher, policy: N.Policy, codes: _Codes):
        self.gold, self.m, self.policy, self.codes = gold, matcher, policy, codes
        self.row = _Memo(self._add)
        self._keys: dict[tuple[str, str], tuple] = {}
        self.turn: list[int] = []  # the reference turn number of each state added, and its item count
        self.count: list[int] = []
        self.item: list[int] = []
        # per distinct item, per view (n: normalized, x: exact): key id (-1: no value), value pair ids as CSR
        self.key: dict[str, list[int]] = {"n": [], "x": []}
        self.ptr: dict[str, list[int]] = {"n": [], "x": []}
        self.len: dict[str, list[int]] = {"n": [], "x": []}
        self.flat: dict[str, list[int]] = {"n": [], "x": []}

    def add_turns(self, turns: list[int], states: list[tuple[Item, ...]]) -> None:
        """Append states (item tuples) for these reference turn numbers; C-level loops over the memo."""
        self.item.extend(map(self.row.__getitem__, chain.from_iterable(states)))
        self.turn.extend(turns)
        self.count.extend(map(len, states))

    def arrays(self) -> tuple[np.ndarray, np.ndarray]:
        """(item number, turn number) of every item occurrence."""
        if not hasattr(self, "_arrays"):
            turn = np.repeat(np.asarray(self.turn, dtype=np.int64), np.asarray(self.count, dtype=np.int64))
            self._arrays = np.asarray(self.item, dtype=np.int64), turn
        return self._arrays

    def key_of(self, d_raw: str, s_raw: str) -> tuple[tuple[str, str] | None, tuple[str, str]]:
        """(key used for scoring, canonical key): a reference slot defines the schema (and is added to it);
        a predicted slot is mapped onto the schema, None when nothing is close enough."""
        hit = self._keys.get((d_raw, s_raw))
        if hit is None:
            hit = self._keys[(d_raw, s_raw)] = self._key_of(d_raw, s_raw)
        return hit

    def _key_of(self, d_raw: str, s_raw: str) -> tuple[tuple[str, str] | None, tuple[str, str]]:
        d = N.canonical_domain(d_raw)
        exact_key = (d, N.canonical_slot(d, s_raw))
        if self.gold:
            if exact_key[1] not in self.m.schema.get(d, ()):
                self.m.add_slot(*exact_key)
            return exact_key, exact_key
        return self.m.slot(d_raw, s_raw), exact_key

    def _add(self, it: Item) -> int:
        d_raw, s_raw, v = it
        key, exact_key = self.key_of(d_raw, s_raw)
        alts = N.alternatives(v)
        if key is None:  # a predicted slot name that maps to nothing: it stays, and can never be right
            key, norm = (UNKNOWN, f"{d_raw}-{s_raw}"), {N.basic(a) for a in alts} - {""}
        else:
            norm = {self.m.value(key[0], key[1], a) for a in alts} - {None}
        self._column("n", key, norm)
        self._column("x", exact_key, {N.exact_value(a, self.policy) for a in alts} - {None})
        return len(self.key["n"]) - 1

    def _column(self, view: str, key: tuple[str, str], values: set[str]) -> None:
        kid = self.codes.key(key) if values else -1
        flat = self.flat[view]
        self.key[view].append(kid)
        self.ptr[view].append(len(flat))
        self.len[view].append(len(values))
        flat.extend([self.codes.pair(kid, x) for x in sorted(values)])

    def slots(self, view: str) -> dict[str, np.ndarray]:
        """Slot occurrences of one view: turn, key, and the value pairs (pair_slot → index into the slots)."""
        item, turn = self.arrays()
        key = np.asarray(self.key[view], dtype=np.int64)[item] if len(item) else item
        keep = key >= 0
        item, turn, key = item[keep], turn[keep], key[keep]
        # two raw names for one slot in a state: the first one counts
        _, first = np.unique(turn * (len(self.codes.key_names) + 1) + key, return_index=True)
        first.sort()
        item, turn, key = item[first], turn[first], key[first]
        lens = np.asarray(self.len[view], dtype=np.int64)[item]
        starts = np.asarray(self.ptr[view], dtype=np.int64)[item]
        pair_slot = np.repeat(np.arange(len(item)), lens)
        offsets = np.arange(int(lens.sum())) - np.repeat(np.cumsum(lens) - lens, lens)
        pair = np.asarray(self.flat[view], dtype=np.int64)[np.repeat(starts, lens) + offsets] \
            if len(pair_slot) else pair_slot
        return {"turn": turn, "key": key, "pair": pair, "pair_slot": pair_slot}


def _isin(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """np.isin for int64 codes by binary search in sorted b (faster here than isin's unique-based path)."""
    if not len(b):
        return np.zeros(len(a), dtype=bool)
    b = np.sort(b)
    return b[np.minimum(np.searchsorted(b, a), len(b) - 1)] == a


def _match(g: dict, p: dict, n_turns: int, n_keys: int, n_pairs: int) -> dict[str, np.ndarray]:
    """Per-slot and per-turn counts. A predicted slot is right when every value it gives (one, or each of a
    list) is among the reference's accepted values for that slot in that turn."""
    g_codes = g["turn"][g["pair_slot"]] * n_pairs + g["pair"]
    p_codes = p["turn"][p["pair_slot"]] * n_pairs + p["pair"]
    wrong_pairs = np.bincount(p["pair_slot"], weights=~_isin(p_codes, g_codes), minlength=len(p["turn"]))
    slot_right = wrong_pairs == 0
    key_shared = _isin(p["turn"] * n_keys + p["key"], g["turn"] * n_keys + g["key"])
    count = lambda turns, w=None: np.bincount(turns, weights=w, minlength=n_turns)
    return {"slot_right": slot_right, "tp": count(p["turn"], slot_right), "n_pred": count(p["turn"]),
            "n_gold": count(g["turn"]), "key_tp": count(p["turn"], key_shared)}


def _per_domain(codes: _Codes, g: dict, p: dict, slot_right: np.ndarray, has_pred: np.ndarray,
                active: list[tuple[str, ...] | None]) -> tuple[dict[str, float], dict[str, int]]:
    """JGA per domain over the turns where it is active, from counts per (turn, domain): a domain is right
    in a turn when its slots alone are all right. Active: in the reference state, unless the reference
    lists its active domains."""
    for a in active:
        for d in a or ():
            codes.domain(d)
    T, D = len(active), len(codes.domains)
    key_dom = np.asarray([codes.domains[k[0]] for k in codes.key_names] + [0], dtype=np.int64)
    g_td, p_td = g["turn"] * D + key_dom[g["key"]], p["turn"] * D + key_dom[p["key"]]
    cnt = lambda x, w=None: np.bincount(x, weights=w, minlength=T * D).reshape(T, D)
    n_gold, n_pred, tp = cnt(g_td), cnt(p_td), cnt(p_td, slot_right)
    right = has_pred[:, None] & (tp == n_pred) & (n_pred == n_gold)
    is_active = n_gold > 0
    listed = [n for n, a in enumerate(active) if a is not None]
    if listed:
        is_active[listed] = False
        pairs = [(n, codes.domains[d]) for n in listed for d in active[n]]
        if pairs:
            is_active[tuple(np.asarray(pairs, dtype=np.int64).T)] = True
    names = {i: d for d, i in codes.domains.items()}
    turns, ok = is_active.sum(0), (is_active & right).sum(0)
    order = [j for j in sorted(range(D), key=names.get) if turns[j] and names[j] != UNKNOWN]
    return {names[j]: float(ok[j] / turns[j]) for j in order}, {names[j]: int(turns[j]) for j in order}


def score(references: list[list[TurnState]], predictions: Predictions, matcher: Matcher,
          policy: N.Policy = N.DEFAULT_POLICY, bootstrap: int = 0, seed: int = 0, ci: float = 0.95,
          max_examples: int = 10) -> dict:
    """Score predictions against references (see the module docstring for every definition)."""
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
    if predictions.indexing == "index" and any(t.index is None for d in references for t in d):
        raise DataError("references", message="these references number user turns 0, 1, 2 ... "
                        "(MultiWOZ_Evaluation format): read the predictions with turn_index='ordinal' "
                        "(--turn-index ordinal)")
    codes = _Codes()
    gold, pred = _Side(True, matcher, policy, codes), _Side(False, matcher, policy, codes)
    turns = [t for dlg in references for t in dlg]
    keys = [(t.dialogue_id, t.index if predictions.indexing == "index" else t.ordinal) for t in turns]
    found = list(map(predictions.turns.get, keys))
    gold.add_turns(list(range(len(turns))), [t.items for t in turns])  # first: its slots complete the schema
    matched = [n for n, p in enumerate(found) if p is not None]
    missing = [f"{keys[n][0]}:{keys[n][1]}" for n, p in enumerate(found) if p is None]
    # every distinct predicted value is resolved at once (batched fuzzy matching), then the predicted turns
    requests = set()
    for d_raw, s_raw, v in {it for n in matched for it in found[n].items}:
        key = pred.key_of(d_raw, s_raw)[0]
        if key is not None:
            requests.update((key[0], key[1], a) for a in N.alternatives(v))
    matcher.prefetch(requests)
    pred.add_turns(matched, [found[n].items for n in matched])
    has_pred = np.zeros(len(turns), dtype=bool)
    has_pred[matched] = True
    used = {keys[n] for n in matched}
    turn_dialogue = np.repeat(np.arange(len(references)), [len(d) for d in references]).astype(np.int64)
    wer_pairs = [(t.transcript, (p.transcript or "") if p else "", t.items) for t, p in zip(turns, found)
                 if t.transcript] if any(p.transcript is not None for p in predictions.turns.values()) else []

    T, K, P = len(turns), len(codes.key_names) + 1, len(codes.pairs) + 1
    g, p = gold.slots("n"), pred.slots("n")
    m = _match(g, p, T, K, P)
    turn_right = has_pred & (m["tp"] == m["n_pred"]) & (m["n_pred"] == m["n_gold"])
    mx = _match(gold.slots("x"), pred.slots("x"), T, K, P)
    turn_right_exact = has_pred & (mx["tp"] == mx["n_pred"]) & (mx["n_pred"] == mx["n_gold"])
    per_domain, per_domain_turns = _per_domain(codes, g, p, m["slot_right"], has_pred,
                                               [t.active_domains for t in turns])

    is_unknown = np.asarray([k[0] == UNKNOWN for k in codes.key_names] + [False], dtype=bool)
    unknown_slots = p["key"][is_unknown[p["key"]]]
    right = np.bincount(turn_dialogue, weights=turn_right, minlength=len(references))
    n_turns = np.bincount(turn_dialogue, minlength=len(references)).astype(float)
    tp, n_pred, n_gold, ktp = (int(m[k].sum()) for k in ("tp", "n_pred", "n_gold", "key_tp"))
    sp, sr, sf = _prf(tp, n_pred - tp, n_gold - tp)
    kp, kr, kf = _prf(ktp, n_pred - ktp, n_gold - ktp)
    extra = [f"{k[0]}:{k[1]}" for k in predictions.turns if k not in used]
    out: dict[str, Any] = {
        "turns": T, "dialogues": len(references),
        "jga": float(turn_right.mean()) if T else 0.0,
        "jga_exact": float(turn_right_exact.mean()) if T else 0.0,
        "slot_precision": sp, "slot_recall": sr, "slot_f1": sf,
        "slot_key_precision": kp, "slot_key_recall": kr, "slot_key_f1": kf,
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


# --- WER and entity WER ----------------------------------------------------------------------------

_CLITIC = re.compile(r" (?=(?:'s|'re|'ve|'ll|'d|'m|n't)\b)")


def _wer_norm(text: str) -> list[str]:
    from spokentod.metrics.text import normalize_for_wer

    return normalize_for_wer(_CLITIC.sub("", text)).split()  # "john 's" (tokenized corpora) → "john's"


def _entity_mask(words: list[str], items: tuple[Item, ...], cache: dict) -> list[bool]:
    mask = [False] * len(words)
    for it in items:
        if N.slot_kind(N.canonical_slot(N.canonical_domain(it[0]), it[1])) == "bool":
            continue
        for alt in N.alternatives(it[2]):
            if alt not in cache:
                cache[alt] = _wer_norm(alt) if N.exact_value(alt) not in (None, N.DONTCARE) else []
            span = cache[alt]
            for s in range(len(words) - len(span) + 1) if span else ():
                if words[s:s + len(span)] == span:
                    mask[s:s + len(span)] = [True] * len(span)
    return mask


def wer_scores(pairs: list[tuple[str, str, tuple[Item, ...]]]) -> dict:
    """Corpus WER and entity WER over (reference text, hypothesis text, reference state items)."""
    import jiwer

    refs, hyps, masks, cache = [], [], [], {}
    for ref, hyp, items in pairs:
        rw = _wer_norm(ref)
        if rw:
            refs.append(" ".join(rw))
            hyps.append(" ".join(_wer_norm(hyp)))
            masks.append(_entity_mask(rw, items, cache))
    if not refs:
        return {}
    o = jiwer.process_words(refs, hyps)
    ent_words = sum(sum(m) for m in masks)
    ent_err = 0
    for mask, chunks in zip(masks, o.alignments):
        for c in chunks:
            if c.type in ("substitute", "delete"):
                ent_err += sum(mask[c.ref_start_idx:c.ref_end_idx])
            elif c.type == "insert" and 0 < c.ref_start_idx < len(mask) and mask[c.ref_start_idx - 1] \
                    and mask[c.ref_start_idx]:
                ent_err += c.hyp_end_idx - c.hyp_start_idx
    out = {"wer": float(o.wer), "wer_turns": len(refs)}
    if ent_words:
        out.update(entity_wer=ent_err / ent_words, entity_words=ent_words)
    return out


# --- one call from files ---------------------------------------------------------------------------

def score_files(predictions: str | os.PathLike, references: str | os.PathLike,
                references_corpus: str | None = None,
                ontology: str | Ontology | None = "auto", data_dir: str | os.PathLike | None = None,
                fuzzy_threshold: float = 90.0, slot_threshold: float = 80.0, exclude_test_values: bool = True,
                policy: N.Policy = N.DEFAULT_POLICY, turn_index: str = "index", bootstrap: int = 0,
                seed: int = 0) -> dict:
    """Read, build the ontology ("auto": guessed from the reference domains) and score."""
    from spokentod.dst import ontology as O

    if references_corpus:
        from spokentod.data import corpora

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
