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

Constrained output: each call sends the JSON Schema of its prompt's answer (judge_parse.quality_schema /
failures_schema; GenParams.json_schema), which llamacpp and the hf family decode under and OpenAI-compatible
servers get as `response_format`, so even a small local model answers in a form that parses. Every reply
still goes through the lenient parser (a backend may ignore the schema; max_tokens may cut it), and each
judgement records how it read (`parse`: as_is | repaired | failed). A custom prompt must ask for the same
form. Parseable is not trustworthy: SmolLM2 answers in the schema and says little (README measurements).

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
import hashlib
import json
import re
import statistics
import string
from collections import Counter
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from spokentod.backends.base import GenParams
from spokentod.backends.cache import cached, make_key
from spokentod.backends.retry import safe_call
from spokentod.data.schema import Speaker
from spokentod.metrics.judge_logprobs import TOP_LOGPROBS, offers_logprobs, unwrap, weighted_scores
from spokentod.metrics.judge_parse import (
    FAILURES,
    PARSE_STATUSES,
    QUALITY,
    UNPARSED,
    Parsed,
    ParseError,
    failures_schema,
    parse_failures,
    parse_quality,
    quality_schema,
)
from spokentod.metrics.registry import MetricGroup, MetricResult, Missing, Output, ScoredReply, register
from spokentod.prompt_file import PromptFile

PROMPTS = Path(__file__).parent / "prompts"
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
# The answer's JSON Schema per prompt kind: sent with every call (GenParams.json_schema), see judge_parse.
SCHEMAS = {"quality": quality_schema(), "failures": failures_schema(), "voice": quality_schema(("voice_consistency",))}
SCHEMAS_SHA = hashlib.sha256(json.dumps(SCHEMAS).encode()).hexdigest()[:16]  # key order matters: no sort


def format_history(turns: list[Any]) -> str:
    return "\n".join(f"{'User' if t.speaker == Speaker.user else 'Agent'}: {t.text.strip()}" for t in turns)


def topic_of(dialogue: Any) -> str:
    intent = getattr(dialogue, "intent", None)
    if intent is None:
        return "a service the user may need"
    return (intent.description or intent.type).rstrip(".")


# ---------------------------------------------------------------- the judge


def weakness(backend: Any) -> str | None:
    ident = backend.identity() if hasattr(backend, "identity") else {}
    name = ident.get("name") or getattr(backend, "name", "")
    if name in WEAK_BACKENDS:
        return f"{WEAK_BACKENDS[name]} is far too small to judge dialogue: use it for smoke tests only"
    model = " ".join(str(ident.get(k) or "") for k in ("model", "model_ref", "repo_id", "gguf"))  # gguf: llamacpp
    if _SMALL_MODEL.search(model):
        return f"{model.strip()} looks like a sub-1B model: too weak to trust as a judge"
    return None


class Judge:
    def __init__(self, backend: Any, cache: Any = None, max_tokens: int = 400, repeats: int = 1,
                 temperature: float = 0.0, logprobs: bool | str = "auto", prompts: dict[str, str] | None = None,
                 weak: bool | None = None, constrain: bool = True):
        """`constrain`: send each prompt's JSON Schema (constrained decoding where the backend can)."""
        self.raw_backend = backend
        self.backend = cached(backend, cache) if cache is not None and getattr(cache, "enabled", False) else backend
        self.cache = cache
        self.max_tokens, self.repeats, self.temperature = int(max_tokens), max(1, int(repeats)), float(temperature)
        self.logprobs = offers_logprobs(backend) if logprobs == "auto" else bool(logprobs)
        self.prompts = {k: load_judge_prompt(v) for k, v in {**DEFAULT_PROMPTS, **(prompts or {})}.items()}
        why = weakness(backend)
        self.weak_reason = why if weak is None else (why or "marked weak by configuration") if weak else None
        self.constrain = bool(constrain)
        self.calls = 0

    def identity(self) -> dict[str, Any]:
        ident = self.raw_backend.identity() if hasattr(self.raw_backend, "identity") else {"class": repr(self.raw_backend)}
        return {"backend": ident, "max_tokens": self.max_tokens, "repeats": self.repeats,
                "temperature": self.temperature, "logprobs": self.logprobs} | (
                    {"json_schema": SCHEMAS_SHA} if self.constrain else {})

    def describe(self) -> dict[str, Any]:
        return {**self.identity(), "weak": self.weak_reason is not None, "weak_reason": self.weak_reason,
                "prompts": {k: {"name": p.name, "sha256": p.sha256} for k, p in self.prompts.items()},
                "logprobs_note": ("scores are probability-weighted where a score was one token with numbers holding "
                                  "at least half the probability, else sampled (each record's score_source)"
                                  if self.logprobs else "backend offers no token log-probabilities: sampled scores"),
                "json_schema_note": ("each answer's JSON Schema is sent with every call: constrained decoding on "
                                     "llamacpp and hf-family backends, `response_format` to OpenAI-compatible "
                                     "servers (which may ignore it); each record's `parse` says how its replies read"
                                     if self.constrain else "no JSON Schema sent: replies parsed leniently")}

    def prompt_hash(self, kind: str) -> str:
        return self.prompts[kind].sha256

    # ------------------------------------------------------------ calls

    def _params(self, i: int, kind: str | None = None) -> Any:
        schema = SCHEMAS.get(kind) if self.constrain and kind else None
        return GenParams(max_tokens=self.max_tokens, temperature=self.temperature, seed=i, json_schema=schema)

    def _call(self, messages: list[dict[str, Any]], i: int, kind: str | None = None) -> tuple[str, list | None]:
        self.calls += 1
        if not self.logprobs:
            return self.backend.chat(messages, self._params(i, kind)).text, None
        return self._chat_logprobs(messages, self._params(i, kind))

    def _chat_logprobs(self, messages: list[dict[str, Any]], params: Any) -> tuple[str, list | None]:
        """One chat with logprobs=true on the backend itself: (text, `logprobs.content` or None when the
        backend gave none). Cached here, not by the backend's cache wrapper, which keeps text only."""
        b = unwrap(self.raw_backend)
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
        messages = [{"role": "user", "content": self.prompts[kind].render(**fields)}]
        out, errors = [], []
        for i in range(self.repeats):
            got = safe_call(self._call, messages, i, kind)
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
            reasons = [p.missing[o] for p in parsed if o in p.missing] + [f"{UNPARSED}: {f}" for f in failures]
            missing[o] = reasons[0] if reasons else "judge gave no value"
    block: dict[str, Any] = {"raw": parsed[0].raw if parsed else None, "texts": [t for t, _, _ in runs],
                             "notes": sorted({n for p in parsed for n in p.notes}), "weak": weak is not None,
                             "weak_reason": weak,
                             # per repeat: as_is | repaired | failed (judge_parse.PARSE_STATUSES)
                             "parse": [p.status if isinstance(p, Parsed) else "failed" for _, p, _ in runs]}
    if repairs := sorted({r for p in parsed for r in p.repairs}):
        block["repairs"] = repairs
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


_PARSE_BLOCKS = {"quality": "quality_judge", "failures": "failures_judge", "voice": "voice"}


def judge_parse_counts(recs: list[dict[str, Any]]) -> dict[str, dict[str, int]]:
    """Per judge prompt, over metric records: how many judge replies (every repeat counts) parsed as-is,
    needed repair, or failed (summary.json's `judge_parse`, the report's judge replies table)."""
    out: dict[str, dict[str, int]] = {}
    for kind, block in _PARSE_BLOCKS.items():
        c = Counter(st for r in recs for st in (((r.get("judge") or {}).get(block) or {}).get("parse") or []))
        if c:
            out[kind] = {st: c.get(st, 0) for st in PARSE_STATUSES}
    return out


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
    got = safe_call(judge.backend.respond, [{"role": "user", "content": parts}], judge._params(0))
    if not got.ok:
        raise Missing(f"audio judge call failed: {got.reason()}", cacheable=False)
    try:
        parsed = parse_quality(got.value.text, ("voice_consistency",))
    except ParseError as e:
        return MetricResult({"voice_judge": None}, {"voice_judge": f"{UNPARSED}: {e}"},
                            {"voice": {"text": got.value.text, "parse": ["failed"], **versioned}})
    v = parsed.values["voice_consistency"]
    miss = {"voice_judge": parsed.missing["voice_consistency"]} if v is None else {}
    return MetricResult({"voice_judge": v}, miss, {"voice": {"raw": parsed.raw, "text": got.value.text,
                                                             "parse": [parsed.status], **versioned}})


class AudioJudge:
    """An audio-capable model (audiolm backend) with the voice prompt; cached like the text judge."""

    def __init__(self, backend: Any, cache: Any = None, max_tokens: int = 200, prompt: str | None = None):
        self.raw_backend = backend
        self.backend = cached(backend, cache) if cache is not None and getattr(cache, "enabled", False) else backend
        self.max_tokens = max_tokens
        self.prompts = {"voice": load_judge_prompt(prompt or DEFAULT_PROMPTS["voice"])}

    def _params(self, i: int) -> Any:
        return GenParams(max_tokens=self.max_tokens, temperature=0.0, seed=i, json_schema=SCHEMAS["voice"])

    def identity(self) -> dict[str, Any]:
        return {"backend": self.raw_backend.identity(), "max_tokens": self.max_tokens, "json_schema": SCHEMAS_SHA}

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
