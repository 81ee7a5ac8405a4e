"""LLM through an OpenAI-compatible /v1/chat/completions (vLLM, Ollama, llama.cpp server, OpenAI, `spokentod serve`).

YAML: ``llm: {name: openai, base_url: http://127.0.0.1:8000/v1, model: smollm2, api_key_env: OPENAI_API_KEY}``.

``GenParams(logprobs=True, top_logprobs=k)`` sends ``logprobs``/``top_logprobs`` and puts the server's
``choices[0].logprobs.content`` into `Completion.logprobs` (None when the server gives none). Such a chat()
is always one plain request, even with `measure_ttft`: log-probabilities are read from the whole response.
``GenParams(json_schema=...)`` is sent as ``response_format: {type: json_schema, ...}`` (http.response_format).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

from spokentod.backends.base import Backend, Completion, GenParams, Message, Timings, register
from spokentod.backends.http import OpenAICompatible, response_format, wire_messages


@register("llm", "openai")
class OpenAIChat(OpenAICompatible, Backend):
    def __init__(self, model: str, base_url: str = "http://127.0.0.1:8000/v1", extra_body: dict | None = None,
                 measure_ttft: bool = False, **kw: Any):
        """`extra_body` is merged into every request (server-specific knobs such as vLLM's `top_k`).
        `measure_ttft=True` makes chat() stream under the hood so its Completion has a time to first
        token (a plain request cannot tell when the first token was ready)."""
        super().__init__(model, base_url, **kw)
        self.extra_body, self.measure_ttft = dict(extra_body or {}), measure_ttft

    def identity(self) -> dict[str, Any]:
        return {**super().identity(), "extra_body": self.extra_body}

    def _payload(self, messages: list[Message], params: GenParams | None, stream: bool) -> dict[str, Any]:
        p = params or GenParams()
        body: dict[str, Any] = {"model": self.model, "messages": wire_messages(messages, self.http.error),
                                "max_tokens": p.max_tokens, "temperature": p.temperature, "top_p": p.top_p,
                                **self.extra_body}
        if p.seed is not None:
            body["seed"] = p.seed
        if p.stop:
            body["stop"] = list(p.stop)
        if p.json_schema is not None and "response_format" not in body:  # extra_body may set its own
            body["response_format"] = response_format(p.json_schema)
        if p.logprobs and not stream:  # a stream gives text only: no use asking
            body["logprobs"] = True
            if p.top_logprobs:
                body["top_logprobs"] = int(p.top_logprobs)
        if stream:  # ask for a final usage chunk so token counts are real, not estimated
            body.update(stream=True, stream_options={"include_usage": True})
        return body

    def chat(self, messages: list[Message], params: GenParams | None = None) -> Completion:
        if self.measure_ttft and not (params and params.logprobs):
            return self.stream_chat(messages, params)
        data, resp = self.http.post_json("/chat/completions", self._payload(messages, params, stream=False))
        try:
            choice = data["choices"][0]
            text = choice["message"].get("content") or ""
        except (KeyError, IndexError, TypeError, AttributeError):
            raise self.http.error(f"response has no choices[0].message: {str(data)[:120]}",
                                  cause="bad response") from None
        usage = data.get("usage") or {}
        return Completion(text=text, ttft=None, tokens=int(usage.get("completion_tokens") or 0),
                          finish_reason=choice.get("finish_reason"), logprobs=_logprobs(choice),
                          timings=Timings(wall=resp.wall, extra={"attempts": resp.attempts,
                                                                 "prompt_tokens": usage.get("prompt_tokens") or 0}))

    def stream(self, messages: list[Message], params: GenParams | None = None) -> Iterator[str]:
        """Yield text pieces as the server sends them."""
        for kind, value in self._events(messages, params):
            if kind == "text":
                yield value

    def stream_chat(self, messages: list[Message], params: GenParams | None = None,
                    on_text: Callable[[str], None] | None = None) -> Completion:
        """Stream, hand each piece to `on_text`, and return the Completion with time to first token.

        `tokens` comes from the server's usage chunk; servers that send none get the number of text
        pieces instead (one token per chunk for vLLM, llama.cpp and Ollama), marked `tokens_estimated`.
        """
        t0 = time.perf_counter()
        pieces: list[str] = []
        ttft, usage, finish, info = None, None, None, {}
        for kind, value in self._events(messages, params, info):
            if kind == "text":
                if ttft is None:
                    ttft = time.perf_counter() - t0
                pieces.append(value)
                if on_text:
                    on_text(value)
            elif kind == "usage":
                usage = value
            elif kind == "finish":
                finish = value
        extra: dict[str, float] = {"attempts": info.get("attempts", 1)}
        if usage and usage.get("completion_tokens") is not None:
            tokens = int(usage["completion_tokens"])
        else:
            tokens, extra["tokens_estimated"] = len(pieces), 1.0
        return Completion(text="".join(pieces), ttft=ttft, tokens=tokens, finish_reason=finish,
                          timings=Timings(wall=time.perf_counter() - t0, first=ttft, extra=extra))

    def _events(self, messages: list[Message], params: GenParams | None, info: dict | None = None
                ) -> Iterator[tuple[str, Any]]:
        payload = self._payload(messages, params, stream=True)
        for chunk in self.http.stream_sse("/chat/completions", payload, info=info):
            if chunk.get("usage"):
                yield "usage", chunk["usage"]
            for choice in chunk.get("choices") or []:
                delta = choice.get("delta") or {}
                if delta.get("content"):
                    yield "text", delta["content"]
                if choice.get("finish_reason"):
                    yield "finish", choice["finish_reason"]


def _logprobs(choice: dict[str, Any]) -> list[dict[str, Any]] | None:
    """`choices[0].logprobs.content` when the server sent a list of token entries; else None."""
    lp = choice.get("logprobs")
    content = lp.get("content") if isinstance(lp, dict) else None
    if not isinstance(content, list) or not all(isinstance(c, dict) and "token" in c for c in content):
        return None
    return content
