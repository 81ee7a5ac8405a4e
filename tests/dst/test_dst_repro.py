"""The DST reproduction study's plumbing, end to end on a tiny random LLM: the shipped config's conditions
on a handful of real MultiWOZ dialogues (espeak speech, real frozen Whisper encoder and Whisper ASR), 1-2 steps
per phase, every stage's outputs, the computed report, and a re-run that redoes nothing."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import pytest
import yaml

from spokentod.studies.dst_repro import config as repro_config
from spokentod.studies.dst_repro import layout, prepare, stages
from spokentod.studies.dst_repro import stats as repro_stats
from spokentod.studies.dst_repro.report import (
    _hms,
    above_floor,
    contrast_statement,
    floor_statement,
    likely_reasons,
    pct,
)

REPO = Path(__file__).resolve().parents[2]
CONFIG = REPO / "configs" / "dst" / "repro_multiwoz.yaml"


def _tiny(tmp_path: Path, tiny_llm, data_dir: Path) -> dict:
    """The shipped config with a tiny model, a handful of dialogues and 1-2 steps per phase."""
    raw = yaml.safe_load(CONFIG.read_text())
    raw["out"] = str(tmp_path / "out")
    raw["seeds"] = [0]  # the second seed of S / S+T is plumbing already covered (runs, pooled bootstrap): saves ~10 s
    raw["report"] = str(tmp_path / "reports" / "dst_repro.md")
    p = raw["prepare"]
    p["paths"] = [str(data_dir / "multiwoz/mwz21_convlab2/val.json")]
    p["eval_from"] = p["paths"]
    p["dialogues"] = {"source_train": 1, "source_dev": 1, "source_test": 1, "target_train": 1, "target_dev": 0,
                      "target_test": 2}
    p["max_user_turns"] = 2
    base = raw["base"]
    # The shipped adapter fits only the embedded LLM: the tiny model trains its own phase 1 (plumbing checked).
    base.pop("speech_adapter")
    base["model"] |= {"llm": str(tiny_llm), "connector": {"width": 32, "layers": 1, "heads": 2, "ff": 64},
                      "compress": "none", "text_encoder": {"layers": 1}, "lora": {"r": 4, "alpha": 4}}
    base |= {"device": "cpu", "mixed_precision": "no"}
    base["phase1"] = {"steps": 1, "batch_size": 2, "lr": 2e-3, "warmup": 0, "data": "asr", "dev": "asr_dev",
                      "dev_limit": 2, "eval_every": 1, "max_new_tokens": 4}
    base["phase2"] |= {"steps": 2, "batch_size": 2, "warmup": 0, "eval_every": 2, "save_every": 1,
                       "max_new_tokens": 8}
    raw["eval"] |= {"batch_size": 4, "max_new_tokens": 8, "bootstrap": 200}
    return raw


def _lines(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines() if x.strip()]


@pytest.mark.slow  # ~35 s of CPU (real Whisper encoder + ASR, 6 tiny trainings): still runs in CI (make test)
def test_recipe_plumbing_end_to_end_and_rerun_skips(tmp_path, tiny_llm, data_dir):
    from typer.testing import CliRunner

    from spokentod.cli import app

    raw = _tiny(tmp_path, tiny_llm, data_dir)
    cfg_path = tmp_path / "repro.yaml"
    cfg_path.write_text(yaml.safe_dump(raw, sort_keys=False))
    out = Path(raw["out"])
    r = CliRunner().invoke(app, ["dst", "repro", str(cfg_path), "--no-progress", "--set", "eval.bootstrap=100"])
    assert r.exit_code == 0, r.output

    cfg = repro_config.load_repro(cfg_path)
    # prepare: manifests for every set, references for dev/test, split bookkeeping
    split = json.loads((out / "data/split.json").read_text())
    for name in ("source_train", "target_train", "target_tts", "dev", "source_test", "target_test"):
        assert (out / "data" / name / "manifest.jsonl").is_file(), name
    for name in ("dev", "source_test", "target_test"):
        assert _lines(out / "data" / name / "references.jsonl")
    assert split["mixed_left_out"]["dialogues"] > 0 and split["source_only"]["dialogues"] > 0
    ids = {k: set(v["ids"]) for k, v in split["splits"].items()}
    assert all(not (ids[a] & ids[b]) for a in ids for b in ids if a < b)  # dialogue-disjoint
    assert set(split["voices"]["target_test"]["voices"]).isdisjoint(split["voices"]["source_train"]["voices"])
    # phase 1 once, shared; every condition x seed trained from it
    assert (out / "shared/phase1/best/model.json").is_file()
    runs = cfg.runs()
    assert runs == [(c, 0) for c in cfg.conditions] and len(runs) == 6
    assert repro_config.parse_repro(raw, "x", ["seeds=[0, 1]"]).runs().count(("S+T", 1)) == 1  # all_seeds conditions
    for c, s in runs:
        rd = layout.run_dir(out, c, s)
        assert json.loads((rd / "recipe.json").read_text())["init_from"].endswith("shared/phase1/best")
        assert [x["step"] for x in _lines(rd / "phase2/log.jsonl")] == [1, 2]
        assert _lines(rd / "phase2/eval.jsonl")
    # eval: a scored row for every condition x seed x test set, paired comparisons, the ASR transcripts
    results = json.loads((out / "results.json").read_text())
    rows = {(x["condition"], x["seed"], x["test_set"]) for x in results["rows"]}
    assert rows == {(c, s, t) for c, s in runs for t in ("target_test", "source_test")}
    for x in results["rows"]:
        assert 0 <= x["jga"] <= 1 and x["per_dialogue_consistent"], x
        assert x["jga_ci"] and x["wer"] is not None and "slot_key_f1" in x
    main = [x for x in results["comparisons"] if x["main"]]
    assert len(main) == 1 and main[0]["seeds"] == [0] and "ci" in main[0]["pooled"]
    assert set(main[0]["secondary"]) == {"slot_f1", "slot_key_f1"} and "ci" in main[0]["secondary"]["slot_f1"]
    assert any(a["test_set"] == "target_test" for a in results["asr"].values())
    cascade = json.loads((layout.eval_dir(out, "Cascade", 0, "target_test") / "track.json").read_text())
    assert cascade["key"]["mode"]["mode"] == "text_direct"
    # report: every condition, the computed statement, the plots, the command and the wall time
    report = Path(raw["report"])
    text = report.read_text()
    for c in cfg.conditions:
        assert f"| {c} |" in text, c
    statement = contrast_statement(main[0], results["contrast"])
    assert statement in text and "Secondary metrics" in text
    floor = results["trivial"]["target_test"]  # predicting {} everywhere: right only where gold is empty
    refs = _lines(out / "data/target_test/references.jsonl")
    assert floor["turns"] == len(refs) and floor["jga"] == pytest.approx(sum(not x["state"] for x in refs) / len(refs))
    assert "Floor — predicting an empty state" in text
    assert floor_statement(results) in text and "| above the floor on source_test |" in text
    # the Table 4 view: each condition's recognition (WER, entity WER) next to slot-key F1 and JGA
    t4 = text.split("Table 4 view)")[1].split("\n## ")[0]
    r = next(x for x in results["rows"] if x["condition"] == "S+T" and x["test_set"] == "target_test")
    assert f"| S+T | target_test | 1 | {pct(r['wer'])} | {pct(r['entity_wer'])} | {pct(r['slot_key_f1'])} |" in t4
    for png in ("jga.png", "per_domain.png", "learning_curves.png", "wer_slot_key_f1.png"):
        assert (report.parent / "dst_repro" / png).stat().st_size > 1000, png
    assert "spokentod dst repro" in text and "--set eval.bootstrap=100" in text and "## Wall time" in text
    timings = json.loads((out / "timings.json").read_text())
    assert set(timings["stages"]) == set(repro_config.STAGES)
    for c, s in runs:  # each training unit's row also sums its own step log (what a stop cannot lose)
        steps = sum(x["seconds"] for x in layout.step_log(layout.run_dir(out, c, s) / "phase2/log.jsonl"))
        unit = layout.train_unit(c, s)
        assert f"| {unit} | {_hms(timings['units'][unit])} | {_hms(steps)} |" in text, unit
    files = report.parent / "dst_repro" / "run_files"  # the report's sources, archived for git
    assert (files / "results.json").read_text() == (out / "results.json").read_text()
    assert all((files / "runs" / layout.slug(c) / f"seed{s}" / "phase2/log.jsonl").is_file() for c, s in runs)
    assert not list(files.rglob("*.safetensors")) and not (files / "data/target_test").exists()

    # A re-run redoes nothing: no retraining, no re-tracking, no re-rendering.
    before = {c: (layout.run_dir(out, c, s) / "phase2/log.jsonl").read_text() for c, s in runs}
    stamp = (layout.eval_dir(out, "S", 0, "target_test") / "predictions.done").stat().st_mtime_ns
    done = stages.run(cfg, progress=False, command="rerun")
    assert done["prepare"] == {"skipped": True} and done["phase1"]["skipped"]
    assert done["train"]["trained"] == [] and len(done["train"]["skipped"]) == len(runs)
    assert done["eval"]["tracked"] == [] and len(done["eval"]["skipped"]) == 2 * len(runs)
    assert before == {c: (layout.run_dir(out, c, s) / "phase2/log.jsonl").read_text() for c, s in runs}
    assert (layout.eval_dir(out, "S", 0, "target_test") / "predictions.done").stat().st_mtime_ns == stamp
    again = json.loads((out / "timings.json").read_text())
    last = [x for x in again["invocations"] if x["command"] == "rerun"]
    assert [x["stage"] for x in last] == list(repro_config.STAGES)
    assert next(x for x in last if x["stage"] == "train")["work"]["trained"] == []

    # A stopped eval continues with exactly what is missing.
    (layout.eval_dir(out, "Oracle", 0, "source_test") / "predictions.done").unlink()
    redo = stages.run(cfg, stage="eval", progress=False, command="resume eval")
    assert redo["eval"]["tracked"] == ["Oracle/seed0/source_test"]

    # A changed recipe is refused rather than silently mixed with finished work.
    with pytest.raises(repro_config.ReproError, match="phase2.lr"):
        stages.run(repro_config.parse_repro(raw, "x", ["base.phase2.lr=0.1"]), stage="train", progress=False)

    # The report stage archived the report's sources beside it; from them alone (the out dir gone, as on a
    # fresh checkout) the printed command writes the same report.
    text = report.read_text()
    command = text.split("Regenerate: `")[1].split("`")[0]
    assert command == f"spokentod dst repro-report {files} --report {report}"
    shutil.rmtree(out)
    report.unlink()
    r = CliRunner().invoke(app, command.split()[1:])
    assert r.exit_code == 0, r.output
    assert report.read_text() == text


def test_shipped_config_parses_and_builds_every_condition():
    cfg = repro_config.load_repro(CONFIG)
    assert list(cfg.conditions) == ["S", "S+T", "S+T-noenc", "S+TTS", "Oracle", "Cascade"]
    out = Path(cfg.out)
    recipes = {c: repro_config.condition_recipe(cfg, out, c, s) for c, s in cfg.runs()}
    steps = {r.phase2.steps for r in recipes.values()}
    batches = {r.phase2.batch_size for r in recipes.values()}
    assert len(steps) == 1 and len(batches) == 1  # the same budget for every condition
    s, st = recipes["S"].phase2.losses, recipes["S+T"].phase2.losses
    assert [x.name for x in st if x.name not in {y.name for y in s}] == ["target"]  # S+T = S + target text
    assert {x.prefix for x in recipes["S+T-noenc"].phase2.losses if x.name == "target"} == {"text_direct"}
    # phase 1 is the shipped adapter: no shared phase-1 run, every condition starts from it
    assert all(r.speech_adapter == "embedded" and not r.init_from and not r.phase1 for r in recipes.values())
    assert repro_config.phase1_recipe(cfg, out) is None
    assert cfg.prepare.eval_from and all("test.json" in x for x in cfg.prepare.eval_from)
    # --set reaches list items and the target weight applies to target-data losses only
    cfg8 = repro_config.load_repro(CONFIG, ["target_weight=8", "conditions.S.losses.0.weight=2"])
    r8 = repro_config.condition_recipe(cfg8, out, "S+T", 0)
    assert {x.name: x.weight for x in r8.phase2.losses} == {"speech": 1.0, "target": 8.0, "asr_text": 1.0}
    assert repro_config.condition_recipe(cfg8, out, "S", 0).phase2.losses[0].weight == 2


def test_config_errors_name_the_field():
    raw = yaml.safe_load(CONFIG.read_text())
    with pytest.raises(repro_config.ReproError, match="contrast"):
        repro_config.parse_repro(raw, "r.yaml", ["contrast.treatment=nope"])
    with pytest.raises(repro_config.ReproError, match="not one of"):
        repro_config.parse_repro(raw, "r.yaml", ["conditions.S.losses.0.data=elsewhere"])
    with pytest.raises(repro_config.ReproError, match="heldout voices"):
        repro_config.parse_repro(raw, "r.yaml", ["prepare.render.heldout.voices=[en-us]"])
    with pytest.raises(repro_config.ReproError, match=r"(?s)r.yaml: .*conditions.S: field 'phase2.steps'"):
        repro_config.parse_repro(raw, "r.yaml", ["base.phase2.steps=-1"])


def test_paired_bootstrap_and_statement():
    base = [{"a": (0, 4), "b": (1, 4), "c": (0, 2)}, {"a": (1, 4), "b": (1, 4), "c": (0, 2)}]
    better = [{"a": (3, 4), "b": (4, 4), "c": (2, 2)}, {"a": (4, 4), "b": (3, 4), "c": (2, 2)}]
    p = repro_stats.paired_bootstrap(base, better, 500)
    assert p["diff"] == pytest.approx((9 - 1.5) / 10) and p["ci"][0] > 0 and p["p_not_greater"] == 0
    contrast = {"baseline": "S", "treatment": "S+T", "test_set": "target_test"}
    s = contrast_statement({"pooled": p, "seeds": [0, 1]}, contrast)
    assert s.startswith("**Reproduced:**") and "excludes 0" in s
    worse = repro_stats.paired_bootstrap(better, base, 500)
    assert contrast_statement({"pooled": worse, "seeds": [0, 1]}, contrast).startswith("**Not reproduced (opposite")
    same = repro_stats.paired_bootstrap(base, base, 500)
    assert same["diff"] == 0 and "includes 0" in contrast_statement({"pooled": same, "seeds": [0]}, contrast)
    assert contrast_statement(None, contrast).startswith("**Not determined:**")
    # the power goal: the statement says how wide the CI is and whether that is narrow enough
    half = (p["ci"][1] - p["ci"][0]) / 2
    narrow = contrast_statement({"pooled": p, "seeds": [0, 1]}, {**contrast, "max_half_width": half + 0.01})
    assert f"CI half-width ±{100 * half:.1f} points, within the power goal of ±" in narrow
    wide = contrast_statement({"pooled": p, "seeds": [0, 1]}, {**contrast, "max_half_width": half / 2})
    assert "wider than the power goal" in wide
    with pytest.raises(ValueError, match="different dialogues"):
        repro_stats.paired_bootstrap(base, [{"a": (1, 4)}, {"a": (1, 4)}], 10)


def test_likely_reasons_follow_the_numbers():
    rows = [{"condition": c, "seed": 0, "test_set": "target_test", "jga": j, "wer": w}
            for c, j, w in (("S", 0.10, 0.95), ("S+T", 0.12, 0.97), ("Cascade", 0.02, None))]
    results = {"rows": rows, "contrast": {"baseline": "S", "treatment": "S+T", "test_set": "target_test"},
               "trivial": {"target_test": {"jga": 0.11}},
               "asr": {"asr/target_test": {"test_set": "target_test", "wer": 0.2, "asr": {"model": "tiny.en"}}}}
    lines = likely_reasons(results, [{"step": 40, "wer": 0.97}, {"step": 80, "wer": 0.9}], ["Cascade"])
    assert "best dev WER was 90.0 % (step 80 of 80)" in lines[0]
    assert "WER 95.0–97.0 %" in lines[1]
    assert lines[2].startswith("1 of 3 runs score above the empty-state floor on target_test (11.0 %")
    assert "tiny.en transcripts (WER 20.0 %)" in lines[3] and "too small" in lines[3]
    # a phase 1 that learned, usable transcripts and runs above the floor: none of those lines
    rows[0].update(jga=0.4, wer=0.3)
    rows[1].update(jga=0.5, wer=0.3)
    good = likely_reasons(results, [{"step": 40, "wer": 0.3}], [])
    assert good == ["2 of 3 runs score above the empty-state floor on target_test (11.0 %; best run 50.0 %)."]


def test_splits_are_seeded_disjoint_and_test_first():
    class D:
        def __init__(self, i):
            self.id = f"d{i:03d}"

    src, tgt = [D(i) for i in range(30)], [D(100 + i) for i in range(30)]
    sizes = repro_config.Sizes(source_train=5, source_dev=2, source_test=4, target_train=None, target_dev=0,
                        target_test=6)
    a = prepare.assign_splits(src, tgt, sizes, 0)
    assert [len(a[k]) for k in repro_config.SPLITS] == [5, 2, 4, 24, 0, 6]
    assert a == prepare.assign_splits(list(reversed(src)), tgt, sizes, 0)  # input order does not matter
    bigger = prepare.assign_splits(src, tgt, sizes.model_copy(update={"source_train": 20}), 0)
    assert bigger["source_test"] == a["source_test"] and bigger["source_dev"] == a["source_dev"]
    assert prepare.assign_splits(src, tgt, sizes, 1)["source_test"] != a["source_test"]
    with pytest.raises(repro_config.ReproError, match="need"):
        prepare.assign_splits(src, tgt, sizes.model_copy(update={"source_train": 30}), 0)


def test_eval_from_draws_dev_and_test_from_those_dialogues_only():
    class D:
        def __init__(self, i):
            self.id = f"d{i:03d}"

    src, tgt = [D(i) for i in range(30)], [D(100 + i) for i in range(30)]
    sizes = repro_config.Sizes(source_train=None, source_dev=2, source_test=4, target_train=None, target_dev=1,
                               target_test=6)
    eval_ids = {f"d{i:03d}" for i in [*range(0, 30, 3), *range(100, 130, 2)]}
    a = prepare.assign_splits(src, tgt, sizes, 0, eval_ids)
    held = [d.id for k in ("source_dev", "source_test", "target_dev", "target_test") for d in a[k]]
    assert len(held) == 13 and set(held) <= eval_ids
    train = [d.id for k in ("source_train", "target_train") for d in a[k]]
    assert len(train) == 60 - 13 and not set(train) & set(held)  # the other eval-eligible ones train
    assert set(train) & eval_ids
    with pytest.raises(repro_config.ReproError, match="in eval_from"):
        prepare.assign_splits(src, tgt, sizes.model_copy(update={"source_test": 9}), 0, eval_ids)
    with pytest.raises(ValueError, match="eval_from"):
        repro_config.Prepare(paths=["a.json"], eval_from=["b.json"], source_domains=["x"], target_domains=["y"],
                             dialogues=sizes, render={"train": {"voices": ["en-us"]}, "heldout": {"voices": ["en-gb"]},
                                                      "augment": {"voices": ["en-us+klatt"]}})


def test_the_pool_is_every_path_and_ids_are_unique_across_them():
    from types import SimpleNamespace

    pool, origin = prepare._load_pool(SimpleNamespace(corpus="demo", paths=["demo"]))
    assert pool and len({d.id for d in pool}) == len(pool) and set(origin.values()) == {"demo"}
    with pytest.raises(repro_config.ReproError, match=f"dialogue id '{pool[0].id}' is in both demo and demo"):
        prepare._load_pool(SimpleNamespace(corpus="demo", paths=["demo", "demo"]))


def test_dialogue_counts_add_up_to_the_file_score(tmp_path):
    from spokentod.dst.score.scorer import score_files

    refs, preds = [], []
    states = [{"train": {"day": "monday"}}, {"train": {"day": "monday", "destination": "cambridge"}},
              {"taxi": {"leaveat": "10:00"}}]
    for d in range(3):
        for k, st in enumerate(states[: d + 1]):
            refs.append({"dialogue_id": f"d{d}", "turn": 2 * k, "state": st})
            guess = st if (d + k) % 2 == 0 else {"train": {"day": "friday"}}
            preds.append({"dialogue_id": f"d{d}", "turn": 2 * k, "state": guess})
    preds = preds[:-1]  # a missing turn counts wrong
    r, p = tmp_path / "refs.jsonl", tmp_path / "preds.jsonl"
    r.write_text("".join(json.dumps(x) + "\n" for x in refs))
    p.write_text("".join(json.dumps(x) + "\n" for x in preds))
    per = repro_stats.dialogue_counts(p, r, "multiwoz")
    whole = score_files(p, r, ontology="multiwoz")
    jga = {d: c["jga"] for d, c in per.items()}
    assert sum(n for _, n in jga.values()) == whole["turns"] == 6
    assert sum(x for x, _ in jga.values()) / 6 == pytest.approx(whole["jga"]) and 0 < whole["jga"] < 1
    assert jga == {"d0": (1, 1), "d1": (1, 2), "d2": (1, 3)}
    # pooled over dialogues, the per-dialogue F1 counts give the file's micro F1s (denominators differ
    # between the sides, unlike JGA's turns)
    empty = {d: (0, c["slot_f1"][1]) for d, c in per.items()}
    for m in ("slot_f1", "slot_key_f1"):
        tab = {d: c[m] for d, c in per.items()}
        assert repro_stats.paired_bootstrap([tab], [tab], 0)["treatment_value"] == pytest.approx(whole[m])
        assert 0 < whole[m] < 1
    b = repro_stats.paired_bootstrap([empty], [{d: c["slot_f1"] for d, c in per.items()}], 200)
    assert b["diff"] == pytest.approx(whole["slot_f1"]) and b["base_value"] == 0 and b["ci"][1] > 0

def test_setup_names_the_shipped_adapter_as_phase_1():
    from spokentod.adapter import adapter_dir
    from spokentod.studies.dst_repro.report import _phase1_line

    meta = json.loads((adapter_dir("embedded") / "adapter.json").read_text())
    line = _phase1_line({"speech_adapter": "embedded"}, [0])
    assert "starts phase 2 from the speech adapter `embedded`" in line
    assert f"dev WER {pct(meta['trained']['dev_wer_at_selection'])} %" in line
    assert f"{meta['trained']['step']} steps" in line
    assert {"soft": "read as soft tokens", "ctc": "read as CTC segments"}[meta["config"]["compress"]] in line
    own = _phase1_line({"phase1": {"steps": 120, "batch_size": 8, "lr": 0.002}}, [0])
    assert own.startswith("Phase 1 (once, shared, seed 0): 120 steps, batch 8, lr 0.002")


def test_the_report_names_the_adapter_the_study_ran_with_not_a_later_export(tmp_path):
    from spokentod.adapter import adapter_dir
    from spokentod.studies.dst_repro.report import _adapter_meta

    shipped = json.loads((adapter_dir("embedded") / "adapter.json").read_text())
    pinned = {"files": {"adapter.json": layout.file_hash(adapter_dir("embedded") / "adapter.json")}}
    layout.write_json(tmp_path / layout.ADAPTER_PIN, pinned)
    assert _adapter_meta("embedded", tmp_path) == shipped  # the package still holds the study's adapter
    # a later export replaced it: without the study's copy its figures are unknown, with it they are the copy's
    layout.write_json(tmp_path / layout.ADAPTER_PIN, {"files": {"adapter.json": "another"}})
    assert _adapter_meta("embedded", tmp_path) == {}
    copy = {"trained": {"step": 7, "train_minutes": 1.0, "dev_wer_at_selection": 0.5}}
    layout.write_json(tmp_path / layout.ADAPTER_SIDECAR, copy)
    assert _adapter_meta("embedded", tmp_path) == copy
    from spokentod.studies.dst_repro.report import _phase1_line

    assert "7 steps on 1.0 min of CPU; dev WER 50.0 % at selection" in _phase1_line(
        {"speech_adapter": "embedded"}, [0], tmp_path)


def test_in_domain_floor_check_needs_disjoint_cis():
    floor = {"jga": 0.02, "jga_ci": [0.01, 0.04]}
    assert above_floor({"jga": 0.10, "jga_ci": [0.05, 0.15]}, floor) == "yes"
    assert above_floor({"jga": 0.06, "jga_ci": [0.03, 0.09]}, floor) == "above, CIs overlap"
    assert above_floor({"jga": 0.01, "jga_ci": [0.0, 0.03]}, floor) == "no"
    assert above_floor(None, floor) == "–"
    rows = [{"condition": c, "seed": 0, "test_set": "source_test", "jga": j, "jga_ci": ci}
            for c, j, ci in (("S", 0.10, [0.05, 0.15]), ("S+T", 0.06, [0.03, 0.09]))]
    rows.append({"condition": "S", "seed": 0, "test_set": "target_test", "jga": 0.0, "jga_ci": [0, 0]})
    results = {"rows": rows, "trivial": {"source_test": floor},
               "contrast": {"baseline": "S", "treatment": "S+T", "test_set": "target_test", "in_domain": "source_test"}}
    line = floor_statement(results)
    assert line.startswith("**In-domain check failed:** 1 of 2 runs") and "S+T/seed0 (above, CIs overlap)" in line
    rows[1]["jga_ci"] = [0.05, 0.08]
    assert floor_statement(results).startswith("**In-domain check passed:** 2 of 2 runs")


def test_a_study_refuses_to_resume_from_another_speech_adapter(tmp_path):
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter.safetensors").write_bytes(b"weights v1")
    (adapter / "adapter.json").write_text('{"trained": {"step": 3}}')
    cfg = repro_config.parse_repro(yaml.safe_load(CONFIG.read_text()), "r.yaml", [f"base.speech_adapter={adapter}"])
    out = tmp_path / "out"
    out.mkdir()
    stages._check_adapter(cfg, out)  # the first run pins the adapter's files
    pin = json.loads((out / "speech_adapter.json").read_text())
    assert pin["speech_adapter"] == str(adapter) and set(pin["files"]) == {"adapter.json", "adapter.safetensors"}
    assert json.loads((out / layout.ADAPTER_SIDECAR).read_text()) == {"trained": {"step": 3}}  # for the report
    stages._check_adapter(cfg, out)  # the same files: resumes
    (adapter / "adapter.safetensors").write_bytes(b"weights v2")  # a re-trained adapter replaced it
    with pytest.raises(repro_config.ReproError, match="another speech adapter"):
        stages._check_adapter(cfg, out)


def test_a_stopped_stage_keeps_its_time_up_to_the_last_finished_unit(tmp_path):
    # A session's end kills the study without unwinding: the stage's `finally` never runs.
    t = layout.Timings(tmp_path)
    t.stage("train", "first").__enter__()
    t.unit("train:S/seed0", 1.5)
    on_disk = json.loads((tmp_path / "timings.json").read_text())
    (killed,) = on_disk["invocations"]
    assert not killed["finished"] and killed["wall_s"] >= 0 and on_disk["stages"]["train"] == killed["wall_s"]
    # the resumed invocation adds its own time to what the stopped one kept
    again = layout.Timings(tmp_path)
    with again.stage("train", "resumed"):
        again.unit("train:S/seed1", 2.0)
    done = json.loads((tmp_path / "timings.json").read_text())
    walls = [x["wall_s"] for x in done["invocations"]]
    assert done["stages"]["train"] == pytest.approx(sum(walls)) and done["invocations"][1]["finished"]
    assert done["units"] == {"train:S/seed0": 1.5, "train:S/seed1": 2.0}


def test_a_unit_cut_off_by_a_kill_keeps_its_time_so_far(tmp_path):
    # A session's end kills a training run mid-unit: the heartbeat has written the unit's time so far, and the
    # next invocation adds it to that unit's total (the resumed run counts both parts) and lists it as cut off.
    t = layout.Timings(tmp_path, heartbeat_s=0.05)
    stage, unit = t.stage("train", "first"), t.timed("train:S/seed0")  # held: never exited, as if killed
    stage.__enter__()
    unit.__enter__()
    time.sleep(0.3)
    on_disk = json.loads((tmp_path / "timings.json").read_text())
    cut = on_disk["running_unit"]
    assert cut["key"] == "train:S/seed0" and cut["seconds"] >= 0.1
    assert on_disk["stages"]["train"] >= 0.1  # the stage's time so far, without any finished unit
    t.stopped.set()  # the killed process writes no more
    time.sleep(0.1)
    again = layout.Timings(tmp_path)
    with again.stage("train", "resumed"), again.timed("train:S/seed0"):
        pass
    done = json.loads((tmp_path / "timings.json").read_text())
    assert "running_unit" not in done and done["cut_off"]["train:S/seed0"] >= cut["seconds"]
    assert done["units"]["train:S/seed0"] >= done["cut_off"]["train:S/seed0"]


def test_a_step_logged_twice_by_a_resume_counts_once(tmp_path):
    log = tmp_path / "log.jsonl"
    log.write_text("".join(json.dumps({"step": s, "seconds": float(s)}) + "\n" for s in (1, 2, 2, 3)))
    assert [r["step"] for r in layout.step_log(log)] == [1, 2, 3]  # the wall-time table sums these
