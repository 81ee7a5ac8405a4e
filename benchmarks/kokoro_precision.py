"""Kokoro-82M int8 (shipped graph) vs float32 (dequantized once, backends/tts/_kokoro_float.py): wall
seconds per synthesize() call side by side, then parity (audio length ratio, DTW-aligned log-mel
correlation and mean |dB| difference) and Whisper tiny.en WER of each.

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/kokoro_precision.py [--threads N] [--reps 3] [--no-asr]

The first sentence is a 3-5 word phrase, the size of a streaming cascade's first chunk. Calls alternate
int8/float32 so that load from other jobs hits both alike; the per-sentence median over --reps is shown.
Model loading (and the one-time conversion) is excluded by a warm-up call each.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import jiwer

from spokentod.backends.base import create
from spokentod.backends.tts._kokoro_float import float32_path, spectral_similarity
from spokentod.metrics.text import normalize_for_wer

SENTENCES = [
    "Sure, I can help.",
    "Could you book a table for four people at seven thirty on Friday?",
    "I need a train from Cambridge to London that leaves after nine in the morning.",
    "Actually, I changed my mind; make it a guesthouse with free parking instead.",
]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=0, help="onnxruntime intra-op threads (0 = all cores)")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--no-asr", action="store_true", help="skip the Whisper WER")
    args = ap.parse_args()
    threads = args.threads or os.cpu_count() or 1
    tts = {
        p: create("tts", {"name": "kokoro", "threads": threads, "precision": p}) for p in ("int8", "float32")
    }
    cached = float32_path(tts["float32"].model_sha256).is_file()
    t0 = time.perf_counter()
    for t in tts.values():
        t.warmup()
    print(
        f"cpu cores: {os.cpu_count()}, threads: {threads}, load average: {os.getloadavg()[0]:.2f}, "
        f"float32 graph {'cached' if cached else f'converted + loaded in {time.perf_counter() - t0:.1f} s'}"
    )

    walls: dict[str, list[list[float]]] = {p: [[] for _ in SENTENCES] for p in tts}
    audio = {}
    for _ in range(args.reps):
        for i, s in enumerate(SENTENCES):
            for p, t in tts.items():
                out = t.synthesize(s)
                walls[p][i].append(out.timings.wall)
                audio[p, i] = out
    print(f"\n{'sentence':42s} {'words':>5s} {'audio s':>7s} {'int8 s':>7s} {'f32 s':>7s} {'f32/int8':>8s}")
    tot = {p: 0.0 for p in tts}
    for i, s in enumerate(SENTENCES):
        med = {p: statistics.median(walls[p][i]) for p in tts}
        for p in tts:
            tot[p] += med[p]
        print(
            f"{s[:42]:42s} {len(s.split()):5d} {audio['int8', i].duration:7.2f} {med['int8']:7.3f} "
            f"{med['float32']:7.3f} {med['float32'] / med['int8']:8.3f}"
        )
    print(
        f"{'total':42s} {'':5s} {'':7s} {tot['int8']:7.3f} {tot['float32']:7.3f} {tot['float32'] / tot['int8']:8.3f}"
    )

    print(f"\n{'parity (float32 vs int8)':42s} {'len ratio':>9s} {'mel corr':>8s} {'mel |dB|':>8s}")
    for i, s in enumerate(SENTENCES):
        a, b = audio["int8", i].samples, audio["float32", i].samples
        corr, diff = spectral_similarity(a, b)
        print(f"{s[:42]:42s} {len(b) / len(a):9.3f} {corr:8.3f} {diff:8.2f}")

    if not args.no_asr:
        asr = create("asr", {"name": "whisper-ct2", "model": "tiny.en", "threads": threads})
        refs = [normalize_for_wer(s) for s in SENTENCES]
        for p in tts:
            hyps = [normalize_for_wer(asr.transcribe(audio[p, i]).text) for i in range(len(SENTENCES))]
            print(f"Whisper tiny.en WER {p:8s} {jiwer.wer(refs, hyps):.3f}  {hyps}")
    print(f"\nload average at end: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
