"""LLM judge: naturalness and consistency (0-100), the failure taxonomy, and an audio judge of voice
consistency, each from a versioned prompt file in metrics/prompts (its sha256 goes into the cache key
and summary.json).

The judge reads the gold history up to the user turn and the agent reply as the *standardized
transcript* (every spoken system heard through the same ASR), so ASR errors are identical across systems.

Protocol: any LLM backend (`create("llm", cfg)`), temperature 0, calls cached through backends/cache.py,
optional repeats (mean, spread and n per score). Output parsing repairs what is safe to repair
(spokentod/jsonrepair.py: the first JSON object, out of prose or code fences, trailing commas,
Python-style quoting, a truncated object's complete members) and rejects the rest with a precise reason;
a score outside 0-100 is rejected (not clamped: a judge that says 150 did not follow the scale); a missing
key is missing. A failed call or unparseable reply is *missing with a reason* and never 0 (the reference
implementation scored failures 0 and averaged them in, which drags means down by how often the judge
failed rather than by how bad the replies were).

Probability-weighted scores: backends that give token log-probabilities are asked for them
(`GenParams(logprobs=True, top_logprobs=20)`): OpenAI-compatible servers (vLLM, OpenAI, llama.cpp server,
`spokentod serve` over an hf-family model) and in-process `hf` models (`supports_logprobs`). When a score
was generated as a single token, the score becomes the expectation over the top alternatives at that
position that are numbers in range (G-Eval), renormalized, if they carry at least half the probability
mass; the sampled (argmax at temperature 0) score is kept beside it in the judge block (`sampled`,
`weighted`, `score_source`). A number that is not one token of its own, and a one-digit number from a
tokenizer that spells numbers digit by digit (its alternatives "1".."9" may be the first digit of 10..100:
no number token of two or more digits anywhere in the reply's log-probabilities), keep the sampled score,
with a note. A backend that gives none (servers that ignore the request, scripted backends) gets the
sampled score. The embedded smollm2/gemma3-270m wrappers do not ask by default (`logprobs="auto"`): their
tokenizers spell numbers digit by digit, so weighting could not apply; logprobs=True asks anyway.

Weak judges (sub-1B models such as the embedded SmolLM2) are flagged in every record and in summary.json
so the report can say that their numbers are for smoke tests only.
"""

from __future__ import annotations

import base64
import json
import math
import re
import statistics
import string
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from spokentod.jsonrepair import RepairError, extract_object, snippet
from spokentod.metrics.registry import MetricGroup, MetricResult, Missing, Output, ScoredReply, register
from spokentod.prompt_file import PromptFile

PROMPTS = Path(__file__).parent / "prompts"
QUALITY = ("naturalness", "consistency")
FAILURES = ("generic", "topic_drift", "repetition", "misunderstanding", "memory")
SEVERITY_BANDS = {"none": (0, 0), "mild": (1, 33), "moderate": (34, 66), "severe": (67, 100)}
WEAK_BACKENDS = {"smollm2": "SmolLM2-135M", "gemma3-270m": "Gemma-3-270M"}
_SMALL_MODEL = re.compile(r"(?<![\d.])(\d{2,3}m|0\.\d+b)\b", re.IGNORECASE)  # 135m, 360m, 0.5b...


# ---------------------------------------------------------------- prompts


@dataclass(frozen=True)
class JudgePrompt(PromptFile):
    def render(self, **fields: Any) -> str:
        # string.Template ($name) because the prompts contain JSON braces; substitution is one pass, so a
        # '$' inside the dialogue text is left alone.
        return string.Template(self.template).substitute({k: str(v) for k, v in fields.items()}).strip()


def load_judge_prompt(name_or_path: str) -> JudgePrompt:
    return JudgePrompt.load(name_or_path, PROMPTS, "judge prompt")


DEFAULT_PROMPTS = {"quality": "judge_quality_v1", "failures": "judge_failures_v1", "voice": "judge_voice_v1"}


def format_history(turns: list[Any]) -> str:
    from spokentod.data.schema import Speaker

    return "\n".join(f"{'User' if t.speaker == Speaker.user else 'Agent'}: {t.text.strip()}" for t in turns)


def topic_of(dialogue: Any) -> str:
    intent = getattr(dialogue, "intent", None)
    if intent is None:
        return "a service the user may need"
    return (intent.description or intent.type).rstrip(".")


# ---------------------------------------------------------------- parsing with repair


class ParseError(ValueError):
    """The judge's reply holds no usable JSON object; str(e) is the reason recorded as missing."""


def extract_json(text: str | None) -> tuple[dict[str, Any], list[str]]:
    """The first JSON object in a judge reply, repaired where safe; (object, repair notes)."""
    try:
        return extract_object(text, "judge reply")
    except RepairError as e:
        raise ParseError(str(e)) from None


def _key(k: Any) -> str:
    return re.sub(r"[^a-z]+", "_", str(k).strip().lower()).strip("_")


def _norm_keys(obj: dict[str, Any]) -> dict[str, Any]:
    out = {}
    for k, v in obj.items():
        nk = _key(k)
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


def parse_quality(text: str | None, keys: tuple[str, ...] = QUALITY) -> Parsed:
    """`{metric: {reason, score}}` → values per metric (a bare number is accepted as the score)."""
    obj, notes = extract_json(text)
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
    return Parsed(values, missing, raw, notes)


def parse_failures(text: str | None) -> Parsed:
    """The failure taxonomy → fail_<name>_severity and fail_<name>_present (1/0) plus the primary failure."""
    obj, notes = extract_json(text)
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
    prim = _key(primary) if isinstance(primary, str) else None
    prim = {"topicdrift": "topic_drift", "": "none", "no_failure": "none", "null": "none"}.get(prim, prim)
    if prim in (*FAILURES, "none"):
        raw["primary_failure"] = prim
    else:
        raw["primary_failure"] = None
        missing["primary_failure"] = ("judge reply has no 'primary_failure'" if primary is None else
                                      f"primary_failure {snippet(str(primary), 30)} is not a known failure")
        prim = None
    return Parsed(values, missing, raw, notes, prim)


# ---------------------------------------------------------------- log-probability weighting

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
        key, num_at, num = _key(m["key"]), m.start("num"), m["num"]
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


def _unwrap(backend: Any) -> Any:
    while getattr(type(backend), "__getattr__", None) and "backend" in getattr(backend, "__dict__", {}):
        backend = backend.__dict__["backend"]
    return backend


def offers_logprobs(backend: Any) -> bool:
    """The OpenAI-compatible chat backend (the server decides; null there means sampled scores) and
    in-process backends that declare `supports_logprobs` (hf)."""
    b = _unwrap(backend)
    return (hasattr(b, "http") and hasattr(b, "_payload")) or getattr(b, "supports_logprobs", False) is True


# ---------------------------------------------------------------- the judge


def weakness(backend: Any) -> str | None:
    ident = backend.identity() if hasattr(backend, "identity") else {}
    name = ident.get("name") or getattr(backend, "name", "")
    if name in WEAK_BACKENDS:
        return f"{WEAK_BACKENDS[name]} is far too small to judge dialogue: use it for smoke tests only"
    model = " ".join(str(ident.get(k) or "") for k in ("model", "model_ref", "repo_id"))
    if _SMALL_MODEL.search(model):
        return f"{model.strip()} looks like a sub-1B model: too weak to trust as a judge"
    return None


class Judge:
    def __init__(self, backend: Any, cache: Any = None, max_tokens: int = 400, repeats: int = 1,
                 temperature: float = 0.0, logprobs: bool | str = "auto", prompts: dict[str, str] | None = None,
                 weak: bool | None = None):
        from spokentod.backends.cache import cached

        self.raw_backend = backend
        self.backend = cached(backend, cache) if cache is not None and getattr(cache, "enabled", False) else backend
        self.cache = cache
        self.max_tokens, self.repeats, self.temperature = int(max_tokens), max(1, int(repeats)), float(temperature)
        self.logprobs = offers_logprobs(backend) if logprobs == "auto" else bool(logprobs)
        self.prompts = {k: load_judge_prompt(v) for k, v in {**DEFAULT_PROMPTS, **(prompts or {})}.items()}
        why = weakness(backend)
        self.weak_reason = why if weak is None else (why or "marked weak by configuration") if weak else None
        self.calls = 0

    def identity(self) -> dict[str, Any]:
        ident = self.raw_backend.identity() if hasattr(self.raw_backend, "identity") else {"class": repr(self.raw_backend)}
        return {"backend": ident, "max_tokens": self.max_tokens, "repeats": self.repeats,
                "temperature": self.temperature, "logprobs": self.logprobs}

    def describe(self) -> dict[str, Any]:
        return {**self.identity(), "weak": self.weak_reason is not None, "weak_reason": self.weak_reason,
                "prompts": {k: {"name": p.name, "sha256": p.sha256} for k, p in self.prompts.items()},
                "logprobs_note": ("scores are probability-weighted where a score was one token with numbers holding "
                                  "at least half the probability, else sampled (each record's score_source)"
                                  if self.logprobs else "backend offers no token log-probabilities: sampled scores")}

    def prompt_hash(self, kind: str) -> str:
        return self.prompts[kind].sha256

    # ------------------------------------------------------------ calls

    def _params(self, i: int) -> Any:
        from spokentod.backends.base import GenParams

        return GenParams(max_tokens=self.max_tokens, temperature=self.temperature, seed=i)

    def _call(self, messages: list[dict[str, Any]], i: int) -> tuple[str, list | None]:
        self.calls += 1
        if not self.logprobs:
            return self.backend.chat(messages, self._params(i)).text, None
        return self._chat_logprobs(messages, self._params(i))

    def _chat_logprobs(self, messages: list[dict[str, Any]], params: Any) -> tuple[str, list | None]:
        """One chat with logprobs=true on the backend itself: (text, `logprobs.content` or None when the
        backend gave none). Cached here, not by the backend's cache wrapper, which keeps text only."""
        from dataclasses import replace

        from spokentod.backends.cache import make_key

        b = _unwrap(self.raw_backend)
        key = None
        if self.cache is not None and getattr(self.cache, "enabled", False):
            key = make_key(b.identity(), "llm.chat_logprobs", messages, params.as_dict())
            if (hit := self.cache.get(key, "llm.chat_logprobs")) is not None:
                return hit[0]["text"], hit[0]["logprobs"]
        out = b.chat(messages, replace(params, logprobs=True, top_logprobs=TOP_LOGPROBS))
        text, content = out.text or "", out.logprobs
        if key is not None:
            self.cache.put(key, "llm.chat_logprobs", getattr(b, "name", "llm"), {"text": text, "logprobs": content})
        return text, content

    def ask(self, kind: str, parse: Any, **fields: Any) -> list[tuple[str, Any, dict | None]]:
        """Run the prompt `repeats` times: [(raw text, Parsed or the failure reason, weighted scores)].
        Raises Missing (not cacheable) when every call failed."""
        from spokentod.backends.retry import safe_call

        messages = [{"role": "user", "content": self.prompts[kind].render(**fields)}]
        out, errors = [], []
        for i in range(self.repeats):
            got = safe_call(self._call, messages, i)
            if not got.ok:
                errors.append(f"judge call failed: {got.reason()}")
                continue
            text, lp = got.value
            try:
                parsed = parse(text)
            except ParseError as e:
                out.append((text, str(e), None))
                continue
            weighted = None
            if self.logprobs:
                w, notes = weighted_scores(text, lp)
                parsed.notes += notes
                weighted = w
            out.append((text, parsed, weighted))
        if not out:
            raise Missing(errors[0], cacheable=False)
        for _, parsed, _ in out[:1]:
            if errors and isinstance(parsed, Parsed):  # the other repeats count; the shortfall is recorded
                parsed.notes.append(f"{len(errors)} of {self.repeats} judge calls failed: {errors[0]}")
        return out


def combine(runs: list[tuple[str, Any, dict | None]], outputs: tuple[str, ...], weak: str | None,
            weight_key: Any = None) -> MetricResult:
    """Merge repeats: mean per output over the repeats that gave it; spread (sd) and n in the judge block."""
    parsed = [p for _, p, _ in runs if isinstance(p, Parsed)]
    failures = [p for _, p, _ in runs if isinstance(p, str)]
    per: dict[str, list[float]] = {o: [] for o in outputs}
    sampled: dict[str, list[float]] = {o: [] for o in outputs}
    weighted: dict[str, list[float]] = {o: [] for o in outputs}
    for (_, p, w) in runs:
        if not isinstance(p, Parsed):
            continue
        for o in outputs:
            v = p.values.get(o)
            if v is None:
                continue
            sampled[o].append(v)
            wk = weight_key(o) if weight_key else None
            if w and wk in w:
                weighted[o].append(w[wk])
            per[o].append(weighted[o][-1] if w and wk in w else v)
    values, missing = {}, {}
    for o in outputs:
        values[o] = statistics.fmean(per[o]) if per[o] else None
        if not per[o]:
            reasons = [p.missing[o] for p in parsed if o in p.missing] + failures
            missing[o] = reasons[0] if reasons else "judge gave no value"
    block: dict[str, Any] = {"raw": parsed[0].raw if parsed else None, "texts": [t for t, _, _ in runs],
                             "notes": sorted({n for p in parsed for n in p.notes}), "weak": weak is not None,
                             "weak_reason": weak}
    if failures:
        block["unparsed"] = failures
    if len(runs) > 1:
        block["repeats"] = {o: {"n": len(per[o]), "sd": statistics.pstdev(per[o]) if per[o] else None,
                                "values": per[o]} for o in outputs}
    if any(weighted.values()):  # the values are (partly) probability-weighted; the sampled ones kept beside
        block["score_source"] = "logprob-weighted"
        block["sampled"] = {o: statistics.fmean(v) for o, v in sampled.items() if v}
        block["weighted"] = {o: statistics.fmean(v) for o, v in weighted.items() if v}
    else:
        block["score_source"] = "sampled"
    prim = [p.primary for p in parsed if p.primary]
    if prim:
        block["primary_failure"] = Counter(prim).most_common(1)[0][0]  # majority over repeats
    return MetricResult(values, missing, block)


# ---------------------------------------------------------------- metric groups


def failure_output(failure: str, kind: str) -> Output:
    """fail_<failure>_severity (0-100) or fail_<failure>_present (a rate): also how the report shows a
    failure type it finds in a run but that is not registered here."""
    label = f"{failure.replace('_', ' ')} {kind}"
    if kind == "severity":
        return Output(f"fail_{failure}_severity", label, "failures", -1, "judge", digits=1)
    return Output(f"fail_{failure}_present", label, "failures", -1, "rate", "%", 100, 1)


def _fields(reply: ScoredReply) -> dict[str, str]:
    return {"history": format_history(reply.history()), "reply": reply.scored_text(), "topic": topic_of(reply.dialogue)}


def _require(res: Any, attr: str = "judge") -> Any:
    j = getattr(res, attr, None)
    if j is None:
        raise Missing(f"no {attr.replace('_', ' ')} configured", cacheable=False)
    return j


def _quality(reply: ScoredReply, res: Any) -> MetricResult:
    judge = _require(res)
    fields = _fields(reply)
    runs = judge.ask("quality", parse_quality, **fields)
    out = combine(runs, QUALITY, judge.weak_reason, weight_key=lambda o: o)
    block = out.judge
    raw = block.pop("raw") or {}
    out.judge = {**{k: raw.get(k) for k in QUALITY}, "quality_judge": block, "weak": block["weak"]}
    return out


def _failures(reply: ScoredReply, res: Any) -> MetricResult:
    judge = _require(res)
    runs = judge.ask("failures", parse_failures, **_fields(reply))
    outputs = tuple(f"fail_{f}_{k}" for f in FAILURES for k in ("severity", "present"))
    out = combine(runs, outputs, judge.weak_reason,
                  weight_key=lambda o: o[5:-9] if o.endswith("_severity") else None)
    block = out.judge
    raw = block.get("raw") or {}
    out.judge = {"failures": {f: raw.get(f) for f in FAILURES}, "primary_failure": block.pop("primary_failure", None),
                 "failures_judge": {k: v for k, v in block.items() if k != "raw"}, "weak": block["weak"]}
    if out.judge["primary_failure"] is None:
        out.missing.setdefault("primary_failure", "judge gave no primary failure")
    return out


def _voice(reply: ScoredReply, res: Any) -> MetricResult:
    """Audio judge (an audiolm backend): does the current reply sound like the same voice as the earlier ones?"""
    judge = _require(res, "audio_judge")
    cur = reply.audio_path
    if cur is None or not cur.is_file():
        raise Missing("no reply audio")
    clips = [p for p in reply.prior_audio if p.is_file()][-3:] + [cur]  # the last 3 earlier replies + this one
    if len(clips) < 2:
        raise Missing("no earlier spoken reply in this dialogue to compare with")
    prompt = judge.prompts["voice"]
    text = prompt.render(n_clips=len(clips))
    versioned = {"prompt": prompt.name, "prompt_sha256": prompt.sha256}  # which prompt gave this score
    parts = [{"type": "text", "text": text}] + [
        {"type": "input_audio", "input_audio": {"data": base64.b64encode(p.read_bytes()).decode(), "format": "wav"}}
        for p in clips]
    from spokentod.backends.retry import safe_call

    got = safe_call(judge.backend.respond, [{"role": "user", "content": parts}], judge._params(0))
    if not got.ok:
        raise Missing(f"audio judge call failed: {got.reason()}", cacheable=False)
    try:
        parsed = parse_quality(got.value.text, ("voice_consistency",))
    except ParseError as e:
        return MetricResult({"voice_judge": None}, {"voice_judge": str(e)},
                            {"voice": {"text": got.value.text, **versioned}})
    v = parsed.values["voice_consistency"]
    miss = {"voice_judge": parsed.missing["voice_consistency"]} if v is None else {}
    return MetricResult({"voice_judge": v}, miss, {"voice": {"raw": parsed.raw, "text": got.value.text, **versioned}})


class AudioJudge:
    """An audio-capable model (audiolm backend) with the voice prompt; cached like the text judge."""

    def __init__(self, backend: Any, cache: Any = None, max_tokens: int = 200, prompt: str | None = None):
        from spokentod.backends.cache import cached

        self.raw_backend = backend
        self.backend = cached(backend, cache) if cache is not None and getattr(cache, "enabled", False) else backend
        self.max_tokens = max_tokens
        self.prompts = {"voice": load_judge_prompt(prompt or DEFAULT_PROMPTS["voice"])}

    def _params(self, i: int) -> Any:
        from spokentod.backends.base import GenParams

        return GenParams(max_tokens=self.max_tokens, temperature=0.0, seed=i)

    def identity(self) -> dict[str, Any]:
        return {"backend": self.raw_backend.identity(), "max_tokens": self.max_tokens}

    def prompt_hash(self, kind: str = "voice") -> str:
        return self.prompts["voice"].sha256


register(MetricGroup("judge_quality", "1", (Output("naturalness", "naturalness", "judge", +1, "judge", digits=1, headline=True),
                                           Output("consistency", "consistency", "judge", +1, "judge", digits=1,
                                                  headline=True)),
                     _quality, needs=("transcript", "dialogue", "judge"),
                doc="LLM judge: naturalness and consistency 0-100"))
register(MetricGroup("judge_failures", "1", (*(failure_output(f, "severity") for f in FAILURES),
                                            *(failure_output(f, "present") for f in FAILURES)),
                     _failures, needs=("transcript", "dialogue", "judge"),
                doc="LLM judge: failure taxonomy (severity 0-100, presence)"))
register(MetricGroup("voice_judge", "1",
                     (Output("voice_judge", "voice consistency (audio judge)", "speech", +1, "judge", digits=1),), _voice, needs=("audio", "prior_audio", "audio_judge"),
                spoken_only=True, doc="audio judge: voice consistency 0-100"))
