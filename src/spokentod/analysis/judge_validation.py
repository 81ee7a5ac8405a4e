"""The report's judge-validation section: for each scorer a run used (its LLM judge, its judge-free metric
groups), the judge-check figures on record (metrics/validation.py) or the plain statement that there are
none; and `check_section`, the page `bench judge-check` writes for one check."""

from __future__ import annotations

from typing import Any

from spokentod.analysis.document import Cell, Note, Section, View
from spokentod.analysis.load import Bench
from spokentod.metrics import validation as val
from spokentod.metrics.registry import available

HOW = ("Each scorer was run on replies of known quality: the corpus's gold agent reply and corruptions of it "
       "(a reply taken from another dialogue at the same position; the agent's previous turn repeated; a "
       "generic filler; the gold reply contradicting a detail the user gave). Pairwise accuracy is the share of "
       "(gold, corruption) pairs on which the scorer prefers the gold reply (ties count ½); 0.5 is chance. "
       "Brackets: 95 % bootstrap CI over dialogues; n: pairs scored. A pair with a missing judgement on either "
       "side is counted as missing, never scored. " + val.BAR_TEXT[0].upper() + val.BAR_TEXT[1:] + ". A judge-free "
       "metric measures one aspect (repetition, genericness...): its ✓ cells say which failures it can be trusted "
       "to detect; a judge is validated by its consistency score.")


def describe_source(src: dict[str, Any]) -> str:
    """'salesbot2 (MSGD_dataset.json, first 8)' for a check's DialogueSource."""
    what = src.get("corpus") or "manifest"
    where = src.get("path") or src.get("manifest")
    bits = [b for b in (where and where.replace("\\", "/").rsplit("/", 1)[-1],
                        src.get("limit") and f"first {src['limit']}") if b]
    return what + (f" ({', '.join(bits)})" if bits else "")


def _cell(p: dict[str, Any]) -> Cell:
    if not p.get("pairs"):
        return Cell("–", "muted", f"{p.get('missing', 0)} missing" if p.get("missing") else "not built")
    ok, _ = val.passes(p)
    sub = f"n={p['pairs']}" + (f", {p['missing']} missing" if p.get("missing") else "")
    return Cell(("✓ " if ok else "✗ ") + val.est(p), "sig" if ok else "drop", sub)


def scorer_view(scorers: dict[str, dict[str, Any]], labels: dict[str, str], caption: str) -> View:
    kinds = list(next(iter(scorers.values()))["pairwise"]) if scorers else []
    rows = []
    for s in scorers.values():
        v = val.verdict(s["pairwise"])
        verdict = Cell("validated", "sig") if v["validated"] else Cell(
            "not validated", "drop", "passes vs " + ", ".join(labels.get(k, k) for k in v["passed"]) if v["passed"] else "")
        rows.append([s["label"], *(_cell(s["pairwise"][k]) for k in kinds), verdict])
    return View(["scorer", *(f"vs {labels.get(k, k)}" for k in kinds), "verdict"], rows, caption)


def _rate(f: dict[str, Any]) -> Cell:
    if not f["n"]:
        return Cell("–", "muted", f"{f['missing']} missing" if f["missing"] else "")
    lo, hi = f["ci_low"], f["ci_high"]
    return Cell(f"{100 * f['rate']:.0f} % [{100 * lo:.0f}, {100 * hi:.0f}]", "", f"n={f['n']}")


def _flag_view(flags: list[dict[str, Any]], labels: dict[str, str]) -> View:
    kinds = list(dict.fromkeys(f["kind"] for f in flags))
    failures = list(dict.fromkeys(f["failure"] for f in flags))
    by = {(f["failure"], f["kind"]): f for f in flags}
    rows = [[f.replace("_", " "), *(_rate(by[(f, k)]) if (f, k) in by else Cell("–", "muted") for k in kinds)]
            for f in failures]
    return View(["failure flag", *(f"on {labels.get(k, k)}" for k in kinds)], rows,
                "How often each failure flag is raised, per reply kind (each corruption should raise its "
                "own flag far more often than gold does)")


def _judgement_note(s: dict[str, Any]) -> Note:
    parts = []
    for g, j in (s.get("judgements") or {}).items():
        reasons = "; ".join(f"{r} ×{n}" for r, n in list(j["missing_reasons"].items())[:3])
        parts.append(f"{g}: judged {j['judged']} of {j['replies']}, missing {j['missing']}"
                     + (f" ({reasons})" if reasons else ""))
    kind = "warn" if any(j["missing"] for j in (s.get("judgements") or {}).values()) else "note"
    return Note(f"Judge {s['label']}: " + "; ".join(parts) + ".", kind)


def check_section(result: dict[str, Any]) -> Section:
    """The figures of one `bench judge-check` (its judge_check.json)."""
    labels = result["labels"]
    s = Section("judge-check", "Judge check: which scores can be trusted, and by how much", HOW)
    skipped = "; ".join(f"{labels.get(k, k)}: {r} ×{n}" for k, rs in result["skipped"].items() for r, n in rs.items())
    s.blocks.append(Note(f"{result['dialogues']} dialogues, {result['positions']} positions; replies per kind: "
                         + ", ".join(f"{labels.get(k, k)} {n}" for k, n in result["replies"].items())
                         + (f". Not built: {skipped}" if skipped else "") + "."))
    for st in result["sets"]:
        if st["type"] == "judge":
            s.blocks.append(_judgement_note(st))
            if st.get("gave_up"):
                s.blocks.append(Note(st["gave_up"] + ".", "warn"))
            head = st["scorers"].get(val.JUDGE_HEADLINE)
            if head:
                s.blocks.append(Note(f"judge {st['label']} {head['line']}", "note" if st["validated"] else "warn"))
        caption = f"{st['name']}" + (f": {st['label']}" if st.get("label") else "")
        if st["scorers"]:
            s.blocks.append(scorer_view(st["scorers"], labels, caption))
        if st["flag_rates"]:
            s.blocks.append(_flag_view(st["flag_rates"], labels))
        if st["test_retest"]:
            s.blocks.append(_agreement_view([{"scorer": o, **r} for o, r in st["test_retest"].items()],
                                            f"{st['name']}: test-retest (first two of {result['judge_repeats']} "
                                            f"repeats at temperature {result['judge_temperature']})"))
    if result["agreement"]:
        s.blocks.append(_agreement_view(result["agreement"], "Agreement between judges (all replies pooled)"))
    for name, why in result.get("reference_based", {}).items():
        s.blocks.append(Note(f"{name} is left out: it {why}."))
    return s


def _num(x: Any, d: int = 2) -> str:
    return "–" if x is None else f"{x:.{d}f}"


def _agreement_view(rows: list[dict[str, Any]], caption: str) -> View:
    out = []
    for r in rows:
        r_text = _num(r.get("r")) + (f" [{_num(r.get('r_ci_low'))}, {_num(r.get('r_ci_high'))}]"
                                      if r.get("r_ci_low") is not None else "")
        out.append([r["scorer"], str(r["n"]), r_text if "r" in r else "–", _num(r.get("kappa")),
                    _num(r.get("exact")), _num(r.get("mean_abs_diff"), 1), _num(r.get("same_verdict"))])
    return View(["scorer", "n", "Pearson r", "kappa", "exact agreement", "mean |diff|", "same pairwise verdict"],
                out, caption)


# ---------------------------------------------------------------- in the bench report


def group_checks(summary: dict[str, Any]) -> list[tuple[str, dict[str, Any] | None]]:
    groups = available()
    out = []
    for g, info in (summary.get("metrics") or {}).items():
        m = groups.get(g)
        # judge-check's corruptions test what a reply says in its dialogue: the judge-free text metrics
        # (the judge has its own line; audio and latency metrics are not about the dialogue)
        if m is None or "dialogue" not in m.needs or "judge" in m.needs:
            continue
        model = m.identity() if m.identity else None
        checks = val.load_checks(val.group_key(g, info.get("version", "?"), model))
        out.append((g, checks[0] if checks else None))
    return out


def statuses(bench: Bench) -> list[tuple[Any, dict[str, Any] | None]]:
    return [(run, val.judge_status(run.summary.get("judge"))) for run in bench.runs]


def report_section(bench: Bench) -> Section:
    s = Section("validation", "Which scores can be trusted (judge-check)", HOW + " Figures come from the most "
                "recent `spokentod bench judge-check` of the same scorer (judge: same model, prompts and "
                "decoding settings; metric: same group version).")
    checked = set()
    for run, st in statuses(bench):
        if st is not None:
            kind = "note" if st["validated"] else "warn"
            if st["check"] is None:
                s.blocks.append(Note(f"Run {run.name}: {st['lines'][0]}.", "warn"))
            else:
                c = st["check"]
                s.blocks.append(Note(f"Run {run.name}: judge {st['label']} is "
                                     + ("validated" if st["validated"] else "NOT validated")
                                     + f" (its consistency score decides; checked on {c['check']['dialogues']} "
                                     f"dialogues of {describe_source(c['check']['source'])}, "
                                     f"{c['check']['created']}).", kind))
                if st["key"] not in checked:
                    s.blocks.append(scorer_view(c["scorers"], c.get("labels", {}), f"judge {st['label']}"))
                    if c.get("flag_rates"):
                        s.blocks.append(_flag_view(c["flag_rates"], c.get("labels", {})))
                checked.add(st["key"])
        for g, c in group_checks(run.summary):
            if c is None:
                s.blocks.append(Note(f"Run {run.name}: metric group {g} has no judge-check on record for this "
                                     "version: its scores are unvalidated.", "warn"))
            elif c["source_key"] not in checked:
                checked.add(c["source_key"])
                s.blocks.append(scorer_view(c["scorers"], c.get("labels", {}),
                                            f"{g} (checked on {c['check']['dialogues']} dialogues of "
                                            f"{describe_source(c['check']['source'])}, {c['check']['created']})"))
    if not s.blocks:
        s.blocks.append(Note("No judge or checkable metric group in these runs."))
    return s


def banner(bench: Bench) -> str | None:
    """One line per run judge that is not validated, with its figures, for the top of the report."""
    lines = []
    for run, st in statuses(bench):
        if st is None or st["validated"]:
            continue
        if st["check"] is None:
            lines.append(f"run {run.name}: {st['lines'][0]}")
        else:
            head = st["check"]["scorers"].get(val.JUDGE_HEADLINE)
            line = val.scorer_line(f"judge {st['label']} consistency", head["pairwise"], st["check"].get("labels")) \
                if head else f"judge {st['label']}: no consistency figures on record — not validated"
            lines.append(f"run {run.name}: {line}")
    return "Judge not validated — " + " | ".join(lines) if lines else None
