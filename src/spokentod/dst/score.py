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
                reference state value (deletions and substitutions of those words, insertions inside a span).
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
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


def flatten_state(state: Any) -> tuple[Item, ...]:
    """Any accepted state layout → raw (domain, slot, value) items. Raises ValueError when malformed."""
    if not isinstance(state, dict):
        raise ValueError(f"state: expected an object {{domain: {{slot: value}}}}, got {type(state).__name__}")
    out: list[Item] = []
    for d, slots in state.items():
        if isinstance(slots, dict) and any(isinstance(slots.get(p), dict) for p in ("semi", "book")):
            for part in ("semi", "book"):  # MultiWOZ 2.1 metadata; "booked" holds results, not state
                for s, v in (slots.get(part) or {}).items():
                    if s != "booked":
                        out.append((d, f"book {s}" if part == "book" else s, _value(v, f"state.{d}.{part}.{s}")))
        elif isinstance(slots, dict):
            out.extend((d, s, _value(v, f"state.{d}.{s}")) for s, v in slots.items())
        elif "-" in str(d):  # flat "hotel-area": value
            dom, _, s = str(d).partition("-")
            out.append((dom, s, _value(slots, f"state.{d}")))
        else:
            raise ValueError(f"state.{d}: expected an object {{slot: value}}, got {type(slots).__name__}")
    return tuple(i for i in out if i[2] is not None)


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


def read_states(path: str | os.PathLike, turn_index: str = "index") -> tuple[list[TurnState], str, list[Problem]]:
    """Read a JSONL or MultiWOZ_Evaluation file → (turn states, indexing, problems found)."""
    if turn_index not in ("index", "ordinal"):
        raise ValueError("turn_index must be 'index' or 'ordinal'")
    p = Path(path)
    if not p.is_file():
        raise DataError(str(p), message="file does not exist")
    kind, recs = _records(p)
    out: list[TurnState] = []
    problems: list[Problem] = []
    if kind == "mwz_eval":
        for did, entries in recs:
            for k, e in enumerate(entries):
                try:
                    if not isinstance(e, dict) or "state" not in e:
                        raise ValueError("expected an object with 'state'")
                    out.append(TurnState(dialogue_key(did), k, None, flatten_state(e["state"]), e.get("transcript"),
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
            if isinstance(turn, bool) or not (isinstance(turn, int) or (isinstance(turn, str) and turn.isdigit())):
                raise ValueError(f"field 'turn' must be a non-negative integer, got {turn!r}")
            t, items = int(turn), flatten_state(r["state"])
            out.append(TurnState(dialogue_key(r["dialogue_id"]), t, t if turn_index == "index" else None, items,
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
    states, indexing, problems = read_states(path, turn_index)
    if problems:
        raise DataError.many(problems)
    dialogues: dict[str, list[TurnState]] = {}
    for ts in states:
        dialogues.setdefault(ts.dialogue_id, []).append(ts)
    for turns in dialogues.values():
        turns.sort(key=lambda t: t.ordinal)
        for k, t in enumerate(turns):  # with Turn.index keys the ordinal is the rank among user turns
            t.ordinal = k
    return list(dialogues.values())


def references_from_dialogues(dialogues: Iterable) -> list[list[TurnState]]:
    """spokentod Dialogues (corpus loaders) → references: user turns that carry a state."""
    out = []
    for d in dialogues:
        turns = [t for t in d.user_turns if t.state is not None]
        out.append([TurnState(dialogue_key(d.id), k, t.index, flatten_state(t.state), t.text,
                              _active(t.metadata)) for k, t in enumerate(turns)])
    return [d for d in out if d]


# --- scoring ---------------------------------------------------------------------------------------

def _prf(tp: int, fp: int, fn: int) -> tuple[float, float, float]:
    p = tp / (tp + fp) if tp + fp else 1.0 if not fn else 0.0
    r = tp / (tp + fn) if tp + fn else 1.0 if not fp else 0.0
    return p, r, 2 * p * r / (p + r) if p + r else 0.0


class _Memo(dict):
    """Raw item → its canonical row, computed on first use; `map(memo.__getitem__, items)` runs in C."""

    def __init__(self, compute):
        super().__init__()
        self.compute = compute

    def __missing__(self, it):
        row = self[it] = self.compute(it)
        return row


class _View:
    """One state in one view (normalized or exact): its slot keys, its interned (key, values) ids and the rows
    behind them. When the slots are unique and (for a reference) single-valued, comparing two states is a
    C-level set operation on the ids, the common case; otherwise the rows are compared slot by slot."""

    __slots__ = ("rows", "keys", "ids", "unique", "single", "domains")

    def __init__(self, rows: list):
        self.rows = rows
        self.keys = frozenset([r[0] for r in rows])
        self.ids = frozenset([r[2] for r in rows])
        self.unique = len(self.keys) == len(rows)
        self.single = all(r[3] for r in rows)
        self.domains = frozenset([k[0] for k in self.keys])

    def dict(self) -> dict:
        out: dict = {}
        for key, values, _, _ in self.rows:
            out.setdefault(key, values)  # two raw names for one slot: the first one counts
        return out


def _right(pred: dict, gold: dict) -> int:
    """Predicted slots whose values are all accepted by the reference (a list prediction needs every item)."""
    n = 0
    for k, pv in pred.items():
        gv = gold.get(k)
        if gv is not None and pv <= gv:
            n += 1
    return n


def _compare(p: _View, g: _View) -> tuple[int, bool]:
    """(right predicted slots, whole state right)."""
    if p.unique and g.unique and g.single:
        return len(p.ids & g.ids), p.ids == g.ids
    pd, gd = p.dict(), g.dict()
    ok = _right(pd, gd)
    return ok, ok == len(pd) == len(gd)


def _wrong_domains(p: _View, g: _View, id_domain: list) -> set[str]:
    if p.unique and g.unique and g.single:
        return {id_domain[i] for i in p.ids ^ g.ids}
    pd, gd = p.dict(), g.dict()
    return {d for d in p.domains | g.domains
            if not (lambda a, b: _right(a, b) == len(a) == len(b))({k: v for k, v in pd.items() if k[0] == d},
                                                                   {k: v for k, v in gd.items() if k[0] == d})}


class _Canon:
    """Raw items → canonical views, memoized per raw item and per whole state, which is what makes scoring
    fast: states are cumulative, so most items (and many whole states) repeat turn after turn."""

    def __init__(self, matcher: Matcher, policy: N.Policy, gold: bool, ids: dict, id_domain: list):
        self.m, self.policy, self.gold, self.ids, self.id_domain = matcher, policy, gold, ids, id_domain
        self.memo = _Memo(self.item)
        self.states: dict[tuple[Item, ...], tuple[_View, _View, list[str]]] = {}
        self.unknown: dict[str, int] = {}

    def _row(self, key: tuple, values: frozenset) -> tuple | None:
        if not values:
            return None
        i = self.ids.get((key, values))
        if i is None:
            i = self.ids[(key, values)] = len(self.id_domain)
            self.id_domain.append(key[0])
        return key, values, i, len(values) == 1

    def item(self, it: Item) -> tuple:
        """Raw (domain, slot, value) → (normalized row, exact row); a row is (key, values, id, single) or None."""
        d_raw, s_raw, v = it
        d = N.canonical_domain(d_raw)
        exact_key = (d, N.canonical_slot(d, s_raw))
        key = exact_key if self.gold else self.m.slot(d_raw, s_raw)
        alts = N.alternatives(v)
        if key is None:
            key, norm = (UNKNOWN, f"{d_raw}-{s_raw}"), frozenset(N.basic(a) for a in alts) - {""}
        else:
            norm = frozenset(x for x in (self.m.value(key[0], key[1], a) for a in alts) if x is not None)
        exact = frozenset(x for x in (N.exact_value(a, self.policy) for a in alts) if x is not None)
        return self._row(key, norm), self._row(exact_key, exact)

    def state(self, items: tuple[Item, ...]) -> tuple[_View, _View]:
        hit = self.states.get(items)
        if hit is None:
            rows = list(map(self.memo.__getitem__, items))
            norm = _View([r[0] for r in rows if r[0] is not None])
            exact = _View([r[1] for r in rows if r[1] is not None])
            hit = self.states[items] = (norm, exact, [r[0][1] for r in norm.rows if r[0][0] == UNKNOWN])
        for name in hit[2]:
            self.unknown[name] = self.unknown.get(name, 0) + 1
        return hit[0], hit[1]


def score(references: list[list[TurnState]], predictions: Predictions, matcher: Matcher,
          policy: N.Policy = N.Policy(), bootstrap: int = 0, seed: int = 0, ci: float = 0.95,
          max_examples: int = 10) -> dict:
    """Score predictions against references (see the module docstring for every definition)."""
    if predictions.indexing == "index" and any(t.index is None for d in references for t in d):
        raise DataError("references", message="these references number user turns 0, 1, 2 ... (MultiWOZ_Evaluation"
                        " format): read the predictions with turn_index='ordinal' (--turn-index ordinal)")
    ids: dict = {}
    id_domain: list[str] = []
    gold_c, pred_c = _Canon(matcher, policy, True, ids, id_domain), _Canon(matcher, policy, False, ids, id_domain)
    for it in {it for d in references for t in d for it in t.items}:  # schema = ontology + reference slots,
        key = N.canonical_domain(it[0])                                  # complete before predictions are mapped
        key = (key, N.canonical_slot(key, it[1]))
        if key[1] not in matcher.schema.get(key[0], ()):
            matcher.add_slot(*key)

    by_index = predictions.indexing == "index"
    n_dlg = len(references)
    right, right_exact, n_turns = np.zeros(n_dlg), np.zeros(n_dlg), np.zeros(n_dlg)
    tp = fp = fn = ktp = kfp = kfn = 0
    dom_turns: dict[str, int] = {}
    dom_right: dict[str, int] = {}
    used: set = set()
    missing: list[str] = []
    wer_pairs: list[tuple[str, str, tuple[Item, ...]]] = []
    has_transcripts = any(p.transcript is not None for p in predictions.turns.values())
    get_pred, gold_state, pred_state = predictions.turns.get, gold_c.state, pred_c.state
    for i, dlg in enumerate(references):
        n_turns[i] = len(dlg)
        for t in dlg:
            key = (t.dialogue_id, t.index if by_index else t.ordinal)
            pred = get_pred(key)
            g, gx = gold_state(t.items)
            active = g.domains if t.active_domains is None else t.active_domains
            for dom in active:
                dom_turns[dom] = dom_turns.get(dom, 0) + 1
            if has_transcripts and t.transcript:
                wer_pairs.append((t.transcript, (pred.transcript or "") if pred else "", t.items))
            if pred is None:
                missing.append(f"{t.dialogue_id}:{key[1]}")
                fn += len(g.keys)
                kfn += len(g.keys)
                continue
            used.add(key)
            p, px = pred_state(pred.items)
            ok, turn_ok = _compare(p, g)
            n_pred, n_gold = len(p.keys), len(g.keys)
            tp, fp, fn = tp + ok, fp + n_pred - ok, fn + n_gold - ok
            shared = len(p.keys & g.keys)
            ktp, kfp, kfn = ktp + shared, kfp + n_pred - shared, kfn + n_gold - shared
            right[i] += turn_ok
            right_exact[i] += _compare(px, gx)[1]
            wrong = () if turn_ok else _wrong_domains(p, g, id_domain)
            for dom in active:
                if dom not in wrong:
                    dom_right[dom] = dom_right.get(dom, 0) + 1

    turns = int(n_turns.sum())
    extra = [f"{k[0]}:{k[1]}" for k in predictions.turns if k not in used]
    p, r, f = _prf(tp, fp, fn)
    kp, kr, kf = _prf(ktp, kfp, kfn)
    out: dict[str, Any] = {
        "turns": turns, "dialogues": n_dlg,
        "jga": float(right.sum() / turns) if turns else 0.0,
        "jga_exact": float(right_exact.sum() / turns) if turns else 0.0,
        "slot_precision": p, "slot_recall": r, "slot_f1": f,
        "slot_key_precision": kp, "slot_key_recall": kr, "slot_key_f1": kf,
        "missing_turns": len(missing), "extra_turns": len(extra),
        "malformed_records": len(predictions.problems), "duplicate_records": predictions.duplicates,
        "unknown_slot_predictions": sum(pred_c.unknown.values()),
        "per_domain": {d: dom_right.get(d, 0) / n for d, n in sorted(dom_turns.items())},
        "per_domain_turns": dict(sorted(dom_turns.items())),
        "fuzzy_threshold": matcher.threshold, "slot_threshold": matcher.slot_threshold,
        "policy": {"dontcare": policy.dontcare, "none": policy.none},
        "examples": {"missing": missing[:max_examples], "extra": extra[:max_examples],
                     "malformed": [str(x) for x in predictions.problems[:max_examples]],
                     "unknown_slots": sorted(pred_c.unknown)[:max_examples]},
    }
    if bootstrap > 0 and turns:
        out["jga_ci"] = bootstrap_ci(right, n_turns, bootstrap, seed, ci)
        out["jga_ci_level"] = ci
    if wer_pairs:
        out.update(wer_scores(wer_pairs))
    return out


def bootstrap_ci(right: np.ndarray, n: np.ndarray, samples: int, seed: int = 0, ci: float = 0.95) -> list[float]:
    """Percentile CI of sum(right)/sum(n) when dialogues are resampled with replacement (vectorized, chunked)."""
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

def score_files(predictions: str | os.PathLike, references: str | os.PathLike, references_corpus: str | None = None,
                ontology: str | Ontology | None = "auto", data_dir: str | os.PathLike | None = None,
                fuzzy_threshold: float = 90.0, slot_threshold: float = 80.0, exclude_test_values: bool = True,
                policy: N.Policy = N.Policy(), turn_index: str = "index", bootstrap: int = 0,
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
    result = score(refs, preds, Matcher(onto, fuzzy_threshold, slot_threshold, policy), policy, bootstrap, seed)
    result["ontology"] = onto.describe() if onto else None
    return result
