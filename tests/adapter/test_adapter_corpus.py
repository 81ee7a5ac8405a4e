"""The adapter corpus: templates filled and leak-checked, voices held out by split, rendering resumable."""

from __future__ import annotations

import random

import pytest
import soundfile as sf

from spokentod.adapter import corpus as C
from spokentod.adapter.corpus import CorpusConfig, CorpusError, Utterance, fill_templates, read_manifest

TEMPLATES = {
    "Restaurant-Inform": {
        "Area;Food;": ["I ' m looking for a #RESTAURANT-INFORM-FOOD# restaurant in the #RESTAURANT-INFORM-AREA# ."],
        "Price;": ["Something #RESTAURANT-INFORM-PRICE# , please ."],
    },
    "Train-Inform": {"Day;": ["I need to travel on #TRAIN-INFORM-DAY# ."]},
    "general-thank": {"none;": ["Thank you so much !", "That is all I need , thanks ."]},
}
VALUES = {"restaurant-food": ["italian"], "restaurant-area": ["centre"], "restaurant-price range": ["cheap"],
          "train-day": ["monday"]}


def test_fill_templates_detokenizes_fills_and_drops_leaks():
    # An evaluation turn that the first template produces with other values, and one exact thank-you.
    held = {C._norm("I'm looking for a chinese restaurant in the north."), C._norm("Thank you so much!")}
    rows, dropped = fill_templates(TEMPLATES, VALUES, held, random.Random(0), limit=100)
    texts = sorted(r["text"] for r in rows)
    assert texts == ["I need to travel on monday.", "Something cheap, please.", "That is all I need, thanks."]
    assert dropped == {"template matches an evaluation turn": 1, "equals an evaluation turn": 1}
    assert all(r["source"] == "convlab-templates" for r in rows)
    assert len(fill_templates(TEMPLATES, VALUES, set(), random.Random(0), limit=2)[0]) == 2


def test_missing_ontology_values_are_counted_not_invented():
    rows, dropped = fill_templates({"Taxi-Inform": {"Leave;": ["Leave at #TAXI-INFORM-LEAVE# ."]}}, VALUES, set(),
                                   random.Random(0), limit=10)
    assert rows == [] and dropped == {"no ontology values for taxi-leave at": 1}


def test_voices_are_held_out_by_split_and_ids_follow_the_audio_settings():
    utts = [Utterance(id="", text=f"turn {i}", split=sp, source="s", dialogue=f"d{i}")
            for i, sp in enumerate(["train"] * 200 + ["dev"] * 50 + ["test"] * 50)]
    cfg = CorpusConfig(sizes={"kokoro_train": 20, "kokoro_heldout": 0.3})
    C._assign_voices(utts, cfg, random.Random(0))
    held = set(C.HELDOUT_ESPEAK) | set(C.HELDOUT_KOKORO)
    train_voices = {u.voice for u in utts if u.split == "train"}
    assert train_voices and not train_voices & held
    assert all(u.voice in held for u in utts if u.split != "train")
    assert sum(u.tts == "kokoro" for u in utts if u.split == "train") == 20
    assert {u.tts for u in utts if u.split == "dev"} == {"espeak", "kokoro"}
    assert len({u.id for u in utts}) == len(utts) and all(u.audio.endswith(f"{u.id}.wav") for u in utts)
    again = [u.model_copy() for u in utts]
    C._assign_voices(again, cfg, random.Random(1))  # other voices → other ids: no WAV is reused wrongly
    assert sum(a.id == b.id for a, b in zip(utts, again)) < 10


def test_render_one_writes_16k_audio_and_resumes(tmp_path):
    u = Utterance(id="abc", text="A table for two, please.", split="train", source="s", tts="espeak",
                  voice="en-gb-x-rp+m1", wpm=170, pitch=40, audio="audio/train/ab/abc.wav")
    uid, dur, err = C._render_one(str(tmp_path), u.model_dump(), "float32")
    assert (uid, err) == ("abc", None) and 0.8 < dur < 4
    info = sf.info(tmp_path / u.audio)
    assert info.samplerate == 16000 and info.channels == 1
    mtime = (tmp_path / u.audio).stat().st_mtime_ns
    assert C._render_one(str(tmp_path), u.model_dump(), "float32")[1] == dur
    assert (tmp_path / u.audio).stat().st_mtime_ns == mtime  # kept, not rendered again
    bad = u.model_copy(update={"id": "bad", "voice": "no-such-voice", "audio": "audio/train/ba/bad.wav"})
    assert "no-such-voice" in C._render_one(str(tmp_path), bad.model_dump(), "float32")[2]


def test_read_manifest_names_file_and_line(tmp_path):
    with pytest.raises(CorpusError, match="adapter prepare"):
        read_manifest(tmp_path)
    good = Utterance(id="a", text="hi", split="dev", source="s", audio="x.wav", duration=1.0)
    (tmp_path / "manifest.jsonl").write_text(good.model_dump_json() + "\n" + '{"id": "b"}\n')
    with pytest.raises(CorpusError, match=r"manifest.jsonl:2"):
        read_manifest(tmp_path)


def test_on_disk_reads_durations_of_rendered_audio_and_lists_the_rest(tmp_path):
    # `prepare --no-render`: the manifest of what is on disk while a slow tail still renders.
    utts = [Utterance(id=i, text="Thanks, that is all.", split="train", source="s", tts="espeak", voice="en-us",
                      wpm=170, pitch=50, audio=f"audio/train/{i}.wav") for i in ("one", "two")]
    _, dur, _ = C._render_one(str(tmp_path), utts[0].model_dump(), "float32")
    missing = C._on_disk(tmp_path, utts)
    assert utts[0].duration == pytest.approx(dur, abs=1e-3) and utts[1].duration is None
    assert missing == [{"id": "two", "error": "not rendered (prepare --no-render)"}]
