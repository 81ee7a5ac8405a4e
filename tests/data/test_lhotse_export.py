"""lhotse export: field names and counts; lhotse itself (dev extra) parses what we write."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from typer.testing import CliRunner

from spokentod.cli import app
from spokentod.data.lhotse_export import export_lhotse
from spokentod.data.manifest import write_manifest
from spokentod.data.schema import Audio, Dialogue, Phase, Speaker, Turn
from spokentod.errors import DataError


def _wav(path: Path, seconds: float, rate: int, channels: int = 1) -> Audio:
    path.parent.mkdir(parents=True, exist_ok=True)
    x = 0.3 * np.sin(np.arange(int(seconds * rate)) / 7.0)
    sf.write(path, np.stack([x] * channels, axis=1) if channels > 1 else x, rate)
    return Audio(path=f"audio/{path.name}", sample_rate=rate, duration=seconds, voice=None)


@pytest.fixture
def manifest(tmp_path: Path) -> Path:
    a = tmp_path / "audio"
    d1 = Dialogue(id="sb_1", source="salesbot2", turns=[
        Turn(index=0, speaker=Speaker.user, text="I love jazz.", phase=Phase.chitchat,
             audio=_wav(a / "sb_1_0.wav", 0.5, 16000).model_copy(update={"voice": "af_heart"})),
        Turn(index=1, speaker=Speaker.agent, text="Me too.", phase=Phase.chitchat),
        Turn(index=2, speaker=Speaker.user, text="Any concerts tonight?", phase=Phase.transition,
             state={"events": {"category": "music", "date": ["tonight", "today"]}},
             audio=_wav(a / "sb_1_2.wav", 1.0, 24000, channels=2))])
    d2 = Dialogue(id="mwz_2", source="multiwoz21", turns=[
        Turn(index=0, speaker=Speaker.user, text="A taxi please.", state={"taxi": {"leaveat": "17:15"}},
             audio=_wav(a / "mwz_2_0.wav", 0.25, 16000)),
        Turn(index=1, speaker=Speaker.agent, text="Where to?")])
    m = tmp_path / "m.jsonl"
    write_manifest(m, [d1, d2])
    return m


def _rows(path: Path) -> list[dict]:
    opener = gzip.open if path.name.endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8") as f:
        return [json.loads(x) for x in f]


def test_fields_and_counts(manifest, tmp_path):
    out = export_lhotse(manifest, tmp_path / "lh")
    assert set(out) == {"recordings", "supervisions"}
    assert (out.dialogues, out.recordings, out.skipped_no_audio) == (2, 3, 2)
    recs, sups = _rows(out["recordings"]), _rows(out["supervisions"])
    assert [r["id"] for r in recs] == ["sb_1_000", "sb_1_002", "mwz_2_000"]
    assert recs[0] == {"id": "sb_1_000", "sampling_rate": 16000, "num_samples": 8000, "duration": 0.5,
                       "sources": [{"type": "file", "channels": [0],
                                    "source": str((tmp_path / "audio" / "sb_1_0.wav").resolve())}]}
    assert recs[1]["sources"][0]["channels"] == [0, 1] and recs[1]["sampling_rate"] == 24000
    assert sups[0] == {"id": "sb_1_000", "recording_id": "sb_1_000", "start": 0.0, "duration": 0.5, "channel": 0,
                       "text": "I love jazz.", "speaker": "af_heart",
                       "custom": {"dialogue_id": "sb_1", "turn": 0, "role": "user", "source": "salesbot2",
                                  "phase": "chitchat"}}
    assert sups[1]["channel"] == [0, 1] and sups[1]["speaker"] == "user"
    assert json.loads(sups[1]["custom"]["state"]) == {"events": {"category": "music", "date": ["tonight", "today"]}}
    assert "phase" not in sups[2]["custom"]


def test_gzip(manifest, tmp_path):
    out = export_lhotse(manifest, tmp_path / "lh", gzip=True)
    assert out["recordings"].name == "recordings.jsonl.gz"
    assert len(_rows(out["supervisions"])) == 3


def test_lhotse_parses_the_files(manifest, tmp_path):
    lhotse = pytest.importorskip("lhotse")
    out = export_lhotse(manifest, tmp_path / "lh", gzip=True)
    recs = lhotse.RecordingSet.from_jsonl(out["recordings"])
    sups = lhotse.SupervisionSet.from_jsonl(out["supervisions"])
    assert len(recs) == len(sups) == 3
    stereo = recs["sb_1_002"]
    assert stereo.load_audio().shape == (2, 24000)
    sup = sups["sb_1_002"]
    assert sup.custom["phase"] == "transition" and sup.text == "Any concerts tonight?"
    cuts = lhotse.CutSet.from_manifests(recordings=recs, supervisions=sups)
    assert min(c.supervisions[0].text for c in cuts) == "A taxi please."


def test_missing_audio_lists_every_turn_and_writes_nothing(manifest, tmp_path):
    (tmp_path / "audio" / "sb_1_2.wav").unlink()
    (tmp_path / "audio" / "mwz_2_0.wav").write_bytes(b"garbage")
    with pytest.raises(DataError) as e:
        export_lhotse(manifest, tmp_path / "lh")
    got = [(p.record, p.field) for p in e.value.problems]
    assert got == [("sb_1", "turns.2.audio.path"), ("mwz_2", "turns.0.audio.path")]
    assert not (tmp_path / "lh").exists()


def test_duplicate_dialogue_ids_rejected(manifest, tmp_path):
    text = manifest.read_text()
    manifest.write_text(text + text.splitlines()[0] + "\n")
    with pytest.raises(DataError, match="duplicate dialogue id"):
        export_lhotse(manifest, tmp_path / "lh")


def test_cli(manifest, tmp_path):
    result = CliRunner().invoke(app, ["data", "export-lhotse", str(manifest), "--out", str(tmp_path / "lh")])
    assert result.exit_code == 0, result.output
    assert "3 recordings" in result.output and "2 turns without audio skipped" in result.output
    bad = CliRunner().invoke(app, ["data", "export-lhotse", str(tmp_path / "nope.jsonl"), "--out", str(tmp_path)])
    assert bad.exit_code == 1 and "does not exist" in bad.output
