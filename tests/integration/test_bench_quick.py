"""`python -m bench --quick`: the benchmark harness runs end to end and measures what it says (no timing targets)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from bench import drain

pytestmark = [pytest.mark.integration, pytest.mark.slow]
REPO = Path(__file__).resolve().parents[2]


# The pipelines that share our batch function's shape; the other baselines (raw consumer, Spark
# ceiling, Delta sink, single append) run in `make bench` only, to keep `make test` short.
PIPELINES = ("at_least_once", "exactly_once")


def test_bench_quick_mode_measures_the_pipelines(tmp_path):
    out = tmp_path / "bench"
    res = subprocess.run([sys.executable, "-m", "bench", "--quick", "--sections", "drain,sweep,freshness",
                          "--pipelines", ",".join(PIPELINES), "--out", str(out)],
                         capture_output=True, text=True, timeout=840, cwd=REPO)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-4000:]
    data = json.loads((out / "results.json").read_text())
    preloaded = data["sizes"]["drain_records"]

    # 1. drain: every pipeline (each in its own worker) drained the preloaded topic
    pipelines = data["drain"]["pipelines"]
    assert set(pipelines) == set(PIPELINES) and set(PIPELINES) <= set(drain.PIPELINES)
    for name, r in pipelines.items():
        assert r["records"] >= preloaded * 0.98, name
        assert r["records_per_s"] > 0 and r["cpu_s"] > 0 and r["mb_per_s"] > 0, name
    alo = data["drain"]["runs"]["at_least_once"][0]
    assert alo["tables"]["bronze"] == alo["records"]  # plain appends: every record once in bronze
    assert 0.85 * alo["records"] <= alo["tables"]["silver"] + alo["tables"]["quarantine"] <= alo["records"]
    ours = data["drain"]["runs"]["exactly_once"][0]
    assert ours["tables"]["bronze"] == ours["records"] == preloaded
    assert "at_least_once" in data["drain"]["ratios"]

    # 2. sweep: a fit over several batches, and the stage breakdown of the current code
    sweep = data["sweep"]
    assert len(sweep["points"]) >= 3 and {"a_s", "b_s_per_m"} <= set(sweep["fit"])
    after = sweep["stages"]["after"]["stages_ms"]
    assert after["stats"] > 0
    assert after.get("writes", 0) > 0 or (after.get("bronze", 0) > 0 and after.get("silver", 0) > 0)
    if "audit" in after:  # newer code writes the audit row in the background: no audit stage then
        assert after["audit"] > 0

    # 3. freshness: rows mapped to the silver commits that made them visible
    assert data["freshness"]
    for f in data["freshness"]:
        assert f["rows"] > 0 and f["unmatched_rows"] == 0 and f["p99_s"] >= f["p50_s"] > 0

    md = (out / "results.md").read_text()
    assert "Drain throughput" in md and data["machine"]["commit"] in md and "Where the fixed cost goes" in md
    for png in ("throughput.png", "batch_time.png", "stages.png"):
        assert (out / png).stat().st_size > 1000
