"""One entry point: ``spokentod data|serve|demo ...``. Every command is a thin shell over the Python API."""

from __future__ import annotations

import typer

from spokentod.data.cli import app as data_app

app = typer.Typer(no_args_is_help=True, add_completion=False, help=__doc__)
app.add_typer(data_app, name="data", help="Corpora: stats, sampling, conversion, speech synthesis, validation.")


@app.command()
def demo(out: str = typer.Option("runs/demo", help="Output directory."),
         n: int = typer.Option(0, help="Dialogues to render (0 = all demo dialogues).")) -> None:
    """Run the main job on the embedded defaults (demo corpus → stats → audio → round-trip WER)."""
    from spokentod.demo import run_demo

    run_demo(out, n=n or None)


def _register_optional() -> None:
    # Command groups from later parts of the toolkit register here when their modules exist.
    import importlib

    for mod, name in (("spokentod.serve.cli", "serve"), ("spokentod.dst.cli", "dst"),
                      ("spokentod.bench.cli", "bench"), ("spokentod.adapter.cli", "adapter")):
        try:
            m = importlib.import_module(mod)
        except ModuleNotFoundError as e:
            if e.name != mod:
                raise
            continue
        if isinstance(getattr(m, "app", None), typer.Typer):
            app.add_typer(m.app, name=name)
        else:
            app.command(name)(m.main)


_register_optional()

if __name__ == "__main__":
    app()
