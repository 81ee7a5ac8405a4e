"""``spokentod bench run|status|merge|score|report``: thin shells over the evaluation stack.

This is the one place that wires the stack together: `bench` produces run directories (run), `rundir`
reads and joins them (status, merge), `metrics` measures them (score) and `analysis` summarises them
(report). The library modules below hold no CLI code and do not import one another upwards.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from spokentod.analysis.load import ReportError
from spokentod.analysis.report import write_report
from spokentod.bench.config import ConfigError
from spokentod.bench.run import parse_shard, run_bench
from spokentod.errors import BenchError, SpokenTODError
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
        ) -> None:
    """Run (or resume) a bench: the same command again continues where a stopped run left off."""
    try:
        shard_t = parse_shard(shard)
    except ValueError as e:
        raise _fail(str(e), 2) from None
    try:
        summary = run_bench(config, limit=limit, shard=shard_t, out=out, progress=progress,
                            retry_errors=retry_errors)
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
