"""Operations against a running stream: metrics scraped from Spark's endpoint, ``status``, ``maintain``."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest

from pipelines.errors import ConfigError
from pipelines.jobs.gold import run_gold
from pipelines.jobs.ingest import run_ingest
from pipelines.jobs.maintain import check_retention, maintain
from pipelines.local.kafka import free_port
from pipelines.tools.console import render
from pipelines.tools.producer import produce
from pipelines.tools.status import collect_status, render_status
from pipelines.tools.verify import verify

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[2]
OURS = "metrics_pipelines_driver_AccumulatorSource_ingest_"


def scrape(port: int, path: str = "/metrics/prometheus") -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as r:
        return str(r.read().decode())


def value(text: str, name: str) -> float | None:
    m = re.search(rf"^{re.escape(name)}_Value{{[^}}]*}} (\S+)$", text, re.MULTILINE)
    return float(m.group(1)) if m else None


def test_metrics_status_and_maintain_while_the_stream_runs(spark, make_cfg, job_env):
    cfg = make_cfg(kafka={"max_offsets_per_trigger": 250}, maintenance={"compact_min_small_files": 2})
    topic = cfg.kafka.topics[0]
    sent = produce(cfg.kafka.bootstrap_servers, topic, 2500, seed=5, id_prefix="ops", progress=False)
    ui = free_port()
    env = job_env(cfg, 250, {"spark.ui.enabled": "true", "spark.ui.port": str(ui)})
    proc = subprocess.Popen([sys.executable, "-m", "pipelines", "ingest"], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    err: list[str] = []
    reader = threading.Thread(target=lambda: err.extend(iter(proc.stderr.readline, "")), daemon=True)  # type: ignore[union-attr]
    reader.start()
    try:
        # 1. Metrics, scraped from Spark's own Prometheus endpoint while batches run.
        text, deadline = "", time.monotonic() + 240
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                text = scrape(ui)
            except OSError:
                text = ""
            if (value(text, OURS + "batches") or 0) >= 3 and value(text, OURS + "lag") is not None:
                break
            time.sleep(1)
        assert (value(text, OURS + "batches") or 0) >= 2, "".join(err)[-3000:] + text[-2000:]
        assert (value(text, OURS + "rows_read") or 0) >= 500
        assert (value(text, OURS + "silver_inserted") or 0) > 0
        assert value(text, OURS + "last_batch_duration_ms") is not None
        assert value(text, OURS + f"lag_{topic.replace('-', '_')}_0") is not None
        assert "metrics_pipelines_driver_spark_streaming_ingest_inputRate_total_Value" in text  # Spark's own
        assert "metrics_executor_" in scrape(ui, "/metrics/executors/prometheus")
        assert any("[metrics] Spark UI http://" in ln and f":{ui}" in ln for ln in err)

        # 2. status while it runs: the checkpoint's last batch, lag per partition, the tables.
        report = collect_status(spark, cfg)
        assert report.ingest.started and report.ingest.last_batch is not None
        assert {p.partition for p in report.lag} == {0, 1, 2}
        assert all(p.latest is not None and p.committed is not None and p.committed <= p.latest for p in report.lag)
        silver = next(t for t in report.tables if t.name == "silver")
        assert silver.exists and silver.files >= 1 and silver.version is not None
        shown = render(*render_status(report))
        assert "ingest lag (records)" in shown and "silver" in shown
        assert json.loads(json.dumps(report.as_dict()))["ingest"]["last_batch"] == report.ingest.last_batch

        # 3. maintain while it runs: compaction races the stream's MERGEs; both retry, nothing lost.
        batch_before = collect_status(spark, cfg).ingest.last_batch
        done = maintain(spark, cfg, only=["bronze", "silver", "audit"])
        assert done.ok, done
        # it really overlapped the stream: the job still ran and committed batches meanwhile
        assert proc.poll() is None and (collect_status(spark, cfg).ingest.last_batch or 0) > (batch_before or 0)
        by = {u.table: u for u in done.tables}
        assert by["silver"].compacted and by["silver"].files_after is not None
        assert "OPTIMIZE" in {r["operation"] for r in spark.sql(f"DESCRIBE HISTORY delta.`{cfg.table_path('silver')}`")
                              .collect()}
        assert by["silver"].vacuumed_files == 0  # a 168-hour retention deletes nothing this young

        # 4. Let it drain, then stop it.
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and proc.poll() is None:
            if collect_status(spark, cfg).total_lag == 0:
                break
            time.sleep(2)
        assert collect_status(spark, cfg).total_lag == 0
        final = scrape(ui)
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=180)
    finally:
        if proc.poll() is None:
            proc.kill()
        reader.join(timeout=10)
    assert proc.returncode == 0, "".join(err)[-3000:]
    summary = json.loads(out[out.index("{"):])
    assert value(final, OURS + "rows_read") == summary["rows_read"] == sent.sent
    assert value(final, OURS + "silver_inserted") == summary["silver_inserted"]
    report = verify(spark, cfg)
    assert report.ok, report.table()
    silver_rows = spark.read.format("delta").load(cfg.table_path("silver")).count()
    assert silver_rows == sent.unique_valid


def test_vacuum_waits_for_the_gold_stream(spark, make_cfg):
    cfg = make_cfg()
    topic = cfg.kafka.topics[0]
    produce(cfg.kafka.bootstrap_servers, topic, 400, seed=6, id_prefix="vg", progress=False)
    run_ingest(spark, cfg, available_now=True)
    run_gold(spark, cfg, available_now=True)
    produce(cfg.kafka.bootstrap_servers, topic, 300, seed=7, id_prefix="vh", progress=False)
    run_ingest(spark, cfg, available_now=True)  # silver moves on; gold has not read it yet
    assert (collect_status(spark, cfg).gold_silver_versions_behind or 0) >= 1
    zero = cfg.with_overrides(maintenance={"vacuum_retention_hours": 0, "compact_min_small_files": 2})
    with pytest.raises(ConfigError, match=r"maintenance.vacuum_retention_hours is 0 \(from .*local.yaml"):
        check_retention(zero, spark)
    with pytest.raises(ConfigError, match=r"vacuum_retention_hours is 400 .*deletedFileRetentionDuration"):
        check_retention(cfg.with_overrides(maintenance={"vacuum_retention_hours": 400}), spark)
    spark.conf.set("spark.databricks.delta.retentionDurationCheck.enabled", "false")
    try:
        first = maintain(spark, zero, only=["silver", "bronze"])
        behind = {u.table: u for u in first.tables}
        assert behind["silver"].compacted
        assert behind["silver"].vacuumed_files is None and not first.ok
        assert "reads silver version" in str(behind["silver"].skipped), first
        assert (behind["bronze"].vacuumed_files or 0) > 0  # nobody streams from bronze: vacuumed
        # Gold catches up, but it changes nothing after a compaction alone: its tables still record
        # (and verify still reads) the silver version before it, so silver stays unvacuumed.
        run_gold(spark, cfg, available_now=True)
        still = {u.table: u for u in maintain(spark, zero, only=["silver"]).tables}
        assert "as of its last commit" in str(still["silver"].skipped), still
        assert verify(spark, cfg).ok
        # New data moves gold past the compaction: now silver's old files are nobody's.
        produce(cfg.kafka.bootstrap_servers, topic, 200, seed=8, id_prefix="vi", progress=False)
        run_ingest(spark, cfg, available_now=True)
        run_gold(spark, cfg, available_now=True)
        caught_up = maintain(spark, zero, only=["silver"], compact=False)  # a new compaction would hold it again
        silver = caught_up.tables[0]
        assert caught_up.ok and silver.skipped is None and (silver.vacuumed_files or 0) > 0, caught_up
    finally:
        spark.conf.unset("spark.databricks.delta.retentionDurationCheck.enabled")
    report = verify(spark, cfg)
    assert report.ok, report.table()
