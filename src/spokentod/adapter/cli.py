"""``spokentod adapter prepare|train``: the speech adapter's corpus and training."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from spokentod.config_file import apply_overrides, validate

app = typer.Typer(no_args_is_help=True, add_completion=False,
                  help="The speech adapter (speech encoder → connector → frozen LLM): corpus and training.")
Opt = typer.Option


@app.command()
def prepare(
    out: Annotated[Path, Opt(help="Corpus directory.")] = Path("runs/adapter/corpus"),
    data: Annotated[Path, Opt(help="The shared data root.")] = Path("../shared/data"),
    workers: Annotated[int, Opt(help="Rendering processes.")] = 2,
    render: Annotated[bool, Opt(help="Render missing audio; --no-render writes the manifest of what is on disk.")] = True,
    set_: Annotated[list[str] | None, Opt("--set", help="Override a corpus setting: sizes.templates=5000")] = None,
) -> None:
    """Build the leak-free ASR corpus: text pool, held-out splits, TTS rendering (resumable)."""
    from spokentod.adapter.corpus import CorpusConfig  # torch-free, but loads every corpus
    from spokentod.adapter.corpus import prepare as run

    cfg = validate(CorpusConfig, apply_overrides({"data": str(data)}, set_ or [], typer.BadParameter), "--set",
                   typer.BadParameter, "corpus settings")
    meta = run(cfg, out, workers=workers, render_audio=render)
    typer.echo(json.dumps({k: meta[k] for k in ("counts", "dropped", "hours", "rendered", "n_failed")}, indent=1))


@app.command()
def train(
    recipe: Annotated[Path, typer.Argument(help="Adapter recipe YAML (configs/adapter/*.yaml).")],
    set_: Annotated[list[str] | None, Opt("--set", help="Override a field: train.budget_minutes=30")] = None,
    features_only: Annotated[bool, Opt(help="Only compute the encoder features of the corpus.")] = False,
) -> None:
    """Cache the corpus features, then train (resumable; stops at the step or time budget)."""
    from spokentod.adapter.train import Features, load_recipe, splits  # torch and the LLM: only when run
    from spokentod.adapter.train import train as run

    cfg = load_recipe(recipe, set_ or [])
    train_set, dev = splits(cfg)
    Features(cfg).fill(dev + train_set)
    if not features_only:
        state = run(cfg)
        typer.echo(f"best dev WER {state['best_wer']:.3f} at step {state['best_step']} "
                   f"({state['train_s'] / 60:.1f} min of training); adapter in {Path(cfg.out) / 'best'}")
