"""The DST recipe end to end on a tiny random LLM and the real embedded (frozen) Whisper encoder: phase 1 →
phase 2 with the three losses, dev JGA on generated outputs, exact resumption, early stopping."""

from __future__ import annotations

import json

import numpy as np
import pytest
import soundfile as sf
import torch

from spokentod.data.manifest import write_manifest
from spokentod.data.schema import Audio, Dialogue, Speaker, Turn
from spokentod.dst.model.speechdst import SpeechDST
from spokentod.dst.train.batches import Stream
from spokentod.dst.train.loop import EarlyStopping, train_phase
from spokentod.dst.train.recipe import RecipeError, parse_recipe

STATES = [{"hotel": {"area": "north"}}, {"hotel": {"area": "north", "stars": "4"}},
          {"taxi": {"leaveat": "10:00"}}, {"taxi": {"leaveat": "10:00", "destination": "cambridge"}}]


def _manifest(root, n_dialogues: int, with_audio: bool, seed: int) -> str:
    rng = np.random.default_rng(seed)
    dialogues = []
    for d in range(n_dialogues):
        turns = []
        for i, text in enumerate(["i need a place in the north", "hello how can i help", "four stars please"]):
            speaker = Speaker.agent if i == 1 else Speaker.user
            audio = None
            if with_audio and speaker == Speaker.user:
                secs = 0.4 + 0.3 * rng.random()
                t = np.arange(int(16000 * secs)) / 16000
                wav = (0.3 * np.sin(2 * np.pi * (200 + 300 * rng.random()) * t)).astype(np.float32)
                path = root / f"d{seed}_{d}_{i}.wav"
                sf.write(path, wav, 16000)
                audio = Audio(path=path.name, sample_rate=16000, duration=len(wav) / 16000)
            state = STATES[(d % 2) * 2 + (i // 2)] if speaker == Speaker.user else None
            turns.append(Turn(index=i, speaker=speaker, text=text, audio=audio, state=state))
        dialogues.append(Dialogue(id=f"s{seed}-d{d}", source="test", turns=turns))
    path = root / f"m{seed}.jsonl"
    write_manifest(path, dialogues)
    return str(path)


def _recipe(tmp_path, tiny_llm, **phase2):
    data = tmp_path / "data"
    data.mkdir(exist_ok=True)
    train, text, dev = _manifest(data, 4, True, 0), _manifest(data, 3, False, 1), _manifest(data, 2, True, 2)
    raw = {
        "seed": 3, "out": str(tmp_path / "run"), "feature_cache_dir": str(tmp_path / "features"),
        "model": {"llm": str(tiny_llm), "connector": {"width": 32, "layers": 1, "heads": 2, "ff": 64},
                  "text_encoder": {"layers": 1}, "lora": {"r": 4, "alpha": 4}},
        "data": {"asr": {"manifest": train, "use": "asr"}, "speech": {"manifest": train},
                 "text": {"manifest": text, "modality": "text"}, "dev": {"manifest": dev}},
        "phase1": {"steps": 2, "batch_size": 2, "lr": 1e-3, "warmup": 1, "data": "asr", "dev": "asr",
                   "dev_limit": 2, "eval_every": 2, "max_new_tokens": 4},
        "phase2": {"steps": 4, "batch_size": 2, "lr": 1e-3, "warmup": 1, "dev": "dev", "eval_every": 2,
                   "save_every": 100, "max_new_tokens": 8,
                   "losses": [{"name": "speech", "data": "speech", "prefix": "speech"},
                              {"name": "text", "data": "text", "prefix": "text_encoder", "weight": 2.0},
                              {"name": "asr_text", "batch_of": "speech", "prefix": "text_encoder"}]} | phase2,
    }
    return raw


def _losses(run, n=2):
    return [json.loads(x) for x in (run / f"phase{n}" / "log.jsonl").read_text().splitlines()]


def _loss_parts(log):
    """Each step's loss fields (not its seconds): what an exact resume must reproduce."""
    return [{k: v for k, v in r.items() if k.startswith("loss")} for r in log]


@pytest.mark.slow
def test_two_phases_then_exact_resume(tmp_path, tiny_llm, monkeypatch):
    raw = _recipe(tmp_path, tiny_llm)
    cfg = parse_recipe(raw, "test")
    s1 = train_phase(cfg, 1, progress=False)
    assert s1["step"] == 2 and (tmp_path / "run/phase1/best/model.json").is_file()
    ev1 = json.loads((tmp_path / "run/phase1/eval.jsonl").read_text().splitlines()[-1])
    assert 0 <= ev1["wer"] and ev1["metric"] == -ev1["wer"]

    s2 = train_phase(cfg, 2, progress=False)
    log = _losses(tmp_path / "run")
    assert [r["step"] for r in log] == [1, 2, 3, 4]
    assert all({"loss_speech", "loss_text", "loss_asr_text"} <= set(r) for r in log)
    r = log[0]  # the weighted sum the config asks for
    assert r["loss"] == pytest.approx(r["loss_speech"] + 2.0 * r["loss_text"] + r["loss_asr_text"])
    evals = [json.loads(x) for x in (tmp_path / "run/phase2/eval.jsonl").read_text().splitlines()]
    assert [e["step"] for e in evals] == [2, 4] and all(0 <= e["jga"] <= 1 for e in evals)
    assert (tmp_path / "run/phase2" / "dev_step4.jsonl").is_file()
    assert s2["best_step"] in (2, 4)
    SpeechDST.from_pretrained(tmp_path / "run/phase2/best")  # the best checkpoint loads

    # Same recipe, killed after 1 then 2 more steps (a checkpoint each time), then resumed: same losses.
    raw2 = _recipe(tmp_path, tiny_llm) | {"out": str(tmp_path / "run2")}
    cfg2 = parse_recipe(raw2, "test")
    (tmp_path / "run2/phase1").mkdir(parents=True)
    import shutil

    shutil.copytree(tmp_path / "run/phase1/best", tmp_path / "run2/phase1/best")
    train_phase(cfg2, 2, progress=False, stop_after=1)
    with (tmp_path / "run2/phase2/log.jsonl").open("a") as f:  # a step logged after the checkpoint, then killed
        f.write(json.dumps({"step": 2, "loss": 0.0}) + "\n" + '{"step": 3, "lo')
    train_phase(cfg2, 2, progress=False, stop_after=2)
    s_end = train_phase(cfg2, 2, progress=False)
    again = _losses(tmp_path / "run2")
    # wall time is summed over the three calls: at least every logged step's own seconds
    assert s_end["wall_s"] >= sum(r["seconds"] for r in again) > 0
    assert json.loads((tmp_path / "run2/phase2/summary.json").read_text())["wall_s"] == s_end["wall_s"]
    assert [r["step"] for r in again] == [1, 2, 3, 4]
    assert _loss_parts(again) == _loss_parts(log)

    # Stopped during the dev evaluation at step 2: the checkpoint taken before it holds step 2, so the
    # resumed run redoes that evaluation only, and ends where the uninterrupted run did.
    raw3 = _recipe(tmp_path, tiny_llm) | {"out": str(tmp_path / "run3")}
    cfg3 = parse_recipe(raw3, "test")
    shutil.copytree(tmp_path / "run/phase1/best", tmp_path / "run3/phase1/best")
    from spokentod.dst.train import loop

    class Stop(Exception):
        pass

    real_append = loop._append

    def append_then_stop(path, record):  # the evaluation's record written, the checkpoint after it not
        real_append(path, record)
        if path.name == "eval.jsonl":
            raise Stop

    monkeypatch.setattr(loop, "_append", append_then_stop)
    with pytest.raises(Stop):
        train_phase(cfg3, 2, progress=False)
    kept = torch.load(tmp_path / "run3/phase2/last/trainer.pt", weights_only=False)["state"]
    assert kept["step"] == 2 and kept["eval_due"] == 2
    monkeypatch.setattr(loop, "_append", real_append)
    train_phase(cfg3, 2, progress=False)
    assert _loss_parts(_losses(tmp_path / "run3")) == _loss_parts(log)
    evals3 = [json.loads(x) for x in (tmp_path / "run3/phase2/eval.jsonl").read_text().splitlines()]
    assert [(e["step"], e["jga"]) for e in evals3] == [(e["step"], e["jga"]) for e in evals]


def test_phase2_in_bf16_on_a_cpu(tmp_path, tiny_llm):
    # mixed_precision: bf16 on a CPU (the reproduction's setting): same batches as float32, bf16 matmuls,
    # dev decoding under the same autocast (the frozen LLM is stored in bf16), float32 deltas saved.
    raw = _recipe(tmp_path, tiny_llm, steps=2, eval_every=2)
    raw.pop("phase1")
    train_phase(parse_recipe(raw, "test"), 2, progress=False)
    bf16 = raw | {"out": str(tmp_path / "bf16"), "mixed_precision": "bf16"}
    s = train_phase(parse_recipe(bf16, "test"), 2, progress=False)
    fp32, half = _losses(tmp_path / "run"), _losses(tmp_path / "bf16")
    assert [r["step"] for r in half] == [1, 2]
    assert half[0]["loss"] != fp32[0]["loss"] and half[0]["loss"] == pytest.approx(fp32[0]["loss"], rel=0.05)
    evals = [json.loads(x) for x in (tmp_path / "bf16/phase2/eval.jsonl").read_text().splitlines()]
    assert [e["step"] for e in evals] == [2] and 0 <= evals[0]["jga"] <= 1 and s["best_step"] == 2
    deltas = SpeechDST.load_deltas(tmp_path / "bf16/phase2/best")
    assert deltas and all(v.dtype == torch.float32 for v in deltas.values())


def test_early_stopping_waits_for_patience():
    s = EarlyStopping(patience=2)
    assert s.update(0.1) and not s.stop
    assert not s.update(0.1) and not s.stop  # equal is not better
    assert s.update(0.2) and not s.stop and s.bad == 0  # improvement resets the count
    assert not s.update(0.15) and not s.stop
    assert not s.update(0.19) and s.stop
    assert not EarlyStopping(None, best=1.0, bad=50).stop
    t = EarlyStopping(patience=1)
    assert t.update([0.0, 0.1]) and t.update([0.0, 0.3])  # same JGA, better slot F1: a new best
    assert not t.update([0.0, 0.2]) and t.stop


def test_stream_order_is_reproducible_and_covers_every_item():
    a, b = Stream(list(range(5)), 2, 0, "x"), Stream(list(range(5)), 2, 0, "x")
    first = [a.next() for _ in range(5)]
    assert first == [b.next() for _ in range(5)]
    assert sorted([x for batch in first for x in batch][:5]) == [0, 1, 2, 3, 4]  # one epoch is a permutation
    c = Stream(list(range(5)), 2, 0, "x")
    c.load_state_dict(a.state_dict())
    assert c.next() == a.next()
    ranks = [Stream(list(range(8)), 2, 0, "y").next(world=2, rank=r) for r in (0, 1)]
    assert not set(ranks[0]) & set(ranks[1])  # processes take disjoint slices


def test_recipe_errors_name_the_field(tmp_path, tiny_llm):
    raw = _recipe(tmp_path, tiny_llm)
    raw["phase2"]["losses"][1]["data"] = "nope"
    with pytest.raises(RecipeError, match="nope"):
        parse_recipe(raw, "r.yaml")
    with pytest.raises(RecipeError, match=r"r.yaml: field 'phase2.steps'"):
        parse_recipe(_recipe(tmp_path, tiny_llm), "r.yaml", ["phase2.steps=-1"])
    assert parse_recipe(_recipe(tmp_path, tiny_llm), "r", ["phase2.steps=9"]).phase2.steps == 9


def test_train_cli_reports_a_bad_recipe(tmp_path):
    from typer.testing import CliRunner

    from spokentod.cli import app

    bad = tmp_path / "r.yaml"
    bad.write_text("phase2: {steps: 3, losses: [{name: s, data: missing}]}\n")
    r = CliRunner().invoke(app, ["dst", "train", str(bad)])
    assert r.exit_code == 1 and "missing" in r.output and "phase2" in r.output


@pytest.mark.slow
def test_train_cli_runs_both_phases(tmp_path, tiny_llm):
    import yaml
    from typer.testing import CliRunner

    from spokentod.cli import app

    raw = _recipe(tmp_path, tiny_llm)
    raw["phase1"] |= {"steps": 1, "dev": None}
    raw["phase2"] |= {"steps": 1, "dev": None}
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump(raw))
    r = CliRunner().invoke(app, ["dst", "train", str(path), "--set", "phase2.steps=2"])
    assert r.exit_code == 0, r.output
    assert "phase 1: 1/1 steps" in r.output and "phase 2: 2/2 steps" in r.output
    assert (tmp_path / "run/phase2/best/trainable.safetensors").is_file()
    assert json.loads((tmp_path / "run/recipe.json").read_text())["phase2"]["steps"] == 2


@pytest.mark.slow
def test_unfrozen_encoder_trains_in_phase1_and_travels_with_checkpoints(tmp_path, tiny_llm, tiny_whisper):
    from safetensors.torch import load_file

    raw = _recipe(tmp_path, tiny_llm)
    raw["model"]["encoder"] = {"kind": "hf-whisper", "model": str(tiny_whisper), "freeze": False}
    raw["phase1"] |= {"dev": None, "lr": 1e-2}
    raw["phase2"] |= {"steps": 1, "dev": None}
    cfg = parse_recipe(raw, "test")
    train_phase(cfg, 1, progress=False)
    p1 = load_file(str(tmp_path / "run/phase1/best/trainable.safetensors"))
    enc = {k: v for k, v in p1.items() if k.startswith("speech_encoder.")}
    assert enc, "phase 1 must checkpoint the fine-tuned encoder"
    from transformers import WhisperModel

    orig = WhisperModel.from_pretrained(tiny_whisper).get_encoder().state_dict()
    assert any(not torch.equal(v, orig[k.removeprefix("speech_encoder.")]) for k, v in enc.items())
    train_phase(cfg, 2, progress=False)
    p2 = load_file(str(tmp_path / "run/phase2/best/trainable.safetensors"))
    for k, v in enc.items():  # phase 2 starts from phase 1's encoder and keeps it fixed
        assert torch.equal(p2[k], v)
    m = SpeechDST.from_pretrained(tmp_path / "run/phase2/best")
    assert torch.equal(m.state_dict()[next(iter(enc))], next(iter(enc.values())))


def test_tts_augmentation_renders_text_turns_into_speech_examples(tmp_path):
    from spokentod.dst.train.batches import load_set
    from spokentod.dst.train.recipe import DataSpec, RenderSpec

    text = _manifest(tmp_path, 2, False, 5)
    spec = DataSpec(manifest=text, modality="text", render=RenderSpec(tts="espeak", voices=["en-gb"]))
    examples = load_set("target_text", spec, None, tmp_path / "run")
    assert len(examples) == 4 and all(e.audio and e.duration > 0 for e in examples)
    assert all(str(tmp_path / "run" / "rendered" / "target_text") in e.audio for e in examples)
    import os

    stamps = [os.stat(e.audio).st_mtime_ns for e in examples]
    again = load_set("target_text", spec, None, tmp_path / "run")  # resumable: nothing re-rendered
    assert [e.audio for e in again] == [e.audio for e in examples]
    assert [os.stat(e.audio).st_mtime_ns for e in again] == stamps


@pytest.mark.slow
def test_two_processes_with_accelerate_launch(tmp_path, tiny_llm):
    """The same recipe under `accelerate launch` with 2 CPU processes (DDP over gloo): both phases run to
    the end, and only the main process writes logs and checkpoints."""
    import os
    import subprocess
    import sys

    import yaml

    raw = _recipe(tmp_path, tiny_llm)
    raw["phase1"] |= {"steps": 2, "dev": None}
    raw["phase2"] |= {"steps": 3, "eval_every": 3, "patience": 1}
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump(raw))
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--cpu", "--num_processes", "2",
           "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
           "-m", "spokentod.cli", "dst", "train", str(path)]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    log = _losses(tmp_path / "run")
    assert [r["step"] for r in log] == [1, 2, 3]  # one writer: no duplicated lines
    assert len((tmp_path / "run/phase2/eval.jsonl").read_text().splitlines()) == 1
    SpeechDST.from_pretrained(tmp_path / "run/phase2/best")


def test_dev_decoding_uses_its_own_batch(tmp_path, tiny_llm, monkeypatch):
    """phase2.dev_batch_size sets how many dev dialogues are tracked side by side (default: batch_size), so a
    GPU can decode the dev set in one batch while training keeps a small one."""
    from spokentod.dst.train import loop

    seen = []
    real = loop.track

    def spy(*args, **kwargs):
        seen.append(kwargs["batch_size"])
        return real(*args, **kwargs)

    monkeypatch.setattr(loop, "track", spy)
    losses = [{"name": "text", "data": "text", "prefix": "text_direct"}]
    raw = _recipe(tmp_path, tiny_llm, steps=2, eval_every=2, losses=losses, dev_batch_size=5)
    raw.pop("phase1")
    raw["data"]["dev"]["modality"] = "text"
    train_phase(parse_recipe(raw, "test"), 2, progress=False)
    assert seen == [5]
    raw |= {"out": str(tmp_path / "run2")}
    raw["phase2"].pop("dev_batch_size")
    train_phase(parse_recipe(raw, "test"), 2, progress=False)
    assert seen == [5, 2]  # the training batch when unset
