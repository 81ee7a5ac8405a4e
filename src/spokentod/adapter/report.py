"""The speech adapter's report (markdown + a PNG), written from run files only.

    spokentod adapter report runs/adapter/run2 --try "CTC only, 2.2k utts=runs/adapter/trial1_ctc" ...

Reads the main run's ``eval.jsonl`` (dev WER by step), ``summary.json``, ``best/eval_test.json`` (and
``eval_dev.json`` if present) and the corpus's ``corpus.json``; each ``--try`` run adds a row to the table
of what was tried. The verdict line applies the goal (dev WER ≤ 20 % within 60 min of training) to the
numbers; nothing is typed in by hand.

Every run it reads is archived beside the report (``<report>/run_files/<name>/``: those small files only), and the
regenerate command it prints reads the archives: runs/ is scratch space, the report's sources stay in git.
``<report>/earlier.json`` holds rows of runs whose files were lost before archiving existed, as an earlier
report computed them; they are marked as such.
"""

from __future__ import annotations

import json
import shutil
from itertools import pairwise
from pathlib import Path
from typing import Any

from spokentod.paths import slug

GOAL_WER, GOAL_MIN = 0.20, 60.0
SLACK = 1.01  # training stops at the first step past its budget: the evaluation at that stop counts


def _jsonl(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines() if x.strip()] if path.is_file() else []


def _evals(run: Path) -> list[dict]:
    """Dev evaluations by step; a resumed run's repeated steps keep their last row."""
    return sorted({e["step"]: e for e in _jsonl(run / "eval.jsonl")}.values(), key=lambda e: e["step"])


def pct(x: float | None) -> str:
    return "–" if x is None else f"{100 * x:.1f} %"


def _best(evals: list[dict], key: str) -> dict | None:
    rows = [e for e in evals if e.get(key) is not None]
    return min(rows, key=lambda e: e[key]) if rows else None


def plot(evals: list[dict], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 3.6))
    for key, label in (("wer", "LLM transcript (greedy)"), ("ctc_wer", "CTC head (greedy)")):
        pts = [(e["train_s"] / 60, 100 * e[key]) for e in evals if e.get(key) is not None]
        if pts:
            ax.plot(*zip(*pts), marker="o", label=label)
    ax.axhline(100 * GOAL_WER, color="grey", ls="--", lw=1, label=f"goal {100 * GOAL_WER:.0f} %")
    ax.set_xlabel("training minutes (2 CPU cores)")
    ax.set_ylabel("dev WER (%)")
    ax.set_ylim(0, min(120, max([100 * e.get("wer", 0) or 0 for e in evals] + [60]) + 5))
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120)
    plt.close(fig)


def _setting(summary: dict) -> str:
    r = summary.get("recipe") or {}
    m, t = r.get("model", {}), r.get("train", {})
    return (f"compress={m.get('compress', 'none')}, asr_prompt={m.get('asr_prompt', 0)}, batch={t.get('batch_size')}, "
            f"lr={t.get('lr')}, ctc_only_steps={t.get('ctc_only_steps')}, "
            f"schedule={'restarts at CE' if t.get('restart') else 'one cosine'}, sources={t.get('sources') or 'all'}"
            + (f", ce_hearing_lr_scale={t['ce_hearing_lr_scale']}" if "ce_hearing_lr_scale" in t else "")
            + (f", distill_weight={t['distill_weight']}" if t.get("distill_weight") else ""))


def tried_row(label: str, run: Path) -> str:
    evals = _evals(run)
    summary = json.loads((run / "summary.json").read_text()) if (run / "summary.json").is_file() else {}
    b, c = _best(evals, "wer"), _best(evals, "ctc_wer")
    log = _jsonl(run / "log.jsonl")
    steps = max([e["step"] for e in evals] + [x["step"] for x in log] + [0])
    minutes = max([e["train_s"] for e in evals] + [x["train_s"] for x in log] + [0]) / 60
    best = f"{pct(b['wer'])} (step {b['step']})" if b else "not decoded"
    return (f"| {label} | {_setting(summary)} | {steps} | {minutes:.1f} | {best} | "
            f"{pct(c['ctc_wer']) if c else '–'} |")


def step_times(run: Path) -> list[str]:
    """Seconds per optimisation step by phase (CTC alone vs with the LLM's cross-entropy), from log.jsonl."""
    rows = sorted({x["step"]: x for x in _jsonl(run / "log.jsonl")}.values(), key=lambda x: x["step"])
    per: dict[str, list[float]] = {"CTC only (no LLM forward)": [], "CTC + LLM cross-entropy": []}
    for a, b in pairwise(rows):
        if b["train_s"] > a["train_s"]:
            phase = "CTC + LLM cross-entropy" if "ce" in b else "CTC only (no LLM forward)"
            per[phase].append((b["train_s"] - a["train_s"]) / (b["step"] - a["step"]))
    out = ["| phase | steps logged | s / step (median) | minutes |", "|---|---:|---:|---:|"]
    for k, v in per.items():
        if v:
            n = len(v) * (rows[1]["step"] - rows[0]["step"])
            out.append(f"| {k} | {n} | {sorted(v)[len(v) // 2]:.2f} | {sum(v) * n / len(v) / 60:.1f} |")
    return out


def _table(rows: dict[str, dict], head: str) -> list[str]:
    out = [f"| {head} | n | WER |", "|---|---:|---:|"]
    out += [f"| {k} | {v['n']} | {pct(v['wer'])} |" for k, v in rows.items()]
    return out


AGREEMENT_SLACK = 0.05  # the goal: the end-to-end reply's agreement ≥ the cascade's minus this
# Systems compared only to locate the gap, with no goal of their own.
DIAGNOSTIC = {"cascade_adapter": "the adapter's own LLM transcript given to the LLM as text: the gap between it and "
                                 "the cascade is recognition, the gap between it and e2e is how the LLM reads "
                                 "speech vectors rather than text"}


def agreement_section(path: Path) -> list[str]:
    """Reply agreement (benchmarks/speechlm_agreement.py --json): does speech behave like text for the LLM?"""
    a = json.loads(path.read_text())
    s = a["systems"]

    def cell(v: list[float]) -> str:
        return f"{v[0]:.3f} [{v[1]:.3f}, {v[2]:.3f}]"

    lines = ["", "## Reply agreement: does the LLM answer speech as it answers text?", "",
             (f"The same LLM answers {a['turns']} spoken user turns of {a['dialogues']} demo dialogues (gold history, "
              "greedy); each system's reply is compared with the reply to the gold text: all-MiniLM-L6-v2 cosine and "
              "exact match, 95 % bootstrap CIs over dialogues. Adapter: "
              f"`{(a.get('adapter_sha256') or '?')[:12]}`."), "",
             "| system | cosine to the text reply | exact match |", "|---|---:|---:|"]
    wer_column = any("transcript_wer" in v for v in s.values())  # older figures have none
    if wer_column:
        lines[-2:] = [lines[-2] + " transcript WER |", lines[-1] + "---:|"]
    lines += [f"| {name} | {cell(v['cosine'])} | {cell(v['exact'])} |"
              + (f" {pct(v.get('transcript_wer'))} |" if wer_column else "") for name, v in s.items()]
    lines += [f"\n{name}: {why}." for name, why in DIAGNOSTIC.items() if name in s]
    if "cascade" in s:
        bar = s["cascade"]["cosine"][0] - AGREEMENT_SLACK
        # e2e, and any other adapter compared (--extra)
        for name in [n for n in s if n != "cascade" and n not in DIAGNOSTIC]:
            ok = s[name]["cosine"][0] >= bar
            sha = (a.get("extra", {}).get(name, {}).get("adapter_sha256") or "")[:12]
            lines += ["", (f"**Goal {'met' if ok else 'not met'}** ({name}{f', adapter `{sha}`' if sha else ''}): "
                           f"end-to-end cosine {s[name]['cosine'][0]:.3f} vs ≥ {bar:.3f} (the cascade's "
                           f"{s['cascade']['cosine'][0]:.3f} − {AGREEMENT_SLACK}).")]
    extra = "".join(f" --extra {label}={v['run']}:{v.get('system', 'e2e')}" for label, v in a.get("extra", {}).items())
    lines += ["", (f"From `{path}`: `spokentod bench run configs/speechlm_agreement.yaml --limit 6 && python "
                   f"benchmarks/speechlm_agreement.py {a['run']}{extra} --json {path}`"
                   + (" (each other adapter's run: the same `bench run` with `--out` and `--set "
                      "systems.e2e.audiolm.adapter=DIR`)." if extra else "."))]
    return lines


RUN_FILES = ("eval.jsonl", "log.jsonl", "summary.json", "best/eval_test.json", "best/eval_dev.json")


def archive(run: Path, dest: Path) -> Path:
    """Copy a run's report sources to ``dest`` (a run directory the report reads like the original)."""
    if run.resolve() == dest.resolve():
        return dest
    summary = json.loads((run / "summary.json").read_text()) if (run / "summary.json").is_file() else {}
    corpus = Path((summary.get("recipe") or {}).get("corpus") or run / "none") / "corpus.json"
    for src, name in [(run / n, n) for n in RUN_FILES] + [(corpus, "corpus.json")]:
        if src.is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src, dest / name)
    return dest


def earlier_rows(path: Path) -> tuple[list[str], list[str]]:
    """Rows of runs lost before archiving, as an earlier report computed them (``earlier.json``), and the
    footnote that says so."""
    if not path.is_file():
        return [], []
    e = json.loads(path.read_text())
    return ([f"| {r['label']} † | {r['settings']} | {r['steps']} | {r['train_min']} | {r['best_wer']} | "
             f"{r['best_ctc']} |" for r in e["rows"]], ["", f"† {e['why']}"])


REPORT = Path("reports/speech_adapter.md")


def write_report(run: str | Path, out: str | Path = REPORT,
                 tried: list[tuple[str, str]] | None = None, agreement: str | Path | None = None) -> Path:
    run, out = Path(run), Path(out)
    runs_dir = out.with_suffix("") / "run_files"
    source, run = run, archive(run, runs_dir / slug(run.name))
    tried = [(label, str(archive(Path(p), runs_dir / slug(label)))) for label, p in tried or []]
    evals = _evals(run)
    if not evals:
        raise FileNotFoundError(f"{run / 'eval.jsonl'}: no dev evaluations (train first)")
    summary = json.loads((run / "summary.json").read_text())
    recipe = summary.get("recipe", {})
    cmeta = json.loads((run / "corpus.json").read_text()) if (run / "corpus.json").is_file() else {}  # archived
    test = json.loads((run / "best/eval_test.json").read_text()) if (run / "best/eval_test.json").is_file() else None
    png = out.with_suffix("") / "dev_wer.png"
    plot(evals, png)

    in_budget = [e for e in evals if e.get("wer") is not None and e["train_s"] <= GOAL_MIN * 60 * SLACK]
    b = _best(in_budget, "wer")
    met = b is not None and b["wer"] <= GOAL_WER
    lines: list[str] = [
        "# The speech adapter: does phase 1 hear?",
        "",
        (f"_Written by `spokentod.adapter.report` from `{source}`"
         + (f" (its files archived in `{run}`)" if run != source else "") + "; regenerate with the command at the end._"),
        "",
        ("Whisper tiny.en (frozen) → connector → SmolLM2-135M-Instruct (frozen, no LoRA), trained on 2 CPU cores "
        "to transcribe a leak-free TTS corpus; dev and test are held-out dialogues spoken by held-out voices."),
        "",
        "## Verdict",
        "",
        (f"**Goal met:** dev WER {pct(b['wer'])} (LLM transcript) after {b['train_s'] / 60:.1f} min of training "
         f"(goal ≤ {pct(GOAL_WER)} within {GOAL_MIN:.0f} min)." if met else
         f"**Goal not met:** the best dev WER within {GOAL_MIN:.0f} min of training is "
         f"{pct(b['wer']) if b else 'not measured'} (goal ≤ {pct(GOAL_WER)})."),
    ]
    if test:
        lines += ["", (f"Held-out **test** ({test['n']} utterances): WER {pct(test['wer'])} through the LLM, "
                      f"{pct(test['ctc_wer'])} from the CTC head.")]
    lines += ["", "## Where the time goes", ""] + step_times(run)
    lines += ["", "## Learning curve", "", f"![dev WER by training minutes]({png.relative_to(out.parent)})", "",
              "| step | train min | dev WER (LLM) | dev WER (CTC) |", "|---:|---:|---:|---:|"]
    lines += [f"| {e['step']} | {e['train_s'] / 60:.1f} | {pct(e.get('wer'))} | {pct(e['ctc_wer'])} |" for e in evals]
    if test:
        lines += ["", "## Held-out test, by engine and voice", ""]
        lines += _table(test["by_tts"], "TTS") + [""] + _table(test["by_voice"], "voice") + [""]
        lines += _table(test["by_source"], "source")
        lines += ["", "Examples (reference → LLM transcript / CTC):", ""]
        lines += [f"- {r['ref']} → {r['hyp']} / {r['ctc']}" for r in test["rows"][:6]]
    if cmeta:
        lines += ["", "## Corpus", "", (f"Utterances rendered: {cmeta.get('rendered')} "
                  f"(not rendered: {cmeta.get('n_failed')}); hours: {json.dumps(cmeta.get('hours'))}; "
                  f"counts: {json.dumps(cmeta.get('counts'))}. The training run used sources "
                  f"{recipe.get('train', {}).get('sources') or 'all'}.")]
    if agreement:
        lines += agreement_section(Path(agreement))
    rows = [("this run", run)] + [(label, Path(p)) for label, p in tried or []]
    lost, footnote = earlier_rows(out.with_suffix("") / "earlier.json")
    lines += ["", "## What was tried", "",
              "| run | settings | steps | train min | best dev WER (LLM) | best dev WER (CTC) |",
              "|---|---|---:|---:|---:|---:|"] + [tried_row(label, p) for label, p in rows] + lost + footnote
    cmd = f"spokentod adapter report {run}" + "".join(f' --try "{label}={p}"' for label, p in tried or [])
    cmd += f" --agreement {agreement}" if agreement else ""
    cmd += f" --out {out}" if out != REPORT else ""
    lines += ["", "## Regenerate", "", "```", cmd, "```", ""]
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines))
    return out


def report_data(run: str | Path) -> dict[str, Any]:
    """The figures the report states, for tests and other reports."""
    evals = _evals(Path(run))
    b = _best([e for e in evals if e.get("wer") is not None and e["train_s"] <= GOAL_MIN * 60 * SLACK], "wer")
    return {"best": b, "met": bool(b and b["wer"] <= GOAL_WER), "evals": evals}
