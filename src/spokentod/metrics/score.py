"""Scoring a run directory (`spokentod bench score DIR`): per-reply metrics for a finished (or partial) run.

Reads ``<run>/results/<system>*.jsonl`` (the last attempt of each key) and writes

    <run>/metrics/<system>.jsonl   one record per (dialogue_id, turn, seed):
        {"system", "dialogue_id", "turn", "seed", "phase", "turn_ordinal" (1-based among the dialogue's user
         turns: R1..Rn), "metrics": {name: float|null}, "missing": {name: reason},
         "judge": {"quality": {raw reasons/scores, notes, weak...}, "failures": {failure: {present, severity,
         reason}}, "primary_failure": ...}, "transcript": standardized ASR transcript (text-only systems:
         their text), "text": the generated reply text, "reply_hash"}
    <run>/metrics/summary.json     per system and metric: mean, sd, p50, p90, n, missing (+ reasons);
                                   the ASR, judge (weak flag, prompt hashes) and voice model used
    <run>/metrics/cache.sqlite     backend calls (ASR, judge) and metric results

Standardized transcription: every spoken reply is transcribed by ONE configured ASR (default Whisper
tiny.en, CTranslate2) before any text metric, so every system suffers the same ASR errors.

Caching: a metric result is stored under sha256(metric group + version + model identity + the exact
inputs it reads: reply text, audio sha256, transcript, dialogue context, earlier reply audio, timings,
judge identity and prompt sha256). Adding or re-versioning one metric recomputes only that metric;
groups not selected in a call keep their values from the previous metrics file when the reply is
unchanged. Failed replies (the system's error) are recorded with every metric missing, not scored.
"""

from __future__ import annotations

import json
import os
import statistics
import threading
import time
from collections import Counter, defaultdict
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from spokentod.atomic import atomic_write
from spokentod.backends.base import create
from spokentod.backends.cache import Cache, cached
from spokentod.backends.spec import parse_backend_spec
from spokentod.data.source import DialogueSource, load_dialogues
from spokentod.metrics.audio import describe_voice_model
from spokentod.metrics.judge import AudioJudge, Judge, judge_parse_counts
from spokentod.metrics.registry import (
    MetricGroup,
    MetricResult,
    Missing,
    ScoredReply,
    resolve,
    sha256_file,
    stable_hash,
)
from spokentod.progress import progress_bar
from spokentod.rundir.layout import METRIC_CACHE, METRICS, SUMMARY, metrics_name
from spokentod.rundir.records import MetricRecord
from spokentod.rundir.scan import RunDir
from spokentod.rundir.store import final_records, write_json_atomic

DEFAULT_ASR = {"name": "whisper-ct2"}  # Whisper tiny.en (embedded, CTranslate2)
# An audio metric of a reply that was never meant to be spoken: not applicable, and said so (the report
# groups missing values by the words before the first colon).
NOT_SPOKEN = "not applicable: text-only system (no audio)"


class ScoreError(Exception):
    pass


# ---------------------------------------------------------------- inputs


def _spec(value: Any) -> Any:
    """A backend given as a name, a JSON/YAML string or file, a dict, or an already built backend."""
    return value if value is not None and not isinstance(value, (str, os.PathLike, dict)) else \
        parse_backend_spec(value)


def _text_out(value: Any) -> Any:
    """A judge answers in text: an OpenAI-compatible audio client must not ask for audio back (the server
    would answer text only and every judgement would come back missing)."""
    spec = _spec(value)
    if isinstance(spec, dict) and spec.get("name") == "openai":
        return {"audio_out": False} | spec
    return spec


def _build(kind: str, value: Any) -> Any:
    spec = _spec(value)
    return create(kind, spec) if isinstance(spec, dict) else spec


def _load_dialogues(meta: dict[str, Any]) -> tuple[dict[str, Any], str | None]:
    """The run's dialogues (from run.json's config), or ({}, why not)."""
    try:
        dialogues, _ = load_dialogues(DialogueSource.model_validate(meta["config"]["dataset"]))
        return {d.id: d for d in dialogues}, None
    except Exception as e:  # noqa: BLE001 - context metrics become missing with this reason
        return {}, f"cannot load the run's dialogues: {type(e).__name__}: {e}"


class Resources:
    """What metric functions share: the judges, and a memo of audio file hashes."""

    def __init__(self, judge: Any = None, audio_judge: Any = None):
        self.judge, self.audio_judge = judge, audio_judge
        self._sha: dict[tuple[str, int, int], str] = {}

    def sha(self, path: Path | None) -> str | None:
        if path is None or not path.is_file():
            return None
        st = path.stat()
        k = (str(path), st.st_mtime_ns, st.st_size)
        if k not in self._sha:
            self._sha[k] = sha256_file(path)
        return self._sha[k]


def _context_hash(reply: ScoredReply) -> str | None:
    d = reply.dialogue
    if d is None:
        return None
    turns = [(t.speaker.value, t.text) for t in d.turns[: reply.turn + 2]]  # history, user turn, gold reply
    return stable_hash({"turns": turns, "intent": d.intent.model_dump() if d.intent else None})


def cache_key(metric: MetricGroup, reply: ScoredReply, res: Resources) -> str:
    inputs: dict[str, Any] = {"metric": metric.name, "version": metric.version}
    if metric.identity:
        inputs["model"] = metric.identity()
    for need in metric.needs:
        if need == "text":
            inputs["text"] = reply.text
        elif need == "audio":
            inputs["audio"] = res.sha(reply.audio_path)
        elif need == "transcript":
            inputs["transcript"] = [reply.transcript, reply.transcript_error]
        elif need == "dialogue":
            inputs["dialogue"] = _context_hash(reply)
        elif need == "prior_audio":
            inputs["prior_audio"] = [res.sha(p) for p in reply.prior_audio]
        elif need == "record":
            inputs["record"] = {"timings": reply.record.get("timings"), "audio_seconds": reply.record.get("audio_seconds")}
        elif need in ("judge", "audio_judge"):
            j = getattr(res, need)
            inputs[need] = None if j is None else {"identity": j.identity(),
                                                   "prompts": {k: p.sha256 for k, p in j.prompts.items()}}
    return stable_hash(inputs)


def _reply_hash(rec: dict[str, Any], res: Resources, run_dir: Path) -> str:
    audio = rec.get("audio_path")
    path = None if not audio else (Path(audio) if Path(audio).is_absolute() else run_dir / audio)
    return stable_hash({"text": rec.get("text"), "audio": res.sha(path), "error": rec.get("error")})[:16]


def spoken_systems(meta: dict[str, Any]) -> dict[str, bool]:
    """System name → whether it speaks: run.json's `speaks` (what each built system declared), else, for
    runs made before it was recorded, the type (every type but `text` speaks)."""
    declared = meta.get("speaks") if isinstance(meta.get("speaks"), dict) else {}
    systems = (meta.get("config") or {}).get("systems") or {}
    types = {n: (s or {}).get("type", "cascade") for n, s in systems.items()}
    return {n: t != "text" for n, t in types.items()} | {n: bool(v) for n, v in declared.items()}


def build_replies(run_dir: Path, finals: list[dict[str, Any]], dialogues: dict[str, Any],
                  speaks: dict[str, bool]) -> list[ScoredReply]:
    """`speaks`: system name → whether it speaks (spoken_systems); a system not named there is taken as
    spoken, and a reply with audio is spoken whatever its system declared."""
    replies: list[ScoredReply] = []
    by_dialogue: dict[tuple, list[dict]] = defaultdict(list)
    for r in finals:
        by_dialogue[(r["system"], r["dialogue_id"], int(r.get("seed", 0)))].append(r)
    for (system, did, _), recs in by_dialogue.items():
        recs.sort(key=lambda r: int(r["turn"]))
        d = dialogues.get(did)
        user_idx = [t.index for t in d.user_turns] if d is not None else sorted(int(r["turn"]) for r in recs)
        earlier: list[Path] = []
        for r in recs:
            turn = int(r["turn"])
            rep = ScoredReply(r, run_dir, d, user_idx.index(turn) + 1 if turn in user_idx else None)
            rep.spoken = bool(r.get("audio_path")) or speaks.get(system, True)
            rep.prior_audio = list(earlier)
            if not rep.spoken:
                rep.transcript = rep.text
            if rep.audio_path is not None and not r.get("error"):
                earlier.append(rep.audio_path)
            replies.append(rep)
    return replies


def transcribe(replies: list[ScoredReply], asr: Any) -> None:
    """Standardized transcription: one ASR for every spoken reply; text-only replies keep their text."""
    for rep in replies:
        rep.transcript_error = None
        if rep.record.get("error"):
            rep.transcript_error = "reply failed"
            continue
        if not rep.spoken:
            rep.transcript = rep.text
            continue
        path = rep.audio_path
        if path is None and not rep.text.strip():
            rep.transcript = ""  # an empty reply: nothing written, nothing spoken
            continue
        if path is None or not path.is_file():
            rep.transcript_error = "no reply audio to transcribe"
            continue
        try:
            rep.transcript = asr.transcribe(str(path)).text.strip()
        except Exception as e:  # noqa: BLE001
            rep.transcript_error = f"asr failed: {type(e).__name__}: {e}"


# ---------------------------------------------------------------- computing


def _all_missing(metric: MetricGroup, reason: str, cacheable: bool = True) -> MetricResult:
    return MetricResult({o: None for o in metric.outputs}, {o: reason for o in metric.outputs}, cacheable=cacheable)


_STATS_LOCK = threading.Lock()  # judge groups run in threads


def _count(stats: Counter, key: str) -> None:
    with _STATS_LOCK:
        stats[key] += 1


def compute_one(metric: MetricGroup, reply: ScoredReply, res: Resources, cache: Any, stats: Counter) -> MetricResult:
    rec = reply.record
    if rec.get("error"):
        _count(stats, f"{metric.name}:skipped")
        return _all_missing(metric, f"reply failed: {rec.get('error_reason') or rec['error']}")
    if metric.spoken_only and not reply.spoken:
        _count(stats, f"{metric.name}:skipped")
        return _all_missing(metric, NOT_SPOKEN)
    key = cache_key(metric, reply, res)
    if cache is not None and (hit := cache.get(key, f"metric.{metric.name}")) is not None:
        _count(stats, f"{metric.name}:cached")
        v = hit[0]
        return MetricResult(v["values"], v["missing"], v.get("judge") or {})
    _count(stats, f"{metric.name}:computed")
    try:
        out = metric.compute(reply, res)
    except Missing as e:
        out = _all_missing(metric, e.reason, e.cacheable)
    except Exception as e:  # noqa: BLE001 - one broken reply or model error must not stop the scoring
        out = _all_missing(metric, f"{metric.name} failed: {type(e).__name__}: {e}", cacheable=False)
    for o in metric.outputs:  # every declared output is either a number or missing with a reason
        if out.values.get(o) is None:
            out.values[o] = None
            out.missing.setdefault(o, "not computed")
    if cache is not None and out.cacheable:
        cache.put(key, f"metric.{metric.name}", "metrics", out.as_dict())
    return out


def _parallel(metric: MetricGroup, res: Resources) -> bool:
    """Judge calls to a server may run side by side; in-process models run one at a time."""
    j = res.judge if "judge" in metric.needs else res.audio_judge if "audio_judge" in metric.needs else None
    return j is not None and bool(getattr(j.raw_backend, "remote", False))


# ---------------------------------------------------------------- summary


def _pct(xs: list[float], q: float) -> float:
    s = sorted(xs)
    k = (len(s) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (k - lo)


def summarize(records: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for system, recs in records.items():
        names = sorted({n for r in recs for n in r["metrics"]})
        per: dict[str, Any] = {}
        for n in names:
            xs = [r["metrics"][n] for r in recs if r["metrics"].get(n) is not None]
            reasons = Counter(r["missing"][n] for r in recs if r["metrics"].get(n) is None and n in r["missing"])
            per[n] = {"mean": statistics.fmean(xs) if xs else None, "sd": statistics.pstdev(xs) if xs else None,
                      "p50": _pct(xs, 0.5) if xs else None, "p90": _pct(xs, 0.9) if xs else None,
                      "n": len(xs), "missing": sum(reasons.values()), "missing_reasons": dict(reasons)}
        prim = Counter((r.get("judge") or {}).get("primary_failure") for r in recs)
        prim.pop(None, None)
        out[system] = {"replies": len(recs), "errors": sum(1 for r in recs if r.get("error")),
                       "metrics": per, "primary_failure": dict(prim)}
        if parse := judge_parse_counts(recs):
            out[system]["judge_parse"] = parse
    return out


# ---------------------------------------------------------------- the entry point


def _read_old(path: Path) -> dict[tuple, dict[str, Any]]:
    if not path.is_file():
        return {}
    out = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            r = json.loads(line)
            out[(r["dialogue_id"], int(r["turn"]), int(r.get("seed", 0)))] = r
        except (ValueError, KeyError):
            continue  # a damaged old file only costs recomputation
    return out


def _write_jsonl(path: Path, records: list[dict[str, Any]]) -> None:
    atomic_write(path, "".join(json.dumps(r, ensure_ascii=False, default=str) + "\n" for r in records),
                 fsync=True)


def score_run(run_dir: str | os.PathLike, metrics: list[str] | str | None = None, judge: Any = None,
              asr: Any = None, cache: bool = True, *, audio_judge: Any = None, dialogues: list[Any] | None = None,
              judge_repeats: int | None = None, judge_max_tokens: int = 400, judge_temperature: float = 0.0,
              judge_logprobs: bool | str = "auto", judge_prompts: dict[str, str] | None = None,
              workers: int = 4, progress: bool = False) -> dict[str, Any]:
    """Score every final reply of a run; write metrics/<system>.jsonl and metrics/summary.json.

    `metrics`: group or output names (None: every group; the judge groups only when `judge` is given).
    `judge` / `audio_judge` / `asr`: a backend config dict, a name, a JSON string, or a built backend.
    Arguments left at None fall back to the bench config's `metrics:` section in run.json.
    Returns the summary (also written to summary.json) with "stats": per group computed/cached/skipped.
    """
    t0 = time.perf_counter()
    run_dir = Path(run_dir).resolve()
    run = RunDir.scan(run_dir)
    meta = run.meta()
    finals = sorted(final_records(run.records()).values(),
                    key=lambda r: (r["system"], r["dialogue_id"], int(r["turn"])))
    if not finals:
        raise ScoreError(f"{run_dir} has no results to score")

    # Defaults from the bench config's `metrics:` section (judge, asr, audio_judge, metrics, judge_repeats)
    conf = (meta.get("config") or {}).get("metrics") or {}
    metrics = metrics if metrics is not None else conf.get("metrics")
    judge = judge if judge is not None else conf.get("judge")
    asr = asr if asr is not None else conf.get("asr")
    audio_judge = audio_judge if audio_judge is not None else conf.get("audio_judge")
    judge_repeats = judge_repeats or int(conf.get("judge_repeats", 1))

    if dialogues is not None:
        dmap, derr = {d.id: d for d in dialogues}, None
    else:
        dmap, derr = _load_dialogues(meta)

    out_dir = run_dir / METRICS
    out_dir.mkdir(exist_ok=True)
    store = Cache(out_dir / METRIC_CACHE, enabled=cache)
    mcache = store if store.enabled else None
    try:
        j = None
        if judge is not None:
            j = Judge(_build("llm", judge), store, max_tokens=judge_max_tokens, repeats=judge_repeats,
                      temperature=judge_temperature, logprobs=judge_logprobs, prompts=judge_prompts)
        aj = AudioJudge(_build("audiolm", _text_out(audio_judge)), store) if audio_judge is not None else None
        res = Resources(j, aj)
        groups = resolve(metrics, with_judge=j is not None, with_audio_judge=aj is not None)
        replies = build_replies(run_dir, finals, dmap, spoken_systems(meta))

        asr_backend, transcription = None, None
        if any("transcript" in g.needs for g in groups):
            # text-only replies are their own transcript: no ASR model is loaded for a run without audio
            asr_backend = _build("asr", asr or DEFAULT_ASR) if any(r.spoken for r in replies) else None
            t_asr = time.perf_counter()
            transcribe(replies, cached(asr_backend, store) if store.enabled and asr_backend else asr_backend)
            transcription = {"replies": sum(r.spoken for r in replies), "seconds": round(time.perf_counter() - t_asr, 3)}

        stats: Counter = Counter()
        results: dict[int, dict[str, MetricResult]] = defaultdict(dict)
        with progress_bar(unit="replies", disable=not progress) as bar:
            for g in groups:
                t_g = time.perf_counter()
                task = bar.add_task(g.name, total=len(replies))

                def fn(rep: ScoredReply, g: MetricGroup = g, task: Any = task) -> MetricResult:
                    out = compute_one(g, rep, res, mcache, stats)
                    bar.advance(task)
                    return out

                if _parallel(g, res) and workers > 1:
                    with ThreadPoolExecutor(max_workers=workers) as pool:
                        outs = list(pool.map(fn, replies))
                else:
                    outs = [fn(rep) for rep in replies]
                for rep, o in zip(replies, outs):
                    results[id(rep)][g.name] = o
                stats[f"{g.name}:seconds"] = round(time.perf_counter() - t_g, 3)

        selected = {o for g in groups for o in g.outputs}
        by_system: dict[str, list[dict[str, Any]]] = defaultdict(list)
        olds: dict[str, dict[tuple, dict]] = {}
        for rep in replies:
            old_all = olds.setdefault(rep.system, _read_old(out_dir / metrics_name(rep.system)))
            rh = _reply_hash(rep.record, res, run_dir)
            old = old_all.get((rep.dialogue_id, rep.turn, rep.seed))
            rec = MetricRecord(system=rep.system, dialogue_id=rep.dialogue_id, turn=rep.turn, seed=rep.seed,
                               phase=rep.record.get("phase"), turn_ordinal=rep.turn_ordinal,
                               transcript=rep.transcript, text=rep.text, error=rep.record.get("error"),
                               reply_hash=rh)
            if old is not None and old.get("reply_hash") == rh:  # carry the groups not computed this time
                rec.metrics = {k: v for k, v in old["metrics"].items() if k not in selected}
                rec.missing = {k: v for k, v in old.get("missing", {}).items() if k not in selected}
                rec.judge = dict(old.get("judge") or {})
                if rec.transcript is None and not rep.transcript_error:
                    rec.transcript = old.get("transcript")
            for g in groups:
                o = results[id(rep)][g.name]
                rec.metrics.update(o.values)
                rec.missing.update({k: v for k, v in o.missing.items() if o.values.get(k) is None})
                rec.judge.update(o.judge)
            if rec.transcript is None and rep.transcript_error:
                rec.missing.setdefault("transcript", rep.transcript_error)
            by_system[rep.system].append(rec.to_json())
        for system, rs in by_system.items():
            _write_jsonl(out_dir / metrics_name(system), rs)

        summary = {"run": str(run_dir), "systems": summarize(by_system),
                   "metrics": {g.name: {"version": g.version, "outputs": list(g.outputs), "doc": g.doc} for g in groups},
                   "asr": asr_backend.identity() if asr_backend is not None and hasattr(asr_backend, "identity") else None,
                   "judge": j.describe() if j else None, "audio_judge": aj.identity() if aj else None,
                   "voice_model": describe_voice_model() if any(g.name == "voice_sim" for g in groups) else None,
                   "dialogues_error": derr, "wall_s": round(time.perf_counter() - t0, 3),
                   "stats": _stats(stats, groups), "transcription": transcription}
        write_json_atomic(out_dir / SUMMARY, summary)
        return summary
    finally:
        store.close()


def _stats(stats: Counter, groups: list[MetricGroup]) -> dict[str, dict[str, float]]:
    return {g.name: {k: stats.get(f"{g.name}:{k}", 0) for k in ("computed", "cached", "skipped", "seconds")}
            for g in groups}
