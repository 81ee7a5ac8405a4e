"""Training recipe of the speech adapter (the DST model's phase 1): ASR on the adapter corpus, LLM frozen.

    spokentod adapter train configs/adapter/smollm2_tiny.yaml [--set train.budget_minutes=60]

Stages, each resumable: ``features`` (the frozen encoder's features of every corpus utterance, cached once
in the FeatureCache: most of the cost of a first run) → ``train`` (a loop of steps that stops at
``steps`` or when ``budget_minutes`` of training time are spent, whichever first; dev WER every
``eval_every`` steps; a checkpoint every ``save_every`` steps) → ``export`` (the best dev-WER weights as
``adapter.safetensors`` + ``adapter.json``).

Budget accounting: ``train_s`` counts only optimisation steps (data loading included, dev decoding not),
so "WER after 60 min of training" means 60 min of steps. Every log row carries it and the wall time.

Resume restores the adapter, the optimiser and the counters; the batch stream restarts from a seed derived
from the step, so a resumed run sees the same data distribution but not the exact batches of an
uninterrupted one.

Files in ``out``: ``log.jsonl`` (one row per ``log_every`` steps: losses, lr, train_s, wall_s),
``eval.jsonl`` (dev WER by step, with the first few hypotheses), ``checkpoint.pt`` (last state),
``best/`` (the best dev-WER adapter) and ``timings.json``.
"""

from __future__ import annotations

import json
import math
import random
import time
from pathlib import Path
from typing import Any

import jiwer
import torch
from pydantic import BaseModel, ConfigDict, Field

from spokentod.adapter.corpus import Utterance, read_manifest
from spokentod.adapter.model import AdapterConfig, AdapterError, SpeechAdapter
from spokentod.atomic import atomic_write, write_json
from spokentod.config_file import load_yaml_config
from spokentod.dst.model.encoders import build_encoder
from spokentod.dst.model.features import FeatureCache, file_sha256
from spokentod.metrics.text import normalize_for_wer
from spokentod.progress import progress_bar


class TrainSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    steps: int = Field(4000, ge=1)
    budget_minutes: float | None = 60.0  # stop when this much training time is spent (None: steps only)
    batch_size: int = Field(16, ge=1)
    lr: float = 1.5e-3
    warmup: int = 100
    min_lr: float = 1.0e-4  # cosine decay to this at the end of each phase
    restart: bool = True  # the CE phase gets its own warm-up and cosine (else one schedule over all steps)
    weight_decay: float = 0.01
    ctc_weight: float = 0.3  # total = ce + ctc_weight * ctc
    ctc_only_steps: int = 0  # first steps on CTC alone (no LLM forward)
    # In the CE phase, the connector's and CTC head's learning rate is lr x this (the ASR prompt keeps lr):
    # CE at the full rate pulled the CTC head from 15.5 to 31.5 % dev WER in 125 steps (runs/adapter/soft);
    # 0 freezes what the CTC phase learned, and only the prompt learns to read it.
    ce_hearing_lr_scale: float = Field(1.0, ge=0.0)
    eval_every: int = 250
    dev_limit: int = 96  # dev utterances decoded at each evaluation
    save_every: int = 50
    log_every: int = 10
    max_new_tokens: int = 48
    threads: int = 2
    seed: int = 0
    bucket: int = 32  # draw batch*bucket utterances, sort by length, cut into batches (less padding)
    distill_weight: float = 0.0  # total += distill_weight * KL to the text-reading LLM (adapter/distill.py)
    distill_replies: str | None = None  # the cached replies JSONL (spokentod adapter replies)
    distill_items: int = Field(4, ge=1)  # of each batch, this many are drawn from the utterances that have a
    # cached reply (and get the distillation loss too); the rest come from the whole training set as usual
    sources: list[str] | None = None  # train only on these corpus sources (None: all), e.g. real turns only


class AdapterRecipe(BaseModel):
    model_config = ConfigDict(extra="forbid")

    corpus: str = "runs/adapter/corpus"
    out: str = "runs/adapter/train"
    features: str | None = None  # FeatureCache root (None: the default cache dir)
    init: str | None = None  # start from this adapter's weights (e.g. add distillation to a trained one)
    model: AdapterConfig = Field(default_factory=AdapterConfig)
    train: TrainSettings = Field(default_factory=TrainSettings)


def load_recipe(path: str | Path, overrides: list[str] | None = None) -> AdapterRecipe:
    return load_yaml_config(path, AdapterRecipe, AdapterError, "adapter recipe", overrides or [])


def wer(refs: list[str], hyps: list[str]) -> float:
    pairs = [(normalize_for_wer(r), normalize_for_wer(h)) for r, h in zip(refs, hyps)]
    pairs = [(r, h) for r, h in pairs if r]
    return jiwer.wer([r for r, _ in pairs], [h for _, h in pairs]) if pairs else float("nan")


class Features:
    """Encoder features of corpus utterances, from the on-disk cache (computed on a miss)."""

    def __init__(self, recipe: AdapterRecipe):
        self.root = Path(recipe.corpus)
        self.encoder = build_encoder(recipe.model.encoder)
        self.cache = FeatureCache(self.encoder, recipe.features, progress=False)

    def get(self, utts: list[Utterance]) -> list[torch.Tensor]:
        return self.cache.get([self.root / u.audio for u in utts])

    def fill(self, utts: list[Utterance], chunk: int = 64) -> None:
        """Compute every missing feature (the first run's big cost), with a progress bar. Cached ones are
        only looked up, not read (the whole corpus is ~12 GB of features)."""
        todo = [u for u in utts if not self.cache.path_for(file_sha256(self.root / u.audio)).is_file()]
        with progress_bar("features", unit="utt") as bar:
            task = bar.add_task("features", total=len(utts), completed=len(utts) - len(todo))
            for i in range(0, len(todo), chunk):
                self.get(todo[i: i + chunk])
                bar.advance(task, len(todo[i: i + chunk]))


def _batches(utts: list[Utterance], size: int, bucket: int, rng: random.Random):
    """Endless stream of batches: shuffled, then sorted by duration within buckets of size*bucket."""
    if len(utts) < size:  # no full batch: the loop below would spin forever
        raise AdapterError(f"{len(utts)} utterances cannot fill a batch of {size}")
    while True:
        order = utts[:]
        rng.shuffle(order)
        for i in range(0, len(order) - size + 1, size * bucket):
            chunk = sorted(order[i: i + size * bucket], key=lambda u: u.duration or 0.0)
            group = [chunk[j: j + size] for j in range(0, len(chunk) - size + 1, size)]
            rng.shuffle(group)
            yield from group


def lr_at(step: int, s: TrainSettings) -> float:
    """Warm-up then cosine decay to ``min_lr``; with ``restart`` the CE phase (from ``ctc_only_steps``)
    starts its own schedule. One schedule over both phases left the CE phase — where the LLM learns to read
    the segments — at 0.45e-3 falling to 0.18e-3 in run1; the restart gives it the full rate."""
    start, end = 0, s.steps
    if s.restart and 0 < s.ctc_only_steps < s.steps:
        start, end = (s.ctc_only_steps, s.steps) if step >= s.ctc_only_steps else (0, s.ctc_only_steps)
    step -= start
    if step < s.warmup:
        return s.lr * (step + 1) / s.warmup
    p = min(1.0, (step - s.warmup) / max(1, end - start - s.warmup))
    return s.min_lr + 0.5 * (s.lr - s.min_lr) * (1 + math.cos(math.pi * p))


def decode(model: SpeechAdapter, feats: Features, utts: list[Utterance], max_new_tokens: int = 48,
           llm: bool = True, batch: int = 16, on_batch=None) -> tuple[list[str], list[str]]:
    """Greedy transcripts of utterances: (the LLM's, [] with llm=False; the CTC head's)."""
    hyps: list[str] = []
    ctc: list[str] = []
    for i in range(0, len(utts), batch):
        x = feats.get(utts[i: i + batch])
        ctc += model.ctc_transcribe(x)
        if llm:
            hyps += model.transcribe(x, max_new_tokens)
        if on_batch:
            on_batch(len(x))
    return hyps, ctc


def evaluate(model: SpeechAdapter, feats: Features, dev: list[Utterance], s: TrainSettings,
             llm: bool = True) -> dict[str, Any]:
    """Dev WER of the LLM's greedy transcripts ("wer"; skipped with llm=False) and of the CTC head's ("ctc_wer")."""
    t0 = time.perf_counter()
    hyps, ctc = decode(model, feats, dev, s.max_new_tokens, llm)
    refs = [u.text for u in dev]
    out = {"ctc_wer": wer(refs, ctc), "n": len(dev), "decode_s": time.perf_counter() - t0}
    if llm:
        out["wer"] = wer(refs, hyps)
        out["wer_by_tts"] = {t: wer([u.text for u in dev if u.tts == t], [h for u, h in zip(dev, hyps) if u.tts == t])
                             for t in sorted({u.tts for u in dev})}
    out["examples"] = [{"ref": r, "hyp": h, "ctc": c} for r, h, c in list(zip(refs, hyps or ctc, ctc))[:6]]
    return out


def _save_checkpoint(path: Path, blob: dict) -> None:
    atomic_write(path, lambda f: torch.save(blob, f))


def splits(recipe: AdapterRecipe) -> tuple[list[Utterance], list[Utterance]]:
    """The training utterances (``train.sources`` applied) and the dev sample evaluated at each step."""
    s = recipe.train
    train_set = [u for u in read_manifest(recipe.corpus, "train") if u.duration]
    if s.sources is not None:
        unknown = set(s.sources) - {u.source for u in train_set}
        if unknown:
            raise AdapterError(f"train.sources: {sorted(unknown)} not in the corpus's train split")
        train_set = [u for u in train_set if u.source in s.sources]
    dev = [u for u in read_manifest(recipe.corpus, "dev") if u.duration]
    return train_set, random.Random(s.seed).sample(dev, min(s.dev_limit, len(dev)))


def train(recipe: AdapterRecipe) -> dict[str, Any]:
    s = recipe.train
    out = Path(recipe.out)
    out.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(s.threads)
    torch.manual_seed(s.seed)
    train_set, dev = splits(recipe)
    feats = Features(recipe)
    model = SpeechAdapter.build(recipe.model, feats.encoder.dim)
    params = [p for p in model.parameters() if p.requires_grad]
    prompt = [p for n, p in model.named_parameters() if p.requires_grad and n == "asr_prompt"]
    hearing = [p for n, p in model.named_parameters() if p.requires_grad and n != "asr_prompt"]
    groups = [{"params": hearing, "hearing": True}, {"params": prompt, "hearing": False}]
    opt = torch.optim.AdamW([g for g in groups if g["params"]], lr=s.lr, weight_decay=s.weight_decay)
    state = {"step": 0, "train_s": 0.0, "best_wer": None, "best_step": None}
    ckpt = out / "checkpoint.pt"
    if recipe.init and not ckpt.is_file():
        model.load_adapter(recipe.init)
    if ckpt.is_file():  # resume
        c = torch.load(ckpt, weights_only=False)
        model.load_state_dict(c["adapter"], strict=False)
        opt.load_state_dict(c["opt"])
        state = c["state"]
    replies: dict[str, list[int]] = {}
    if s.distill_weight > 0:
        from spokentod.adapter.distill import read_replies

        replies = read_replies(s.distill_replies or "")
        if not replies:
            raise AdapterError(f"train.distill_weight > 0 but train.distill_replies ({s.distill_replies}) has no "
                               "replies: run `spokentod adapter replies` first")
    rng = random.Random(f"{s.seed}:{state['step']}")
    # The reply pool is a small part of the corpus (thousands of 38k texts): drawn from the corpus like any
    # utterance, a batch of 8 would hold a replied one 2 times in 10, so it gets its own stream.
    pool = [u for u in train_set if u.text.strip() in replies]
    if replies and not pool:
        raise AdapterError(f"{s.distill_replies}: none of its texts is in the training split")
    n_kd = min(s.distill_items, s.batch_size, len(pool)) if pool else 0  # a batch can't hold more than the pool
    stream = _batches(train_set, s.batch_size - n_kd, s.bucket, rng) if s.batch_size > n_kd else None
    kd_stream = _batches(pool, n_kd, s.bucket, rng) if n_kd else None
    budget = s.budget_minutes * 60 if s.budget_minutes else float("inf")
    wall0 = time.perf_counter()
    model.train()
    with progress_bar("adapter", unit="steps") as bar, (out / "log.jsonl").open("a") as log:
        task = bar.add_task("train", total=s.steps, completed=state["step"])
        while state["step"] < s.steps and state["train_s"] < budget:
            step = state["step"]
            t0 = time.perf_counter()
            ce = step >= s.ctc_only_steps
            kd_batch = next(kd_stream) if kd_stream else []  # in the CTC-only phase: plain ASR items
            batch = (next(stream) if stream else []) + kd_batch
            x = feats.get(batch)
            for g in opt.param_groups:
                g["lr"] = lr_at(step, s) * (s.ce_hearing_lr_scale if ce and g["hearing"] else 1.0)
            # replies only for the pool's items: a main-stream item whose text was replied to must not take
            # one of the n_kd distillation places
            kd_from = len(batch) - len(kd_batch)
            losses = model.asr_losses(x, [u.text for u in batch], ce=ce, distill_items=n_kd,
                                      replies=[replies.get(u.text.strip()) if i >= kd_from else None
                                               for i, u in enumerate(batch)] if ce and kd_batch else None)
            loss = losses["ce"] + s.ctc_weight * losses["ctc"] if "ce" in losses else losses["ctc"]
            if "kd" in losses:
                loss = loss + s.distill_weight * losses["kd"]
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
            state["train_s"] += time.perf_counter() - t0
            state["step"] = step = step + 1
            bar.advance(task)
            if step % s.log_every == 0:
                row = {"step": step, **{k: round(float(v.detach()), 4) for k, v in losses.items()}, "lr": lr_at(step, s),
                       "train_s": round(state["train_s"], 1), "wall_s": round(time.perf_counter() - wall0, 1),
                       "frames": sum(len(f) for f in x), **({"kd_items": int(losses["kd_items"])} if "kd" in losses else {})}
                log.write(json.dumps(row) + "\n")
                log.flush()
            last = step >= s.steps or state["train_s"] >= budget
            if step % s.eval_every == 0 or last:
                # While only CTC trains, the LLM is decoded once, at the switch (a baseline for the CE phase):
                # decoding 96 utterances costs minutes, and before CE trains the prompt it reads poorly.
                llm = step >= s.ctc_only_steps
                ev = {"step": step, "train_s": round(state["train_s"], 1), **evaluate(model, feats, dev, s, llm)}
                with (out / "eval.jsonl").open("a") as f:
                    f.write(json.dumps(ev) + "\n")
                facts = {"step": step, "dev_wer": ev.get("wer"), "train_s": state["train_s"]}
                if llm and (state["best_wer"] is None or ev["wer"] < state["best_wer"]):
                    state["best_wer"], state["best_step"] = ev["wer"], step
                    model.save(out / "best", facts)
                if llm:  # also the latest: a distillation run trades some WER for replies like the text's,
                    model.save(out / "last", facts)  # which dev WER does not see; measure both
                bar.console.print(f"step {step}: dev WER {ev.get('wer', float('nan')):.3f} {ev.get('wer_by_tts')} "
                                  f"CTC {ev['ctc_wer']:.3f} (train {state['train_s'] / 60:.1f} min)")
            if step % s.save_every == 0 or last:
                _save_checkpoint(ckpt, {"adapter": model.adapter_state(), "opt": opt.state_dict(), "state": state})
    write_json(out / "summary.json", {**state, "recipe": recipe.model_dump(mode="json")})
    return state
