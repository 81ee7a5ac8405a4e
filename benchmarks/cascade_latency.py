"""Cascade latency: streaming (chunk-by-chunk TTS overlapped with generation) vs sequential.

Same embedded backends (Whisper tiny.en → SmolLM2-135M → Kokoro), same user turns, same greedy replies
(checked), same thread settings in both modes. Sequential is the straightforward baseline: the whole reply
is generated, then synthesized in one call. The two modes run turn by turn, alternating which goes first,
so a change in the machine's load hits both alike. Prints, per mode, the mean time to first audio, total,
playback stall and reply length, the streaming/sequential ratios, and the lower bound for the streaming
total from the sequential turns' own stage times: streaming cannot beat asr + max(llm, tts) (each stage
measured alone), nor, when both stages are CPU-bound on the same cores, asr + (llm + tts CPU seconds) /
cores. Latency goals of the cascade: first audio ≤ 1.5 s; total ≤ 0.5× sequential. The latter is out of reach by
arithmetic whatever the stage costs: asr + max(llm, tts) ≥ (asr + llm + tts) / 2 + asr / 2, so perfect
overlap gives 0.5× only with a free ASR and llm = tts exactly.

    .venv/bin/python benchmarks/cascade_latency.py [--turns 6] [--max-tokens 40] [--llm-threads N]
        [--llm-nice N] [--prefix-cache 8] [--tts-threads N] [--tts-precision int8|float32]
        [--first-chunk-words 5] [--no-merge] [--work DIR] [--llamacpp]

--llamacpp adds both modes with the LLM on llama.cpp (the `llamacpp` backend, the same SmolLM2 GGUF, same
threads and prompt-cache setting) in the same alternating loop, and prints llama.cpp / transformers ratios
of first audio and total.

Each mode has its own LLM instance, so its prompt-prefix cache (--prefix-cache, 0: off) holds only that
mode's earlier turns: turn t reuses the system prompt and the gold turns it shares with turn t-1, as in a
real run, never the other mode's identical prompt.

--work DIR keeps the synthesized user turns between runs (they take minutes to render on 2 cores).
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from spokentod.backends.base import GenParams, create
from spokentod.data import corpora
from spokentod.data.manifest import read_manifest, write_manifest
from spokentod.data.synth import synthesize_manifest
from spokentod.systems import CascadeSystem, Context
from spokentod.systems._common import SystemSettings
from spokentod.systems.sentences import ChunkPolicy


class _Clock:
    """Wraps a backend and adds up process CPU seconds spent in its calls (meaningful in sequential mode,
    where one stage runs at a time)."""

    def __init__(self, backend: Any):
        self._backend, self.cpu = backend, 0.0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._backend, name)

    def _timed(self, fn, *a, **kw):
        c = time.process_time()
        try:
            return fn(*a, **kw)
        finally:
            self.cpu += time.process_time() - c

    def chat(self, *a, **kw):
        return self._timed(self._backend.chat, *a, **kw)

    def synthesize(self, *a, **kw):
        return self._timed(self._backend.synthesize, *a, **kw)

    def transcribe(self, *a, **kw):
        return self._timed(self._backend.transcribe, *a, **kw)


def _load() -> str:
    return "/".join(f"{x:.1f}" for x in os.getloadavg())


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--turns", type=int, default=6)
    ap.add_argument("--max-tokens", type=int, default=40)
    ap.add_argument("--llm-threads", type=int, default=None, help="torch threads for SmolLM2 (default: all)")
    ap.add_argument("--llm-nice", type=int, default=0,
                    help="lower the LLM's decode priority by this much (SmolLM2 decode_nice; both modes)")
    ap.add_argument("--prefix-cache", type=int, default=8,
                    help="prompts whose keys/values the LLM keeps for reuse (0: read every prompt in full)")
    ap.add_argument("--tts-threads", type=int, default=None, help="onnxruntime threads for Kokoro (default: all)")
    ap.add_argument("--tts-precision", choices=("int8", "float32"), default="int8",
                    help="Kokoro graph: the shipped int8 one or its float32 rewrite")
    ap.add_argument("--first-chunk-words", type=int, default=ChunkPolicy().first_chunk_words,
                    help="streaming: cut the first chunk after this many words (0: whole sentences)")
    ap.add_argument("--no-merge", action="store_true", help="streaming: one TTS call per chunk")
    ap.add_argument("--work", type=Path, default=None, help="directory for the rendered user turns (reused)")
    ap.add_argument("--llamacpp", action="store_true",
                    help="also run both modes with the LLM on llama.cpp (the same SmolLM2 GGUF), side by side")
    args = ap.parse_args()

    tmp = args.work or Path(tempfile.mkdtemp(prefix="cascade_latency_"))
    tmp.mkdir(parents=True, exist_ok=True)
    dialogues = corpora.load("demo", None)[:3]
    write_manifest(tmp / "in.jsonl", dialogues)
    spoken = list(read_manifest(synthesize_manifest(tmp / "in.jsonl", tmp / "spoken", tts="kokoro")))
    items = [(d, t) for d in spoken for t in d.user_turns[1:]][: args.turns]

    asr = create("asr", {"name": "whisper-ct2"})
    llm_cfg = {"name": "smollm2", "threads": args.llm_threads, "decode_nice": args.llm_nice,
               "prefix_cache": args.prefix_cache}
    llm, llm_streaming = create("llm", llm_cfg), create("llm", llm_cfg)
    tts = create("tts", {"name": "kokoro", "threads": args.tts_threads, "precision": args.tts_precision})
    settings = SystemSettings(params=GenParams(max_tokens=args.max_tokens))
    policy = ChunkPolicy(first_chunk_words=args.first_chunk_words, merge_ready=not args.no_merge)
    clocks = {k: _Clock(b) for k, b in (("asr", asr), ("llm", llm), ("tts", tts))}
    systems = {
        "sequential": CascadeSystem(clocks["asr"], clocks["llm"], clocks["tts"], settings, streaming=False,
                                    audio_root=tmp / "spoken"),
        "streaming": CascadeSystem(asr, llm_streaming, tts, settings, streaming=True, audio_root=tmp / "spoken",
                                   chunking=policy),
    }
    if args.llamacpp:  # n_ctx differs only so that each mode gets its own server, hence its own prompt cache
        cpp = [create("llm", {"name": "llamacpp", "model": "smollm2", "threads": args.llm_threads,
                              "cache_prompt": args.prefix_cache > 0, "n_ctx": 4096 + 8 * i}) for i in range(2)]
        systems["sequential llamacpp"] = CascadeSystem(asr, cpp[0], tts, settings, streaming=False,
                                                       audio_root=tmp / "spoken")
        systems["streaming llamacpp"] = CascadeSystem(asr, cpp[1], tts, settings, streaming=True,
                                                      audio_root=tmp / "spoken", chunking=policy)
    # warm-up: load every model once (and run each mode once) so neither mode pays it; on the dialogue's
    # first user turn, which is not measured, so no measured prompt is already in a prefix cache
    d0 = spoken[0]
    t0 = d0.user_turns[0]
    for mode, sys_ in systems.items():
        sys_.warmup()
        sys_.respond(Context.gold(d0, t0.index), t0, tmp / f"warm_{mode}.wav")

    rows: dict[str, dict[str, list[float]]] = {m: {} for m in systems}
    stages: dict[str, list[float]] = {}
    texts: dict[str, list[str]] = {m: [] for m in systems}
    first_chunks: list[str] = []
    calls: list[int] = []
    loads = [_load()]
    for i, (d, t) in enumerate(items):
        order = list(systems) if i % 2 == 0 else list(reversed(systems))  # alternate who goes first
        for mode in order:
            cpu = {k: c.cpu for k, c in clocks.items()}
            r = systems[mode].respond(Context.gold(d, t.index), t, tmp / f"{mode}_{d.id}_{t.index}.wav")
            assert r.error is None, r.error
            texts[mode].append(r.text)
            for k in ("first_audio", "total", "stall", "first_chunk", "ttft", "asr"):
                rows[mode].setdefault(k, []).append(r.timings.get(k, 0.0))
            rows[mode].setdefault("audio", []).append(r.audio_seconds or 0.0)
            if mode == "sequential":
                for k in ("asr", "llm", "tts"):
                    stages.setdefault(k, []).append(r.timings[k])
                    stages.setdefault(f"{k}_cpu", []).append(clocks[k].cpu - cpu[k])
            elif mode == "streaming":
                first_chunks.append((r.extra.get("tts_chunks") or [""])[0])
                calls.append(len(r.extra.get("tts_chunks") or []))
        loads.append(_load())

    mean = statistics.mean
    print(f"{len(items)} turns, max_tokens={args.max_tokens}, llm threads {args.llm_threads or 'all'}, "
          f"llm nice {args.llm_nice}, prefix cache {args.prefix_cache}, tts threads {args.tts_threads or 'all'} ({args.tts_precision}), {os.cpu_count()} CPUs; first_chunk_words="
          f"{policy.first_chunk_words}, merge_ready={policy.merge_ready}; embedded cascade on this CPU")
    print(f"load average (1/5/15 min) during the run: {' -> '.join(loads)}")
    same = sum(a == b for a, b in zip(texts["sequential"], texts["streaming"]))
    print(f"same reply text in both modes: {same}/{len(items)} turns")
    print(f"{'mode':<21}{'first audio s':>15}{'total s':>10}{'stall s':>10}{'reply audio s':>15}")
    for mode, r in rows.items():
        print(f"{mode:<21}{mean(r['first_audio']):>15.2f}{mean(r['total']):>10.2f}{mean(r['stall']):>10.2f}"
              f"{mean(r['audio']):>15.2f}")
    if args.llamacpp:
        for mode in ("sequential", "streaming"):
            a, b = rows[f"{mode} llamacpp"], rows[mode]
            print(f"{mode}, llama.cpp / transformers: first audio {mean(a['first_audio']) / mean(b['first_audio']):.2f}x, "
                  f"total {mean(a['total']) / mean(b['total']):.2f}x; same reply text "
                  f"{sum(x == y for x, y in zip(texts[mode + ' llamacpp'], texts[mode]))}/{len(items)}")
    fs, ts = mean(rows["streaming"]["first_audio"]), mean(rows["streaming"]["total"])
    fq, tq = mean(rows["sequential"]["first_audio"]), mean(rows["sequential"]["total"])
    print(f"streaming/sequential: first audio {fs / fq:.2f}x, total {ts / tq:.2f}x")
    st = rows["streaming"]
    print(f"streaming first audio per turn: {', '.join(f'{x:.2f}' for x in st['first_audio'])} s = asr "
          f"{mean(st['asr']):.2f} + LLM to first token {mean(st['ttft']) - mean(st['asr']):.2f} + to first chunk "
          f"{mean(st['first_chunk']) - mean(st['ttft']):.2f} + its TTS "
          f"{mean(st['first_audio']) - mean(st['first_chunk']):.2f} (means); TTS calls per turn "
          f"{mean(calls):.1f}; first chunks: {' | '.join(first_chunks)}")

    asr_s, llm_s, tts_s = (mean(stages[k]) for k in ("asr", "llm", "tts"))
    print(f"sequential stages (mean s, wall / CPU): asr {asr_s:.2f} / {mean(stages['asr_cpu']):.2f}, "
          f"llm {llm_s:.2f} / {mean(stages['llm_cpu']):.2f}, tts {tts_s:.2f} / {mean(stages['tts_cpu']):.2f}")
    wall_bound = mean(a + max(l, s) for a, l, s in zip(stages["asr"], stages["llm"], stages["tts"]))
    cores = os.cpu_count() or 1
    cpu_bound = mean(a + (lc + sc) / cores for a, lc, sc in
                     zip(stages["asr"], stages["llm_cpu"], stages["tts_cpu"]))
    print(f"lower bound for streaming total = asr + max(llm, tts) = {wall_bound:.2f} s = {wall_bound / tq:.2f}x "
          f"sequential (goal 0.5x)")
    print(f"CPU-work estimate = asr + (llm + tts CPU s) / {cores} cores = {cpu_bound:.2f} s = "
          f"{cpu_bound / tq:.2f}x sequential")
    best = (asr_s + llm_s) / (asr_s + 2 * llm_s)
    print(f"TTS alone is {tts_s / tq:.2f}x sequential. No TTS speed reaches 0.5x: asr + max(llm, tts) >= "
          f"(asr + llm + tts) / 2 + asr / 2; even a TTS as fast as the LLM (tts = llm = {llm_s:.2f} s) "
          f"gives a bound of {best:.2f}x")

if __name__ == "__main__":
    main()
