"""A YAML config file → a pydantic model: read the file (errors name it), apply ``--set`` overrides, validate
with one error format (spokentod.errors.validation_message). Shared by the DST recipe, the DST reproduction's
config and the speech adapter; the bench config, the server config and backend spec files read their files
here too.

    cfg = load_yaml_config("configs/dst/cpu_small.yaml", RecipeConfig, RecipeError, "recipe",
                           ["phase2.steps=50", "phase2.losses[1].weight=8"])

An override is ``key=value``: the key is a dotted path whose parts name mapping keys, and a list item is
picked by ``[n]`` (``losses[0].weight``) or by a number as its own part (``losses.0.weight``); a missing
mapping on the way is created. The value is read as a YAML scalar or flow collection (``8`` is an int,
``[en-us]`` a list, ``null`` None), as on the command line of ``spokentod dst train --set``.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from spokentod.errors import validation_message

M = TypeVar("M", bound=BaseModel)

_PIECE = re.compile(r"([^\[\]]*)((?:\[-?\d+\])*)")
_NUMBER = re.compile(r"-?\d+")


def read_yaml(path: str | Path, error: type[Exception], what: str = "config") -> Any:
    """The parsed YAML at `path`; an unreadable file or invalid YAML raises `error` naming the file.
    `what` names the kind of file in the "cannot read" message ("" for none)."""
    path = Path(path)
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as e:
        raise error(f"cannot read {what + ' ' if what else ''}{path}: {e.strerror or e}") from None
    except yaml.YAMLError as e:
        raise error(f"{path}: not valid YAML: {e}") from None


def read_mapping(path: str | Path, error: type[Exception], what: str = "config") -> dict:
    """read_yaml for a config file, whose top level must be a mapping (an empty file is {})."""
    data = read_yaml(path, error, what)
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise error(f"{path}: expected a mapping of settings at the top level, got a {type(data).__name__}")
    return data


def override_path(key: str) -> list[str | int]:
    """``a.b[0].c`` → ``["a", "b", 0, "c"]``. A part written as a plain number (``a.b.0``) stays a string
    here: it indexes a list, or names a mapping key, depending on what it meets."""
    out: list[str | int] = []
    for piece in key.split("."):
        m = _PIECE.fullmatch(piece)
        if m is None or not (m[1] or m[2]):
            raise ValueError(f"{key!r} is not a dotted path (a.b[0].c)")
        if m[1]:
            out.append(m[1])
        out += [int(i) for i in re.findall(r"-?\d+", m[2])]
    return out


def _step(node: Any, part: str | int, where: str) -> int | str:
    """The key or position `part` takes in `node`; a list needs a number, a mapping takes a name."""
    if isinstance(node, list):
        if isinstance(part, int) or _NUMBER.fullmatch(part):
            return int(part)
        raise TypeError(f"{where} is a list: pick an item with [n]")
    if isinstance(node, dict):
        if isinstance(part, int):
            raise TypeError(f"{where} is not a list")
        return part
    raise TypeError(f"{where} is a value ({type(node).__name__}), not a mapping or a list")


def set_override(tree: dict, key: str, value: Any) -> None:
    """Set `value` at the dotted path `key` in `tree` (see override_path); missing mappings are created."""
    parts = override_path(key)
    node: Any = tree
    where = "<root>"
    for i, part in enumerate(parts):
        k = _step(node, part, where)
        if i == len(parts) - 1:
            node[k] = value  # a position past a list's end raises IndexError
        elif isinstance(node, dict):
            node = node.setdefault(k, {})
        else:
            node = node[k]
        where = f"{where}.{part}" if where != "<root>" else str(part)


def apply_overrides(data: Any, overrides: Iterable[str], error: type[Exception]) -> dict:
    """A deep copy of the mapping `data` with every ``key=value`` override set; a bad one raises `error`."""
    if data is not None and not isinstance(data, dict):
        raise error(f"expected a mapping of settings at the top level, got a {type(data).__name__}")
    out = copy.deepcopy(dict(data or {}))
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise error(f"--set {item!r}: expected key=value")
        try:
            set_override(out, key, yaml.safe_load(raw))
        except (IndexError, KeyError, TypeError, ValueError, yaml.YAMLError) as e:
            raise error(f"--set {item!r}: {e}") from None
    return out


def validate(model: type[M], data: Any, where: str, error: type[Exception], what: str) -> M:
    """`data` as a `model`; a ValidationError becomes `error` with one line per problem:
    ``bad <what> config:`` then ``<where>: field '<dotted field>': <message>`` (spokentod.errors' format)."""
    try:
        return model.model_validate(data)
    except ValidationError as e:
        raise error(f"bad {what} config:\n  " + validation_message(e, where).replace("\n", "\n  ")) from None


def load_yaml_config(path: str | Path, model: type[M], error: type[Exception], what: str,
                     overrides: Iterable[str] = ()) -> M:
    """Read, override, validate: the whole way from a config file to its model (errors name the file)."""
    data = apply_overrides(read_mapping(path, error, what), overrides, error)
    return validate(model, data, str(path), error, what)
