"""The adapter's report and export: the verdict follows the numbers in the run files; the float16 export
loads back as the same adapter, with a sidecar that says what it was trained on and how it measured."""

from __future__ import annotations

import json

import torch

from spokentod.adapter.evaluate import export
from spokentod.adapter.model import AdapterConfig, SpeechAdapter
from spokentod.adapter.report import report_data, write_report


def _run(tmp_path, wers, minutes):
    run = tmp_path / "run"
    run.mkdir()
    rows = [{"step": 100 * (i + 1), "train_s": 60 * m, "ctc_wer": w / 2, "wer": w, "n": 96}
            for i, (w, m) in enumerate(zip(wers, minutes))]
    (run / "eval.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (run / "summary.json").write_text(json.dumps({"step": 100 * len(rows), "train_s": 60 * minutes[-1],
                                                  "recipe": {"corpus": str(tmp_path / "none"), "model": {},
                                                             "train": {"batch_size": 16}}}))
    return run


def test_verdict_counts_only_evaluations_within_the_budget(tmp_path):
    run = _run(tmp_path, [0.9, 0.3, 0.15], [10, 50, 70])  # 15 % only after 70 min: not within 60
    out = write_report(run, tmp_path / "r/speech_adapter.md")
    text = out.read_text()
    assert "**Goal not met:**" in text and "30.0 %" in text
    assert (tmp_path / "r/speech_adapter/dev_wer.png").stat().st_size > 1000
    assert not report_data(run)["met"]
    (tmp_path / "b").mkdir()
    run2 = _run(tmp_path / "b", [0.5, 0.18], [20, 55])
    assert report_data(run2)["met"] and "**Goal met:** dev WER 18.0 %" in write_report(run2, tmp_path / "r2.md").read_text()


def test_the_report_archives_its_runs_and_regenerates_from_the_archive(tmp_path):
    import shutil

    run = _run(tmp_path, [0.6, 0.25], [10, 40])
    (tmp_path / "x").mkdir()
    other = _run(tmp_path / "x", [0.7], [20])
    out = tmp_path / "r/speech_adapter.md"
    (tmp_path / "r/speech_adapter").mkdir(parents=True)
    (tmp_path / "r/speech_adapter/earlier.json").write_text(json.dumps({"why": "lost before archiving", "rows": [
        {"label": "old", "settings": "s", "steps": 5, "train_min": 1.0, "best_wer": "50.0 % (step 5)",
         "best_ctc": "40.0 %"}]}))
    first = write_report(run, out, [("a try", str(other))]).read_text()
    assert (tmp_path / "r/speech_adapter/run_files/run/eval.jsonl").is_file()
    assert (tmp_path / "r/speech_adapter/run_files/a-try/summary.json").is_file()
    assert "| old † | s | 5 | 1.0 | 50.0 % (step 5) | 40.0 % |" in first and "† lost before archiving" in first
    cmd = first.split("## Regenerate")[1].split("```")[1].strip()
    assert cmd.startswith(f"spokentod adapter report {tmp_path / 'r/speech_adapter/run_files/run'}") and f"--out {out}" in cmd
    shutil.rmtree(run)  # runs/ is scratch: the report still regenerates, the same but for its source line
    shutil.rmtree(other)
    again = write_report(tmp_path / "r/speech_adapter/run_files/run", out,
                         [("a try", str(tmp_path / "r/speech_adapter/run_files/a-try"))]).read_text()
    assert again.split("\n")[3:] == first.split("\n")[3:] and "25.0 %" in again


def test_export_is_float16_and_loads_back_as_the_same_adapter(tmp_path, tiny_llm):
    cfg = AdapterConfig(llm=str(tiny_llm), asr_prompt=3, connector={"width": 32, "layers": 1, "heads": 2, "ff": 64})
    torch.manual_seed(0)
    m = SpeechAdapter.build(cfg, 384)
    m.save(tmp_path / "best", {"step": 7, "dev_wer": 0.5, "train_s": 120.0})
    (tmp_path / "best/eval_test.json").write_text(json.dumps({"n": 3, "wer": 0.4, "ctc_wer": 0.3,
                                                              "by_tts": {"espeak": {"wer": 0.4, "n": 3}}}))
    meta = export(tmp_path / "best", tmp_path / "ship", run=tmp_path)
    assert meta["dtype"] == "float16" and meta["measured"]["test"]["wer"] == 0.4 and "adapter train" in meta["retrain"]
    assert meta["trained"]["step"] == 7 and meta["trained"]["train_minutes"] == 2.0
    back = SpeechAdapter.load(tmp_path / "ship")
    a, b = m.adapter_state(), back.adapter_state()
    assert set(a) == set(b) and all(b[k].dtype == a[k].dtype for k in a)  # computes in float32 again
    assert max(float((a[k] - b[k]).abs().max()) for k in a) < 1e-2  # only float16 rounding


def test_the_agreement_section_states_the_goal_against_the_cascade(tmp_path):
    import json as _json

    from spokentod.adapter.report import agreement_section

    def figures(e2e: float) -> dict:
        return {"run": "runs/x", "turns": 10, "dialogues": 3, "adapter_sha256": "ab" * 32,
                "systems": {"cascade": {"cosine": [0.80, 0.78, 0.82], "exact": [0.5, 0.4, 0.6]},
                            "e2e": {"cosine": [e2e, e2e - 0.02, e2e + 0.02], "exact": [0.1, 0.0, 0.2]}}}

    path = tmp_path / "agreement.json"
    path.write_text(_json.dumps(figures(0.40)))
    text = "\n".join(agreement_section(path))
    assert "**Goal not met** (e2e): end-to-end cosine 0.400 vs ≥ 0.750" in text
    assert "| e2e | 0.400 [0.380, 0.420]" in text
    path.write_text(_json.dumps(figures(0.76)))
    assert "**Goal met** (e2e)" in "\n".join(agreement_section(path))
    # a second adapter compared on the same turns (benchmarks/speechlm_agreement.py --extra) gets its own line
    both = figures(0.40)
    both["systems"]["distilled"] = {"cosine": [0.77, 0.75, 0.79], "exact": [0.3, 0.2, 0.4]}
    both["extra"] = {"distilled": {"run": "runs/y", "adapter_sha256": "cd" * 32}}
    path.write_text(_json.dumps(both))
    text = "\n".join(agreement_section(path))
    assert "**Goal not met** (e2e)" in text and "**Goal met** (distilled, adapter `cdcdcdcdcdcd`)" in text
    # the diagnostic cascade on the adapter's own transcripts: a row with its transcript WER, no goal line
    diag = figures(0.40)
    diag["systems"]["cascade"]["transcript_wer"] = 0.016
    diag["systems"]["cascade_adapter"] = {"cosine": [0.41, 0.32, 0.49], "exact": [0.03, 0.0, 0.08],
                                          "transcript_wer": 0.849}
    path.write_text(_json.dumps(diag))
    text = "\n".join(agreement_section(path))
    assert "| cascade_adapter | 0.410 [0.320, 0.490] | 0.030 [0.000, 0.080] | 84.9 % |" in text
    assert "| e2e | 0.400 [0.380, 0.420] | 0.100 [0.000, 0.200] | – |" in text
    assert "(cascade_adapter" not in text and "**Goal not met** (e2e)" in text
