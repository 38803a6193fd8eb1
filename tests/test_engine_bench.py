"""The GPU benchmark's code runs at tiny size on a CPU, so it cannot rot before it meets a GPU."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_bench_runs_tiny_and_writes_its_table_as_json(tmp_path):
    out = tmp_path / "engine.json"
    completed = subprocess.run(
        [sys.executable, "bench/engine_gpu.py", "--tiny", "--expressions", "1,3", "--warmup", "0", "--repeats", "1", "--out", str(out)],
        cwd=ROOT, env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"}, capture_output=True, text=True, timeout=120,
    )
    assert completed.returncode == 0, completed.stderr
    result = json.loads(out.read_text())
    assert [row["expressions"] for row in result["rows"]] == [1, 3]
    assert all(row["speedup"] > 0 for row in result["rows"])
    assert result["image_tokens"] > 0 and result["cached_reprompt_ms"] > 0
    assert "speedup" in completed.stdout


def test_engine_package_imports_without_transformers_or_the_rest_of_mlcdseg_but_its_errors():
    code = (
        "import sys, mlcdseg.engine; "
        "bad = [m for m in sys.modules if m.startswith('transformers') or (m.startswith('mlcdseg.') and not m.startswith(('mlcdseg.engine', 'mlcdseg.errors')))]; "
        "print(bad); sys.exit(1 if bad else 0)"
    )
    completed = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env={"PYTHONPATH": str(ROOT)}, capture_output=True, text=True)
    assert completed.returncode == 0, completed.stdout + completed.stderr
