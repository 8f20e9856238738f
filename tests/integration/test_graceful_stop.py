"""SIGTERM while streaming: the current batch finishes, the query stops, nothing is half-committed."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pipelines.jobs.ingest import run_ingest
from pipelines.tools.producer import produce
from pipelines.tools.verify import verify

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[2]


def test_sigterm_stops_the_stream_cleanly(spark, make_cfg, tmp_path, job_env):
    cfg = make_cfg(kafka={"max_offsets_per_trigger": 300})
    topic = cfg.kafka.topics[0]
    produce(cfg.kafka.bootstrap_servers, topic, 1500, seed=21, id_prefix="gs", progress=False)
    t0 = time.monotonic()
    env = job_env(cfg, 300, {"spark.ui.enabled": "false"})
    proc = subprocess.Popen([sys.executable, "-m", "pipelines", "ingest"], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lines: list[str] = []  # the job's progress lines are logged to stderr; its summary is printed to stdout
    try:
        deadline = time.monotonic() + 240
        assert proc.stderr is not None
        while time.monotonic() < deadline:
            line = proc.stderr.readline()
            if not line:
                break
            lines.append(line)
            if line.startswith("[ingest] batch 1:"):
                proc.send_signal(signal.SIGTERM)
                break
        out, rest = proc.communicate(timeout=180)
    finally:
        if proc.poll() is None:
            proc.kill()
    err = "".join(lines) + rest
    assert any(ln.startswith("[ingest] batch 1:") for ln in lines), err + out
    assert proc.returncode == 0, err[-2000:]
    assert "finishing the current batch" in err
    summary = json.loads(out[out.index("{"):])
    assert summary["stopped_by_signal"] is True
    assert 2 <= summary["batches"] < 5  # stopped early: 1500 records at 300 per batch would be 5

    # Graceful means: the last batch Spark planned (offsets/) has its commit marker (commits/),
    # and no table holds a write of a batch beyond it (each committed batch has its audit row).
    def ids(sub: str) -> list[int]:
        return sorted(int(p.name) for p in Path(cfg.checkpoint_path, sub).glob("[0-9]*"))

    planned, committed = ids("offsets"), ids("commits")
    assert planned and planned == committed, (planned, committed)
    audit = spark.read.format("delta").load(cfg.table_path("audit"))
    assert sorted(r.batch_id for r in audit.select("batch_id").collect()) == committed
    bronze_batches = {r.batch_id for r in spark.read.format("delta").load(cfg.table_path("bronze"))
                      .select("batch_id").distinct().collect()}
    assert max(bronze_batches) == committed[-1]
    print(f"stream stopped after {time.monotonic() - t0:.0f}s")
    # Resume: the rest is ingested exactly once.
    run_ingest(spark, cfg, available_now=True)
    report = verify(spark, cfg)
    assert report.ok, report.table()
    assert report.totals["bronze_rows"] == 1500
    print(f"resumed and verified after {time.monotonic() - t0:.0f}s")
