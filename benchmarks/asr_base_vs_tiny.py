"""Whisper base vs tiny.en as the standardized-transcription ASR, on the reply audio of a bench run.

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/asr_base_vs_tiny.py RUN_DIR [--max 200]

RUN_DIR is any run directory with spoken replies (e.g. `make demo`'s runs/demo/bench). The reference of each
reply is the text the system meant to say, as in the intelligibility metric (metrics/audio.py), both sides
through Whisper's English normalizer. Printed side by side: corpus WER (all errors / all reference words),
mean per-reply WER, replies transcribed exactly, and the cost (wall and CPU seconds per audio second; both
models int8, beam 1, CTranslate2 on this CPU). `base` is multilingual: it runs with language=en, the way
to configure it for English replies (`{name: whisper-ct2, model: base, language: en}`), and once without
a language to show what the detection pass costs and changes.

Measured on 2 shared, busy cores: the demo run of `make demo` (13 Kokoro replies, 114 s, 383 words) and
configs/demo_paired.yaml --limit 2 (26 replies, 280 s, 953 words): corpus WER 1.31 % / 1.15 % for tiny.en,
base (en) and base (auto) alike; base's transcripts differ from tiny.en's on 2/13 and 3/26 replies, with as
many errors; CPU per audio second 0.18 / 0.12 (tiny.en), 0.34 / 0.22 (base, en), 0.54 / 0.34 (base, auto).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import jiwer

from spokentod.backends.base import create
from spokentod.metrics.text import normalize_for_wer
from spokentod.progress import progress_bar
from spokentod.rundir.scan import RunDir
from spokentod.rundir.store import final_records

MODELS = {"tiny.en": {"model": "tiny.en"}, "base (en)": {"model": "base", "language": "en"},
          "base (auto)": {"model": "base"}}


def replies(run_dir: Path, limit: int) -> list[tuple[Path, str, float]]:
    import soundfile as sf

    out = []
    for r in final_records(RunDir.scan(run_dir).records()).values():
        if r.get("error") or not r.get("audio_path") or not normalize_for_wer(r.get("text") or ""):
            continue
        path = run_dir / r["audio_path"]
        if path.is_file():
            out.append((path, r["text"], sf.info(str(path)).duration))
    return sorted(out)[:limit]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run_dir", type=Path)
    ap.add_argument("--max", type=int, default=200, help="at most this many replies")
    args = ap.parse_args()
    data = replies(args.run_dir.resolve(), args.max)
    if not data:
        raise SystemExit(f"{args.run_dir}: no spoken replies with text")
    seconds = sum(d for _, _, d in data)
    refs = [normalize_for_wer(t) for _, t, _ in data]
    print(f"{len(data)} replies, {seconds:.0f} s of audio, {sum(len(r.split()) for r in refs)} reference words")
    rows, hyps = {}, {}
    for name, opts in MODELS.items():
        asr = create("asr", {"name": "whisper-ct2", **opts})
        asr.transcribe(str(data[0][0]))  # load the model outside the timing
        t0, c0 = time.perf_counter(), time.process_time()
        with progress_bar() as bar:
            task = bar.add_task(name, total=len(data))
            out = []
            for path, _, _ in data:
                out.append(normalize_for_wer(asr.transcribe(str(path)).text))
                bar.advance(task)
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
        hyps[name] = out
        per = [jiwer.wer(r, h) if h else 1.0 for r, h in zip(refs, out)]
        rows[name] = (jiwer.wer(refs, [h or "<empty>" for h in out]), sum(per) / len(per),
                      sum(p == 0 for p in per), wall / seconds, cpu / seconds)
    print(f"\n{'model':<12} {'corpus WER':>10} {'mean WER':>9} {'exact':>9} {'wall s/s':>9} {'cpu s/s':>8}")
    for name, (wer, mean, exact, wall, cpu) in rows.items():
        print(f"{name:<12} {wer:10.2%} {mean:9.2%} {exact:>4}/{len(data):<4} {wall:9.3f} {cpu:8.3f}")
    tiny, base = rows["tiny.en"], rows["base (en)"]
    differ = sum(a != b for a, b in zip(hyps["tiny.en"], hyps["base (en)"]))
    print(f"\nbase (en) vs tiny.en: corpus WER {base[0]:.2%} vs {tiny[0]:.2%}, cpu cost x{base[4] / tiny[4]:.2f}; "
          f"the two transcripts differ on {differ}/{len(data)} replies")


if __name__ == "__main__":
    main()
