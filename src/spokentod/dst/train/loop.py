"""The DST training recipe: phase 1 (ASR: connector on speech → transcript, LLM frozen) and phase 2 (DST:
LoRA + connector + text encoder on a weighted sum of cross-entropies), as one explicit loop per phase.

    spokentod dst train configs/dst/cpu_small.yaml [--phase 1|2|all] [--set phase2.steps=50]   (cpu_small: phase 2 only)

What the loop guarantees:
- Data order is a pure function of (seed, loss name, epoch): each loss draws from its own shuffled stream
  whose position is saved, so a resumed run sees exactly the batches an uninterrupted run would.
- A checkpoint (``<out>/phaseN/last``) holds the trainable deltas, optimizer, scheduler, RNG states, stream
  positions, best metric and patience counter; it is written to a temp dir and renamed, so a kill never
  leaves a half checkpoint. Resuming gives the same losses as an uninterrupted run (tested). A checkpoint
  is also taken before each dev evaluation, so a stop during one redoes that evaluation, not the steps.
- Validation decodes (greedy) and scores what was generated: JGA on the dev dialogues in phase 2 (with
  predicted transcripts in the history), WER in phase 1 — never teacher-forced argmax.
- Early stopping counts evaluations *without improvement* and stops only when that count reaches
  ``patience``; the best checkpoint (``<out>/phaseN/best``) is kept.
- `accelerate` handles devices and mixed precision, so the same recipe runs on CPU, one GPU, or several
  (`accelerate launch -m spokentod.cli dst train ...`): each process takes its own slice of every batch.
Per-step losses go to ``<out>/phaseN/log.jsonl`` (learning curves), evaluations to ``eval.jsonl``.
"""

from __future__ import annotations

import json
import random
import shutil
import time
import warnings
from pathlib import Path
from typing import Any

import jiwer
import numpy as np
import torch
from rich.progress import TextColumn
from torch import nn

from spokentod.atomic import atomic_write, replace_dir
from spokentod.dst.data.asr_items import AsrItem
from spokentod.dst.data.examples import Example, asr_target
from spokentod.dst.infer.predictions import write_predictions
from spokentod.dst.infer.track import track
from spokentod.dst.model.encoders import build_encoder
from spokentod.dst.model.speechdst import SpeechDST
from spokentod.dst.score.scorer import score_files
from spokentod.dst.train.batches import Features, Stream, group_dialogues, load_set
from spokentod.dst.train.recipe import LossSpec, PhaseConfig, RecipeConfig
from spokentod.errors import SpokenTODError
from spokentod.metrics.text import normalize_for_wer
from spokentod.progress import progress_bar


class EarlyStopping:
    """Counts evaluations without improvement; `stop` only once `patience` of them came in a row. (The
    reference implementation's check fired on every evaluation, so its training always stopped at the
    first one.)"""

    def __init__(self, patience: int | None, best: float | None = None, bad: int = 0):
        self.patience, self.best, self.bad = patience, best, bad

    def update(self, metric: float | list[float]) -> bool:
        """Record one evaluation; True when it is a new best. A list compares in order (ties on the first
        number are broken by the next: dev JGA, then slot F1)."""
        def key(m):
            return tuple(m) if isinstance(m, (list, tuple)) else (m,)

        if self.best is None or key(metric) > key(self.best):
            self.best, self.bad = metric, 0
            return True
        self.bad += 1
        return False

    @property
    def stop(self) -> bool:
        return self.patience is not None and self.bad >= self.patience


class StepLoss(nn.Module):
    """One training step's weighted loss: a module, so accelerate/DDP wrap a real forward()."""

    def __init__(self, model: SpeechDST, features: Features, losses: list[LossSpec] | None):
        super().__init__()
        self.model, self.features, self.losses = model, features, losses

    def _prefix(self, mode: str, items: list, texts: list[str]):
        if mode == "speech":
            feats, lengths = self.features([it.audio for it in items])
            return self.model.prefix("speech", feats, lengths)
        return self.model.prefix(mode, texts=texts)

    def forward(self, batches: dict[str, list]) -> tuple[torch.Tensor, dict[str, float]]:
        m = self.model
        if self.losses is None:  # phase 1: ASR
            items: list[AsrItem] = batches["asr"]
            p, n = self._prefix("speech", items, [])
            loss = m.loss(p, n, [m.asr_prompt()] * len(items), [asr_target(it.text) for it in items])
            return loss, {"asr": loss.item()}
        total, parts = 0.0, {}
        for spec in self.losses:
            exs: list[Example] = batches[spec.batch_of or spec.name]
            p, n = self._prefix(spec.prefix, exs, [e.transcript for e in exs])
            loss = m.loss(p, n, [m.dst_prompt(e.history, e.prev_state) for e in exs],
                          [m.dst_target(e.transcript, e.state, e.prev_state) for e in exs])
            total = total + spec.weight * loss
            parts[spec.name] = loss.item()
        return total, parts


# ---------------------------------------------------------------------------- checkpoints


def _rng_state() -> dict:
    return {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None}


def _set_rng_state(s: dict) -> None:
    random.setstate(s["python"])
    np.random.set_state(s["numpy"])
    torch.set_rng_state(s["torch"])
    if s.get("cuda") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(s["cuda"])


def save_checkpoint(path: Path, model: SpeechDST, trainer: dict | None) -> None:
    """Model deltas (+ trainer state) into `path`, atomically: write beside it, then swap in."""
    tmp = path.with_name(f".{path.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp)
    if trainer is not None:
        torch.save(trainer, tmp / "trainer.pt")
    replace_dir(tmp, path)  # the previous checkpoint stays whole (as .<name>.old) until the new one is in


def _truncate_log(path: Path, step: int) -> None:
    """Keep the records of steps <= `step` (and nothing half-written)."""
    if not path.is_file():
        return
    keep = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            if json.loads(line)["step"] <= step:
                keep.append(line)
        except (ValueError, KeyError):
            continue
    atomic_write(path, "".join(x + "\n" for x in keep))


def _append(path: Path, record: dict) -> None:
    with path.open("a", encoding="utf-8") as f:
        f.write(json.dumps(record) + "\n")


# ---------------------------------------------------------------------------- evaluation


def evaluate(cfg: RecipeConfig, phase: PhaseConfig, n: int, model: SpeechDST, features: Features,
             dev: list, out: Path, step: int) -> dict[str, Any]:
    """Decode the dev set and score what was generated. Returns {"metric": higher-is-better, ...}."""
    model.eval()
    size = phase.dev_batch_size or phase.batch_size
    if n == 1:
        hyps = []
        for i in range(0, len(dev), size):
            items = dev[i:i + size]
            feats, lengths = features([it.audio for it in items])
            p, k = model.prefix("speech", feats, lengths)
            hyps += model.generate(p, k, [model.asr_prompt()] * len(items), phase.max_new_tokens)
        refs = [normalize_for_wer(it.text) or "<empty>" for it in dev]
        wer = jiwer.wer(refs, [normalize_for_wer(h) for h in hyps])
        return {"metric": -wer, "wer": wer}
    mode = phase.losses[0].prefix if phase.losses[0].prefix != "text_encoder" else "speech"
    preds = track(model, group_dialogues(dev), prefix_mode=mode, features=features, batch_size=size,
                  max_new_tokens=phase.max_new_tokens, progress=False)
    pred_path, ref_path = out / f"dev_step{step}.jsonl", out / "dev_references.jsonl"
    write_predictions(preds, pred_path)
    if not ref_path.exists():
        with ref_path.open("w", encoding="utf-8") as f:
            for e in dev:
                f.write(json.dumps({"dialogue_id": e.dialogue_id, "turn": e.turn, "state": e.state,
                                    "transcript": e.transcript}) + "\n")
    s = score_files(pred_path, ref_path, ontology=cfg.ontology)
    # JGA first; slot F1 breaks ties (early in training every dev JGA is often 0).
    return {"metric": [s["jga"], s["slot_f1"]], "jga": s["jga"], "slot_f1": s["slot_f1"], "wer": s.get("wer"),
            "repaired": sum(bool(getattr(p, "repaired", False)) for p in preds)}


# ---------------------------------------------------------------------------- the loop


def cpu_has_bf16() -> bool:
    """Whether this CPU multiplies bf16 natively (AMX tiles or AVX512-BF16): there a bf16-autocast phase-2
    step runs ~1.2-1.3x faster than float32 (benchmarks/dst_phase2_profile.py)."""
    cpu = torch.cpu
    return any(getattr(cpu, f, lambda: False)() for f in ("_is_amx_tile_supported", "_is_avx512_bf16_supported"))


def _accelerator(cfg: RecipeConfig):
    from accelerate import Accelerator, DistributedDataParallelKwargs  # heavy: only when a phase starts

    cuda = torch.cuda.is_available() and cfg.device in ("auto", "cuda")
    mp = cfg.mixed_precision
    if mp == "auto":  # a CPU stays in float32: bf16 pays only where the CPU has bf16 units (see below)
        mp = "bf16" if cuda and torch.cuda.is_bf16_supported() else "no"
    if mp == "bf16" and not cuda and not cpu_has_bf16():
        warnings.warn("mixed_precision: bf16 on a CPU without AMX or AVX512-BF16 is emulated and slower than "
                      "float32; set mixed_precision: no", stacklevel=2)
    # accelerate keeps one state per process and refuses another precision later on; one process training
    # recipes of different precisions in turn (a Python session, tests) starts it afresh. Not under a launcher.
    from accelerate.state import AcceleratorState

    if AcceleratorState._shared_state.get("_mixed_precision", mp) != mp and not torch.distributed.is_initialized():
        AcceleratorState._reset_state()
    # Some conditions leave parts unused in a step (a text-only recipe never touches the connector's convs):
    # DDP must not wait for their gradients.
    ddp = DistributedDataParallelKwargs(find_unused_parameters=True)
    return Accelerator(cpu=not cuda, mixed_precision=mp, kwargs_handlers=[ddp])


def train_phase(cfg: RecipeConfig, n: int, resume: bool = True, progress: bool = True,
                stop_after: int | None = None) -> dict[str, Any]:
    """Run phase `n` (1 or 2) to its configured steps (or early stop). `stop_after` ends the process's work
    after that many steps in this call (to test resumption), checkpointing first."""
    phase: PhaseConfig = cfg.phase1 if n == 1 else cfg.phase2
    if phase is None:
        raise SpokenTODError(f"the recipe has no phase{n} section")
    out = Path(cfg.out) / f"phase{n}"
    out.mkdir(parents=True, exist_ok=True)
    acc = _accelerator(cfg)
    torch.manual_seed(cfg.seed)
    random.seed(cfg.seed)
    np.random.seed(cfg.seed)

    encoder = build_encoder(cfg.model.encoder.model_copy(update={"device": str(acc.device)}))
    model = SpeechDST.build(cfg.model, encoder.dim, device=str(acc.device))
    init_deltas = None
    if n == 2:
        init = Path(cfg.init_from) if cfg.init_from else Path(cfg.out) / "phase1" / "best"
        if cfg.phase1 is not None or cfg.init_from:
            if not (init / "model.json").is_file():
                raise SpokenTODError(f"phase 2 starts from the phase-1 checkpoint {init}, which does not exist "
                                     f"(run phase 1 first, or set init_from)")
            init_deltas = SpeechDST.load_deltas(init)
            if cfg.model.compress != "none" and not cfg.speech_adapter and "ctc_blank" not in init_deltas:
                raise SpokenTODError(f"model.compress: {cfg.model.compress}, but init_from {init} has no trained CTC "
                                     "head (ctc_blank): start from speech_adapter, or a checkpoint trained with one")
    model.set_phase("asr" if n == 1 else "dst")
    features = Features(encoder, cfg.feature_cache, cfg.feature_cache_dir)
    model.attach_encoder(encoder)
    if n == 2 and init_deltas:  # what phase 1 trained: the connector (and an unfrozen encoder)
        model.load_state_dict({k: v for k, v in init_deltas.items()
                               if k.startswith(("connector.", "speech_encoder.", "ctc_"))}, strict=False)
    if n == 2 and cfg.speech_adapter:  # a trained adapter is phase 1
        model.load_speech_adapter(cfg.speech_adapter)
    if features.trainable:  # an unfrozen encoder trains in phase 1 only (phase 2 keeps it fixed)
        for p in encoder.module.parameters():
            p.requires_grad = n == 1

    def count_tokens(text: str) -> int:
        return len(model.tokenizer(text, add_special_tokens=False)["input_ids"])

    sets = {phase.data: None} if n == 1 else {loss.data: None for loss in phase.losses if loss.data}
    for key in list(sets):
        sets[key] = load_set(key, cfg.data[key], count_tokens, cfg.out)
    dev = load_set(phase.dev, cfg.data[phase.dev], count_tokens, cfg.out) if phase.dev else []
    if phase.dev_limit and n == 1:
        dev = dev[: phase.dev_limit]
    elif phase.dev_limit:
        dev = [e for g in group_dialogues(dev)[: phase.dev_limit] for e in g]
    streams = {}
    if n == 1:
        streams["asr"] = Stream(sets[phase.data], phase.batch_size, cfg.seed, "asr")
    for loss in phase.losses if n == 2 else []:
        if loss.data:
            streams[loss.name] = Stream(sets[loss.data], loss.batch_size or phase.batch_size, cfg.seed, loss.name)

    from transformers import get_linear_schedule_with_warmup  # heavy: only when a phase starts

    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=phase.lr, weight_decay=phase.weight_decay)
    sched = get_linear_schedule_with_warmup(opt, phase.warmup, max(phase.steps, 1))
    if acc.mixed_precision == "bf16":  # the frozen LLM in bf16 once, not cast by autocast at every call
        model.store_frozen_linears(torch.bfloat16)
    step_loss = StepLoss(model, features, None if n == 1 else phase.losses)
    wrapped, opt = acc.prepare(step_loss, opt)

    state = {"step": 0, "best": None, "best_step": None, "bad_evals": 0, "stopped_early": False}
    last = out / "last"
    if resume and (last / "trainer.pt").is_file():
        t = torch.load(last / "trainer.pt", weights_only=False)
        model.load_trainable_state_dict(SpeechDST.load_deltas(last))
        opt.load_state_dict(t["optimizer"])
        sched.load_state_dict(t["scheduler"])
        for k, s in t["streams"].items():
            streams[k].load_state_dict(s)
        _set_rng_state(t["rng"])
        state = t["state"]
        if acc.is_main_process:  # steps logged after the checkpoint will be redone: drop them
            _truncate_log(out / "log.jsonl", state["step"])
            # an evaluation still due at this step is redone: drop a record it may have left
            _truncate_log(out / "eval.jsonl", state["step"] - (state.get("eval_due") == state["step"]))
        acc.print(f"phase {n}: resumed at step {state['step']} from {last}")
    elif not resume:
        for f in ("log.jsonl", "eval.jsonl"):
            (out / f).unlink(missing_ok=True)

    # Training wall time (steps + dev evaluations + checkpoints), summed over the calls that resumed this
    # phase; time after a call's last checkpoint is not counted (its steps are redone and counted then).
    wall_before, t_call = state.get("wall_s", 0.0), time.perf_counter()

    def wall() -> float:
        return wall_before + time.perf_counter() - t_call

    def trainer_state() -> dict:
        state["wall_s"] = wall()
        return {"optimizer": opt.state_dict(), "scheduler": sched.state_dict(), "rng": _rng_state(),
                "streams": {k: s.state_dict() for k, s in streams.items()}, "state": dict(state)}

    def dev_eval(step: int) -> None:
        """Decode and score the dev set at `step`, update early stopping and the best checkpoint."""
        acc.wait_for_everyone()
        if acc.is_main_process:
            with acc.autocast():  # the numerics training runs with (and bf16 weights need it)
                ev = evaluate(cfg, phase, n, model, features, dev, out, step)
            stopper = EarlyStopping(phase.patience, state["best"], state["bad_evals"])
            improved = stopper.update(ev["metric"])
            state.update(best=stopper.best, bad_evals=stopper.bad, stopped_early=stopper.stop)
            if improved:
                state["best_step"] = step
                save_checkpoint(out / "best", model, None)
            _append(out / "eval.jsonl", {"step": step, **ev, "improved": improved, "bad_evals": state["bad_evals"]})
        if acc.num_processes > 1:  # every process stops together (else DDP waits forever)
            flag = torch.tensor(float(state["stopped_early"]), device=acc.device)
            state["stopped_early"] = bool(acc.reduce(flag, reduction="max").item())
        state["eval_due"] = None

    if state.get("eval_due") == state["step"] and dev:  # stopped during this evaluation: run it again
        dev_eval(state["step"])
        if acc.is_main_process:
            save_checkpoint(last, model, trainer_state())

    bar = progress_bar(f"phase {n}", unit="steps", extra=(TextColumn("loss {task.fields[loss]}"),),
                       disable=not progress or not acc.is_main_process)
    done_here = 0
    with bar:
        task = bar.add_task("train", total=phase.steps, completed=state["step"], loss="-")
        while state["step"] < phase.steps and not state["stopped_early"]:
            t0 = time.perf_counter()
            model.train()
            parts_sum: dict[str, float] = {}
            for micro in range(phase.grad_accum):
                batches = {k: s.next(acc.num_processes, acc.process_index) for k, s in streams.items()}
                ctx = acc.no_sync(wrapped) if micro < phase.grad_accum - 1 else _null()
                with ctx:
                    loss, parts = wrapped(batches)
                    acc.backward(loss / phase.grad_accum)
                for k, v in parts.items():
                    parts_sum[k] = parts_sum.get(k, 0.0) + v / phase.grad_accum
            if phase.grad_clip:
                acc.clip_grad_norm_(params, phase.grad_clip)
            opt.step()
            sched.step()
            opt.zero_grad(set_to_none=True)
            state["step"] += 1
            done_here += 1
            step = state["step"]
            total = sum(s.weight * parts_sum[s.name] for s in phase.losses) if n == 2 else parts_sum["asr"]
            record = {"step": step, "loss": total, **{f"loss_{k}": v for k, v in parts_sum.items()},
                      "lr": sched.get_last_lr()[0], "seconds": time.perf_counter() - t0}
            segs, frames = model.segment_counts
            if frames:  # compress: ctc — segments per connector frame this step (drift of the segmentation)
                record["segments_per_frame"] = round(segs / frames, 4)
                model.segment_counts[:] = [0, 0]
            if acc.is_main_process:
                _append(out / "log.jsonl", record)
            bar.update(task, completed=step, loss=f"{total:.3f}")
            final = step == phase.steps
            due = bool(dev) and (step % phase.eval_every == 0 or final)
            if due:  # checkpoint first: a stop during the evaluation redoes the evaluation, not the steps
                state["eval_due"] = step
                if acc.is_main_process:
                    save_checkpoint(last, model, trainer_state())
                dev_eval(step)
            if acc.is_main_process and (due or step % phase.save_every == 0 or final or state["stopped_early"]
                                        or done_here == stop_after):
                save_checkpoint(last, model, trainer_state())
            if done_here == stop_after:
                break
    if acc.is_main_process and not dev and state["step"] >= phase.steps:
        save_checkpoint(out / "best", model, None)  # no dev set: the last is the best we know
    state["wall_s"] = wall()
    summary = {"phase": n, **state, "steps": phase.steps, "out": str(out)}
    if acc.is_main_process:
        (out / "summary.json").write_text(json.dumps(summary, indent=1))
    return summary


class _null:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def run_recipe(cfg: RecipeConfig, phases: list[int], resume: bool = True) -> list[dict]:
    Path(cfg.out).mkdir(parents=True, exist_ok=True)
    (Path(cfg.out) / "recipe.json").write_text(json.dumps(cfg.model_dump(mode="json"), indent=1))
    return [train_phase(cfg, n, resume) for n in phases]
