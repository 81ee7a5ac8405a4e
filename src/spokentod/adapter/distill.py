"""Distillation: speech that behaves like text for the frozen LLM (as Ultravox trains its adapter).

An adapter trained only to transcribe makes the LLM read speech as "something to transcribe". The
distillation objective asks instead that the LLM, hearing the user turn, predicts the same next-token
distributions as it does reading the turn as text, over a reply it generated for that text:

    teacher: <|im_start|>user\\n{turn as text tokens}<|im_end|>\\n<|im_start|>assistant\\n{reply}
    student: <|im_start|>user\\n{turn as speech vectors}<|im_end|>\\n<|im_start|>assistant\\n{reply}
    loss = mean over reply positions of KL(teacher ‖ student)

No instruction and no system prompt, in either: the reply is what the LLM says to the turn itself. The
replies are generated once (greedy, the frozen LLM) and cached as token ids:

    spokentod adapter replies configs/adapter/smollm2_distill.yaml --limit 3000   # → train.distill_replies

The teacher's distributions are recomputed each step (a no-grad forward over the text version, about a
third of the student's forward + backward) rather than stored: 49k-way distributions do not cache well.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from spokentod.adapter.model import SpeechAdapter
from spokentod.dst.model.speechdst import labelled_logits
from spokentod.progress import progress_bar


def reply_logits(llm: nn.Module, seqs: list[tuple[Tensor, Tensor]]) -> Tensor:
    """Vocabulary logits at every position that predicts a labelled token, [sum of reply lengths, V], in
    (sequence, position) order: two batches with the same replies line up row for row."""
    return labelled_logits(llm, seqs)[0]


def distill_loss(model: SpeechAdapter, speech: list[Tensor], texts: list[str], replies: list[list[int]]) -> Tensor:
    """Mean KL(teacher ‖ student) over the reply tokens: teacher = the LLM reading each text, student =
    the LLM hearing the speech vectors (``model.speech_inputs`` rows) in the same place."""
    ends = model.end_ids
    with torch.no_grad():
        teacher = [model.labelled(model.user_turn(model.embed(model._ids(t.strip()))), r + ends)
                   for t, r in zip(texts, replies)]
        t_logp = reply_logits(model.llm, teacher).log_softmax(-1)
    student = [model.labelled(model.user_turn(s), r + ends) for s, r in zip(speech, replies)]
    s_logp = reply_logits(model.llm, student).log_softmax(-1)
    return nn.functional.kl_div(s_logp, t_logp, log_target=True, reduction="batchmean")


@torch.no_grad()
def generate_replies(model: SpeechAdapter, texts: list[str], max_new_tokens: int = 40) -> list[list[int]]:
    """The frozen LLM's greedy reply token ids (end token excluded) to each text as a user turn."""
    return model.generate_ids([model.user_turn(model.embed(model._ids(t.strip()))) for t in texts], max_new_tokens)


def read_replies(path: str | Path) -> dict[str, list[int]]:
    """text → reply token ids from a replies JSONL (missing file: empty)."""
    path = Path(path)
    if not path.is_file():
        return {}
    out = {}
    for i, line in enumerate(path.read_text().splitlines(), 1):
        try:
            row = json.loads(line)
            out[row["text"]] = [int(t) for t in row["reply_ids"]]
        except (ValueError, KeyError, TypeError) as e:
            raise ValueError(f"{path}:{i}: not a reply row ({e})") from None
    return out


def prepare_replies(model: SpeechAdapter, texts: list[str], out: str | Path, limit: int | None = None,
                    seed: int = 0, batch: int = 16, max_new_tokens: int = 40) -> dict[str, Any]:
    """Generate and append the replies to ``out`` (JSONL: text, reply_ids, reply) for a seeded sample of
    ``limit`` distinct texts; texts already there are skipped, so an interrupted run resumes."""
    out = Path(out)
    done = read_replies(out)
    pool = sorted({t.strip() for t in texts if t.strip()})
    random.Random(seed).shuffle(pool)
    pool = pool[:limit] if limit else pool
    todo = [t for t in pool if t not in done]
    todo.sort(key=len)  # similar lengths per batch: less padding
    out.parent.mkdir(parents=True, exist_ok=True)
    with progress_bar("replies", unit="replies") as bar, out.open("a") as f:
        task = bar.add_task("replies", total=len(pool), completed=len(pool) - len(todo))
        for i in range(0, len(todo), batch):
            chunk = todo[i: i + batch]
            for text, ids in zip(chunk, generate_replies(model, chunk, max_new_tokens)):
                f.write(json.dumps({"text": text, "reply_ids": ids,
                                    "reply": model.tokenizer.decode(ids, skip_special_tokens=True)}) + "\n")
            f.flush()
            bar.advance(task, len(chunk))
    return {"path": str(out), "texts": len(pool), "generated": len(todo)}
