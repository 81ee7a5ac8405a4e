"""`spokentod dst transcribe`: a manifest's user turns as a real ASR (embedded Whisper tiny.en) hears them."""

import json

import jiwer
from typer.testing import CliRunner

from spokentod.audio import write_wav
from spokentod.backends.base import create
from spokentod.cli import app
from spokentod.data.manifest import read_manifest
from spokentod.data.schema import Audio, Dialogue, Speaker, Turn

ASR = '{"name": "whisper-ct2", "model": "tiny.en"}'


def _spoken_manifest(tmp_path):
    tts = create("tts", "espeak")
    texts = ["I need a cheap hotel in the north.", "Book it for two nights please."]
    turns = []
    for k, text in enumerate(texts):
        a = tts.synthesize(text)
        write_wav(tmp_path / f"u{k}.wav", a.samples, a.rate)
        turns += [Turn(index=2 * k, speaker=Speaker.user, text=text, state={"hotel": {"area": "north"}},
                       audio=Audio(path=f"u{k}.wav", sample_rate=a.rate, duration=a.duration)),
                  Turn(index=2 * k + 1, speaker=Speaker.agent, text="Sure, one moment.")]
    # a user turn whose audio file is missing: its failure is recorded, the rest is transcribed
    turns.append(Turn(index=4, speaker=Speaker.user, text="Thank you.", state={"hotel": {"area": "north"}},
                      audio=Audio(path="gone.wav", sample_rate=16000, duration=1.0)))
    m = tmp_path / "manifest.jsonl"
    m.write_text(Dialogue(id="d1", source="t", turns=turns).model_dump_json() + "\n")
    return m, texts


def test_transcribe_writes_the_asr_text_beside_the_manifest_and_keeps_the_gold(tmp_path):
    m, texts = _spoken_manifest(tmp_path)
    res = CliRunner().invoke(app, ["dst", "transcribe", str(m), "--asr", ASR, "--name", "tiny", "--no-cache",
                                   "--no-progress"])
    assert res.exit_code == 0, res.output
    out = tmp_path / "manifest.tiny.jsonl"
    (d,) = read_manifest(out)  # a valid manifest; audio paths still resolve (it sits beside the original)
    user = [t for t in d.turns if t.speaker == Speaker.user]
    heard = [t.text for t in user[:2]]
    assert [t.metadata["text_gold"] for t in user] == texts + ["Thank you."]
    assert jiwer.wer([x.lower() for x in texts], [x.lower() for x in heard]) < 0.5  # the ASR's words, not gold
    assert all(t.state == {"hotel": {"area": "north"}} for t in user)  # labels untouched
    assert [t.text for t in d.turns if t.speaker == Speaker.agent] == ["Sure, one moment."] * 2
    assert user[2].text == "" and "gone.wav" in user[2].metadata["asr_error"]  # never the gold text
    rec = json.loads((tmp_path / "manifest.tiny.json").read_text())
    assert rec["user_turns"] == 3 and rec["failed"] == 1 and "d1:4" in rec["failures"]
    assert rec["asr"]["name"] == "whisper-ct2" and rec["wer"] is not None and rec["wer"] < 0.5


def test_transcribe_refuses_a_name_that_is_not_a_file_name(tmp_path):
    m, _ = _spoken_manifest(tmp_path)
    res = CliRunner().invoke(app, ["dst", "transcribe", str(m), "--asr", ASR, "--name", "../x", "--no-progress"])
    assert res.exit_code == 1 and "--name '../x'" in res.output
