"""Probability-weighted judge scores: where a score was generated as one token, the expectation over the
numbers among that position's top alternatives (G-Eval), renormalized, if they carry at least half the
probability mass; otherwise the sampled score stands, with a note saying why (see metrics/judge.py)."""

from __future__ import annotations

import math
import re
from typing import Any

from spokentod.metrics.judge_parse import norm_key

TOP_LOGPROBS = 20  # alternatives asked for per token (OpenAI's maximum)
# "key": {... "score"|"severity": N} or a bare "key": N (parse_quality accepts bare scores too)
_SCORE_AT = re.compile(r'"(?P<key>[A-Za-z_ -]+)"\s*:\s*(?:\{[^{}]*?"(?:score|severity)"\s*:\s*)?'
                       r'(?P<num>\d+)(?P<frac>\.\d+)?')


def _is_number_token(token: str) -> bool:
    t = token.strip()
    return t.isdigit() and t.isascii()


def score_expectation(entry: dict[str, Any]) -> tuple[float | None, float]:
    """(expected number, probability mass of the numbers) over the number tokens in 0-100 among one
    position's `top_logprobs` (the sampled token alone when there are none); (None, 0.0) without numbers."""
    alts = entry.get("top_logprobs") or [{"token": entry.get("token", ""), "logprob": entry.get("logprob", 0.0)}]
    mass = total = 0.0
    for a in alts:
        tok = str(a.get("token", ""))
        if _is_number_token(tok) and 0 <= int(tok) <= 100:
            p = math.exp(float(a.get("logprob", -1e9)))
            mass, total = mass + p, total + p * int(tok)
    return (total / mass if mass > 0 else None), mass


def weighted_scores(text: str, content: list[dict[str, Any]] | None) -> tuple[dict[str, float], list[str]]:
    """Expected value of each score/severity from OpenAI-style `logprobs.content`
    ([{token, logprob, top_logprobs: [{token, logprob}]}]); {metric key: value} and notes."""
    notes: list[str] = []
    if not content:
        return {}, ["no log-probabilities returned"]
    if not text.strip():
        return {}, []
    tokens = [str(c.get("token", "")) for c in content]
    joined = "".join(tokens)
    # The tokens may run past the text (a stop string cut it) or start with whitespace a server stripped.
    off = joined.find(text) if text else -1
    if off < 0 or joined[:off].strip():
        return {}, ["log-probability tokens do not line up with the text"]
    starts, pos = [], -off
    for t in tokens:
        starts.append(pos)
        pos += len(t)
    multi_digit = any(_is_number_token(t) and len(t.strip()) > 1
                      for c in content for t in [c.get("token", "")] + [str(a.get("token", ""))
                                                                         for a in c.get("top_logprobs") or []])
    out: dict[str, float] = {}
    for m in _SCORE_AT.finditer(text):
        key, num_at, num = norm_key(m["key"]), m.start("num"), m["num"]
        if m["frac"]:
            notes.append(f"{key}: {num}{m['frac']} is not a whole number; sampled score kept")
            continue
        k = max(i for i, s in enumerate(starts) if s <= num_at)
        if tokens[k].strip() != num:
            notes.append(f"{key}: the number is not one token of its own; sampled score kept")
            continue
        if len(num) == 1 and not multi_digit:
            notes.append(f"{key}: the tokenizer seems to spell numbers digit by digit (no number token of two or "
                         "more digits in the log-probabilities), so another digit here may start a longer "
                         "number; sampled score kept")
            continue
        value, mass = score_expectation(content[k])
        if value is None or mass < 0.5:
            notes.append(f"{key}: numbers hold only {mass:.2f} of the probability; sampled score kept")
            continue
        out[key] = value
    return out, notes


def unwrap(backend: Any) -> Any:
    """The backend under any wrappers (limits, cache) that keep it as `.backend`."""
    while getattr(type(backend), "__getattr__", None) and "backend" in getattr(backend, "__dict__", {}):
        backend = backend.__dict__["backend"]
    return backend


def offers_logprobs(backend: Any) -> bool:
    """The OpenAI-compatible chat backend (the server decides; null there means sampled scores) and
    in-process backends that declare `supports_logprobs` (hf)."""
    b = unwrap(backend)
    return (hasattr(b, "http") and hasattr(b, "_payload")) or getattr(b, "supports_logprobs", False) is True
