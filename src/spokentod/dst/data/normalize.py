"""MultiWOZ-style normalization of dialogue-state slot names and values, applied to BOTH sides.

Every rule is applied identically to references and predictions, so a reference scored against
itself is always perfect, and a rule can only make two spellings of one value agree.

Slot names (``canonical_slot``)
  S1  lower-case; every non-alphanumeric character removed: "arriveBy", "arrive by", "arrive_by"
      → "arriveby"; "price range" → "pricerange"; "number_of_seats" → "numberofseats".
  S2  a leading "<domain>-" / "<domain>_" is dropped (MultiWOZ 2.2 writes "hotel-bookday").
  S3  the booking prefix is dropped: "book people", "bookpeople", "book_day" → "people", "day"
      (MultiWOZ_Evaluation style; no MultiWOZ domain has both "x" and "book x").
  S4  MultiWOZ domains only, legacy short names: "leave" → "leaveat", "arrive" → "arriveby",
      "depart" → "departure", "dest" → "destination", "price" → "pricerange" (price is not a MultiWOZ
      state slot; SGD's Flights has a "price" that must stay apart from price ranges).
  Domains are lower-cased and stripped ("Restaurants_1" → "restaurants_1").

Values (``normalize_value``), in this order
  V1  lower-case, trim, collapse whitespace (this alone is what ``jga_exact`` uses: ``basic``).
  V2  empties: "", "not mentioned", "not given" → no value (the slot is absent).
      "none" → absent by default (``Policy.none="keep"`` keeps it as a value).
      "dontcare" and its spellings ("dont care", "don't care", "do n't care", "do not care",
      "doesn't matter", "no preference", "any") → "dontcare"; ``Policy.dontcare="drop"`` makes it absent.
  V3  tokenization undone: "john 's" → "john's", no space before , . ! ? ; trailing . , ! ? dropped.
  V4  "&" → "and".
  V5  apostrophes removed ("christ's college" → "christs college", "queens' college" → "queens college")
      and hyphens → spaces ("alpha-milton" → "alpha milton"): the corpus writes names both ways.
  V6  "bed and breakfast" / "bed & breakfast" / "b & b" / "b&b" → "b and b" (the DB uses both forms).
  V7  closed compounds the DB uses: "guest house" → "guesthouse", "night club" → "nightclub",
      "swimming pool" → "swimmingpool", "concert hall" → "concerthall" (table derived from the DB
      and SpokenWOZ's variant map, see ontology.build_resources); DB typo "mutliple" → "multiple".
  V8  British spellings the DB uses: "center" → "centre", "theater" → "theatre".
  V9  name-like slots (name, departure, destination): a leading "the " is dropped.
  V10 time slots (leaveat, arriveby, time, *time): parsed to 24-hour "HH:MM" when possible:
      "5pm", "5 p.m.", "5:30 pm", "17.30", "1730", "after 17:00", "by 5:30", "noon", "midnight".
      Unparseable text ("morning") is kept as is.
  V11 count slots (people, stay, stars, SGD number*, partysize): number words → digits ("two" → "2",
      table from MultiWOZ's mapping.pair) and a unit word dropped ("3 nights", "4 star" → "3", "4").
  V12 parking / internet: "free" → "yes" (the 2.2 schema lists "free"; 2.1 states say "yes"),
      "true" → "yes", "false" → "no".
  V13 aliases: spelling variants of a DB value → that value, per domain-slot ("portugese" →
      "portuguese", "el shaddia guesthouse" → "el shaddai", "caffee uno" → "caffe uno"). The table
      is derived from SpokenWOZ's label map and the MultiWOZ DB (both MIT) and shipped in resources/.

Several gold values: a list (MultiWOZ 2.2, SGD) or "a|b" (MultiWOZ 2.1) means any one is right.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from functools import cache, lru_cache
from importlib import resources

EMPTY = frozenset({"", "not mentioned", "not given"})
DONTCARE = "dontcare"
_DONTCARE_FORMS = frozenset({"dontcare", "dont care", "don't care", "do n't care", "do not care",
                             "doesn't matter", "doesnt matter", "does not matter", "no preference", "any"})
_SLOT_ALIASES = {"leave": "leaveat", "arrive": "arriveby", "depart": "departure", "dest": "destination",
                 "price": "pricerange"}
_BOOK_SLOTS = frozenset({"people", "day", "time", "stay"})
MWZ_DOMAINS = frozenset({"attraction", "bus", "hospital", "hotel", "police", "restaurant", "taxi", "train"})
TIME_SLOTS = frozenset({"leaveat", "arriveby", "time"})
COUNT_SLOTS = frozenset({"people", "stay", "stars", "partysize"})
NAME_SLOTS = frozenset({"name", "departure", "destination"})
BOOL_SLOTS = frozenset({"parking", "internet"})
_BOOL = {"free": "yes", "true": "yes", "false": "no"}

_NON_ALNUM = re.compile(r"[^0-9a-z]+")
_SPACE_BEFORE = re.compile(r"\s+(?=[,.!?;:]|'s\b|'re\b|'ve\b|'ll\b|'d\b|'m\b|n't\b|')")
_TRAILING_PUNCT = re.compile(r"[\s.,!?;]+$")
_BNB = re.compile(r"\bbed (?:and|&) breakfast\b|\bb ?& ?b\b|\bb and b\b")
_SPELLING = [(w, re.compile(rf"\b{w}\b"), r) for w, r in (("center", "centre"), ("theater", "theatre"),
                                                           ("mutliple", "multiple"))]
_TIME = re.compile(r"^(\d{1,2})(?:[:.h ]?(\d{2}))?\s*(a\.?\s?m\.?|p\.?\s?m\.?)?$")
_TIME_PREFIX = re.compile(r"^(?:after|afer|by|at|around|about|before|approximately|arrive by|leave at)\s+")
_WORD_TIMES = {"noon": "12:00", "midday": "12:00", "mid-day": "12:00", "midnight": "00:00"}
_COUNT = re.compile(r"^(\w+)(?:\s+(?:people|persons?|nights?|stars?|days?|tickets?|seats?))?$")


@dataclass(frozen=True)
class Policy:
    """How the two special values are treated. dontcare: keep|drop; none: drop|keep."""

    dontcare: str = "keep"
    none: str = "drop"

    def __post_init__(self):
        if self.dontcare not in ("keep", "drop") or self.none not in ("keep", "drop"):
            raise ValueError("Policy.dontcare and Policy.none must each be 'keep' or 'drop'")


DEFAULT_POLICY = Policy()


TABLES_DIR = None  # set by ontology.build_resources while it writes new tables; None = the shipped ones


@cache
def _tables() -> dict:
    """Derived tables shipped with the package (see ontology.build_resources and resources/README.md)."""
    files = TABLES_DIR or resources.files("spokentod.dst.data") / "resources"
    out = {"aliases": {"aliases": {}}, "text_tables": {"number_words": {}, "compounds": []}}
    for key in out:  # absent only while build_resources is creating them
        if (files / f"{key}.json").is_file():
            out[key] = json.loads((files / f"{key}.json").read_text(encoding="utf-8"))
    return out


def canonical_domain(domain: str) -> str:
    return str(domain).strip().lower()


@lru_cache(maxsize=65536)
def canonical_slot(domain: str, slot: str) -> str:
    """Rules S1–S4. `domain` must already be canonical."""
    raw = str(slot).strip().lower()
    if domain and len(raw) > len(domain) + 1 and raw.startswith(domain) and raw[len(domain)] in "-_ ":
        raw = raw[len(domain) + 1:]
    s = _NON_ALNUM.sub("", raw)
    if s.startswith("book") and s[4:] in _BOOK_SLOTS:
        s = s[4:]
    return _SLOT_ALIASES.get(s, s) if domain in MWZ_DOMAINS else s


def slot_kind(slot: str) -> str:
    """'time', 'count', 'bool', 'name' or 'text', from the canonical slot name."""
    kind = _KINDS.get(slot)
    if kind is None:
        kind = _KINDS[slot] = _slot_kind(slot)
    return kind


_KINDS: dict[str, str] = {}


def _slot_kind(slot: str) -> str:
    if slot in TIME_SLOTS or slot.endswith("time"):
        return "time"
    if slot in COUNT_SLOTS or slot.startswith("number"):
        return "count"
    if slot in BOOL_SLOTS:
        return "bool"
    return "name" if slot in NAME_SLOTS else "text"


def basic(value: object) -> str:
    """Rule V1 only: the comparison used by jga_exact."""
    return " ".join(str(value).lower().split())


def to_hhmm(text: str) -> str | None:
    """Rule V10: a time expression → "HH:MM" (24 h), or None when it is not a clock time."""
    t = _TIME_PREFIX.sub("", text.strip().lower()).strip()
    if t in _WORD_TIMES:
        return _WORD_TIMES[t]
    m = _TIME.match(t)
    if not m:
        return None
    h, mins = int(m.group(1)), int(m.group(2) or 0)
    ampm = (m.group(3) or "").replace(".", "").replace(" ", "")
    if mins > 59:
        return None
    if ampm == "pm" and h < 12:
        h += 12
    elif ampm == "am" and h == 12:
        h = 0
    if h > 24:  # MultiWOZ has "24:30" in its states; keep that, reject nonsense
        return None
    return f"{h:02d}:{mins:02d}"


def _count(value: str) -> str:
    m = _COUNT.match(value)
    if not m:
        return value
    word = m.group(1)
    return _tables()["text_tables"]["number_words"].get(word, word)


_V3_CHARS = frozenset(",.!?;:'")
_V4_CHARS = frozenset("&'\u2019-")


@cache
def _word(text: str) -> re.Pattern:
    return re.compile(rf"\b{re.escape(text)}\b")


def _rules(domain: str, slot: str, v: str) -> str:
    """Rules V3–V12 on a V1-normalized, non-special value."""
    kind = slot_kind(slot)
    # The `isdisjoint` / `in` tests below only skip rules that could not change the value (speed only):
    # V3's patterns need one of these characters (v is V1-normalized: no trailing space), V6's need
    # "breakfast" once V4 has turned every "&" into "and" ("b and b" maps onto itself).
    if not _V3_CHARS.isdisjoint(v):
        v = _TRAILING_PUNCT.sub("", _SPACE_BEFORE.sub("", v))
    if kind == "time":
        return to_hhmm(v) or v
    if not _V4_CHARS.isdisjoint(v):
        v = " ".join(v.replace("&", " and ").replace("'", "").replace("\u2019", "").replace("-", " ").split())
    if "breakfast" in v:
        v = _BNB.sub("b and b", v)
    for pattern, repl in _tables()["text_tables"]["compounds"]:
        if pattern in v:
            v = _word(pattern).sub(repl, v)
    for word, rx, repl in _SPELLING:
        if word in v:
            v = rx.sub(repl, v)
    if kind == "name" and v.startswith("the "):
        v = v[4:]
    elif kind == "count":
        v = _count(v)
    elif kind == "bool":
        v = _BOOL.get(v, v)
    return v


@lru_cache(maxsize=262144)
def normalize_value(domain: str, slot: str, value: str, policy: Policy = DEFAULT_POLICY) -> str | None:
    """All value rules V1–V13 for one canonical (domain, slot). None means "no value"."""
    v = basic(value)
    if v in EMPTY:
        return None
    if v == "none":
        return None if policy.none == "drop" else "none"
    if v in _DONTCARE_FORMS:
        return None if policy.dontcare == "drop" else DONTCARE
    v = _rules(domain, slot, v)
    if not v:
        return None
    return _tables()["aliases"]["aliases"].get(f"{domain}-{slot}", {}).get(v, v)


def exact_value(value: str, policy: Policy = DEFAULT_POLICY) -> str | None:
    """The jga_exact comparison: V1 plus the empty/none/dontcare presence rules of V2 (literal spelling)."""
    v = basic(value)
    if v in EMPTY or (v == "none" and policy.none == "drop") or (v == DONTCARE and policy.dontcare == "drop"):
        return None
    return v


def alternatives(value: object) -> list[str]:
    """Gold alternatives: a list, or MultiWOZ 2.1's "a|b". A scalar becomes a one-item list."""
    if isinstance(value, (list, tuple, set)):
        out: list[str] = []
        for v in value:
            out.extend(alternatives(v))
        return out
    if value is None:
        return []
    s = str(value)
    return [p for p in s.split("|")] if "|" in s else [s]
