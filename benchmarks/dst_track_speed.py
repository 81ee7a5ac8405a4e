"""Multi-turn tracking speed of the shipped tracker: transformers' generate() against our greedy decoder that
drops finished rows (spokentod/dst/model/decode.py), at the old batch size and with every dialogue side by side.

Tracking decodes one turn of each active dialogue per batch (carry_state: a turn needs the state predicted for
the one before), and a decoding step costs about the same whatever the batch on a CPU until the batch is
large, so wall time is mostly steps x the longest output in each batch. generate() keeps finished rows in
every step; our greedy loop removes them from the KV cache, and a batch holding all of a test set's dialogues
makes the fewest steps. The three rows decode the same turns with the same model and must give the same
outputs (printed: "same").

Data: the reproduction's own test dialogues (MultiWOZ test.json; source_test is restaurant/hotel, the
tracker's own domains; the split of configs/dst/repro_multiwoz.yaml), spoken by its held-out espeak-ng voices into a temp dir; the encoder
features are computed once before timing.

Measured on the 2-core dev machine while the reproduction study trained on the same two cores (both rows
slowed alike; default arguments, 30 dialogues, 190 turns):
  generate()           batch 16   226.1 s   0.84 turns/s   1.00x
  greedy, drops rows   batch 16   191.2 s   0.99 turns/s   1.18x
  greedy, drops rows   batch 30   163.5 s   1.16 turns/s   1.38x    outputs the same in all three

    python benchmarks/dst_track_speed.py [SET [N_DIALOGUES [BATCH]]]
        SET: source_test (30 dialogues, 190 turns; the default) or target_test (80, 506); N_DIALOGUES: the first N
        (default: all); BATCH: the old batch size (default 16, the study's eval.batch_size before)
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import torch

from spokentod.data.manifest import read_manifest, write_manifest
from spokentod.data.synth import synthesize_manifest
from spokentod.dst.data.examples import Filters, dialogue_examples
from spokentod.dst.infer.embedded import EMBEDDED
from spokentod.dst.infer.track import TrackStats, track
from spokentod.dst.model.encoders import build_encoder
from spokentod.dst.model.features import FeatureCache
from spokentod.dst.model.speechdst import SpeechDST, no_runaway, stack_sequences
from spokentod.studies.dst_repro import config as repro_config
from spokentod.studies.dst_repro import prepare

REPO = Path(__file__).resolve().parents[1]
SET = sys.argv[1] if len(sys.argv) > 1 else "source_test"
N = int(sys.argv[2]) if len(sys.argv) > 2 else None
BATCH = int(sys.argv[3]) if len(sys.argv) > 3 else 16
MAX_NEW = 160  # the study's eval.max_new_tokens


def hf_generate(model: SpeechDST):
    """SpeechDST.generate as it was: transformers' generate(), every row kept until the batch is done."""
    from transformers import LogitsProcessorList

    def generate(prefix, lengths, prompts, max_new_tokens=128, num_beams=1):
        emb, mask, _ = stack_sequences(model._sequences(prefix, lengths, prompts, None), left=True)
        out = model.llm.generate(inputs_embeds=emb, attention_mask=mask, max_new_tokens=max_new_tokens,
                                 num_beams=num_beams, do_sample=False, eos_token_id=model.eos,
                                 pad_token_id=model.pad, logits_processor=LogitsProcessorList([no_runaway]))
        return [model.tokenizer.decode(seq, skip_special_tokens=True).strip() for seq in out]
    return generate


def test_dialogues(tmp: Path) -> Path:
    cfg = repro_config.load_repro(REPO / "configs/dst/repro_multiwoz.yaml")
    p = cfg.prepare
    write_manifest(tmp / "raw.jsonl", prepare.split_dialogues(p, REPO)[1][SET][:N])
    h = p.render.heldout
    return synthesize_manifest(tmp / "raw.jsonl", tmp / "speech", h.tts, list(h.voices), progress=False)


def main() -> None:
    torch.set_num_threads(2)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        manifest = test_dialogues(tmp)
        groups = dialogue_examples(read_manifest(manifest), "speech", manifest.parent, Filters(max_audio_s=None, require_state=False))
        model = SpeechDST.from_pretrained(EMBEDDED).eval()
        features = FeatureCache(build_encoder(model.cfg.encoder), str(tmp / "features"), progress=False)
        features.get([e.audio for g in groups for e in g])  # computed once, outside the timings
        turns = sum(map(len, groups))
        rows, outputs = [], {}
        for name, batch, decoder in (("generate()", BATCH, hf_generate(model)), ("greedy, drops rows", BATCH, None),
                                     ("greedy, drops rows", len(groups), None)):
            if decoder is not None:
                model.generate = decoder  # this instance only: the "before" row
            stats = TrackStats()
            t = time.perf_counter()
            preds = track(model, groups, "speech", features, "predicted", batch, MAX_NEW, progress=False, stats=stats)
            seconds = time.perf_counter() - t
            if decoder is not None:
                del model.generate
            outputs[(name, batch)] = [p.raw for p in preds]
            rows.append((name, batch, seconds, stats.batches))
    first = outputs[(rows[0][0], rows[0][1])]
    print(f"{len(groups)} dialogues, {turns} user turns, shipped tracker ({EMBEDDED.name}), "
          f"{torch.get_num_threads()} threads")
    print(f"{'decoder':<20}{'batch':>6}{'calls':>7}{'seconds':>9}{'turns/s':>9}{'speed-up':>10}  outputs")
    for name, batch, seconds, calls in rows:
        same = "same" if outputs[(name, batch)] == first else "DIFFER"
        print(f"{name:<20}{batch:>6}{calls:>7}{seconds:>9.1f}{turns / seconds:>9.2f}{rows[0][2] / seconds:>9.2f}x  {same}")


if __name__ == "__main__":
    main()
