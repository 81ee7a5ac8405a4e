"""One entry point: ``spokentod data|bench|dst|adapter|serve|demo ...``. Every command is a thin shell over the Python API."""

from __future__ import annotations

import typer

from spokentod.adapter.cli import app as adapter_app
from spokentod.bench.cli import app as bench_app
from spokentod.data.cli import app as data_app
from spokentod.demo import run_demo
from spokentod.dst.cli import app as dst_app
from spokentod.serve.cli import main as serve_main

app = typer.Typer(no_args_is_help=True, add_completion=False, help=__doc__)
app.add_typer(data_app, name="data", help="Corpora: stats, sampling, conversion, speech synthesis, validation.")


@app.command()
def demo(out: str = typer.Option("runs/demo", help="Output directory."),
         n: int = typer.Option(0, help="Dialogues to render (0 = all demo dialogues).")) -> None:
    """Run the main job on the embedded defaults (demo corpus → stats → audio → round-trip WER)."""
    run_demo(out, n=n or None)


app.command("serve")(serve_main)
app.add_typer(dst_app, name="dst")
app.add_typer(bench_app, name="bench")
app.add_typer(adapter_app, name="adapter")


if __name__ == "__main__":
    app()
