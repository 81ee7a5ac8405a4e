"""spokentod.config_file: the one YAML reader of the bench, recipe and repro configs (errors name the file),
and the one loader of the recipe and repro configs: --set overrides (list items too) and validation into
their pydantic models with one error format."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import BaseModel, ConfigDict, Field

from spokentod.bench.config import ConfigError, load_config
from spokentod.config_file import apply_overrides, load_yaml_config, override_path, validate
from spokentod.dst.train.recipe import RecipeError, load_recipe
from spokentod.errors import SpokenTODError
from spokentod.studies.dst_repro.config import ReproError, load_repro

REPO = Path(__file__).resolve().parents[1]


class Bad(SpokenTODError, ValueError):
    pass


class Loss(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str
    weight: float = Field(1.0, ge=0)


class Cfg(BaseModel):
    model_config = ConfigDict(extra="forbid")
    steps: int = 1
    losses: list[Loss] = Field(default_factory=list)
    extra: dict = Field(default_factory=dict)


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
    bad.write_text("- a\n- b\n")
    with pytest.raises(error, match=f"{bad}: expected a mapping"):
        load(bad)


def test_override_paths():
    assert override_path("a.b[0].c") == ["a", "b", 0, "c"]
    assert override_path("a.b.0.c") == ["a", "b", "0", "c"]  # a number part: list position or mapping key
    assert override_path("m[1][-1]") == ["m", 1, -1]
    for bad in ("a..b", "a[x]", "a]", ""):
        with pytest.raises(ValueError, match="dotted path"):
            override_path(bad)


def test_overrides_reach_list_items_and_parse_yaml_values():
    data = {"steps": 1, "losses": [{"name": "a"}, {"name": "b", "weight": 2}], "extra": {"0": "x"}}
    out = apply_overrides(data, ["steps=5", "losses[1].weight=8", "losses.0.weight=0.5", "extra.0=y",
                                 "new.deep.key=[1, two]", "losses[-1].name=null"], Bad)
    assert out == {"steps": 5, "losses": [{"name": "a", "weight": 0.5}, {"name": None, "weight": 8}],
                   "extra": {"0": "y"}, "new": {"deep": {"key": [1, "two"]}}}
    assert data["losses"][1] == {"name": "b", "weight": 2} and "new" not in data  # the input is left alone


@pytest.mark.parametrize(("item", "message"), [
    ("steps", "expected key=value"), ("=3", "expected key=value"),
    ("losses[5].weight=1", "out of range"), ("losses.name=x", "losses is a list: pick an item with \\[n\\]"),
    ("extra[0]=1", "extra is not a list"), ("steps.x=1", "steps is a value \\(int\\), not a mapping or a list"),
    ("steps=[1", "--set 'steps=\\[1'"),
])
def test_bad_overrides_name_the_override(item, message):
    data = {"steps": 1, "losses": [{"name": "a"}], "extra": {}}
    with pytest.raises(Bad, match=message) as e:
        apply_overrides(data, [item], Bad)
    assert str(e.value).startswith(f"--set {item!r}")


def test_validation_errors_have_one_format(tmp_path):
    with pytest.raises(Bad) as e:
        validate(Cfg, {"steps": "x", "losses": [{"name": "a", "weight": -1}], "nope": 1}, "c.yaml", Bad, "demo")
    assert str(e.value).splitlines() == [
        "bad demo config:",
        "  c.yaml: field 'steps': Input should be a valid integer, unable to parse string as an integer",
        "  c.yaml: field 'losses.0.weight': Input should be greater than or equal to 0",
        "  c.yaml: field 'nope': Extra inputs are not permitted"]
    path = tmp_path / "c.yaml"
    path.write_text("steps: 2\nlosses: [{name: a}, {name: b}]\n")
    cfg = load_yaml_config(path, Cfg, Bad, "demo", ["losses[1].weight=3"])
    assert cfg.steps == 2 and [x.weight for x in cfg.losses] == [1.0, 3.0]
    with pytest.raises(Bad, match=f"(?s)bad demo config:.*{path}: field 'losses.0.weight'"):
        load_yaml_config(path, Cfg, Bad, "demo", ["losses[0].weight=-2"])


def test_recipe_and_repro_configs_take_list_overrides():
    recipe = load_recipe(REPO / "configs/dst/cpu_small.yaml", ["phase2.losses[1].weight=8", "phase2.steps=7"])
    assert recipe.phase2.losses[1].weight == 8 and recipe.phase2.steps == 7
    with pytest.raises(RecipeError, match=r"(?s)bad recipe config:.*cpu_small.yaml: field 'phase2.losses.0.weight'"):
        load_recipe(REPO / "configs/dst/cpu_small.yaml", ["phase2.losses[0].weight=-1"])
    repro = load_repro(REPO / "configs/dst/repro_multiwoz.yaml", ["conditions.S.losses[0].weight=2"])
    assert repro.conditions["S"].losses[0]["weight"] == 2
    with pytest.raises(ReproError, match="pick an item"):
        load_repro(REPO / "configs/dst/repro_multiwoz.yaml", ["conditions.S.losses.name=x"])


@pytest.mark.parametrize("path", sorted((REPO / "configs").glob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_bench_config_validates(path):
    assert load_config(path).systems


@pytest.mark.parametrize("path", sorted((REPO / "configs/adapter").glob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_adapter_recipe_validates(path):
    from spokentod.adapter.train import load_recipe as load_adapter_recipe

    recipe = load_adapter_recipe(path)
    assert recipe.train.steps > 0 and recipe.model.llm
