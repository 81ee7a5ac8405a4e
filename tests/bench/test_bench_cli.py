"""Config validation, run.json metadata (no secrets), resume checks, `bench status` and `bench merge`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from spokentod.bench.config import ConfigError, load_config
from spokentod.bench.run import parse_shard, run_bench
from spokentod.cli import app
from spokentod.errors import BenchError
from spokentod.provenance import scrub
from spokentod.rundir.merge import merge_runs
from spokentod.rundir.store import read_records
from spokentod.systems.base import SystemReply

REPO = Path(__file__).resolve().parents[2]


class Echo:
    """A plug-in System ("module:Class" type) answering "<name> reply to <dialogue>#<t>"."""

    speaks = False

    def __init__(self, name: str, cfg: dict, audio_root=None):
        self.name, self.cfg = name, cfg

    def identity(self) -> dict:
        return {"type": "recording", "params": self.cfg.get("params", {})}

    def respond(self, context, user_turn, audio_out=None) -> SystemReply:
        return SystemReply(text=f"{self.name} reply to {context.dialogue_id}#{user_turn.index}")


PLUGIN = f"{__name__}:Echo"


def _cfg(tmp_path: Path, **over) -> dict:
    cfg = {"dataset": {"corpus": "demo", "limit": 5}, "out": str(tmp_path / "run"), "cache": {"enabled": False},
           "systems": {"rec": {"type": PLUGIN}}}
    cfg.update(over)
    return cfg


def _cli(*args: str):
    return CliRunner().invoke(app, ["bench", *map(str, args)], terminal_width=200)


# ---------------------------------------------------------------- config


@pytest.mark.parametrize("patch, field", [
    ({"systems": {"t": {"type": "text", "llm": {"name": "smollm2"}, "history": "mine"}}}, "systems.t.history"),
    ({"systems": {"t": {"type": "text"}}}, "systems.t"),
    ({"systems": {"t": {"type": "text", "llm": "smollm2", "params": {"max_tokenz": 8}}}}, "systems.t.params"),
    ({"systems": {"t": {"type": "text", "llm": "smollm2", "voicee": "x"}}}, "systems.t"),
    ({"systems": {"t": {"type": "cascad"}}}, "systems.t.type"),
    ({"systems": {"bad/name": {"type": "text", "llm": "smollm2"}}}, "systems"),
    ({"concurrency": {"workers": 0}}, "concurrency.workers"),
    ({"dataset": {"corpus": "demo", "manifest": "x.jsonl"}}, "dataset"),
    ({"dataset": {"corpus": "demo", "sample": {"n": 0}}}, "dataset.sample.n"),
    ({"seeds": [1, 1]}, "seeds"),
    ({"outt": "x"}, "outt"),
    ({"systems": {"t": {"type": "text", "llm": "smollm2", "history": ["gold", "mine"]}}}, "systems"),
    ({"systems": {"t": {"type": "text", "llm": "smollm2", "history": []}}}, "systems"),
    ({"systems": {"t": {"type": "text", "llm": "smollm2", "history": ["self", "self"]}}}, "systems"),
])
def test_config_errors_name_the_yaml_field(tmp_path, patch, field):
    cfg = _cfg(tmp_path)
    cfg.update(patch)
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(cfg))
    with pytest.raises(ConfigError) as e:
        load_config(path)
    assert f"{path}: field '{field}'" in str(e.value)
    result = _cli("run", path)
    assert result.exit_code == 2 and f"field '{field}'" in result.output


@pytest.mark.parametrize("systems, clash", [
    ({"t": {"type": PLUGIN, "history": ["gold", "self"]}, "t-self": {"type": PLUGIN}}, "'t-self'"),
    ({"t-gold": {"type": PLUGIN}, "t": {"type": PLUGIN, "history": ["gold", "self"]}}, "'t-gold'"),
])
def test_a_history_list_that_clashes_with_a_system_name_is_refused(tmp_path, systems, clash):
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(_cfg(tmp_path, systems=systems)))
    with pytest.raises(ConfigError) as e:
        load_config(path)
    assert "t.history" in str(e.value) and clash in str(e.value) and "already configured" in str(e.value)


def test_a_history_list_expands_into_one_system_per_mode(tmp_path):
    path = tmp_path / "pair.yaml"
    path.write_text(yaml.safe_dump(_cfg(tmp_path, systems={
        "t": {"type": "text", "llm": "smollm2", "history": ["gold", "self"], "params": {"max_tokens": 8}},
        "one": {"type": "text", "llm": "smollm2", "history": ["self"]}}), sort_keys=False))
    cfg = load_config(path)
    assert list(cfg.systems) == ["t-gold", "t-self", "one"]
    assert [cfg.systems[n].history for n in cfg.systems] == ["gold", "self", "self"]
    gold, own = (cfg.systems[n].model_dump() for n in ("t-gold", "t-self"))
    assert {k for k in gold if gold[k] != own[k]} == {"history"}
    paired = load_config(REPO / "configs" / "demo_paired.yaml")
    assert list(paired.systems) == ["cascade-gold", "cascade-self", "text-gold", "text-self"]


def test_demo_config_is_valid():
    cfg = load_config(REPO / "configs" / "demo.yaml")
    assert set(cfg.systems) == {"cascade", "e2e", "text"}
    # one LLM for all three, and one TTS voice for the two that speak: the comparison is controlled
    assert cfg.systems["e2e"].audiolm["tts"] == cfg.systems["cascade"].tts
    assert cfg.systems["cascade"].asr == {"name": "whisper-ct2", "model": "tiny.en"}
    assert cfg.systems["text"].params["max_tokens"] == 48
    assert cfg.dataset.corpus == "demo"


def test_set_overrides_a_config_field_on_the_command_line(tmp_path):
    """`bench run --set` reaches any field (here a system's params and the output directory) and the run
    records the overridden config; a bad override is a usage error that names it."""
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(_cfg(tmp_path)))
    out = tmp_path / "other"
    result = _cli("run", path, "--no-progress", "--limit", "1", "--set", "systems.rec.params.max_tokens=7",
                  "--set", f"out={out}")
    assert result.exit_code == 0, result.output
    meta = json.loads((out / "run.json").read_text())
    assert meta["config"]["systems"]["rec"]["params"] == {"max_tokens": 7}
    assert not (tmp_path / "run").exists()  # the file's `out` was overridden
    bad = _cli("run", path, "--set", "systems.rec.params")
    assert bad.exit_code == 2 and "systems.rec.params" in bad.output and "key=value" in bad.output
    with pytest.raises(ConfigError, match="systems.nope.type"):
        run_bench(path, overrides=["systems.nope.type=cascad"])


def test_shard_syntax():
    assert parse_shard("2/4") == (2, 4)
    for bad in ("0/4", "5/4", "2", "a/b"):
        with pytest.raises(ValueError):
            parse_shard(bad)
    assert _cli("run", "x.yaml", "--shard", "3/2").exit_code == 2


# ---------------------------------------------------------------- run.json


def test_run_json_has_provenance_and_no_secrets(tmp_path, monkeypatch):
    monkeypatch.setenv("MY_SERVICE_TOKEN", "tok-9f8e7d6c5b4a")
    cfg = _cfg(tmp_path)
    cfg["systems"]["rec"].update(api_key="sk-live-123456", headers={"Authorization": "Bearer abcdef123"},
                                 note="uses tok-9f8e7d6c5b4a inline", params={"max_tokens": 8})
    run_bench(cfg, progress=False)
    text = (tmp_path / "run/run.json").read_text()
    for secret in ("sk-live-123456", "abcdef123", "tok-9f8e7d6c5b4a"):
        assert secret not in text
    meta = json.loads(text)
    assert meta["config"]["systems"]["rec"]["params"] == {"max_tokens": 8}  # max_tokens is not a secret
    assert meta["spokentod_version"] and meta["host"]["cpu_count"] and meta["host"]["python"]
    assert "torch" in meta["host"] and meta["git"] is None or len(meta["git"]["commit"]) == 40
    assert meta["systems"]["rec"]["type"] == "recording"
    assert meta["started"] <= meta["ended"] and meta["sessions"][0]["status"] == "finished"
    assert meta["counts"]["rec"]["done"] == meta["counts"]["rec"]["planned"] > 0


def test_scrub_keeps_token_counts():
    assert scrub({"max_tokens": 3, "api_key_env": "X", "apiKey": "k", "nested": [{"password": "p"}]}, []) == \
        {"max_tokens": 3, "api_key_env": "<redacted>", "apiKey": "<redacted>", "nested": [{"password": "<redacted>"}]}


def test_resume_with_another_protocol_is_refused(tmp_path):
    run_bench(_cfg(tmp_path, dataset={"corpus": "demo", "limit": 2}), progress=False)
    more = run_bench(_cfg(tmp_path, dataset={"corpus": "demo", "limit": 3}), progress=False)  # a limit may grow
    assert more.counts["rec"]["ran"] == more.counts["rec"]["planned"] - more.total("done") + more.total("ran")
    changed = _cfg(tmp_path)
    changed["systems"]["rec"]["params"] = {"max_tokens": 9}
    with pytest.raises(BenchError, match="systems.rec.params"):
        run_bench(changed, progress=False)


def test_a_finished_run_reruns_nothing(tmp_path):
    first = run_bench(_cfg(tmp_path), progress=False)
    again = run_bench(_cfg(tmp_path), progress=False)
    assert first.total("ran") == first.total("planned") and again.total("ran") == 0
    recs, _ = read_records(tmp_path / "run/results/rec.jsonl")
    assert len(recs) == first.total("planned")


# ---------------------------------------------------------------- status and merge


def _shards(tmp_path: Path, n: int = 3) -> list[Path]:
    dirs = []
    for i in range(1, n + 1):
        run_bench(_cfg(tmp_path), shard=(i, n), out=tmp_path / f"s{i}", progress=False)
        dirs.append(tmp_path / f"s{i}")
    return dirs


def test_merge_joins_shards_into_one_run(tmp_path):
    whole = run_bench(_cfg(tmp_path), out=tmp_path / "whole", progress=False)
    dirs = _shards(tmp_path)
    result = _cli("merge", *dirs, "--out", tmp_path / "merged")
    assert result.exit_code == 0, result.output
    merged, _ = read_records(tmp_path / "merged/results/rec.jsonl")
    ref, _ = read_records(tmp_path / "whole/results/rec.jsonl")
    key = lambda r: (r["dialogue_id"], r["turn"], r["text"])
    assert sorted(map(key, merged)) == sorted(map(key, ref)) and len(merged) == whole.total("planned")
    status = _cli("status", tmp_path / "merged")
    assert status.exit_code == 0 and "rec" in status.output
    row = next(line for line in status.output.splitlines() if "│ rec" in line)
    n = str(whole.total("planned"))
    # planned, done, ok, errors, missing, retried, outside plan
    assert [c.strip() for c in row.split("│")[1:-1]] == ["rec", n, n, n, "0", "0", "0", "0"]


def test_merge_reports_gaps_and_missing_shards(tmp_path):
    dirs = _shards(tmp_path)
    path = next(dirs[0].glob("results/*.jsonl"))
    lines = path.read_text().splitlines(keepends=True)
    path.write_text("".join(lines[1:]))  # lose one record
    result = _cli("merge", dirs[0], dirs[2], "--out", tmp_path / "m1")
    assert result.exit_code == 0  # gaps are reported, not conflicts
    assert "gap: rec: 1 turn(s) missing" in result.output and "shard 2/3 is in none of the inputs" in result.output


def test_merge_conflicting_duplicates_exit_1_and_write_nothing(tmp_path):
    dirs = _shards(tmp_path)
    rep = merge_runs([dirs[0], dirs[0]], tmp_path / "dup")  # the same shard twice: identical duplicates
    assert rep.ok and rep.duplicates
    path = next(dirs[1].glob("results/*.jsonl"))
    recs, _ = read_records(path)
    recs[0]["text"] = "something else"
    other = tmp_path / "other"
    (other / "results").mkdir(parents=True)
    (other / "results" / path.name).write_text(json.dumps(recs[0]) + "\n")
    result = _cli("merge", *dirs, other, "--out", tmp_path / "bad")
    assert result.exit_code == 1
    assert "conflict:" in result.output and "different replies" in result.output
    assert not (tmp_path / "bad").exists()


def test_merge_refuses_runs_of_different_configs(tmp_path):
    a = run_bench(_cfg(tmp_path), out=tmp_path / "a", progress=False)
    cfg = _cfg(tmp_path)
    cfg["systems"]["rec"]["params"] = {"temperature": 0.5}
    run_bench(cfg, out=tmp_path / "b", progress=False)
    result = _cli("merge", a.out, tmp_path / "b", "--out", tmp_path / "m")
    assert result.exit_code == 1 and "different configurations" in result.output


def test_status_of_a_missing_dir_is_an_error(tmp_path):
    result = _cli("status", tmp_path / "nope")
    assert result.exit_code == 1 and "not a run directory" in result.output
