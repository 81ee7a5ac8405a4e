"""read_yaml: the one YAML reader of the bench, recipe and repro configs; errors name the file."""

from __future__ import annotations

import pytest

from spokentod.bench.config import ConfigError, load_config
from spokentod.dst.train.recipe import RecipeError, load_recipe
from spokentod.studies.dst_repro.config import ReproError, load_repro


@pytest.mark.parametrize(("load", "error", "what"), [(load_config, ConfigError, "config "),
                                                      (load_recipe, RecipeError, "recipe "),
                                                      (load_repro, ReproError, "")])
def test_missing_and_invalid_files_name_the_file(tmp_path, load, error, what):
    missing = tmp_path / "nope.yaml"
    with pytest.raises(error, match=f"cannot read {what}{missing}"):
        load(missing)
    bad = tmp_path / "bad.yaml"
    bad.write_text("a: [1, 2\n")
    with pytest.raises(error, match=f"{bad}: not valid YAML"):
        load(bad)
