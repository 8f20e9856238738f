"""Backfills that do not read Kafka: archived files, bronze itself, and the quarantine.

Each goes through the same chunked, ledgered, exactly-once run as a Kafka backfill
(:func:`pipelines.jobs.backfill._execute`): the stream's batch path (parse, quarantine rules,
quality suite, in-batch dedupe, insert-if-absent MERGEs under the run's transaction identity).

- **Files** (:func:`run_file_backfill`): JSON lines (one message value per line) or Parquet, at
  any path Hadoop reads (local, ``hdfs://``, ``s3a://``, ``abfss://``, ``gs://``; a file, a folder
  read recursively, or a glob). Parquet files that carry Kafka coordinates and the topic's id
  (an export of bronze, with its ``kafka_*`` names) keep them, so bronze and quarantine recognise
  records the stream wrote; coordinates without the topic's id (``topic``, ``partition``,
  ``offset``: an export of the topic) are kept with the topic id ``unknown``, apart from the live
  records (they could be an earlier incarnation's). Records without
  coordinates get the file's URI as ``kafka_topic`` (a Kafka topic name cannot hold ``:``, so
  these never clash with a topic's records), partition 0, and as offset a 64-bit hash of
  the value: the same file read twice gives the same coordinates (bronze and quarantine add
  nothing the second time), and a line repeated byte for byte within one file is one raw record
  (two different lines of one file with the same 64-bit hash would be taken for one: about one
  chance in 10^7 for a file of a million lines). Without a ``timestamp`` column, the file's
  modification time stands in for Kafka's timestamp.
  Silver is keyed on ``message_id`` whatever the source: a record the stream or another file
  already delivered is not inserted again.
- **Bronze re-derivation** (:func:`run_bronze_backfill`): re-read the raw records bronze stores
  (e.g. after a parser fix) and derive silver and quarantine again. Bronze is not written;
  silver gains the records that pass now; a quarantine row whose record passes now is marked
  replayed.
- **Quarantine replay** (:func:`run_quarantine_replay`): the same for the quarantined records
  only (optionally of one reason, or since a time), read from bronze by their coordinates: the
  records that pass the current parser and rules move into silver once, and their quarantine rows
  are marked (``replayed_at``, ``replayed_by``) and stay as history. Records that still fail stay
  quarantined, unmarked. Repeating it is a no-op.

Both also correct the recorded reasons of quarantine rows whose records still fail, for other
reasons now. Neither deletes: a record a stricter parser would reject stays in silver.

Exactly once under a kill at any point: the silver MERGE commits before the quarantine rows are
marked, so a kill in between leaves records in silver whose rows are not yet marked; the next
replay selects them again, finds them in silver (nothing inserted) and marks them.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from pipelines import logs
from pipelines.config import Config
from pipelines.errors import PipelineError
from pipelines.jobs.backfill import BackfillSummary, Work, _chunk_size, _execute, _utcnow, run_id_for

_log = logs.get("backfill")

if TYPE_CHECKING:
    from pyspark.sql import Column, DataFrame, SparkSession

    from pipelines.jobs.ingest import BatchResult, IngestJob

FORMATS = ("json", "parquet")
#: The topic id of archived records whose files name Kafka's coordinates but not the topic's id.
UNKNOWN_TOPIC_ID = "unknown"


# ---- files ------------------------------------------------------------------------------------
def list_files(spark: SparkSession, path: str) -> list[tuple[str, int, int]]:
    """``(uri, bytes, modification ms)`` of the data files at ``path``, sorted.

    ``path``: a file, a folder (read recursively), or a glob, on any Hadoop filesystem. Hidden
    files (a name starting with ``_`` or ``.``: ``_SUCCESS``, ``.crc``) are skipped, as Spark does.

    Raises:
        PipelineError: nothing there.

    """
    jvm = spark.sparkContext._jvm
    assert jvm is not None
    root = jvm.org.apache.hadoop.fs.Path(path)
    fs = root.getFileSystem(spark.sparkContext._jsc.hadoopConfiguration())
    found: dict[str, tuple[str, int, int]] = {}

    def add(status: Any, base: str) -> None:
        uri = str(status.getPath().toString())
        rel = uri[len(base):] if uri.startswith(base) else uri.rsplit("/", 1)[-1]
        if any(part.startswith(("_", ".")) for part in rel.split("/") if part):
            return
        found[uri] = (uri, int(status.getLen()), int(status.getModificationTime()))

    for status in fs.globStatus(root) or []:
        if status.isDirectory():
            base = str(status.getPath().toString()).rstrip("/") + "/"
            it = fs.listFiles(status.getPath(), True)
            while it.hasNext():
                add(it.next(), base)
        else:
            add(status, str(status.getPath().getParent().toString()).rstrip("/") + "/")
    if not found:
        raise PipelineError(f"no data files at {path}", hint="give a file, a folder or a glob (hidden files, "
                            "names starting with _ or ., are skipped)")
    return sorted(found.values())


def _pack(items: list[tuple[Any, int]], limit: int) -> list[tuple[list[Any], int]]:
    """Consecutive ``(item, size)`` pairs, in order, in groups of at most ``limit`` total size.

    An item larger than ``limit`` is a group alone. Returns ``(items, total size)`` per group.
    """
    groups: list[tuple[list[Any], int]] = []
    for item, size in items:
        if groups and groups[-1][1] + size <= limit:
            groups[-1][0].append(item)
            groups[-1] = (groups[-1][0], groups[-1][1] + size)
        else:
            groups.append(([item], size))
    return groups


def plan_file_chunks(files: list[tuple[str, int, int]], chunk_bytes: int) -> list[Work]:
    """Consecutive files (sorted) grouped into chunks of at most ``chunk_bytes`` (a larger file is a chunk alone)."""
    return [Work(i, json.dumps(group), None)
            for i, (group, _) in enumerate(_pack([(list(f), f[1]) for f in files], chunk_bytes))]


def read_files(spark: SparkSession, fmt: str, paths: list[str]) -> DataFrame:
    """Archived records as Kafka source rows (``key``, ``value``, ``topic``, ``partition``, ``offset``, ...).

    Raises:
        PipelineError: an unknown format, or Parquet without a ``value`` (or ``kafka_value``) column.

    """
    from pyspark.sql import functions as F

    from pipelines.domain import schema as S

    if fmt == "json":
        df = spark.read.text(paths).select(F.col("value").cast("binary").alias(S.SRC_VALUE),
                                           F.col("_metadata.file_path").alias("_file"),
                                           F.col("_metadata.file_modification_time").alias("_file_time"))
    elif fmt == "parquet":
        df = spark.read.parquet(*paths)
        names = {S.KAFKA_TOPIC: S.SRC_TOPIC, S.KAFKA_PARTITION: S.SRC_PARTITION, S.KAFKA_OFFSET: S.SRC_OFFSET,
                 S.KAFKA_TIMESTAMP: S.SRC_TIMESTAMP, S.KAFKA_KEY: S.SRC_KEY, S.KAFKA_VALUE: S.SRC_VALUE,
                 S.KAFKA_HEADERS: S.SRC_HEADERS}
        if S.KAFKA_VALUE in df.columns:  # bronze's own columns (an export of bronze)
            df = df.withColumnsRenamed({k: v for k, v in names.items() if k in df.columns})
        if S.SRC_VALUE not in df.columns:
            raise PipelineError(f"the Parquet files at {paths[0]} have no value column (columns: "
                                f"{', '.join(df.columns)})", hint="archive the message value as `value` (binary "
                                "or string), optionally with Kafka's topic, partition, offset, timestamp, key")
        df = df.withColumns({"_file": F.col("_metadata.file_path"),
                             "_file_time": F.col("_metadata.file_modification_time")})
    else:
        raise PipelineError(f"unknown file format {fmt!r}", hint=f"use one of {', '.join(FORMATS)}")
    value = F.col(S.SRC_VALUE).cast("binary")
    has_coords = all(c in df.columns for c in (S.SRC_TOPIC, S.SRC_PARTITION, S.SRC_OFFSET))
    # Without coordinates (or a row with a NULL one): the file's URI, partition 0, and the value's
    # hash as offset, the same on every read of the file.
    synthetic = {S.SRC_TOPIC: F.col("_file"), S.SRC_PARTITION: F.lit(0), S.SRC_OFFSET: F.xxhash64(value)}
    cols: dict[str, Column] = {
        S.SRC_KEY: F.col(S.SRC_KEY).cast("binary") if S.SRC_KEY in df.columns else F.lit(None).cast("binary"),
        S.SRC_VALUE: value,
        **{name: (F.coalesce(F.col(name).cast(kind), synthetic[name]) if has_coords else synthetic[name])
           for name, kind in ((S.SRC_TOPIC, "string"), (S.SRC_PARTITION, "int"), (S.SRC_OFFSET, "long"))},
        # Without Kafka's timestamp, the file's modification time stands in for it (the record was
        # in Kafka before it was archived; the quality rules bound event times by it).
        S.SRC_TIMESTAMP: (F.coalesce(F.col(S.SRC_TIMESTAMP).cast("timestamp"), F.col("_file_time"))
                          if S.SRC_TIMESTAMP in df.columns else F.col("_file_time")),
    }
    if S.SRC_HEADERS in df.columns:
        cols[S.SRC_HEADERS] = F.col(S.SRC_HEADERS).cast(S.HEADERS_TYPE)
    if has_coords:
        # Kafka's coordinates without the topic's id could be those of an earlier incarnation of the
        # topic (deleted and recreated) or of another cluster: kept apart from the live records.
        # (A bronze export's NULL ids are rows that came from files: they stay NULL.)
        cols[S.KAFKA_TOPIC_ID] = (F.col(S.KAFKA_TOPIC_ID).cast("string") if S.KAFKA_TOPIC_ID in df.columns
                                  else F.lit(UNKNOWN_TOPIC_ID))
    # One row per coordinates, as Kafka delivers them (the keyed writes insert every copy of a key
    # the table lacks): a line repeated within a file, an export holding a record twice.
    keys = [S.SRC_TOPIC, S.SRC_PARTITION, S.SRC_OFFSET, *([S.KAFKA_TOPIC_ID] if S.KAFKA_TOPIC_ID in cols else [])]
    return df.select(*[c.alias(n) for n, c in cols.items()]).dropDuplicates(keys)


def run_file_backfill(spark: SparkSession, cfg: Config, path: str, *, fmt: str = "json",
                      chunk_mb: float | None = None, job: IngestJob | None = None,
                      out: Callable[[str], None] | None = _log.info,
                      on_chunk: Callable[[Work, BatchResult], None] | None = None) -> BackfillSummary:
    """Backfill archived files (see the module docstring); returns what the run did.

    Chunks are groups of whole files of about ``backfill.file_chunk_mb``; the run is the list of
    files with their sizes and modification times: the same files run again add nothing, a
    killed run started again skips its finished chunks, and a changed or added file makes it a
    new run (whose keyed writes skip what is there).
    """
    from pipelines.io.binding import check_source

    if fmt not in FORMATS:
        raise PipelineError(f"unknown file format {fmt!r}", hint=f"--format is one of {', '.join(FORMATS)}")
    mb = cfg.backfill.file_chunk_mb if chunk_mb is None else chunk_mb
    if mb <= 0:
        raise PipelineError(f"file chunks must hold some bytes, got {mb} MB",
                            hint="--chunk-mb (or backfill.file_chunk_mb) must be > 0")
    files = list_files(spark, path)
    works = plan_file_chunks(files, int(mb * 1024 * 1024))
    source = check_source(spark, cfg, cfg.table_path("bronze"))
    run_id = run_id_for("files", {"format": fmt}, works)
    summary = BackfillSummary(run_id, "files", ranges={"path": path, "format": fmt, "files": len(files),
                                                       "bytes": sum(f[1] for f in files)})

    def prepare(job: IngestJob) -> None:
        job.topic_ids = source.topics

    return _execute(spark, cfg, summary, works, lambda w: read_files(spark, fmt, [f[0] for f in json.loads(w.spec)]),
                    job=job, out=out, on_chunk=on_chunk, prepare=prepare)


# ---- bronze re-derivation and quarantine replay ---------------------------------------------------
def plan_batch_chunks(groups: list[tuple[str, int, int]], chunk_records: int) -> list[Work]:
    """Chunks of whole batches, at most ``chunk_records`` rows each (a larger batch alone).

    ``groups``: stored rows counted by the batch that wrote them, ``(app id, batch id, rows)``,
    in the order to run them.
    """
    return [Work(i, json.dumps(group), rows) for i, (group, rows) in
            enumerate(_pack([([app_id, int(batch_id)], int(n)) for app_id, batch_id, n in groups], chunk_records))]


def _batches_predicate(batches: list[list[Any]]) -> Column:
    from pyspark.sql import functions as F

    from pipelines.domain import schema as S

    by_app: dict[str, list[int]] = {}
    for app_id, batch_id in batches:
        by_app.setdefault(app_id, []).append(int(batch_id))
    cond = F.lit(False)
    for app_id, ids in sorted(by_app.items()):
        cond = cond | ((F.col(S.APP_ID) == app_id) & F.col(S.BATCH_ID).isin(sorted(ids)))
    return cond


def _as_source_rows(bronze: DataFrame) -> DataFrame:
    """Bronze rows as Kafka source rows, keeping the topic incarnation's id."""
    from pyspark.sql import functions as F

    from pipelines.domain import schema as S

    return bronze.select(
        F.col(S.KAFKA_KEY).alias(S.SRC_KEY), F.col(S.KAFKA_VALUE).alias(S.SRC_VALUE),
        F.col(S.KAFKA_TOPIC).alias(S.SRC_TOPIC), F.col(S.KAFKA_PARTITION).alias(S.SRC_PARTITION),
        F.col(S.KAFKA_OFFSET).alias(S.SRC_OFFSET), F.col(S.KAFKA_TIMESTAMP).alias(S.SRC_TIMESTAMP),
        F.col(S.KAFKA_HEADERS).alias(S.SRC_HEADERS), S.KAFKA_TOPIC_ID,
    )


def _in_bronze(bronze: DataFrame, rows: DataFrame) -> DataFrame:
    """The bronze rows at the coordinates of ``rows`` (null-safe: file rows have no topic id)."""
    from pipelines.domain import schema as S

    coords = list(S.COORDINATES)
    wanted = rows.select(*[rows[c].alias(f"_w_{c}") for c in coords])
    return bronze.join(wanted, [bronze[c].eqNullSafe(wanted[f"_w_{c}"]) for c in coords], "left_semi")


def _batch_groups(df: DataFrame) -> list[tuple[str, int, int]]:
    """``(app id, batch id, rows)`` of the stored rows, oldest batch first."""
    from pyspark.sql import functions as F

    from pipelines.domain import schema as S

    rows = (df.groupBy(S.APP_ID, S.BATCH_ID).agg(F.count(F.lit(1)).alias("n"), F.min(S.INGESTED_AT).alias("t"))
            .orderBy("t", S.APP_ID, S.BATCH_ID).collect())
    return [(r[S.APP_ID], int(r[S.BATCH_ID]), int(r["n"])) for r in rows]


def settle_quarantine(spark: SparkSession, path: str, run_id: str, parsed: DataFrame,
                      topic_ids: Mapping[str, str] | None = None) -> int:
    """Bring the quarantine rows of re-parsed records up to date; returns the rows marked replayed.

    ``parsed``: records run through the current parser and rules (after silver committed the
    ones that pass). A quarantine row not replayed yet whose record passes now is marked
    (``replayed_at``, ``replayed_by``: its record is in silver); one whose record still fails, for
    other reasons than recorded, gets the current reasons. Nothing is committed when nothing
    changes, so a repeated replay writes nothing. ``topic_ids`` (topic name -> id) gives rows read
    from Kafka, which carry no ``kafka_topic_id`` yet, the id the batch recorded.
    """
    from delta.tables import DeltaTable
    from pyspark.sql import functions as F

    from pipelines.domain import schema as S
    from pipelines.domain import transforms as X
    from pipelines.io import writers
    from pipelines.jobs.backfill import CONFLICT_RETRIES
    from pipelines.jobs.ingest import offset_range_predicate

    coords = list(S.COORDINATES)
    if S.KAFKA_TOPIC_ID not in parsed.columns:
        parsed = parsed.transform(X.with_lineage(0, run_id, F.current_timestamp(), topic_ids))
    s = parsed.select(*coords, (F.size(S.REASON_CODES) == 0).alias("_ok"), S.REASON, S.REASON_CODES,
                      S.REASON_MESSAGE).alias("s")
    q = (spark.read.format("delta").load(path).filter(F.col(S.REPLAYED_AT).isNull())
         .select(*coords, F.col(S.REASON_CODES).alias("_old")).alias("q"))
    joined = s.join(q, [F.col(f"s.{c}").eqNullSafe(F.col(f"q.{c}")) for c in coords], "inner")
    todo = joined.filter(F.col("s._ok") | ~F.col(f"s.{S.REASON_CODES}").eqNullSafe(F.col("q._old"))).select("s.*")
    todo = todo.persist()
    try:
        ranges = todo.groupBy(S.KAFKA_TOPIC, S.KAFKA_PARTITION).agg(
            F.count(F.lit(1)).alias("n"), F.sum(F.col("_ok").cast("long")).alias("ok"),
            F.min(S.KAFKA_OFFSET).alias("lo"), F.max(S.KAFKA_OFFSET).alias("hi")).collect()
        if not ranges:
            return 0
        offsets: dict[str, dict[str, list[int]]] = {}
        for r in ranges:
            offsets.setdefault(r[S.KAFKA_TOPIC], {})[str(r[S.KAFKA_PARTITION])] = [int(r["lo"]), int(r["hi"])]
        # Only the files that can hold these coordinates are read (and conflict-checked).
        cond = (f"({offset_range_predicate(offsets)}) AND " + " AND ".join(f"t.`{c}` <=> s.`{c}`" for c in coords)
                + f" AND t.{S.REPLAYED_AT} IS NULL")

        def merge() -> None:
            (DeltaTable.forPath(spark, path).alias("t").merge(todo.alias("s"), cond)
             .whenMatchedUpdate(condition="s._ok", set={S.REPLAYED_AT: F.lit(_utcnow()).cast("timestamp"),
                                                        S.REPLAYED_BY: F.lit(run_id)})
             .whenMatchedUpdate(set={c: f"s.{c}" for c in (S.REASON, S.REASON_CODES, S.REASON_MESSAGE)})
             .execute())

        writers.retry_on_conflict(merge, retries=CONFLICT_RETRIES)
        return sum(int(r["ok"] or 0) for r in ranges)
    finally:
        todo.unpersist()


def run_bronze_backfill(spark: SparkSession, cfg: Config, *, start: dt.datetime | None = None,
                        end: dt.datetime | None = None, chunk_records: int | None = None,
                        job: IngestJob | None = None, out: Callable[[str], None] | None = _log.info,
                        on_chunk: Callable[[Work, BatchResult], None] | None = None) -> BackfillSummary:
    """Re-derive silver and quarantine from bronze's raw records ingested in [start, end).

    Chunks are whole original batches (by the app id and batch id bronze recorded). To resume a
    killed run, give the same ``--to`` (without it the range ends now, which makes a new run).
    """
    from pipelines.domain import schema as S

    size = _chunk_size(cfg, chunk_records)
    _ensure_tables(spark, cfg)
    bronze_path = cfg.table_path("bronze")
    end = end or dt.datetime.now(dt.UTC)
    bronze = spark.read.format("delta").load(bronze_path).filter(_time_filter(S.INGESTED_AT, start, end))
    works = plan_batch_chunks(_batch_groups(bronze), size)
    # The contract is part of the run: a re-derivation after another parser or rule fix is a new run.
    params = {"from": start.isoformat() if start else None, "to": end.isoformat(), "contract": _contract(cfg)}
    summary = BackfillSummary(run_id_for("bronze", params, works), "bronze", ranges=params)

    def read(w: Work) -> DataFrame:
        return _as_source_rows(bronze.filter(_batches_predicate(json.loads(w.spec))))

    def prepare(job: IngestJob) -> None:
        job.write_bronze = False

    return _execute(spark, cfg, summary, works, read, job=job, out=out, on_chunk=on_chunk, prepare=prepare)


def quarantine_selection(spark: SparkSession, cfg: Config, *, reason: str | None = None,
                         since: dt.datetime | None = None) -> DataFrame:
    """Quarantine rows not replayed yet, of ``reason`` and quarantined at or after ``since``.

    ``reason`` matches the primary reason or any reason code, with or without its ``:field`` part.
    """
    from pyspark.sql import functions as F

    from pipelines.domain import schema as S

    df = spark.read.format("delta").load(cfg.table_path("quarantine")).filter(F.col(S.REPLAYED_AT).isNull())
    if reason:
        df = df.filter((F.col(S.REASON) == reason) | F.exists(
            S.REASON_CODES, lambda c: (c == reason) | c.startswith(reason + ":")))
    return df.filter(_time_filter(S.INGESTED_AT, since, None))


def parsed_now(rows: DataFrame, cfg: Config) -> DataFrame:
    """Source ``rows`` run through the current contract and quarantine rules (reason codes set)."""
    from pipelines.domain import transforms as X
    from pipelines.domain.schema import EventSpec
    from pipelines.quality.batch import batch_quality

    spec = EventSpec.from_config(cfg.events)
    quality = batch_quality(cfg, spec)
    parsed = rows.transform(X.parse_records(spec))
    return parsed.transform(quality.route) if quality is not None else parsed


def passing_now(rows: DataFrame, cfg: Config) -> DataFrame:
    """The source ``rows`` whose records pass the current contract and quarantine rules."""
    from pyspark.sql import functions as F

    from pipelines.domain import schema as S

    parsed = parsed_now(rows, cfg)
    ok = parsed.filter(F.size(S.REASON_CODES) == 0).select(
        F.col(S.KAFKA_TOPIC).alias(S.SRC_TOPIC), F.col(S.KAFKA_PARTITION).alias(S.SRC_PARTITION),
        F.col(S.KAFKA_OFFSET).alias(S.SRC_OFFSET), S.KAFKA_TOPIC_ID)
    keys = [S.SRC_TOPIC, S.SRC_PARTITION, S.SRC_OFFSET, S.KAFKA_TOPIC_ID]
    cond = [rows[k].eqNullSafe(ok[k]) for k in keys]
    return rows.join(ok, cond, "left_semi")


def run_quarantine_replay(spark: SparkSession, cfg: Config, *, reason: str | None = None,
                          since: dt.datetime | None = None, chunk_records: int | None = None,
                          dry_run: bool = False, job: IngestJob | None = None,
                          out: Callable[[str], None] | None = _log.info,
                          on_chunk: Callable[[Work, BatchResult], None] | None = None) -> BackfillSummary:
    """Re-run quarantined records through the current parser and rules (see the module docstring).

    Only the selected records that pass now are handed to the batch path (``rows_read``), so the
    records that still fail cause no write, and a repeated replay writes nothing. With
    ``dry_run`` nothing is written: ``records`` counts the selected rows and ``passing`` those
    that would move (before the dedupe against silver).
    """
    size = _chunk_size(cfg, chunk_records)
    _ensure_tables(spark, cfg)  # before reading the replay columns (a table to migrate says so)
    selected = quarantine_selection(spark, cfg, reason=reason, since=since)
    bronze = spark.read.format("delta").load(cfg.table_path("bronze"))
    works = plan_batch_chunks(_batch_groups(selected), size)
    params = {"reason": reason, "since": since.isoformat() if since else None, "contract": _contract(cfg)}
    summary = BackfillSummary(run_id_for("quarantine", params, works), "quarantine", ranges=params)

    def records(w: Work) -> DataFrame:
        return _as_source_rows(_in_bronze(bronze, selected.filter(_batches_predicate(json.loads(w.spec)))))

    if dry_run:
        found = _as_source_rows(_in_bronze(bronze, selected)).persist()
        try:
            summary.chunks = len(works)
            summary.records = sum(w.records or 0 for w in works)
            summary.rows_read = found.count()
            summary.passing = passing_now(found, cfg).count()
        finally:
            found.unpersist()
        if out is not None:
            out(f"[quarantine replay] dry run: {summary.records} quarantined rows selected, {summary.rows_read} "
                f"found in bronze, {summary.passing} pass the current parser and rules (they would move to "
                "silver, less those already there); nothing written")
        return summary

    def prepare(job: IngestJob) -> None:
        job.write_bronze = False
        job.after_writes = None  # only records that pass reach the batch: settled after the chunk

    def settle(w: Work, _res: BatchResult) -> None:
        # After the chunk's silver commit: mark the rows that passed, correct the reasons of the rest.
        summary.replayed += settle_quarantine(spark, cfg.table_path("quarantine"), summary.run_id,
                                              parsed_now(records(w), cfg))

    return _execute(spark, cfg, summary, works, lambda w: passing_now(records(w), cfg), job=job, out=out,
                    on_chunk=on_chunk, prepare=prepare, after_chunk=settle)


def _ensure_tables(spark: SparkSession, cfg: Config) -> None:
    from pipelines.domain.schema import EventSpec
    from pipelines.io.tables import TablePaths, ensure_tables

    ensure_tables(spark, TablePaths.from_config(cfg), EventSpec.from_config(cfg.events))


def _contract(cfg: Config) -> str:
    """The fingerprint of the event contract and quarantine rules the records are routed by now."""
    from pipelines.domain.schema import EventSpec
    from pipelines.jobs.ingest import contract_id_of
    from pipelines.quality.batch import batch_quality

    spec = EventSpec.from_config(cfg.events)
    return contract_id_of(spec, batch_quality(cfg, spec)) + "-" + code_fingerprint()


def code_fingerprint() -> str:
    """A hash of the code that parses and routes records: a parser fix changes it, and so the run."""
    import hashlib
    from importlib.resources import files

    # importlib.resources: the same bytes whether the package is a folder or a zip (--py-files).
    root = files("pipelines")
    quality = sorted((f for f in root.joinpath("quality").iterdir() if f.name.endswith(".py")), key=lambda f: f.name)
    parts = [root.joinpath("domain", "transforms.py"), root.joinpath("domain", "schema.py"), *quality]
    return hashlib.sha256(b"".join(f.read_bytes() for f in parts)).hexdigest()[:12]


def _time_filter(column: str, start: dt.datetime | None, end: dt.datetime | None) -> Column:
    """``start <= column < end`` (open sides: no bound); times compared in UTC."""
    from pyspark.sql import functions as F

    cond = F.lit(True)
    if start is not None:
        cond = cond & (F.col(column) >= F.lit(_naive_utc(start)))
    if end is not None:
        cond = cond & (F.col(column) < F.lit(_naive_utc(end)))
    return cond


def _naive_utc(t: dt.datetime) -> dt.datetime:
    return t.astimezone(dt.UTC).replace(tzinfo=None) if t.tzinfo else t
