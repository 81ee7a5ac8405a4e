"""Chat generation shared by every local Hugging Face causal LM backend (hf, smollm2, gemma3-270m).

One code path serves both `chat` and `stream`: `chat` joins the streamed pieces, so for greedy decoding
the streamed text and the chat text are identical by construction. `chat` with `GenParams(logprobs=True)`
also returns token log-probabilities (see `token_logprobs`). `GenParams(json_schema=...)` constrains the
output to the schema (see _constrain.py). torch/transformers are imported
lazily: the registry imports every backend module, and listing backends must stay cheap.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from spokentod.backends.base import Completion, GenParams, Message, Timings
from spokentod.backends.llm._prefix_cache import PrefixCache
from spokentod.errors import SpokenTODError

# Used only when a model has no chat template and the caller opted in with template_fallback=True.
FALLBACK_TEMPLATE = (
    "{% for m in messages %}{{ m['role'] | capitalize }}: {{ m['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}Assistant:{% endif %}"
)


class GenerationError(SpokenTODError, RuntimeError):
    """Generation failed inside the worker thread; the original exception is chained."""


def text_messages(messages: list[Message]) -> list[dict[str, str]]:
    """OpenAI-shaped messages → plain {role, content: str}. A text LLM cannot hear: audio parts are an error
    rather than silently dropped, so a cascade that forgot to transcribe fails loudly."""
    out = []
    for i, m in enumerate(messages):
        content = m.get("content")
        if content is None:
            content = ""
        if not isinstance(content, str):
            texts = []
            for part in content:
                kind = part.get("type")
                if kind == "text":
                    texts.append(part.get("text", ""))
                else:
                    raise ValueError(
                        f"message {i}: a text LLM cannot take a {kind!r} part; transcribe audio first"
                    )
            content = "\n".join(texts)
        out.append({"role": m.get("role", "user"), "content": content})
    return out


def _stop_cut(text: str, stops: list[str]) -> tuple[str, bool]:
    """Text before the first stop string, and whether one was found."""
    hits = [text.find(s) for s in stops if s and s in text]
    return (text[: min(hits)], True) if hits else (text, False)


def _held_back(text: str, stops: list[str]) -> int:
    """How many trailing characters could be the start of a stop string (kept back while streaming)."""
    keep = 0
    for s in stops:
        for k in range(min(len(s) - 1, len(text)), keep, -1):
            if text.endswith(s[:k]):
                keep = k
                break
    return keep


def until_stop(pieces: Iterable[str], stops: list[str], on_stop: Callable[[], None] | None = None,
               flush: Callable[[], bool] = lambda: True) -> Iterator[str]:
    """Stream text pieces up to the first stop string: trailing characters that could start one are held
    back until they cannot; `on_stop()` runs when one is found. When the pieces end without a stop, the held
    tail is yielded if `flush()` says so (a generation that failed keeps it back)."""
    stops = [s for s in stops if s]
    text, sent = "", 0
    for piece in pieces:
        text += piece
        if stops:
            cut, found = _stop_cut(text, stops)
            if found:
                if on_stop is not None:
                    on_stop()
                if len(cut) > sent:
                    yield cut[sent:]
                return
            ready = len(text) - _held_back(text, stops)
        else:
            ready = len(text)
        if ready > sent:
            yield text[sent:ready]
            sent = ready
    if flush() and len(text) > sent:
        yield text[sent:]


@dataclass
class _Run:
    """Filled in while a generation runs; read by chat() once the stream is exhausted."""

    start: float = field(default_factory=time.perf_counter)
    first: float | None = None
    prompt_tokens: int = 0
    reused_tokens: int = 0  # prompt tokens whose keys/values came from the prefix cache
    new_tokens: int = 0
    stopped: bool = False  # a stop string ended the text
    error: BaseException | None = None
    want_logprobs: bool = False  # chat() asked for log-probabilities (stream() gives text only)
    new_ids: list[int] = field(default_factory=list)  # kept only when log-probabilities were asked for
    logits: tuple = ()  # raw logits per generated token, ditto


def _top_k(k: int) -> int:
    return max(0, min(int(k or 0), 20))  # OpenAI's range


def token_logprobs(tokenizer: Any, ids: list[int], logits: Any, top_k: int, text_len: int | None = None
                   ) -> list[dict[str, Any]]:
    """OpenAI-shaped `logprobs.content` for generated `ids` from the model's raw logits (one row per id).

    Log-probabilities are log_softmax of the *raw* logits: the model's own distribution, before temperature,
    top-p or repetition penalties (as vLLM's default and OpenAI's, which do not change with temperature).
    Token strings are decoded in context (a few earlier tokens), so they join to the generated text even for
    SentencePiece tokenizers whose pieces carry a leading space; a token that ends inside a multi-byte
    character gets "" and the next one carries the whole character (`bytes` join to the text's UTF-8).
    Special tokens (end of turn) add no text and are left out. `text_len`: the text was cut there (a stop
    string); tokens that start after it are left out.
    """
    import torch

    special = set(getattr(tokenizer, "all_special_ids", None) or [])
    special |= {i for i, t in (getattr(tokenizer, "added_tokens_decoder", None) or {}).items()
                if getattr(t, "special", False)}  # e.g. SmolLM2's <file_sep>: skipped in the text too
    k = _top_k(top_k)

    def dec(xs: list[int]) -> str:
        return tokenizer.decode(xs, skip_special_tokens=True)  # as TextIteratorStreamer decodes the text

    def in_context(context: list[int], before: str, tid: int) -> str:
        got = dec(context + [tid])
        return got[len(before):] if got.startswith(before) else dec([tid])

    out: list[dict[str, Any]] = []
    done, pos = 0, 0  # tokens whose text is in `out`; characters of text so far
    for i, tid in enumerate(ids):
        if text_len is not None and pos >= text_len:
            break
        if tid in special:
            continue
        lo = max(0, done - 4)
        before = dec(ids[lo:done])
        cur = dec(ids[lo : i + 1])
        if cur.endswith("\ufffd") and i + 1 < len(ids):  # inside a multi-byte character: the next token has it
            token = ""
        else:
            token = cur[len(before):] if cur.startswith(before) else dec([tid])
            done = i + 1
        row = torch.log_softmax(logits[i].float().reshape(-1), dim=-1)
        top: list[dict[str, Any]] = []
        if k:
            vals, idx = torch.topk(row, k)
            ctx_text = dec(ids[lo:i])
            for v, a in zip(vals.tolist(), idx.tolist()):
                if a == tid:
                    t = token
                elif a in special:
                    t = str(tokenizer.convert_ids_to_tokens(a))
                else:
                    t = in_context(ids[lo:i], ctx_text, a)
                top.append({"token": t, "logprob": float(v), "bytes": list(t.encode("utf-8"))})
        out.append({"token": token, "logprob": float(row[tid]), "bytes": list(token.encode("utf-8")),
                    "top_logprobs": top})
        pos += len(token)
    return out


def _renice_this_thread(increment: int) -> None:
    """Lower the calling thread's priority (Linux: nice applies per thread; the thread ends with the
    generation, so nothing else is affected). Quietly does nothing where that is not supported."""
    try:
        tid = threading.get_native_id()
        os.setpriority(os.PRIO_PROCESS, tid, min(19, os.getpriority(os.PRIO_PROCESS, tid) + increment))
    except (AttributeError, OSError):
        pass


class ChatGenerator:
    """Wraps a loaded (model, tokenizer) pair with chat-template prompting and threaded streaming."""

    def __init__(
        self, model: Any, tokenizer: Any, chat_template: str | None = None, template_fallback: bool = False,
        decode_nice: int = 0, prefix_cache: int = 8,
    ):
        """`prefix_cache`: how many recent prompts' keys/values to keep for reuse by a later prompt that
        starts with the same tokens (0: off; see _prefix_cache).

        `decode_nice` > 0 lowers the generation thread's CPU priority (Linux per-thread nice) from the
        first generated token on: the prompt is read at full priority, and a TTS speaking the first
        sentence on the same cores gets the CPU first. Only the generating thread is reniced, so it is
        meant for threads=1 (torch's extra intra-op threads keep their priority)."""
        self.model, self.tokenizer = model, tokenizer
        self.decode_nice = max(0, int(decode_nice or 0))
        self.chat_template = chat_template
        if not chat_template and not getattr(tokenizer, "chat_template", None):
            if not template_fallback:
                raise SpokenTODError(
                    "this model's tokenizer has no chat template; pass chat_template=... (Jinja) "
                    "or template_fallback=True to use a plain 'Role: text' prompt"
                )
            self.chat_template = FALLBACK_TEMPLATE
        self._lock = threading.Lock()
        self.prefixes = PrefixCache(prefix_cache, getattr(model, "config", None))
        # Generation-time default of Llama-family tokenizers is no pad token; reuse EOS so batching warnings
        # and the attention-mask inference do not fire.
        if tokenizer.pad_token_id is None and tokenizer.eos_token_id is not None:
            tokenizer.pad_token = tokenizer.eos_token

    def identity(self) -> dict[str, Any]:
        """What this generator adds to its backend's identity: a custom or fallback template changes every
        prompt; reused keys/values round differently, so a greedy near-tie may flip."""
        return ({"chat_template": self.chat_template} if self.chat_template else {}) | (
            {"prefix_cache": True} if self.prefixes.size else {})

    def eos_ids(self) -> list[int]:
        """The tokens that end a turn: the generation config's (Gemma adds <end_of_turn>) and the tokenizer's."""
        ids = getattr(getattr(self.model, "generation_config", None), "eos_token_id", None)
        ids = [ids] if isinstance(ids, int) else list(ids or [])
        if self.tokenizer.eos_token_id is not None and self.tokenizer.eos_token_id not in ids:
            ids.append(self.tokenizer.eos_token_id)
        return ids

    def prompt(self, messages: list[Message]) -> dict[str, Any]:
        enc = self.tokenizer.apply_chat_template(
            text_messages(messages),
            chat_template=self.chat_template,
            add_generation_prompt=True,
            return_tensors="pt",
            return_dict=True,
        )
        return {k: v.to(self.model.device) for k, v in enc.items() if k in ("input_ids", "attention_mask")}

    def _gen_kwargs(self, params: GenParams) -> dict[str, Any]:
        kw: dict[str, Any] = {
            "max_new_tokens": params.max_tokens,
            "pad_token_id": self.tokenizer.pad_token_id,
        }
        if params.temperature and params.temperature > 0:
            kw.update(do_sample=True, temperature=params.temperature, top_p=params.top_p)
        else:  # greedy: reproducible, and the default for evaluation runs
            kw.update(do_sample=False, temperature=None, top_p=None, top_k=None)
        if params.stop:  # stop generating early; the text is also cut at the stop string below
            kw.update(stop_strings=list(params.stop), tokenizer=self.tokenizer)
        return kw

    def _pieces(self, messages: list[Message], params: GenParams, run: _Run) -> Iterator[str]:
        import torch
        from transformers import StoppingCriteria, StoppingCriteriaList, TextIteratorStreamer

        inputs = self.prompt(messages)
        run.prompt_tokens = int(inputs["input_ids"].shape[1])
        streamer = TextIteratorStreamer(self.tokenizer, skip_prompt=True, skip_special_tokens=True)
        cancel = threading.Event()

        nice = self.decode_nice

        class _Cancel(StoppingCriteria):  # lets an abandoned stream stop the worker thread early
            def __call__(self, input_ids, scores, **kw):
                if run.first is None:
                    run.first = time.perf_counter() - run.start  # first new token exists once scores do
                    if nice:
                        _renice_this_thread(nice)
                return torch.full(
                    (input_ids.shape[0],), cancel.is_set(), dtype=torch.bool, device=input_ids.device
                )

        kw = self._gen_kwargs(params)
        if params.json_schema is not None:  # built here, so a schema the engine rejects raises in the caller
            from transformers import LogitsProcessorList

            from spokentod.backends.llm._constrain import SchemaLogits

            kw["logits_processor"] = LogitsProcessorList(
                [SchemaLogits(self.tokenizer, params.json_schema, run.prompt_tokens, self.eos_ids())])
        want_logprobs = run.want_logprobs
        if want_logprobs:  # raw logits per step; turned into log-probabilities once generation is done
            kw.update(return_dict_in_generate=True, output_logits=True)

        def work() -> None:
            try:
                # One generation at a time per model: parallel generate() calls on a CPU only oversubscribe
                # the cores, and the seed below is process-global. Waiting here counts in the ttft, as it
                # would for a queued request to a server.
                with self._lock, torch.inference_mode():
                    if kw.get("do_sample") and params.seed is not None:
                        torch.manual_seed(params.seed)
                    ids = inputs["input_ids"][0].tolist()
                    kv, run.reused_tokens = self.prefixes.lookup(ids)
                    extra = {self.prefixes.kwarg: kv} if kv is not None else {}
                    out = self.model.generate(
                        **inputs, **kw, **extra, streamer=streamer,
                        stopping_criteria=StoppingCriteriaList([_Cancel()]),
                    )
                    if kv is not None:  # holds the prompt even when the consumer stopped early
                        self.prefixes.store(ids, kv)
                seqs = out.sequences if want_logprobs else out
                run.new_tokens = int(seqs.shape[1]) - run.prompt_tokens
                if want_logprobs:
                    run.new_ids = seqs[0, run.prompt_tokens :].tolist()
                    run.logits = tuple(x[0] for x in out.logits)
            except Exception as e:  # noqa: BLE001 -- re-raised in the caller's thread, not lost here
                run.error = e
                streamer.end()

        worker = threading.Thread(target=work, name="spokentod-generate", daemon=True)
        worker.start()
        def stopped() -> None:
            run.stopped = True

        try:
            yield from until_stop(streamer, params.stop or [], stopped, lambda: run.error is None)
        finally:
            cancel.set()
            worker.join()
            if run.error is not None:
                raise GenerationError(f"generation failed: {run.error}") from run.error

    def stream(self, messages: list[Message], params: GenParams | None = None) -> Iterator[str]:
        return self._pieces(messages, params or GenParams(), _Run())

    def chat(self, messages: list[Message], params: GenParams | None = None) -> Completion:
        params = params or GenParams()
        run = _Run(want_logprobs=bool(params.logprobs))
        text = "".join(self._pieces(messages, params, run))
        wall = time.perf_counter() - run.start
        finish = "stop" if run.stopped or run.new_tokens < params.max_tokens else "length"
        decode_s = wall - (run.first or 0.0)
        extra = {"prompt_tokens": float(run.prompt_tokens), "cached_prompt_tokens": float(run.reused_tokens)}
        if run.new_tokens > 1 and decode_s > 0:
            extra["tokens_per_s"] = (run.new_tokens - 1) / decode_s  # decode rate, prefill excluded
        logprobs = None
        if params.logprobs and run.logits:
            logprobs = token_logprobs(self.tokenizer, run.new_ids, run.logits, params.top_logprobs,
                                      len(text) if run.stopped else None)
        return Completion(
            text=text,
            ttft=run.first,
            tokens=run.new_tokens,
            timings=Timings(wall=wall, first=run.first, extra=extra),
            finish_reason=finish,
            logprobs=logprobs,
        )
