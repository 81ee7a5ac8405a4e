"""DistillMOS: a second MOS predictor beside DNSMOS (`distillmos` 0.9.1, MIT; Stahl & Gamper 2025, a 4.1M-param
CNN + transformer distilled from an XLS-R speech-quality model; weights bundled in the wheel).

Installed with `--no-deps` next to `xls-r-sqa` 0.1.0 (`--no-deps`): both declare torchaudio, which cannot
live beside torch 2.13 here. The model code does not need it: `distillmos/sqa.py` imports torchaudio at its
top but uses it only in its command-line helpers (file loading and resampling), and the package's
`__init__` imports that file. So `import distillmos` fails, while the model class itself is plain torch
plus `xls_r_sqa.config` / `xls_r_sqa.sqa_model`, which import cleanly. We load the package's own `sqa.py`
from its file, unchanged except that the one top-level `import torchaudio` statement is removed from its
syntax tree before compiling; the module is never put in `sys.modules`, and nothing stands in for
torchaudio. Before that, the tree is checked: if torchaudio is used anywhere but the CLI helpers (a newer
release), loading fails with that reason instead of breaking later. Weights are loaded by us (strict, so
a layout change is an error) from the package's `weights/distill_mos_v7.pt`.

Input: the reply audio at 16 kHz; the model crops/pads to 7.68 s windows (hop 1 s) and averages. Output
1–5 (higher is better). Silent audio is missing, as for DNSMOS.
"""

from __future__ import annotations

import ast
import importlib.util
import threading
import types
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from spokentod.metrics.audio import _is_silent, reply_audio
from spokentod.metrics.registry import (
    MetricGroup,
    MetricResult,
    Missing,
    Output,
    ScoredReply,
    register,
    sha256_file,
)

WEIGHTS = "weights/distill_mos_v7.pt"
_CLI_ONLY = {"_infer_file_list", "command_line_inference"}  # where sqa.py may use torchaudio
INSTALL = "pip install --no-deps distillmos==0.9.1 xls-r-sqa==0.1.0"


class DistillMOSUnavailable(RuntimeError):
    pass


def package_dir() -> Path:
    # find_spec on a top-level package locates it without running its __init__ (which imports torchaudio)
    spec = importlib.util.find_spec("distillmos")
    if spec is None or not spec.submodule_search_locations:
        raise DistillMOSUnavailable(f"distillmos is not installed ({INSTALL})")
    return Path(next(iter(spec.submodule_search_locations)))


def _without_torchaudio(tree: ast.Module, path: Path) -> ast.Module:
    """The module's tree minus its top-level `import torchaudio`, after checking that only the CLI helpers
    use that name."""
    users = {node.name for node in tree.body if isinstance(node, ast.FunctionDef | ast.ClassDef)
             and any(isinstance(n, ast.Name) and n.id == "torchaudio" for n in ast.walk(node))}
    loose = [node.lineno for node in tree.body if not isinstance(node, ast.FunctionDef | ast.ClassDef | ast.Import)
             and any(isinstance(n, ast.Name) and n.id == "torchaudio" for n in ast.walk(node))]
    if users - _CLI_ONLY or loose:
        raise DistillMOSUnavailable(f"{path} uses torchaudio outside its CLI ({sorted(users - _CLI_ONLY)}, lines "
                                    f"{loose}): this distillmos release needs torchaudio; pin distillmos==0.9.1")
    body = [node for node in tree.body
            if not (isinstance(node, ast.Import) and [a.name for a in node.names] == ["torchaudio"])]
    if len(body) != len(tree.body) - 1:
        raise DistillMOSUnavailable(f"{path}: expected exactly one top-level `import torchaudio`")
    return ast.Module(body=body, type_ignores=tree.type_ignores)


@lru_cache(maxsize=1)
def sqa_module() -> types.ModuleType:
    """distillmos/sqa.py, executed without its torchaudio import (see the module docstring)."""
    path = package_dir() / "sqa.py"
    if importlib.util.find_spec("xls_r_sqa") is None:
        raise DistillMOSUnavailable(f"xls-r-sqa is not installed ({INSTALL})")
    tree = _without_torchaudio(ast.parse(path.read_text(encoding="utf-8"), str(path)), path)
    module = types.ModuleType("spokentod_distillmos_sqa")
    module.__file__ = str(path)  # the module finds its weights next to itself
    exec(compile(tree, str(path), "exec"), module.__dict__)  # noqa: S102 - the installed package's own code
    return module


class DistillMOS:
    """`predict(samples_16k) -> float` (1–5). One model per process; calls are serialized."""

    def __init__(self) -> None:
        import torch

        sqa = sqa_module()
        self.weights = package_dir() / WEIGHTS
        self.model = sqa.ConvTransformerSQAModel(load_weights=False)  # its own loader prints to stdout
        state = torch.load(self.weights, map_location="cpu", weights_only=True)
        self.model.load_state_dict(state["model"], strict=True)
        self.model.eval()
        self._lock = threading.Lock()

    def predict(self, x16k: np.ndarray) -> float:
        import torch

        x = torch.from_numpy(np.ascontiguousarray(x16k, dtype=np.float32))[None, :]
        with self._lock, torch.inference_mode():
            return float(self.model(x).reshape(-1)[0])


@lru_cache(maxsize=1)
def model() -> DistillMOS:
    return DistillMOS()


def identity() -> dict[str, Any]:
    from importlib.metadata import PackageNotFoundError, version

    try:
        weights = package_dir() / WEIGHTS
        return {"distillmos": version("distillmos"), "xls_r_sqa": version("xls-r-sqa"),
                "weights_sha256": sha256_file(weights)[:16] if weights.is_file() else None}
    except (DistillMOSUnavailable, PackageNotFoundError) as e:
        return {"distillmos": None, "why": str(e)}


def _distillmos(reply: ScoredReply, res: Any) -> MetricResult:
    x = reply_audio(reply)
    if _is_silent(x):
        raise Missing("silent audio")
    try:
        m = model()
    except DistillMOSUnavailable as e:
        raise Missing(str(e), cacheable=False) from None  # installing it later recomputes
    return MetricResult({"distillmos": m.predict(x)})


register(MetricGroup("distillmos", "1", (Output("distillmos", "DistillMOS", "audio quality", +1),), _distillmos,
                     needs=("audio",), spoken_only=True, doc="DistillMOS (distillmos 0.9.1) of the reply audio",
                     identity=identity))
