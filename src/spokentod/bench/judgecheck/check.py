"""`spokentod bench judge-check`: validate scorers on replies of known quality (replies.py), scored through
the normal scoring path, and file the result where every later report of the same scorer finds it.

Flow: load the dialogues → build gold replies and corruptions at sampled positions → write them as a run
directory with one text-only "system" per reply kind (``scored/<set>/results/<kind>.jsonl``) → score it
with `metrics.score.score_run` (the judge-free groups once; each judge in a run directory of its own, so
two judges never overwrite each other) → figures (figures.py) → files, and the verdicts into the store
(metrics/validation.py).

Written into `out`:
    judge_check.json   everything below plus the bar and the provenance of every reply
    pairwise.csv       scorer x corruption: accuracy, 95 % CI, pairs, ties, dialogues, missing, passes
    flag_rates.csv     judge failure flag x reply kind: rate, Wilson CI, n, missing
    agreement.csv      test-retest (--judge-repeats > 1) and between-judge agreement
    replies.jsonl      the replies of known quality (kind, dialogue, turn, text, how each was built)
    judge_check.md, judge_check.html   the same figures as a page a person reads
    scored/<set>/      a scored run directory per scorer set (`bench report` works on it)
"""

from __future__ import annotations

import itertools
import json
import os
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from spokentod import __version__
from spokentod.atomic import atomic_write
from spokentod.bench.judgecheck import figures as fig
from spokentod.bench.judgecheck.replies import CORRUPTIONS, EXPECTED_FAILURE, KINDS, LABELS, Built, build
from spokentod.data.source import DialogueSource, load_dialogues
from spokentod.errors import SpokenTODError
from spokentod.metrics import judge_free_flags as jf
from spokentod.metrics import validation as val
from spokentod.metrics.judge_parse import FAILURES
from spokentod.metrics.registry import available, catalog, stable_hash
from spokentod.metrics.score import score_run
from spokentod.rundir.layout import METRICS, RESULTS, results_name
from spokentod.rundir.records import ResultRecord, RunMeta
from spokentod.rundir.store import latest_by_system, write_json_atomic

JUDGE_GROUPS = "judge_quality,judge_failures"
REFERENCE_BASED = {"sim_gold": "compares with the gold reply itself, so gold scores 1 by construction"}


class JudgeCheckError(SpokenTODError):
    pass


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def write_run(run_dir: Path, source: DialogueSource, built: Built) -> None:
    """The replies as a finished run of text-only systems, one per reply kind."""
    (run_dir / RESULTS).mkdir(parents=True, exist_ok=True)
    dataset = source.model_dump(exclude_none=True)
    for k in ("path", "manifest"):  # `bench score`/`report` of this folder may run from anywhere
        if dataset.get(k):
            dataset[k] = str(Path(dataset[k]).resolve())
    config = {"dataset": dataset,
              "systems": {k: {"type": "text"} for k in KINDS}, "judge_check": True}
    meta = RunMeta(spokentod_version=__version__, config=config, status="finished", started=_now(),
                   systems={k: {"type": "text", "reply": LABELS[k]} for k in KINDS})
    write_json_atomic(run_dir / "run.json", meta.to_json(exclude_unset=True))
    phase = {(p.dialogue_id, p.turn): p.phase for p in built.positions}
    for kind in KINDS:
        lines = [json.dumps(ResultRecord(system=kind, dialogue_id=c.dialogue_id, turn=c.turn, text=c.text,
                                         phase=phase[(c.dialogue_id, c.turn)], extra={"judge_check": c.info},
                                         finished=_now()).to_json(), ensure_ascii=False) + "\n"
                 for c in built.by_kind(kind)]
        atomic_write(run_dir / RESULTS / results_name(kind), "".join(lines))


def _scores(records: dict[str, dict[tuple, dict]], output: str) -> dict[tuple[str, str, int], tuple]:
    out = {}
    for kind, recs in records.items():
        for (did, turn, _), r in recs.items():
            v = (r.get("metrics") or {}).get(output)
            out[(kind, did, turn)] = (v, None if v is not None else (r.get("missing") or {}).get(output, "not computed"))
    return out


def _repeats(records: dict[str, dict[tuple, dict]], output: str) -> dict[tuple[str, str, int], list[float]]:
    block = "quality_judge" if output in ("naturalness", "consistency") else "failures_judge"
    out = {}
    for kind, recs in records.items():
        for (did, turn, _), r in recs.items():
            rep = (((r.get("judge") or {}).get(block) or {}).get("repeats") or {}).get(output) or {}
            if rep.get("values"):
                out[(kind, did, turn)] = [float(v) for v in rep["values"]]
    return out


def _judgements(records: dict[str, dict[tuple, dict]], groups: dict[str, list[str]]) -> dict[str, Any]:
    """Per judge group: replies, judged (any output), missing (none) and the reasons of the missing."""
    out = {}
    for g, outputs in groups.items():
        recs = [r for rs in records.values() for r in rs.values()]
        miss = [r for r in recs if all((r.get("metrics") or {}).get(o) is None for o in outputs)]
        reasons = Counter((r.get("missing") or {}).get(outputs[0], "not computed") for r in miss)
        out[g] = {"replies": len(recs), "judged": len(recs) - len(miss), "missing": len(miss),
                  "missing_reasons": dict(reasons.most_common())}
    return out


def _unanswered(run_dir: Path, probe: int) -> str | None:
    """Why the judge is given up on when none of the probe replies got a single value, else None."""
    recs = [r for rs in latest_by_system(run_dir / METRICS).values() for r in rs.values()]
    if any(v is not None for r in recs for v in (r.get("metrics") or {}).values()):
        return None
    why = Counter(next(iter((r.get("missing") or {}).values()), "not computed") for r in recs).most_common(1)
    return (f"not judged: the judge gave no usable value for any of the first {probe} replies "
            f"(e.g. {why[0][0] if why else 'no reason recorded'}); rerun with --probe 0 to judge every reply")


def _score_set(name: str, run_dir: Path, positions: list[tuple[str, int]], summary: dict[str, Any],
               n_boot: int, seed: int, built: Built, gave_up: str | None = None) -> dict[str, Any]:
    """Figures of one scorer set (the judge-free groups, or one judge) from its scored run directory.
    After `gave_up`, the replies never judged count as missing with that reason."""
    records = latest_by_system(run_dir / METRICS)
    cat = catalog()
    groups = {g: list(m["outputs"]) for g, m in summary["metrics"].items()}
    if gave_up:
        outputs = [o for g in groups.values() for o in g]
        for c in built.candidates:
            records.setdefault(c.kind, {}).setdefault((c.dialogue_id, c.turn, 0), {
                "metrics": dict.fromkeys(outputs), "missing": dict.fromkeys(outputs, gave_up)})
    scorers, flags, retest, scores = {}, [], {}, {}
    for g, outputs in groups.items():
        for o in outputs:
            facts = cat.get(o)
            if facts is None or facts.better == 0 or o in REFERENCE_BASED:
                continue
            s = scores[o] = _scores(records, o)
            pw = {c: fig.pairwise(s, positions, c, facts.better, n_boot, seed) for c in CORRUPTIONS}
            scorers[o] = {"label": facts.label, "group": g, "better": facts.better, "pairwise": pw,
                          "verdict": val.verdict(pw), "line": val.scorer_line(facts.label, pw, LABELS)}
            if (summary.get("judge") or {}).get("repeats", 1) > 1:
                retest[o] = fig.retest(_repeats(records, o), binary=facts.scale == "rate")
    flag_sets = [(f, f"fail_{f}_present", f) for f in FAILURES] if "judge_failures" in groups else []
    if "judge_free_flags" in groups:  # the judge-free flags, expected on the same corruptions
        flag_sets += [(f"jf_{f}", jf.flag_name(f), f) for f in jf.RULES]
    for flag, output, failure in flag_sets:
        s = scores.get(output) or _scores(records, output)
        for kind in KINDS:
            flags.append({"failure": flag, "kind": kind, "expected": EXPECTED_FAILURE.get(kind) == failure,
                          **fig.flag_rate(s, kind)})
    judge = summary.get("judge")
    out = {"name": name, "type": "judge" if judge else "metrics", "run_dir": str(run_dir),
           "wall_s": summary.get("wall_s"), "groups": {g: summary["metrics"][g]["version"] for g in groups},
           "scorers": scorers, "flag_rates": flags, "test_retest": retest, "_scores": scores, "gave_up": gave_up}
    if judge:
        out |= {"judge": judge, "key": val.judge_key(judge), "label": val.judge_label(judge),
                "judgements": _judgements(records, {g: groups[g] for g in groups if g.startswith("judge_")})}
        head = scorers.get(val.JUDGE_HEADLINE)
        out["validated"] = bool(head and head["verdict"]["validated"])
    return out


def judge_check(source: DialogueSource, out: str | os.PathLike, judges: list[Any] | None = None,
                metrics: str | list[str] | None = "judge_free,judge_free_flags", positions: int = 3, seed: int = 0,
                judge_repeats: int = 1, judge_temperature: float = 0.0, judge_max_tokens: int = 400,
                workers: int = 4, n_boot: int = 2000, cache: bool = True, store: bool = True, probe: int = 5,
                progress: bool = False) -> dict[str, Any]:
    """Build replies of known quality from `source`, score them with `metrics` (judge-free groups; None or
    "" for none) and each of `judges` (backend specs as `bench score --judge` takes them), and write the
    figures into `out`. A judge is first asked about `probe` replies; when it gives no usable value for any
    of them, the rest is recorded as not judged with that reason (0: judge everything). Returns the
    judge_check.json content."""
    t0 = time.perf_counter()
    judges = list(judges or [])
    if not judges and not metrics:
        raise JudgeCheckError("nothing to check: give --judge and/or judge-free --metrics")
    out = Path(out)
    dialogues, _ = load_dialogues(source)
    if not dialogues:
        raise JudgeCheckError(f"no dialogues loaded from {source.model_dump(exclude_none=True)}")
    built = build(dialogues, positions, seed)
    if not built.positions:
        raise JudgeCheckError("no position to check: no user turn is followed by an agent turn after an earlier "
                              "agent turn in these dialogues")
    out.mkdir(parents=True, exist_ok=True)
    pos = [(p.dialogue_id, p.turn) for p in built.positions]
    sets = []
    plan = ([("judge-free", None)] if metrics else []) + [(f"judge-{i + 1}", j) for i, j in enumerate(judges)]
    for name, judge in plan:
        run_dir = out / "scored" / name

        def score(replies: Built, judge: Any = judge, run_dir: Path = run_dir, name: str = name) -> dict[str, Any]:
            write_run(run_dir, source, replies)
            if progress:
                print(f"{name}: scoring {len(replies.candidates)} replies", flush=True)
            if judge is None:
                return score_run(run_dir, metrics=metrics, dialogues=dialogues, cache=cache, progress=progress)
            return score_run(run_dir, metrics=JUDGE_GROUPS, judge=judge, dialogues=dialogues, cache=cache,
                             judge_repeats=judge_repeats, judge_temperature=judge_temperature,
                             judge_max_tokens=judge_max_tokens, workers=workers, progress=progress)

        gave_up = None
        if judge is not None and 0 < probe < len(built.candidates):
            # a judge that cannot answer at all costs minutes per reply: try a few first (cached, not redone)
            summary = score(Built(built.positions, built.candidates[:probe], []))
            gave_up = _unanswered(run_dir, probe)
        if gave_up is None:
            summary = score(built)
        sets.append(_score_set(name, run_dir, pos, summary, n_boot, seed, built, gave_up))

    agreement = []
    for a, b in itertools.combinations([s for s in sets if s["type"] == "judge"], 2):
        for o in a["scorers"].keys() & b["scorers"].keys():
            binary = o.endswith("_present")
            agreement.append({"sets": [a["name"], b["name"]], "scorer": o,
                              **fig.between(a["_scores"][o], b["_scores"][o], binary),
                              **fig.preference_agreement(a["_scores"][o], b["_scores"][o], pos, CORRUPTIONS,
                                                          a["scorers"][o]["better"])})
    for s in sets:
        s.pop("_scores")
    result = {
        "version": 1, "created": _now(), "spokentod_version": __version__, "out": str(out.resolve()),
        "source": source.model_dump(exclude_none=True), "seed": seed, "positions_per_dialogue": positions,
        "dialogues": len(dialogues), "positions": len(built.positions),
        "replies": {k: len(built.by_kind(k)) for k in KINDS},
        "skipped": {k: dict(Counter(s["reason"] for s in built.skipped if s["kind"] == k)) for k in KINDS
                    if any(s["kind"] == k for s in built.skipped)},
        "memory_variants": dict(Counter(c.info.get("variant") for c in built.by_kind("memory"))),
        "labels": LABELS, "expected_failure": EXPECTED_FAILURE, "bar": val.BAR, "bar_text": val.BAR_TEXT,
        "reference_based": REFERENCE_BASED, "judge_repeats": judge_repeats,
        "judge_temperature": judge_temperature, "sets": sets, "agreement": agreement,
    }
    result["check_key"] = stable_hash({k: result[k] for k in ("source", "seed", "positions_per_dialogue")})[:12]
    _write_files(out, result, built)
    if store:
        result["stored"] = [str(p) for p in _store(result)]
    result["wall_s"] = round(time.perf_counter() - t0, 3)
    write_json_atomic(out / "judge_check.json", result)
    return result


def _store(result: dict[str, Any]) -> list[Path]:
    """One record per scorer source (a judge; a metric group) in the validation store."""
    check = {k: result[k] for k in ("source", "seed", "positions_per_dialogue", "dialogues", "positions",
                                    "replies", "created", "out", "check_key")}
    common = {"check": check, "labels": result["labels"], "bar": result["bar"]}
    paths = []
    for s in result["sets"]:
        if s["type"] == "judge":
            flags = [f for f in s["flag_rates"] if f["expected"] or f["kind"] == "gold"]
            payload = {"source_key": s["key"], "source": {"type": "judge", "label": s["label"], "describe": s["judge"]},
                       "scorers": s["scorers"], "flag_rates": flags, "judgements": s["judgements"],
                       "validated": s["validated"], "gave_up": s["gave_up"], **common}
            paths.append(val.save(s["key"], result["check_key"], payload))
            continue
        groups = available()
        for g, version in s["groups"].items():
            model = groups[g].identity() if g in groups and groups[g].identity else None
            key = val.group_key(g, version, model)
            scorers = {o: v for o, v in s["scorers"].items() if v["group"] == g}
            payload = {"source_key": key, "source": {"type": "metric_group", "group": g, "version": version,
                                                     "model": model}, "scorers": scorers, **common}
            paths.append(val.save(key, result["check_key"], payload))
    return paths


def _write_files(out: Path, result: dict[str, Any], built: Built) -> None:
    from spokentod.analysis.document import render_html, render_md
    from spokentod.analysis.judge_validation import check_section, describe_source
    from spokentod.analysis.report import write_csv

    rows = [{"set": s["name"], "scorer": o, "label": v["label"], "better": v["better"], "corruption": c,
             **{k: p[k] for k in ("accuracy", "ci_low", "ci_high", "pairs", "ties", "dialogues", "missing")},
             "passes": c in v["verdict"]["passed"], "validated": v["verdict"]["validated"]}
            for s in result["sets"] for o, v in s["scorers"].items() for c, p in v["pairwise"].items()]
    write_csv(out / "pairwise.csv", rows)
    write_csv(out / "flag_rates.csv", [{"set": s["name"], **{k: v for k, v in f.items() if k != "missing_reasons"}}
                                       for s in result["sets"] for f in s["flag_rates"]])
    agree = [{"type": "test-retest", "sets": s["name"], "scorer": o, **r} for s in result["sets"]
             for o, r in s["test_retest"].items()]
    agree += [{"type": "between judges", **a, "sets": " vs ".join(a["sets"])} for a in result["agreement"]]
    write_csv(out / "agreement.csv", agree)
    atomic_write(out / "replies.jsonl", "".join(
        json.dumps({"kind": c.kind, "dialogue_id": c.dialogue_id, "turn": c.turn, "text": c.text, **c.info},
                   ensure_ascii=False) + "\n" for c in built.candidates))
    section = check_section(result)
    header = [(f"judge-check of {describe_source(result['source'])}: {result['dialogues']} dialogues, "
              f"{result['positions']} positions, seed {result['seed']}; written {result['created']}.")]
    title = "spokentod bench report"  # document.py's title for a bench report; this page is a judge-check
    atomic_write(out / "judge_check.md", render_md([section], header, None, {}).replace(title, "spokentod judge-check"))
    atomic_write(out / "judge_check.html", render_html([section], header, None, {}).replace(title,
                                                                                             "spokentod judge-check"))
