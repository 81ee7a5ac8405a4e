"""Scoring the reproduction's runs: every (run, test set) through score_files, per-dialogue counts, and paired
bootstraps of each condition against the baseline (JGA, and slot F1 / slot-key F1 as secondary metrics)
→ the content of <out>/results.json."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from spokentod.dst.data import normalize as N
from spokentod.dst.data import ontology as O
from spokentod.dst.data.ontology import Matcher
from spokentod.dst.score.scorer import score, score_empty_states, score_files
from spokentod.dst.score.states import read_predictions, read_references
from spokentod.studies.dst_repro.config import ReproConfig
from spokentod.studies.dst_repro.layout import (
    data_dir,
    eval_dir,
    now_iso,
    read_json,
    read_lines,
    run_dir,
    write_json,
)


def _ontology(spec: str, refs):
    if spec == "auto":
        spec = O.guess({N.canonical_domain(it[0]) for d in refs for t in d for it in t.items})
    return O.load(spec, None, True)


# Per-dialogue (numerator, denominator) of each compared metric: pooled over dialogues they give the file's
# score (JGA = right turns / turns; micro F1 = 2 tp / (predicted + gold slots)).
PAIRED_METRICS = ("jga", "slot_f1", "slot_key_f1")


def dialogue_counts(pred_path: Path, ref_path: Path, ontology: str) -> dict[str, dict[str, tuple[int, int]]]:
    """Per reference dialogue: {metric: (numerator, denominator)}, scored exactly as score_files scores the
    whole file (same ontology, thresholds, policy), one dialogue at a time — for paired bootstraps."""
    refs = read_references(ref_path)
    preds = read_predictions(pred_path)
    matcher = Matcher(_ontology(ontology, refs), 90.0, 80.0, N.DEFAULT_POLICY)
    out = {}
    for dlg in refs:
        if dlg:
            r = score([dlg], preds, matcher)
            slots = int(r["slot_pred"] + r["slot_gold"])
            out[dlg[0].dialogue_id] = {"jga": (round(r["jga"] * r["turns"]), int(r["turns"])),
                                       "slot_f1": (2 * int(r["slot_tp"]), slots),
                                       "slot_key_f1": (2 * int(r["slot_key_tp"]), slots)}
    return out


def paired_bootstrap(base: list[dict[str, tuple[float, float]]], treat: list[dict[str, tuple[float, float]]],
                     samples: int, seed: int = 0, ci: float = 0.95) -> dict[str, Any]:
    """metric(treat) − metric(base) for a pooled ratio metric (sum of numerators / sum of denominators, e.g.
    JGA or micro F1) with a percentile CI, dialogues resampled with replacement. Each list holds one
    per-dialogue table {id: (numerator, denominator)} per seed (paired by position: same seed). Seeds are
    pooled by averaging a dialogue's numerator and denominator over them, so the dialogue stays the
    resampling unit."""
    if not base or len(base) != len(treat):
        raise ValueError("paired_bootstrap needs the same number (>0) of seeds on both sides")
    ids = sorted(base[0])
    for table in base + treat:
        if sorted(table) != ids:
            raise ValueError("paired_bootstrap: the runs scored different dialogues")

    def side(tables):
        arr = np.array([[t[i] for i in ids] for t in tables], dtype=float).reshape(len(tables), len(ids), 2)
        return arr.mean(axis=0).T  # (numerators, denominators) per dialogue

    (an, ad), (bn, bd) = side(base), side(treat)

    def ratio(num, den):
        return num.sum(-1) / np.maximum(den.sum(-1), 1e-12)

    out: dict[str, Any] = {"diff": float(ratio(bn, bd) - ratio(an, ad)), "base_value": float(ratio(an, ad)),
                           "treatment_value": float(ratio(bn, bd)), "dialogues": len(ids),
                           "samples": samples, "level": ci}
    if samples > 0 and ids:
        rng = np.random.default_rng(seed)
        idx = rng.integers(0, len(ids), size=(samples, len(ids)))
        stats = ratio(bn[idx], bd[idx]) - ratio(an[idx], ad[idx])
        lo, hi = np.quantile(stats, [(1 - ci) / 2, 1 - (1 - ci) / 2])
        out |= {"ci": [float(lo), float(hi)], "p_not_greater": float(np.mean(stats <= 0))}
    return out


def collect_results(cfg: ReproConfig, out: Path) -> dict[str, Any]:
    """Score every tracked (run, test set), then the paired comparisons; the content of results.json."""
    rows, counts = [], {}
    for condition, seed in cfg.runs():
        rd = run_dir(out, condition, seed)
        summary = read_json(rd / "phase2" / "summary.json", {})
        evals = [json.loads(x) for x in read_lines(rd / "phase2" / "eval.jsonl")]
        for test_set in cfg.eval.test_sets:
            d = eval_dir(out, condition, seed, test_set)
            pred, ref = d / "predictions.jsonl", data_dir(out) / test_set / "references.jsonl"
            if not (d / "predictions.done").is_file():
                continue
            s = score_files(pred, ref, ontology=cfg.eval.ontology, bootstrap=cfg.eval.bootstrap, seed=0)
            per = dialogue_counts(pred, ref, cfg.eval.ontology)
            counts[(condition, seed, test_set)] = per
            right, turns = (sum(c["jga"][k] for c in per.values()) for k in (0, 1))
            track_info = read_json(d / "track.json", {})
            write_json(d / "score.json", s)
            rows.append({
                "condition": condition, "seed": seed, "test_set": test_set,
                **{k: s.get(k) for k in ("jga", "jga_ci", "jga_exact", "slot_f1", "slot_key_f1", "wer",
                                         "entity_wer", "turns", "dialogues", "missing_turns",
                                         "malformed_records", "per_domain", "per_domain_turns")},
                "per_dialogue_consistent": turns == s["turns"] and abs(right / max(turns, 1) - s["jga"]) < 1e-9,
                "repaired": track_info.get("stats", {}).get("repaired"),
                "parse_errors": track_info.get("stats", {}).get("parse_errors"),
                "track_s": track_info.get("stats", {}).get("wall_s"),
                "best_step": summary.get("best_step"), "steps": summary.get("step"),
                "dev_best": (summary.get("best") or [None])[0] if isinstance(summary.get("best"), list)
                else summary.get("best"),  # the best dev JGA (its slot-F1 tie-breaker left out)
                "dev_curve": [{"step": e["step"], "jga": e.get("jga")} for e in evals],
                "mode": cfg.conditions[condition].eval.mode, "asr": cfg.conditions[condition].eval.asr,
            })
    comparisons = []
    base = cfg.contrast.baseline
    for condition in cfg.conditions:
        if condition == base:
            continue
        for test_set in cfg.eval.test_sets:
            seeds = [s for s in cfg.seeds_of(condition) if s in cfg.seeds_of(base)
                     and (base, s, test_set) in counts and (condition, s, test_set) in counts]
            if not seeds:
                continue
            entry = {"baseline": base, "treatment": condition, "test_set": test_set, "seeds": seeds}

            def tables(cond, metric, which=seeds, test_set=test_set):
                return [{i: c[metric] for i, c in counts[(cond, s, test_set)].items()} for s in which]

            try:
                entry["pooled"] = paired_bootstrap(tables(base, "jga"), tables(condition, "jga"),
                                                   cfg.eval.bootstrap)
                entry["per_seed"] = {str(s): paired_bootstrap(tables(base, "jga", [s]),
                                                              tables(condition, "jga", [s]), cfg.eval.bootstrap)
                                     for s in seeds}
                # secondary: more sensitive than JGA when every JGA is near 0; the verdict stays on JGA
                entry["secondary"] = {m: paired_bootstrap(tables(base, m), tables(condition, m),
                                                          cfg.eval.bootstrap)
                                      for m in PAIRED_METRICS if m != "jga"}
            except ValueError as e:
                entry["error"] = str(e)
            entry["main"] = (condition == cfg.contrast.treatment and test_set == cfg.contrast.test_set)
            comparisons.append(entry)
    asr = {}
    for p in sorted((out / "eval" / "asr").glob("*/*.json")):
        a = read_json(p, {})
        asr[f"{p.parent.name}/{p.stem}"] = {"asr": a.get("key", {}).get("asr"), "test_set": p.stem,
                                            "wer": a.get("wer"), "errors": len(a.get("errors", []))}
    trivial = {ts: trivial_baseline(cfg, out, ts) for ts in cfg.eval.test_sets
               if (data_dir(out) / ts / "references.jsonl").is_file()}
    return {"rows": rows, "comparisons": comparisons, "asr": asr, "trivial": trivial,
            "contrast": cfg.contrast.model_dump(), "seeds": cfg.seeds,
            "bootstrap": cfg.eval.bootstrap, "ontology": cfg.eval.ontology, "at": now_iso()}


def trivial_baseline(cfg: ReproConfig, out: Path, test_set: str) -> dict[str, Any]:
    """The score of predicting an empty state at every turn: the floor a JGA near 0 should be read against
    (turns whose gold state is still empty count right)."""
    s = score_empty_states(data_dir(out) / test_set / "references.jsonl",
                           out / "eval" / "trivial" / test_set / "predictions.jsonl", cfg.eval.ontology,
                           bootstrap=cfg.eval.bootstrap)
    return {k: s.get(k) for k in ("jga", "jga_ci", "slot_f1", "slot_key_f1", "turns")}
