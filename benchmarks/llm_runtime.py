"""The embedded SmolLM2-135M-Instruct through llama.cpp (`llamacpp`, the Q4_1 GGUF as shipped) vs through
transformers (`smollm2`, the same GGUF dequantized to float32), on the same prompts, greedy.

Prompts are demo-corpus gold-context turns built the way the bench's `text` system builds them (default
system prompt + gold history + the user turn), the deepest user turns first so prompts run to a few hundred
tokens. Both runtimes get the same thread count; prompt-prefix reuse is off in both by default (every prompt
is evaluated whole; --prefix-reuse turns it on in both). Each prompt runs through both runtimes, alternating
which goes first, so a change in the machine's load hits both alike; one untimed warm-up call each first.

Per runtime: mean time to first token, prompt tokens/s (prompt tokens / time to first token), generation
tokens/s (tokens after the first / time after the first), mean total; the llamacpp/smollm2 ratios; and how
many greedy outputs are identical (Q4_1 kernels vs float32 weights round differently, so some differ).

Measured on the shared 2-core dev machine (6 prompts of 358-460 tokens, means; llamacpp / smollm2):
threads 2, OMP_WAIT_POLICY=passive, load 2.5-3.3: first token 4.92 / 2.10 s, prompt 85 / 200 tokens/s,
generation 28.0 / 8.7 tokens/s, total 6.31 / 7.10 s (0.89x). threads 1, load 6-8: first token 6.31 / 2.96 s,
generation 26.8 / 6.8 tokens/s, total 7.66 / 9.68 s (0.79x). threads 2 without the passive wait policy at
load 7-8: llamacpp 2.36x slower (generation 3.5 tokens/s, see backends/llm/llamacpp.py). Identical greedy
outputs: 1/6 in every run (Q4_1 kernels vs float32 weights).
On 2 idle cores (2026-12-04, threads 2, OMP_WAIT_POLICY=passive, load 1.5): first token 1.89 / 0.87 s, prompt
223 / 493 tokens/s, generation 62.7 / 15.0 tokens/s, total 2.52 / 3.79 s (0.67x); identical outputs 1/6.

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/llm_runtime.py [--n 6] [--max-tokens 48] [--threads 2]
        [--prefix-reuse]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from typing import Any

from spokentod.backends.base import Completion, GenParams, create
from spokentod.data import corpora
from spokentod.systems import Context
from spokentod.systems._common import SystemSettings
from spokentod.systems.messages import text_messages

RUNTIMES = ("llamacpp", "smollm2")


def prompts(n: int) -> list[list[dict[str, Any]]]:
    """One gold-context prompt per demo dialogue (its last user turn), then earlier turns, until n."""
    settings = SystemSettings()
    turns = []
    for d in corpora.load("demo", None):
        users = [t for t in range(1, len(d.turns)) if d.turns[t].speaker == "user"]
        turns += [(depth, d, t) for depth, t in enumerate(reversed(users))]
    out = []
    for _, d, t in sorted(turns, key=lambda x: x[0])[:n]:
        system_prompt, history, _ = settings.prepare(Context.gold(d, t))
        out.append(text_messages(system_prompt, history, d.turns[t].text))
    return out


def build(name: str, threads: int, reuse: bool) -> Any:
    if name == "llamacpp":
        return create("llm", {"name": "llamacpp", "model": "smollm2", "threads": threads, "cache_prompt": reuse})
    return create("llm", {"name": "smollm2", "threads": threads, "prefix_cache": 8 if reuse else 0})


def rates(c: Completion) -> dict[str, float]:
    ttft = c.ttft or c.timings.wall
    gen_s = c.timings.wall - ttft
    return {"ttft": ttft, "total": c.timings.wall, "prompt_tokens": c.timings.extra.get("prompt_tokens", 0.0),
            "tokens": float(c.tokens),
            "prompt_tps": c.timings.extra.get("prompt_tokens", 0.0) / ttft if ttft else 0.0,
            "gen_tps": (c.tokens - 1) / gen_s if c.tokens > 1 and gen_s > 0 else 0.0}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=6)
    ap.add_argument("--max-tokens", type=int, default=48)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--prefix-reuse", action="store_true")
    args = ap.parse_args()
    params = GenParams(max_tokens=args.max_tokens)
    msgs = prompts(args.n)
    print(f"load average before: {'/'.join(f'{x:.1f}' for x in os.getloadavg())}")
    llms = {}
    for name in RUNTIMES:
        t0 = time.perf_counter()
        llms[name] = build(name, args.threads, args.prefix_reuse)
        llms[name].chat([{"role": "user", "content": "Hello."}], GenParams(max_tokens=4))  # warm-up
        print(f"{name}: loaded + warm-up in {time.perf_counter() - t0:.1f} s")
    rows: dict[str, list[dict[str, float]]] = {n: [] for n in RUNTIMES}
    texts: dict[str, list[str]] = {n: [] for n in RUNTIMES}
    for i, m in enumerate(msgs):
        for name in (RUNTIMES if i % 2 == 0 else RUNTIMES[::-1]):
            c = llms[name].chat(m, params)
            rows[name].append(rates(c))
            texts[name].append(c.text)
        a, b = rows["llamacpp"][-1], rows["smollm2"][-1]
        print(f"prompt {i + 1}: {a['prompt_tokens']:.0f} prompt tokens; llamacpp {a['total']:.2f} s "
              f"({a['tokens']:.0f} tok), smollm2 {b['total']:.2f} s ({b['tokens']:.0f} tok)")
    print(f"load average after: {'/'.join(f'{x:.1f}' for x in os.getloadavg())}")

    def mean(name: str, key: str) -> float:
        return statistics.fmean(r[key] for r in rows[name])

    cols = [("ttft", "time to first token (s)"), ("prompt_tps", "prompt tokens/s"),
            ("gen_tps", "generation tokens/s"), ("total", "total per reply (s)"),
            ("prompt_tokens", "prompt tokens"), ("tokens", "generated tokens")]
    print(f"\n{len(msgs)} prompts, greedy, max_tokens {args.max_tokens}, threads {args.threads}, "
          f"prefix reuse {'on' if args.prefix_reuse else 'off'}; means over prompts")
    print(f"{'':26}{'llamacpp':>10}{'smollm2':>10}{'ratio':>8}")
    for key, label in cols:
        a, b = mean("llamacpp", key), mean("smollm2", key)
        print(f"{label:26}{a:10.2f}{b:10.2f}{(a / b if b else float('nan')):8.2f}")
    same = sum(x == y for x, y in zip(texts["llamacpp"], texts["smollm2"], strict=True))
    print(f"identical greedy outputs: {same}/{len(msgs)}")


if __name__ == "__main__":
    main()
