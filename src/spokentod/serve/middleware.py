"""ASGI middleware in front of the routes: bearer token, request size limit, and test-only fault injection.

Pure ASGI rather than FastAPI dependencies so both checks run before a byte of the body is read: an
unauthenticated or oversized upload is refused without buffering it.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import threading
from dataclasses import dataclass
from typing import Any

from starlette.exceptions import HTTPException

Scope = dict[str, Any]


async def send_json(send, status: int, message: str, type_: str, headers: dict[str, str] | None = None,
                    code: str | None = None) -> None:
    body = json.dumps({"error": {"message": message, "type": type_, "param": None, "code": code}}).encode()
    hdrs = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    hdrs += [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]
    await send({"type": "http.response.start", "status": status, "headers": hdrs})
    await send({"type": "http.response.body", "body": body})


class _TooLarge(HTTPException):
    """An HTTPException so that FastAPI's body parsing re-raises it as is (it turns other errors into 400)."""

    def __init__(self, limit: int):
        super().__init__(413, f"request body is over the {limit} byte limit")


@dataclass
class Faults:
    """TEST ONLY: make the server misbehave so client retry/timeout handling can be tested for real.

    The first `fail_first` requests under /v1/ get `fail_status` (with Retry-After when `retry_after` is
    set); the next `malformed_first` get a 200 with truncated JSON; the next `bad_utf8_first` a 200 whose
    body is not UTF-8; the next `cut_first` an event stream that stops after one piece without [DONE];
    every request waits `delay` seconds first (a "hung" server when larger than the client's timeout).
    Spec string form: "fail=3,status=429,retry_after=0.1,delay=0,malformed=0,bad_utf8=0,cut=0".
    """

    fail_first: int = 0
    fail_status: int = 500
    retry_after: float | None = None
    delay: float = 0.0
    malformed_first: int = 0
    bad_utf8_first: int = 0
    cut_first: int = 0
    seen: int = 0  # /v1/ requests seen so far (tests read it to count the client's attempts)

    @classmethod
    def parse(cls, spec: str) -> Faults:
        names = {"fail": "fail_first", "status": "fail_status", "retry_after": "retry_after", "delay": "delay",
                 "malformed": "malformed_first", "bad_utf8": "bad_utf8_first", "cut": "cut_first"}
        kw: dict[str, Any] = {}
        for item in filter(None, (s.strip() for s in spec.split(","))):
            key, _, value = item.partition("=")
            if key not in names or not value:
                raise ValueError(f"bad fault spec item {item!r}; keys: {', '.join(names)}")
            field = names[key]
            kw[field] = float(value) if field in ("delay", "retry_after") else int(value)
        return cls(**kw)

    def active(self) -> bool:
        return bool(self.fail_first or self.malformed_first or self.bad_utf8_first or self.cut_first or self.delay)


class Guard:
    """Auth → size limit → faults, for every path under /v1/ (health and docs stay open)."""

    def __init__(self, app, token: str | None = None, max_body_bytes: int = 25 << 20, faults: Faults | None = None):
        self.app, self.token, self.max_body = app, token, int(max_body_bytes)
        self.faults = faults
        self._lock = threading.Lock()

    async def __call__(self, scope: Scope, receive, send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith("/v1/"):
            return await self.app(scope, receive, send)
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        if self.token is not None and not self._authorized(headers.get("authorization", "")):
            return await send_json(send, 401, "missing or invalid bearer token (Authorization: Bearer ...)",
                                   "authentication_error", {"WWW-Authenticate": "Bearer"}, "invalid_api_key")
        length = headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > self.max_body:
            return await send_json(send, 413, f"request body of {int(length)} bytes is over the "
                                   f"{self.max_body} byte limit", "invalid_request_error", code="request_too_large")
        if self.faults:
            with self._lock:
                n, self.faults.seen = self.faults.seen, self.faults.seen + 1
            if await self._fault(n, send):
                return
        seen, started = 0, False

        async def limited_receive():  # chunked uploads carry no Content-Length: count as they arrive
            nonlocal seen
            msg = await receive()
            if msg["type"] == "http.request":
                seen += len(msg.get("body", b""))
                if seen > self.max_body:
                    raise _TooLarge(self.max_body)
            return msg

        async def tracking_send(msg):
            nonlocal started
            started = started or msg["type"] == "http.response.start"
            await send(msg)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except _TooLarge:
            if not started:
                await send_json(send, 413, f"request body is over the {self.max_body} byte limit",
                                "invalid_request_error", code="request_too_large")

    def _authorized(self, header: str) -> bool:
        scheme, _, value = header.partition(" ")
        return scheme.lower() == "bearer" and hmac.compare_digest(value.strip().encode(), self.token.encode())

    async def _fault(self, n: int, send) -> bool:
        f = self.faults
        if f.delay:
            await asyncio.sleep(f.delay)
        if n < f.fail_first:
            hdrs = {"Retry-After": f"{f.retry_after:g}"} if f.retry_after is not None else None
            await send_json(send, f.fail_status, f"injected fault {n + 1}/{f.fail_first}", "server_error", hdrs)
            return True
        n -= f.fail_first
        body, ctype = None, b"application/json"
        if n < f.malformed_first:
            body = b'{"choices": [{"message": {"content": "trunc'
        elif (n := n - f.malformed_first) < f.bad_utf8_first:
            body = b'{"text": "caf\xe9 \xff\xfe"}'
        elif n - f.bad_utf8_first < f.cut_first:
            body, ctype = b'data: {"choices": [{"index": 0, "delta": {"content": "par"}}]}\n\n', b"text/event-stream"
        if body is None:
            return False
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", ctype), (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})
        return True
