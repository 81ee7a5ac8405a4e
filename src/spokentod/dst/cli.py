"""``spokentod dst ...``: dialogue state tracking commands (scoring here; training and inference apart)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from spokentod.errors import SpokenTODError

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
    """Dialogue state tracking: scoring."""  # a callback keeps `score` a subcommand even while it is alone


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
    from spokentod.dst.normalize import Policy
    from spokentod.dst.score import score_files

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
