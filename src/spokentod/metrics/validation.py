"""Whether a scorer has earned trust: the bar a judge-check must clear, the identity a check is filed under,
and the on-disk record that `bench score`, `bench report` and `judge-check` itself consult.

The bar (explicit, in BAR): a scorer passes a corruption type when its pairwise accuracy (gold preferred
over the corruption, ties 1/2) is at least 0.70 AND the lower end of its 95 % bootstrap CI is above 0.5
(chance), over at least 5 dialogues. A scorer is *validated* when it passes on every corruption type the
check could build; otherwise it falls short, and every line about it shows the figures it fell short with.
A judge as a whole (model + prompt versions + decoding settings) is validated when its `consistency` score
is: the prompt defines consistency as fitting the conversation (following the user, agreeing with earlier
turns, moving on sensibly), which every corruption breaks. Its other scores carry their own lines.

Identity: a judge is filed under `judge_key(describe)` (the `Judge.describe()` of metrics/judge.py, as in
metrics/summary.json: backend identity, the quality and failure prompts' sha256, max_tokens,
temperature, logprobs; not `repeats`); a metric group under `group_key(name, version, model identity)`.
Another model, prompt text or decoding setting is another key, with no figures until it is checked.

Store: ``<SPOKENTOD_CACHE>/judge_checks/<source key>/<check key>.json``, one file per (scorer source,
corpus + sampling); a rerun of the same check replaces its file.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from spokentod.atomic import atomic_write
from spokentod.metrics.registry import stable_hash
from spokentod.paths import cache_dir

BAR = {"accuracy": 0.70, "ci_low_above": 0.5, "min_dialogues": 5}
BAR_TEXT = (f"bar: pairwise accuracy ≥ {BAR['accuracy']:.2f} with its 95 % CI above {BAR['ci_low_above']:.2f} "
            f"on every corruption, over ≥ {BAR['min_dialogues']} dialogues")
JUDGE_HEADLINE = "consistency"  # the judge score that decides the judge's own verdict
JUDGE_PROMPTS = ("quality", "failures")  # the prompts behind the judge's text scores


def judge_key(describe: dict[str, Any]) -> str:
    prompts = describe.get("prompts") or {}
    return stable_hash({"backend": describe.get("backend"),
                        "prompts": {k: (prompts.get(k) or {}).get("sha256") for k in JUDGE_PROMPTS},
                        **{k: describe.get(k) for k in ("max_tokens", "temperature", "logprobs")}})[:16]


def group_key(name: str, version: str, model: Any = None) -> str:
    return stable_hash({"group": name, "version": str(version), "model": model})[:16]


def judge_label(describe: dict[str, Any]) -> str:
    b = describe.get("backend") or {}
    what = b.get("model") or b.get("gguf") or b.get("model_ref") or ""
    return " ".join(str(x) for x in (b.get("name"), what) if x) or "judge"


# ---------------------------------------------------------------- verdicts


def est(p: dict[str, Any] | None) -> str:
    """'0.54 [0.41, 0.66]' (or '0.54' without an interval, '–' without pairs)."""
    if not p or p.get("accuracy") is None:
        return "–"
    if p.get("ci_low") is None:
        return f"{p['accuracy']:.2f}"
    return f"{p['accuracy']:.2f} [{p['ci_low']:.2f}, {p['ci_high']:.2f}]"


def passes(p: dict[str, Any]) -> tuple[bool, str]:
    if not p.get("pairs"):
        return False, "no pairs scored"
    if p["dialogues"] < BAR["min_dialogues"]:
        return False, f"only {p['dialogues']} dialogue(s)"
    if p["accuracy"] < BAR["accuracy"]:
        return False, f"accuracy {p['accuracy']:.2f} < {BAR['accuracy']:.2f}"
    if p.get("ci_low") is None or p["ci_low"] <= BAR["ci_low_above"]:
        return False, "95 % CI reaches chance (0.5)"
    return True, "passes"


def verdict(pairwise: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Per corruption: passes or why not; validated when every corruption with pairs passes."""
    checked = {k: p for k, p in pairwise.items() if p.get("pairs") or p.get("missing")}
    results = {k: passes(p) for k, p in checked.items()}
    return {"validated": bool(results) and all(ok for ok, _ in results.values()),
            "passed": [k for k, (ok, _) in results.items() if ok],
            "short": {k: why for k, (ok, why) in results.items() if not ok}}


def scorer_line(label: str, pairwise: dict[str, dict[str, Any]], labels: dict[str, str] | None = None) -> str:
    """'<label>: pairwise accuracy 0.54 [0.41, 0.66] vs off-topic, ... — not validated (...)'."""
    labels = labels or {}
    v = verdict(pairwise)
    figs = ", ".join(f"{est(p)} vs {labels.get(k, k)}" for k, p in pairwise.items() if p.get("pairs"))
    n = max((p.get("dialogues", 0) for p in pairwise.values()), default=0)
    if not figs:
        return f"{label}: no pairs could be scored (every judgement missing) — not validated"
    if v["validated"]:
        return f"{label}: pairwise accuracy {figs} ({n} dialogues) — validated"
    short = "; ".join(f"{labels.get(k, k)}: {why}" for k, why in v["short"].items())
    passed = f"passes vs {', '.join(labels.get(k, k) for k in v['passed'])}; " if v["passed"] else ""
    return f"{label}: pairwise accuracy {figs} ({n} dialogues) — not validated ({passed}short: {short}; {BAR_TEXT})"


# ---------------------------------------------------------------- the store


def store_root() -> Path:
    return cache_dir("judge_checks")


def save(source_key: str, check_key: str, payload: dict[str, Any]) -> Path:
    path = store_root() / source_key / f"{check_key}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, json.dumps(payload, indent=1, ensure_ascii=False, default=str))
    return path


def load_checks(source_key: str, extra: list[Path] | None = None) -> list[dict[str, Any]]:
    """Every stored check of one scorer source (plus matching ones from `extra` files), newest first.
    Unreadable files are skipped: a damaged record must not stop a report."""
    files = sorted((store_root() / source_key).glob("*.json")) + list(extra or [])
    out = []
    for f in files:
        try:
            obj = json.loads(Path(f).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if isinstance(obj, dict) and obj.get("source_key") == source_key:
            out.append(obj | {"file": str(f)})
    return sorted(out, key=lambda o: o.get("check", {}).get("created", ""), reverse=True)


def judge_status(describe: dict[str, Any] | None, extra: list[Path] | None = None) -> dict[str, Any] | None:
    """What is on record for a run's judge: {key, label, validated (None: never checked), lines, check}."""
    if not describe:
        return None
    key, label = judge_key(describe), judge_label(describe)
    checks = load_checks(key, extra)
    if not checks:
        return {"key": key, "label": label, "validated": None, "check": None,
                "lines": [(f"judge {label}: no judge-check on record for this model, prompt and settings — its scores "
                          "are unvalidated (run `spokentod bench judge-check --judge ...` with the same judge)")]}
    c = checks[0]
    scorers = c.get("scorers") or {}
    head = scorers.get(JUDGE_HEADLINE)
    validated = bool(head and verdict(head["pairwise"])["validated"])
    lines = [f"judge {label} " + scorer_line(s.get("label", name), s["pairwise"], c.get("labels"))
             for name, s in scorers.items()]
    return {"key": key, "label": label, "validated": validated, "check": c, "lines": lines}
