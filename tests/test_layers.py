"""The evaluation stack imports downwards only: `metrics` and `analysis` read run directories through
`rundir` and never import `bench` (which produces runs), so each can be used, tested and replaced alone."""

from __future__ import annotations

import json
import subprocess
import sys


def test_metrics_and_analysis_do_not_import_bench():
    code = ("import json, sys\n"
            "import spokentod.metrics.score, spokentod.metrics.registry, spokentod.analysis.report\n"
            "import spokentod.analysis.aggregate, spokentod.analysis.plots\n"
            "print(json.dumps(sorted(m for m in sys.modules if m.startswith('spokentod.'))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False)
    assert out.returncode == 0, out.stderr
    loaded = json.loads(out.stdout.strip().splitlines()[-1])
    assert "spokentod.rundir.store" in loaded and "spokentod.metrics.score" in loaded
    assert not [m for m in loaded if m == "spokentod.bench" or m.startswith("spokentod.bench.")], loaded
