"""`spokentod serve --config FILE`: read and validated like every config (spokentod.config_file); errors name
the file and the field."""

from __future__ import annotations

import pytest
import typer

from spokentod.serve.cli import load_config


def test_config_sections_as_written(tmp_path):
    path = tmp_path / "serve.yaml"
    path.write_text("llm: {name: smollm2, id: tiny-llm}\ntts: espeak\nlimits: {max_body_bytes: 1000}\ncache: true\n")
    assert load_config(str(path)) == {"llm": {"name": "smollm2", "id": "tiny-llm"}, "tts": "espeak",
                                      "limits": {"max_body_bytes": 1000}, "cache": True}
    path.write_text("")
    assert load_config(str(path)) == {} and load_config(None) is None


@pytest.mark.parametrize(("text", "needle"), [
    ("llmm: {name: smollm2}\n", "serve.yaml: field 'llmm': Extra inputs are not permitted"),
    ("limits: 5\n", "serve.yaml: field 'limits'"),
    ("- llm\n", "serve.yaml: expected a mapping of settings at the top level, got a list"),
    ("llm: [1\n", "serve.yaml: not valid YAML"),
])
def test_bad_configs_name_the_file_and_field(tmp_path, text, needle):
    path = tmp_path / "serve.yaml"
    path.write_text(text)
    with pytest.raises(typer.BadParameter) as e:
        load_config(str(path))
    assert needle in str(e.value) and e.value.param_hint == "--config"
    with pytest.raises(typer.BadParameter, match=f"cannot read config {tmp_path / 'nope.yaml'}"):
        load_config(str(tmp_path / "nope.yaml"))
