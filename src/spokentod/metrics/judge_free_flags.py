"""Judge-free failure flags: the failure taxonomy's measurable part without an LLM judge.

Three failures of the taxonomy have a judge-free signal that `bench judge-check` validates (each separates
the gold reply from its corruption): topic drift (the reply is unlike the dialogue so far: context_sim),
repetition (the reply's word trigrams were already said by the agent: repetition_ngram) and generic filler
(the reply is close to a stock phrase: genericness). A flag is the signal past a fixed threshold, so the
report's failure table (Table 2) has presence rates with Wilson CIs even when no LLM judge can be trusted.

Thresholds were chosen on the demo corpus's judge-check (8 dialogues, 24 positions; gold vs its corruption,
near the best balanced accuracy, rounded): context_sim < 0.20 (off-topic 83 % flagged, gold 17 %),
repetition_ngram ≥ 0.5 (repeat 100 %, gold 0 %), genericness ≥ 0.40 (generic 90 %, gold 0 %). They are
validated on held-out corpora by `bench judge-check`, whose flag-rate table shows each flag on its
corruption vs on gold (the SalesBot figures are in reports/context_trap_cpu.md). Changing a threshold →
bump the group version.

The flags are named fail_jf_<failure>_present so that an LLM judge's own flags (fail_<failure>_present)
stay apart in the same report.
"""

from __future__ import annotations

from typing import Any

from spokentod.metrics.judge_free import EMBEDDER, GENERIC_V1, VERSION, _judge_free
from spokentod.metrics.registry import MetricGroup, MetricResult, Output, ScoredReply, register, stable_hash

# failure → (judge-free signal, threshold, direction): +1 flags values ≥ threshold, -1 values < threshold
RULES = {
    "topic_drift": ("context_sim", 0.20, -1),
    "repetition": ("repetition_ngram", 0.5, +1),
    "generic": ("genericness", 0.40, +1),
}


def flag_name(failure: str) -> str:
    return f"fail_jf_{failure}_present"


def _flags(reply: ScoredReply, res: Any) -> MetricResult:
    base = _judge_free(reply, res)  # embeddings are memoized: cheap when judge_free ran on the same reply
    values: dict[str, float | None] = {}
    missing: dict[str, str] = {}
    for failure, (signal, threshold, direction) in RULES.items():
        v = base.values.get(signal)
        if v is None:
            values[flag_name(failure)] = None
            missing[flag_name(failure)] = f"{signal} missing: {base.missing.get(signal, 'not computed')}"
        else:
            values[flag_name(failure)] = float(v >= threshold if direction > 0 else v < threshold)
    return MetricResult(values, missing)


register(MetricGroup(
    "judge_free_flags", "1",
    tuple(Output(flag_name(f), f"{f.replace('_', ' ')} (judge-free flag)", "failures", -1, "rate", "%", 100, 1)
          for f in RULES),
    _flags, needs=("transcript", "dialogue"),
    doc="failure flags from judge-free signals: topic drift (context_sim < 0.20), repetition "
        "(repetition_ngram ≥ 0.5), generic (genericness ≥ 0.40)",
    # the signals' own make-up too: a cached flag must not outlive a change of the generic set
    identity=lambda: {"signals": EMBEDDER, "judge_free": VERSION, "rules": RULES,
                      "generic_set": stable_hash(list(GENERIC_V1))}))
