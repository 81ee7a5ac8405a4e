"""Embedded speech speed: TTS real-time factor (audio seconds per wall second, higher is faster) of
Kokoro-82M and espeak-ng on the same 10 sentences, then Whisper tiny.en on that audio (with its WER,
Whisper-normalized) for int8/float32 and beam 1/5.

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/synth_speed.py [--threads N]

Model loading is excluded (one warm-up call each); every number is the sum over the 10 sentences.
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


def tts_speed(tts, voices):
    tts.synthesize("Warm up.", voice=voices[0])
    outs, wall = [], 0.0
    for i, s in enumerate(SENTENCES):
        out = tts.synthesize(s, voice=voices[i % len(voices)])
        wall += out.timings.wall
        outs.append(out)
    return outs, sum(o.duration for o in outs), wall


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=0, help="CPU threads for Kokoro/Whisper (0 = all cores)")
    args = ap.parse_args()
    print(f"cpu cores: {os.cpu_count()}, load average: {os.getloadavg()[0]:.2f}, {len(SENTENCES)} sentences")
    kokoro = create("tts", {"name": "kokoro", **({"threads": args.threads} if args.threads else {})})
    espeak = create("tts", "espeak")
    results = {}
    for name, tts in (("kokoro", kokoro), ("espeak-ng", espeak)):
        results[name] = tts_speed(tts, tts.voices)
    print(f"\n{'TTS':10s} {'audio s':>8s} {'wall s':>8s} {'x real time':>12s} {'wall/audio (rtf)':>17s}")
    for name, (_, audio, wall) in results.items():
        print(f"{name:10s} {audio:8.1f} {wall:8.2f} {audio / wall:12.1f} {wall / audio:17.3f}")

    refs = [normalize_for_wer(s) for s in SENTENCES]
    print(f"\n{'Whisper tiny.en':22s} {'on':>9s} {'wall s':>8s} {'x real time':>12s} {'rtf':>7s} {'WER':>6s}")
    runs = [("int8", 1, "kokoro"), ("float32", 1, "kokoro"), ("int8", 5, "kokoro"), ("float32", 5, "kokoro"),
            ("int8", 1, "espeak-ng")]
    for ct, beam, source in runs:
        asr = create("asr", {"name": "whisper-ct2", "compute_type": ct, "beam_size": beam,
                             **({"threads": args.threads} if args.threads else {})})
        outs, audio, _ = results[source]
        asr.transcribe(outs[0])  # warm-up (loads the model)
        t0 = time.perf_counter()
        hyps = [normalize_for_wer(asr.transcribe(o).text) for o in outs]
        wall = time.perf_counter() - t0
        label = f"{ct} beam {beam}"
        print(f"{label:22s} {source:>9s} {wall:8.2f} {audio / wall:12.1f} {wall / audio:7.3f} "
              f"{jiwer.wer(refs, hyps):6.3f}")


if __name__ == "__main__":
    main()
