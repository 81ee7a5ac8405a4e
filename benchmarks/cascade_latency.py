"""Cascade latency: streaming (sentence-by-sentence TTS overlapped with generation) vs sequential.

Same embedded backends (Whisper tiny.en → SmolLM2-135M → Kokoro), same user turns, same greedy
replies. Prints time to first audio and total per mode, and the ratios.

    .venv/bin/python benchmarks/cascade_latency.py [--turns 6] [--max-tokens 40]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path

from spokentod.backends.base import create
from spokentod.data import corpora
from spokentod.data.manifest import read_manifest, write_manifest
from spokentod.data.synth import synthesize_manifest
from spokentod.systems import CascadeSystem, Context
from spokentod.systems._common import SystemSettings
from spokentod.backends.base import GenParams


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--turns", type=int, default=6)
    ap.add_argument("--max-tokens", type=int, default=40)
    ap.add_argument("--llm-threads", type=int, default=None, help="torch threads for SmolLM2 (default: all)")
    ap.add_argument("--tts-threads", type=int, default=None, help="onnxruntime threads for Kokoro (default: all)")
    args = ap.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="cascade_latency_"))
    dialogues = corpora.load("demo", None)[:3]
    write_manifest(tmp / "in.jsonl", dialogues)
    spoken = list(read_manifest(synthesize_manifest(tmp / "in.jsonl", tmp / "spoken", tts="kokoro")))
    items = [(d, t) for d in spoken for t in d.user_turns[1:]][: args.turns]

    asr, llm, tts = create("asr", {"name": "whisper-ct2"}), create("llm", {"name": "smollm2", "threads": args.llm_threads}), \
        create("tts", {"name": "kokoro", "threads": args.tts_threads})
    settings = SystemSettings(params=GenParams(max_tokens=args.max_tokens))
    # warm-up: load every model once so neither mode pays it
    d0, t0 = items[0]
    CascadeSystem(asr, llm, tts, settings, streaming=False, audio_root=tmp / "spoken").respond(
        Context.gold(d0, t0.index), t0, tmp / "warm.wav")

    rows = {}
    for mode in ("sequential", "streaming"):
        sys_ = CascadeSystem(asr, llm, tts, settings, streaming=mode == "streaming", audio_root=tmp / "spoken")
        first, total, audio = [], [], []
        for d, t in items:
            r = sys_.respond(Context.gold(d, t.index), t, tmp / f"{mode}_{d.id}_{t.index}.wav")
            assert r.error is None, r.error
            first.append(r.timings["first_audio"])
            total.append(r.timings["total"])
            audio.append(r.audio_seconds or 0.0)
        rows[mode] = (statistics.mean(first), statistics.mean(total), statistics.mean(audio))

    print(f"{len(items)} turns, max_tokens={args.max_tokens}, llm threads {args.llm_threads or 'all'}, "
          f"tts threads {args.tts_threads or 'all'}; embedded cascade on this CPU")
    print(f"{'mode':<12}{'first audio s':>15}{'total s':>10}{'reply audio s':>15}")
    for mode, (f, t, a) in rows.items():
        print(f"{mode:<12}{f:>15.2f}{t:>10.2f}{a:>15.2f}")
    (fs, ts, _), (fq, tq, _) = rows["streaming"], rows["sequential"]
    print(f"streaming/sequential: first audio {fs / fq:.2f}x, total {ts / tq:.2f}x")


if __name__ == "__main__":
    main()
