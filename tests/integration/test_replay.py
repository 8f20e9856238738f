"""File backfills, bronze re-derivation and quarantine replay against a real broker and real Delta tables."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json

import pytest
from pyspark.sql import functions as F

from pipelines.domain.schema import EventSpec
from pipelines.io.tables import TablePaths, migrate_tables
from pipelines.io.writers import table_version
from pipelines.jobs import replay
from pipelines.jobs.backfill import run_backfill
from pipelines.jobs.ingest import run_ingest
from pipelines.jobs.replay import run_bronze_backfill, run_file_backfill, run_quarantine_replay
from pipelines.tools.producer import plan_records, produce
from pipelines.tools.verify import verify

pytestmark = pytest.mark.integration
TABLES = ("bronze", "quarantine", "silver", "audit")


def versions(spark, cfg):
    return {t: table_version(spark, cfg.table_path(t)) for t in TABLES}


def table(spark, cfg, name):
    return spark.read.format("delta").load(cfg.table_path(name))


def test_archived_files_land_once_and_exports_with_coordinates_add_nothing(spark, make_cfg, tmp_path):
    cfg = make_cfg(backfill={"progress": False})
    # Some records through Kafka first (the topic the tables are bound to).
    sent = produce(cfg.kafka.bootstrap_servers, cfg.kafka.topics[0], 400, partitions=3, seed=61,
                   duplicate_fraction=0.05, malformed_fraction=0.03, id_prefix="k61", progress=False)
    run_backfill(spark, cfg, out=None)

    # An archive of records no longer in Kafka: two JSON-lines files, duplicates and malformed lines.
    archive = tmp_path / "archive" / "2026" / "11"
    archive.mkdir(parents=True)
    records = [r for r in plan_records(1500, partitions=3, seed=62, duplicate_fraction=0.08,
                                       conflicting_fraction=0.0, cross_partition_fraction=0.0,
                                       malformed_fraction=0.03, late_fraction=0.0, id_prefix="f62")
               if r.value is not None and b"\n" not in r.value and b"\r" not in r.value]
    # Three events without a customer_id (a field the contract requires, for now).
    template = json.loads(next(r.value for r in records if r.expected_reason is None))
    no_customer = [json.dumps({**{k: v for k, v in template.items() if k != "customer_id"},
                               "message_id": f"f62-nocustomer-{i}"}).encode() for i in range(3)]
    halves = (records[:800], records[800:])
    for i, part in enumerate(halves):
        (archive / f"part-{i}.jsonl").write_bytes(b"".join(r.value + b"\n" for r in part)
                                                  + (b"".join(v + b"\n" for v in no_customer) if i else b""))
    (archive / "_SUCCESS").write_text("")  # a marker file is not data
    valid_ids = {r.message_id for r in records if r.expected_reason is None}
    distinct_lines = sum(len({r.value for r in part}) for part in halves) + len(no_customer)
    malformed_lines = sum(len({r.value for r in part if r.expected_reason is not None}) for part in halves) + len(
        no_customer)

    before_silver = table(spark, cfg, "silver").count()
    s = run_file_backfill(spark, cfg, str(tmp_path / "archive"), chunk_mb=0.05, out=None)
    assert s.source == "files" and s.chunks == 2 and s.chunks_run == 2 and s.rows_read == distinct_lines
    assert s.bronze_inserted == distinct_lines and s.quarantined == malformed_lines
    assert s.silver_inserted == len(valid_ids)
    silver = table(spark, cfg, "silver").filter(F.col("message_id").startswith("f62"))
    assert silver.count() == silver.select("message_id").distinct().count() == len(valid_ids)
    assert {r.message_id for r in silver.select("message_id").collect()} == valid_ids
    assert table(spark, cfg, "silver").count() == before_silver + len(valid_ids)
    topics = {r[0] for r in table(spark, cfg, "bronze").select("kafka_topic").distinct().collect()}
    assert topics == {cfg.kafka.topics[0], *(f"file:{archive / f'part-{i}.jsonl'}" for i in range(2))}

    # The same files again: the ledger has every chunk; nothing read, nothing written.
    before = versions(spark, cfg)
    again = run_file_backfill(spark, cfg, str(tmp_path / "archive"), chunk_mb=0.05, out=None)
    assert (again.run_id, again.chunks_done_before, again.chunks_run) == (s.run_id, 2, 0)
    assert versions(spark, cfg) == before

    # Bronze exported to Parquet keeps its Kafka coordinates (and the file rows theirs): a backfill of
    # the export finds every record in place.
    export = tmp_path / "export"
    table(spark, cfg, "bronze").write.parquet(str(export))
    exported = run_file_backfill(spark, cfg, str(export), fmt="parquet", out=None)
    assert exported.rows_read == sent.sent + distinct_lines
    assert exported.bronze_inserted == exported.quarantined == exported.silver_inserted == 0
    report = verify(spark, cfg)  # the Kafka records: every check; the file rows: counted, not in Kafka
    assert report.ok, report.table()

    # The contract makes customer_id optional (`migrate` drops the NOT NULL): a quarantine replay
    # finds the file rows' raw records in bronze (they have no topic id) and moves them into silver.
    fields = [dataclasses.asdict(f) for f in cfg.events.fields]
    for f in fields:
        if f["name"] == "customer_id":
            f["required"] = False
    relaxed = cfg.with_overrides(events={"fields": fields})
    migrate_tables(spark, TablePaths.from_config(relaxed), EventSpec.from_config(relaxed.events))
    moved = run_quarantine_replay(spark, relaxed, reason="MISSING_FIELD:customer_id", out=None)
    # Ours, and any of the generator's own records that lack only the customer_id.
    ids = sorted({f"f62-nocustomer-{i}" for i in range(3)} | {
        r.message_id for r in records if r.kind == "missing_field" and "customer_id" not in json.loads(r.value)})
    assert moved.rows_read == moved.replayed == moved.silver_inserted == len(ids)
    assert table(spark, relaxed, "silver").filter(F.col("message_id").isin(ids)).count() == len(ids)
    marked = table(spark, relaxed, "quarantine").filter(F.col("replayed_by") == moved.run_id)
    assert sorted(r.message_id for r in marked.collect()) == ids
    assert all(r.kafka_topic.startswith("file:") for r in marked.collect())


def _contract(cfg, allowed):
    fields = [dataclasses.asdict(f) for f in cfg.events.fields]
    for f in fields:
        if f["name"] == "event_type":
            f["allowed"] = allowed
    return {"fields": fields}


def test_a_parser_fix_re_derived_from_bronze_then_a_rule_fix_replayed_from_quarantine(spark, make_cfg, monkeypatch):
    base = make_cfg(backfill={"progress": False})
    # Deployed with a contract that wrongly rejects two event types.
    strict = base.with_overrides(events=_contract(base, ["order_created"]))
    sent = produce(strict.kafka.bootstrap_servers, strict.kafka.topics[0], 1500, partitions=3, seed=71,
                   duplicate_fraction=0.08, malformed_fraction=0.03, id_prefix="r71", progress=False)
    first = run_ingest(spark, strict, available_now=True)
    assert first.rows_read == sent.sent
    wrongly = table(spark, strict, "quarantine").filter(F.array_contains("reason_codes", "INVALID_VALUE:event_type"))
    assert wrongly.count() > sent.malformed_total  # the valid payments and refunds went to quarantine

    # Fix 1 (payments are valid): re-derive from bronze, up to now.
    fix1 = base.with_overrides(events=_contract(base, ["order_created", "payment_captured"]))
    silver_before = table(spark, fix1, "silver").count()
    bronze_before = table_version(spark, fix1.table_path("bronze"))
    end = dt.datetime.now(dt.UTC)
    r1 = run_bronze_backfill(spark, fix1, end=end, chunk_records=700, out=None)
    assert r1.source == "bronze" and r1.rows_read == sent.sent and r1.chunks == r1.chunks_run >= 2
    assert r1.bronze_inserted == 0 and table_version(spark, fix1.table_path("bronze")) == bronze_before
    added = table(spark, fix1, "silver").count() - silver_before
    assert added == r1.silver_inserted > 0
    new_rows = table(spark, fix1, "silver").filter(F.col("app_id") == r1.run_id)
    assert {r[0] for r in new_rows.select("event_type").distinct().collect()} == {"payment_captured"}
    marked = table(spark, fix1, "quarantine").filter(F.col("replayed_by") == r1.run_id)
    assert marked.count() == r1.replayed > 0
    assert marked.join(table(spark, fix1, "silver"), "message_id", "left_anti").count() == 0
    report = verify(spark, fix1)
    assert report.ok, report.table()
    # The same re-derivation again (same --to): every chunk was done.
    before = versions(spark, fix1)
    again = run_bronze_backfill(spark, fix1, end=end, chunk_records=700, out=None)
    assert (again.run_id, again.chunks_done_before, again.chunks_run) == (r1.run_id, r1.chunks, 0)
    assert versions(spark, fix1) == before

    # Fix 2 (refunds are valid too): replay the quarantine. A dry run writes nothing.
    fix2 = base
    refunds = table(spark, fix2, "quarantine").filter(
        F.col("replayed_at").isNull() & F.array_contains("reason_codes", "INVALID_VALUE:event_type"))
    unreplayed = table(spark, fix2, "quarantine").filter(F.col("replayed_at").isNull()).count()
    before = versions(spark, fix2)
    dry = run_quarantine_replay(spark, fix2, reason="INVALID_VALUE", dry_run=True, out=None)
    assert versions(spark, fix2) == before
    assert dry.records == dry.rows_read == refunds.count() and 0 < dry.passing < dry.records

    # A replay killed between its silver commit and the marking of the quarantine rows...
    def broken(*_args):
        raise RuntimeError("killed before marking")

    with monkeypatch.context() as m:
        m.setattr(replay, "settle_quarantine", broken)
        with pytest.raises(RuntimeError, match="killed before marking"):
            run_quarantine_replay(spark, fix2, reason="INVALID_VALUE", out=None)
    moved = table(spark, fix2, "silver").count() - silver_before - added
    assert 0 < moved <= dry.passing
    assert table(spark, fix2, "quarantine").filter(F.col("replayed_at").isNotNull()).count() == r1.replayed

    # ... then run again: the records are in silver already (nothing inserted twice), now marked.
    r2 = run_quarantine_replay(spark, fix2, reason="INVALID_VALUE", out=None)
    assert r2.source == "quarantine" and r2.rows_read == r2.replayed == dry.passing
    assert table(spark, fix2, "silver").count() == silver_before + added + moved
    still = table(spark, fix2, "quarantine").filter(
        F.col("replayed_at").isNull() & F.array_contains("reason_codes", "INVALID_VALUE:event_type"))
    # Truly unknown event types stay, unmarked; rows failing for other reasons too now show only those.
    assert still.count() == sent.malformed["unknown_event_type"] > 0
    assert table(spark, fix2, "quarantine").filter(F.col("replayed_at").isNull()).count() == unreplayed - dry.passing
    report = verify(spark, fix2)
    assert report.ok, report.table()
    assert report.totals["silver_rows"] == sent.unique_valid

    # Repeating the replay: no-op (the records that still fail are not written again either).
    before = versions(spark, fix2)
    r3 = run_quarantine_replay(spark, fix2, reason="INVALID_VALUE", out=None)
    assert r3.rows_read == r3.silver_inserted == r3.replayed == 0
    assert versions(spark, fix2) == before
    assert json.loads(json.dumps(r3.as_dict()))["source"] == "quarantine"
