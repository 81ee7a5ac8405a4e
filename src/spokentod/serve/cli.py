"""`spokentod serve`: run the OpenAI-compatible server with uvicorn.

    spokentod serve [--config FILE.yaml] [--host 127.0.0.1] [--port 8000] [--token-env NAME]

Binds to loopback by default. With --token-env NAME, every /v1/ request needs
`Authorization: Bearer $NAME`; the server refuses to start if NAME is unset or empty.

TEST ONLY: `--faults SPEC` (or the environment variable SPOKENTOD_SERVE_FAULTS) makes the server fail,
stall or send malformed JSON on purpose, e.g. "fail=2,status=429,retry_after=0.1" or "delay=30"
(see spokentod.serve.middleware.Faults). It is hidden from --help and must never be set in production.
"""

from __future__ import annotations

import os
from typing import Any

import typer
from pydantic import BaseModel, ConfigDict

from spokentod.config_file import read_mapping, validate


class ServeConfig(BaseModel):
    """The --config file: a backend per kind (a name or a backend config), request limits, the call cache."""

    model_config = ConfigDict(extra="forbid")
    asr: str | dict[str, Any] | None = None
    llm: str | dict[str, Any] | None = None
    tts: str | dict[str, Any] | None = None
    audiolm: str | dict[str, Any] | None = None
    limits: dict[str, Any] | None = None  # spokentod.serve.schema.Limits
    cache: bool | dict[str, Any] | None = None  # true, or spokentod.backends.cache.Cache's arguments


class _ConfigError(typer.BadParameter):
    def __init__(self, message: str):
        super().__init__(message, param_hint="--config")


def load_config(path: str | None) -> dict | None:
    """The sections the file sets (None without a file: the embedded backends); errors name file and field."""
    if not path:
        return None
    cfg = validate(ServeConfig, read_mapping(path, _ConfigError, "config"), path, _ConfigError, "serve")
    return cfg.model_dump(exclude_unset=True)


def main(config: str = typer.Option(None, "--config", help="YAML: {asr: {name: whisper-ct2}, llm: {name: smollm2}, "
                                    "tts: {name: kokoro}}. Default: the embedded backends."),
         host: str = typer.Option("127.0.0.1", help="Interface to bind (loopback by default)."),
         port: int = typer.Option(8000, help="TCP port."),
         token_env: str = typer.Option(None, "--token-env", help="Name of an environment variable holding the "
                                       "bearer token clients must send."),
         preload: bool = typer.Option(False, help="Load every backend at start instead of on first use."),
         log_level: str = typer.Option("info", help="uvicorn log level."),
         faults: str = typer.Option(None, "--faults", hidden=True, envvar="SPOKENTOD_SERVE_FAULTS",
                                    help="TEST ONLY: inject failures (see module docstring)."),
         ) -> None:
    """Serve the configured backends over an OpenAI-compatible HTTP API."""
    # The server stack (uvicorn, FastAPI) loads only when serving, not for every `spokentod` command.
    import uvicorn

    from spokentod.serve.app import create_app

    token = None
    if token_env:
        token = os.environ.get(token_env)
        if not token:
            raise typer.BadParameter(f"environment variable {token_env} is not set or empty", param_hint="--token-env")
    if host not in ("127.0.0.1", "localhost", "::1") and token is None:
        typer.secho(f"warning: serving on {host} without --token-env: anyone who can reach it can use it",
                    fg="yellow", err=True)
    if faults:
        typer.secho(f"warning: TEST-ONLY fault injection is on: {faults}", fg="red", err=True)
    app = create_app(load_config(config), token=token, faults=faults or None, preload=preload)
    uvicorn.run(app, host=host, port=port, log_level=log_level)
