"""`bench/run.py --quick`: the benchmark harness runs end to end (no timing assertions)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.slow]
REPO = Path(__file__).resolve().parents[2]


def test_bench_quick_mode_writes_tables_and_plots(tmp_path):
    res = subprocess.run([sys.executable, str(REPO / "bench" / "run.py"), "--quick", "--out", str(tmp_path)],
                         capture_output=True, text=True, timeout=1200, cwd=REPO)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-3000:]
    data = json.loads((tmp_path / "results.json").read_text())
    assert set(data["drain"]) == {"raw_consumer", "spark_append", "delta_sink", "exactly_once"}
    for name, r in data["drain"].items():
        assert r["records"] >= 3000 * 0.98, name  # every pipeline drained the preloaded topic
        assert r["records_per_s"] > 0 and r["cpu_s"] > 0
    assert len(data["sweep"]["points"]) >= 3
    assert [f["load"] for f in data["freshness"]] == ["25%", "50%", "75%"]
    assert all(f["rows"] > 0 and f["p99_s"] >= f["p50_s"] > 0 for f in data["freshness"])
    assert all(r["inserted"] == r["expected_inserted"] for r in data["merge"])  # the MERGE is keyed
    md = (tmp_path / "results.md").read_text()
    assert "Drain throughput" in md and data["machine"]["commit"] in md
    for png in ("throughput.png", "batch_time.png", "merge_scaling.png"):
        assert (tmp_path / png).stat().st_size > 1000
