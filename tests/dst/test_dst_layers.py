"""The studies sit on top of the library: no module of spokentod outside studies/ imports them, except the
CLI layer (cli.py modules and cli/ packages), which wires a study to its command."""

from __future__ import annotations

import ast
from pathlib import Path

import spokentod

SRC = Path(spokentod.__file__).parent


def _imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


def test_the_library_never_imports_a_study():
    offenders = {}
    for path in sorted(SRC.rglob("*.py")):
        rel = path.relative_to(SRC)
        if rel.parts[0] == "studies" or path.name == "cli.py" or "cli" in rel.parts[:-1]:
            continue
        bad = sorted(n for n in _imports(path) if n == "spokentod.studies" or n.startswith("spokentod.studies."))
        if bad:
            offenders[str(rel)] = bad
    assert not offenders
    assert (SRC / "studies" / "dst_repro").is_dir()  # the walk above did see the tree it guards
