"""Every verify check can fire: corrupt the tables on purpose, one fault per check, and look.

The pipeline writes clean tables from a real topic; then each corruption below targets one
check (a deleted bronze row, a changed payload, a dropped reason, a doubled audit row, ...).
Every check must report it and the exit status of ``verify`` must turn non-zero; on the clean
tables before, every check passed.
"""

from __future__ import annotations

import json

import pytest
from pyspark.sql import functions as F

from pipelines import cli
from pipelines.domain import schema as S
from pipelines.io.tables import ALL_TABLES
from pipelines.jobs.ingest import run_ingest
from pipelines.tools.producer import produce
from pipelines.tools.verify import verify

pytestmark = pytest.mark.integration


def sql(spark, text: str) -> None:
    spark.sql(text).collect()


def test_every_check_fires_on_a_corrupted_table(spark, make_cfg, tmp_path, monkeypatch):
    cfg = make_cfg()
    ledger = tmp_path / "ledger.jsonl"
    produce(cfg.kafka.bootstrap_servers, cfg.producer.topic, 800, partitions=3, seed=31, duplicate_fraction=0.05,
            conflicting_fraction=0.2, cross_partition_fraction=0.3, malformed_fraction=0.05, late_fraction=0.0,
            ledger_path=ledger, id_prefix="v31", progress=False)
    run_ingest(spark, cfg, available_now=True)
    clean = verify(spark, cfg, ledger_files=[ledger])
    assert clean.ok, clean.table()
    path = {t: f"delta.`{cfg.table_path(t)}`" for t in ALL_TABLES}

    def rows(name: str, n: int):
        return spark.read.format("delta").load(cfg.table_path(name)).orderBy(*S.COORDINATES).limit(n).collect()

    def where(r) -> str:
        return f"kafka_partition = {r.kafka_partition} AND kafka_offset = {r.kafka_offset}"

    def append_copy(name: str, r, **changes) -> None:
        """Append a copy of row ``r`` of table ``name`` (found by its coordinates or batch), with changes."""
        df = spark.read.format("delta").load(cfg.table_path(name))
        cond = (f"app_id = '{r.app_id}' AND batch_id = {r.batch_id}" if name == "audit" else where(r))
        one = df.filter(cond).limit(1)
        one.withColumns({k: F.lit(v).cast(df.schema[k].dataType) for k, v in changes.items()}) \
            .write.format("delta").mode("append").save(cfg.table_path(name))

    b = rows("bronze", 2)
    sql(spark, f"DELETE FROM {path['bronze']} WHERE {where(b[0])}")                 # bronze: missing
    append_copy("bronze", b[1])                                                        # bronze: duplicated
    append_copy("bronze", b[1], kafka_offset=10**9)                                    # bronze: unexpected
    q = rows("quarantine", 4)
    sql(spark, f"DELETE FROM {path['quarantine']} WHERE {where(q[0])}")             # quarantine: not quarantined
    sql(spark, f"UPDATE {path['quarantine']} SET reason_codes = array() WHERE {where(q[1])}")  # without a reason
    sql(spark, f"UPDATE {path['quarantine']} SET reason_codes = array('NOT_JSON'), reason = 'NOT_JSON' "
               f"WHERE {where(q[2])}")                                                 # codes differ
    append_copy("quarantine", q[3])                                                    # quarantine: duplicated
    s = rows("silver", 6)
    append_copy("quarantine", q[3], kafka_partition=s[5].kafka_partition,
                kafka_offset=s[5].kafka_offset)                                        # valid record quarantined
    sql(spark, f"DELETE FROM {path['silver']} WHERE message_id = '{s[0].message_id}'")  # silver: missing
    append_copy("silver", s[1])                                                        # silver: duplicated
    append_copy("silver", s[2], message_id="ghost-id")                                 # silver: unexpected
    sql(spark, f"UPDATE {path['silver']} SET payload = '{{}}' WHERE message_id = '{s[3].message_id}'")
    sql(spark, f"UPDATE {path['silver']} SET amount = amount + 0.01 WHERE message_id = '{s[4].message_id}'")
    a = spark.read.format("delta").load(cfg.table_path("audit")).orderBy(S.BATCH_ID).limit(1).collect()[0]
    append_copy("audit", a)                                                            # audit: duplicated
    sql(spark, f"UPDATE {path['audit']} SET quarantined = NULL WHERE batch_id = {a.batch_id}")  # NULL counts
    bad_ledger = tmp_path / "bad-ledger.jsonl"
    bad_ledger.write_text("\n".join(json.dumps(r) for r in [
        {"topic": cfg.producer.topic, "partition": 0, "offset": 10**9, "kind": "valid", "message_id": "never-sent",
         "expected_reason": None},
        {"topic": cfg.producer.topic, "partition": q[2].kafka_partition, "offset": q[2].kafka_offset,
         "kind": "missing_id", "expected_reason": "MISSING_ID"}]) + "\n")

    report = verify(spark, cfg, ledger_files=[ledger, bad_ledger])
    failed = {c.name for c in report.checks if not c.ok}
    every = {c.name for c in report.checks if not c.informational}
    assert failed == every, f"checks that did not fire: {sorted(every - failed)}\n{report.table()}"
    assert not report.ok
    assert "ghost-id" in " ".join(report.get("silver: unexpected message_ids").samples)
    assert report.get("silver: typed values differ from the reference decoding").count == 1

    # The command line says so with its exit status.
    monkeypatch.setenv("PIPELINES__APP__DATA_DIR", cfg.app.data_dir)
    monkeypatch.setenv("PIPELINES__KAFKA__BOOTSTRAP_SERVERS", cfg.kafka.bootstrap_servers)
    monkeypatch.setenv("PIPELINES__KAFKA__TOPICS", json.dumps(list(cfg.kafka.topics)))
    assert cli.main(["verify"]) == 1
    # (No check fires on good data: the clean run above passed every one.)
