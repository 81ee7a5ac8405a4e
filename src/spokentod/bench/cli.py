"""``spokentod bench run|status|merge``: thin shells over bench.runner and bench.store."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

app = typer.Typer(no_args_is_help=True, add_completion=False,
                  help="Run systems turn by turn under the gold-context protocol; inspect and merge runs.")
err = Console(stderr=True, soft_wrap=True)  # no hard wraps: paths in messages stay copyable
out_console = Console()


def _fail(message: str, code: int = 1) -> typer.Exit:
    err.print(f"[red]error:[/red] {escape(message)}")
    return typer.Exit(code)


@app.command()
def run(config: Path = typer.Argument(..., help="Bench config YAML (see configs/demo.yaml)."),
        limit: int = typer.Option(None, "--limit", min=1, help="Only the first N dialogues (after sampling)."),
        shard: str = typer.Option("1/1", "--shard", help="Run shard i of n (1-based), e.g. 2/4; each shard "
                                  "writes its own files; join them with `bench merge`."),
        out: Path = typer.Option(None, "--out", help="Output directory (default: the config's `out`)."),
        retry_errors: bool = typer.Option(True, "--retry-errors/--keep-errors",
                                          help="On resume, redo turns whose last attempt failed."),
        progress: bool = typer.Option(True, "--progress/--no-progress", help="Show the progress bar."),
        ) -> None:
    """Run (or resume) a bench: the same command again continues where a stopped run left off."""
    from spokentod.bench.config import ConfigError
    from spokentod.bench.runner import BenchError, parse_shard, run_bench
    from spokentod.errors import SpokenTODError

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
def status(directory: Path = typer.Argument(..., help="A run directory.")) -> None:
    """Records per system, errors by reason, missing turns."""
    from spokentod.bench.store import StoreError, run_status

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
def merge(directories: list[Path] = typer.Argument(..., help="Run directories (shards) to join."),
          out: Path = typer.Option(..., "--out", help="New directory for the merged run.")) -> None:
    """Join shard directories, check for gaps and duplicates; exit 1 on conflict (nothing written then)."""
    from spokentod.bench.store import StoreError, merge_runs

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


def _register_evaluation() -> None:
    """`bench score` and `bench report` live with the metrics and analysis code they run."""
    from spokentod.metrics.score import score_command

    app.command("score")(score_command)
    try:
        from spokentod.analysis.report import report_command
    except ImportError as e:  # the report module may be absent in a partial install; score still works
        if "spokentod.analysis" not in str(e):
            raise
        return
    app.command("report")(report_command)


_register_evaluation()
