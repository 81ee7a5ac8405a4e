"""`spokentod dst score` through typer's CliRunner on spokentod.dst.cli.app."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from spokentod.dst.cli import app

REFS = [{"dialogue_id": "d1", "turn": 0, "state": {"hotel": {"area": "centre"}},
         "transcript": "in the centre"},
        {"dialogue_id": "d1", "turn": 2, "state": {"hotel": {"area": "centre", "pricerange": "cheap"}}}]


def files(tmp_path, preds):
    p, r = tmp_path / "p.jsonl", tmp_path / "r.jsonl"
    p.write_text("".join(json.dumps(x) + "\n" for x in preds) + "{broken\n")
    r.write_text("".join(json.dumps(x) + "\n" for x in REFS))
    return ["score", "--predictions", str(p), "--references", str(r)]


def test_json_output(tmp_path):
    preds = [dict(REFS[0], transcript="in the center")]
    res = CliRunner().invoke(app, files(tmp_path, preds) + ["--json", "--bootstrap", "50"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout.strip().splitlines()[-1])
    assert out["jga"] == 0.5 and out["missing_turns"] == 1 and out["malformed_records"] == 1
    assert out["ontology"]["name"] == "multiwoz" and out["ontology"]["test_values_excluded"] is True
    assert len(out["jga_ci"]) == 2 and out["wer"] > 0
    assert "malformed prediction" in res.stderr


def test_table_output_and_errors(tmp_path):
    res = CliRunner().invoke(app, files(tmp_path, REFS) + ["--ontology", "none"])
    assert res.exit_code == 0 and "JGA exact" in res.stdout and "ontology: none" in res.stdout
    res = CliRunner().invoke(app, files(tmp_path, REFS) + ["--fuzzy-threshold", "0.9"])
    assert res.exit_code == 1 and "0–100" in res.stderr
    nope = str(tmp_path / "nope")
    res = CliRunner().invoke(app, ["score", "--predictions", nope, "--references", nope])
    assert res.exit_code == 1 and "does not exist" in res.stderr
