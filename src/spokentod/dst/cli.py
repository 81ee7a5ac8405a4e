"""``spokentod dst ...``: dialogue state tracking commands (scoring here; training and inference elsewhere)."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from spokentod.errors import SpokenTODError

app = typer.Typer(no_args_is_help=True, add_completion=False)
err = Console(stderr=True)


@app.callback()
def _group() -> None:
    """Dialogue state tracking: scoring."""  # a callback keeps `score` a subcommand even while it is alone


@app.command()
def score(
    predictions: Path = typer.Option(..., "--predictions", "-p", help="Predictions: our JSONL or MultiWOZ_Evaluation JSON."),
    references: Path = typer.Option(..., "--references", "-r", help="References: a file like the predictions, or a corpus path with --references-corpus."),
    references_corpus: str = typer.Option(None, "--references-corpus", help="Read --references with this corpus loader (multiwoz21, sgd, ...)."),
    ontology: str = typer.Option("auto", help="multiwoz | spokenwoz | sgd | none | a JSON {domain: {slot: [values]}} | auto (from the reference domains)."),
    data_dir: Path = typer.Option(None, help="shared/data directory (default $SPOKENTOD_DATA or ../shared/data)."),
    fuzzy_threshold: float = typer.Option(90.0, min=0, max=100, help="Snap a value to the closest ontology value when the rapidfuzz score (0-100) is >= this."),
    slot_threshold: float = typer.Option(80.0, min=0, max=100, help="Same for unknown slot names against the schema."),
    exclude_test_values: bool = typer.Option(True, "--exclude-test-values/--include-test-values", help="Leave corpus annotation values (which include the test split) out of the ontology."),
    dontcare: str = typer.Option("keep", help="keep: 'dontcare' is a value to predict; drop: treated as absent."),
    none: str = typer.Option("drop", help="drop: 'none' means absent; keep: a value."),
    turn_index: str = typer.Option("index", help="What 'turn' means in JSONL: index (Turn.index, both speakers) or ordinal (user-turn count)."),
    bootstrap: int = typer.Option(0, min=0, help="Bootstrap samples (over dialogues) for a 95% CI of JGA; 0 = none."),
    seed: int = typer.Option(0, help="Bootstrap seed."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
) -> None:
    """Score dialogue states: JGA (exact and normalized+fuzzy), slot P/R/F1, slot-key F1, per-domain JGA, WER."""
    from spokentod.dst.normalize import Policy
    from spokentod.dst.score import score_files

    try:
        result = score_files(predictions, references, references_corpus, ontology, data_dir, fuzzy_threshold,
                             slot_threshold, exclude_test_values, Policy(dontcare, none), turn_index, bootstrap, seed)
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
    t = Table(title="DST scores", show_header=True)
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
    t.caption = (f"ontology: {onto['name']} ({'test values excluded' if onto['test_values_excluded'] else 'INCLUDES test values'})"
                 if onto else "ontology: none (no fuzzy value matching)") + f"; fuzzy threshold {r['fuzzy_threshold']:g}"
    return t
