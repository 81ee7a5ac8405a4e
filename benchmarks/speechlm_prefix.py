"""The embedded end-to-end speech LM with and without its prompt-prefix cache, side by side in one run.

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/speechlm_prefix.py [--dialogues 3] [--max-tokens 16]

Replays demo dialogues turn by turn under the gold-context protocol (system prompt, the gold history, the
user's turn as Kokoro audio), with the history as text (`e2e_history: text`) and as audio (`audio`), through
two `speechlm` backends built from the shipped adapter: `prefix_cache: 0` and the default. The two answer
each turn one after the other (alternating which goes first), so load on the cores hits both alike.
Columns: median reply wall time, prompt positions read (not taken from the cache) per turn, the speed-up,
and how many greedy replies are identical (reused keys/values round differently, so a near-tie may flip).
"""

from __future__ import annotations

import argparse
import statistics
import time

from spokentod.backends.audiolm.speechlm import SpeechLM
from spokentod.backends.base import GenParams, create
from spokentod.data.schema import Speaker
from spokentod.data.source import DialogueSource, load_dialogues
from spokentod.systems.prompts import load_prompt


def conversations(n: int, history: str, tts) -> list[list[list[dict]]]:
    """Per dialogue, the messages of each user turn (what an e2e system sends under gold context)."""
    system = load_prompt("sales_agent_v1").render(None, use_intent=False)
    out = []
    for d in load_dialogues(DialogueSource(corpus="demo", limit=n))[0]:
        audio = {t.index: tts.synthesize(t.text) for t in d.turns if t.speaker == Speaker.user}
        turns, msgs = [], [{"role": "system", "content": system}]
        for t in d.turns:
            if t.speaker == Speaker.user:
                a = audio[t.index]
                turns.append(msgs + [{"role": "user", "content": [
                    {"type": "audio", "samples": a.samples, "rate": a.rate}]}])
                part = ({"type": "audio", "samples": a.samples, "rate": a.rate} if history == "audio"
                        else {"type": "text", "text": t.text})
                msgs = msgs + [{"role": "user", "content": [part]}]
            else:
                msgs = msgs + [{"role": "assistant", "content": t.text}]
        out.append(turns)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dialogues", type=int, default=3)
    ap.add_argument("--max-tokens", type=int, default=16)
    args = ap.parse_args()
    tts = create("tts", {"name": "kokoro"})
    params = GenParams(max_tokens=args.max_tokens)
    rows = []
    for history in ("text", "audio"):
        # fresh backends per history mode: nothing cached from the other mode
        cold, warm = SpeechLM(prefix_cache=0), SpeechLM()
        walls: dict[str, list[float]] = {"cold": [], "warm": []}
        read: dict[str, list[float]] = {"cold": [], "warm": []}
        same = turns = 0
        for dialogue in conversations(args.dialogues, history, tts):
            for i, msgs in enumerate(dialogue):
                got = {}
                for name in (("cold", "warm") if i % 2 == 0 else ("warm", "cold")):
                    lm = cold if name == "cold" else warm
                    t0 = time.perf_counter()
                    r = lm.respond(msgs, params)
                    walls[name].append(time.perf_counter() - t0)
                    read[name].append(r.timings.extra["prompt_tokens"] - r.timings.extra["cached_prompt_tokens"])
                    got[name] = r.text
                same += got["cold"] == got["warm"]
                turns += 1
        c, w = statistics.median(walls["cold"]), statistics.median(walls["warm"])
        rows.append((history, turns, c, w, statistics.mean(read["cold"]), statistics.mean(read["warm"]), c / w,
                     f"{same}/{turns}"))
    head = ("history", "turns", "cold wall s", "cached wall s", "positions read cold", "read cached",
            "speed-up", "identical")
    print(" | ".join(head))
    for r in rows:
        print(" | ".join([r[0], str(r[1]), f"{r[2]:.2f}", f"{r[3]:.2f}", f"{r[4]:.0f}", f"{r[5]:.0f}",
                          f"{r[6]:.2f}x", r[7]]))


if __name__ == "__main__":
    main()
