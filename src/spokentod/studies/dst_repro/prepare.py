"""The prepare stage: MultiWOZ dialogues pooled → split by domain → seeded, dialogue-disjoint
train/dev/test splits per side → user turns rendered with the embedded TTS → frozen-encoder features
computed once into the feature cache (see the package docstring for the whole study)."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import numpy as np

from spokentod.data import DialogueSource, load_dialogues
from spokentod.data.manifest import read_manifest, write_manifest
from spokentod.data.synth import synthesize_manifest
from spokentod.dst.data.domains import DomainSplit, split_by_domain
from spokentod.dst.data.examples import Filters, make_examples
from spokentod.dst.model.config import ModelConfig
from spokentod.dst.model.encoders import build_encoder
from spokentod.dst.model.features import FeatureCache
from spokentod.studies.dst_repro.config import (
    TARGET_SPEECH,
    TARGET_TTS,
    Prepare,
    ReproConfig,
    ReproError,
    Sizes,
    Voices,
    feature_root,
    used_sets,
)
from spokentod.studies.dst_repro.layout import Timings, data_dir, diff_paths, now_iso, read_json, write_json


def _load_pool(p: Prepare, root: Path | None = None) -> tuple[list, dict[str, str]]:
    """The dialogues of every path in `p.paths` (relative to `root` when given), pooled, and the path (as
    `p.paths` spells it) each dialogue id came from; a dialogue id in two of them is a ReproError (the splits
    are made by id)."""
    pool, seen = [], {}
    for path in p.paths:
        where = str(root / path) if root is not None else path
        dialogues, _ = load_dialogues(DialogueSource(corpus=p.corpus, path=where))
        for d in dialogues:
            if d.id in seen:
                raise ReproError(f"dialogue id {d.id!r} is in both {seen[d.id]} and {path}")
            seen[d.id] = path
            pool.append(d)
    return pool, seen


def _truncate(d, max_user_turns: int | None):
    if max_user_turns is None or len(d.user_turns) <= max_user_turns:
        return d
    last = d.user_turns[max_user_turns - 1].index
    return d.model_copy(update={"turns": d.turns[: last + 1]})


def assign_splits(source: list, target: list, sizes: Sizes, seed: int,
                  eval_ids: set[str] | None = None) -> dict[str, list]:
    """Seeded, dialogue-disjoint splits: per side a permutation of the sorted ids; test first, then dev,
    then train (so a larger train set keeps the same test and dev dialogues). With `eval_ids`, test and dev
    are drawn (in the same order) from those dialogues only; train from all the rest."""
    out: dict[str, list] = {}
    for side, group, key in (("source", source, 0), ("target", target, 1)):
        ordered = sorted(group, key=lambda d: d.id)
        perm = np.random.default_rng([seed, key]).permutation(len(ordered))
        queue = [ordered[i] for i in perm]
        n_test, n_dev = getattr(sizes, f"{side}_test"), getattr(sizes, f"{side}_dev")
        n_train = getattr(sizes, f"{side}_train")
        eligible = [d for d in queue if eval_ids is None or d.id in eval_ids]
        if n_test + n_dev > len(eligible):
            raise ReproError(f"prepare.dialogues: {side} test+dev need {n_test + n_dev} dialogues, the pool has "
                             f"{len(eligible)} {side}-only dialogues" + (" in eval_from" if eval_ids else ""))
        held = eligible[:n_test + n_dev]
        held_ids = {d.id for d in held}
        rest = [d for d in queue if d.id not in held_ids]
        if (n_train or 1) > len(rest):
            raise ReproError(f"prepare.dialogues: {side} test+dev+train need {n_test + n_dev + (n_train or 1)} "
                             f"dialogues, the pool has {len(queue)} {side}-only dialogues")
        out[f"{side}_test"] = held[:n_test]
        out[f"{side}_dev"] = held[n_test:]
        out[f"{side}_train"] = rest if n_train is None else rest[:n_train]
    return out


def split_dialogues(p: Prepare, root: Path | None = None) -> tuple[DomainSplit, dict[str, list]]:
    """The pooled `p.paths` (relative to `root` when given) split by domain (its counts go to split.json), and
    the study's splits (source_train, source_dev, source_test, target_...): per side into train/dev/test by
    `p.dialogues` and `p.split_seed`, dev and test drawn from `p.eval_from` only; each cut to `p.max_user_turns`."""
    pool, origin = _load_pool(p, root)
    split = split_by_domain(pool, set(p.source_domains), set(p.target_domains))
    eval_ids = None if p.eval_from is None else {i for i, path in origin.items() if path in p.eval_from}
    splits = assign_splits(split.source, split.target, p.dialogues, p.split_seed, eval_ids)
    return split, {k: [_truncate(x, p.max_user_turns) for x in v] for k, v in splits.items()}


def _render(raw_manifest: Path, out_dir: Path, v: Voices, progress: bool) -> Path:
    return synthesize_manifest(raw_manifest, out_dir, v.tts, list(v.voices), tts_config=v.tts_config or None,
                               progress=progress)


def _write_references(examples, path: Path) -> None:
    lines = [json.dumps({"dialogue_id": e.dialogue_id, "turn": e.turn, "state": e.state,
                         "transcript": e.transcript}, ensure_ascii=False) + "\n" for e in examples]
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text("".join(lines), encoding="utf-8")
    os.replace(tmp, path)


def _prepare_key(cfg: ReproConfig, out: Path) -> dict:
    return {"prepare": cfg.prepare.model_dump(mode="json"),
            "encoder": cfg.base.get("model", {}).get("encoder"), "features": feature_root(cfg, out)}


def prepare(cfg: ReproConfig, out: Path, progress: bool = True, timings: Timings | None = None) -> dict:
    """Split, write text manifests, render speech, compute features, write references and split.json."""
    p, d = cfg.prepare, data_dir(out)
    key, need = _prepare_key(cfg, out), used_sets(cfg)
    done = read_json(d / "prepare.done")
    if done is not None:
        if done.get("key") != key:
            raise ReproError(f"{d} was prepared with another config ({', '.join(diff_paths(done.get('key'), key))} "
                             f"differ); use a new --out or delete {d}")
        if need <= set(done.get("sets", [])):
            return {"skipped": True}
        # A condition now needs a set that was not made: the split is deterministic, so prepare again
        # (what exists is kept: rendering and features skip finished files).
    t0 = time.perf_counter()
    split, splits = split_dialogues(p)
    raw = d / "raw"
    for name, dialogues in splits.items():
        write_manifest(raw / f"{name}.jsonl", dialogues)
    write_manifest(raw / "dev.jsonl", splits["source_dev"] + splits["target_dev"])
    split_s = time.perf_counter() - t0

    jobs = [("source_train", raw / "source_train.jsonl", p.render.train),
            ("dev", raw / "dev.jsonl", p.render.heldout),
            ("source_test", raw / "source_test.jsonl", p.render.heldout),
            ("target_test", raw / "target_test.jsonl", p.render.heldout)]
    if TARGET_SPEECH in need:
        jobs.insert(1, ("target_train", raw / "target_train.jsonl", p.render.train))
    if TARGET_TTS in need:
        jobs.insert(2, ("target_tts", raw / "target_train.jsonl", p.render.augment))
    render_s: dict[str, float] = {}
    for name, src, voices in jobs:
        t = time.perf_counter()
        if progress:
            print(f"prepare: rendering {name} with {voices.tts} {voices.voices}", flush=True)
        _render(src, d / name, voices, progress)
        render_s[name] = time.perf_counter() - t
        if timings:
            timings.unit(f"prepare:render:{name}", render_s[name])

    # What every set holds, and what the default filters drop from it (nothing is dropped silently).
    examples: dict[str, dict] = {}
    audio: list[str] = []
    for name, _, _ in jobs:
        m = d / name / "manifest.jsonl"
        exs, rep = make_examples(read_manifest(m), "speech", m.parent, Filters())
        examples[name] = rep.as_dict() | {"audio_s": round(sum(e.duration or 0 for e in exs), 1)}
        audio += [e.audio for e in exs]
        if name in ("dev", "source_test", "target_test"):
            _write_references(exs, d / name / "references.jsonl")
    for name in ("source_train", "target_train"):
        _, rep = make_examples(read_manifest(raw / f"{name}.jsonl"), "text", None, Filters())
        examples[f"{name} (text)"] = rep.as_dict()

    feat_s = 0.0
    if p.features and audio:
        t = time.perf_counter()
        enc_cfg = ModelConfig.model_validate(cfg.base.get("model", {})).encoder
        if not enc_cfg.freeze:
            feat_s = 0.0  # a trainable encoder is never cached
        else:
            cache = FeatureCache(build_encoder(enc_cfg), feature_root(cfg, out), progress=progress)
            if progress:
                print(f"prepare: encoder features for {len(audio)} utterances (cached ones are skipped)", flush=True)
            for i in range(0, len(audio), 64):  # chunks: each file is stored as soon as it is computed
                cache.get(audio[i:i + 64])
            feat_s = time.perf_counter() - t
            if timings:
                timings.unit("prepare:features", feat_s)

    def count(group):
        return {"dialogues": len(group), "user_turns": sum(len(x.user_turns) for x in group)}

    info = {
        "corpus": p.corpus, "paths": p.paths, "pool": count([d for part in (*split, split.no_domain) for d in part]),
        "source_domains": sorted(set(p.source_domains)), "target_domains": sorted(set(p.target_domains)),
        "source_only": count(split.source), "target_only": count(split.target),
        "mixed_left_out": count(split.mixed), "no_domain_left_out": count(split.no_domain),
        "split_seed": p.split_seed, "eval_from": p.eval_from, "max_user_turns": p.max_user_turns,
        "splits": {k: count(v) | {"ids": [x.id for x in v]} for k, v in splits.items()},
        "voices": {name: {"tts": v.tts, "voices": v.voices, "tts_config": v.tts_config} for name, _, v in jobs},
        "examples": examples,
        "seconds": {"split": round(split_s, 2), "render": {k: round(v, 2) for k, v in render_s.items()},
                    "features": round(feat_s, 2)},
        "utterances_encoded": len(audio),
    }
    write_json(d / "split.json", info)
    write_json(d / "prepare.done", {"key": key, "sets": sorted(need), "at": now_iso()})
    return {"skipped": False, "utterances": len(audio), **info["seconds"]}
