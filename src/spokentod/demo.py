"""The embedded demo: demo corpus → stats → user turns rendered to speech → round-trip transcription.

Everything runs offline on a CPU with the embedded defaults (Kokoro-82M TTS, Whisper tiny.en ASR).
Outputs in `out/`: stats.json, demo.jsonl, spoken/manifest.jsonl + spoken/audio/, roundtrip.jsonl (per turn), summary.json.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import jiwer
from rich.console import Console

from spokentod.backends.base import create
from spokentod.data import corpora
from spokentod.data.manifest import read_manifest, write_manifest
from spokentod.data.stats import corpus_stats, render_stats
from spokentod.data.synth import synthesize_manifest
from spokentod.metrics.text import normalize_for_wer
from spokentod.progress import progress_bar


def run_demo(out: str | Path, n: int | None = None, tts: str = "kokoro", asr: str = "whisper-ct2") -> dict:
    console = Console(stderr=True)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    dialogues = corpora.load("demo", None)
    if n:
        dialogues = dialogues[:n]
    stats = corpus_stats(dialogues)
    (out / "stats.json").write_text(json.dumps(stats, indent=2, sort_keys=True))
    console.print(render_stats(stats))

    src = out / "demo.jsonl"
    write_manifest(src, dialogues)
    t0 = time.perf_counter()
    spoken = synthesize_manifest(src, out / "spoken", tts=tts)
    synth_s = time.perf_counter() - t0

    model = create("asr", {"name": asr})
    rows, refs, hyps = [], [], []
    turns = [(d, t) for d in read_manifest(spoken) for t in d.user_turns if t.audio]
    asr_s = audio_s = 0.0
    with progress_bar("transcribing", unit="turns", console=console) as bar:
        task = bar.add_task("asr", total=len(turns))
        for d, t in turns:
            tr = model.transcribe(out / "spoken" / t.audio.path)
            ref, hyp = normalize_for_wer(t.text), normalize_for_wer(tr.text)
            refs.append(ref)
            hyps.append(hyp)
            asr_s += tr.timings.wall
            audio_s += t.audio.duration
            rows.append({"dialogue_id": d.id, "turn": t.index, "voice": t.audio.voice, "reference": t.text,
                         "transcript": tr.text, "wer": jiwer.wer(ref, hyp) if ref else None,
                         "asr_seconds": round(tr.timings.wall, 3), "audio_seconds": t.audio.duration})
            bar.advance(task)
    with (out / "roundtrip.jsonl").open("w") as f:
        for r in rows:
            f.write(json.dumps(r) + "\n")
    summary = {
        "dialogues": len(dialogues), "user_turns": len(rows), "tts": tts, "asr": asr,
        "corpus_wer": round(jiwer.wer(refs, hyps), 4) if refs else None,
        "audio_seconds": round(audio_s, 1), "synth_wall_seconds": round(synth_s, 1),
        "asr_wall_seconds": round(asr_s, 1), "asr_rtf": round(asr_s / audio_s, 3) if audio_s else None,
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    console.print_json(json.dumps(summary))
    console.print(f"results in {out}/ (stats.json, spoken/manifest.jsonl, roundtrip.jsonl, summary.json)")
    return summary
