"""HTTP plumbing shared by the OpenAI-compatible client backends.

One `HttpClient` per backend instance: per-call timeout, retries (backends/retry.py), and every failure
turned into a `BackendError` that names its cause: timeout, connection, HTTP status with the server's
message, malformed JSON, a body that is not UTF-8. The API key is read from the environment at call time
and never kept on the object, so it cannot leak through repr(), identity() or a results file.
"""

from __future__ import annotations

import base64
import email.utils
import json
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx

from spokentod.audio import as_waveform, wav_bytes
from spokentod.backends.retry import RetryPolicy, retry_call
from spokentod.errors import BackendError


@dataclass
class HttpResponse:
    body: bytes
    status: int
    attempts: int = 1
    first_byte: float = 0.0  # seconds from sending the request to the first body byte
    wall: float = 0.0
    headers: dict[str, str] = field(default_factory=dict)


def parse_retry_after(value: str | None) -> float | None:
    """Retry-After is either delta-seconds or an HTTP date."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        return max(0.0, when.timestamp() - time.time())


def _snippet(body: bytes, n: int = 120) -> str:
    return body[:n].decode("utf-8", errors="replace").replace("\n", " ")


class HttpClient:
    def __init__(self, kind: str, backend: str, base_url: str, api_key_env: str | None = None,
                 headers: dict[str, str] | None = None, timeout: float = 60.0,
                 retry: RetryPolicy | None = None):
        self.kind, self.backend = kind, backend
        self.base_url = base_url.rstrip("/")
        self.api_key_env = api_key_env
        self.timeout = float(timeout)
        self.retry = retry or RetryPolicy()
        self._client = httpx.Client(base_url=self.base_url, headers=dict(headers or {}), timeout=self.timeout)

    def __repr__(self) -> str:  # no headers: they may carry credentials
        return f"HttpClient({self.base_url!r}, timeout={self.timeout})"

    def close(self) -> None:
        self._client.close()

    # ------------------------------------------------------------ errors

    def error(self, reason: str, status: int | None = None, retryable: bool = False,
              retry_after: float | None = None, cause: str | None = None) -> BackendError:
        return BackendError(self.kind, self.backend, reason, status=status, retryable=retryable,
                            retry_after=retry_after, cause=cause)

    def _auth(self) -> dict[str, str]:
        if not self.api_key_env:
            return {}
        key = os.environ.get(self.api_key_env)
        if not key:
            raise self.error(f"environment variable {self.api_key_env} (api_key_env) is not set")
        return {"Authorization": f"Bearer {key}"}

    def _transport_error(self, e: Exception, timeout: float) -> BackendError:
        if isinstance(e, httpx.TimeoutException):
            return self.error(f"timeout after {timeout:g} s ({type(e).__name__})", retryable=True, cause="timeout")
        if isinstance(e, (httpx.InvalidURL, httpx.UnsupportedProtocol)):
            return self.error(f"bad URL {self.base_url!r}: {e}")
        if isinstance(e, httpx.ConnectError):
            return self.error(f"cannot connect to {self.base_url}: {e}", retryable=True, cause="connection")
        return self.error(f"connection error talking to {self.base_url}: {type(e).__name__}: {e}",
                          retryable=True, cause="connection")

    def _status_error(self, status: int, body: bytes, headers: httpx.Headers) -> BackendError:
        message = _snippet(body, 300)
        try:
            payload = json.loads(body.decode("utf-8"))
            err = payload.get("error", payload.get("detail")) if isinstance(payload, dict) else None
            if isinstance(err, dict):
                err = err.get("message") or err
            if err:
                message = str(err)
        except (UnicodeDecodeError, ValueError):
            pass
        retryable = status in (408, 429) or status >= 500
        return self.error(f"server said: {message}" if message else "empty error body", status=status,
                          retryable=retryable, retry_after=parse_retry_after(headers.get("retry-after")))

    def decode_json(self, body: bytes, what: str = "response") -> dict[str, Any]:
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError as e:
            raise self.error(f"{what} body is not valid UTF-8 (byte 0x{body[e.start]:02x} at offset {e.start})",
                             cause="bad response") from None
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise self.error(f"malformed JSON in {what} ({e.msg} at char {e.pos}): {text[:80]!r}",
                             cause="bad response") from None
        if not isinstance(data, dict):
            raise self.error(f"unexpected JSON in {what}: expected an object, got {type(data).__name__}",
                             cause="bad response")
        return data

    # ------------------------------------------------------------ calls

    def _send(self, method: str, path: str, timeout: float | None, **kw: Any) -> httpx.Response:
        """Send and return a streaming response with a 2xx status; raise BackendError otherwise."""
        timeout = self.timeout if timeout is None else float(timeout)
        try:
            req = self._client.build_request(method, path, headers=self._auth(), timeout=timeout, **kw)
            resp = self._client.send(req, stream=True)
        except httpx.HTTPError as e:
            raise self._transport_error(e, timeout) from None
        if resp.status_code >= 400:
            try:
                body = resp.read()
            except httpx.HTTPError:
                body = b""
            finally:
                resp.close()
            raise self._status_error(resp.status_code, body, resp.headers)
        return resp

    def _read(self, resp: httpx.Response, t0: float, timeout: float) -> tuple[bytes, float]:
        """Read the whole body within `timeout` seconds of the start (httpx's read timeout only bounds
        the gap between chunks, so a server trickling bytes would otherwise hold us forever)."""
        chunks, first = [], 0.0
        try:
            for chunk in resp.iter_bytes():
                if not chunks:
                    first = time.perf_counter() - t0
                chunks.append(chunk)
                if time.perf_counter() - t0 > timeout:
                    raise self.error(f"timeout after {timeout:g} s (body still arriving)", retryable=True,
                                     cause="timeout")
        except httpx.HTTPError as e:
            raise self._transport_error(e, timeout) from None
        finally:
            resp.close()
        return b"".join(chunks), first

    def request(self, method: str, path: str, timeout: float | None = None, **kw: Any) -> HttpResponse:
        """A complete request with retries; `kw` goes to httpx (json=, files=, data=)."""
        limit = self.timeout if timeout is None else float(timeout)
        t_start = time.perf_counter()

        def once() -> HttpResponse:
            t0 = time.perf_counter()
            resp = self._send(method, path, limit, **kw)
            body, first = self._read(resp, t0, limit)
            return HttpResponse(body, resp.status_code, first_byte=first, headers=dict(resp.headers))

        out, attempts = retry_call(once, self.retry)
        out.attempts, out.wall = attempts, time.perf_counter() - t_start
        return out

    def post_json(self, path: str, payload: dict[str, Any], timeout: float | None = None) -> tuple[dict, HttpResponse]:
        resp = self.request("POST", path, timeout=timeout, json=payload)
        return self.decode_json(resp.body), resp

    def stream_sse(self, path: str, payload: dict[str, Any], timeout: float | None = None,
                   info: dict[str, Any] | None = None) -> Iterator[dict[str, Any]]:
        """POST and yield each `data:` event of a Server-Sent Events stream as a dict until [DONE].

        Retries cover getting the stream started (connect, status); once events flow a failure is
        raised as is, since replaying a half-consumed stream would duplicate text. `info` (a dict),
        when given, receives the number of attempts.
        """
        limit = self.timeout if timeout is None else float(timeout)
        resp, attempts = retry_call(lambda: self._send("POST", path, limit, json=payload), self.retry)
        if info is not None:
            info["attempts"] = attempts
        try:
            ctype = resp.headers.get("content-type", "")
            if "text/event-stream" not in ctype:  # e.g. a proxy's JSON error page with a 200
                body, _ = self._read(resp, time.perf_counter(), limit)
                got = self.decode_json(body)
                raise self.error(f"expected an event stream, got {ctype or 'no content-type'}: {str(got)[:120]}")
            data: list[bytes] = []
            done = False
            for line in self._lines(resp, limit):
                if line.startswith(b"data:"):
                    data.append(line[5:].lstrip(b" "))
                elif not line and data:  # a blank line ends one event
                    body, data = b"\n".join(data), []
                    if body.strip() == b"[DONE]":
                        done = True
                        break
                    event = self.decode_json(body, "stream event")
                    if "error" in event:
                        err = event["error"]
                        msg = err.get("message", err) if isinstance(err, dict) else err
                        raise self.error(f"server error mid-stream: {msg}")
                    yield event
            if not done:  # every OpenAI-compatible server ends with [DONE]; without it text may be cut
                raise self.error("stream ended before [DONE] (connection closed early?)", cause="connection")
        finally:
            resp.close()

    def _lines(self, resp: httpx.Response, timeout: float) -> Iterator[bytes]:
        buf = b""
        try:
            for chunk in resp.iter_bytes():
                buf += chunk
                *lines, buf = buf.split(b"\n")
                for line in lines:
                    yield line.rstrip(b"\r")
        except httpx.HTTPError as e:
            raise self._transport_error(e, timeout) from None
        if buf:
            yield buf.rstrip(b"\r")
        yield b""  # dispatch a last event that had no blank line after it


# ---------------------------------------------------------------- OpenAI-compatible base


class OpenAICompatible:
    """Shared constructor and identity of the OpenAI-compatible client backends (mixed into Backend)."""

    kind = ""
    name = ""
    remote = True  # calls a server: many may be in flight at once (see backends/limits.py)

    def __init__(self, model: str, base_url: str = "http://127.0.0.1:8000/v1", api_key_env: str | None = None,
                 headers: dict[str, str] | None = None, timeout: float = 60.0, max_attempts: int = 3,
                 backoff: float = 0.5):
        self.model, self.base_url = model, base_url.rstrip("/")
        self.http = HttpClient(self.kind, self.name, self.base_url, api_key_env=api_key_env, headers=headers,
                               timeout=timeout, retry=RetryPolicy(max_attempts=max_attempts, base=backoff))

    def identity(self) -> dict[str, Any]:
        # What changes outputs: the server and the model; never the key, its variable or header values.
        return {"kind": self.kind, "name": self.name, "class": f"{type(self).__module__}.{type(self).__qualname__}",
                "base_url": self.base_url, "model": self.model}

    def __repr__(self) -> str:
        return f"{type(self).__name__}(model={self.model!r}, base_url={self.base_url!r})"

    def close(self) -> None:
        self.http.close()


def check_text(text: Any, where: str, err) -> str:
    """Text bound for a JSON body must be valid Unicode; name the field when it is not."""
    if isinstance(text, (bytes, bytearray)):
        try:
            return bytes(text).decode("utf-8")
        except UnicodeDecodeError as e:
            raise err(f"{where} is not valid UTF-8 (byte 0x{text[e.start]:02x} at offset {e.start})") from None
    if not isinstance(text, str):
        raise err(f"{where} must be text, got {type(text).__name__}")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as e:
        raise err(f"{where} is not valid Unicode text ({e.reason} at position {e.start})") from None
    return text


WIRE_RATE = 16000  # audio sent to servers: 16 kHz mono WAV, what every ASR and audio LM accepts


def audio_b64(audio: Any, rate: int | None = None) -> str:
    """Any audio the edge accepts (path, bytes, array + rate, Waveform, AudioOut) → base64 16 kHz mono WAV."""
    w = as_waveform(audio, rate=rate, target_rate=WIRE_RATE)
    return base64.b64encode(wav_bytes(w.samples, w.rate)).decode("ascii")


def response_format(schema: dict[str, Any]) -> dict[str, Any]:
    """GenParams.json_schema as OpenAI's `response_format` (vLLM, llama.cpp server, Ollama and `spokentod serve`
    constrain decoding to it). Not `strict`: OpenAI's strict mode refuses keywords such as maxLength, and
    the servers above enforce the schema without it."""
    name = "".join(c if c.isalnum() or c in "_-" else "_" for c in str(schema.get("title") or "response"))[:64]
    return {"type": "json_schema", "json_schema": {"name": name or "response", "schema": schema}}


def wire_messages(messages: list[dict[str, Any]], err) -> list[dict[str, Any]]:
    """In-process messages → JSON-ready OpenAI messages: text checked, audio parts as base64 WAV."""
    out = []
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or "role" not in m:
            raise err(f"messages[{i}] must be a dict with 'role' and 'content'")
        content = m.get("content")
        if isinstance(content, list):
            parts = []
            for j, p in enumerate(content):
                where = f"messages[{i}].content[{j}]"
                kind = p.get("type") if isinstance(p, dict) else None
                if kind == "text":
                    parts.append({"type": "text", "text": check_text(p.get("text"), f"{where}.text", err)})
                elif kind == "audio":  # in-process: samples + rate, or a path / bytes / AudioOut under "audio"
                    data = audio_b64(p["samples"], p.get("rate")) if "samples" in p else audio_b64(p["audio"])
                    parts.append({"type": "input_audio", "input_audio": {"data": data, "format": "wav"}})
                elif isinstance(p, dict):
                    parts.append(p)
                else:
                    raise err(f"{where} must be a dict part, got {type(p).__name__}")
            content = parts
        elif content is not None:
            content = check_text(content, f"messages[{i}].content", err)
        out.append({**m, "content": content})
    return out
