"""The tracker shipped in the package: ``spokentod dst track --tracker embedded`` runs it with no training.

It is a SpeechDST checkpoint (model.json + trainable.safetensors: the deltas its mode reads — LoRA, and the
connector for speech — stored in float16 to fit the package) plus a sidecar, ``tracker.json``: how it is run (mode, and
the ASR backend of a cascade), the recipe and data it was trained on, and what it measured on held-out test
dialogues *with the shipped float16 weights* (``ship`` tracks and scores them itself, so the figures in the
sidecar are the package's, not the float32 checkpoint's).

    spokentod dst ship-tracker runs/dst/source_e2e_1800/phase2/best --mode speech --test-manifest ... (make tracker)
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

from spokentod.atomic import replace_dir, write_json
from spokentod.dst.train.runlog import read_json, step_log  # a resumed step is counted once
from spokentod.errors import SpokenTODError

EMBEDDED = Path(__file__).resolve().parents[1] / "embedded"
SIDECAR = "tracker.json"


def sidecar(path: str | os.PathLike | None = None) -> dict[str, Any]:
    """The shipped tracker's sidecar; a SpokenTODError when none is shipped."""
    path = Path(path or EMBEDDED)
    f = path / SIDECAR
    try:
        return json.loads(f.read_text())
    except (OSError, ValueError) as e:
        raise SpokenTODError(f"no embedded tracker at {path} ({e}); make one with `make tracker`") from None


def unused_parts(mode: str) -> tuple[str, ...]:
    """The delta prefixes a tracker run in `mode` never reads: the text encoder (its own 49k x width token
    embeddings: most of a checkpoint's bytes) outside text_encoder mode, the connector and CTC head in a
    text_direct one (the text encoder's path runs through the connector's Transformer)."""
    return (() if mode == "text_encoder" else ("text_encoder.",)) + \
        (("connector.", "ctc_") if mode in ("text_direct", "none") else ())


def _half(checkpoint: Path, out: Path, mode: str) -> int:
    """Copy a checkpoint into `out` with the deltas `mode` reads, in float16; returns the weights' bytes.
    model.json lists what was left out (`omitted`), so loading it for another mode fails by name."""
    import torch
    from safetensors.torch import load_file, save_file

    drop = unused_parts(mode)
    deltas = load_file(str(checkpoint / "trainable.safetensors"))
    half = {k: v.to(torch.float16) if v.is_floating_point() else v for k, v in deltas.items()
            if not k.startswith(drop)}
    out.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in half.items()}, str(out / "trainable.safetensors"))
    meta = json.loads((checkpoint / "model.json").read_text())
    write_json(out / "model.json", meta | {"omitted": list(drop)}, indent=1)
    return (out / "trainable.safetensors").stat().st_size


def _trained(checkpoint: Path) -> dict[str, Any]:
    """What the training run left next to the checkpoint (<run>/recipe.json, <run>/phase2/*.jsonl)."""
    run, phase = checkpoint.parents[1], checkpoint.parent
    summary = read_json(phase / "summary.json", {})
    return {"recipe": read_json(run / "recipe.json"), "steps": summary.get("step"),
            "best_step": summary.get("best_step"), "wall_s": summary.get("wall_s"),
            "step_seconds": round(sum(x.get("seconds", 0) for x in step_log(phase / "log.jsonl")), 1),
            "dev_curve": [{k: e.get(k) for k in ("step", "jga", "slot_f1", "wer")}
                          for e in step_log(phase / "eval.jsonl")]}


def ship(checkpoint: str | os.PathLike, *, mode: str, asr: str | None, test_manifest: str | os.PathLike,
         references: str | os.PathLike, command: str, out: str | os.PathLike = EMBEDDED, batch_size: int = 16,
         max_new_tokens: int = 128, bootstrap: int = 1000, work: str | os.PathLike | None = None,
         progress: bool = True) -> dict[str, Any]:
    """Write the embedded tracker into `out`: float16 deltas, then track and score the held-out test set with
    exactly those weights, then the sidecar. `out` is replaced only once everything has worked."""
    from spokentod.dst.cli.tracking import TrackSettings, run_track
    from spokentod.dst.score.scorer import score_empty_states, score_files

    checkpoint, out, references = Path(checkpoint), Path(out), Path(references)
    if not (checkpoint / "model.json").is_file():
        raise SpokenTODError(f"{checkpoint} is not a SpeechDST checkpoint (no model.json)")
    stage = out.with_name(out.name + ".staging")
    shutil.rmtree(stage, ignore_errors=True)
    size = _half(checkpoint, stage, mode)
    work = Path(work) if work else checkpoint.parents[1] / "shipped_test"
    tracked = run_track(TrackSettings(out=work, checkpoint=stage, manifest=Path(test_manifest), mode=mode, asr=asr,
                                      batch_size=batch_size, max_new_tokens=max_new_tokens, progress=progress))
    s = score_files(work / "predictions.jsonl", references, bootstrap=bootstrap)
    floor = score_empty_states(references, work / "empty_state" / "predictions.jsonl")["jga"]
    keys = ("jga", "jga_ci", "slot_f1", "slot_key_f1", "wer", "entity_wer", "turns", "dialogues", "per_domain")
    measured = {k: s.get(k) for k in keys} | {"empty_state_floor": floor,
                                              "test_manifest": str(test_manifest), "references": str(references),
                                              "tracked": tracked["counts"]}
    meta = {"mode": mode, "asr": asr, "weights": {"dtype": "float16", "bytes": size, "omitted": list(unused_parts(mode))},
            "source_checkpoint": str(checkpoint), "trained": _trained(checkpoint), "measured": measured,
            "command": command}
    write_json(stage / SIDECAR, meta, indent=1)
    replace_dir(stage, out)
    return meta
