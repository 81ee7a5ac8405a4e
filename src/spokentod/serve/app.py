"""OpenAI-compatible HTTP server over configured backends (embedded by default).

Routes: GET /v1/models, POST /v1/chat/completions (JSON or SSE streaming; audio in via `input_audio`
parts, audio out via `modalities: ["text", "audio"]`), POST /v1/audio/transcriptions (multipart),
POST /v1/audio/speech (JSON → WAV/FLAC/PCM), GET /health (no auth).

Config (YAML or dict): ``{asr: {name: whisper-ct2}, llm: {name: smollm2}, tts: {name: kokoro},
audiolm: {...} (optional), limits: {...}, cache: {path: ..., enabled: true} (optional)}``. Each backend
section may carry ``id`` (the model name clients use; default: its `name`). Backends load on first use.

A chat request whose `model` is the audio LM's id goes to the audio LM; one for the LLM runs a cascade
when needed: `input_audio` parts are transcribed by the ASR, and audio output is spoken by the TTS.

`logprobs: true` (with `top_logprobs: 0-20`) returns `choices[0].logprobs.content` in OpenAI's shape where
the LLM backend can give token log-probabilities (the `hf` family: hf, smollm2, gemma3-270m; an `openai`
backend passes them through); elsewhere it is null, not an error, so a client that asks everywhere (the
LLM judge) still gets its text. Such requests skip the server's cache (it keeps text only). Not with
`stream` (400).

`response_format` (`json_object`, or `json_schema` with its `schema`) becomes GenParams.json_schema: the
llamacpp and hf-family backends constrain decoding to it (an `openai` backend passes it on); a backend that
cannot constrain answers as usual, as with logprobs, so a client that always asks (the judge) still gets
its text and parses it leniently.

Models are not thread-safe, so each backend has a lock; calls run in the threadpool so one slow model
call does not block the event loop (health checks, other backends, streaming). Errors are JSON in
OpenAI's shape: bad requests 400 naming the field or cause, a failing remote backend 502, anything else
500 with the reason. No exception reaches uvicorn.
"""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from typing import Annotated, Any

from fastapi import FastAPI, File, Form, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import PlainTextResponse, StreamingResponse
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException

from spokentod.audio import Waveform, as_waveform
from spokentod.backends.base import GenParams, create
from spokentod.backends.cache import Cache, cached
from spokentod.errors import AudioError, field_path
from spokentod.serve.middleware import Faults, Guard
from spokentod.serve.schema import (
    APIError,
    ChatRequest,
    Limits,
    SpeechRequest,
    audio_response,
    classify,
    completion_body,
    decode_audio_parts,
    error_response,
    json_dumps,
    json_schema_of,
)

DEFAULT_CONFIG: dict[str, Any] = {"asr": {"name": "whisper-ct2"}, "llm": {"name": "smollm2"},
                                  "tts": {"name": "kokoro"}}
# Generic OpenAI clients send these voice names; they mean "the server's default voice" here.
OPENAI_VOICES = {"alloy", "ash", "ballad", "coral", "echo", "fable", "nova", "onyx", "sage", "shimmer", "verse"}


class Slot:
    """One configured backend: loaded lazily, called under its own lock."""

    def __init__(self, kind: str, config: dict[str, Any] | None = None, instance: Any = None,
                 cache: Any = None):
        cfg = dict(config or {})
        self.kind, self.cache = kind, cache
        self.instance = self._wrap(instance) if instance is not None else None
        self.raw = instance  # the backend itself, without the cache wrapper
        self.id = str(cfg.pop("id", None) or cfg.get("name") or getattr(instance, "name", kind))
        self.config = cfg
        self._load_lock, self.lock = threading.Lock(), threading.Lock()
        self.calls = 0

    def get(self) -> Any:
        with self._load_lock:
            if self.instance is None:
                try:
                    backend = create(self.kind, self.config)
                except Exception as e:
                    raise APIError(500, f"cannot load {self.kind} backend {self.id!r}: {type(e).__name__}: {e}",
                                   "server_error") from e
                self.instance, self.raw = self._wrap(backend), backend
            return self.instance

    def _wrap(self, backend: Any) -> Any:
        if self.cache is None:
            return backend
        return cached(backend, self.cache)

    def call(self, method: str, *args: Any, **kw: Any) -> Any:
        backend = self.get()
        with self.lock:
            self.calls += 1
            return getattr(backend, method)(*args, **kw)

    def call_uncached(self, method: str, *args: Any, **kw: Any) -> Any:
        """As `call`, past the cache (for results the cache does not keep, such as log-probabilities)."""
        self.get()
        with self.lock:
            self.calls += 1
            return getattr(self.raw, method)(*args, **kw)


# ---------------------------------------------------------------- the app


def create_app(config: dict[str, Any] | None = None, backends: dict[str, Any] | None = None,
               token: str | None = None, limits: Limits | dict | None = None, faults: Faults | str | None = None,
               preload: bool = False) -> FastAPI:
    """`backends` maps kind → an already built instance (tests, embedding in another program);
    `faults` is TEST ONLY (see middleware.Faults)."""
    config = dict(DEFAULT_CONFIG if config is None and not backends else config or {})
    limits = limits if isinstance(limits, Limits) else Limits(**(limits or config.get("limits") or {}))
    faults = Faults.parse(faults) if isinstance(faults, str) else faults
    cache = None
    if config.get("cache"):
        cache_cfg = config["cache"] if isinstance(config["cache"], dict) else {}
        cache = Cache(**cache_cfg)
    slots: dict[str, Slot] = {}
    for kind in ("asr", "llm", "tts", "audiolm"):
        if backends and kind in backends:
            slots[kind] = Slot(kind, {"id": (config.get(kind) or {}).get("id")}, instance=backends[kind], cache=cache)
        elif config.get(kind):
            section = {"name": config[kind]} if isinstance(config[kind], str) else config[kind]
            slots[kind] = Slot(kind, section, cache=cache)

    app = FastAPI(title="spokentod", version="0.1", docs_url=None, redoc_url=None)
    app.state.slots, app.state.limits, app.state.cache, app.state.created = slots, limits, cache, int(time.time())
    guard_kw = {"token": token, "max_body_bytes": limits.max_body_bytes, "faults": faults}
    app.add_middleware(Guard, **guard_kw)
    if preload:
        for slot in slots.values():
            slot.get()

    def slot_for(kind: str, model: str | None, param: str = "model") -> Slot:
        slot = slots.get(kind)
        if slot is None:
            raise APIError(400, f"this server has no {kind} backend configured", param=param)
        if model and model != slot.id:
            raise APIError(404, f"model {model!r} is not served; {kind} model here: {slot.id!r}",
                           "not_found_error", param)
        return slot

    # ------------------------------------------------------------ errors → JSON

    @app.exception_handler(APIError)
    async def _api_error(_: Request, e: APIError):
        return error_response(e.status, e.message, e.type, e.param)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, e: RequestValidationError):
        problems = []
        for err in e.errors()[:5]:
            loc = field_path(err.get("loc", ()), skip=("body",))
            if err.get("type") == "json_invalid":
                problems.append(f"request body is not valid JSON ({err.get('ctx', {}).get('error', '')})")
            else:
                problems.append(f"field '{loc or 'body'}': {err.get('msg')}")
        first = e.errors()[0].get("loc", ()) if e.errors() else ()
        param = field_path(first, skip=("body",)) or None
        return error_response(400, "; ".join(problems) or "invalid request", "invalid_request_error", param)

    @app.exception_handler(HTTPException)
    async def _http(_: Request, e: HTTPException):
        kind = "invalid_request_error" if e.status_code < 500 else "server_error"
        return error_response(e.status_code, str(e.detail), kind)

    @app.exception_handler(Exception)
    async def _crash(_: Request, e: Exception):
        err = classify(e)
        return error_response(err.status, err.message, err.type, err.param)

    async def run(slot: Slot, method: str, *args: Any, uncached: bool = False, **kw: Any) -> Any:
        try:
            return await run_in_threadpool(slot.call_uncached if uncached else slot.call, method, *args, **kw)
        except Exception as e:
            raise classify(e) from e

    # ------------------------------------------------------------ routes

    @app.get("/health")
    async def health():
        return {"status": "ok", "loaded": {k: s.instance is not None for k, s in slots.items()}}

    @app.get("/v1/models")
    async def models():
        return {"object": "list", "data": [{"id": s.id, "object": "model", "created": app.state.created,
                                            "owned_by": "spokentod", "kind": k} for k, s in slots.items()]}

    @app.post("/v1/audio/transcriptions")
    async def transcriptions(file: Annotated[UploadFile, File()], model: Annotated[str, Form()],
                             response_format: Annotated[str, Form()] = "json",
                             language: Annotated[str | None, Form()] = None):
        slot = slot_for("asr", model)
        if response_format not in ("json", "text", "verbose_json"):
            raise APIError(400, f"response_format {response_format!r} is not supported; use json, text or "
                           "verbose_json", param="response_format")
        data = await file.read()
        try:  # decoding and resampling a long file is CPU work: keep it off the event loop
            wav = await run_in_threadpool(as_waveform, data, target_rate=16000, max_seconds=limits.max_audio_seconds)
        except AudioError as e:
            raise APIError(400, f"unsupported audio in field 'file': {e}", param="file") from None
        out = await run(slot, "transcribe", wav, language=language or None)
        if response_format == "text":
            return PlainTextResponse(out.text)
        body: dict[str, Any] = {"text": out.text}
        if response_format == "verbose_json":
            body.update(task="transcribe", language=out.language, duration=wav.duration, segments=out.segments)
        return body

    @app.post("/v1/audio/speech")
    async def speech(req: SpeechRequest):
        slot = slot_for("tts", req.model)
        fmt = req.response_format
        if fmt not in ("wav", "flac", "pcm"):
            raise APIError(400, f"response_format {fmt!r} is not supported; use wav, flac or pcm",
                           param="response_format")
        if not req.input.strip():
            raise APIError(400, "field 'input' is empty: nothing to speak", param="input")
        if len(req.input) > limits.max_input_chars:
            raise APIError(400, f"field 'input' has {len(req.input)} characters, over the "
                           f"{limits.max_input_chars} limit", param="input")
        if req.speed not in (None, 1.0):
            raise APIError(400, "field 'speed': only 1.0 is supported (set speed in the TTS backend config)",
                           param="speed")
        voice = None if req.voice in OPENAI_VOICES else req.voice
        audio = await run(slot, "synthesize", req.input, voice)
        return audio_response(audio.samples, audio.rate, fmt)

    @app.post("/v1/chat/completions")
    async def chat(req: ChatRequest):
        if req.n != 1:
            raise APIError(400, "field 'n': only n=1 is supported", param="n")
        want_audio = "audio" in (req.modalities or [])
        if want_audio and req.stream:
            raise APIError(400, "streaming with audio output is not supported; drop 'stream' or 'modalities'",
                           param="stream")
        if req.top_logprobs and not req.logprobs:
            raise APIError(400, "field 'top_logprobs' needs 'logprobs': true", param="top_logprobs")
        if req.logprobs and req.stream:
            raise APIError(400, "streaming with logprobs is not supported; drop 'stream' or 'logprobs'",
                           param="logprobs")
        max_tokens = req.max_completion_tokens or req.max_tokens or GenParams().max_tokens
        if max_tokens > limits.max_tokens:
            raise APIError(400, f"field 'max_tokens': {max_tokens} is over the limit of {limits.max_tokens}",
                           param="max_tokens")
        d = GenParams()
        params = GenParams(max_tokens=max_tokens, temperature=d.temperature if req.temperature is None else req.temperature,
                           top_p=d.top_p if req.top_p is None else req.top_p,
                           seed=d.seed if req.seed is None else req.seed,
                           stop=[req.stop] if isinstance(req.stop, str) else req.stop,
                           logprobs=bool(req.logprobs), top_logprobs=(req.top_logprobs or 0) if req.logprobs else 0,
                           json_schema=json_schema_of(req.response_format))
        messages = await run_in_threadpool(lambda: [decode_audio_parts(m.model_dump(exclude_none=True), i, limits)
                                                    for i, m in enumerate(req.messages)])
        voice = (req.audio or {}).get("voice")
        voice = None if voice in OPENAI_VOICES else voice
        audiolm = slots.get("audiolm")
        if audiolm is not None and req.model == audiolm.id:
            reply = await run(audiolm, "respond", messages, params)
            return completion_body(req.model, reply.text, None, audio=reply.audio if want_audio else None,
                                   logprobs=params.logprobs)
        slot = slot_for("llm", req.model)
        messages = await transcribe_parts(messages)
        if req.stream:
            include_usage = bool((req.stream_options or {}).get("include_usage"))
            return await stream_response(slot, req.model, messages, params, include_usage)
        out = await run(slot, "chat", messages, params, uncached=params.logprobs)
        audio = None
        if want_audio:
            audio = await run(slot_for("tts", None, "modalities"), "synthesize", out.text, voice)
        return completion_body(req.model, out.text, out, audio=audio, logprobs=params.logprobs)

    async def transcribe_parts(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Cascade: replace audio parts by their transcript so a text LLM can read them."""
        out = []
        for m in messages:
            content = m.get("content")
            if isinstance(content, list) and any(p.get("type") == "audio" for p in content):
                asr = slot_for("asr", None, "messages")
                parts = []
                for p in content:
                    if p.get("type") == "audio":
                        t = await run(asr, "transcribe", Waveform(p["samples"], p["rate"]))
                        parts.append({"type": "text", "text": t.text})
                    else:
                        parts.append(p)
                m = {**m, "content": parts}
            out.append(m)
        return out

    async def stream_response(slot: Slot, model: str, messages, params: GenParams, include_usage: bool):
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue = asyncio.Queue()
        stop = threading.Event()

        def put(item) -> None:
            try:
                loop.call_soon_threadsafe(queue.put_nowait, item)
            except RuntimeError:  # the loop is gone (server shutting down): nobody is listening
                pass

        def produce() -> None:
            # One thread runs the whole generation under the backend's lock; pieces cross to the
            # event loop through the queue. `stop` is set when the client goes away.
            try:
                backend = slot.get()
                with slot.lock:
                    slot.calls += 1
                    gen = backend.stream(messages, params)
                    try:
                        for piece in gen:
                            if stop.is_set():
                                break
                            put(("text", piece))
                    finally:
                        getattr(gen, "close", lambda: None)()
                put(("end", None))
            except Exception as e:  # noqa: BLE001 - forwarded to the client as an error event
                put(("error", e))

        loop.run_in_executor(None, produce)
        first = await queue.get()
        if first[0] == "error":  # nothing sent yet: a proper HTTP error is still possible
            err = classify(first[1])
            return error_response(err.status, err.message, err.type, err.param)
        cid, created = f"chatcmpl-{uuid.uuid4().hex}", int(time.time())

        def chunk(delta: dict[str, Any], finish: str | None = None, **extra: Any) -> str:
            body = {"id": cid, "object": "chat.completion.chunk", "created": created, "model": model,
                    "choices": [{"index": 0, "delta": delta, "finish_reason": finish}], **extra}
            return f"data: {json_dumps(body)}\n\n"

        async def events():
            pieces, item = 0, first
            try:
                yield chunk({"role": "assistant", "content": ""})
                while True:
                    kind, value = item
                    if kind == "text":
                        pieces += 1
                        yield chunk({"content": value})
                    elif kind == "end":
                        yield chunk({}, "stop")
                        if include_usage:  # pieces ≈ tokens: embedded backends stream one token at a time
                            usage = {"prompt_tokens": 0, "completion_tokens": pieces, "total_tokens": pieces}
                            body = {"id": cid, "object": "chat.completion.chunk", "created": created,
                                    "model": model, "choices": [], "usage": usage}
                            yield f"data: {json_dumps(body)}\n\n"
                        break
                    else:
                        err = classify(value)
                        yield f"data: {json_dumps({'error': {'message': err.message, 'type': err.type}})}\n\n"
                        break
                    item = await queue.get()
                yield "data: [DONE]\n\n"
            finally:
                stop.set()

        return StreamingResponse(events(), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})

    return app
