"""Ontologies (domain → slot → values) and the thresholded fuzzy matcher that maps onto them.

Sources, by name (``load(name)``):
  multiwoz   the MultiWOZ DB entities and the 2.2 schema's categorical values (MIT; shipped in
             resources/multiwoz_db.json, so it works without ../shared/data). With
             ``exclude_test_values=False`` the corpus value lists (ontology21.json) are added: those are
             collected from the annotations of *all* splits, test included, which is what the reference
             implementation's evaluation did and why that option leaks (a prediction near a test-only annotation gets snapped onto it). The
             splits cannot be told apart in that file, so excluding test values excludes all of them.
  spokenwoz  multiwoz plus SpokenWOZ's profile slots (name, email, phone number, id number, plate number).
  sgd        every schema.json under <data>/sgd (categorical ``possible_values``; free-form slots have
             names but no values). Schemas are given at test time by design, so there is nothing to exclude.
  PATH       a JSON file ``{domain: {slot: [values]}}``.
  none       no values: slot names come from the references only and values are never fuzzy-matched.

Matching (``Matcher``): values are normalized (normalize.py), then a value outside the ontology is replaced
by the closest ontology value when the rapidfuzz score (0–100 scale) is >= the threshold, and kept as it is
below it. Time and count slots are never fuzzy-matched ("17:15" and "17:45" are 80 apart on that scale,
not the same value). Slot names outside the schema go to the closest schema slot at or above the slot
threshold; otherwise they are unknown and the scorer counts them wrong. Every lookup is memoized.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources
from pathlib import Path

import numpy as np
from rapidfuzz import fuzz, process

from spokentod.dst.data import normalize as N
from spokentod.errors import DataError

MWZ_DOMAINS = N.MWZ_DOMAINS
_normalize = N.normalize_value.__wrapped__  # Matcher._values is the memo: skip lru_cache's key building
RESOURCES = Path(__file__).with_name("resources")


@dataclass
class Ontology:
    name: str
    values: dict[str, dict[str, list[str]]]  # canonical domain → canonical slot → raw values ([] = free-form)
    test_values_excluded: bool = True
    notes: list[str] = field(default_factory=list)

    def slots(self) -> set[tuple[str, str]]:
        return {(d, s) for d, slots in self.values.items() for s in slots}

    def describe(self) -> dict:
        values = sum(len(v) for slots in self.values.values() for v in slots.values())
        return {"name": self.name, "test_values_excluded": self.test_values_excluded,
                "slots": len(self.slots()), "values": values, "notes": self.notes}


def from_mapping(name: str, raw: dict, excluded: bool = True) -> Ontology:
    """``{domain: {slot: [values]}}`` (any slot spelling) → Ontology with canonical names."""
    out: dict[str, dict[str, list[str]]] = {}
    for d, slots in raw.items():
        if str(d).startswith("_"):
            continue
        dom = N.canonical_domain(d)
        for s, vals in slots.items():
            bucket = out.setdefault(dom, {}).setdefault(N.canonical_slot(dom, s), [])
            bucket.extend(v for v in N.alternatives(vals or []) if v not in bucket)
    return Ontology(name, out, excluded)


def _shipped(name: str) -> dict:
    return json.loads((resources.files("spokentod.dst.data") / "resources" / name).read_text(encoding="utf-8"))


def default_data_dir() -> Path | None:
    """$SPOKENTOD_DATA, else ../shared/data beside the working directory or the repository."""
    env = os.environ.get("SPOKENTOD_DATA")
    cands = [Path(env)] if env else []
    repo = Path(__file__).resolve().parents[3]
    cands += [Path.cwd().parent / "shared" / "data", repo.parent / "shared" / "data"]
    return next((c for c in cands if c.is_dir()), None)


def multiwoz(data_dir: str | os.PathLike | None = None, exclude_test_values: bool = True) -> Ontology:
    onto = from_mapping("multiwoz", _shipped("multiwoz_db.json")["ontology"])
    if not exclude_test_values:
        path = Path(data_dir or default_data_dir() or ".") / "multiwoz" / "mwz21_convlab2" / "ontology21.json"
        if not path.is_file():
            raise DataError(str(path), message="needed for --include-test-values (pass --data-dir)")
        extra: dict[str, dict[str, list[str]]] = {}
        for key, vals in json.loads(path.read_text(encoding="utf-8")).items():
            d, _, s = key.split("-", 2)  # "hotel-semi-pricerange"
            extra.setdefault(d, {})[s] = [p for v in vals for p in v.replace(">", "|").split("|")]
        for d, slots in from_mapping("", extra).values.items():
            for s, vals in slots.items():
                bucket = onto.values.setdefault(d, {}).setdefault(s, [])
                bucket.extend(v for v in vals if v not in bucket)
        onto.test_values_excluded = False
        onto.notes.append("includes corpus annotation values from all splits (test included)")
    return onto


def spokenwoz(data_dir=None, exclude_test_values: bool = True) -> Ontology:
    onto = multiwoz(data_dir, exclude_test_values)
    for s in _shipped("multiwoz_db.json")["spokenwoz_profile_slots"]:
        onto.values.setdefault("profile", {})[N.canonical_slot("profile", s)] = []
    onto.name = "spokenwoz"
    return onto


def sgd(data_dir: str | os.PathLike | None = None, exclude_test_values: bool = True) -> Ontology:
    root = Path(data_dir or default_data_dir() or ".") / "sgd"
    files = sorted(root.glob("*/schema.json"))
    if not files:
        raise DataError(str(root), message="no SGD schema.json files (pass --data-dir)")
    raw: dict[str, dict[str, list[str]]] = {}
    for f in files:
        for svc in json.loads(f.read_text(encoding="utf-8")):
            for slot in svc["slots"]:
                values = list(slot.get("possible_values") or [])
                raw.setdefault(svc["service_name"], {})[slot["name"]] = values
    return from_mapping("sgd", raw, exclude_test_values)


def load(spec: str | None, data_dir=None, exclude_test_values: bool = True) -> Ontology | None:
    """An ontology by name (multiwoz, multiwoz21, multiwoz22, spokenwoz, sgd), a JSON path, or none."""
    if spec is None or spec.lower() == "none":
        return None
    key = spec.lower()
    if key in ("multiwoz", "multiwoz21", "multiwoz22", "mwz"):
        return multiwoz(data_dir, exclude_test_values)
    if key == "spokenwoz":
        return spokenwoz(data_dir, exclude_test_values)
    if key == "sgd":
        return sgd(data_dir, exclude_test_values)
    path = Path(spec)
    if not path.is_file():
        raise DataError(spec, message="unknown ontology (multiwoz, spokenwoz, sgd, none, or a JSON path)")
    return from_mapping(path.stem, json.loads(path.read_text(encoding="utf-8")))


def guess(domains: Iterable[str]) -> str:
    """The ontology that fits reference domains: multiwoz / spokenwoz / sgd ("Name_1" services) / none."""
    ds = set(domains)
    if ds and ds <= set(MWZ_DOMAINS):
        return "multiwoz"
    if ds and ds <= set(MWZ_DOMAINS) | {"profile"}:
        return "spokenwoz"
    if ds and all("_" in d and d.rsplit("_", 1)[1].isdigit() for d in ds):
        return "sgd"
    return "none"


class Matcher:
    """Maps slot names onto the schema and values onto the ontology, each distinct input once. The schema
    grows with every reference slot scored (score() adds them), so use one Matcher per reference set."""

    def __init__(self, ontology: Ontology | None, threshold: float = 90.0, slot_threshold: float = 80.0,
                 policy: N.Policy = N.DEFAULT_POLICY, scorer: Callable = fuzz.ratio):
        # The reference implementation's evaluation compared a 0–1 threshold with rapidfuzz's 0–100 scores, so
        # every value snapped; a threshold in (0, 1] is refused as that mistake.
        for t in (threshold, slot_threshold):
            if not 0 <= t <= 100 or 0 < t <= 1:
                raise ValueError(f"threshold {t} is not on rapidfuzz's 0–100 scale "
                                 "(write 90, not 0.9; 0 = always snap)")
        self.threshold, self.slot_threshold = threshold, slot_threshold
        self.policy, self.scorer = policy, scorer
        self.schema: dict[str, set[str]] = {}
        self.choices: dict[tuple[str, str], tuple[list[str], frozenset[str]]] = {}
        for d, slots in (ontology.values if ontology else {}).items():
            for s, vals in slots.items():
                self.add_slot(d, s)
                if vals and N.slot_kind(s) not in ("time", "count"):
                    normed = sorted({v for v in (_normalize(d, s, x, policy) for x in vals) if v})
                    self.choices[(d, s)] = (normed, frozenset(normed))
        self._slots: dict[tuple[str, str], tuple[str, str] | None] = {}
        self._values: dict[tuple[str, str, str], str | None] = {}

    def add_slot(self, domain: str, slot: str) -> None:
        """Schema slots are the ontology's plus every slot the references use."""
        self.schema.setdefault(domain, set()).add(slot)
        self._slots = {}

    def slot(self, domain: str, slot: str) -> tuple[str, str] | None:
        """Raw (domain, slot) → a schema (domain, slot), or None when nothing is close enough."""
        key = (domain, slot)
        if key not in self._slots:
            self._slots[key] = self._map_slot(N.canonical_domain(domain), slot)
        return self._slots[key]

    def _map_slot(self, d: str, raw_slot: str) -> tuple[str, str] | None:
        if d not in self.schema:
            hit = process.extractOne(d, sorted(self.schema), scorer=self.scorer,
                                     score_cutoff=self.slot_threshold)
            if hit is None:
                return None
            d = hit[0]
        s = N.canonical_slot(d, raw_slot)
        if s in self.schema[d]:
            return d, s
        hit = process.extractOne(s, sorted(self.schema[d]), scorer=self.scorer,
                                 score_cutoff=self.slot_threshold)
        return (d, hit[0]) if hit else None

    def value(self, domain: str, slot: str, raw: str) -> str | None:
        """Normalized value, snapped to the closest ontology value when the score is >= threshold."""
        key = (domain, slot, raw)
        hit = self._values.get(key, self)  # self: not seen yet (None is a valid answer)
        if hit is self:
            self.prefetch([key])
            hit = self._values[key]
        return hit

    def prefetch(self, requests: Iterable[tuple[str, str, str]]) -> None:
        """Resolve many (domain, slot, raw value) at once: the values that need fuzzy matching go through one
        process.cdist per slot (queries x choices in C) instead of one extractOne each. Ties go to the first
        choice, as with extractOne."""
        todo: dict[tuple[str, str], dict[str, list[tuple[str, str, str]]]] = {}
        for key in requests:
            if key in self._values:
                continue
            v = _normalize(key[0], key[1], key[2], self.policy)
            ch = self.choices.get(key[:2])
            if v is None or v == N.DONTCARE or ch is None or v in ch[1]:
                self._values[key] = v
            else:
                todo.setdefault(key[:2], {}).setdefault(v, []).append(key)
        for ds, queries in todo.items():
            choices = self.choices[ds][0]
            scores = process.cdist(list(queries), choices, scorer=self.scorer, score_cutoff=self.threshold,
                                   dtype=np.float64)  # float32 could tie scores that differ
            best = scores.argmax(axis=1)
            for (v, keys), j, row in zip(queries.items(), best, scores):
                hit = choices[j] if row[j] >= self.threshold else v
                for key in keys:
                    self._values[key] = hit


# --- building the shipped tables (run: python -m spokentod.dst.data.ontology [DATA_DIR]) -------------------

@lru_cache(maxsize=1)
def _db_values(mwz: Path) -> dict[str, dict[str, list[str]]]:
    db = {d: json.loads((mwz / "db" / f"{d}_db.json").read_text()) for d in
          ("attraction", "hospital", "hotel", "police", "restaurant", "train")}
    col = lambda d, k: sorted({str(e[k]).lower() for e in db[d] if k in e})
    stations = sorted(set(col("train", "departure")) | set(col("train", "destination")))
    places = sorted({*col("attraction", "name"), *col("hotel", "name"), *col("restaurant", "name"),
                     *col("police", "name"), "addenbrookes hospital", *stations})
    out = {"attraction": {"name": col("attraction", "name"), "area": col("attraction", "area"),
                          "type": col("attraction", "type")},
           "hotel": {k: col("hotel", k)
                     for k in ("name", "area", "pricerange", "type", "stars", "internet", "parking")},
           "restaurant": {k: col("restaurant", k) for k in ("name", "area", "pricerange", "food")},
           "hospital": {"department": col("hospital", "department")},
           "police": {"name": col("police", "name")},
           "taxi": {"departure": places, "destination": places, "leaveat": [], "arriveby": []},
           "train": {"departure": stations, "destination": stations, "day": col("train", "day"),
                     "leaveat": [], "arriveby": []}}
    for svc in json.loads((mwz / "mwz22" / "schema.json").read_text()):  # categorical values + slot names
        d = svc["service_name"]
        for slot in svc["slots"]:
            s = N.canonical_slot(d, slot["name"])
            bucket = out.setdefault(d, {}).setdefault(s, [])
            if slot.get("is_categorical"):
                bucket.extend(v for v in slot.get("possible_values") or [] if v not in bucket)
    return out


def build_resources(data_dir: str | os.PathLike, out: Path = RESOURCES) -> None:
    """Derive text_tables.json, multiwoz_db.json and aliases.json from MIT-licensed files in data_dir."""
    try:
        N.TABLES_DIR = out  # the rules must read the tables being built, not the shipped ones
        _build(Path(data_dir), out)
    finally:
        N.TABLES_DIR = None
        N._tables.cache_clear()
        N.normalize_value.cache_clear()


def _build(data: Path, out: Path) -> None:
    mwz, trippy = data / "multiwoz", json.loads((data / "spokenwoz" / "trippy_config.json").read_text())
    label_maps = {k.lower(): [v.lower() for v in vs] for k, vs in trippy["label_maps"].items()}
    meta = lambda src: {"source": src, "license": "MIT", "built_by": "python -m spokentod.dst.data.ontology"}

    # 1. number words from MultiWOZ's mapping.pair; closed compounds the DB writes as one word ("guesthouse")
    #    that SpokenWOZ's variant map also spells as two ("guest house").
    pairs = [ln.split("\t") for ln in (mwz / "mapping_pair.txt").read_text().splitlines() if "\t" in ln]
    numbers = {a: b for a, b in pairs if b.isdigit()} | {"zero": "0"}
    dbv = _db_values(mwz)
    closed = {v for slots in dbv.values() for vals in slots.values() for v in vals
              if " " not in v and len(v) > 6}
    spaced = {x for k, vs in label_maps.items() for x in (k, *vs) if " " in x}
    compounds = sorted([x, x.replace(" ", "")] for x in spaced if x.replace(" ", "") in closed)
    src = "budzianowski/multiwoz utils/mapping.pair, db/; AlibabaResearch/DAMO-ConvAI spokenwoz config.json"
    _write(out / "text_tables.json", {"_meta": meta(src), "number_words": numbers, "compounds": compounds})
    N._tables.cache_clear()
    N.normalize_value.cache_clear()

    # 2. the MultiWOZ value ontology (DB + 2.2 schema) and SpokenWOZ's extra slot names.
    profile = [s.split("-", 1)[1] for s in trippy["slots"] if s.startswith("profile-")]
    src = ("budzianowski/multiwoz db/*.json, data/MultiWOZ_2.2/schema.json; "
           "DAMO-ConvAI spokenwoz config.json (profile slots)")
    _write(out / "multiwoz_db.json",
           {"_meta": meta(src), "ontology": dbv, "spokenwoz_profile_slots": sorted(profile)})

    # 3. aliases: in each variant group of the label map with exactly ONE member among this slot's DB values,
    #    every other member becomes an alias of it, unless it is a DB value, ambiguous, or a paraphrase.
    aliases: dict[str, dict[str, str]] = {}
    for d, slots in dbv.items():
        for s, vals in slots.items():
            if not vals or N.slot_kind(s) == "time":
                continue
            def rule(x: str, d: str = d, s: str = s) -> str:  # rules only: the aliases are being built
                return N._rules(d, s, N.basic(x))

            canon = {rule(v) for v in vals}
            cand: dict[str, set[str]] = {}
            for k, vs in label_maps.items():
                group = {rule(x) for x in (k, *vs)}
                members = group & canon
                if len(members) == 1:
                    for x in group - canon:
                        cand.setdefault(x, set()).update(members)
            table = {x: next(iter(c)) for x, c in sorted(cand.items())
                     if len(c) == 1 and x and _surface_variant(x, next(iter(c)))}
            if table:
                aliases[f"{d}-{s}"] = table
    _write(out / "aliases.json", {"_meta": meta("DAMO-ConvAI spokenwoz config.json label_maps x budzianowski/"
                                                "multiwoz db (variants of exactly one DB value)"),
                                  "aliases": aliases})


def _surface_variant(a: str, b: str) -> bool:
    """A spelling or shortening ("wartworth", "acorn" → "acorn guesthouse"), not a paraphrase the label map
    also lists ("pizza" → "italian", "downtown" → "centre", "me" → "1"): those would make scoring lenient."""
    return fuzz.ratio(a, b) >= 70 or fuzz.partial_ratio(a, b) >= 90


def _write(path: Path, obj: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, indent=1, sort_keys=True, ensure_ascii=False) + "\n", encoding="utf-8")


if __name__ == "__main__":
    build_resources(sys.argv[1] if len(sys.argv) > 1 else (default_data_dir() or "../shared/data"))
