"""Reply agreement with the text-in reply: the embedded end-to-end speech LM vs the cascade, side by side.

    spokentod bench run configs/speechlm_agreement.yaml --limit 6
    python benchmarks/speechlm_agreement.py runs/speechlm-agreement [--json reports/speech_adapter/agreement.json]
        [--extra broad=runs/speechlm-agreement-broad:e2e]   # another adapter's e2e run, same turns:
    spokentod bench run configs/speechlm_agreement.yaml --limit 6 --out runs/speechlm-agreement-broad \
        --set systems.e2e.audiolm.adapter=runs/adapter/broad/best

For every user turn both systems answered, compares each system's reply with the `text` system's (the same
LLM given the gold user text): all-MiniLM-L6-v2 cosine and the exact-match rate under greedy decoding, with
bootstrap 95% CIs over dialogues. The speech adapter's goal: agreement ≥ the cascade's − 0.05.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np

from spokentod.metrics.judge_free import embed
from spokentod.rundir.layout import results_name
from spokentod.rundir.store import final_records, read_records


def _answered(run: Path, system: str) -> dict[tuple, dict]:
    recs, _ = read_records(run / "results" / results_name(system))
    # Keyed by (dialogue, turn, seed): the system's name is the first element of a record's key.
    return {k[1:]: r for k, r in final_records(recs).items() if r.get("text") is not None and not r.get("error")}


def replies(run: Path, system: str) -> dict[tuple, str]:
    return {k: r["text"] for k, r in _answered(run, system).items()}


def transcript_wer(run: Path, system: str, keys: list[tuple]) -> float | None:
    """WER of a cascade's ASR transcripts of the user turns (None for a system that has none)."""
    from spokentod.adapter.train import wer  # the adapter's own WER: normalised, empty references dropped

    got = _answered(run, system)
    pairs = [(got[k].get("user_text"), got[k].get("user_transcript")) for k in keys if k in got]
    if not pairs or any(h is None for _, h in pairs):
        return None
    return float(wer([r for r, _ in pairs], [h for _, h in pairs]))


def boot(per_dialogue: dict[str, list[float]], n: int = 2000) -> tuple[float, float, float]:
    ids = sorted(per_dialogue)
    vals = [x for d in ids for x in per_dialogue[d]]
    rng = random.Random(0)
    means = []
    for _ in range(n):
        pick = [x for d in rng.choices(ids, k=len(ids)) for x in per_dialogue[d]]
        means.append(float(np.mean(pick)))
    return float(np.mean(vals)), float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run", type=Path)
    ap.add_argument("--systems", nargs="+", default=["cascade", "cascade_adapter", "e2e"])
    ap.add_argument("--extra", nargs="*", default=[], metavar="LABEL=RUN:SYSTEM",
                    help="Also compare a system of another run on the same turns, e.g. a second adapter: "
                         "distilled=runs/speechlm-agreement-distill:e2e")
    ap.add_argument("--json", type=Path, help="Also write the figures here (spokentod adapter report --agreement).")
    args = ap.parse_args()
    ref = replies(args.run, "text")
    # A run made before a system was added to the config (e.g. cascade_adapter) is read without it.
    absent = [s for s in args.systems if not (args.run / "results" / results_name(s)).exists()]
    if absent:
        print(f"not in {args.run}: {', '.join(absent)}", file=sys.stderr)
    got = {s: replies(args.run, s) for s in args.systems if s not in absent}
    extra_runs = {}
    for item in args.extra:
        label, _, where = item.partition("=")
        run, _, system = where.rpartition(":")
        if not (label and run and system):
            ap.error(f"--extra {item!r}: expected LABEL=RUN:SYSTEM")
        if label in got or label == "text":
            ap.error(f"--extra {item!r}: the label {label!r} is taken (a system or another --extra)")
        got[label], extra_runs[label] = replies(Path(run), system), (Path(run), system)
    keys = sorted(set(ref).intersection(*[set(g) for g in got.values()]))
    if not keys:
        print("no user turn answered by every system", file=sys.stderr)
        return 1
    ref_emb = embed([ref[k] for k in keys])
    print(f"{len(keys)} turns of {len({k[0] for k in keys})} dialogues in {args.run}")
    print(f"{'system':15} {'cosine to text reply':>28} {'exact match':>24}")
    figures = {}
    for s, g in got.items():
        emb = embed([g[k] for k in keys])
        cos, exact = defaultdict(list), defaultdict(list)
        for i, k in enumerate(keys):
            cos[k[0]].append(float(np.dot(emb[i], ref_emb[i])))
            exact[k[0]].append(float(g[k].strip() == ref[k].strip()))
        c, e = boot(cos), boot(exact)
        wer = transcript_wer(args.run, s, keys) if s in args.systems else None
        print(f"{s:15} {c[0]:8.3f} [{c[1]:.3f}, {c[2]:.3f}] {e[0]:10.3f} [{e[1]:.3f}, {e[2]:.3f}]"
              + (f"   transcript WER {wer:.3f}" if wer is not None else ""))
        figures[s] = {"cosine": list(c), "exact": list(e)} | ({"transcript_wer": wer} if wer is not None else {})
    if args.json:
        def adapter_sha(run: Path, system: str = "e2e") -> str | None:
            meta = json.loads((run / "run.json").read_text())
            return meta.get("systems", {}).get(system, {}).get("audiolm", {}).get("adapter_sha256")

        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({
            "run": str(args.run), "turns": len(keys), "dialogues": len({k[0] for k in keys}),
            "adapter_sha256": adapter_sha(args.run), "systems": figures,
            "extra": {label: {"run": str(run), "system": system, "adapter_sha256": adapter_sha(run, system)}
                      for label, (run, system) in extra_runs.items()}}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
