"""In-domain trackers on a CPU: the report of `configs/dst/source_cascade.yaml` and `source_e2e.yaml`.

Reads each run's own files only — <run>/recipe.json, <run>/phase2/{log,eval}.jsonl and summary.json, and
<run>/test/{predictions.jsonl,track.json} (the held-out test set tracked by `dst track`) — scores the test
predictions against the references with a dialogue bootstrap, scores the empty-state floor the same way,
and writes a Markdown report with the learning curves (dev JGA and slot F1 by step) as a PNG.
Those small files (and the references) are archived beside the report (``<report>/run_files/``) and the report
is written from the archive, so its regenerate command works on a checkout where runs/ is gone.

    spokentod dst trackers-report --run Cascade=runs/dst/source_cascade_1800 --run E2E=runs/dst/source_e2e_1800 \\
        --references runs/dst/repro/data/source_test/references.jsonl --out reports/dst_trackers.md
"""

from __future__ import annotations

import shlex
import tempfile
from pathlib import Path
from typing import Any

from spokentod.dst.train.runlog import read_json, step_log
from spokentod.errors import SpokenTODError
from spokentod.paths import slug
from spokentod.studies.dst_repro.report import _hms, _table, floor_top, pct
from spokentod.studies.run_files import copy_files

GOAL_JGA = 0.25  # issue #18: each tracker >= 25 % JGA on the in-domain test, CI clear of the empty-state floor


def _floor(references: Path, bootstrap: int) -> dict[str, Any]:
    """The empty-state predictor scored like a tracker: JGA and bootstrap CI on the same turns."""
    from spokentod.dst.score.scorer import score_empty_states

    with tempfile.TemporaryDirectory() as d:
        s = score_empty_states(references, Path(d) / "empty.jsonl", bootstrap=bootstrap)
    return {"jga": s["jga"], "jga_ci": s.get("jga_ci")}


def _trained(run: Path) -> dict[str, Any]:
    """What a run's own files say about its training: recipe, summary, step log, dev evaluations, wall time."""
    summary = read_json(run / "phase2" / "summary.json", {})
    wall = summary.get("wall_s")  # written by the training loop; older runs: the files' times
    start, end = run / "recipe.json", run / "phase2" / "summary.json"
    if wall is None and start.is_file() and end.is_file():
        wall = end.stat().st_mtime - start.stat().st_mtime
    return {"recipe": read_json(run / "recipe.json", {}), "summary": summary, "wall_s": wall,
            "log": step_log(run / "phase2" / "log.jsonl"), "evals": step_log(run / "phase2" / "eval.jsonl")}


def _shipped() -> dict[str, Any]:
    """The same for the package's embedded tracker, from its sidecar (its run's files need not exist here)."""
    from spokentod.dst.infer.embedded import sidecar

    t = sidecar()["trained"]
    return {"recipe": t["recipe"], "summary": {"step": t["steps"], "best_step": t.get("best_step")},
            "wall_s": t.get("wall_s"),  # sidecars written before it was recorded lack it
            "log": [], "step_s_total": (t["step_seconds"], t["steps"]), "evals": t.get("dev_curve", [])}


TRAIN_FILES = ("recipe.json", "phase2/log.jsonl", "phase2/eval.jsonl", "phase2/summary.json")
TEST_FILES = ("predictions.jsonl", "track.json")


def archived(where: str, root: Path) -> tuple[str, Path, str]:
    """Where one row's sources go under ``root``: (what is copied: a run folder or a shipped tracker's test
    folder, the folder it goes to, the row's location there)."""
    run_s, _, sub = where.partition("@")
    if run_s == "embedded":
        if not sub:
            raise SpokenTODError(f"{where}: give embedded@DIR, DIR holding `dst track --tracker embedded` output")
        dest = root / "embedded" / slug(Path(sub).name)
        return sub, dest, f"embedded@{dest}"
    dest = root / slug(Path(run_s).name)
    return run_s, dest, str(dest) + (f"@{sub}" if sub else "")


def archive(where: str, root: Path) -> str:
    """Copy one row's small report sources (a run's recipe and phase-2 logs, its tracked test folder) under
    ``root`` and return the row's location there: runs/ is scratch space, the report's sources stay in git."""
    src, dest, moved = archived(where, root)
    sub = where.partition("@")[2]
    if where.startswith("embedded@"):
        copy_files(Path(src), dest, TEST_FILES)
    else:
        copy_files(Path(src), dest, TRAIN_FILES)
        copy_files(Path(src) / (sub or "test"), dest / (sub or "test"), TEST_FILES)
    return moved


def _run(name: str, where: str, references: Path, bootstrap: int) -> dict[str, Any]:
    """One row: RUN_DIR (its test set tracked into RUN_DIR/test), RUN_DIR@SUBDIR (tracked into RUN_DIR/SUBDIR,
    e.g. the same model on gold transcripts or another ASR), or embedded@DIR (the package's shipped tracker,
    tracked into DIR; its recipe and dev curve come from its sidecar)."""
    from spokentod.dst.score.scorer import score_files

    run_s, _, sub = str(where).partition("@")
    if run_s == "embedded":
        run, test, t = Path(run_s), Path(sub), _shipped()
    else:
        run = Path(run_s)
        test, t = run / (sub or "test"), _trained(run)
    if not (test / "predictions.jsonl").is_file():
        raise SpokenTODError(f"{name}: no {test / 'predictions.jsonl'}: track the test set first (see the recipe)")
    step_s, steps_logged = t.get("step_s_total") or (sum(x.get("seconds", 0) for x in t["log"]), len(t["log"]))
    track = read_json(test / "track.json", {})
    settings = track.get("settings", {})
    return {"name": name, "run": str(run), "where": str(where), "recipe": t["recipe"], "summary": t["summary"],
            "step_s": step_s, "steps_logged": steps_logged, "wall_s": t["wall_s"], "evals": t["evals"],
            "score": score_files(test / "predictions.jsonl", references, bootstrap=bootstrap),
            "input": _reads(settings), "speech": settings.get("mode") == "speech" or bool(settings.get("asr")),
            "track_s": (track.get("timings") or {}).get("track_s"), "counts": track.get("counts", {})}


def _jga(score: dict) -> str:
    ci = score.get("jga_ci") or [None, None]
    return f"{pct(score['jga'])} [{pct(ci[0])}, {pct(ci[1])}]"


def _reads(settings: dict) -> str:
    """What the tracker read at test time: its mode, and the ASR of a cascade."""
    from spokentod.backends.spec import parse_backend_spec

    if not settings.get("asr"):
        return str(settings.get("mode"))
    asr = parse_backend_spec(settings["asr"])
    return f"{settings.get('mode')} on {asr.get('name')} {asr.get('model', '')}".rstrip() + " transcripts"


def _plot(runs: list[dict], png: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    for r in runs:
        steps = [e["step"] for e in r["evals"]]
        axes[0].plot(steps, [100 * e["jga"] for e in r["evals"]], marker="o", label=r["name"])
        axes[1].plot(steps, [100 * e["slot_f1"] for e in r["evals"]], marker="o", label=r["name"])
    for ax, t in zip(axes, ("dev JGA %", "dev slot F1 %")):
        ax.set_xlabel("phase-2 step (batch 4)")
        ax.set_title(t)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png, dpi=110)
    plt.close(fig)


def write_report(runs: list[tuple[str, str]], references: Path, out: Path, bootstrap: int = 1000,
                 note: str = "") -> dict[str, Any]:
    references, out = Path(references), Path(out)
    figs = out.parent / out.stem
    files = figs / "run_files"
    copy_files(references.parent, files, (references.name,))
    references = files / references.name
    placed: dict[Path, str] = {}
    for p in (str(where) for _, where in runs):  # two runs archived into one folder would mix their files
        src, dest, _ = archived(p, files)
        if placed.setdefault(dest, src) != src:
            raise SpokenTODError(f"{p} and {placed[dest]} would both be archived in {dest}: rename one run folder")
    rs = [_run(n, archive(str(p), files), references, bootstrap) for n, p in runs]
    floor = _floor(references, bootstrap)
    fhi = floor_top(floor)
    for r in rs:
        s = r["score"]
        r["met"] = r["speech"] and s["jga"] >= GOAL_JGA and bool(s.get("jga_ci")) and s["jga_ci"][0] > fhi
    trained = list({r["run"]: r for r in reversed(rs)}.values())[::-1]  # one curve per trained run (first name)
    _plot(trained, figs / "learning_curves.png")

    s0 = rs[0]["score"]
    L = ["# In-domain dialogue state trackers trained on a 2-core CPU", "",
         (f"Test: {s0['dialogues']} held-out source-domain dialogues ({s0['turns']} user turns; "
          f"{', '.join(sorted(s0.get('per_domain') or {}))}), spoken by held-out voices. Goal (issue #18): "
          f"each tracker ≥ {pct(GOAL_JGA)} % JGA with its 95 % CI clear of the empty-state floor's "
          f"({pct(floor['jga'])} %, CI up to {pct(fhi)} %)."), ""]
    for r in rs:
        head = f"goal {'met' if r['met'] else 'not met'}" if r["speech"] else "diagnostic (gold transcripts, no speech)"
        lo, hi = r["score"].get("jga_ci") or [None, None]
        L.append(f"- **{r['name']}: {head}** — test JGA {pct(r['score']['jga'])} % [{pct(lo)}, {pct(hi)}] after "
                 f"{r['summary'].get('step', '?')} phase-2 steps ({_hms(r['wall_s'])} of training wall time).")
    L += ["", "## Test results", ""]
    rows = [[r["name"], r["input"], _jga(r["score"])]
            + [pct(r["score"].get(k)) for k in ("slot_f1", "slot_key_f1", "wer", "entity_wer")]
            + [", ".join(f"{d} {pct(v)}" for d, v in sorted((r["score"].get("per_domain") or {}).items()))]
            for r in rs]
    rows.append(["empty state (floor)", "–", _jga(floor)] + ["–"] * 5)
    L += _table(["tracker", "reads", "JGA % [95 % CI]", "slot F1 %", "slot-key F1 %", "WER %", "entity WER %",
                 "per-domain JGA %"], rows)
    L += ["", ("WER and entity WER are of the transcript each tracker writes before the state (the Cascade copies "
               "its ASR's transcript); entity WER counts errors only inside spans that spell a gold slot value. CIs "
               "resample dialogues (bootstrap)."), "",
          "## Learning curves", "", f"![dev JGA and slot F1 by step]({figs.name}/learning_curves.png)", ""]
    L += _table(["tracker", "dev JGA % by step", "dev slot F1 % by step"],
                [[r["name"], ", ".join(f"{e['step']}: {pct(e['jga'])}" for e in r["evals"]),
                  ", ".join(f"{e['step']}: {pct(e['slot_f1'])}" for e in r["evals"])] for r in trained])
    L += ["", "## Where the time goes", ""]
    L += _table(["tracker", "steps", "training wall time", "of it in steps (s/step)", "dev evaluations",
                 "test tracking"],
                [[r["name"], str(r["summary"].get("step", "?")), _hms(r["wall_s"]),
                  f"{_hms(r['step_s'])} ({r['step_s'] / max(1, r['steps_logged']):.2f})", str(len(r["evals"])),
                  f"{_hms(r['track_s'])} for {r['counts'].get('turns', '?')} turns"] for r in rs])
    if note:
        L += ["", note]
    L += ["", "## Recipes", ""]
    for r in trained:  # one line per trained run
        rec, p2 = r["recipe"], r["recipe"].get("phase2") or {}
        m = rec.get("model") or {}
        data = rec.get("data") or {}
        where = "the shipped tracker.json" if r["run"] == "embedded" else f"`{r['run']}/recipe.json`"
        L.append(f"- **{r['name']}** ({where}): LLM {m.get('llm')}, LoRA r {(m.get('lora') or {}).get('r')} "
                 f"on {', '.join((m.get('lora') or {}).get('target_modules', []))}; history {(m.get('history') or {}).get('max_turns')} "
                 f"turns; carry_state {m.get('carry_state')}; speech adapter {rec.get('speech_adapter') or 'none'}; "
                 f"losses {', '.join(x['name'] + ' (' + x['prefix'] + ')' for x in p2.get('losses', []))}; "
                 f"batch {p2.get('batch_size')}, lr {p2.get('lr')}, warm-up {p2.get('warmup')}, {p2.get('steps')} steps; "
                 f"train data {', '.join(v.get('manifest', '?') for k, v in data.items() if k != 'dev')}.")
    L += ["", "Regenerate: `spokentod dst trackers-report " + " ".join(shlex.quote(f"--run={r['name']}={r['where']}") for r in rs)
          + f" --references {references} --out {out}" + (f" --note {shlex.quote(note)}" if note else "")
          + "` (the commands that train and track each run are at the "
          "top of configs/dst/source_e2e.yaml, source_cascade.yaml and source_cascade_asr.yaml).", ""]
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(L))
    return {"runs": [{k: r[k] for k in ("name", "met")} | {"jga": r["score"]["jga"], "jga_ci": r["score"].get("jga_ci")}
                     for r in rs], "floor": floor}
