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
from functools import partial
from itertools import chain, compress
from operator import attrgetter, is_not
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


_INDEX, _ORDINAL, _DIALOGUE, _ITEMS, _TRANSCRIPT, _ACTIVE = (
    attrgetter(a) for a in ("index", "ordinal", "dialogue_id", "items", "transcript", "active_domains"))
_IS_SET = partial(is_not, None)  # C-level `x is not None` for map()


class _Memo(dict):
    """Raw item → its row number, computed on first use; `map(memo.__getitem__, items)` runs in C."""

    def __init__(self, compute):
        super().__init__()
        self.compute = compute

    def __missing__(self, it):
        row = self[it] = self.compute(it)
        return row


class _Codes:
    """Integer ids shared by both sides: slot keys (with their domain) and sets of accepted values. A value
    set's id stands for the set itself, so two slots agree when their ids are equal; a set of one value is
    that value (the common case), a set of several (gold alternatives, list predictions) a frozenset."""

    def __init__(self):
        self.keys: dict[tuple[str, str], int] = {}
        self.key_names: list[tuple[str, str]] = []
        self.domains: dict[str, int] = {}
        self.values: dict[str | frozenset[str], int] = {}
        self.multi: dict[int, frozenset[str]] = {}  # the ids of sets of several values

    def key(self, key: tuple[str, str]) -> int:
        i = self.keys.get(key)
        if i is None:
            i = self.keys[key] = len(self.key_names)
            self.key_names.append(key)
            self.domain(key[0])
        return i

    def value(self, values: set[str]) -> int:
        v = next(iter(values)) if len(values) == 1 else frozenset(values)
        i = self.values.get(v)
        if i is None:
            i = self.values[v] = len(self.values)
            if len(values) > 1:
                self.multi[i] = v
        return i

    def value_set(self, i: int) -> frozenset[str]:
        if i in self.multi:
            return self.multi[i]
        if not hasattr(self, "_names") or len(self._names) != len(self.values):
            self._names = list(self.values)
        return frozenset((self._names[i],))

    def domain(self, d: str) -> int:
        return self.domains.setdefault(d, len(self.domains))


class _Side:
    """One side's turns as integer arrays. Each distinct raw (domain, slot, value) item gets a row once
    (``row`` memo: states are cumulative, so items repeat turn after turn), and the new rows are then
    canonicalized together (one batched fuzzy-matching call); a turn only appends row numbers, and all
    comparisons are numpy operations over every turn at once."""

    def __init__(self, gold: bool, matcher: Matcher, policy: N.Policy, codes: _Codes,
                 like: _Side | None = None):
        self.gold, self.m, self.policy, self.codes, self.like = gold, matcher, policy, codes, like
        self.raw: list[Item] = []  # the distinct items, by row
        self.row = _Memo(self._new)
        self._keys: dict[tuple[str, str], tuple] = {}
        self.turn: list[int] = []  # the reference turn number of each state added, and its item count
        self.count: list[int] = []
        self.item: list[np.ndarray] = []  # row numbers of every item occurrence, by add_turns call
        # per row, per view (n: normalized, x: exact): key id and value-set id (both -1: no value, no slot)
        self.key: dict[str, list[int]] = {"n": [], "x": []}
        self.val: dict[str, list[int]] = {"n": [], "x": []}

    def _new(self, it: Item) -> int:
        self.raw.append(it)
        return len(self.raw) - 1

    def add_turns(self, turns: list[int], states: list[tuple[Item, ...]]) -> None:
        """Append states (item tuples) for these reference turn numbers; C-level loops over the memo."""
        self.item.append(np.fromiter(map(self.row.__getitem__, chain.from_iterable(states)), dtype=np.int64))
        self.turn.extend(turns)
        self.count.extend(map(len, states))
        self._resolve()

    def arrays(self) -> tuple[np.ndarray, np.ndarray]:
        """(row, turn number) of every item occurrence."""
        if not hasattr(self, "_arrays"):
            turn = np.repeat(np.asarray(self.turn, dtype=np.int64), np.asarray(self.count, dtype=np.int64))
            self._arrays = np.concatenate(self.item or [np.zeros(0, dtype=np.int64)]), turn
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

    def _resolve(self) -> None:
        """Canonicalize the rows added since the last call: slot keys first (reference slots complete the
        schema), then every value needing fuzzy matching in one Matcher.prefetch, then the id columns."""
        new = self.raw[len(self.key["n"]):]
        # A raw item the reference side already has gets its columns from there: a reference (domain, slot)
        # is in the schema, so a prediction's key for it is the same canonical key, and values map alike.
        ref = self.like
        shared = list(map(ref.row.get, new)) if ref is not None else [None] * len(new)  # .get: no new rows
        todo = [it for it, r in zip(new, shared) if r is None] if ref is not None else new
        keys = [self.key_of(d, s) for d, s, _ in todo]
        alts = [(v,) if v.__class__ is str and "|" not in v else N.alternatives(v) for _, _, v in todo]
        self.m.prefetch([(k[0], k[1], a) for (k, _), vs in zip(keys, alts) if k is not None for a in vs])
        value, exact, policy, key_id, value_id = self.m.value, N.exact_value, self.policy, self.codes.key, \
            self.codes.value
        ids = self.codes.values
        nk, nv, xk, xv = self.key["n"], self.val["n"], self.key["x"], self.val["x"]
        fresh = zip(todo, keys, alts)
        for r in shared:
            if r is not None:
                nk.append(ref.key["n"][r])
                nv.append(ref.val["n"][r])
                xk.append(ref.key["x"][r])
                xv.append(ref.val["x"][r])
                continue
            (d_raw, s_raw, _), (key, exact_key), vs = next(fresh)
            if len(vs) == 1:  # one value (the common case): no sets, its id inline
                a = vs[0]
                if key is None:  # a predicted slot name that maps to nothing: it stays, and is never right
                    key, n = (UNKNOWN, f"{d_raw}-{s_raw}"), N.basic(a) or None
                else:
                    n = value(key[0], key[1], a)
                x = exact(a, policy)
                if n is None:  # no value, so no slot in this view
                    nk.append(-1)
                    nv.append(-1)
                else:
                    nk.append(key_id(key))
                    nv.append(ids[n] if n in ids else value_id({n}))
                if x is None:
                    xk.append(-1)
                    xv.append(-1)
                else:
                    xk.append(key_id(exact_key))
                    xv.append(ids[x] if x in ids else value_id({x}))
                continue
            if key is None:
                key, norm = (UNKNOWN, f"{d_raw}-{s_raw}"), {N.basic(a) for a in vs} - {""}
            else:
                norm = {value(key[0], key[1], a) for a in vs} - {None}
            x = {exact(a, policy) for a in vs} - {None}
            nk.append(key_id(key) if norm else -1)
            nv.append(value_id(norm) if norm else -1)
            xk.append(key_id(exact_key) if x else -1)
            xv.append(value_id(x) if x else -1)

    def slots(self, view: str, n_turns: int, n_keys: int) -> dict[str, np.ndarray]:
        """Slot occurrences of one view (turn, key, value-set id); of two raw names for one slot in a state,
        the first one counts."""
        item, turn = self.arrays()
        key = np.asarray(self.key[view], dtype=np.int64)[item]
        keep = np.flatnonzero(key >= 0)
        item, turn, key = item[keep], turn[keep], key[keep]
        first = _first(turn * n_keys + key, n_turns * n_keys)
        if first is not None:
            item, turn, key = item[first], turn[first], key[first]
        return {"turn": turn, "key": key, "val": np.asarray(self.val[view], dtype=np.int64)[item]}


# (turn, key) code spaces up to this size (32 MB of int32) use direct-address tables, larger ones sorting;
# MultiWOZ 2.1 test is 7,372 turns x 33 keys.
_DENSE = 1 << 23


def _first(code: np.ndarray, size: int) -> np.ndarray | None:
    """Positions of the first occurrence of each code, in order; None when the codes are all distinct."""
    if size <= _DENSE:
        pos = np.arange(len(code), dtype=np.int32)
        table = np.empty(size, dtype=np.int32)
        table[code] = pos
        if (table[code] == pos).all():  # with a repeated code, some position lost its entry
            return None
    _, first = np.unique(code, return_index=True)
    if len(first) == len(code):
        return None
    first.sort()
    return first


def _lookup(keys: np.ndarray, vals: np.ndarray, queries: np.ndarray, size: int) -> np.ndarray:
    """vals at each query's position among the (distinct) keys, -1 where absent; codes are < size."""
    if size <= _DENSE:
        table = np.full(size, -1, dtype=np.int32)  # value-set ids are < 2**31
        table[keys] = vals
        return table[queries].astype(np.int64)
    if not len(keys):
        return np.full(len(queries), -1, dtype=np.int64)
    order = np.argsort(keys)
    k = keys[order]
    i = np.minimum(np.searchsorted(k, queries), len(k) - 1)
    return np.where(k[i] == queries, vals[order][i], -1)


def _match(g: dict, p: dict, n_turns: int, n_keys: int, codes: _Codes) -> dict[str, np.ndarray]:
    """Per-slot and per-turn counts. A predicted slot is right when every value it gives (one, or each of a
    list) is among the reference's accepted values for that slot in that turn."""
    gold_val = _lookup(g["turn"] * n_keys + g["key"], g["val"], p["turn"] * n_keys + p["key"],
                       n_turns * n_keys)
    key_shared = gold_val >= 0
    slot_right = gold_val == p["val"]  # the same value set
    if codes.multi:  # a reference with several values: also right when the prediction is a subset of them
        multi = np.zeros(len(codes.values), dtype=bool)
        multi[list(codes.multi)] = True
        check = np.flatnonzero(key_shared & ~slot_right & multi[np.maximum(gold_val, 0)])
        if len(check):
            V = len(codes.values)
            pairs, inverse = np.unique(p["val"][check] * V + gold_val[check], return_inverse=True)
            ok = np.asarray([codes.value_set(int(x // V)) <= codes.value_set(int(x % V)) for x in pairs],
                            dtype=bool)
            slot_right[check] = ok[inverse.reshape(-1)]
    count = lambda turns, w=None: np.bincount(turns, weights=w, minlength=n_turns)
    return {"slot_right": slot_right, "tp": count(p["turn"], slot_right), "n_pred": count(p["turn"]),
            "n_gold": count(g["turn"]), "key_tp": count(p["turn"], key_shared)}


def _per_domain(codes: _Codes, g: dict, p: dict, slot_right: np.ndarray, has_pred: np.ndarray,
                active: list[tuple[str, ...] | None]) -> tuple[dict[str, float], dict[str, int]]:
    """JGA per domain over the turns where it is active, from counts per (turn, domain): a domain is right
    in a turn when its slots alone are all right. Active: in the reference state, unless the reference
    lists its active domains."""
    listed = list(compress(range(len(active)), map(_IS_SET, active)))  # turns that list their domains
    for d in dict.fromkeys(chain.from_iterable(active[n] for n in listed)):
        codes.domain(d)
    T, D = len(active), len(codes.domains)
    key_dom = np.asarray([codes.domains[k[0]] for k in codes.key_names] + [0], dtype=np.int64)
    g_td, p_td = g["turn"] * D + key_dom[g["key"]], p["turn"] * D + key_dom[p["key"]]
    cnt = lambda x, w=None: np.bincount(x, weights=w, minlength=T * D).reshape(T, D)
    n_gold, n_pred, tp = cnt(g_td), cnt(p_td), cnt(p_td, slot_right)
    right = has_pred[:, None] & (tp == n_pred) & (n_pred == n_gold)
    is_active = n_gold > 0
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
    turns = [t for dlg in references for t in dlg]
    if predictions.indexing == "index" and None in map(_INDEX, turns):
        raise DataError("references", message="these references number user turns 0, 1, 2 ... "
                        "(MultiWOZ_Evaluation format): read the predictions with turn_index='ordinal' "
                        "(--turn-index ordinal)")
    codes = _Codes()
    gold = _Side(True, matcher, policy, codes)
    pred = _Side(False, matcher, policy, codes, like=gold)  # reuses gold's rows; gold's turns go in first
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
                 if t.transcript] if any(map(_IS_SET, map(_TRANSCRIPT, predictions.turns.values()))) else []

    T, K = len(turns), len(codes.key_names) + 1
    g, p = gold.slots("n", T, K), pred.slots("n", T, K)
    m = _match(g, p, T, K, codes)
    turn_right = has_pred & (m["tp"] == m["n_pred"]) & (m["n_pred"] == m["n_gold"])
    mx = _match(gold.slots("x", T, K), pred.slots("x", T, K), T, K, codes)
    turn_right_exact = has_pred & (mx["tp"] == mx["n_pred"]) & (mx["n_pred"] == mx["n_gold"])
    per_domain, per_domain_turns = _per_domain(codes, g, p, m["slot_right"], has_pred,
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
