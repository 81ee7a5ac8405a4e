"""LLM-written everyday sentences for the adapter corpus: cut into sentences, resumable and deterministic by
batch, whole topics held out for dev and test."""

from __future__ import annotations

import json

import pytest

from spokentod.adapter.corpus import CorpusConfig, CorpusError, written_rows
from spokentod.adapter.written import WrittenError, read_written, sentences, write


def test_sentences_cut_a_generation_into_spoken_sentences():
    got = sentences('Here\'s a possible response:\n\n"I finally fixed the washing machine. Yay! '
                    'It cost me — honestly — a fortune. And the plumber said it was')
    assert got == [("I finally fixed the washing machine.", None), ("Yay!", "too short"),
                   ("It cost me — honestly — a fortune.", "characters TTS would misread")]
    # the unfinished last sentence (cut by max_new_tokens) is not a sentence at all
    assert sentences("one two three four five six seven eight nine ten " * 3 + ".")[0][1] == "too long"


def test_write_is_resumable_and_deterministic_by_batch(tmp_path):
    a, b = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    first = write(a, n=3, batch=3, max_new_tokens=32, progress=False)
    rows = read_written(a)
    assert first["kept"] >= 3 and all(r["topic"] and r["style"] and r["text"].strip() for r in rows)
    assert all(r["drop"] is None or isinstance(r["drop"], str) for r in rows)
    more = write(a, n=first["kept"] + 1, batch=3, max_new_tokens=32, progress=False)  # resumes: new batches
    assert more["batches"] > first["batches"] and read_written(a)[: len(rows)] == rows
    write(b, n=3, batch=3, max_new_tokens=32, progress=False)  # same seed, fresh file: the same first batches
    assert read_written(b)[: len(rows)] == rows


def test_written_rows_hold_out_whole_topics(tmp_path):
    path = tmp_path / "w.jsonl"
    path.write_text("".join(json.dumps({"text": f"Sentence {i} about topic {t}.", "topic": f"t{t}", "style": "s",
                                        "batch": 0, "drop": None if i else "too short"}) + "\n"
                            for t in range(20) for i in range(6)))
    cfg = CorpusConfig(written=str(path), sizes={"written": 40, "written_heldout_topics": 4, "written_heldout": 7})
    rows = written_rows(cfg)
    topics = {sp: {r["dialogue"] for s, r in rows if s == sp} for sp in ("train", "dev", "test")}
    assert len(topics["dev"]) == 2 and len(topics["test"]) == 2
    assert not (topics["train"] & (topics["dev"] | topics["test"])) and not topics["dev"] & topics["test"]
    count = {sp: sum(s == sp for s, _ in rows) for sp in ("train", "dev", "test")}
    assert count == {"train": 40, "dev": 7, "test": 7}  # capped; dropped rows (i == 0) never used
    assert all(r["source"] == "written" and not r["text"].startswith("Sentence 0 ") for _, r in rows)
    assert written_rows(cfg) == rows  # seeded

    with pytest.raises(CorpusError, match="no such file"):
        written_rows(CorpusConfig(written=str(tmp_path / "none.jsonl")))
    path.write_text(path.read_text() + '{"text": 3}\n')
    with pytest.raises(WrittenError, match=r"w.jsonl:121: not a written-text row"):
        written_rows(cfg)
