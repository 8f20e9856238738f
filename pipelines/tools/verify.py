"""Reconciliation: the source topic (read again, from earliest) against the Delta tables.

``verify`` does not reuse the pipeline's parser: every record is decoded a second time by
:mod:`pipelines.tools.reference` (plain ``json`` + ``decimal`` on the executors), so a parser bug
shows up here as a discrepancy instead of being reproduced on both sides. Checks, each reported
with a count and a few samples:

- bronze: every Kafka record exactly once (missing, duplicated, unexpected coordinates);
- quarantine: every record that fails the contract is there, exactly once, with the reason
  codes the reference decoding finds; nothing valid is there (rows a quarantine replay marked
  ``replayed_at`` are history: their records are in silver, and are checked there);
- silver: every valid message_id exactly once (missing, duplicated, unexpected IDs); the kept
  row's payload equals the record at the coordinates it names, and its typed values equal the
  reference decoding of that record;
- coverage: every record is accounted for (silver, a dropped duplicate of a silver ID, or
  quarantine);
- audit: one row per (app id, batch id), no NULL counts, and its inserted counts add up to the
  rows of bronze, quarantine and silver;
- ledger (optional): the producer's acknowledged records agree with the tables: every valid
  message_id in silver, every malformed record quarantined with the expected reason;
- gold: each gold table equals its recomputation from silver (as of the silver version its
  newest commit says it reflects), group by group; the groups that differ are listed.

Run it after the ingest job has caught up (``ingest --available-now``); records produced
after the job's last batch show up as missing. The topic is read with the job's isolation
level (``kafka.isolation_level``), so records of aborted transactions are not expected anywhere.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pyspark.sql import DataFrame, Row, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

from pipelines.config import Config
from pipelines.domain import schema as S
from pipelines.domain.schema import EventSpec, spark_type
from pipelines.errors import PipelineError
from pipelines.io.binding import describe_source
from pipelines.io.kafka_source import source_options
from pipelines.io.tables import TablePaths
from pipelines.quality.batch import batch_quality
from pipelines.quality.rules import RowCheck
from pipelines.tools.reference import Decoder

SAMPLES = 5


@dataclass
class Check:
    """One reconciliation check."""

    name: str
    count: int
    samples: list[str] = field(default_factory=list)
    informational: bool = False

    @property
    def ok(self) -> bool:
        """A check passes with a zero count (informational rows always pass)."""
        return self.informational or self.count == 0


@dataclass
class VerifyReport:
    """All checks plus headline numbers."""

    checks: list[Check] = field(default_factory=list)
    totals: dict[str, int] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        """True when every check passes."""
        return all(c.ok for c in self.checks)

    def get(self, name: str) -> Check:
        """The check called ``name``."""
        for c in self.checks:
            if c.name == name:
                return c
        raise KeyError(name)

    def table(self) -> str:
        """A readable summary table (the failed checks with a few sample rows)."""
        from pipelines.tools.console import render, table

        rows = []
        for c in self.checks:
            result = "info" if c.informational else ("ok" if c.ok else "FAIL")
            rows.append({"check": c.name, "count": c.count, "result": result,
                         "e.g.": "" if c.ok else "\n".join(c.samples)})
        verdict = "VERIFY: OK - nothing missing, nothing duplicated" if self.ok else "VERIFY: FAILED"
        return render("totals: " + ", ".join(f"{k}={v}" for k, v in self.totals.items()),
                      table(rows, columns=["check", "count", "result", "e.g."]), verdict).rstrip("\n")

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready dict."""
        return {"ok": self.ok, "totals": self.totals,
                "checks": [{"name": c.name, "count": c.count, "ok": c.ok, "samples": c.samples}
                           for c in self.checks]}


def _check(name: str, df: DataFrame, describe: list[str], informational: bool = False) -> Check:
    """Count the rows of ``df`` and keep a few as samples (one action when there are none)."""
    rows = df.limit(SAMPLES).collect()
    count = df.count() if rows else 0
    samples = [", ".join(f"{c}={r[c]}" for c in describe) for r in rows]
    return Check(name, count, samples, informational)


def read_topic(spark: SparkSession, cfg: Config) -> DataFrame:
    """Every record of the configured topics, earliest to latest (a batch read)."""
    reader = spark.read.format("kafka")
    for k, v in source_options(cfg, streaming=False).items():
        reader = reader.option(k, v)
    return reader.load()


_VALID = "_ref_valid"
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


def reference_decoding(topic: DataFrame, spec: EventSpec, topic_ids: dict[str, str],
                       checks: list[RowCheck] | None = None) -> DataFrame:
    """Decode Spark Kafka-source rows with the reference decoder, on the executors.

    Returns the coordinates (the topic id from ``topic_ids``), ``message_id``, ``reason_codes``
    (sorted, distinct), ``payload`` (the value as UTF-8 text), one typed column per data field,
    ``event_date`` and a validity flag. ``checks``: the silver suite's ``quarantine`` rules,
    applied (in Python) to records that pass the contract, as the job does.
    """
    decoder = Decoder(spec)
    routing = [c for c in checks or [] if c.rule.policy == "quarantine"]
    data_fields = [f.name for f in spec.data_fields]
    schema = T.StructType([
        T.StructField(S.KAFKA_TOPIC, T.StringType()), T.StructField(S.KAFKA_TOPIC_ID, T.StringType()),
        T.StructField(S.KAFKA_PARTITION, T.IntegerType()),
        T.StructField(S.KAFKA_OFFSET, T.LongType()), T.StructField(S.MESSAGE_ID, T.StringType()),
        T.StructField(S.REASON_CODES, T.ArrayType(T.StringType())), T.StructField(S.PAYLOAD, T.StringType()),
        *[T.StructField(f.name, spark_type(f.type)) for f in spec.data_fields],
        T.StructField(S.EVENT_DATE, T.DateType()), T.StructField(_VALID, T.BooleanType()),
    ])

    def utc(v: Any) -> Any:  # naive UTC datetimes, made explicit so no local zone is applied
        return v.replace(tzinfo=dt.UTC) if isinstance(v, dt.datetime) else v

    def decode_partition(rows: Iterable[Row]) -> Iterator[tuple]:
        for r in rows:
            value = None if r.value is None else bytes(r.value)
            headers = [(h["key"], None if h["value"] is None else bytes(h["value"])) for h in (r.headers or [])]
            d = decoder.decode(value, None if r.key is None else bytes(r.key), headers)
            try:
                payload = value.decode("utf-8") if value is not None else None
            except UnicodeDecodeError:
                payload = None
            codes = list(d.reason_codes)
            if routing and not codes:
                ts = None if r.ts_micros is None else _EPOCH + dt.timedelta(microseconds=r.ts_micros)
                row = {**d.values, S.MESSAGE_ID: d.message_id, S.EVENT_DATE: d.event_date, S.KAFKA_TIMESTAMP: ts,
                       S.PAYLOAD: payload, S.KAFKA_TOPIC: r.topic, S.KAFKA_PARTITION: r.partition,
                       S.KAFKA_OFFSET: r.offset}
                codes = sorted({c.code for c in routing if c.fails(row)})
            yield (r.topic, topic_ids.get(r.topic), r.partition, r.offset, d.message_id, codes, payload,
                   *[utc(d.values[n]) for n in data_fields], d.event_date, not codes)

    # The Kafka timestamp as microseconds: a Row's datetime would be in the worker's local zone.
    cols = topic.select("key", "value", "topic", "partition", "offset", F.unix_micros("timestamp").alias("ts_micros"),
                        "headers")
    return topic.sparkSession.createDataFrame(cols.rdd.mapPartitions(decode_partition), schema)


def verify(spark: SparkSession, cfg: Config, *, ledger_files: list[Path] | None = None) -> VerifyReport:
    """Reconcile the topic with bronze, quarantine, silver and audit (and optionally a producer ledger)."""
    spec = EventSpec.from_config(cfg.events)
    tables = TablePaths.from_config(cfg)
    coords = list(S.COORDINATES)
    data_fields = [f.name for f in spec.data_fields]
    identity = describe_source(spark, cfg)
    quality = batch_quality(cfg, spec)
    topic = reference_decoding(read_topic(spark, cfg), spec, identity.topics,
                               quality.checks if quality is not None else None).persist()
    # Rows of other topic incarnations (a deleted and recreated topic, a rebound source) are no
    # longer in Kafka: they are counted, not reconciled.
    now = spark.createDataFrame(sorted(identity.topics.items()), f"{S.KAFKA_TOPIC} string, {S.KAFKA_TOPIC_ID} string")
    source = [S.KAFKA_TOPIC, S.KAFKA_TOPIC_ID]
    bronze_all = spark.read.format("delta").load(tables.bronze).select(*coords).persist()
    bronze = bronze_all.join(now, source, "left_semi")
    q = spark.read.format("delta").load(tables.quarantine)
    replayed = F.col(S.REPLAYED_AT).isNotNull() if S.REPLAYED_AT in q.columns else F.lit(False)  # not migrated yet
    quarantine_all = q.select(*coords, S.REASON, S.REASON_CODES, replayed.alias("_replayed")).persist()
    # Rows a replay moved into silver stay in quarantine as history; the checks below are about
    # the records quarantined now.
    quarantine = quarantine_all.filter(~F.col("_replayed")).join(now, source, "left_semi")
    silver_all = spark.read.format("delta").load(tables.silver).select(
        S.MESSAGE_ID, S.PAYLOAD, *coords, *data_fields, S.EVENT_DATE).persist()
    silver = silver_all.join(now, source, "left_semi")
    audit = spark.read.format("delta").load(tables.audit).persist()
    report = VerifyReport()
    try:
        valid = topic.filter(F.col(_VALID))
        invalid = topic.filter(~F.col(_VALID))
        valid_ids = valid.select(S.MESSAGE_ID).distinct()
        report.totals = {
            "topic_records": topic.count(),
            "valid_records": valid.count(),
            "valid_unique_ids": valid_ids.count(),
            "invalid_records": invalid.count(),
            "bronze_rows": bronze_all.count(),
            "quarantine_rows": quarantine_all.count(),
            "silver_rows": silver_all.count(),
        }
        c = report.checks
        # bronze
        c.append(_check("bronze: missing records", topic.select(*coords).join(bronze, coords, "left_anti"), coords))
        c.append(_check("bronze: duplicated records",
                        bronze.groupBy(*coords).count().filter("count > 1"), [*coords, "count"]))
        c.append(_check("bronze: unexpected records", bronze.join(topic.select(*coords), coords, "left_anti"),
                        coords))
        # quarantine
        c.append(_check("quarantine: invalid records not quarantined",
                        invalid.select(*coords, S.REASON_CODES).join(quarantine.select(*coords), coords,
                                                                      "left_anti"),
                        [*coords, S.REASON_CODES]))
        c.append(_check("quarantine: duplicated records",
                        quarantine.groupBy(*coords).count().filter("count > 1"), [*coords, "count"]))
        c.append(_check("quarantine: valid records quarantined",
                        quarantine.join(valid.select(*coords), coords, "left_semi"), [*coords, S.REASON]))
        c.append(_check("quarantine: rows without a reason",
                        quarantine.filter((F.size(S.REASON_CODES) == 0) | F.col(S.REASON).isNull()), coords))
        expected = invalid.select(*coords, F.col(S.REASON_CODES).alias("expected_codes"))
        c.append(_check("quarantine: reason codes differ from the reference decoding",
                        quarantine.join(expected, coords).filter(
                            F.array_sort(F.array_distinct(S.REASON_CODES)) != F.col("expected_codes")),
                        [*coords, S.REASON_CODES, "expected_codes"]))
        # silver
        c.append(_check("silver: missing message_ids",
                        valid_ids.join(silver_all.select(S.MESSAGE_ID), S.MESSAGE_ID, "left_anti"), [S.MESSAGE_ID]))
        c.append(_check("silver: duplicated message_ids",
                        silver_all.groupBy(S.MESSAGE_ID).count().filter("count > 1"), [S.MESSAGE_ID, "count"]))
        c.append(_check("silver: unexpected message_ids",
                        silver.select(S.MESSAGE_ID).join(valid_ids, S.MESSAGE_ID, "left_anti"), [S.MESSAGE_ID]))
        ref_cols = [*data_fields, S.EVENT_DATE]
        src = valid.select(*coords, F.col(S.MESSAGE_ID).alias("src_id"), F.col(S.PAYLOAD).alias("src_payload"),
                           *[F.col(n).alias(f"src_{n}") for n in ref_cols])
        kept = silver.join(src, coords, "left")
        mismatch = kept.filter(F.col("src_id").isNull() | (F.col("src_id") != F.col(S.MESSAGE_ID))
                               | (F.col("src_payload") != F.col(S.PAYLOAD)))
        c.append(_check("silver: payload mismatches", mismatch, [S.MESSAGE_ID, *coords]))
        differs = F.lit(False)
        for n in ref_cols:
            differs = differs | ~F.col(n).eqNullSafe(F.col(f"src_{n}"))
        c.append(_check("silver: typed values differ from the reference decoding",
                        kept.filter(F.col("src_id").isNotNull() & differs),
                        [S.MESSAGE_ID, *coords, *ref_cols]))
        # coverage: every record ends up somewhere
        unaccounted = (topic.select(*coords, S.MESSAGE_ID, _VALID)
                       .join(quarantine.select(*coords, F.lit(True).alias("_q")), coords, "left")
                       .join(silver_all.select(S.MESSAGE_ID, F.lit(True).alias("_s")), S.MESSAGE_ID, "left")
                       .filter(F.col("_q").isNull() & (F.col("_s").isNull() | ~F.col(_VALID))))
        c.append(_check("coverage: records in neither silver nor quarantine", unaccounted, coords))
        _audit_checks(report, audit)
        current = {name: df.count() for name, df in (("bronze", bronze), ("quarantine", quarantine),
                                                      ("silver", silver))}
        older = sum(report.totals[f"{name}_rows"] - n for name, n in current.items())
        c.append(Check("info: rows of earlier topic incarnations (not in Kafka now)", older, informational=True))
        dropped = report.totals["topic_records"] - current["silver"] - current["quarantine"]
        c.append(Check("info: duplicate copies dropped", max(dropped, 0), informational=True))
        if ledger_files:
            _ledger_checks(spark, report, ledger_files, silver_all, quarantine, now)
        if cfg.gold.tables:
            gold_checks(spark, cfg, report)
    finally:
        for df in (topic, bronze_all, quarantine_all, silver_all, audit):
            df.unpersist()
    return report


def gold_checks(spark: SparkSession, cfg: Config, report: VerifyReport) -> None:
    """Each gold table against its recomputation from silver (see :func:`pipelines.jobs.gold.compare`)."""
    from pipelines.jobs.gold import compare, select_specs

    report.totals.setdefault("gold_groups", 0)
    not_built = []
    try:
        specs = select_specs(spark, cfg)
    except PipelineError as e:
        report.checks.append(Check(f"gold: the declared tables are invalid: {e}", 1))
        return
    for spec in specs:
        try:
            cmp = compare(spark, spec, cfg.table_path("silver"), SAMPLES)
        except Exception as e:  # noqa: BLE001 - reported as a failed check, with the cause
            report.checks.append(Check(f"gold {spec.name}: could not be compared", 1,
                                       [f"{type(e).__name__}: {str(e).strip().splitlines()[0][:300]}"]))
            continue
        if not cmp.built:
            not_built.append(spec.name)
            continue
        report.totals["gold_groups"] += cmp.groups
        report.checks.append(Check(f"gold {spec.name}: groups that differ from the recomputation from silver",
                                   cmp.differing, cmp.samples))
        behind = (cmp.latest_silver_version or 0) - (cmp.silver_version if cmp.silver_version is not None
                                                     else cmp.latest_silver_version or 0)
        report.checks.append(Check(f"info: gold {spec.name}: silver versions not reflected yet", behind,
                                   informational=True))
    if not_built:
        report.checks.append(Check("info: gold tables not built yet (run `gold`): " + ", ".join(not_built),
                                   len(not_built), informational=True))


_AUDIT_COUNTS = ("rows_read", "bronze_inserted", "quarantined", "valid_rows", "duplicates_in_batch",
                 "conflicting_in_batch", "duplicates_in_table", "silver_inserted")


def _audit_checks(report: VerifyReport, audit: DataFrame) -> None:
    """One row per (app id, batch id), no NULL counts, inserted counts that add up to the tables."""
    c = report.checks
    c.append(_check("audit: duplicated batches",
                    audit.groupBy(S.APP_ID, S.BATCH_ID).count().filter("count > 1"), [S.APP_ID, S.BATCH_ID, "count"]))
    any_null = F.lit(False)
    for name in _AUDIT_COUNTS:
        any_null = any_null | F.col(name).isNull()
    c.append(_check("audit: batches with NULL counts", audit.filter(any_null), [S.APP_ID, S.BATCH_ID]))
    sums = audit.agg(*[F.coalesce(F.sum(n), F.lit(0)).alias(n)
                       for n in ("bronze_inserted", "quarantined", "silver_inserted")]).first()
    assert sums is not None
    t = report.totals
    off = [f"{table}: audit says {sums[col]}, the table has {t[rows]}"
           for table, col, rows in (("bronze", "bronze_inserted", "bronze_rows"),
                                    ("quarantine", "quarantined", "quarantine_rows"),
                                    ("silver", "silver_inserted", "silver_rows"))
           if int(sums[col]) != t[rows]]
    c.append(Check("audit: inserted counts that do not add up to the tables", len(off), off))


def _ledger_checks(spark: SparkSession, report: VerifyReport, files: list[Path],
                   silver: DataFrame, quarantine: DataFrame, topic_ids: DataFrame) -> None:
    led = spark.read.schema(
        "topic string, partition int, offset long, kind string, message_id string, expected_reason string"
    ).json([str(f) for f in files]).select(
        F.col("topic").alias(S.KAFKA_TOPIC), F.col("partition").alias(S.KAFKA_PARTITION),
        F.col("offset").alias(S.KAFKA_OFFSET), "kind", S.MESSAGE_ID, "expected_reason",
    ).join(topic_ids, S.KAFKA_TOPIC, "left")  # the ledger names topics; records belong to the current ones
    report.totals["ledger_records"] = led.count()
    if report.totals["ledger_records"] == 0:
        report.checks.append(Check("ledger: no records in ledger files", 1, [str(f) for f in files[:SAMPLES]]))
        return
    good = led.filter(F.col("expected_reason").isNull())
    bad = led.filter(F.col("expected_reason").isNotNull())
    ids = good.select(S.MESSAGE_ID).distinct()
    report.checks.append(_check("ledger: acknowledged message_ids missing from silver",
                                ids.join(silver.select(S.MESSAGE_ID), S.MESSAGE_ID, "left_anti"), [S.MESSAGE_ID]))
    report.checks.append(_check(
        "ledger: malformed records not quarantined with the expected reason",
        bad.join(quarantine, list(S.COORDINATES), "left")
        .filter(F.col(S.REASON).isNull()
                | ~F.exists(S.REASON_CODES, lambda code: F.split(code, ":")[0] == F.col("expected_reason"))),
        [*S.COORDINATES, "kind", "expected_reason", S.REASON]))


def verify_subprocess(conf_file: str, env: dict[str, str], timeout_s: float = 1800.0) -> dict[str, Any]:
    """``verify --ledger --json`` as its own driver process (its own JVM); its report as a dict.

    For harnesses whose jobs run as separate processes (chaos, the cluster demo): ``{"ok": False,
    "error": ...}`` when the process printed no report.
    """
    import json
    import subprocess
    import sys

    from pipelines import paths

    res = subprocess.run([sys.executable, "-m", "pipelines", "--conf", conf_file, "verify", "--ledger", "--json"],
                         env=env, capture_output=True, text=True, cwd=paths.REPO_ROOT, timeout=timeout_s)
    try:
        return dict(json.loads(res.stdout))
    except json.JSONDecodeError:
        return {"ok": False, "error": res.stderr[-2000:]}
