"""``spokentod data ...``: mirrors spokentod.data.{corpora,stats,sample,synth,validate,lhotse_export}."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape  # problem texts hold "[record ...]", which rich would read as markup

from spokentod.data import corpora, lhotse_export
from spokentod.data.manifest import write_manifest
from spokentod.data.sample import stratified_sample
from spokentod.data.stats import corpus_stats, render_stats
from spokentod.data.synth import synthesize_manifest
from spokentod.data.validate import validate_path
from spokentod.errors import DataError, Problem, SpokenTODError

app = typer.Typer(no_args_is_help=True, add_completion=False)
err = Console(stderr=True)

CORPUS = typer.Option(None, "--corpus", "-c", help="Corpus name (see `spokentod data corpora`); auto-detected if omitted.")
PATH = typer.Option(None, "--path", "-p",
                    help="Corpus file or directory (may be omitted for corpora that ship data, e.g. demo).")
LENIENT = typer.Option(False, "--lenient", help="Skip bad records, report each one and the count.")


def _load(corpus: str | None, path: Path | None, lenient: bool):
    problems: list[Problem] = []
    try:
        dialogues = corpora.load(corpus, path, lenient=lenient, problems=problems)
    except (DataError, KeyError) as e:
        err.print(f"[red]error:[/red] {escape(str(e))}")
        raise typer.Exit(1) from None
    if problems:
        for p in problems:
            err.print(f"[yellow]skipped:[/yellow] {escape(str(p))}")
        err.print(f"[yellow]{len(problems)} problem(s); {len(dialogues)} dialogues loaded[/yellow]")
    return dialogues


@app.command("corpora")
def list_corpora() -> None:
    """List the corpus loaders."""
    for name in corpora.names():
        typer.echo(name)


@app.command()
def stats(corpus: str = CORPUS, path: Path = PATH, as_json: bool = typer.Option(False, "--json"),
          lenient: bool = LENIENT) -> None:
    """Corpus statistics (dialogues, turns, intents, transition position, chit-chat length)."""
    s = corpus_stats(_load(corpus, path, lenient))
    if as_json:
        typer.echo(json.dumps(s, indent=None, sort_keys=True))
    else:
        Console().print(render_stats(s))


@app.command()
def sample(out: Annotated[Path, typer.Option("--out")], corpus: str = CORPUS, path: Path = PATH,
           n: Annotated[int, typer.Option("--n")] = 500,
           stratify: Annotated[str, typer.Option(help="Field to stratify by ('intent', 'source' or 'none').")
                               ] = "intent",
           seed: Annotated[int, typer.Option()] = 0, lenient: bool = LENIENT) -> None:
    """Sample N dialogues following the distribution of --stratify."""
    picked = stratified_sample(_load(corpus, path, lenient), n, None if stratify == "none" else stratify, seed)
    write_manifest(out, picked)
    err.print(f"wrote {len(picked)} dialogues to {out}")


@app.command()
def convert(out: Annotated[Path, typer.Option("--out")], corpus: str = CORPUS, path: Path = PATH,
            lenient: bool = LENIENT) -> None:
    """Convert a corpus to a spokentod JSONL manifest."""
    n = write_manifest(out, _load(corpus, path, lenient))
    err.print(f"wrote {n} dialogues to {out}")


@app.command()
def synth(manifest: Annotated[Path, typer.Argument(help="Input JSONL manifest.")],
          out: Annotated[Path, typer.Option("--out", help="Output directory (audio + manifest.jsonl).")],
          tts: Annotated[str, typer.Option(help="TTS backend: kokoro (default) or espeak (fast fallback).")
                         ] = "kokoro",
          voices: Annotated[str, typer.Option(help="Comma-separated voices, assigned per dialogue (default: all).")
                            ] = "",
          speakers: Annotated[str, typer.Option(help="Which turns to render: user, agent or all.")] = "user",
          rate: Annotated[int, typer.Option(help="Output sample rate.")] = 16000) -> None:
    """Render turns to mono WAV; resumable (rendered turns are skipped)."""
    try:
        path = synthesize_manifest(manifest, out, tts=tts, voices=[v for v in voices.split(",") if v] or None,
                                   speakers=speakers, rate=rate)
    except SpokenTODError as e:
        err.print(f"[red]error:[/red] {escape(str(e))}")
        raise typer.Exit(1) from None
    err.print(f"wrote {path}")


@app.command()
def validate(path: Annotated[Path, typer.Argument(help="A manifest (.jsonl) or a corpus file/directory.")],
             corpus: Annotated[str | None, typer.Option("--corpus", "-c")] = None,
             root: Annotated[Path | None, typer.Option(
                 help="Corpus root audio must stay inside (default: the manifest's folder).")] = None) -> None:
    """Check structure, fields and audio; list every problem with record and field; exit 1 if any."""
    problems = validate_path(path, corpus=corpus, root=root)
    for p in problems:
        typer.echo(str(p))
    if problems:
        err.print(f"[red]{len(problems)} problem(s)[/red]")
        sys.exit(1)
    err.print("[green]ok[/green]")


@app.command("export-lhotse")
def export_lhotse(manifest: Annotated[Path, typer.Argument()], out: Annotated[Path, typer.Option("--out")],
                  gzip: Annotated[bool, typer.Option("--gzip", help="Write .jsonl.gz.")] = False) -> None:
    """Write lhotse-compatible recordings.jsonl and supervisions.jsonl."""
    try:
        paths = lhotse_export.export_lhotse(manifest, out, gzip=gzip)
    except SpokenTODError as e:
        err.print(f"[red]error:[/red] {escape(str(e))}", soft_wrap=True)
        raise typer.Exit(1) from None
    for p in paths.values():
        err.print(f"wrote {escape(str(p))}", soft_wrap=True)
    if hasattr(paths, "summary"):
        err.print(paths.summary(), soft_wrap=True)
