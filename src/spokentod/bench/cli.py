"""``spokentod bench run|status|merge|score|report|judge-check``: thin shells over the evaluation stack.

This is the one place that wires the stack together: `bench` produces run directories (run), `rundir`
reads and joins them (status, merge), `metrics` measures them (score) and `analysis` summarises them
(report); `judge-check` validates scorers on replies of known quality. The library modules below hold no CLI code and do not import one another upwards.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from spokentod.analysis.load import ReportError
from spokentod.analysis.report import write_report
from spokentod.bench.config import ConfigError
from spokentod.bench.judgecheck.check import JudgeCheckError, judge_check
from spokentod.bench.run import parse_shard, run_bench
from spokentod.data.source import DialogueSource
from spokentod.errors import BenchError, SpokenTODError
from spokentod.metrics import validation
from spokentod.metrics.registry import available, headline
from spokentod.metrics.score import ScoreError, score_run
from spokentod.rundir.merge import merge_runs
from spokentod.rundir.scan import run_status
from spokentod.rundir.store import StoreError

app = typer.Typer(no_args_is_help=True, add_completion=False,
                  help="Run systems turn by turn under the gold-context protocol; inspect and merge runs.")
err = Console(stderr=True, soft_wrap=True)  # no hard wraps: paths in messages stay copyable
out_console = Console()


def _fail(message: str, code: int = 1) -> typer.Exit:
    err.print(f"[red]error:[/red] {escape(message)}")
    return typer.Exit(code)


@app.command()
def run(config: Annotated[Path, typer.Argument(help="Bench config YAML (see configs/demo.yaml).")],
        limit: Annotated[int | None, typer.Option("--limit", min=1,
                                                  help="Only the first N dialogues (after sampling).")] = None,
        shard: Annotated[str, typer.Option("--shard", help="Run shard i of n (1-based), e.g. 2/4; each shard "
                                           "writes its own files; join them with `bench merge`.")] = "1/1",
        out: Annotated[Path | None, typer.Option("--out", help="Output directory (default: the config's `out`).")
                       ] = None,
        retry_errors: Annotated[bool, typer.Option("--retry-errors/--keep-errors",
                                                   help="On resume, redo turns whose last attempt failed.")] = True,
        progress: Annotated[bool, typer.Option("--progress/--no-progress", help="Show the progress bar.")] = True,
        set_: Annotated[list[str] | None, typer.Option(
            "--set", help="Override a config field: --set systems.e2e.audiolm.adapter=runs/adapter/x/best "
            "(repeatable).")] = None,
        ) -> None:
    """Run (or resume) a bench: the same command again continues where a stopped run left off."""
    try:
        shard_t = parse_shard(shard)
    except ValueError as e:
        raise _fail(str(e), 2) from None
    try:
        summary = run_bench(config, limit=limit, shard=shard_t, out=out, progress=progress,
                            retry_errors=retry_errors, overrides=set_ or [])
    except ConfigError as e:
        raise _fail(str(e), 2) from None
    except (BenchError, SpokenTODError) as e:
        raise _fail(str(e)) from None
    except KeyboardInterrupt:
        err.print("[yellow]interrupted[/yellow]: finished turns are saved; run the same command to resume")
        raise typer.Exit(130) from None
    table = Table(title=f"{summary.out} ({summary.status}, {summary.wall_s:.1f} s)")
    for col in ("system", "planned", "done", "ok", "errors", "missing", "ran now"):
        table.add_column(col, justify="left" if col == "system" else "right")
    for name, c in summary.counts.items():
        table.add_row(name, *(str(c[k]) for k in ("planned", "done", "ok", "errors", "missing", "ran")))
    out_console.print(table)


@app.command()
def status(directory: Annotated[Path, typer.Argument(help="A run directory.")]) -> None:
    """Records per system, errors by reason, missing turns."""
    try:
        run, stats = run_status(directory)
    except StoreError as e:
        raise _fail(str(e)) from None
    for name, meta in run.metas.items():
        sessions = meta.get("sessions", [])
        out_console.print(f"{name}: status [bold]{meta.get('status', '?')}[/bold], {len(sessions)} session(s), "
                          f"started {meta.get('started', '?')}, last ended {meta.get('ended') or '-'}")
    table = Table(title=str(directory))
    for col in ("system", "planned", "done", "ok", "errors", "missing", "retried", "outside plan"):
        table.add_column(col, justify="left" if col == "system" else "right")
    for s in stats:
        table.add_row(s.system, *map(str, (s.planned, s.done, s.ok, s.errors, s.missing, s.retried, s.outside_plan)))
    out_console.print(table)
    reasons = [(s.system, r, n) for s in stats for r, n in s.reasons.most_common()]
    if reasons:
        t = Table(title="errors by reason")
        for col in ("system", "reason", "count"):
            t.add_column(col, justify="right" if col == "count" else "left")
        for row in reasons:
            t.add_row(row[0], escape(row[1]), str(row[2]))
        out_console.print(t)
    for s in stats:
        if s.partial_bytes:
            out_console.print(f"[yellow]{s.system}: a half-written last record ({s.partial_bytes} bytes) will be "
                              "dropped and redone on resume[/yellow]")


@app.command()
def merge(directories: Annotated[list[Path], typer.Argument(help="Run directories (shards) to join.")],
          out: Annotated[Path, typer.Option("--out", help="New directory for the merged run.")]) -> None:
    """Join shard directories, check for gaps and duplicates; exit 1 on conflict (nothing written then)."""
    try:
        report = merge_runs(directories, out)
    except StoreError as e:
        raise _fail(str(e)) from None
    for msg in report.notes:
        err.print(f"[yellow]note:[/yellow] {escape(msg)}")
    for msg in report.duplicates:
        err.print(f"[yellow]duplicate:[/yellow] {escape(msg)}")
    for shard in report.missing_shards:
        err.print(f"[yellow]gap:[/yellow] shard {shard} is in none of the inputs")
    for system, keys in report.gaps.items():
        shown = ", ".join(f"{k[1]}#{k[2]}" + (f"/s{k[3]}" if k[3] else "") for k in keys[:5])
        err.print(f"[yellow]gap:[/yellow] {system}: {len(keys)} turn(s) missing ({escape(shown)}"
                  f"{', ...' if len(keys) > 5 else ''})")
    if report.conflicts:
        for msg in report.conflicts:
            err.print(f"[red]conflict:[/red] {escape(msg)}")
        raise _fail(f"{len(report.conflicts)} conflict(s); nothing was written")
    table = Table(title=f"merged into {out}")
    for col in ("system", "records", "errors", "missing"):
        table.add_column(col, justify="left" if col == "system" else "right")
    for name, c in report.counts.items():
        table.add_row(name, str(c["records"]), str(c["errors"]), str(c["missing"]))
    out_console.print(table)


@app.command()
def score(
    run_dir: Annotated[Path, typer.Argument(help="A bench run directory (holds run.json and results/).")],
    metrics: Annotated[str | None, typer.Option(
        "--metrics", help="Comma-separated metric groups or outputs (default: all; the judge groups need "
        f"--judge). Groups: {', '.join(available())}.")] = None,
    judge: Annotated[str | None, typer.Option(
        "--judge", help="LLM judge backend: a name (smollm2), a JSON config ('{\"name\": \"openai\", "
        "\"model\": ..., \"base_url\": ...}') or a YAML file.")] = None,
    asr: Annotated[str | None, typer.Option(
        "--asr", help="ASR for standardized transcription (default whisper-ct2, tiny.en); same forms as --judge.")
    ] = None,
    audio_judge: Annotated[str | None, typer.Option(
        "--audio-judge", help="audiolm backend for the voice-consistency judge.")] = None,
    judge_repeats: Annotated[int | None, typer.Option("--judge-repeats", min=1, help="Judge each reply N times.")
                             ] = None,
    judge_max_tokens: Annotated[int, typer.Option("--judge-max-tokens", min=16)] = 400,
    workers: Annotated[int, typer.Option("--workers", min=1, help="Parallel calls for HTTP judges.")] = 4,
    cache: Annotated[bool, typer.Option("--cache/--no-cache", help="Reuse cached results and backend calls.")] = True,
) -> None:
    """Compute per-reply metrics for a run: writes <run>/metrics/<system>.jsonl and summary.json."""
    try:
        summary = score_run(run_dir, metrics=metrics, judge=judge, asr=asr, cache=cache, audio_judge=audio_judge,
                            judge_repeats=judge_repeats, judge_max_tokens=judge_max_tokens, workers=workers,
                            progress=True)
    except (ScoreError, SpokenTODError, KeyError, FileNotFoundError, ValueError) as e:
        err.print(f"[red]error:[/red] {e}")
        raise typer.Exit(1) from None
    show = headline()
    table = Table(title=f"{run_dir} metrics (mean, n)")
    table.add_column("system", no_wrap=True)
    table.add_column("replies", justify="right")
    for m in show:
        table.add_column(m, justify="right")
    for system, s in summary["systems"].items():
        cells = []
        for m in show:
            v = s["metrics"].get(m)
            cells.append("-" if not v or v["mean"] is None else f"{v['mean']:.3g} ({v['n']})")
        table.add_row(system, str(s["replies"]), *cells)
    out_console.print(table)
    if summary.get("judge") and summary["judge"].get("weak"):
        err.print(f"[yellow]judge warning:[/yellow] {summary['judge']['weak_reason']}")
    if st := validation.judge_status(summary.get("judge")):
        colour = "green" if st["validated"] else "yellow"
        head = [ln for ln in st["lines"] if f" {validation.JUDGE_HEADLINE}:" in ln] or st["lines"][:1]
        err.print(f"[{colour}]judge validation:[/{colour}] {escape(head[0])}")
    st = summary["stats"]
    err.print("computed/cached: " + ", ".join(f"{g} {v['computed']}/{v['cached']}" for g, v in st.items()))


@app.command()
def report(dirs: Annotated[list[Path], typer.Argument(help="Scored run directories (see `bench score`).")],
           out: Annotated[Path | None, typer.Option("--out", help="Output folder (default: DIR/report for one run, "
                                                    "./report for several).")] = None) -> None:
    """Write report.md, a self-contained report.html and CSV tables for one or more scored runs."""
    try:
        written = write_report(list(dirs), out)
    except ReportError as e:
        raise _fail(str(e)) from None
    out_console.print(f"wrote {written['report.html']}\n      {written['report.md']}\n      "
                      f"{len([k for k in written if k.endswith('.csv')])} CSV tables in {written['report.md'].parent}")


@app.command()
def study(dirs: Annotated[list[Path], typer.Argument(help="Scored run directories of the study.")],
          out: Annotated[Path, typer.Option("--out", help="The study's markdown; the full report goes in the folder "
                                            "of the same name.")] = Path("reports/context_trap_cpu.md")) -> None:
    """The Context Trap study report: verdict (e2e vs cascade per-turn slopes with CIs), stage times, then the
    full bench report — all computed from the run files."""
    from spokentod.studies.context_trap import write

    try:
        written = write(list(dirs), out)
    except ReportError as e:
        raise _fail(str(e)) from None
    out_console.print(f"wrote {written['study']} and {written['report.html']}")


@app.command("judge-check")
def judge_check_cmd(
    corpus: Annotated[str | None, typer.Option("--corpus", help="A registered corpus (salesbot2, multiwoz22, demo...).")
                      ] = None,
    path: Annotated[str | None, typer.Option("--path", help="The corpus files.")] = None,
    manifest: Annotated[str | None, typer.Option("--manifest", help="A spokentod JSONL manifest instead.")] = None,
    limit: Annotated[int | None, typer.Option("--limit", min=1, help="The first N dialogues.")] = None,
    judge: Annotated[list[str] | None, typer.Option(
        "--judge", help="LLM judge backend, as for `bench score --judge` (a name, JSON or YAML); give it twice "
        "to measure how two judges agree.")] = None,
    metrics: Annotated[str, typer.Option("--metrics", help="Judge-free metric groups to check ('' for none).")
                       ] = "judge_free,judge_free_flags",
    positions: Annotated[int, typer.Option("--positions", min=1, help="Positions (user turns) per dialogue.")] = 3,
    seed: Annotated[int, typer.Option("--seed", help="Seeds the choice of positions and corruptions.")] = 0,
    judge_repeats: Annotated[int, typer.Option("--judge-repeats", min=1, help="Judge each reply N times "
                                               "(test-retest agreement).")] = 1,
    judge_temperature: Annotated[float, typer.Option("--judge-temperature", min=0.0)] = 0.0,
    judge_max_tokens: Annotated[int, typer.Option("--judge-max-tokens", min=16)] = 400,
    workers: Annotated[int, typer.Option("--workers", min=1, help="Parallel calls for HTTP judges.")] = 4,
    probe: Annotated[int, typer.Option("--probe", min=0, help="Ask each judge about N replies first and give up "
                                       "(the rest missing, with the reason) if it answers none (0: judge all).")
                     ] = 5,
    out: Annotated[Path | None, typer.Option("--out", help="Output folder (default runs/judge-check/<corpus>).")
                   ] = None,
    cache: Annotated[bool, typer.Option("--cache/--no-cache", help="Reuse cached judge calls.")] = True,
    store: Annotated[bool, typer.Option("--store/--no-store", help="File the verdicts where `bench score` and "
                                        "`bench report` look them up.")] = True,
) -> None:
    """Validate scorers: score gold replies and corruptions of them (off-topic, repeat, generic, memory) and
    report each scorer's pairwise accuracy with CIs, flag rates, test-retest and between-judge agreement."""
    try:
        source = DialogueSource(corpus=corpus or (None if manifest or path else "demo"), path=path,
                                manifest=manifest, limit=limit)
    except ValueError as e:
        raise _fail(str(e), 2) from None
    folder = out or Path("runs/judge-check") / (source.corpus or Path(manifest or "manifest").stem)
    try:
        result = judge_check(source, folder, judges=judge, metrics=metrics or None, positions=positions, seed=seed,
                             judge_repeats=judge_repeats, judge_temperature=judge_temperature,
                             judge_max_tokens=judge_max_tokens, workers=workers, cache=cache, store=store,
                             probe=probe, progress=True)
    except (JudgeCheckError, ScoreError, SpokenTODError, KeyError, FileNotFoundError, ValueError) as e:
        raise _fail(str(e)) from None
    _print_check(result)


def _print_check(result: dict) -> None:
    labels = result["labels"]
    out_console.print(f"{result['dialogues']} dialogues, {result['positions']} positions; replies: "
                      + ", ".join(f"{labels[k]} {n}" for k, n in result["replies"].items()))
    for kind, reasons in result["skipped"].items():
        for why, n in reasons.items():
            out_console.print(f"  [dim]{labels[kind]} not built ×{n}: {escape(why)}[/dim]")
    for st in result["sets"]:
        if st["scorers"] and not any(p["pairs"] for v in st["scorers"].values() for p in v["pairwise"].values()):
            out_console.print(f"[red]{st['name']}: {escape(st.get('label') or '')}: no pair could be scored, every "
                              "judgement is missing[/red]")
        else:
            _print_pairwise(st, labels)
        for g, j in (st.get("judgements") or {}).items():
            heads: Counter = Counter()  # reasons differ by the quoted reply: count them by their head
            for r, n in j["missing_reasons"].items():
                heads[r.split(": ", 1)[0]] += n
            reasons = "; ".join(f"{escape(r)} ×{n}" for r, n in heads.most_common(3))
            reasons += f"; {len(heads) - 3} other kinds" if len(heads) > 3 else ""
            out_console.print(f"  {g}: judged {j['judged']}/{j['replies']}, missing {j['missing']}"
                              + (f" ({reasons})" if reasons else ""))
        if st["flag_rates"]:
            ft = Table(title=f"{st['name']}: failure flag rate on its corruption vs on gold")
            for col in ("flag", "corruption", "rate on corruption", "rate on gold"):
                ft.add_column(col, justify="left" if col in ("flag", "corruption") else "right")
            by = {(f["failure"], f["kind"]): f for f in st["flag_rates"]}
            for c in [f for f in st["flag_rates"] if f["expected"]]:  # the judge's flags, or the judge-free ones
                ft.add_row(c["failure"], labels[c["kind"]], _rate(c), _rate(by[(c["failure"], "gold")]))
            out_console.print(ft)
        if st["test_retest"]:
            _print_agreement([{"scorer": o, **r} for o, r in st["test_retest"].items()],
                             f"{st['name']}: test-retest (first two repeats of each reply)")
        if st.get("gave_up"):
            out_console.print(f"[yellow]{escape(st['gave_up'])}[/yellow]")
        if st["type"] == "judge":
            colour = "green" if st["validated"] else "red"
            out_console.print(f"[{colour}]judge {escape(st['label'])}: "
                              f"{'validated' if st['validated'] else 'NOT validated'}[/] ({validation.BAR_TEXT}; "
                              f"decided by its {validation.JUDGE_HEADLINE} score)")
    if result["agreement"]:
        _print_agreement(result["agreement"], "agreement between judges: " + ", ".join(
            dict.fromkeys(" vs ".join(a["sets"]) for a in result["agreement"])))
    out_console.print(f"wrote {result['out']}/judge_check.json, pairwise.csv, flag_rates.csv, agreement.csv, "
                      "judge_check.html" + (f"; filed {len(result.get('stored', []))} verdict(s) for reports"
                                            if result.get("stored") else ""))


def _rate(f: dict) -> str:
    return "–" if not f["n"] else f"{100 * f['rate']:.0f} % [{100 * f['ci_low']:.0f}, {100 * f['ci_high']:.0f}] ({f['n']})"


def _print_agreement(rows: list[dict], title: str) -> None:
    if not any(r["n"] for r in rows):
        out_console.print(f"{title}: no reply has two values to compare")
        return
    t = Table(title=title)
    for col in ("scorer", "n", "r", "kappa", "exact", "same verdict"):
        t.add_column(col, justify="left" if col == "scorer" else "right")

    def f(x: float | None) -> str:
        return "–" if x is None else f"{x:.2f}"

    for r in rows:
        t.add_row(r["scorer"], str(r["n"]), f(r.get("r")), f(r.get("kappa")), f(r.get("exact")),
                  f(r.get("same_verdict")))
    out_console.print(t)


def _print_pairwise(st: dict, labels: dict) -> None:
    title = st["name"] + (f": {st['label']}" if st.get("label") else "") + " — pairwise accuracy [95 % CI] (n)"
    table = Table(title=title)
    table.add_column("scorer", no_wrap=True)
    kinds = list(next(iter(st["scorers"].values()))["pairwise"]) if st["scorers"] else []
    for k in kinds:
        table.add_column(f"vs {labels[k]}", justify="right")
    table.add_column("validated", no_wrap=True)
    for v in st["scorers"].values():
        cells = []
        for k in kinds:
            p = v["pairwise"][k]
            ok, _ = validation.passes(p)
            miss = f", {p['missing']} missing" if p["missing"] else ""
            cells.append(f"[{'green' if ok else 'red'}]{validation.est(p)}[/]\n[dim]n={p['pairs']}{miss}[/]")
        table.add_row(v["label"], *cells, "[green]yes[/]" if v["verdict"]["validated"] else "[red]no[/]")
    out_console.print(table)
