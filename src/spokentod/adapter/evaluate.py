"""Held-out evaluation and export of a trained speech adapter.

    spokentod adapter eval runs/adapter/run2/best --split test     # → runs/adapter/run2/best/eval_test.json
    spokentod adapter export runs/adapter/run2/best               # → src/spokentod/adapter/embedded/

``evaluate_split`` decodes every utterance of a corpus split with the LLM (greedy, through the learned ASR
prompt) and with the CTC head, and breaks the WER down by TTS engine, voice and source: the held-out
voices and dialogues are what say whether the adapter generalizes. ``export`` writes the weights in
float16 (half the size; the loaded adapter computes in float32) with a sidecar that says what was trained
on what, the measured figures, and the command that re-trains them.
"""

from __future__ import annotations

import json
import random
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import torch

from spokentod.adapter import EMBEDDED
from spokentod.adapter.corpus import Split, Utterance, read_manifest
from spokentod.adapter.model import SpeechAdapter
from spokentod.adapter.train import AdapterRecipe, Features, decode, wer
from spokentod.atomic import write_json
from spokentod.progress import progress_bar

RETRAIN = ("spokentod adapter prepare --out runs/adapter/corpus --set sizes.templates=0 && "
           "spokentod adapter train configs/adapter/smollm2_tiny.yaml && "
           "spokentod adapter eval runs/adapter/train/best --split test && "
           "spokentod adapter export runs/adapter/train/best")


def _breakdown(utts: list[Utterance], hyps: list[str], key) -> dict[str, dict[str, float]]:
    groups: dict[str, list[int]] = defaultdict(list)
    for i, u in enumerate(utts):
        groups[key(u)].append(i)
    return {k: {"wer": wer([utts[i].text for i in ix], [hyps[i] for i in ix]), "n": len(ix)}
            for k, ix in sorted(groups.items())}


def evaluate_split(model: SpeechAdapter, corpus: str | Path, split: Split = "test", limit: int | None = None,
                   features: str | None = None, max_new_tokens: int = 48, batch: int = 16) -> dict[str, Any]:
    """WER of the LLM's and the CTC head's transcripts over a corpus split, overall and by TTS/voice/source."""
    utts = [u for u in read_manifest(corpus, split) if u.duration]
    if limit:
        utts = random.Random(0).sample(utts, min(limit, len(utts)))
    feats = Features(AdapterRecipe(corpus=str(corpus), features=features, model=model.cfg))
    t0 = time.perf_counter()
    with progress_bar("eval", unit="utt") as bar:
        task = bar.add_task(f"decode {split}", total=len(utts))
        hyps, ctc = decode(model, feats, utts, max_new_tokens, batch=batch, on_batch=lambda n: bar.advance(task, n))
    refs = [u.text for u in utts]
    return {
        "split": split, "n": len(utts), "wer": wer(refs, hyps), "ctc_wer": wer(refs, ctc),
        "by_tts": _breakdown(utts, hyps, lambda u: u.tts), "by_voice": _breakdown(utts, hyps, lambda u: u.voice),
        "by_source": _breakdown(utts, hyps, lambda u: u.source), "decode_s": round(time.perf_counter() - t0, 1),
        "rows": [{"id": u.id, "tts": u.tts, "voice": u.voice, "ref": r, "hyp": h, "ctc": c}
                 for u, r, h, c in zip(utts, refs, hyps, ctc)],
    }


def run_eval(adapter: str | Path, corpus: str | Path, split: Split = "test", limit: int | None = None,
             features: str | None = None) -> dict[str, Any]:
    """Evaluate an adapter directory and write ``eval_<split>.json`` beside its weights."""
    model = SpeechAdapter.load(adapter)
    out = evaluate_split(model, corpus, split, limit, features)
    write_json(Path(adapter) / f"eval_{split}.json", out)
    return out


def export(adapter: str | Path, out: str | Path = EMBEDDED, run: str | Path | None = None) -> dict[str, Any]:
    """Write the adapter's weights in float16 + a sidecar (training facts, measured figures, re-train command)."""
    src = Path(adapter)
    model = SpeechAdapter.load(src)
    run = Path(run) if run else src.parent
    summary = json.loads((run / "summary.json").read_text()) if (run / "summary.json").is_file() else {}
    corpus = Path(summary.get("recipe", {}).get("corpus", "runs/adapter/corpus"))
    evals = {s: json.loads((src / f"eval_{s}.json").read_text()) for s in ("dev", "test")
             if (src / f"eval_{s}.json").is_file()}
    sidecar = {
        "dtype": "float16", "params": sum(v.numel() for v in model.adapter_state().values()),
        "trained": {"step": model.meta.get("step"), "train_minutes": round(model.meta.get("train_s", 0) / 60, 1),
                    "dev_wer_at_selection": model.meta.get("dev_wer"), "recipe": summary.get("recipe"),
                    "corpus": _corpus_facts(corpus)},
        "measured": {s: {k: e[k] for k in ("n", "wer", "ctc_wer", "by_tts")} for s, e in evals.items()},
        "retrain": RETRAIN,
    }
    model.save(out, sidecar, dtype=torch.float16)
    return sidecar


def _corpus_facts(corpus: Path) -> dict[str, Any]:
    meta = corpus / "corpus.json"
    if not meta.is_file():
        return {"path": str(corpus)}
    m = json.loads(meta.read_text())
    return {"path": str(corpus), **{k: m.get(k) for k in ("counts", "hours", "rendered", "n_failed", "sources")}}
