"""Reading a judge's reply: the JSON object (repaired where safe, spokentod/jsonrepair.py), then each score
checked: a number in 0-100 (out of range is rejected, never clamped), true/false for presence, a known
primary failure. What cannot be read is missing with the reason, never 0."""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from typing import Any

from spokentod.jsonrepair import RepairError, extract_object, snippet

QUALITY = ("naturalness", "consistency")
FAILURES = ("generic", "topic_drift", "repetition", "misunderstanding", "memory")
SEVERITY_BANDS = {"none": (0, 0), "mild": (1, 33), "moderate": (34, 66), "severe": (67, 100)}


# The JSON Schemas of the judge's answers, sent with every judge call (GenParams.json_schema): constrained
# decoding where the backend can (llamacpp, the hf family, OpenAI-compatible servers that honour
# `response_format`). Each mirrors the form its prompt asks for, reason first so the score follows it; a
# reason is capped so a small model cannot spend max_tokens inside one string.
REASON_CHARS = 200


def _object(props: dict[str, Any], title: str | None = None) -> dict[str, Any]:
    return ({"title": title} if title else {}) | {"type": "object", "properties": props, "required": list(props),
                                                  "additionalProperties": False}


def _reason() -> dict[str, Any]:
    return {"type": "string", "maxLength": REASON_CHARS}


def _score() -> dict[str, Any]:
    return {"type": "integer", "minimum": 0, "maximum": 100}


def quality_schema(keys: tuple[str, ...] = QUALITY) -> dict[str, Any]:
    return _object({k: _object({"reason": _reason(), "score": _score()}) for k in keys}, "judge_" + "_".join(keys))


def failures_schema() -> dict[str, Any]:
    items = {f: _object({"reason": _reason(), "present": {"type": "boolean"}, "severity": _score()}) for f in FAILURES}
    return _object({**items, "primary_failure": {"type": "string", "enum": ["none", *FAILURES]}}, "judge_failures")


class ParseError(ValueError):
    """The judge's reply holds no usable JSON object; str(e) is the reason recorded as missing."""


def extract_json(text: str | None) -> tuple[dict[str, Any], list[str]]:
    """The first JSON object in a judge reply, repaired where safe; (object, repair notes)."""
    try:
        return extract_object(text, "judge reply")
    except RepairError as e:
        raise ParseError(str(e)) from None


def norm_key(k: Any) -> str:
    return re.sub(r"[^a-z]+", "_", str(k).strip().lower()).strip("_")


def _norm_keys(obj: dict[str, Any]) -> dict[str, Any]:
    out = {}
    for k, v in obj.items():
        nk = norm_key(k)
        nk = {"topicdrift": "topic_drift", "drift": "topic_drift", "primary": "primary_failure"}.get(nk, nk)
        out.setdefault(nk, v)
    return out


_NUM = re.compile(r"^\s*(-?\d+(?:\.\d+)?)\s*(?:/\s*100)?\s*%?\s*$")


def _number(value: Any, what: str) -> float:
    """A 0-100 number, or ParseError with the reason (out of range is rejected, never clamped)."""
    if isinstance(value, bool) or value is None:
        raise ParseError(f"{what} is {json.dumps(value)}, not a number")
    if isinstance(value, (int, float)):
        x = float(value)
    elif isinstance(value, str) and (m := _NUM.match(value)):
        x = float(m[1])
    else:
        raise ParseError(f"{what} is not a number: {snippet(str(value), 30)}")
    if math.isnan(x) or not 0 <= x <= 100:
        raise ParseError(f"{what} {value} is outside 0-100")
    return x


def _bool(value: Any, what: str) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, (int, float)) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in ("true", "yes", "false", "no"):
        return value.strip().lower() in ("true", "yes")
    raise ParseError(f"{what} is not true/false: {snippet(str(value), 30)}")


@dataclass
class Parsed:
    values: dict[str, float | None]
    missing: dict[str, str]
    raw: dict[str, Any]
    notes: list[str] = field(default_factory=list)
    primary: str | None = None
    repairs: list[str] = field(default_factory=list)  # what jsonrepair fixed to read the object (none: as-is)

    @property
    def status(self) -> str:
        return "repaired" if self.repairs else "as_is"


# How a judge reply was read: as-is (valid JSON, nothing around it), repaired (jsonrepair.extract_object had
# to fix something), or failed (no usable object: every value of that judgement is missing).
PARSE_STATUSES = ("as_is", "repaired", "failed")
UNPARSED = "judge reply unparsed"  # the head of a failed reply's missing reason (the report groups by it)


def parse_quality(text: str | None, keys: tuple[str, ...] = QUALITY) -> Parsed:
    """`{metric: {reason, score}}` → values per metric (a bare number is accepted as the score)."""
    obj, notes = extract_json(text)
    repairs = list(notes)
    obj = _norm_keys(obj)
    values, missing, raw = {}, {}, {}
    for k in keys:
        values[k] = None
        if k not in obj:
            missing[k] = f"judge reply has no '{k}'"
            continue
        item = obj[k]
        reason = None
        if isinstance(item, dict):
            item = _norm_keys(item)
            reason = item.get("reason")
            if "score" not in item:
                missing[k] = f"'{k}' has no score"
                raw[k] = {"reason": reason, "score": None}
                continue
            score = item["score"]
        else:
            score = item
            notes.append(f"'{k}' is a bare score without a reason")
        raw[k] = {"reason": reason, "score": score}
        try:
            values[k] = _number(score, f"{k} score")
        except ParseError as e:
            missing[k] = str(e)
    return Parsed(values, missing, raw, notes, repairs=repairs)


def parse_failures(text: str | None) -> Parsed:
    """The failure taxonomy → fail_<name>_severity and fail_<name>_present (1/0) plus the primary failure."""
    obj, notes = extract_json(text)
    repairs = list(notes)
    obj = _norm_keys(obj)
    values, missing, raw = {}, {}, {}
    for f in FAILURES:
        sev, pres = f"fail_{f}_severity", f"fail_{f}_present"
        values[sev] = values[pres] = None
        item = obj.get(f)
        if not isinstance(item, dict):
            why = f"judge reply has no '{f}'" if item is None else f"'{f}' is not an object"
            missing[sev] = missing[pres] = why
            continue
        item = _norm_keys(item)
        raw[f] = {"present": item.get("present"), "severity": item.get("severity"), "reason": item.get("reason")}
        for name, key, conv in ((sev, "severity", _number), (pres, "present", _bool)):
            if key not in item:
                missing[name] = f"'{f}' has no {key}"
                continue
            try:
                values[name] = float(conv(item[key], f"{f} {key}"))
            except ParseError as e:
                missing[name] = str(e)
        if values[pres] is not None and values[sev] is not None and bool(values[pres]) != (values[sev] > 0):
            notes.append(f"{f}: present={bool(values[pres])} but severity={values[sev]:g} (kept as given)")
    primary = obj.get("primary_failure")
    prim = norm_key(primary) if isinstance(primary, str) else None
    prim = {"topicdrift": "topic_drift", "": "none", "no_failure": "none", "null": "none"}.get(prim, prim)
    if prim in (*FAILURES, "none"):
        raw["primary_failure"] = prim
    else:
        raw["primary_failure"] = None
        missing["primary_failure"] = ("judge reply has no 'primary_failure'" if primary is None else
                                      f"primary_failure {snippet(str(primary), 30)} is not a known failure")
        prim = None
    return Parsed(values, missing, raw, notes, prim, repairs)
