"""Everyday speech written by the embedded LLM: a broad-vocabulary text source for the adapter's corpus.

Why: the shipped adapter trained on MultiWOZ/SGD user turns and ConvLab templates, a vocabulary of hotels,
trains and restaurants. On the demo corpus's chit-chat ("I finally finished a run of four night shifts")
it transcribes at 85 % WER through the LLM (Kokoro voices; 60-75 % with training espeak voices, 48 % from
its CTC head) where Whisper tiny.en makes 1.6 %, and a cascade fed its transcripts agrees with the text
reply no better than the end-to-end system does (cosine 0.41 vs 0.39): what the adapter lacks is words,
not a way of reading speech. No licensed conversational text is installable offline at this scale, so
the embedded LLM (SmolLM2-135M-Instruct, Apache-2.0) writes it: what a person might say about one of
~100 everyday topics, in one of a dozen kinds of utterance, sampled. The sentences are odd at times; an
ASR corpus needs words in sentences, not good dialogue.

    spokentod adapter write --out runs/adapter/written.jsonl --n 20000

Rows (JSONL): ``{"text", "topic", "style", "batch", "drop"}``, one per sentence cut out of a generation;
``drop`` says why a sentence is not used (null: used). Generation goes batch by batch, each batch's
topics, styles and sampling seeded by (seed, batch), so a resumed run writes what an uninterrupted one
would. The corpus (adapter/corpus.py, ``written:``) holds out whole topics for dev and test.
"""

from __future__ import annotations

import json
import random
import re
from pathlib import Path
from typing import Any

from spokentod.errors import SpokenTODError

TOPICS = (
    "your weekend", "a long day at work", "night shifts", "your commute", "a broken washing machine",
    "your grandchildren", "a new puppy", "an old cat", "learning to cook", "a birthday party", "a wedding",
    "moving house", "your neighbours", "a job interview", "a promotion", "losing your keys", "the weather",
    "a summer holiday", "a camping trip", "a road trip", "a flight delay", "a football match", "a marathon",
    "going to the gym", "yoga", "a diet", "a doctor's appointment", "a cold", "a dentist visit", "sleep",
    "coffee", "tea", "baking bread", "a vegetable garden", "house plants", "a favourite book", "a film you saw",
    "a TV series", "a concert", "learning the guitar", "a piano lesson", "painting", "photography",
    "a new phone", "a slow computer", "video games", "social media", "online shopping", "a parcel that never came",
    "a car repair", "a flat tyre", "riding a bike", "public transport", "a rainy day", "snow", "a heatwave",
    "a school project", "exams", "university", "a teacher you remember", "your first job", "retirement",
    "saving money", "a budget", "rent", "a noisy flat", "cleaning the house", "doing laundry", "a recipe",
    "a restaurant you love", "street food", "a farmers market", "the supermarket", "a family dinner",
    "your parents", "a sister or brother", "an old friend", "making new friends", "a first date",
    "a museum", "a zoo", "the beach", "a hike in the mountains", "fishing", "a boat trip", "a city you visited",
    "learning a language", "a podcast", "the news", "a local festival", "a charity run", "volunteering",
    "a lost wallet", "a surprise", "a bad haircut", "new shoes", "a gift for someone", "a holiday season",
)

STYLES = (
    "telling a friend about a plan", "complaining a little", "sharing good news", "asking a question",
    "expressing worry", "making a request", "making small talk", "remembering something", "giving an opinion",
    "asking for advice", "apologising", "thanking someone",
)

PROMPT = ("Write one thing a person might say out loud about {topic}, {style}. "
          "Write only what they say, one or two sentences, no quotes.")

class WrittenError(SpokenTODError):
    pass


_SENTENCE = re.compile(r"[^.!?]+[.!?]+")
_ALLOWED = re.compile(r"^[A-Za-z0-9 ,.'!?;:$%-]+$")


def sentences(generated: str, min_words: int = 3, max_words: int = 25) -> list[tuple[str, str | None]]:
    """Cut one generation into spoken sentences: (sentence, why it is dropped or None)."""
    out = []
    for line in generated.splitlines():
        line = line.strip().strip('"*“”').strip()
        if not line or line.endswith(":"):  # "Here's a possible response:"
            continue
        for m in _SENTENCE.finditer(line.replace('"', "").replace("“", "").replace("”", "")):
            s = " ".join(m.group(0).split())
            n = len(s.split())
            why = ("too short" if n < min_words else "too long" if n > max_words
                   else "characters TTS would misread" if not _ALLOWED.match(s) else None)
            out.append((s, why))
    return out  # an unfinished last sentence (cut by max_new_tokens) has no end mark: never matched


def _batch_plan(seed: int, batch: int, size: int) -> list[tuple[str, str]]:
    rng = random.Random(f"{seed}:{batch}")
    return [(rng.choice(TOPICS), rng.choice(STYLES)) for _ in range(size)]


def read_written(path: str | Path) -> list[dict[str, Any]]:
    """The rows of a written-text JSONL; a clear error names the line that is not one."""
    path = Path(path)
    rows = []
    for i, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        try:
            row = json.loads(line)
        except ValueError as e:
            raise WrittenError(f"{path}:{i}: not a written-text row ({e})") from None
        if not isinstance(row, dict) or not isinstance(row.get("text"), str) or not isinstance(row.get("topic"), str):
            raise WrittenError(f"{path}:{i}: not a written-text row (needs the strings text and topic)")
        rows.append(row)
    return rows


def write(out: str | Path, n: int, seed: int = 0, llm: str = "smollm2", batch: int = 16,
          temperature: float = 0.9, top_p: float = 0.95, max_new_tokens: int = 48, threads: int | None = None,
          device: str = "cpu", progress: bool = True) -> dict[str, Any]:
    """Generate until ``out`` holds ``n`` usable sentences (resumable by batch); returns counts. ``llm`` is
    "smollm2" (the embedded model) or a Hugging Face model directory. The sampling is seeded per batch, so a
    run on one device is reproducible; another device (or batch size) writes another, equivalent sample."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from spokentod.dst.model.speechdst import resolve_llm
    from spokentod.progress import progress_bar

    if threads:
        torch.set_num_threads(threads)
    out = Path(out)
    rows = read_written(out) if out.is_file() else []
    kept = sum(r.get("drop") is None for r in rows)
    path = resolve_llm(llm)
    tok = AutoTokenizer.from_pretrained(path)
    tok.padding_side = "left"
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval().to(device)
    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    out.parent.mkdir(parents=True, exist_ok=True)
    b = max((r["batch"] for r in rows), default=-1) + 1  # a resumed run starts after the last batch written
    with progress_bar("write", unit="sentences", disable=not progress) as bar, out.open("a", encoding="utf-8") as f:
        task = bar.add_task("write", total=n, completed=min(kept, n))
        while kept < n:
            plan = _batch_plan(seed, b, batch)
            texts = [tok.apply_chat_template([{"role": "user", "content": PROMPT.format(topic=t, style=s)}],
                                             tokenize=False, add_generation_prompt=True) for t, s in plan]
            enc = tok(texts, return_tensors="pt", padding=True, add_special_tokens=False).to(device)
            torch.manual_seed(seed * 1_000_003 + b)
            with torch.inference_mode():
                gen = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=True, temperature=temperature,
                                     top_p=top_p, pad_token_id=pad)
            for (topic, style), ids in zip(plan, gen[:, enc["input_ids"].shape[1]:]):
                for s, why in sentences(tok.decode(ids, skip_special_tokens=True)):
                    f.write(json.dumps({"text": s, "topic": topic, "style": style, "batch": b, "drop": why}) + "\n")
                    kept += why is None
            f.flush()
            bar.update(task, completed=min(kept, n))
            b += 1
    rows = read_written(out)
    return {"path": str(out), "sentences": len(rows), "kept": sum(r.get("drop") is None for r in rows),
            "batches": b, "topics": len({r["topic"] for r in rows}), "device": device}
