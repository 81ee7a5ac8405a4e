"""What crosses the wire: request bodies, OpenAI-shaped responses and errors, audio in and out.

Kept apart from the routes (app.py) so each file reads on its own.
"""

from __future__ import annotations

import base64
import io
import json
import time
import uuid
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import soundfile as sf
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field

from spokentod.audio import as_waveform, wav_bytes
from spokentod.errors import AudioError, BackendError, SpokenTODError


@dataclass
class Limits:
    max_body_bytes: int = 25 << 20  # OpenAI's upload limit
    max_audio_seconds: float = 600.0
    max_input_chars: int = 4096  # speech input, as OpenAI
    max_tokens: int = 4096


class APIError(Exception):
    def __init__(self, status: int, message: str, type_: str = "invalid_request_error", param: str | None = None):
        super().__init__(message)
        self.status, self.message, self.type, self.param = status, message, type_, param


def error_response(status: int, message: str, type_: str, param: str | None = None) -> JSONResponse:
    return JSONResponse({"error": {"message": message, "type": type_, "param": param, "code": None}}, status)


def classify(e: BaseException) -> APIError:
    """Map an exception from a backend call to an HTTP error: bad input 400, upstream 502, else 500."""
    if isinstance(e, APIError):
        return e
    if isinstance(e, AudioError):
        return APIError(400, f"unsupported audio: {e}")
    if isinstance(e, BackendError):
        return APIError(502, str(e), "upstream_error")
    if isinstance(e, SpokenTODError) and isinstance(e, ValueError):  # TTSError, ASRError: the input's fault
        return APIError(400, str(e))
    return APIError(500, f"{type(e).__name__}: {e}", "server_error")


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="allow")
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[dict[str, Any]] | None = None


class ChatRequest(BaseModel):
    """Absent sampling fields take spokentod's GenParams defaults (greedy, temperature 0, max_tokens 128),
    not OpenAI's (temperature 1): a benchmark server should be deterministic unless asked otherwise."""

    model_config = ConfigDict(extra="allow")  # OpenAI clients send fields we do not use (user, ...)
    model: str
    messages: list[ChatMessage] = Field(min_length=1)
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, gt=0, le=1)
    seed: int | None = None
    stop: str | list[str] | None = None
    stream: bool = False
    stream_options: dict[str, Any] | None = None
    n: int = 1
    modalities: list[str] | None = None
    audio: dict[str, Any] | None = None
    logprobs: bool | None = None  # token log-probabilities, where the backend can give them (else null)
    top_logprobs: int | None = Field(None, ge=0, le=20)  # alternatives per token; needs logprobs=true
    response_format: dict[str, Any] | None = None  # text | json_object | json_schema: see json_schema_of


def json_schema_of(response_format: dict[str, Any] | None) -> dict[str, Any] | None:
    """OpenAI's `response_format` → the JSON Schema the backend constrains its output to (GenParams.json_schema):
    `{"type": "json_schema", "json_schema": {"name": ..., "schema": {...}}}` → that schema; `{"type":
    "json_object"}` → any object (or its `schema`, as llama.cpp's server accepts); `{"type": "text"}` → None."""
    if response_format is None:
        return None
    kind = response_format.get("type")
    if kind == "text":
        return None
    if kind == "json_object":
        schema = response_format.get("schema", {"type": "object"})
        where = "response_format.schema"
    elif kind == "json_schema":
        spec = response_format.get("json_schema")
        if not isinstance(spec, dict):
            raise APIError(400, "field 'response_format.json_schema' must be an object with a 'schema'",
                           param="response_format.json_schema")
        schema, where = spec.get("schema"), "response_format.json_schema.schema"
    else:
        raise APIError(400, f"field 'response_format.type': {kind!r} is not supported (text, json_object, "
                       "json_schema)", param="response_format.type")
    if not isinstance(schema, dict):
        raise APIError(400, f"field '{where}' must be a JSON Schema object", param=where)
    return schema


class SpeechRequest(BaseModel):
    model_config = ConfigDict(extra="allow")
    model: str
    input: str
    voice: str | None = None
    response_format: str = "wav"  # OpenAI's default is mp3; this server has no mp3 encoder
    speed: float | None = None


def json_dumps(obj: Any) -> str:
    return json.dumps(obj, ensure_ascii=False)


def decode_audio_parts(message: dict[str, Any], index: int, limits: Limits) -> dict[str, Any]:
    """`input_audio` parts (base64) → in-process audio parts, checked here so bad audio is a 400."""
    content = message.get("content")
    if not isinstance(content, list):
        return message
    parts = []
    for j, p in enumerate(content):
        where = f"messages[{index}].content[{j}]"
        kind = p.get("type")
        if kind == "input_audio":
            raw = (p.get("input_audio") or {}).get("data")
            if not isinstance(raw, str):
                raise APIError(400, f"field '{where}.input_audio.data' is missing", param=where)
            try:
                w = as_waveform(base64.b64decode(raw, validate=True), target_rate=16000,
                                max_seconds=limits.max_audio_seconds)
            except (ValueError, AudioError) as e:  # binascii.Error is a ValueError
                raise APIError(400, f"unsupported audio in field '{where}': {e}", param=where) from None
            parts.append({"type": "audio", "samples": w.samples, "rate": w.rate})
        elif kind == "text":
            if not isinstance(p.get("text"), str):
                raise APIError(400, f"field '{where}.text' must be a string", param=where)
            parts.append({"type": "text", "text": p["text"]})
        else:
            raise APIError(400, f"field '{where}.type': unsupported content part {kind!r} (text, input_audio)",
                           param=where)
    return {**message, "content": parts}


def audio_response(samples, rate: int, fmt: str) -> Response:
    if fmt == "wav":
        return Response(wav_bytes(samples, rate), media_type="audio/wav")
    if fmt == "flac":
        buf = io.BytesIO()
        sf.write(buf, np.clip(samples, -1, 1), rate, format="FLAC")
        return Response(buf.getvalue(), media_type="audio/flac")
    pcm = (np.clip(samples, -1, 1) * 32767).astype("<i2").tobytes()  # raw 16-bit little-endian mono
    return Response(pcm, media_type="audio/pcm", headers={"X-Sample-Rate": str(rate)})


def completion_body(model: str, text: str, out: Any, audio: Any = None, logprobs: bool = False) -> dict[str, Any]:
    """`logprobs`: the request asked for them; the choice's `logprobs` is {"content": [...]} when the backend
    gave them (`out.logprobs`), else null, as OpenAI's for a request that did not ask."""
    content = getattr(out, "logprobs", None) if logprobs else None
    tokens = getattr(out, "tokens", 0) or 0
    extra = out.timings.extra if getattr(out, "timings", None) else {}
    prompt, cached = int(extra.get("prompt_tokens") or 0), int(extra.get("cached_prompt_tokens") or 0)
    message: dict[str, Any] = {"role": "assistant", "content": text}
    if audio is not None:
        message["audio"] = {"id": f"audio_{uuid.uuid4().hex}", "expires_at": int(time.time()) + 3600,
                            "data": base64.b64encode(wav_bytes(audio.samples, audio.rate)).decode("ascii"),
                            "transcript": text}
    return {"id": f"chatcmpl-{uuid.uuid4().hex}", "object": "chat.completion", "created": int(time.time()),
            "model": model, "choices": [{"index": 0, "message": message,
                                         "logprobs": {"content": content} if content is not None else None,
                                         "finish_reason": getattr(out, "finish_reason", None) or "stop"}],
            "usage": {"prompt_tokens": prompt, "completion_tokens": tokens, "total_tokens": prompt + tokens,
                      "prompt_tokens_details": {"cached_tokens": cached}}}
