"""DST training throughput with and without the frozen-encoder feature cache, in one run.

Same model (configs/dst/cpu_small.yaml: SmolLM2-135M + LoRA, embedded Whisper tiny.en encoder on
CTranslate2, small connector), same batches, same number of steps; the only difference is where the
encoder features come from: computed for every batch (what the seed's reference code does) or read from
the on-disk cache filled once (its fill time is printed apart: it is paid once per corpus, not per epoch).
The data is the bundled demo corpus's user turns rendered with espeak-ng into a temp dir.

Two rows: phase 1 (ASR: short targets, no history — the encoder's share is largest) and phase 2 (DST:
history + state JSON, where the LLM dominates).

    python benchmarks/dst_train_throughput.py [STEPS [BATCH]]     (defaults 8 steps of 4 examples)
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import torch

from spokentod.data import corpora
from spokentod.data.synth import synthesize_manifest
from spokentod.dst.encoders import build_encoder
from spokentod.dst.model import SpeechDST
from spokentod.dst.recipe import DataSpec, LossSpec, load_recipe
from spokentod.dst.train import Features, StepLoss, Stream, load_set

STEPS = int(sys.argv[1]) if len(sys.argv) > 1 else 8
BATCH = int(sys.argv[2]) if len(sys.argv) > 2 else 4
CONFIG = Path(__file__).resolve().parents[1] / "configs" / "dst" / "cpu_small.yaml"


def run(model: SpeechDST, features: Features, examples: list, steps: int, phase: str) -> float:
    """Seconds for `steps` optimizer steps: phase "asr" (speech → transcript) or "dst" (speech + history →
    state JSON, the longer sequences)."""
    torch.manual_seed(0)
    model.set_phase(phase)
    losses = None if phase == "asr" else [LossSpec(name="speech", data="x", prefix="speech")]
    step_loss = StepLoss(model, features, losses)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    stream = Stream(examples, BATCH, 0, "speech")
    model.train()
    key = "asr" if phase == "asr" else "speech"
    t0 = time.perf_counter()
    for _ in range(steps):
        loss, _ = step_loss({key: stream.next()})
        loss.backward()
        opt.step()
        opt.zero_grad()
    return time.perf_counter() - t0


def main() -> None:
    torch.set_num_threads(2)
    cfg = load_recipe(CONFIG)
    with tempfile.TemporaryDirectory() as tmp:
        manifest = synthesize_manifest(corpora.load("demo")[:8], Path(tmp) / "audio", "espeak", progress=False)
        encoder = build_encoder(cfg.model.encoder)
        model = SpeechDST.build(cfg.model, encoder.dim)

        def count(text: str) -> int:
            return len(model.tokenizer(text, add_special_tokens=False)["input_ids"])

        examples = load_set("demo", DataSpec(manifest=str(manifest)), count)[: STEPS * BATCH]
        uncached = Features(encoder, cache=False)
        cached = Features(encoder, cache=True, root=str(Path(tmp) / "features"))
        t0 = time.perf_counter()
        cached.cache.get([e.audio for e in examples])  # fill once
        fill = time.perf_counter() - t0
        rows = []
        for phase in ("asr", "dst"):
            run(model, cached, examples, 1, phase)  # warm-up: allocator, thread pools
            rows.append((phase, run(model, uncached, examples, STEPS, phase),
                         run(model, cached, examples, STEPS, phase)))
    n = STEPS * BATCH
    print(f"{n} examples per row ({STEPS} steps x {BATCH}), {len(examples)} distinct utterances")
    print(f"{'phase':<8}{'computed s':>12}{'cached s':>10}{'computed/s':>12}{'cached/s':>10}{'speed-up':>10}")
    for phase, plain, cached_s in rows:
        print(f"{phase:<8}{plain:>12.2f}{cached_s:>10.2f}{n / plain:>12.2f}{n / cached_s:>10.2f}"
              f"{plain / cached_s:>9.2f}x")
    print(f"(one-off cache fill for {len(examples)} utterances: {fill:.2f} s; samples/s = examples per second)")


if __name__ == "__main__":
    main()
