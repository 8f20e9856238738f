"""Exactly-once ingestion against a real broker and real Delta tables."""

from __future__ import annotations

import json
import shutil
from collections import defaultdict
from pathlib import Path

import pytest
from pyspark.sql import functions as F

from pipelines.domain import schema as S
from pipelines.domain.schema import EventSpec
from pipelines.io.tables import ALL_TABLES, TablePaths, ensure_tables
from pipelines.io.writers import table_version
from pipelines.jobs.ingest import IngestJob, run_ingest
from pipelines.tools.producer import CONFLICT, MALFORMED_KINDS, VALID, produce
from pipelines.tools.verify import read_topic, verify

pytestmark = pytest.mark.integration


def send(cfg, n, seed, ledger: Path | None = None, prefix=None, malformed=0.03):
    pc = cfg.producer
    return produce(cfg.kafka.bootstrap_servers, pc.topic, n, partitions=3, seed=seed, duplicate_fraction=0.08,
                   conflicting_fraction=0.2, cross_partition_fraction=0.4, malformed_fraction=malformed,
                   late_fraction=0.05, ledger_path=ledger, id_prefix=prefix or f"s{seed}", progress=False)


def table(spark, cfg, name):
    return spark.read.format("delta").load(cfg.table_path(name))


def one_batch(spark, make_cfg, n, seed):
    """A fresh config and tables, ``n`` records sent, and the topic as one persisted batch."""
    cfg = make_cfg()
    send(cfg, n, seed=seed)
    spec, tables = EventSpec.from_config(cfg.events), TablePaths.from_config(cfg)
    ensure_tables(spark, tables, spec)
    return cfg, spec, tables, read_topic(spark, cfg).persist()


def crash_silver(*_args, **_kwargs):
    """A silver writer that fails (the bronze and quarantine writes of the batch still commit)."""
    raise RuntimeError("the silver write failed")


def ledger_rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_duplicates_and_every_malformed_kind(spark, make_cfg, tmp_path):
    cfg = make_cfg()
    ledger = tmp_path / "ledger.jsonl"
    stats = send(cfg, 3000, seed=11, ledger=ledger)
    assert set(stats.malformed) == set(MALFORMED_KINDS)  # the stream carries every kind
    assert stats.duplicates > 100 and stats.conflicting > 10 and stats.cross_partition > 10

    summary = run_ingest(spark, cfg, available_now=True)
    assert summary.batches >= 3  # max_offsets_per_trigger=1000
    report = verify(spark, cfg, ledger_files=[ledger])
    assert report.ok, report.table()
    assert report.totals["silver_rows"] == stats.unique_valid
    assert report.totals["quarantine_rows"] == stats.malformed_total
    assert report.totals["bronze_rows"] == stats.sent

    # Each malformed kind is in quarantine with the reason the producer expected.
    led = ledger_rows(ledger)
    expected = {(r["partition"], r["offset"]): (r["kind"], r["expected_reason"]) for r in led if r["expected_reason"]}
    got = {(r.kafka_partition, r.kafka_offset): r for r in table(spark, cfg, "quarantine").collect()}
    assert set(got) == set(expected)
    seen_kinds = set()
    for coords, (kind, reason) in expected.items():
        row = got[coords]
        assert reason in [c.split(":")[0] for c in row.reason_codes], (kind, row.reason_codes)
        assert row.reason_message and row.batch_id >= 0
        assert row.kafka_value is not None or kind == "null_value"  # raw bytes kept
        seen_kinds.add(kind)
    assert seen_kinds == set(MALFORMED_KINDS)

    # Silver holds exactly the acknowledged valid message_ids, with the typed values of the kept copy.
    silver = {r.message_id: r for r in table(spark, cfg, "silver").collect()}
    valid_ids = {r["message_id"] for r in led if r["kind"] == VALID}
    assert set(silver) == valid_ids
    conflicted = {r["message_id"] for r in led if r["kind"].startswith(CONFLICT)}
    topic = {(r.kafka_partition, r.kafka_offset): r.kafka_value for r in
             read_topic(spark, cfg).select(F.col("partition").alias(S.KAFKA_PARTITION),
                                           F.col("offset").alias(S.KAFKA_OFFSET),
                                           F.col("value").alias(S.KAFKA_VALUE)).collect()}
    for mid, row in list(silver.items())[:300]:
        ev = json.loads(topic[(row.kafka_partition, row.kafka_offset)])
        assert ev["message_id"] == mid
        assert str(row.amount) == f"{float(ev['amount']):.2f}"
        assert row.currency == ev["currency"] and row.event_type == ev["event_type"]
    assert conflicted & set(silver)  # conflicting copies exist, and only one row each is kept

    # The audit trail adds up.
    audit = table(spark, cfg, "audit").orderBy("batch_id").collect()
    assert [a.batch_id for a in audit] == list(range(len(audit)))
    assert sum(a.rows_read for a in audit) == stats.sent
    assert sum(a.silver_inserted for a in audit) == stats.unique_valid
    assert sum(a.quarantined for a in audit) == stats.malformed_total
    assert sum(a.duplicates_in_batch + a.duplicates_in_table for a in audit) == stats.duplicates
    offsets = defaultdict(list)
    for a in audit:
        for p, (lo, hi) in json.loads(a.offsets)[cfg.kafka.topics[0]].items():
            offsets[int(p)].append((lo, hi))
    for ranges in offsets.values():  # contiguous, non-overlapping ranges from offset 0
        assert ranges[0][0] == 0
        assert all(b[0] == a[1] + 1 for a, b in zip(ranges, ranges[1:], strict=False))


def test_replayed_batch_changes_nothing(spark, make_cfg):
    cfg = make_cfg()
    send(cfg, 800, seed=12)
    spec = EventSpec.from_config(cfg.events)
    tables = TablePaths.from_config(cfg)
    ensure_tables(spark, tables, spec)
    batch = read_topic(spark, cfg).persist()
    job = IngestJob(spec, tables, app_id="replay-test", out=None)

    first = job.process_batch(batch, 0)
    assert first.silver_inserted > 0 and not first.replayed
    # The bronze and quarantine writes ran interpreted (WRITE_SESSION_CONF), silver with codegen.
    mode = "spark.sql.codegen.factoryMode"
    assert job._sessions["bronze"].conf.get(mode) == job._sessions["quarantine"].conf.get(mode) == "NO_CODEGEN"
    assert job._sessions["silver"].conf.get(mode) != "NO_CODEGEN"
    versions = {t: table_version(spark, tables.of(t)) for t in ALL_TABLES}
    contents = {t: sorted(map(str, table(spark, cfg, t).drop(S.INGESTED_AT, "started_at", "finished_at").collect()))
                for t in ALL_TABLES}

    again = job.process_batch(batch, 0)  # Spark re-running batch 0 after a crash
    assert again.replayed
    # Counts come from the batch's own commits (never NULL), so the audit adds up after replays.
    assert (again.bronze_inserted, again.quarantined, again.silver_inserted) == (
        first.bronze_inserted, first.quarantined, first.silver_inserted)
    assert {t: table_version(spark, tables.of(t)) for t in ALL_TABLES} == versions
    assert {t: sorted(map(str, table(spark, cfg, t).drop(S.INGESTED_AT, "started_at", "finished_at").collect()))
            for t in ALL_TABLES} == contents

    # The same records under a new batch id (e.g. an overlapping backfill): keyed MERGEs insert nothing.
    later = job.process_batch(batch, 1)
    assert (later.bronze_inserted, later.quarantined, later.silver_inserted) == (0, 0, 0)
    assert later.duplicates_in_table == first.silver_inserted
    assert table(spark, cfg, "silver").count() == first.silver_inserted
    assert table(spark, cfg, "audit").count() == 2
    batch.unpersist()


def test_deleted_checkpoint_restart_from_earliest(spark, make_cfg):
    cfg = make_cfg()
    send(cfg, 1500, seed=13)
    run_ingest(spark, cfg, available_now=True)
    silver_before = table(spark, cfg, "silver").count()
    shutil.rmtree(cfg.checkpoint_path)
    send(cfg, 500, seed=14)
    run_ingest(spark, cfg, available_now=True)  # replays everything from earliest under a new app id
    report = verify(spark, cfg)
    assert report.ok, report.table()
    assert report.get("silver: duplicated message_ids").count == 0
    assert report.totals["silver_rows"] > silver_before
    audit = table(spark, cfg, "audit")
    assert audit.select(S.APP_ID).distinct().count() == 2
    replay_app = audit.orderBy(F.col("finished_at").desc()).first()[S.APP_ID]
    replayed = audit.filter(F.col(S.APP_ID) == replay_app).agg(F.sum("rows_read"), F.sum("bronze_inserted")).first()
    assert replayed[0] == report.totals["topic_records"]  # it re-read the whole topic...
    assert replayed[1] == report.totals["topic_records"] - 1500  # ...and bronze took only the new records


def test_uncommitted_batch_rerun_with_different_max_offsets(spark, make_cfg):
    cfg = make_cfg(kafka={"max_offsets_per_trigger": 450})
    send(cfg, 900, seed=15)
    run_ingest(spark, cfg, available_now=True)
    # Simulate a crash after the last batch wrote every table but before Spark committed it:
    # drop its commit marker. Spark must re-run that batch with the offsets it logged.
    commits = sorted(Path(cfg.checkpoint_path, "commits").glob("[0-9]*"), key=lambda p: int(p.name))
    last = commits[-1]
    last.unlink()
    (last.parent / f".{last.name}.crc").unlink(missing_ok=True)  # the local FS's checksum side file
    send(cfg, 900, seed=16)
    cfg2 = cfg.with_overrides(kafka={"max_offsets_per_trigger": 5000})
    run_ingest(spark, cfg2, available_now=True)
    report = verify(spark, cfg2)
    assert report.ok, report.table()
    audit = table(spark, cfg2, "audit").groupBy(S.BATCH_ID).count()
    assert audit.filter("count > 1").count() == 0  # the re-run batch did not write a second audit row


def _kafka_rows(spark, events: list[tuple[int, dict]]):
    """A Kafka-source-shaped batch: (offset, event) on partition 0 of topic ``scope``."""
    import datetime as dt

    rows = [(e["order_id"].encode(), json.dumps(e).encode(), "scope", 0, off, dt.datetime(2026, 2, 1))
            for off, e in events]
    return spark.createDataFrame(rows, "key binary, value binary, topic string, partition int, offset long, "
                                       "timestamp timestamp")


def _ev(mid: str, day: str, amount: str = "1.00") -> dict:
    return {"message_id": mid, "event_type": "order_created", "order_id": "o-1", "customer_id": "c-1",
            "amount": amount, "currency": "EUR", "event_time": f"2026-01-{day}T10:00:00Z"}


@pytest.mark.parametrize("scope", ["table", "event_date"])
def test_silver_merge_scope(spark, make_cfg, scope):
    """event_date scope: identical copies are found at any age; a copy dated after its first
    copy by more than the slack is the documented escape (table scope catches it)."""
    cfg = make_cfg(ingest={"silver_merge_scope": scope, "silver_merge_slack_days": 1, "progress": False})
    job = IngestJob.from_config(cfg, app_id=f"scope-{scope}", out=None)
    ensure_tables(spark, job.tables, job.spec)
    a, b = _ev("A", "10"), _ev("B", "20")
    assert job.process_batch(_kafka_rows(spark, [(0, a), (1, b)]), 0).silver_inserted == 2
    # A replayed 20 days later (identical bytes) beside a new C: A is found despite its age.
    assert job.process_batch(_kafka_rows(spark, [(2, a), (3, _ev("C", "21"))]), 1).silver_inserted == 1
    # A copy of B re-dated one day later (within the slack; a slack of 0 would miss it): found.
    assert job.process_batch(_kafka_rows(spark, [(4, _ev("B", "21", "2.00"))]), 2).silver_inserted == 0
    # A copy of A re-dated 15 days later: only the whole-table MERGE finds its first copy.
    late_copy = job.process_batch(_kafka_rows(spark, [(5, _ev("A", "25", "3.00"))]), 3)
    silver = sorted((r.message_id, str(r.amount)) for r in table(spark, cfg, "silver").collect())
    if scope == "table":
        assert late_copy.silver_inserted == 0
        assert silver == [("A", "1.00"), ("B", "1.00"), ("C", "1.00")]
    else:
        assert late_copy.silver_inserted == 1
        assert silver == [("A", "1.00"), ("A", "3.00"), ("B", "1.00"), ("C", "1.00")]
    assert table(spark, cfg, "bronze").count() == 6 and table(spark, cfg, "quarantine").count() == 0


def test_negative_slack_is_a_config_error(make_cfg):
    from pipelines.errors import ConfigError

    cfg = make_cfg(ingest={"silver_merge_slack_days": -1})
    with pytest.raises(ConfigError, match="ingest.silver_merge_slack_days must be >= 0"):
        IngestJob.from_config(cfg)


def test_rewound_checkpoint_is_refused_then_recovered_with_a_new_app_id(spark, make_cfg):
    """offsets/ and commits/ deleted, metadata kept: the query id (so the app id) stays and batch
    ids restart at 0 for other offsets. Before the check, Delta skipped those batches silently
    and their records never reached the tables."""
    from pipelines.errors import CheckpointRewindError

    cfg = make_cfg(kafka={"max_offsets_per_trigger": 500})
    send(cfg, 1000, seed=17, malformed=0)
    run_ingest(spark, cfg, available_now=True)
    silver_before = table(spark, cfg, "silver").count()
    versions = {t: table_version(spark, cfg.table_path(t)) for t in ALL_TABLES}
    for sub in ("offsets", "commits"):
        shutil.rmtree(Path(cfg.checkpoint_path, sub))
    send(cfg, 600, seed=18, malformed=0)
    rewound = cfg.with_overrides(kafka={"max_offsets_per_trigger": 700})
    with pytest.raises(CheckpointRewindError) as e:
        run_ingest(spark, rewound, available_now=True)
    assert "was rewound" in str(e.value) and "ingest.query_name" in str(e.value)
    assert "batch 0 " in str(e.value)
    # Nothing was written by the refused batch.
    assert {t: table_version(spark, cfg.table_path(t)) for t in ALL_TABLES} == versions
    assert table(spark, cfg, "silver").count() == silver_before

    # The documented recovery: a new app id. Keyed writes make the overlap harmless.
    recovered = rewound.with_overrides(ingest={"query_name": "ingest-2"})
    run_ingest(spark, recovered, available_now=True)
    report = verify(spark, recovered)
    assert report.ok, report.table()
    assert report.totals["bronze_rows"] == report.totals["topic_records"] == 1600


def test_batch_abandoned_before_a_checkpoint_reset_gets_its_audit_row(spark, make_cfg):
    """A run writes bronze and quarantine, dies before silver and audit; the checkpoint is reset
    (new app id), so the replay finds those records already written and inserts 0. Without the
    recovered row the audit's inserted counts would no longer add up to the tables."""
    cfg, spec, tables, batch = one_batch(spark, make_cfg, 600, seed=19)
    with pytest.raises(RuntimeError):
        IngestJob(spec, tables, app_id="run-1", out=None, silver_writer=crash_silver).process_batch(batch, 0)
    replay = IngestJob(spec, tables, app_id="run-2", out=None)
    again = replay.process_batch(batch, 0)
    assert again.bronze_inserted == 0 and again.silver_inserted > 0

    def sums():
        a = table(spark, cfg, "audit").agg(F.sum("bronze_inserted"), F.sum("quarantined"), F.sum("silver_inserted"))
        return tuple(a.first())

    counts = tuple(table(spark, cfg, t).count() for t in ("bronze", "quarantine", "silver"))
    assert sums() != counts  # the abandoned batch's inserts are not in the audit yet
    recovered = replay.record_abandoned_batches(spark, "run-2")
    assert [(r.app_id, r.batch_id, r.bronze_inserted) for r in recovered] == [("run-1", 0, 600)]
    assert sums() == counts
    assert replay.record_abandoned_batches(spark, "run-2") == []  # once
    row = table(spark, cfg, "audit").filter("app_id = 'run-1'").first()
    assert row.query_name.endswith("(abandoned batch, recovered)") and row.rows_read == 600
    batch.unpersist()


def test_a_failed_concurrent_write_fails_the_batch_and_the_rerun_completes_it(spark, make_cfg):
    """bronze, quarantine and silver are written concurrently: a failure of one must fail the
    batch (so Spark does not commit it) only after the others finished, and the re-run of the
    same batch skips what was committed and writes the rest."""
    from pipelines.io.writers import TXN_APP_ID, TXN_VERSION

    cfg, spec, tables, batch = one_batch(spark, make_cfg, 600, seed=23)
    with pytest.raises(RuntimeError, match="silver write failed"):
        IngestJob(spec, tables, app_id="run-1", out=None, silver_writer=crash_silver).process_batch(batch, 0)
    assert table(spark, cfg, "bronze").count() == 600  # the concurrent writes finished first
    assert table(spark, cfg, "quarantine").count() > 0
    assert table(spark, cfg, "silver").count() == 0 and table(spark, cfg, "audit").count() == 0

    again = IngestJob(spec, tables, app_id="run-1", out=None).process_batch(batch, 0)
    assert (again.bronze_inserted, again.silver_inserted > 0, again.replayed) == (600, True, False)
    counts = tuple(table(spark, cfg, t).count() for t in ("bronze", "quarantine", "silver"))
    audit = table(spark, cfg, "audit").agg(F.count(F.lit(1)), F.sum("bronze_inserted"), F.sum("quarantined"),
                                           F.sum("silver_inserted")).first()
    assert tuple(audit) == (1, *counts)
    silver = table(spark, cfg, "silver")
    assert silver.count() == silver.select("message_id").distinct().count() == again.silver_inserted
    # The writes ran on sessions of their own: no transaction identity is left on this one.
    assert spark.conf.get(TXN_APP_ID, None) is None and spark.conf.get(TXN_VERSION, None) is None
    batch.unpersist()


def test_a_lost_deferred_audit_row_is_recovered_exactly_from_the_commits(spark, make_cfg):
    """In a stream the audit row is written after the batch returns; a crash can lose it after
    Spark committed the batch. The next start rebuilds it from the batch's commits, counts
    included, but leaves alone a batch Spark did not commit (its re-run writes the row)."""
    from delta.tables import DeltaTable

    cfg, spec, tables, batch = one_batch(spark, make_cfg, 600, seed=29)
    job = IngestJob(spec, tables, app_id="run-1", out=None)
    job.process_batch(batch, 0, defer_audit=True)
    job.flush()
    fields = ["rows_read", "bronze_inserted", "quarantined", "valid_rows", "duplicates_in_batch",
              "conflicting_in_batch", "duplicates_in_table", "silver_inserted"]
    before = table(spark, cfg, "audit").select(*fields).first().asDict()
    assert before["duplicates_in_batch"] > 0 and before["conflicting_in_batch"] > 0  # the check below can fail
    DeltaTable.forPath(spark, tables.audit).delete("app_id = 'run-1'")  # the row the crash lost

    assert job.record_abandoned_batches(spark, "run-1") == []  # not committed by Spark: it will re-run
    assert table(spark, cfg, "audit").count() == 0
    recovered = job.record_abandoned_batches(spark, "run-1", committed=[0])
    assert [(r.app_id, r.batch_id) for r in recovered] == [("run-1", 0)]
    row = table(spark, cfg, "audit").first()
    assert {f: row[f] for f in fields} == before
    assert row.query_name.endswith("(audit row recovered from commits)")
    assert job.record_abandoned_batches(spark, "run-1", committed=[0]) == []  # once
    batch.unpersist()


def test_stopping_the_query_does_not_cancel_the_deferred_audit_write(spark, make_cfg):
    """The audit rows of committed batches are written in the background; a graceful stop of the
    query must not cancel that write (found by the benchmark: a clean stop ended in an error,
    because the writer thread carried the query's job tags and the stop cancelled its jobs)."""
    import threading

    started, stop, outcome = threading.Event(), threading.Event(), {}

    class SlowAuditJob(IngestJob):
        def _write_audit_rows(self, session, rows):
            started.set()  # the test stops the query now, while this thread's Spark job runs
            session.range(0, 250_000_000, numPartitions=2).agg(F.sum("id")).collect()
            super()._write_audit_rows(session, rows)

    cfg = make_cfg()
    send(cfg, 300, seed=31)
    base = IngestJob.from_config(cfg, out=None)
    job = SlowAuditJob(base.spec, base.tables, query_name=cfg.ingest.query_name, checkpoint=cfg.checkpoint_path,
                       out=None, audit_interval_s=0)

    def run():
        try:
            outcome["summary"] = run_ingest(spark, cfg, available_now=False, stop_event=stop, job=job)
        except Exception as e:  # noqa: BLE001 - reported by the assertion below
            outcome["error"] = e

    runner = threading.Thread(target=run)
    runner.start()
    assert started.wait(300), "no audit write started"
    stop.set()
    runner.join(timeout=300)
    assert "error" not in outcome, outcome.get("error")
    audit = table(spark, cfg, "audit").agg(F.count(F.lit(1)), F.sum("bronze_inserted")).first()
    assert tuple(audit) == (len(job.results), 300)


def test_deferred_audit_rows_survive_a_failed_write_and_are_written_once(spark, make_cfg):
    """A failed background audit write keeps its rows for the next write; a batch queued twice
    (Spark re-running it before the rows were written) gets one row, not two."""
    cfg, spec, tables, batch = one_batch(spark, make_cfg, 300, seed=37)
    failures = ["once"]

    class FlakyAuditJob(IngestJob):
        def _write_audit_rows(self, session, rows):
            if failures:
                failures.pop()
                raise RuntimeError("the audit write failed")
            super()._write_audit_rows(session, rows)

    job = FlakyAuditJob(spec, tables, app_id="run-1", out=None, audit_interval_s=3600)
    job.process_batch(batch, 0, defer_audit=True)
    job.process_batch(batch, 0, defer_audit=True)  # the re-run of batch 0 queues its row again
    with pytest.raises(RuntimeError, match="the audit write failed"):
        job.flush()
    assert table(spark, cfg, "audit").count() == 0
    job.flush()  # the failed write's rows were kept
    rows = table(spark, cfg, "audit").collect()
    assert [(r.app_id, r.batch_id, r.bronze_inserted) for r in rows] == [("run-1", 0, 300)]
    batch.unpersist()
