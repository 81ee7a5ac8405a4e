"""``spokentod adapter write|prepare|train|eval|export|report``: the speech adapter's corpus, training and results."""

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
def write(
    out: Annotated[Path, Opt(help="JSONL of written sentences (appended to: the run resumes).")] = Path(
        "runs/adapter/written.jsonl"),
    n: Annotated[int, Opt(help="Usable sentences to reach.")] = 20000,
    seed: Annotated[int, Opt(help="Seeds each batch's topics, styles and sampling.")] = 0,
    batch: Annotated[int, Opt(help="Generations per batch.")] = 16,
    threads: Annotated[int | None, Opt(help="torch threads (default: torch's).")] = None,
    llm: Annotated[str, Opt(help="smollm2 (the embedded LLM) or a Hugging Face model directory.")] = "smollm2",
    device: Annotated[str, Opt(help="torch device: cpu, cuda.")] = "cpu",
) -> None:
    """Everyday sentences written by the embedded LLM: the corpus's broad-vocabulary source (`written:`)."""
    from spokentod.adapter.written import write as run

    typer.echo(json.dumps(run(out, n, seed=seed, llm=llm, batch=batch, threads=threads, device=device)))


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


@app.command()
def replies(
    recipe: Annotated[Path, typer.Argument(help="Adapter recipe YAML whose train.distill_replies receives them.")],
    limit: Annotated[int | None, Opt(help="Distinct training texts to answer (a seeded sample; default all).")] = None,
    set_: Annotated[list[str] | None, Opt("--set", help="Override a field: train.distill_replies=...")] = None,
) -> None:
    """The frozen LLM's greedy replies to the training texts, for the distillation loss (resumable)."""
    import torch

    from spokentod.adapter.distill import prepare_replies
    from spokentod.adapter.model import SpeechAdapter
    from spokentod.adapter.train import load_recipe, splits

    cfg = load_recipe(recipe, set_ or [])
    if not cfg.train.distill_replies:
        raise typer.BadParameter(f"{recipe}: train.distill_replies is not set (where the replies go)")
    torch.set_num_threads(cfg.train.threads)
    train_set, _ = splits(cfg)
    model = SpeechAdapter.build(cfg.model, feature_dim=1).eval()  # the LLM alone answers: no speech involved
    meta = prepare_replies(model, [u.text for u in train_set], cfg.train.distill_replies, limit, cfg.train.seed)
    typer.echo(json.dumps(meta))


@app.command("eval")
def eval_(
    adapter: Annotated[Path, typer.Argument(help="Adapter directory (adapter.safetensors + adapter.json).")],
    corpus: Annotated[Path, Opt(help="Corpus directory.")] = Path("runs/adapter/corpus"),
    split: Annotated[str, Opt(help="dev or test.")] = "test",
    limit: Annotated[int | None, Opt(help="Decode a seeded sample of this many utterances.")] = None,
) -> None:
    """WER of an adapter on a held-out split (LLM and CTC readings, by TTS/voice/source) → eval_<split>.json."""
    from spokentod.adapter.evaluate import run_eval

    if split not in ("dev", "test"):
        raise typer.BadParameter(f"--split must be dev or test, not {split!r}")
    out = run_eval(adapter, corpus, split, limit)  # type: ignore[arg-type]
    typer.echo(f"{split}: WER {out['wer']:.3f} (CTC {out['ctc_wer']:.3f}) over {out['n']} utterances; "
               f"by TTS {json.dumps({k: round(v['wer'], 3) for k, v in out['by_tts'].items()})}")


@app.command()
def export(
    adapter: Annotated[Path, typer.Argument(help="Adapter directory to ship (e.g. runs/adapter/run2/best).")],
    out: Annotated[Path | None, Opt(help="Destination (default: the package's embedded adapter).")] = None,
) -> None:
    """Write the adapter in float16 with its sidecar (training facts, measured WER, re-train command)."""
    from spokentod.adapter import EMBEDDED
    from spokentod.adapter.evaluate import export as run

    meta = run(adapter, out or EMBEDDED)
    typer.echo(f"{out or EMBEDDED}: {meta['params']} parameters, measured {json.dumps(meta['measured'])[:200]}")


@app.command()
def report(
    run: Annotated[Path, typer.Argument(help="The main training run directory.")],
    out: Annotated[Path, Opt(help="Markdown report path (its PNG goes beside it).")] = Path("reports/speech_adapter.md"),
    try_: Annotated[list[str] | None, Opt("--try", help="Another run for the table: 'label=dir'.")] = None,
    agreement: Annotated[Path | None, Opt(help="Reply agreement JSON (benchmarks/speechlm_agreement.py --json).")] = None,
) -> None:
    """Write reports/speech_adapter.md (+ PNG) from the run files."""
    from spokentod.adapter.report import write_report

    tried = []
    for item in try_ or []:
        label, sep, path = item.rpartition("=")
        if not sep or not label:
            raise typer.BadParameter(f"--try {item!r}: expected 'label=dir'")
        tried.append((label, path))
    typer.echo(write_report(run, out, tried, agreement))
