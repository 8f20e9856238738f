"""Kafka-range backfills against a real broker and real Delta tables: exactly once, resumable, beside the stream."""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
import threading
import time

import pytest
from pyspark.sql import functions as F

from pipelines.errors import PipelineError
from pipelines.io import writers
from pipelines.io.binding import list_offsets
from pipelines.io.writers import table_version
from pipelines.jobs.backfill import ledger_rows, run_backfill, status_table
from pipelines.jobs.ingest import IngestJob, run_ingest
from pipelines.paths import REPO_ROOT
from pipelines.tools.producer import produce
from pipelines.tools.verify import verify

pytestmark = pytest.mark.integration
TABLES = ("bronze", "quarantine", "silver", "audit")


def send(cfg, n, seed, ledger=None, rate=0.0):
    return produce(cfg.kafka.bootstrap_servers, cfg.kafka.topics[0], n, partitions=3, seed=seed,
                   duplicate_fraction=0.08, malformed_fraction=0.03, late_fraction=0.05, rate=rate,
                   ledger_path=ledger, id_prefix=f"b{seed}", progress=False)


def conflict_retries() -> int:
    return writers.conflict_retries_total


def versions(spark, cfg):
    return {t: table_version(spark, cfg.table_path(t)) for t in TABLES}


def test_same_range_twice_adds_nothing_and_a_range_by_time_lands_once(spark, make_cfg, tmp_path):
    cfg = make_cfg(backfill={"progress": False})
    ledger = tmp_path / "ledger.jsonl"
    first = send(cfg, 1200, seed=41, ledger=ledger)
    time.sleep(0.3)  # Kafka's CreateTime and now() read the same clock: a gap either side suffices
    middle = dt.datetime.now(dt.UTC)
    time.sleep(0.3)
    second = send(cfg, 600, seed=42, ledger=ledger)

    # The first records only (by time), in chunks of at most 700.
    s1 = run_backfill(spark, cfg, end=middle, chunk_records=700, out=None)
    assert (s1.records, s1.chunks, s1.chunks_run, s1.chunks_done_before) == (first.sent, 2, 2, 0)
    assert s1.bronze_inserted == first.sent and s1.silver_inserted == first.unique_valid
    assert s1.quarantined == first.malformed_total
    rows = ledger_rows(spark, cfg.table_path("backfills"), s1.run_id)
    assert [(r["chunk"], r["status"]) for r in sorted(rows, key=lambda r: r["chunk"])] == [(0, "done"), (1, "done")]
    assert sum(r["rows_read"] for r in rows) == first.sent

    # The same range again: every chunk was done; nothing read, nothing written.
    before = versions(spark, cfg)
    again = run_backfill(spark, cfg, end=middle, chunk_records=700, out=None)
    assert (again.run_id, again.chunks_done_before, again.chunks_run, again.rows_read) == (s1.run_id, 2, 0, 0)
    assert "added nothing" in again.line()
    assert versions(spark, cfg) == before

    # The whole topic, overlapping the first range: only the rest is new, and it all adds up.
    whole = run_backfill(spark, cfg, chunk_records=2000, out=None)
    assert whole.run_id != s1.run_id and whole.rows_read == first.sent + second.sent
    assert whole.bronze_inserted == second.sent and whole.silver_inserted == second.unique_valid
    assert whole.duplicates_in_table >= first.unique_valid  # the first range's messages, found in silver
    report = verify(spark, cfg, ledger_files=[ledger])
    assert report.ok, report.table()
    assert report.totals["silver_rows"] == first.unique_valid + second.unique_valid

    # The stream over the same topic afterwards adds nothing either (keyed on coordinates / message_id).
    summary = run_ingest(spark, cfg, available_now=True)
    assert summary.rows_read == first.sent + second.sent
    assert summary.silver_inserted == summary.quarantined == 0
    assert {t: spark.read.format("delta").load(cfg.table_path(t)).count() for t in ("bronze", "silver")} == {
        "bronze": report.totals["bronze_rows"], "silver": report.totals["silver_rows"]}
    assert "chunks done" in status_table(ledger_rows(spark, cfg.table_path("backfills")))


def test_a_killed_backfill_resumes_without_redoing_finished_chunks(spark, make_cfg, tmp_path):
    cfg = make_cfg(backfill={"progress": False})
    ledger = tmp_path / "ledger.jsonl"
    stats = send(cfg, 1800, seed=43, ledger=ledger)
    env = {**os.environ, "PIPELINES__APP__DATA_DIR": cfg.data_dir, "PIPELINES__APP__JARS_DIR": str(cfg.jars_dir),
           "PIPELINES__KAFKA__BOOTSTRAP_SERVERS": cfg.kafka.bootstrap_servers,
           "PIPELINES__KAFKA__TOPICS": f'["{cfg.kafka.topics[0]}"]', "PIPELINES__BACKFILL__PROGRESS": "false",
           # SIGKILL in chunk 1, right after its silver commit (before its audit and ledger rows).
           "PIPELINES_FAULT_POINT": "after_silver_commit", "PIPELINES_FAULT_MIN_BATCH": "1"}
    res = subprocess.run([sys.executable, "-m", "pipelines", "--conf", str(REPO_ROOT / "conf" / "local.yaml"),
                          "backfill", "--chunk-records", "600"], env=env, cwd=REPO_ROOT, capture_output=True,
                         text=True, timeout=600)
    assert res.returncode == -9, res.stdout[-2000:] + res.stderr[-2000:]
    assert "[fault] injected crash at after_silver_commit" in res.stderr
    done = [r["chunk"] for r in ledger_rows(spark, cfg.table_path("backfills")) if r["status"] == "done"]
    assert done == [0]

    run_id = ledger_rows(spark, cfg.table_path("backfills"))[0]["run_id"]

    # The stream starts in between (a scheduled run): it must not take the killed chunk for one of
    # its own abandoned batches and write its audit row from a partial set of commits.
    streamed = run_ingest(spark, cfg, available_now=True)
    assert streamed.rows_read == stats.sent

    job = IngestJob.from_config(cfg, app_id=run_id, out=None)
    resumed = run_backfill(spark, cfg, chunk_records=600, job=job, out=None)
    assert (resumed.run_id, resumed.chunks, resumed.chunks_done_before, resumed.chunks_run) == (run_id, 3, 1, 2)
    # Chunk 1 had reached silver: its re-run is skipped there by Delta (same transaction identity)
    # and checked against the commit.
    assert [r.batch_id for r in job.results] == [1, 2] and job.results[0].replayed
    report = verify(spark, cfg, ledger_files=[ledger])  # audit sums add up to the tables, among others
    assert report.ok, report.table()
    assert report.totals["silver_rows"] == stats.unique_valid and report.totals["bronze_rows"] == stats.sent
    audit = spark.read.format("delta").load(cfg.table_path("audit")).filter(F.col("app_id") == run_id)
    assert sorted(r.batch_id for r in audit.collect()) == [0, 1, 2]
    assert all("recovered" not in r.query_name for r in audit.collect())
    # A different chunk size is another run (its chunk numbers hold other offsets): it reads the
    # range again and adds nothing.
    other = run_backfill(spark, cfg, chunk_records=1800, out=None)
    assert other.run_id != run_id and other.chunks_run == 1 and other.silver_inserted == other.bronze_inserted == 0
    attempts = {r["chunk"]: r["attempts"] for r in ledger_rows(spark, cfg.table_path("backfills"), run_id)}
    assert attempts == {0: 1, 1: 1, 2: 1}


def test_a_backfill_beside_the_live_stream_stays_exactly_once(spark, make_cfg, tmp_path):
    cfg = make_cfg(backfill={"progress": False}, kafka={"max_offsets_per_trigger": 300})
    ledger = tmp_path / "ledger.jsonl"
    early = send(cfg, 2000, seed=44, ledger=ledger)
    # The backfill takes the second half of these while the stream starts on the first half (and
    # reaches the second half later): both write the same tables at once, over the same records.
    ends = list_offsets(spark, cfg, "latest")[cfg.kafka.topics[0]]
    second_half = {cfg.kafka.topics[0]: {p: (end // 2, end) for p, end in ends.items()}}
    stop, outcome = threading.Event(), {}
    job = IngestJob.from_config(cfg, out=None)

    def stream():
        try:
            outcome["summary"] = run_ingest(spark, cfg, available_now=False, stop_event=stop, job=job)
        except Exception as e:  # noqa: BLE001 - reported by the assertions below
            outcome["error"] = e

    runner = threading.Thread(target=stream)
    runner.start()
    sender = threading.Thread(target=lambda: outcome.update(late=send(cfg, 600, seed=45, ledger=ledger, rate=150)))
    try:
        deadline = time.monotonic() + 240
        while not job.results and time.monotonic() < deadline and runner.is_alive():
            time.sleep(0.2)
        # The stream is still working through the same early records while the backfill writes them.
        backfill = run_backfill(spark, cfg, offsets=second_half, chunk_records=500, out=None)
        batches_during = len(job.results)
        sender.start()  # and records keep coming after it: the stream must still take them
        sender.join(timeout=120)
        while (sum(r.rows_read for r in job.results) < early.sent + (outcome["late"].sent if "late" in outcome else 0)
               and time.monotonic() < deadline and runner.is_alive()):
            time.sleep(0.5)
    finally:
        stop.set()
        runner.join(timeout=300)
    assert "error" not in outcome, outcome.get("error")
    assert "late" in outcome, "the sender thread failed"
    assert backfill.rows_read == sum(e - e // 2 for e in ends.values())
    assert len(job.results) > batches_during  # the stream kept going
    # They overlapped: each wrote some of the early messages, and one found the other's rows.
    stream_early = sum(r.silver_inserted or 0 for r in job.results[:batches_during])
    assert backfill.silver_inserted > 0 and stream_early > 0
    assert backfill.duplicates_in_table + sum(r.duplicates_in_table or 0 for r in job.results) > 0
    print(f"conflict retries in this process so far: {conflict_retries()}")
    report = verify(spark, cfg, ledger_files=[ledger])
    assert report.ok, report.table()
    assert report.totals["silver_rows"] == early.unique_valid + outcome["late"].unique_valid
    # Every message in silver once, from one writer or the other.
    stream_silver = sum(r.silver_inserted or 0 for r in job.results)
    assert stream_silver + backfill.silver_inserted == report.totals["silver_rows"]


def test_bad_ranges_are_refused_with_the_reason(spark, make_cfg):
    cfg = make_cfg(backfill={"progress": False})
    send(cfg, 30, seed=46)
    with pytest.raises(PipelineError, match="ends at 999, but the topic's latest stable offset"):
        run_backfill(spark, cfg, offsets={cfg.kafka.topics[0]: {0: (0, 999)}}, out=None)
    with pytest.raises(PipelineError, match="has no partition 7"):
        run_backfill(spark, cfg, offsets={cfg.kafka.topics[0]: {7: (0, 1)}}, out=None)
    with pytest.raises(PipelineError, match="either --from/--to or --offsets"):
        run_backfill(spark, cfg, offsets={cfg.kafka.topics[0]: {0: (0, 1)}}, end=dt.datetime.now(dt.UTC), out=None)
