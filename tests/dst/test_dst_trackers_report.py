"""`spokentod dst trackers-report`: the in-domain trackers' report, from run files written here by hand in the
layout `dst train` + `dst track` leave (the scoring itself is the real scorer)."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from spokentod.dst.cli import app
from spokentod.dst.score.scorer import score_files
from spokentod.studies.dst_repro.report import pct

STATE = {"hotel": {"area": "north"}}


def _jsonl(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _run(root: Path, name: str, right: int, refs: list[dict]) -> Path:
    """A run whose test predictions get the first `right` of 10 dialogues right (state) and the rest wrong."""
    run = root / name
    (run / "phase2").mkdir(parents=True)
    (run / "recipe.json").write_text(json.dumps({
        "model": {"llm": "smollm2", "lora": {"r": 32, "target_modules": ["q_proj"]}, "history": {"max_turns": 2},
                  "carry_state": True},
        "phase2": {"steps": 20, "batch_size": 4, "lr": 1e-3, "warmup": 2,
                   "losses": [{"name": "source", "prefix": "text_direct"}]},
        "data": {"train": {"manifest": "train.jsonl"}, "dev": {"manifest": "dev.jsonl"}}}))
    _jsonl(run / "phase2" / "log.jsonl", [{"step": i, "loss": 1.0 / i, "seconds": 2.0} for i in range(1, 21)])
    _jsonl(run / "phase2" / "eval.jsonl", [{"step": 10, "jga": 0.1, "slot_f1": 0.5},
                                           {"step": 20, "jga": 0.3, "slot_f1": 0.7}])
    (run / "phase2" / "summary.json").write_text(json.dumps({"step": 20, "steps": 20, "wall_s": 95.0}))
    preds = [{"dialogue_id": r["dialogue_id"], "turn": r["turn"],
              "state": r["state"] if int(r["dialogue_id"][1:]) < right else {"hotel": {"area": "south"}},
              "transcript": r["transcript"]} for r in refs]
    _jsonl(run / "test" / "predictions.jsonl", preds)
    (run / "test" / "track.json").write_text(json.dumps({
        "settings": {"mode": "text_direct", "asr": '{"name": "whisper-ct2", "model": "tiny.en"}'},
        "timings": {"track_s": 12.0}, "counts": {"turns": len(refs)}}))
    return run


def test_report_scores_each_run_against_the_floor_and_states_the_goal(tmp_path):
    # 10 dialogues x 2 turns; 1 of 10 dialogues has an empty state on its first turn (the floor: 1/20)
    refs = [{"dialogue_id": f"d{i}", "turn": t, "state": {} if (i == 0 and t == 0) else STATE,
             "transcript": "i need a hotel in the north"} for i in range(10) for t in (0, 2)]
    ref_path = _jsonl(tmp_path / "refs.jsonl", refs)
    good, weak = _run(tmp_path, "good", 8, refs), _run(tmp_path, "weak", 2, refs)
    # the same model on gold transcripts, tracked into another folder of its run: a diagnostic row
    (good / "gold").mkdir()
    (good / "gold" / "predictions.jsonl").write_text((good / "test" / "predictions.jsonl").read_text())
    (good / "gold" / "track.json").write_text(json.dumps({"settings": {"mode": "text_direct", "asr": None}}))
    out = tmp_path / "reports" / "trackers.md"
    res = CliRunner().invoke(app, ["trackers-report", "--run", f"Cascade={good}", "--run", f"E2E={weak}",
                                   "--run", f"Gold text={good}@gold",
                                   "--references", str(ref_path), "--out", str(out), "--bootstrap", "200",
                                   "--note", "Both trained side by side."])
    assert res.exit_code == 0, res.output
    text = out.read_text()
    s_good = score_files(good / "test" / "predictions.jsonl", ref_path, bootstrap=200)
    s_weak = score_files(weak / "test" / "predictions.jsonl", ref_path, bootstrap=200)
    assert s_good["jga"] == 0.8 and s_weak["jga"] == 0.2
    assert f"**Cascade: goal met** — test JGA {pct(s_good['jga'])} % [{pct(s_good['jga_ci'][0])}" in text
    assert f"**E2E: goal not met** — test JGA {pct(s_weak['jga'])} %" in text  # under 25 %
    assert "| empty state (floor) | – | 5.0 [" in text
    assert "**Gold text: diagnostic (gold transcripts, no speech)** — test JGA 80.0 %" in text
    files = tmp_path / "reports" / "trackers" / "run_files"  # the sources, archived beside the report
    assert text.count(f"(`{files / 'good'}/recipe.json`)") == 1  # one recipe line per trained run
    assert "| Cascade | text_direct on whisper-ct2 tiny.en transcripts |" in text
    assert "| Cascade | 10: 10.0, 20: 30.0 | 10: 50.0, 20: 70.0 |" in text
    assert "| 1m 35s | 0m 40s (2.00) |" in text and "Both trained side by side." in text  # wall_s of the loop
    assert (tmp_path / "reports" / "trackers" / "learning_curves.png").stat().st_size > 1000
    assert "--run=Cascade=" in text and "--references" in text and "--note 'Both trained side by side.'" in text
    assert (files / "good" / "gold" / "predictions.jsonl").is_file() and (files / "refs.jsonl").is_file()

    # runs/ is scratch: with the runs gone, the report's own regenerate command (the archive) writes it again
    import shlex
    import shutil
    shutil.rmtree(good), shutil.rmtree(weak), ref_path.unlink()
    regen = shlex.split(text.split("Regenerate: `spokentod dst ")[1].split("`")[0])
    res = CliRunner().invoke(app, regen[:-2] + ["--bootstrap", "200"] + regen[-2:])
    assert res.exit_code == 0, res.output
    assert out.read_text() == text

    ref_path = _jsonl(tmp_path / "refs.jsonl", refs)
    res = CliRunner().invoke(app, ["trackers-report", "--run", f"X={tmp_path / 'nothing'}", "--references",
                                   str(ref_path), "--out", str(out)])
    assert res.exit_code == 1 and "track the test set first" in " ".join(res.stderr.split())
    res = CliRunner().invoke(app, ["trackers-report", "--run", str(good), "--references", str(ref_path),
                                   "--out", str(out)])
    assert res.exit_code == 1 and "NAME=RUN_DIR" in " ".join(res.stderr.split())
    other = _run(tmp_path / "elsewhere", "good", 5, refs)  # another run folder named "good": one archive folder
    res = CliRunner().invoke(app, ["trackers-report", "--run", f"A={files / 'good'}", "--run", f"B={other}",
                                   "--references", str(ref_path), "--out", str(out)])
    assert res.exit_code == 1 and "rename one run folder" in " ".join(res.stderr.split())


def test_report_reads_the_shipped_trackers_recipe_and_curve_from_its_sidecar(tmp_path):
    """embedded@DIR: the package's tracker, its test tracked into DIR; recipe, steps and dev curve come from the
    shipped tracker.json (the run that trained it need not exist on this machine)."""
    from spokentod.dst.infer.embedded import sidecar

    t = sidecar()["trained"]
    refs = [{"dialogue_id": f"d{i}", "turn": 0, "state": STATE, "transcript": "a hotel in the north"}
            for i in range(4)]
    ref_path = _jsonl(tmp_path / "refs.jsonl", refs)
    _jsonl(tmp_path / "e2e" / "predictions.jsonl", refs[:3] + [{**refs[3], "state": {}}])
    (tmp_path / "e2e" / "track.json").write_text(json.dumps({"settings": {"mode": "speech"}}))
    out = tmp_path / "trackers.md"
    res = CliRunner().invoke(app, ["trackers-report", "--run", f"E2E=embedded@{tmp_path / 'e2e'}", "--references",
                                   str(ref_path), "--out", str(out), "--bootstrap", "50"])
    assert res.exit_code == 0, res.output
    text = out.read_text()
    assert "**E2E: goal met** — test JGA 75.0 %" in text and f"after {t['steps']} phase-2 steps" in text
    first = t["dev_curve"][0]
    assert f"| E2E | {first['step']}: {pct(first['jga'])}," in text  # the shipped dev curve
    assert "(the shipped tracker.json): LLM smollm2" in text
    res = CliRunner().invoke(app, ["trackers-report", "--run", "E2E=embedded", "--references", str(ref_path),
                                   "--out", str(out)])
    assert res.exit_code == 1 and "embedded@DIR" in " ".join(res.stderr.split())
