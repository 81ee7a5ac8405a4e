"""Details a user gives (a city, a day, a time, a number, a cuisine, a slot value) and a wrong value of the
same kind: what the memory corruption of `judge-check` swaps to make a reply that contradicts the user.

A detail is found in the text of user turns: values of the corpus's dialogue-state annotation (MultiWOZ,
SGD, the demo corpus) first, then times, places and cuisines from small gazetteers, weekdays, months,
spelled-out and written numbers. The replacement is another value of the same kind that the dialogue has
not mentioned so far, so the corrupted reply contradicts the user instead of naming another option they
raised themselves.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass
from typing import Any

WEEKDAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
MONTHS = ("January", "February", "March", "April", "May", "June", "July", "August", "September", "October",
          "November", "December")
NUMBER_WORDS = ("two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven", "twelve")
PLACES = ("New York", "Chicago", "San Francisco", "Los Angeles", "San Jose", "San Diego", "Seattle", "Boston",
          "Portland", "Denver", "Austin", "Dallas", "Houston", "Miami", "Atlanta", "Phoenix", "Las Vegas",
          "New Orleans", "Washington D.C.", "Washington", "Philadelphia", "Sacramento", "Fresno", "Oakland", "Berkeley",
          "Cambridge", "London", "Paris", "Rome", "Berlin", "Madrid", "Barcelona", "Amsterdam", "Tokyo",
          "Kyoto", "Seoul", "Sydney", "Toronto", "Vancouver", "Mexico", "Hawaii", "Florida", "California",
          "Japan", "Italy", "France", "Spain", "Germany", "China", "India", "Canada", "Australia", "Thailand",
          "Greece", "Ireland", "Scotland", "Europe", "Alaska", "Colorado", "Texas")
CUISINES = ("Italian", "Korean", "Chinese", "Mexican", "Indian", "Thai", "French", "Greek", "Spanish",
            "Vietnamese", "Japanese", "American", "Mediterranean", "Turkish", "Lebanese", "Ethiopian", "Sushi",
            "Pizza", "Burgers", "Seafood", "Vegetarian", "Barbecue")
_TIME = re.compile(r"\b(\d{1,2})(?::(\d{2}))?\s?(am|pm|a\.m\.|p\.m\.)(?!\w)|\b(\d{1,2}):(\d{2})\b", re.IGNORECASE)
_DIGITS = re.compile(r"(?<![\d:.,$])\b\d{1,4}\b(?![:.,]\d)")


@dataclass(frozen=True)
class Detail:
    kind: str  # "slot:<name>", "time", "place", "cuisine", "weekday", "month", "number", "number_word"
    value: str  # as written in the user's turn
    turn: int  # the user turn it was found in


def _word_re(value: str) -> re.Pattern[str]:
    return re.compile(rf"(?<![\w]){re.escape(value)}(?![\w])", re.IGNORECASE)


def _any_of(values: list[str] | tuple[str, ...]) -> re.Pattern[str] | None:
    """One pattern for a list of values, longest first ("San Jose" before "Jose")."""
    vals = sorted({v for v in values if v.strip()}, key=len, reverse=True)
    return re.compile(r"(?<![\w])(?:" + "|".join(map(re.escape, vals)) + r")(?![\w])", re.IGNORECASE) if vals else None


def mentions(text: str, value: str) -> bool:
    return bool(_word_re(value).search(text))


_KINDS = (("time", _TIME), ("place", _any_of(PLACES)), ("cuisine", _any_of(CUISINES)),
          ("weekday", _any_of(WEEKDAYS)), ("month", _any_of(MONTHS)), ("number_word", _any_of(NUMBER_WORDS)),
          ("number", _DIGITS))


def _spans(text: str, matchers: list[tuple[str, re.Pattern[str] | None]]) -> list[tuple[int, int, str, str]]:
    """(start, end, kind, value) of each detail in `text`; an earlier matcher wins an overlap."""
    found: list[tuple[int, int, str, str]] = []
    for kind, pat in matchers:
        for m in pat.finditer(text) if pat is not None else ():
            if all(m.end() <= s or m.start() >= e for s, e, _, _ in found):
                found.append((m.start(), m.end(), kind, m.group(0)))
    return sorted(found)


def slot_values(dialogues: list[Any]) -> dict[str, list[str]]:
    """Every string value of each slot (domain dropped) over the dialogues' state annotations: the pool a
    wrong value of the same slot is drawn from."""
    pool: dict[str, set[str]] = {}
    for d in dialogues:
        for t in d.turns:
            for slots in (t.state or {}).values():
                for slot, v in slots.items():
                    for x in v if isinstance(v, list) else [v]:
                        if isinstance(x, str) and len(x) > 1 and x.lower() not in ("dontcare", "none", "?"):
                            pool.setdefault(slot, set()).add(x)
    return {k: sorted(v) for k, v in pool.items()}


def find_details(dialogue: Any, upto: int, pool: dict[str, list[str]]) -> list[Detail]:
    """Details the user stated in user turns 0..`upto` (inclusive), in order of appearance."""
    out: list[Detail] = []
    for t in dialogue.turns[: upto + 1]:
        if t.speaker.value != "user":
            continue
        slot_vals = [(slot, str(v)) for slots in (t.state or {}).values() for slot, vs in slots.items()
                     for v in (vs if isinstance(vs, list) else [vs]) if isinstance(v, str) and v in pool.get(slot, ())]
        slot_of = {v.lower(): s for s, v in slot_vals}
        for _, _, kind, value in _spans(t.text, [("slot", _any_of([v for _, v in slot_vals])), *_KINDS]):
            out.append(Detail(f"slot:{slot_of[value.lower()]}" if kind == "slot" else kind, value, t.index))
    return out


def _cased(new: str, like: str) -> str:
    """`new` written in the case style of `like` (the word it replaces)."""
    if like.isupper() and len(like) > 1:
        return new.upper()
    if like.islower():
        return new.lower()
    return new[:1].upper() + new[1:] if like[:1].isupper() else new


def _time_options(value: str) -> list[str]:
    m = _TIME.fullmatch(value.strip())
    if not m:
        return []
    if m[3]:  # "7 pm", "7:30 p.m."
        return [f"{h}{':' + m[2] if m[2] else ''} {m[3]}" for h in range(1, 13) if h != int(m[1])]
    width = len(m[4])  # "07:30" keeps its leading zero
    return [f"{h:0{width}d}:{m[5]}" for h in range(1, 24) if h != int(m[4])]


def _number_options(value: str) -> list[str]:
    n = int(value)
    return [str(n + k) for k in (1, 2, 3, -1, -2) if n + k > 0]


def replacement_options(detail: Detail, pool: dict[str, list[str]]) -> list[str]:
    """Other values of the detail's kind (not yet filtered against the dialogue)."""
    kind, v = detail.kind, detail.value
    if kind.startswith("slot:"):
        opts = list(pool.get(kind[5:], ()))
        if len(opts) < 2:  # a slot with one value in the loaded dialogues: fall back on the gazetteers
            for gaz in (PLACES, CUISINES, WEEKDAYS, MONTHS):
                if any(x.lower() == v.lower() for x in gaz):
                    opts = list(gaz)
    else:
        opts = {"place": list(PLACES), "cuisine": list(CUISINES), "weekday": list(WEEKDAYS),
                "month": list(MONTHS), "number_word": list(NUMBER_WORDS)}.get(kind, [])
        if kind == "time":
            opts = _time_options(v)
        elif kind == "number":
            opts = _number_options(v)
    return [o for o in opts if o.lower() != v.lower()]


def pick_replacement(detail: Detail, pool: dict[str, list[str]], context: str, rng: random.Random) -> str | None:
    """A value of the same kind that `context` (the dialogue so far) never mentions, or None."""
    opts = [o for o in replacement_options(detail, pool) if not mentions(context, o)]
    return _cased(rng.choice(opts), detail.value) if opts else None


def swap(text: str, value: str, new: str) -> str:
    """`text` with every occurrence of `value` (whole words, any case) replaced by `new`, case-matched, and
    an article right before it agreeing with the new word ("an adventure film" -> "a pop film")."""
    pat = re.compile(rf"(?:\b(?P<art>[Aa]n?) )?(?<![\w]){re.escape(value)}(?![\w])", re.IGNORECASE)

    def sub(m: re.Match[str]) -> str:
        word = _cased(new, m.group(0)[len(m["art"]) + 1:] if m["art"] else m.group(0))
        if not m["art"]:
            return word
        return m["art"][0] + ("n" if word[:1].lower() in "aeiou" else "") + " " + word

    return pat.sub(sub, text)


_SENTENCE = re.compile(r"(?<=[.!?])\s+(?=[A-Z\"'])")  # "Washington D.C. soon" stays one sentence
_OPENERS = re.compile(r"^(?:(?:yes|yeah|no|well|oh|ah|actually|honestly|so|um|uh|hmm|sure|okay|ok|right|in fact|"
                      r"come to think of it|now that you mention it|to be honest|you know|i mean|speaking of which|"
                      r"although|but|and)\b[,!.]?\s*)+", re.IGNORECASE)
_PERSON = {"i": "you", "me": "you", "my": "your", "mine": "yours", "myself": "yourself", "i'm": "you're",
           "i've": "you've", "i'd": "you'd", "i'll": "you'll", "am": "are", "we": "you", "us": "you",
           "our": "your", "ours": "yours", "we're": "you're", "we've": "you've", "we'll": "you'll"}
_WORD = re.compile(r"[A-Za-z']+")


def restate(text: str, value: str, new: str) -> str | None:
    """The user's sentence that holds `value`, said back to them with `new` in its place ("I live in San
    Jose" -> "you live in Fresno"): first person turned into second, leading interjections dropped."""
    sentence = next((s.strip() for s in _SENTENCE.split(text) if mentions(s, value)), None)
    if sentence is None or sentence.endswith("?"):  # a question states nothing to recall
        return None
    sentence = _OPENERS.sub("", swap(sentence, value, new)).rstrip(".!").strip()

    def flip(m: re.Match[str]) -> str:
        w = m.group(0)
        return _PERSON.get(w.lower(), w) if w != new else w

    sentence = _WORD.sub(flip, sentence)
    first = _WORD.match(sentence)
    if first and not any(mentions(first.group(0), v) for v in (new, *PLACES, *CUISINES, *WEEKDAYS, *MONTHS)):
        sentence = sentence[:1].lower() + sentence[1:]  # it now follows "you said"
    return sentence or None

