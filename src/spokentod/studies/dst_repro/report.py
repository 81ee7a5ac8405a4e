"""The reproduction report (markdown; plots.py draws its figures), written from a repro out dir's files only.

    write_report("runs/dst/repro", "reports/dst_repro.md")   # plots go to reports/dst_repro/*.png

Every number and every verdict in it is computed here from <out>/results.json, split.json, timings.json,
repro.json and the runs' phase logs; nothing is typed in by hand. The headline states whether the reference
recipe's direction was reproduced: S+T > S on target-domain JGA with a paired-bootstrap 95% CI that excludes 0.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from spokentod.studies.dst_repro.config import TARGET_SETS, ReproError
from spokentod.studies.dst_repro.layout import (
    ADAPTER_PIN,
    ADAPTER_SIDECAR,
    file_hash,
    read_json,
    run_dir,
    step_log,
    train_unit,
)
from spokentod.studies.dst_repro.plots import by_condition, mean, write_plots

# A target-domain JGA below this for every condition means the models have barely learned the task; the
# report then says the comparison has little power (a fixed rule, applied to the numbers).
UNDERTRAINED_JGA = 0.05


def pct(x: float | None, signed: bool = False) -> str:
    if x is None:
        return "–"
    return f"{100 * x:+.1f}" if signed else f"{100 * x:.1f}"


def ci_text(ci: list[float] | None, signed: bool = False) -> str:
    return f"[{pct(ci[0], signed)}, {pct(ci[1], signed)}]" if ci else "(no CI)"


def contrast_statement(comparison: dict | None, contrast: dict) -> str:
    """The headline: did S+T beat S on target-domain JGA with a CI that excludes 0? From the numbers."""
    b, t, ts = contrast["baseline"], contrast["treatment"], contrast["test_set"]
    if not comparison or "pooled" not in comparison:
        why = comparison.get("error") if comparison else "no paired results for both conditions"
        return f"**Not determined:** the paired comparison {t} − {b} on {ts} could not be computed ({why})."
    p = comparison["pooled"]
    seeds = ", ".join(map(str, comparison["seeds"]))
    head = (f"{t} − {b} on {ts} JGA = {pct(p['diff'], True)} points ({pct(p['treatment_value'])} % vs "
            f"{pct(p['base_value'])} %; paired bootstrap over {p['dialogues']} dialogues, {p['samples']} samples, "
            f"seeds {seeds} pooled)")
    if "ci" not in p:
        return f"**Not determined:** {head}; no CI was computed (eval.bootstrap is 0)."
    lo, hi = p["ci"]
    level = f"{round(100 * p['level'])} % CI {ci_text(p['ci'], True)}"
    if contrast.get("max_half_width"):  # the study's power: is the CI narrow enough to answer?
        half, goal = (hi - lo) / 2, contrast["max_half_width"]
        head += (f"; CI half-width ±{100 * half:.1f} points, "
                 f"{'within' if half <= goal else 'wider than'} the power goal of ±{100 * goal:.0f}")
    if lo > 0:
        return f"**Reproduced:** {t} > {b} on target-domain JGA with a {level} that excludes 0. {head}."
    if hi < 0:
        return (f"**Not reproduced (opposite direction):** {t} < {b} on target-domain JGA with a {level} that "
                f"excludes 0. {head}.")
    return (f"**Not reproduced:** the {level} of {t} − {b} on target-domain JGA includes 0, so this run does not "
            f"show that {t} > {b}. {head}.")


def floor_top(floor: dict) -> float:
    """The top of the empty-state floor's JGA CI (its JGA when it has none): what a run's CI must clear."""
    return (floor.get("jga_ci") or [None, floor["jga"]])[1]


def above_floor(row: dict | None, floor: dict | None) -> str:
    """Whether a run beats the empty-state floor on a test set: its JGA CI above the floor's (disjoint)."""
    if not row or not floor or row.get("jga") is None or floor.get("jga") is None:
        return "–"
    if (row.get("jga_ci") or [row["jga"]])[0] > floor_top(floor):
        return "yes"
    return "above, CIs overlap" if row["jga"] > floor["jga"] else "no"


def floor_statement(results: dict) -> str | None:
    """The in-domain check: does every run beat the empty-state floor on the test set all conditions train on?"""
    ts = results["contrast"].get("in_domain")
    floor = (results.get("trivial") or {}).get(ts)
    rows = [r for r in results["rows"] if r["test_set"] == ts]
    if not ts or not floor or not rows:
        return None
    verdicts = {f"{r['condition']}/seed{r['seed']}": above_floor(r, floor) for r in rows}
    bad = [k for k, v in verdicts.items() if v != "yes"]
    head = (f"{len(rows) - len(bad)} of {len(rows)} runs score above the empty-state floor on their in-domain "
            f"test ({ts}: floor {pct(floor['jga'])} % {ci_text(floor.get('jga_ci'))}) with disjoint 95 % CIs")
    return (f"**In-domain check passed:** {head}." if not bad else
            f"**In-domain check failed:** {head}; not: {', '.join(f'{k} ({verdicts[k]})' for k in bad)}.")


def _adapter_meta(name: str, out: Path | None) -> dict:
    """The sidecar of the speech adapter the study ran with: its copy in <out>, else the package's while the
    package still holds that adapter (the pin's hash of adapter.json), else {} (figures unknown)."""
    from spokentod.adapter import adapter_dir

    if out is not None and (out / ADAPTER_SIDECAR).is_file():
        return read_json(out / ADAPTER_SIDECAR, {})
    path = adapter_dir(name) / "adapter.json"
    pin = read_json(out / ADAPTER_PIN, None) if out is not None else None
    if not path.is_file() or (pin and pin.get("files", {}).get("adapter.json") != file_hash(path)):
        return {}
    return read_json(path, {})


def _reads(meta: dict) -> str:
    """How the adapter hands speech to the LLM (its config's compress), e.g. ", read as soft tokens"."""
    how = (meta.get("config") or {}).get("compress")
    return {"soft": ", read as soft tokens", "ctc": ", read as CTC segments"}.get(how, f", compress: {how}" if how else "")


def _phase1_line(base: dict, seeds: list, out: Path | None = None) -> str:
    """Phase 1 as this study ran it: trained here once, or the shipped speech adapter (with its figures)."""
    if base.get("speech_adapter"):
        meta = _adapter_meta(base["speech_adapter"], out)
        tr, test = meta.get("trained") or {}, (meta.get("measured") or {}).get("test") or {}
        figs = ", ".join(x for x in (
            f"dev WER {pct(tr['dev_wer_at_selection'])} % at selection" if tr.get("dev_wer_at_selection") else "",
            f"test WER {pct(test['wer'])} % on {test.get('n')} held-out utterances" if test.get("wer") else "") if x)
        return (f"Phase 1: not run here; every condition starts phase 2 from the speech adapter "
                f"`{base['speech_adapter']}` (its connector and CTC head{_reads(meta)}; {tr.get('step', '?')} steps on "
                f"{tr.get('train_minutes', '?')} min of CPU{'; ' + figs if figs else ''}; reports/speech_adapter.md).")
    p1 = base.get("phase1") or {}
    return (f"Phase 1 (once, shared, seed {seeds[0] if seeds else '?'}): {p1.get('steps')} steps, batch "
            f"{p1.get('batch_size')}, lr {p1.get('lr')}, on the source training speech.")


def likely_reasons(results: dict, phase1_evals: list[dict], cascades: list[str]) -> list[str]:
    """Rule-based diagnosis of a weak result, each line computed from the run's numbers: did phase 1 teach
    the connector to transcribe, are the trackers' own transcripts usable, does any run beat the empty-state
    floor, and does the Cascade (good transcripts, same LLM) do better than the speech conditions."""
    rows, contrast = results["rows"], results["contrast"]
    ts = contrast["test_set"]
    out: list[str] = []
    if phase1_evals:
        best = min(phase1_evals, key=lambda e: e["wer"])
        if best["wer"] >= 0.8:
            out.append(f"Phase 1 did not teach the connector to transcribe: its best dev WER was {pct(best['wer'])} % "
                       f"(step {best['step']} of {phase1_evals[-1]['step']}). The LLM gets next to nothing usable "
                       "from the speech embeddings, so whatever the speech conditions learn in phase 2 has to come "
                       "through an almost closed channel.")
    speech_wers = [r["wer"] for r in rows if r["test_set"] == ts and r["condition"] not in cascades
                   and r.get("wer") is not None]
    if speech_wers and min(speech_wers) >= 0.8:
        out.append(f"The speech trackers' own transcripts of the {ts} user turns are mostly wrong (WER "
                   f"{pct(min(speech_wers))}–{pct(max(speech_wers))} %), and the state is tracked from them and from "
                   "the predicted history.")
    floor = (results.get("trivial") or {}).get(ts, {}).get("jga")
    jgas = [r["jga"] for r in rows if r["test_set"] == ts]
    if floor is not None and jgas:
        above = sum(j > floor for j in jgas)
        out.append(f"{above} of {len(jgas)} runs score above the empty-state floor on {ts} ({pct(floor)} %; best run "
                   f"{pct(max(jgas))} %)." + (" On JGA no run does better than predicting nothing." if not
                                               above else ""))
    asr = next((a for a in (results.get("asr") or {}).values() if a.get("test_set") == ts), None)
    for c in cascades:
        cj = [r["jga"] for r in rows if r["test_set"] == ts and r["condition"] == c]
        if cj and asr and asr.get("wer") is not None:
            out.append(f"The {c} reads {(asr.get('asr') or {}).get('model') or 'ASR'} transcripts (WER {pct(asr['wer'])} %) "
                       f"with the same LLM and budget and scores {pct(max(cj))} %: "
                       + ("so the budget is too small to learn the state format on new domains even from good "
                          "text, and the speech path is not the only bottleneck." if max(cj) < UNDERTRAINED_JGA else
                          "the text path learns where the speech path does not."))
    return out


def _weight(loss: dict, cfg: dict) -> float:
    """The weight a loss trained with (repro.condition_recipe: target-data losses default to target_weight)."""

    if "weight" in loss:
        return loss["weight"]
    return cfg.get("target_weight", 1.0) if loss.get("data") in TARGET_SETS else 1.0


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)] + \
        ["| " + " | ".join(r) + " |" for r in rows]


def _hms(seconds: float | None) -> str:
    if seconds is None:
        return "–"
    s = round(seconds)
    return f"{s // 3600}h {s % 3600 // 60:02d}m {s % 60:02d}s" if s >= 3600 else f"{s // 60}m {s % 60:02d}s"


def write_report(out_dir: str | Path, report_path: str | Path) -> Path:
    """Write the markdown report at `report_path` and its plots in a folder beside it named after it."""
    out, report_path = Path(out_dir), Path(report_path)
    results = read_json(out / "results.json")
    if results is None:
        raise ReproError(f"{out / 'results.json'} does not exist: run the eval stage first")
    repro = read_json(out / "repro.json", {})
    split = read_json(out / "data" / "split.json", {})
    timings = read_json(out / "timings.json", {})
    cfg = repro.get("config", {})
    conditions = list(cfg.get("conditions", {}))
    seeds = cfg.get("seeds", [])
    runs = [(c, s) for c in conditions
            for s in (seeds if cfg["conditions"][c].get("all_seeds") else seeds[:1])]
    test_sets = cfg.get("eval", {}).get("test_sets", [])
    contrast = results["contrast"]
    fig_dir = report_path.with_suffix("")
    files = write_plots(out, fig_dir, results, conditions, runs, test_sets)
    rel = fig_dir.name
    rows = results["rows"]
    byc = by_condition(rows)
    comps = results["comparisons"]
    main = next((c for c in comps if c.get("main")), None)

    L: list[str] = ["# DST reproduction: does target-domain text lift target-domain JGA on speech?", ""]
    L += [("Written by `spokentod.studies.dst_repro.report.write_report` from the files of the run in "
          f"`{out}`; every number and verdict below is computed from them. Regenerate: "
          f"`spokentod dst repro-report {out} --report {report_path}`."), ""]
    L += ["## Result", "", contrast_statement(main, contrast), ""]
    if (floors := floor_statement(results)):
        L += [floors, ""]
    if main and "per_seed" in main:
        per = "; ".join(f"seed {s}: {pct(v['diff'], True)} {ci_text(v.get('ci'), True)}"
                        for s, v in main["per_seed"].items())
        L += [f"Per seed ({contrast['treatment']} − {contrast['baseline']}, points, 95% CI): {per}.", ""]
    target_jgas = [r["jga"] for r in rows if r["test_set"] == contrast["test_set"]]
    if target_jgas and max(target_jgas) < UNDERTRAINED_JGA:
        L += [(f"Every condition's {contrast['test_set']} JGA is below {pct(UNDERTRAINED_JGA)} % (highest "
              f"{pct(max(target_jgas))} %): at this budget the models have barely learned the task, so the "
              "comparison has little power either way; scale the steps and data up (see the config) before "
              "reading anything into the differences."), ""]
    cascades = [c for c in conditions if (cfg["conditions"][c].get("eval") or {}).get("asr")]
    p1e = step_log(out / "shared" / "phase1" / "eval.jsonl")  # phase 1 dev WER by step: reasons and text
    reasons = likely_reasons(results, p1e, cascades)
    if reasons:
        L += ["Likely reasons, read off this run's numbers:", ""] + [f"- {x}" for x in reasons] + [""]
    L += [("What the other conditions show (paired bootstrap against "
          f"{contrast['baseline']}, seeds they share pooled; points of JGA, 95% CI):"), ""]
    for c in comps:
        if "pooled" not in c:
            L.append(f"- {c['treatment']} on {c['test_set']}: not computed ({c.get('error')})")
            continue
        p = c["pooled"]
        verdict = ("higher, CI excludes 0" if p.get("ci") and p["ci"][0] > 0 else
                   "lower, CI excludes 0" if p.get("ci") and p["ci"][1] < 0 else "CI includes 0")
        L.append(f"- **{c['treatment']}** on {c['test_set']}: {pct(p['treatment_value'])} % vs "
                 f"{pct(p['base_value'])} % → {pct(p['diff'], True)} {ci_text(p.get('ci'), True)} ({verdict}; "
                 f"seeds {', '.join(map(str, c['seeds']))})")
    sec = [c for c in comps if c.get("secondary")]
    if sec:
        names = {"slot_f1": "slot F1", "slot_key_f1": "slot-key F1"}
        L += ["", ("Secondary metrics, the same paired bootstrap (micro F1 pooled over a resampled set of dialogues; "
              "points, 95% CI). They can move when JGA cannot (a turn is right only when every slot is), but "
              "the verdict above is on JGA:"), ""]
        L += _table(["treatment − " + contrast["baseline"], "test set"] + [f"{n} diff [CI]" for n in names.values()],
                    [[c["treatment"], c["test_set"]]
                     + [f"{pct(c['secondary'][m]['treatment_value'])} vs {pct(c['secondary'][m]['base_value'])} → "
                        f"{pct(c['secondary'][m]['diff'], True)} {ci_text(c['secondary'][m].get('ci'), True)}"
                        for m in names] for c in sec])
    bad = [f"{r['condition']}/seed{r['seed']}/{r['test_set']}" for r in rows if not r["per_dialogue_consistent"]]
    if bad:
        L += ["", (f"Warning: the per-dialogue scores behind the paired bootstrap do not add up to the file "
              f"score for {', '.join(bad)}.")]
    missing = [f"{r['condition']}/seed{r['seed']}/{r['test_set']}: {r['missing_turns']}" for r in rows
               if r.get("missing_turns")]
    if missing:
        L += ["", f"Turns without a usable prediction (counted wrong): {'; '.join(missing)}."]

    # --- results table
    L += ["", "## JGA per condition", "", f"![JGA per condition]({rel}/{files['jga']})", ""]
    header = ["condition", "seed"] + [f"{ts} JGA % [95% CI]" for ts in test_sets] + \
        [f"{ts} slot-key F1 %" for ts in test_sets] + [f"{ts} WER %" for ts in test_sets] + \
        ["best step / steps", "dev JGA % (best)"]
    in_domain = contrast.get("in_domain")
    floor_of = (results.get("trivial") or {}).get(in_domain)
    if floor_of:
        header.append(f"above the floor on {in_domain}")
    table = []
    for c, s in runs:
        r_by = {r["test_set"]: r for r in rows if r["condition"] == c and r["seed"] == s}
        any_r = next(iter(r_by.values()), {})
        table.append([c, str(s)] + [f"{pct(r_by[ts]['jga'])} {ci_text(r_by[ts].get('jga_ci'))}" if ts in r_by
                                    else "–" for ts in test_sets]
                     + [pct(r_by[ts].get("slot_key_f1")) if ts in r_by else "–" for ts in test_sets]
                     + [pct(r_by[ts].get("wer")) if ts in r_by else "–" for ts in test_sets]
                     + [f"{any_r.get('best_step')} / {any_r.get('steps')}", pct(any_r.get("dev_best"))]
                     + ([above_floor(r_by.get(in_domain), floor_of)] if floor_of else []))
    for c in conditions:
        if sum(1 for x in runs if x[0] == c) > 1:
            table.append([f"**{c}** (mean)", "all"]
                         + [pct(mean([r["jga"] for r in byc[c][ts]])) for ts in test_sets]
                         + [pct(mean([r.get("slot_key_f1") for r in byc[c][ts]])) for ts in test_sets]
                         + [pct(mean([r.get("wer") for r in byc[c][ts]])) for ts in test_sets]
                         + ["", ""] + ([""] if floor_of else []))
    L += _table(header, table)
    L += ["", ("JGA: normalized + fuzzy-matched to the MultiWOZ ontology (score.py), predicted transcripts of earlier "
          "user turns in the history; CI: percentile bootstrap over dialogues "
          f"({results.get('bootstrap')} samples). WER: the tracker's own transcript of each user turn.")]
    if results.get("asr"):
        L += ["", "Cascade first stage (ASR transcripts of the test audio): " + "; ".join(
            f"{a['test_set']}: WER {pct(a['wer'])} % ({a['asr'].get('name') if a.get('asr') else '?'}"
            f"{', ' + a['asr'].get('model') if a.get('asr') and a['asr'].get('model') else ''})"
            for a in results["asr"].values()) + "."]

    if results.get("trivial"):
        L += ["", "Floor — predicting an empty state at every turn scores JGA " + "; ".join(
            f"{pct(t['jga'])} %{' ' + ci_text(t['jga_ci']) if t.get('jga_ci') else ''} on {ts} ({t['turns']} turns)"
            for ts, t in results["trivial"].items())
            + " (turns whose gold state is still empty count right)."]

    # --- the paper's Table 4 view: recognition next to tracking, per condition (mean over seeds)
    L += ["", "## Recognition next to tracking (the paper's Table 4 view)", ""]
    t4 = []
    for ts in test_sets:
        for c in conditions:
            rs = byc.get(c, {}).get(ts, [])
            if rs:
                t4.append([c, ts, str(len(rs))] + [pct(mean([r.get(k) for r in rs]))
                                                   for k in ("wer", "entity_wer", "slot_key_f1", "slot_f1", "jga")])
    L += _table(["condition", "test set", "seeds", "WER %", "entity WER %", "slot-key F1 %", "slot F1 %", "JGA %"],
                t4)
    L += ["", ("WER and entity WER are of the tracker's own transcript of each user turn (entity WER counts errors "
          "only inside spans that spell a gold slot value); slot-key F1 scores which slots were predicted, "
          "whatever their values. Lower WER with the same slot-key F1 means text training moved recognition but "
          "not the state; higher slot-key F1 with the same WER means it moved the LLM's state format.")]

    # --- per domain
    L += ["", "## Per-domain JGA (mean over seeds)", "", f"![per-domain JGA]({rel}/{files['per_domain']})", ""]
    for ts in test_sets:
        domains = sorted({d for r in rows if r["test_set"] == ts for d in r["per_domain"]})
        if not domains:
            continue
        turns = next((r["per_domain_turns"] for r in rows if r["test_set"] == ts), {})
        L += [f"{ts}:", ""]
        L += _table(["condition"] + [f"{d} ({turns.get(d, '?')} turns)" for d in domains],
                    [[c] + [pct(mean([r["per_domain"].get(d) for r in byc.get(c, {}).get(ts, [])]))
                            for d in domains] for c in conditions])
        L.append("")
    L += [f"![WER and slot-key F1]({rel}/{files['metrics']})", ""]

    # --- learning curves
    L += ["## Learning curves", "", f"![learning curves]({rel}/{files['curves']})", ""]
    lc = []
    step_s = {}  # a training unit → its steps' seconds in its own step log (for the wall-time table)
    for c, s in runs:
        log = step_log(run_dir(out, c, s) / "phase2" / "log.jsonl")
        if log:
            step_s[train_unit(c, s)] = sum(r.get("seconds", 0.0) for r in log)
        ev = step_log(run_dir(out, c, s) / "phase2" / "eval.jsonl")
        k = max(1, len(log) // 5)
        first = sum(r["loss"] for r in log[:k]) / k if log else None
        last = sum(r["loss"] for r in log[-k:]) / k if log else None
        prefix = cfg["conditions"][c]["losses"][0].get("prefix", "speech")
        dev_on = "speech" if prefix in ("speech", "text_encoder") else f"gold text ({prefix})"
        lc.append([c, str(s), f"{first:.3f}" if first is not None else "–", f"{last:.3f}" if last is not None else "–",
                   ", ".join(f"{e['step']}: {pct(e.get('jga'))}" for e in ev) or "–", dev_on])
    L += _table(["condition", "seed", "train loss (first 20 % of steps)", "train loss (last 20 %)",
                 "dev JGA % by step", "dev tracked on"], lc)
    L += ["", ("Dev JGA comes from train.py's validation, which tracks the dev set in the mode of each condition's "
          "first loss: a text-only condition (the Cascade) is validated on gold transcripts, so its dev JGA is not "
          "comparable with the speech conditions'. Total losses differ in scale because the conditions sum "
          "different numbers of losses.")]
    if p1e:
        L += ["", "Phase 1 (shared ASR pre-training) dev WER by step: "
              + ", ".join(f"{e['step']}: {pct(e['wer'])} %" for e in p1e) + "."]

    # --- setup
    L += ["", "## Setup", ""]
    if split:
        sp = split["splits"]
        L += [f"Data: {split['corpus']} from {', '.join(split['paths'])}, pooled: {split['pool']['dialogues']} "
              f"dialogues. Source domains {', '.join(split['source_domains'])}: "
              f"{split['source_only']['dialogues']} dialogues ({split['source_only']['user_turns']} user turns); "
              f"target domains {', '.join(split['target_domains'])}: {split['target_only']['dialogues']} dialogues "
              f"({split['target_only']['user_turns']} user turns). Left out: "
              f"{split['mixed_left_out']['dialogues']} mixed dialogues ({split['mixed_left_out']['user_turns']} user "
              f"turns; they touch both sides or a domain in neither) and {split['no_domain_left_out']['dialogues']} "
              f"with no domain. Splits (seed {split['split_seed']}, dialogue-disjoint; test drawn first"
              + (f"; dev and test only from {', '.join(split['eval_from'])}" if split.get("eval_from") else "") + ")"
              + (f", each dialogue cut to its first {split['max_user_turns']} user turns" if split.get("max_user_turns")
                 else "") + ":", ""]
        L += _table(["split", "dialogues", "user turns"],
                    [[k, str(v["dialogues"]), str(v["user_turns"])] for k, v in sp.items()])
        L += ["", "Speech (rendered with the embedded TTS; dev/test voices are never used for training):", ""]
        L += _table(["set", "TTS", "voices", "audio (s)", "examples kept", "dropped (by reason)"],
                    [[k, v["tts"] + (f" {v['tts_config']}" if v.get("tts_config") else ""), ", ".join(v["voices"]),
                      str(split["examples"].get(k, {}).get("audio_s", "–")),
                      str(split["examples"].get(k, {}).get("kept", "–")),
                      (", ".join(f"{r} {n}" for r, n in split["examples"].get(k, {}).get("counts", {}).items())
                       or "none")]
                     for k, v in split["voices"].items()])

    base = cfg.get("base", {})
    p2 = base.get("phase2") or {}
    resolved = read_json(run_dir(out, *runs[0]) / "recipe.json", {}) if runs else {}
    model = resolved.get("model") or base.get("model", {})  # the full model config as trained

    def short(d: Any, keys: tuple[str, ...]) -> str:
        d = d if isinstance(d, dict) else {}
        return ", ".join(f"{k} {d[k]}" for k in keys if k in d)

    L += ["", (f"Model (as trained): LLM `{model.get('llm')}`; LoRA "
          f"{short(model.get('lora'), ('r', 'alpha', 'dropout', 'target_modules'))}; speech encoder "
          f"{short(model.get('encoder'), ('kind', 'model', 'compute_type', 'freeze'))}; connector "
          f"{short(model.get('connector'), ('width', 'layers', 'heads', 'ff', 'dropout'))}; text encoder "
          f"{short(model.get('text_encoder'), ('mode', 'layers'))}; speech compression "
          f"{model.get('compress', 'none')}; history: last {(model.get('history') or {}).get('max_turns', 'all')} "
          f"turns" + ("; the previous state in the prompt, the turn's update as the target (carry_state)"
                      if model.get("carry_state") else "") + "."), ""]
    seed_list = ", ".join(map(str, seeds))
    L += [_phase1_line(base, seeds, out) + " Phase 2 (every condition "
          f"alike): {p2.get('steps')} steps, batch {p2.get('batch_size')} per loss, lr {p2.get('lr')}, warm-up "
          f"{p2.get('warmup')}, dev evaluation every {p2.get('eval_every')} steps (the best dev checkpoint is "
          f"tracked). Seeds {seed_list} for the conditions marked all seeds, seed {seeds[0] if seeds else '?'} for "
          f"the others. Target-domain loss weight {cfg.get('target_weight')}. Test sets: "
          + "; ".join(f"{ts} {r['dialogues']} dialogues, {r['turns']} user turns" for ts in test_sets
                      for r in [next((x for x in rows if x["test_set"] == ts), None)] if r) + ".", ""]
    crow = []
    for c in conditions:
        cc = cfg["conditions"][c]
        losses = ", ".join(f"{x['name']}({x.get('data') or 'batch of ' + str(x.get('batch_of'))}, "
                           f"{x.get('prefix', 'speech')}, w={_weight(x, cfg)})" for x in cc["losses"])
        ev = cc.get("eval", {})
        crow.append([c, losses, ev.get("mode", "speech") + (f" on {ev['asr'].get('name')} {ev['asr'].get('model', '')} "
                                                            "transcripts" if ev.get("asr") else ""),
                     "yes" if cc.get("all_seeds") else "no", json.dumps(cc.get("phase2") or {})])
    L += _table(["condition", "losses (data, prefix, weight)", "tracked with", "all seeds", "phase2 overrides"], crow)

    # --- time
    L += ["", "## Wall time", ""]
    st, units = timings.get("stages", {}), timings.get("units", {})
    # An invocation stopped before timings checkpointed units (older runs) lost its time from the stage
    # column; the units it finished are still in the second.
    by_stage = {k: sum(v for u, v in units.items() if u.split(":")[0] == k) for k in st}
    L += _table(["stage", "wall time (all invocations)", "its finished units, summed"],
                [[k, _hms(v), _hms(by_stage[k]) if by_stage[k] else ""] for k, v in st.items()]
                + [["**total**", _hms(timings.get("total_wall_s")), _hms(sum(by_stage.values()))]])
    if any(by_stage[k] > v + 60 for k, v in st.items()):
        L += ["", ("Some invocations were stopped before their time was recorded (a study resumed across "
              "sessions, before timings.json kept a running stage's time): the first column misses them; the "
              "second sums the finished units (training runs, tracked test sets), without the part of a unit "
              "that was cut off and redone.")]
    if units:
        cut = timings.get("cut_off", {})
        L += ["", "Per unit (summed over invocations" + ("; a unit a stop cut off counts its time before the stop "
              "too" if cut else "") + "). A training run's own step log sums its steps' time whatever was "
              "recorded (no model loading or dev evaluations): a unit far below it lost time to a stop.", ""]
        L += _table(["unit", "wall time"] + (["of it before a stop"] if cut else []) + ["its steps (step log)"],
                    [[k, _hms(v)] + ([_hms(cut[k]) if k in cut else ""] if cut else []) + [_hms(step_s[k]) if k in step_s else ""]
                     for k, v in units.items()])
    L += ["", ("(The report stage of the current invocation is still running while this is written, so its own "
          "time is not in the total.)")]

    # --- commands
    L += ["", "## Commands", "", "Every command run on this out dir, in order:", "", "```"]
    L += [f"{c['command']}    # {c['at']}" for c in repro.get("commands", [])] + ["```"]
    if repro.get("config_path"):
        L += ["", f"Config: `{repro['config_path']}` (resolved copy in `{out / 'repro.json'}`)."]
    L.append("")
    report_path.parent.mkdir(parents=True, exist_ok=True)
    report_path.write_text("\n".join(L), encoding="utf-8")
    return report_path
