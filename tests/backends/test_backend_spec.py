"""One parser for a backend named on a command line: name, JSON object, or .json/.yaml file."""

from __future__ import annotations

import pytest

from spokentod.backends.spec import parse_backend_spec


def test_names_json_and_files(tmp_path):
    assert parse_backend_spec("smollm2") == {"name": "smollm2"}
    assert parse_backend_spec(' {"name": "openai", "model": "m"} ') == {"name": "openai", "model": "m"}
    assert parse_backend_spec({"name": "x"}) == {"name": "x"} and parse_backend_spec(None) is None
    (tmp_path / "judge.yaml").write_text("name: openai\nmodel: gpt\n")
    assert parse_backend_spec(tmp_path / "judge.yaml") == {"name": "openai", "model": "gpt"}


@pytest.mark.parametrize(("text", "why"), [
    ('{"name": ', "not valid JSON"),
    ('{"model": "m"}', "must be an object with a 'name'"),
    ("missing.yaml", "backend spec file missing.yaml does not exist"),  # never taken for a backend name
])
def test_bad_specs_say_why(text, why, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ValueError, match=why):
        parse_backend_spec(text)
