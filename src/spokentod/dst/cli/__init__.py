"""``spokentod dst ...``: the dialogue state tracking commands (train, track, score) and the DST reproduction
study (repro). Each command is a thin shell: options in, one library call, a summary out; tracking.py holds
what a ``dst track`` run does.

Training, tracking and the study import torch, so their modules are imported inside the commands: the
``spokentod`` entry point loads this package for every command, and ``spokentod data ...`` or ``--help``
must not pay for torch.
"""

from __future__ import annotations

import json
import shlex
from pathlib import Path
from typing import Annotated

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.table import Table

from spokentod.dst.cli.tracking import TrackSettings, run_track
from spokentod.dst.data.normalize import Policy
from spokentod.dst.score.scorer import score_files
from spokentod.dst.train.recipe import load_recipe
from spokentod.errors import SpokenTODError, field_path

app = typer.Typer(no_args_is_help=True, add_completion=False)
err = Console(stderr=True)
Opt = typer.Option
HELP = {
    "predictions": "Our JSONL or MultiWOZ_Evaluation JSON.",
    "references": "A file like the predictions, or a corpus path with --references-corpus.",
    "corpus": "Read --references with this corpus loader (multiwoz21, multiwoz22, sgd, spokenwoz ...).",
    "ontology": "multiwoz | spokenwoz | sgd | none | a JSON file {domain: {slot: [values]}} | auto (from the "
                "reference domains).",
    "data_dir": "The shared/data directory (default: $SPOKENTOD_DATA, ../shared/data).",
    "fuzzy": "Snap a value to the closest ontology value when the rapidfuzz score (0-100) is >= this.",
    "slot": "The same for unknown slot names against the schema.",
    "leak": "Leave corpus annotation values (they include the test split) out of the ontology.",
    "dontcare": "keep: 'dontcare' is a value to predict; drop: it means absent.",
    "none": "drop: 'none' means absent; keep: it is a value.",
    "turn": "What 'turn' means in JSONL: index (Turn.index, both speakers counted) or ordinal (user turns).",
    "bootstrap": "Bootstrap samples over dialogues for a 95% CI of JGA (0: none).",
}


@app.callback()
def _group() -> None:
    """Dialogue state tracking: train, track, score."""  # a callback keeps `score` a subcommand even while it is alone


@app.command()
def train(
    config: Annotated[Path, typer.Argument(help="Recipe YAML (configs/dst/*.yaml).")],
    phase: Annotated[str, Opt(help="1, 2 or all (the phases the recipe defines, in order).")] = "all",
    out: Annotated[Path | None, Opt(help="Override the recipe's out directory.")] = None,
    set_: Annotated[list[str] | None, Opt("--set", help="Override a field: --set phase2.steps=50 (repeatable).")] = None,
    resume: Annotated[bool, Opt("--resume/--restart", help="Continue from <out>/phaseN/last if present.")] = True,
) -> None:
    """Train the end-to-end spoken DST model: phase 1 (ASR), phase 2 (DST with speech + text losses)."""
    from spokentod.dst.train.loop import run_recipe  # torch: see the top

    overrides = list(set_ or []) + ([f"out={out}"] if out else [])
    try:
        cfg = load_recipe(config, overrides)
        phases = [n for n in (1, 2) if getattr(cfg, f"phase{n}")] if phase == "all" else [int(phase)]
        if any(n not in (1, 2) for n in phases):
            raise ValueError(f"--phase must be 1, 2 or all, got {phase!r}")
        for summary in run_recipe(cfg, phases, resume):
            err.print(f"phase {summary['phase']}: {summary['step']}/{summary['steps']} steps"
                      f"{' (stopped early)' if summary['stopped_early'] else ''}; best {summary['best']} "
                      f"at step {summary['best_step']} -> {summary['out']}")
    except (SpokenTODError, ValueError) as e:
        err.print(f"[red]error:[/red] {e}")
        raise typer.Exit(1) from None


@app.command()
def score(
    predictions: Annotated[Path, Opt("--predictions", "-p", help=HELP["predictions"])],
    references: Annotated[Path, Opt("--references", "-r", help=HELP["references"])],
    references_corpus: Annotated[str | None, Opt(help=HELP["corpus"])] = None,
    ontology: Annotated[str, Opt(help=HELP["ontology"])] = "auto",
    data_dir: Annotated[Path | None, Opt(help=HELP["data_dir"])] = None,
    fuzzy_threshold: Annotated[float, Opt(min=0, max=100, help=HELP["fuzzy"])] = 90.0,
    slot_threshold: Annotated[float, Opt(min=0, max=100, help=HELP["slot"])] = 80.0,
    exclude_test_values: Annotated[bool, Opt("--exclude-test-values/--include-test-values",
                                             help=HELP["leak"])] = True,
    dontcare: Annotated[str, Opt(help=HELP["dontcare"])] = "keep",
    none: Annotated[str, Opt(help=HELP["none"])] = "drop",
    turn_index: Annotated[str, Opt(help=HELP["turn"])] = "index",
    bootstrap: Annotated[int, Opt(min=0, help=HELP["bootstrap"])] = 0,
    seed: Annotated[int, Opt(help="Bootstrap seed.")] = 0,
    as_json: Annotated[bool, Opt("--json", help="Print one JSON object.")] = False,
) -> None:
    """Score dialogue states: JGA (exact, normalized+fuzzy), slot P/R/F1, slot-key F1, per-domain JGA, WER."""
    try:
        result = score_files(predictions, references, references_corpus, ontology, data_dir, fuzzy_threshold,
                             slot_threshold, exclude_test_values, Policy(dontcare, none), turn_index,
                             bootstrap, seed)
    except (SpokenTODError, ValueError, KeyError) as e:
        err.print(f"[red]error:[/red] {e}")
        raise typer.Exit(1) from None
    for p in result["examples"]["malformed"]:
        err.print(f"[yellow]malformed prediction (counted wrong):[/yellow] {p}")
    if as_json:
        typer.echo(json.dumps(result, sort_keys=True))
    else:
        Console().print(render(result))


def render(r: dict) -> Table:
    """The scores as a table; the caption says which ontology (and whether it holds test values) was used."""
    t = Table(title="DST scores")
    t.add_column("metric")
    t.add_column("value", justify="right")
    ci = f"  [{r['jga_ci'][0]:.4f}, {r['jga_ci'][1]:.4f}]" if "jga_ci" in r else ""
    t.add_row("JGA (normalized + fuzzy)", f"{r['jga']:.4f}{ci}")
    t.add_row("JGA exact", f"{r['jga_exact']:.4f}")
    for k in ("slot_precision", "slot_recall", "slot_f1", "slot_key_f1", "wer", "entity_wer"):
        if k in r:
            t.add_row(k.replace("_", " "), f"{r[k]:.4f}")
    for k in ("turns", "dialogues", "missing_turns", "extra_turns", "malformed_records", "duplicate_records",
              "unknown_slot_predictions"):
        t.add_row(k.replace("_", " "), str(r[k]))
    for d, v in r["per_domain"].items():
        t.add_row(f"JGA {d} ({r['per_domain_turns'][d]} turns)", f"{v:.4f}")
    onto = r.get("ontology")
    if onto:
        leak = "test values excluded" if onto["test_values_excluded"] else "INCLUDES test-split values"
        t.caption = f"ontology: {onto['name']} ({leak})"
    else:
        t.caption = "ontology: none (no fuzzy value matching)"
    t.caption += f"; fuzzy threshold {r['fuzzy_threshold']:g}"
    return t


TRACK_HELP = {
    "checkpoint": "A SpeechDST checkpoint folder (save_pretrained: model.json + trainable.safetensors).",
    "manifest": "Our dialogue JSONL (audio paths relative to its folder).",
    "corpus": "Load --path with this corpus loader instead of a manifest (multiwoz21, spokenwoz, sgd ...).",
    "out": "Output folder: predictions.jsonl, multiwoz_eval.json, track.json.",
    "history": "User turns in the history: predicted (the tracker's own transcripts) or gold.",
    "mode": "model: speech (default) | text_encoder | text_direct | none; prompted: text | audio "
            "(default: audio with --audiolm, else text).",
    "asr": "ASR backend (name, JSON or YAML file) transcribing the user audio for a text mode: a cascade.",
    "tracker": "model (a trained SpeechDST), embedded (the one shipped in the package: no training) or prompted "
               "(an LLM / AudioLM backend asked for the JSON).",
    "llm": "Prompted: LLM backend (name such as smollm2, a JSON object, or a .json/.yaml file).",
    "audiolm": "Prompted: AudioLM backend hearing the user audio (or reading text with --mode text).",
    "shots": "Prompted: few-shot examples drawn (seeded) from the training dialogues.",
    "ontology": "Prompted: schema in the prompt: auto | multiwoz | spokenwoz | sgd | none | a JSON file.",
    "limit": "Track only the first N dialogues.",
    "max_audio_s": "Leave out user turns longer than this (counted in track.json); default: none.",
}


@app.command()
def track(
    out: Annotated[Path, Opt("--out", "-o", help=TRACK_HELP["out"])],
    checkpoint: Annotated[Path | None, Opt(help=TRACK_HELP["checkpoint"])] = None,
    manifest: Annotated[Path | None, Opt(help=TRACK_HELP["manifest"])] = None,
    corpus: Annotated[str | None, Opt(help=TRACK_HELP["corpus"])] = None,
    path: Annotated[Path | None, Opt(help="Corpus file or folder for --corpus.")] = None,
    tracker: Annotated[str, Opt(help=TRACK_HELP["tracker"])] = "model",
    mode: Annotated[str | None, Opt(help=TRACK_HELP["mode"])] = None,
    asr: Annotated[str | None, Opt(help=TRACK_HELP["asr"])] = None,
    history: Annotated[str, Opt(help=TRACK_HELP["history"])] = "predicted",
    batch_size: Annotated[int, Opt(min=1, help="Dialogues tracked side by side (model tracker; a finished row "
                                   "leaves the batch, so on a CPU larger is faster).")] = 32,
    beams: Annotated[int, Opt(min=1, help="Beam width (1: greedy).")] = 1,
    max_new_tokens: Annotated[int, Opt(min=1, help="Longest output per turn, in tokens.")] = 160,
    limit: Annotated[int | None, Opt(min=1, help=TRACK_HELP["limit"])] = None,
    llm: Annotated[str | None, Opt(help=TRACK_HELP["llm"])] = None,
    audiolm: Annotated[str | None, Opt(help=TRACK_HELP["audiolm"])] = None,
    shots: Annotated[int, Opt(min=0, help=TRACK_HELP["shots"])] = 0,
    shots_manifest: Annotated[Path | None, Opt(help="Training dialogues for --shots (our JSONL).")] = None,
    shots_corpus: Annotated[str | None, Opt(help="Training dialogues for --shots: corpus loader.")] = None,
    shots_path: Annotated[Path | None, Opt(help="Training dialogues for --shots: corpus path.")] = None,
    seed: Annotated[int, Opt(help="Few-shot draw and generation seed.")] = 0,
    ontology: Annotated[str, Opt(help=TRACK_HELP["ontology"])] = "auto",
    data_dir: Annotated[Path | None, Opt(help=HELP["data_dir"])] = None,
    workers: Annotated[int, Opt(min=1, help="Prompted: dialogues in flight at once (HTTP backends).")] = 1,
    device: Annotated[str, Opt(help="Model tracker device (cpu, cuda).")] = "cpu",
    feature_cache: Annotated[Path | None, Opt(help="Speech feature cache root (default: the user cache).")] = None,
    cache: Annotated[bool, Opt("--cache/--no-cache", help="Cache backend calls (ASR, prompted).")] = True,
    max_audio_s: Annotated[float | None, Opt(help=TRACK_HELP["max_audio_s"])] = None,
    progress: Annotated[bool, Opt("--progress/--no-progress", help="Show progress bars.")] = True,
) -> None:
    """Track dialogue states turn by turn (model or prompted tracker); write predictions for `dst score`."""
    try:
        settings = TrackSettings(**{k: v for k, v in locals().items() if k in TrackSettings.model_fields})
        result = run_track(settings)
    except ValidationError as e:
        # the fields are the command's options: named as typed (--batch-size), not as a config field
        msg = "; ".join(f"--{field_path(x['loc']).replace('_', '-')}: {x['msg']}" for x in e.errors())
        err.print(f"[red]error:[/red] {msg}")
        raise typer.Exit(1) from None
    except (SpokenTODError, ValueError, KeyError, TypeError) as e:
        err.print(f"[red]error:[/red] {e}")
        raise typer.Exit(1) from None
    c = result["counts"]
    err.print(f"tracked {c['turns']} turns of {c['dialogues']} dialogues: {c['repaired']} repaired, "
              f"{c['parse_errors']} unparseable, {c['failed']} failed; "
              f"{c['dropped']['dropped']} user turns left out")
    err.print(f"wrote {out / 'predictions.jsonl'}, {out / 'multiwoz_eval.json'}, {out / 'track.json'}")


@app.command()
def transcribe(
    manifest: Annotated[Path, typer.Argument(help="Dialogue manifest (our JSONL) whose user turns have audio.")],
    asr: Annotated[str, Opt(help=TRACK_HELP["asr"])],
    name: Annotated[str, Opt(help="Names the copy: <manifest stem>.<name>.jsonl, beside the manifest.")],
    cache: Annotated[bool, Opt("--cache/--no-cache", help="Cache ASR calls (a rerun costs nothing).")] = True,
    progress: Annotated[bool, Opt("--progress/--no-progress", help="Show progress bars.")] = True,
) -> None:
    """Copy a manifest with each user turn's text as the ASR hears it (gold text kept in metadata): training
    data for a cascade tracker that learns from ASR errors. Writes <stem>.<name>.jsonl and its .json record."""
    from spokentod.dst.cli.tracking import _backend
    from spokentod.dst.data.transcribe import transcribe_manifest

    try:
        rec = transcribe_manifest(manifest, _backend("asr", asr, cache), name, progress)
    except (SpokenTODError, ValueError, KeyError) as e:
        err.print(f"[red]error:[/red] {e}")
        raise typer.Exit(1) from None
    wer = "–" if rec["wer"] is None else f"{100 * rec['wer']:.1f} %"
    err.print(f"transcribed {rec['user_turns']} user turns of {rec['dialogues']} dialogues ({rec['failed']} failed, "
              f"WER {wer} against the gold text) -> {rec['manifest']}")


@app.command("ship-tracker")
def ship_tracker(
    checkpoint: Annotated[Path, typer.Argument(help="The trained checkpoint (<run>/phase2/best).")],
    test_manifest: Annotated[Path, Opt(help="Held-out test dialogues (our JSONL, with audio for speech/ASR).")],
    references: Annotated[Path, Opt(help="Their reference states (dialogue_id, turn, state, transcript JSONL).")],
    mode: Annotated[str, Opt(help="How the tracker reads a user turn: speech | text_direct | text_encoder.")],
    asr: Annotated[str | None, Opt(help="The ASR backend of a cascade (a text mode on speech).")] = None,
    out: Annotated[Path | None, Opt(help="Where to write it (default: the package's embedded tracker).")] = None,
    batch_size: Annotated[int, Opt(min=1, help="Dialogues tracked side by side.")] = 16,
    max_new_tokens: Annotated[int, Opt(min=1, help="Longest output per turn, in tokens.")] = 128,
    progress: Annotated[bool, Opt("--progress/--no-progress", help="Show progress bars.")] = True,
) -> None:
    """Ship a trained tracker in the package (float16 deltas + tracker.json), measured on a held-out test set
    with the shipped weights; `dst track --tracker embedded` then runs it."""
    from spokentod.dst.infer.embedded import EMBEDDED, ship

    command = ["spokentod", "dst", "ship-tracker", str(checkpoint), "--test-manifest", str(test_manifest),
               "--references", str(references), "--mode", mode, *(["--asr", asr] if asr else []),
               *(["--out", str(out)] if out else []), "--batch-size", str(batch_size), "--max-new-tokens",
               str(max_new_tokens)]
    try:
        meta = ship(checkpoint, mode=mode, asr=asr, test_manifest=test_manifest, references=references,
                    command=shlex.join(command), out=out or EMBEDDED, batch_size=batch_size,
                    max_new_tokens=max_new_tokens, progress=progress)
    except (SpokenTODError, ValueError, KeyError) as e:
        err.print(f"[red]error:[/red] {e}")
        raise typer.Exit(1) from None
    m = meta["measured"]

    def f(x):
        return "–" if x is None else f"{x:.3f}"

    ci = f" [{f(m['jga_ci'][0])}, {f(m['jga_ci'][1])}]" if m.get("jga_ci") else ""
    err.print(f"shipped {checkpoint} -> {out or EMBEDDED} ({meta['weights']['bytes'] / 1e6:.1f} MB): test JGA "
              f"{f(m['jga'])}{ci} on {m['turns']} turns (empty-state floor {f(m['empty_state_floor'])}), "
              f"slot F1 {f(m['slot_f1'])}, WER {f(m['wer'])}")


@app.command("trackers-report")
def trackers_report(
    run: Annotated[list[str], Opt(help="NAME=RUN_DIR of a trained tracker whose test set is tracked in RUN_DIR/test, "
                                       "or NAME=RUN_DIR@SUBDIR for RUN_DIR/SUBDIR (repeatable).")],
    references: Annotated[Path, Opt(help="The test set's reference states (JSONL).")],
    out: Annotated[Path, Opt(help="The report (Markdown); its PNG goes into a folder named like it.")],
    bootstrap: Annotated[int, Opt(min=0, help="Bootstrap resamples for the CIs.")] = 1000,
    note: Annotated[str, Opt(help="A line on how the runs were made (e.g. cores shared), printed as given.")] = "",
) -> None:
    """Report trained trackers on their held-out test set: JGA with CIs against the empty-state floor, slot
    F1, WER, the dev learning curves and where the time went (reports/dst_trackers.md)."""
    from spokentod.studies.dst_trackers import write_report

    try:
        pairs = [tuple(x.split("=", 1)) for x in run]
        if any(len(p) != 2 or not p[0] for p in pairs):
            raise ValueError(f"--run takes NAME=RUN_DIR, got {run}")
        res = write_report(pairs, references, out, bootstrap, note)
    except (SpokenTODError, ValueError, OSError) as e:
        err.print(f"[red]error:[/red] {e}")
        raise typer.Exit(1) from None
    for r in res["runs"]:
        err.print(f"{r['name']}: test JGA {r['jga']:.3f}, goal {'met' if r['met'] else 'not met'}")
    err.print(f"wrote {out}")


@app.command("repro-report")
def repro_report(
    run_files: Annotated[Path, typer.Argument(help="A repro out dir, or the report sources its report stage "
                                                    "archived (reports/dst_repro/run_files).")],
    report: Annotated[Path, Opt(help="The report (Markdown); its PNGs go into a folder named like it.")] = Path(
        "reports/dst_repro.md"),
) -> None:
    """Write the DST reproduction's report from its files alone (no training, tracking or archiving): how
    reports/dst_repro.md is regenerated on a fresh checkout."""
    from spokentod.studies.dst_repro.report import write_report

    try:
        path = write_report(run_files, report)
    except (SpokenTODError, OSError) as e:
        err.print(f"[red]error:[/red] {e}")
        raise typer.Exit(1) from None
    err.print(f"wrote {path}")


@app.command()
def repro(
    config: Annotated[Path, typer.Argument(help="Repro YAML (configs/dst/repro_*.yaml).")],
    out: Annotated[Path | None, Opt(help="Override the config's out directory.")] = None,
    stage: Annotated[str, Opt(help="prepare | phase1 | train | eval | report | all (in that order).")] = "all",
    set_: Annotated[list[str] | None, Opt("--set", help="Override a config field: --set base.phase2.steps=10, "
                                                         "--set conditions.S.all_seeds=false (repeatable).")] = None,
    report: Annotated[Path | None, Opt(help="Report path (default: the config's `report`).")] = None,
    progress: Annotated[bool, Opt("--progress/--no-progress", help="Show progress bars.")] = True,
) -> None:
    """The DST reproduction study: data, shared phase 1, every condition, scoring, report (resumable)."""
    from spokentod.studies.dst_repro.config import load_repro
    from spokentod.studies.dst_repro.stages import run  # torch: see the top

    command = shlex.join(["spokentod", "dst", "repro", str(config)] + (["--out", str(out)] if out else [])
                         + (["--stage", stage] if stage != "all" else [])
                         + [x for s in (set_ or []) for x in ("--set", s)]
                         + (["--report", str(report)] if report else []))
    try:
        cfg = load_repro(config, list(set_ or []))
        done = run(cfg, stage, out, report, progress, str(config), command)
    except (SpokenTODError, ValueError) as e:
        err.print(f"[red]error:[/red] {e}")
        raise typer.Exit(1) from None
    for name, work in done.items():
        err.print(f"{name}: {json.dumps(work, default=str)[:400]}")
