"""DST phase 2 on a CPU: where a step's time goes, and samples/s before and after the changes, in one run.

Same data (MultiWOZ 2.1 val user turns, rendered with espeak-ng, features cached first and not timed), same
LLM (SmolLM2-135M + LoRA r 32), the recipe's three losses (speech DST, text DST, text DST on the speech
batch's transcripts) at batch 2, the same number of optimizer steps per row. Rows:

  before        configs/dst/cpu_small.yaml as it was: its own 256-wide connector reading every frame (Whisper's
                30-s window), history of the last 4 turns, the full state as the target
  adapter       the shipped speech adapter's connector and CTC compression (one vector per CTC segment)
  + carry       carry_state: the previous state in the prompt, the turn's update as the target (history 4)
  + carry, h1   the same with only the last turn (the agent's) as history — what the carried state allows
  + no LoRA drop  the same without LoRA dropout (0.05 → 0): a phase 2 of under one epoch has nothing for it
                to regularize, and on a CPU its Bernoulli masks on every q/k/v/o input are a real share of the
                step (configs/dst/repro_multiwoz.yaml drops it)
  + bf16        the same under bf16 autocast with the frozen LLM stored in bf16 and batches padded to 64 tokens
                (mixed_precision: bf16): pays
                on a CPU with AMX or AVX512-BF16 units (spokentod.dst.train.loop.cpu_has_bf16), which this
                script prints; elsewhere bf16 is emulated and slower

Per row: mean tokens per sequence (prefix / prompt / target), seconds per step, samples/s (sequences through
the LLM per second, 3 per example) and the speed-up over `before`.

Measured on the 2-core dev machine (AMX present, idle), --batch 4: before 14.33 s/step; + carry, h1 9.65 (1.49x);
+ no LoRA drop 8.40 (1.71x); + bf16 6.93 (2.07x; 1.21x over float32). Over 30 steps of the reproduction's S
(history 2, longer batches whose lengths vary more) bf16 gave 1.28x: 190 s → 149 s.

    HF_HUB_OFFLINE=1 python benchmarks/dst_phase2_profile.py [--steps 6] [--dialogues 12] [--threads 2]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch

from spokentod.data import corpora
from spokentod.data.synth import synthesize_manifest
from spokentod.dst.data.examples import HistoryFormat
from spokentod.dst.model.config import ConnectorConfig, EncoderConfig
from spokentod.dst.model.encoders import build_encoder
from spokentod.dst.model.speechdst import SpeechDST
from spokentod.dst.train.batches import Features, Stream, load_set
from spokentod.dst.train.loop import StepLoss, cpu_has_bf16
from spokentod.dst.train.recipe import DataSpec, load_recipe

CONFIG = Path(__file__).resolve().parents[1] / "configs" / "dst" / "cpu_small.yaml"
MWZ = Path(__file__).resolve().parents[2] / "shared" / "data" / "multiwoz" / "mwz21_convlab2" / "val.json"


def variants(cfg):
    m = cfg.model
    before = m.model_copy(update={
        "encoder": m.encoder.model_copy(update={"window": "full"}), "compress": "none",
        "connector": ConnectorConfig(width=256, layers=2, heads=4, ff=1024, dropout=0.1)})
    last = m.model_copy(update={"carry_state": True, "history": HistoryFormat(max_turns=1),
                                "lora": m.lora.model_copy(update={"dropout": 0.0})})
    return [("before", before, False, False),
            ("adapter", m, True, False),
            ("+ carry", m.model_copy(update={"carry_state": True}), True, False),
            ("+ carry, h1", m.model_copy(update={"carry_state": True,
                                                 "history": HistoryFormat(max_turns=1)}), True, False),
            ("+ no LoRA drop", last, True, False),
            ("+ bf16", last, True, True)]


def tokens(model: SpeechDST, features: Features, examples: list) -> tuple[float, float, float]:
    n = lambda s: len(model.tokenizer(s, add_special_tokens=False)["input_ids"])
    with torch.no_grad():
        feats, lengths = features([e.audio for e in examples])
        _, plen = model.prefix("speech", feats, lengths)
    return (float(plen.float().mean()), statistics.mean(n(model.dst_prompt(e.history, e.prev_state)) for e in examples),
            statistics.mean(n(model.dst_target(e.transcript, e.state, e.prev_state)) + 1 for e in examples))


def run(model: SpeechDST, features: Features, examples: list, steps: int, batch: int, bf16: bool) -> float:
    cfg = load_recipe(CONFIG)
    torch.manual_seed(0)
    model.set_phase("dst")
    if bf16:  # what train_phase does under mixed_precision: bf16
        model.store_frozen_linears(torch.bfloat16)
    step = StepLoss(model, features, cfg.phase2.losses)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    speech, text = Stream(examples, batch, 0, "speech"), Stream(examples, batch, 0, "text")
    model.train()

    def one():
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss, _ = step({"speech": speech.next(), "text": text.next()})
        loss.backward()
        opt.step()
        opt.zero_grad()

    one()  # warm-up: allocator, thread pools
    t0 = time.perf_counter()
    for _ in range(steps):
        one()
    return (time.perf_counter() - t0) / steps


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--dialogues", type=int, default=12)
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    cfg = load_recipe(CONFIG)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        dialogues = [d for d in corpora.load("multiwoz21", str(MWZ))][: args.dialogues]
        manifest = synthesize_manifest(dialogues, tmp / "audio", "espeak", progress=False)
        for name, mcfg, from_adapter, bf16 in variants(cfg):
            encoder = build_encoder(EncoderConfig.model_validate(mcfg.encoder.model_dump()))
            model = SpeechDST.build(mcfg, encoder.dim)
            if from_adapter:
                model.load_speech_adapter("embedded")
            features = Features(encoder, cache=True, root=str(tmp / "features"))

            def count(text: str, model=model) -> int:
                return len(model.tokenizer(text, add_special_tokens=False)["input_ids"])

            examples = load_set("mwz", DataSpec(manifest=str(manifest)), count)
            features.cache.get([e.audio for e in examples])  # fill once, untimed
            toks = tokens(model, features, examples)
            rows.append((name, toks, run(model, features, examples, args.steps, args.batch, bf16)))
    per_step = 3 * args.batch
    base = rows[0][2]
    print(f"CPU has bf16 units (AMX / AVX512-BF16): {cpu_has_bf16()}")
    print(f"{len(examples)} examples of {args.dialogues} MultiWOZ 2.1 val dialogues; {args.steps} steps x 3 losses x "
          f"batch {args.batch}, {args.threads} threads")
    print(f"{'row':<16}{'prefix':>8}{'prompt':>8}{'target':>8}{'s/step':>9}{'samples/s':>11}{'speed-up':>10}")
    for name, (p, q, t), s in rows:
        print(f"{name:<16}{p:>8.1f}{q:>8.1f}{t:>8.1f}{s:>9.2f}{per_step / s:>11.2f}{base / s:>9.2f}x")


if __name__ == "__main__":
    main()
