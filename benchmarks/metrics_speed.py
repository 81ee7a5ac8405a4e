"""Cost per reply of each metric group on this CPU, through `score_run` on a small run directory built here
(demo dialogue demo_000, N spoken replies = gold agent turns in Kokoro's voice, plus their text as a
text-only system).

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/metrics_speed.py [--replies 4] [--judge smollm2]
                                                                   [--judge-max-tokens 64]

Three passes: cold (cache off; includes model loading), warm (cache off; models loaded: the per-reply
cost), and cached (cache on, second time: what a re-score costs). Standardized transcription (Whisper
tiny.en) is reported on its own line. DNSMOS follows the official recipe (speechmos): a clip shorter than
9 s is looped to >= 9 s and scored over 1-s hops, so a 4-s reply costs ~6 model windows. TTS for building the run is cached in the user cache dir and not
timed. The judge is off unless --judge is given (SmolLM2 on 2 shared cores needs minutes per reply at
the default 400 tokens; --judge-max-tokens bounds it).
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

from spokentod.audio import write_wav
from spokentod.backends.base import create
from spokentod.backends.cache import Cache, cached
from spokentod.bench.config import parse_config
from spokentod.data import corpora
from spokentod.metrics import audio, judge_free
from spokentod.metrics.score import score_run
from spokentod.rundir.records import ResultRecord


def speak(tts, text: str, voice: str, path: Path) -> None:
    out = tts.synthesize(text, voice)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_wav(path, out.samples, out.rate)


def _record(system: str, d, turn: int, text: str, audio_path: str | None = None) -> ResultRecord:
    """A results record as the runner writes it (timings of a typical cascade / text turn)."""
    t = d.turns[turn]
    timings = ({"asr": 0.4, "ttft": 0.9, "llm": 1.1, "tts": 1.5, "first_audio": 2.0, "total": 2.7} if audio_path
               else {"llm": 1.0, "ttft": 0.3, "total": 1.0})
    return ResultRecord(system=system, dialogue_id=d.id, turn=turn, phase=t.phase.value, intent=d.intent.type,
                        context_turns=turn, user_text=t.text, text=text, user_transcript=t.text,
                        audio_path=audio_path, audio_seconds=3.0 if audio_path else None, timings=timings)


def build_run(root: Path, n: int) -> Path:
    d = corpora.load("demo", None)[0]
    cfg = parse_config({"dataset": {"corpus": "demo", "limit": 1},
                        "systems": {"cascade": {"type": "cascade", "asr": "whisper-ct2", "llm": "smollm2",
                                                "tts": "kokoro"}, "text": {"type": "text", "llm": "smollm2"}}})
    (root / "run.json").write_text(json.dumps({"config": cfg.model_dump(mode="json")}))
    users = [t.index for t in d.user_turns if t.index + 1 < len(d.turns)][:n]
    tts = cached(create("tts", {"name": "kokoro"}), Cache())  # the persistent cache: synthesis is not timed
    cascade, text = [], []
    for t in users:
        reply = d.turns[t + 1].text
        rel = f"audio_out/cascade/{d.id}/{t:03d}.wav"
        speak(tts, reply, "jf_alpha", root / rel)
        cascade.append(_record("cascade", d, t, reply, rel))
        text.append(_record("text", d, t, reply))
    (root / "results").mkdir()
    for name, recs in (("cascade", cascade), ("text", text)):
        (root / "results" / f"{name}.jsonl").write_text("".join(json.dumps(r.to_json()) + "\n" for r in recs))
    return root


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--replies", type=int, default=4)
    ap.add_argument("--judge", default=None, help="LLM backend name for the judge groups (e.g. smollm2)")
    ap.add_argument("--judge-max-tokens", type=int, default=64)
    args = ap.parse_args()
    judge = {"name": args.judge, **({"threads": 1} if args.judge == "smollm2" else {})} if args.judge else None
    with tempfile.TemporaryDirectory() as tmp:
        run = build_run(Path(tmp), args.replies)
        kw = {"judge": judge, "judge_max_tokens": args.judge_max_tokens}
        passes = {}
        for name, cache in (("cold", False), ("warm", False), ("cached", True), ("cached2", True)):
            audio._load16k.cache_clear()  # in-process memos would make "warm" look free
            audio._embedding.cache_clear()
            judge_free.embed.d.clear()
            t0 = time.perf_counter()
            passes[name] = score_run(run, cache=cache, **kw)
            passes[name]["wall"] = time.perf_counter() - t0
    print(f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}; {args.replies} spoken + "
          f"{args.replies} text replies; judge: {args.judge or 'none'}")
    print(f"{'group':<16}{'cold s/reply':>14}{'warm s/reply':>14}{'cached s/reply':>16}   replies computed")
    tx = {k: passes[k]["transcription"] for k in ("cold", "warm", "cached2")}
    print(f"{'transcription':<16}" + "".join(f"{tx[k]['seconds'] / max(1, tx[k]['replies']):>{w}.4f}"
                                             for k, w in (("cold", 14), ("warm", 14), ("cached2", 16)))
          + f"   {tx['warm']['replies']} (spoken only; cached2 = backend cache hit)")
    for g, st in passes["warm"]["stats"].items():
        n = max(1, st["computed"])
        cold = passes["cold"]["stats"][g]["seconds"] / max(1, passes["cold"]["stats"][g]["computed"])
        hit = passes["cached2"]["stats"][g]
        per_hit = hit["seconds"] / max(1, hit["cached"])
        print(f"{g:<16}{cold:>14.4f}{st['seconds'] / n:>14.4f}{per_hit:>16.4f}   {st['computed']}")
    print("whole score_run wall: " + ", ".join(f"{k} {v['wall']:.1f} s" for k, v in passes.items()))


if __name__ == "__main__":
    main()
