"""Embedded speech speed: how many audio seconds Kokoro-82M and espeak-ng make per wall second on the same
10 sentences, then Whisper tiny.en on that audio (WER Whisper-normalized) for int8/float32, beam 1/5.

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/synth_speed.py [--threads N]

Model loading is excluded (one warm-up call each). `rtf` = wall / audio seconds; `cpu/audio` = process
CPU seconds (all threads) per audio second, which moves less than wall time when other jobs share the
cores: with 2 cores and nothing else running, wall rtf ≈ cpu/audio / 2 at best.
"""

from __future__ import annotations

import argparse
import os
import time

import jiwer

from spokentod.backends.base import create
from spokentod.metrics.text import normalize_for_wer

SENTENCES = [
    "Hi, I'm looking for a cheap Italian restaurant in the city centre.",
    "Could you book a table for four people at seven thirty on Friday?",
    "I need a train from Cambridge to London that leaves after nine in the morning.",
    "What is the phone number and the postcode of that hotel?",
    "Actually, I changed my mind; make it a guesthouse with free parking instead.",
    "My daughter loves museums, so we want something near the river.",
    "How much does a single ticket cost, and how long is the journey?",
    "I'd like to reserve a taxi to pick me up from the station at noon.",
    "Can you recommend a good place to watch a football match with friends?",
    "Thanks, that's all I need for today. Have a great evening!",
]


def timed(fn, items):
    w0, c0 = time.perf_counter(), time.process_time()
    out = [fn(i, x) for i, x in enumerate(items)]
    return out, time.perf_counter() - w0, time.process_time() - c0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=0, help="CPU threads for Kokoro/Whisper (0 = all cores)")
    args = ap.parse_args()
    threads = {"threads": args.threads} if args.threads else {}
    print(
        f"cpu cores: {os.cpu_count()}, load average at start: {os.getloadavg()[0]:.2f}, "
        f"{len(SENTENCES)} sentences"
    )
    results = {}
    for name, tts in (
        ("kokoro", create("tts", {"name": "kokoro", **threads})),
        ("espeak-ng", create("tts", "espeak")),
    ):
        tts.synthesize("Warm up.")
        outs, wall, cpu = timed(
            lambda i, s, t=tts: t.synthesize(s, voice=t.voices[i % len(t.voices)]), SENTENCES
        )
        results[name] = (outs, sum(o.duration for o in outs), wall, cpu)
    print(
        f"\n{'TTS':10s} {'audio s':>8s} {'wall s':>8s} {'audio s/wall s':>15s} {'rtf':>7s} {'cpu/audio':>10s}"
    )
    for name, (_, audio, wall, cpu) in results.items():
        print(
            f"{name:10s} {audio:8.1f} {wall:8.2f} {audio / wall:15.2f} {wall / audio:7.3f} {cpu / audio:10.3f}"
        )

    refs = [normalize_for_wer(s) for s in SENTENCES]
    print(
        f"\n{'Whisper tiny.en':16s} {'on':>9s} {'wall s':>7s} {'audio s/wall s':>15s} {'rtf':>6s} "
        f"{'cpu/audio':>10s} {'WER':>6s}"
    )
    runs = [("int8", 1, "kokoro"), ("float32", 1, "kokoro"), ("int8", 5, "kokoro"), ("int8", 1, "espeak-ng")]
    for ct, beam, source in runs:
        asr = create("asr", {"name": "whisper-ct2", "compute_type": ct, "beam_size": beam, **threads})
        outs, audio = results[source][:2]
        asr.transcribe(outs[0])  # warm-up (loads the model)
        hyps, wall, cpu = timed(lambda i, o, a=asr: normalize_for_wer(a.transcribe(o).text), outs)
        print(
            f"{ct + ' beam ' + str(beam):16s} {source:>9s} {wall:7.2f} {audio / wall:15.2f} {wall / audio:6.3f} "
            f"{cpu / audio:10.3f} {jiwer.wer(refs, hyps):6.3f}"
        )
    print(f"\nload average at end: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
