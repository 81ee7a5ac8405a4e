"""The scorer's core: both sides' turns as integer arrays (slot key ids, value-set ids), every distinct raw
item canonicalized once, then every comparison a numpy operation over all turns at once."""

from __future__ import annotations

from functools import partial
from itertools import chain, compress
from operator import is_not

import numpy as np

from spokentod.dst.data import normalize as N
from spokentod.dst.data.ontology import Matcher
from spokentod.dst.score.states import Item

UNKNOWN = "<unknown>"  # the domain of a predicted slot name that maps to no schema slot
IS_SET = partial(is_not, None)  # C-level `x is not None` for map()


class _Memo(dict):
    """Raw item → its row number, computed on first use; `map(memo.__getitem__, items)` runs in C."""

    def __init__(self, compute):
        super().__init__()
        self.compute = compute

    def __missing__(self, it):
        row = self[it] = self.compute(it)
        return row


class Codes:
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


class Side:
    """One side's turns as integer arrays. Each distinct raw (domain, slot, value) item gets a row once
    (``row`` memo: states are cumulative, so items repeat turn after turn), and the new rows are then
    canonicalized together (one batched fuzzy-matching call); a turn only appends row numbers, and all
    comparisons are numpy operations over every turn at once."""

    def __init__(self, gold: bool, matcher: Matcher, policy: N.Policy, codes: Codes,
                 like: Side | None = None):
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


def match_slots(g: dict, p: dict, n_turns: int, n_keys: int, codes: Codes) -> dict[str, np.ndarray]:
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


def per_domain_jga(codes: Codes, g: dict, p: dict, slot_right: np.ndarray, has_pred: np.ndarray,
                active: list[tuple[str, ...] | None]) -> tuple[dict[str, float], dict[str, int]]:
    """JGA per domain over the turns where it is active, from counts per (turn, domain): a domain is right
    in a turn when its slots alone are all right. Active: in the reference state, unless the reference
    lists its active domains."""
    listed = list(compress(range(len(active)), map(IS_SET, active)))  # turns that list their domains
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
