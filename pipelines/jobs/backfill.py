"""Bounded batch backfills of a Kafka range, through the stream's own batch path.

(Archived files, a re-derivation from bronze and the quarantine replay run the same way:
:mod:`pipelines.jobs.replay`.)

A backfill reads a bounded range of the topic (by record timestamps, ``--from``/``--to``, or by
explicit per-partition offsets) as a batch job, in chunks of at most ``backfill.chunk_records``
records, and hands each chunk to :meth:`IngestJob.process_batch`: the same parse, quarantine
rules, quality suite, in-batch dedupe and insert-if-absent MERGEs into the same bronze,
quarantine, silver, audit and quality tables as the stream. So a backfill is idempotent by
construction, whatever it overlaps:

- bronze is keyed on the Kafka coordinates, quarantine too, silver on ``message_id``: a record
  the stream (or an earlier backfill) already wrote is not written again;
- each chunk is one transaction per table under the run's own transaction identity
  (app id ``backfill-<hash of the range>``, batch id = chunk number): a chunk that committed is
  skipped by Delta if it runs again, and checked against its commit (same offsets, same contract)
  like a re-run stream batch;
- the ledger (the ``backfills`` table) gets one row per run and chunk when the chunk has
  committed everywhere: a run started again skips the chunks its ledger says are done (a killed
  run redoes at most the chunk it was in), and a completed range run again adds nothing and
  says so.

Concurrency with the live stream: both MERGE into the same tables; Delta refuses the later of
two conflicting commits, and both sides try a refused write again (bounded, jittered waits:
:func:`pipelines.io.writers.retry_on_conflict`), which is safe because a refused commit wrote
nothing and the writes are keyed.
"""

from __future__ import annotations

import argparse
import datetime as dt
import functools
import hashlib
import json
import math
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from pipelines import logs
from pipelines.config import Config, load_config
from pipelines.errors import PipelineError

_log = logs.get("backfill")

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

    from pipelines.jobs.ingest import BatchResult, IngestJob

#: topic -> partition -> [first offset, end offset) (the end excluded, as Spark's endingOffsets).
Ranges = dict[str, dict[int, tuple[int, int]]]

DONE = "done"
FAILED = "failed"
#: App ids of backfill runs start with this (the stream leaves their chunks' audit rows to them).
APP_PREFIX = "backfill-"
#: A backfill chunk's MERGE is long and the live stream commits often: it may lose several races
#: in a row before it wins one, so it is more patient than a stream batch.
CONFLICT_RETRIES = 30


@dataclass(frozen=True)
class Chunk:
    """One bounded piece of a backfill: a transaction per table."""

    index: int
    ranges: Ranges

    @property
    def records(self) -> int:
        """Offsets covered (records, less the gaps transaction markers leave)."""
        return sum(end - start for parts in self.ranges.values() for start, end in parts.values())

    def as_json(self) -> str:
        """``{"topic": {"partition": [start, end]}}``, for the ledger."""
        return json.dumps({t: {str(p): list(r) for p, r in sorted(parts.items())}
                           for t, parts in sorted(self.ranges.items())}, sort_keys=True)


def plan_chunks(ranges: Ranges, chunk_records: int) -> list[Chunk]:
    """Split ``ranges`` into chunks of at most ``chunk_records`` offsets.

    Every chunk takes the same share of each partition's range (so each chunk spans all
    partitions, like a stream batch), and the chunks cover the ranges exactly, without overlap,
    in offset order. Pure and deterministic: the same ranges give the same chunks, which is what
    lets a run started again recognise its finished chunks.
    """
    if chunk_records < 1:
        raise ValueError(f"chunk_records must be >= 1, got {chunk_records}")
    live = {(t, p): (s, e) for t, parts in ranges.items() for p, (s, e) in parts.items() if e > s}
    total = sum(e - s for s, e in live.values())
    if not total:
        return []
    n = math.ceil(total / chunk_records)
    # Each partition's range in n contiguous steps of floor(size / n) offsets; the remainders go
    # one offset at a time to the chunks round-robin (a cursor shared by all partitions), so
    # every chunk holds floor(total / n) or ceil(total / n) <= chunk_records offsets.
    chunks: list[Ranges] = [{} for _ in range(n)]
    cursor = 0
    for (t, p), (s, e) in sorted(live.items()):
        base, extra = divmod(e - s, n)
        gets_extra = {(cursor + k) % n for k in range(extra)}
        cursor = (cursor + extra) % n
        pos = s
        for i in range(n):
            step = base + (1 if i in gets_extra else 0)
            if step:
                chunks[i].setdefault(t, {})[p] = (pos, pos + step)
                pos += step
    return [Chunk(i, c) for i, c in enumerate(chunks)]


def parse_offsets(text: str) -> Ranges:
    """``{"topic": {"0": [start, end], ...}}`` (end excluded) -> :data:`Ranges`.

    Raises:
        PipelineError: not that shape, or an end before its start.

    """
    try:
        raw = json.loads(text)
        ranges = {str(t): {int(p): (int(r[0]), int(r[1])) for p, r in parts.items()} for t, parts in raw.items()}
    except (ValueError, TypeError, AttributeError, IndexError, KeyError) as e:
        raise PipelineError(f"--offsets is not valid: {e}",
                            hint='give JSON like {"events": {"0": [0, 5000], "1": [0, 5000]}} '
                                 "(per topic and partition: first offset, end offset excluded)") from e
    bad = [f"{t}/{p}: {s}..{e}" for t, parts in ranges.items() for p, (s, e) in parts.items() if s < 0 or e < s]
    if bad:
        raise PipelineError(f"--offsets has ranges that end before they start: {', '.join(bad)}",
                            hint="each range is [first offset, end offset), end >= first >= 0")
    return ranges


def parse_time(text: str) -> dt.datetime:
    """An ISO-8601 time (``2026-12-01``, ``2026-12-01T10:00:00Z``); no zone means UTC."""
    try:
        t = dt.datetime.fromisoformat(text.replace("Z", "+00:00") if text.endswith("Z") else text)
    except ValueError as e:
        raise PipelineError(f"not an ISO-8601 time: {text!r}", hint="e.g. 2026-12-01 or 2026-12-01T10:00:00Z") from e
    return t if t.tzinfo else t.replace(tzinfo=dt.UTC)


def _ms(t: dt.datetime) -> int:
    return int(t.timestamp() * 1000)


def resolve_kafka_range(spark: SparkSession, cfg: Config, *, start: dt.datetime | None = None,
                        end: dt.datetime | None = None, offsets: Ranges | None = None) -> Ranges:
    """The offsets to read, checked against what the topic holds.

    From record timestamps (``start`` included, ``end`` excluded; an open side means the
    earliest / the latest stable offset now), or explicit ``offsets``.

    Raises:
        PipelineError: both or neither of times and offsets; an unknown topic or partition; a
            range the topic no longer (retention) or not yet holds.

    """
    from pipelines.io.binding import list_offsets

    if offsets is not None and (start or end):
        raise PipelineError("give either --from/--to or --offsets, not both")
    if end is not None and end > dt.datetime.now(dt.UTC):
        raise PipelineError(f"--to {end.isoformat()} is in the future: records up to it may still arrive, and a "
                            "backfill is a bounded range", hint="end the range at a past time, or leave --to out "
                            "to read up to the latest stable offset now")
    earliest = list_offsets(spark, cfg, "earliest")
    latest = list_offsets(spark, cfg, "latest")
    if offsets is None:
        lo = earliest if start is None else list_offsets(spark, cfg, _ms(start))
        hi = latest if end is None else list_offsets(spark, cfg, _ms(end))
        return {t: {p: (lo[t][p], max(lo[t][p], hi[t][p])) for p in parts} for t, parts in latest.items()}
    problems = []
    for t, parts in offsets.items():
        if t not in latest:
            problems.append(f"topic {t} is not in kafka.topics ({', '.join(cfg.kafka.topics)})")
            continue
        for p, (s, e) in parts.items():
            if p not in latest[t]:
                problems.append(f"{t} has no partition {p}")
            elif e > s and s < earliest[t][p]:
                problems.append(f"{t}/{p} starts at {s}, but the topic holds offsets from {earliest[t][p]} on "
                                "(retention removed the rest)")
            elif e > latest[t][p]:
                problems.append(f"{t}/{p} ends at {e}, but the topic's latest stable offset is {latest[t][p]}")
    if problems:
        raise PipelineError("cannot backfill these offsets: " + "; ".join(problems),
                            hint="records older than retention: backfill them from archived files; "
                                 "records not written yet: wait, or end the range earlier")
    return offsets


def run_id_of(ranges: Ranges, chunk_records: int, source: Mapping[str, Any]) -> str:
    """``backfill-<hash>`` of what a run is; the same run is the same transaction app id.

    What a run is: the source (cluster id, topic ids: a recreated topic is another source), the
    ranges and the chunk size (which fixes what each chunk number holds).
    """
    canon = json.dumps({"source": dict(source), "chunk_records": int(chunk_records),
                        "ranges": {t: {str(p): list(r) for p, r in sorted(parts.items()) if r[1] > r[0]}
                                   for t, parts in sorted(ranges.items())}}, sort_keys=True)
    return APP_PREFIX + hashlib.sha256(f"kafka:{canon}".encode()).hexdigest()[:16]


def read_chunk(spark: SparkSession, cfg: Config, chunk: Chunk) -> DataFrame:
    """The chunk's records as the stream sees them (same columns, headers, isolation level)."""
    from pipelines.io.kafka_source import source_options

    opts = source_options(cfg, streaming=False)
    del opts["subscribe"]
    opts["assign"] = json.dumps({t: sorted(parts) for t, parts in chunk.ranges.items()})
    opts["startingOffsets"] = json.dumps({t: {str(p): r[0] for p, r in parts.items()}
                                          for t, parts in chunk.ranges.items()})
    opts["endingOffsets"] = json.dumps({t: {str(p): r[1] for p, r in parts.items()}
                                        for t, parts in chunk.ranges.items()})
    return spark.read.format("kafka").options(**opts).load()


# ---- the ledger -------------------------------------------------------------------------------
@functools.cache
def ledger_schema() -> Any:
    """One row per backfill run and chunk."""
    from pyspark.sql import types as T

    long = T.LongType()
    return T.StructType([
        T.StructField("run_id", T.StringType(), False),
        T.StructField("chunk", T.IntegerType(), False),
        T.StructField("source", T.StringType(), False),
        T.StructField("ranges", T.StringType(), False),
        T.StructField("status", T.StringType(), False),
        T.StructField("rows_read", long), T.StructField("bronze_inserted", long),
        T.StructField("quarantined", long), T.StructField("silver_inserted", long),
        T.StructField("duplicates_in_batch", long), T.StructField("duplicates_in_table", long),
        T.StructField("table_versions", T.MapType(T.StringType(), long)),
        T.StructField("started_at", T.TimestampType()), T.StructField("finished_at", T.TimestampType()),
        T.StructField("attempts", T.IntegerType()),
        T.StructField("error", T.StringType()),
    ])


def ensure_ledger(spark: SparkSession, path: str) -> None:
    """Create the ledger table if absent."""
    from delta.tables import DeltaTable

    if not DeltaTable.isDeltaTable(spark, path):
        from pipelines.io.tables import COMMON_PROPERTIES

        builder = DeltaTable.createIfNotExists(spark).location(path).addColumns(ledger_schema())
        for key, value in COMMON_PROPERTIES.items():
            builder = builder.property(key, value)
        builder.execute()


def ledger_rows(spark: SparkSession, path: str, run_id: str | None = None) -> list[Any]:
    """The ledger's rows (of one run), by run and chunk."""
    from delta.tables import DeltaTable
    from pyspark.sql import functions as F

    if not DeltaTable.isDeltaTable(spark, path):
        return []
    df = spark.read.format("delta").load(path)
    if run_id is not None:
        df = df.filter(F.col("run_id") == run_id)
    return df.orderBy(F.col("started_at").desc_nulls_last(), "run_id", "chunk").collect()


def _record(spark: SparkSession, path: str, row: tuple[Any, ...]) -> None:
    """Upsert the ledger row of (run, chunk): a ``done`` row is never replaced; ``attempts`` counts runs."""
    from delta.tables import DeltaTable

    from pipelines.io import writers

    source = spark.createDataFrame([row], ledger_schema())
    cols = ledger_schema().fieldNames()

    def upsert() -> None:
        (DeltaTable.forPath(spark, path).alias("t")
         .merge(source.alias("s"), "t.run_id = s.run_id AND t.chunk = s.chunk")
         .whenMatchedUpdate(condition=f"t.status <> '{DONE}'",
                            set={**{c: f"s.{c}" for c in cols}, "attempts": "coalesce(t.attempts, 0) + 1"})
         .whenNotMatchedInsertAll().execute())

    writers.retry_on_conflict(upsert)


# ---- the run ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Work:
    """One chunk of any source, as the ledger records it."""

    index: int
    #: JSON of what the chunk covers (the ledger's ``ranges``): Kafka offsets, files, or batches.
    spec: str
    #: Records expected (None: unknown until read, e.g. files).
    records: int | None


def run_id_for(kind: str, params: Mapping[str, Any], works: list[Work]) -> str:
    """``backfill-<hash>`` of a run that is not a Kafka range: its kind, parameters and chunks."""
    canon = json.dumps({"kind": kind, "params": dict(params), "chunks": [w.spec for w in works]}, sort_keys=True)
    return APP_PREFIX + hashlib.sha256(canon.encode()).hexdigest()[:16]


@dataclass
class BackfillSummary:
    """What one backfill run (``run_backfill``, ``run_file_backfill``, ...) did."""

    run_id: str
    source: str = "kafka"
    chunks: int = 0
    #: Chunks the ledger already had as done (skipped without reading).
    chunks_done_before: int = 0
    chunks_run: int = 0
    records: int = 0
    rows_read: int = 0
    bronze_inserted: int = 0
    quarantined: int = 0
    silver_inserted: int = 0
    duplicates_in_batch: int = 0
    duplicates_in_table: int = 0
    #: Quarantine rows this run marked replayed (their records now pass: in silver).
    replayed: int = 0
    #: Quarantine replay dry run: selected records that pass now (None otherwise).
    passing: int | None = None
    seconds: float = 0.0
    #: Seconds spent pausing between chunks (``backfill.max_records_per_second``).
    paused_s: float = 0.0
    ranges: Any = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        """Plain dict (for JSON)."""
        return asdict(self)

    def line(self) -> str:
        """One line for people."""
        if not self.chunks:
            return f"[backfill] {self.run_id}: nothing to read ({self.source}); this run added nothing"
        if self.chunks_done_before == self.chunks:
            return (f"[backfill] {self.run_id}: all {self.chunks} chunks were done before; this run added nothing")
        added = self.bronze_inserted + self.quarantined + self.silver_inserted + self.replayed
        replayed = f" | quarantine rows replayed {self.replayed}" if self.source in ("bronze", "quarantine") else ""
        return (f"[backfill] {self.run_id} ({self.source}): {self.chunks_run} chunks run ({self.chunks_done_before} "
                f"done before), read {self.rows_read} | bronze +{self.bronze_inserted} | quarantined "
                f"+{self.quarantined} | silver +{self.silver_inserted} | dups in batch {self.duplicates_in_batch} | "
                f"dups vs table {self.duplicates_in_table}{replayed}"
                + ("" if added else " | added nothing: every record was there") + f" | {self.seconds:.1f}s"
                + (f" ({self.paused_s:.1f}s paused by backfill.max_records_per_second)" if self.paused_s else ""))


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(tzinfo=None)


def _chunk_size(cfg: Config, chunk_records: int | None) -> int:
    size = cfg.backfill.chunk_records if chunk_records is None else chunk_records
    if size < 1:
        raise PipelineError(f"chunks must hold at least one record, got {size}",
                            hint="--chunk-records (or backfill.chunk_records) must be >= 1")
    return size


class RateLimit:
    """Holds the average rate of a run to ``max_per_s`` rows per second by pausing between chunks.

    A chunk runs at full speed; the pause after it lasts until the rows so far are due at the
    limit, so the live stream has the cores to itself meanwhile. ``None``: no limit.
    """

    def __init__(self, max_per_s: float | None, *, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        if max_per_s is not None and max_per_s <= 0:
            raise PipelineError(f"backfill.max_records_per_second must be > 0 (or null: no limit), got {max_per_s}")
        self.max_per_s, self.clock, self.sleep = max_per_s, clock, sleep
        self.started = clock()
        self.rows = 0

    def after(self, rows: int) -> float:
        """Account for a chunk of ``rows``; pause if ahead of the limit. Returns the seconds paused."""
        self.rows += rows
        if self.max_per_s is None:
            return 0.0
        pause = self.started + self.rows / self.max_per_s - self.clock()
        if pause <= 0:
            return 0.0
        self.sleep(pause)
        return pause


def _execute(spark: SparkSession, cfg: Config, summary: BackfillSummary, works: list[Work],
             read: Callable[[Work], DataFrame], *, job: IngestJob | None = None,
             out: Callable[[str], None] | None = _log.info,
             on_chunk: Callable[[Work, BatchResult], None] | None = None,
             prepare: Callable[[IngestJob], None] | None = None,
             after_chunk: Callable[[Work, BatchResult], None] | None = None) -> BackfillSummary:
    """Run ``works`` through the stream's batch path under the run's identity, with the ledger.

    Chunks the ledger has as done are skipped; each chunk run is recorded (done, or failed with
    its error). ``prepare`` adjusts the job (e.g. no bronze write, a hook after the writes);
    ``after_chunk`` runs after each chunk's writes, before its ledger row.
    """
    from pipelines.domain.schema import EventSpec
    from pipelines.io import writers
    from pipelines.io.tables import TablePaths, ensure_tables
    from pipelines.jobs.ingest import IngestJob

    t0 = time.monotonic()
    run_id = summary.run_id
    tables = TablePaths.from_config(cfg)
    summary.chunks = len(works)
    summary.records = sum(w.records or 0 for w in works)
    ensure_tables(spark, tables, EventSpec.from_config(cfg.events))
    ledger = cfg.table_path("backfills")
    ensure_ledger(spark, ledger)
    by_index = {w.index: w for w in works}
    done = set()
    for r in ledger_rows(spark, ledger, run_id):
        if r["status"] == DONE:
            if r["chunk"] not in by_index or r["ranges"] != by_index[r["chunk"]].spec:
                raise PipelineError(f"the ledger's chunk {r['chunk']} of run {run_id} covers {r['ranges']}, not what "
                                    "this run plans for it: refusing to skip or redo it",
                                    hint=f"inspect the ledger ({ledger}); this should not happen")
            done.add(r["chunk"])
    summary.chunks_done_before = len(done)
    job = job or IngestJob.from_config(cfg, app_id=run_id, out=None)
    if job.app_id(spark) != run_id:
        raise ValueError(f"the job's app id must be the run id {run_id}, got {job.app_id(spark)}")
    # A chunk started by a killed run may have committed long ago (the stream writing since): its
    # replay check reads the tables' whole history, not only their newest commits.
    job.replay_lookup_recent_only = False
    job.conflict_retries = CONFLICT_RETRIES
    if job.metrics is None:
        from pipelines.metrics import PipelineMetrics

        job.metrics, job.metrics_name = PipelineMetrics.of(spark), "backfill"
        job.metrics.declare("backfill")
    # Whatever the source: once a chunk is in every table, the quarantine rows of its records
    # that pass now are marked replayed (they are in silver), stale reasons corrected.
    from pipelines.jobs.replay import settle_quarantine

    def settle(parsed: DataFrame, _batch_id: int) -> None:
        summary.replayed += settle_quarantine(spark, tables.quarantine, run_id, parsed, job.topic_ids)

    job.after_writes = settle
    if prepare is not None:
        prepare(job)
    todo = [w for w in works if w.index not in done]
    known = all(w.records is not None for w in todo)
    limit = RateLimit(cfg.backfill.max_records_per_second)
    from pipelines.tools.console import Bar

    bar = Bar(run_id, sum(w.records or 0 for w in todo) if known else None,
              enabled=cfg.backfill.progress and out is not None)
    try:
        for work in todo:
            started = _utcnow()
            try:
                res = job.process_batch(read(work), work.index)
                if after_chunk is not None:
                    after_chunk(work, res)
            except Exception as e:
                try:
                    _record(spark, ledger, (run_id, work.index, summary.source, work.spec, FAILED, None, None, None,
                                            None, None, None, None, started, _utcnow(), 1, str(e)[:2000]))
                except Exception as ledger_error:  # the chunk's own error is the one to see
                    _log.error(f"[backfill] could not record chunk {work.index}'s failure in the ledger: "
                               f"{ledger_error}")
                raise
            # The versions of the chunk's own commits; a table it did not write: its version now.
            versions = {name: res.table_versions[name] if name in res.table_versions
                        else writers.table_version(spark, tables.of(name))
                        for name in ("bronze", "quarantine", "silver")}
            _record(spark, ledger, (run_id, work.index, summary.source, work.spec, DONE, res.rows_read,
                                    res.bronze_inserted or 0, res.quarantined or 0, res.silver_inserted or 0,
                                    res.duplicates_in_batch, res.duplicates_in_table or 0, versions, started,
                                    _utcnow(), 1, None))
            summary.chunks_run += 1
            summary.rows_read += res.rows_read
            summary.bronze_inserted += res.bronze_inserted or 0
            summary.quarantined += res.quarantined or 0
            summary.silver_inserted += res.silver_inserted or 0
            summary.duplicates_in_batch += res.duplicates_in_batch
            summary.duplicates_in_table += res.duplicates_in_table or 0
            bar.update((work.records or 0) if known else res.rows_read,
                       note=f"silver +{summary.silver_inserted:,} | chunk {work.index + 1}/{len(works)}")
            if on_chunk is not None:
                on_chunk(work, res)
            if work is not todo[-1]:
                summary.paused_s += limit.after(res.rows_read)
    finally:
        bar.close()
    summary.seconds = time.monotonic() - t0
    if out is not None:
        out(summary.line())
    return summary


def run_backfill(spark: SparkSession, cfg: Config, *, start: dt.datetime | None = None,
                 end: dt.datetime | None = None, offsets: Ranges | None = None, chunk_records: int | None = None,
                 job: IngestJob | None = None, out: Callable[[str], None] | None = _log.info,
                 on_chunk: Callable[[Work, BatchResult], None] | None = None) -> BackfillSummary:
    """Backfill a Kafka range (see the module docstring); returns what it did.

    Raises:
        PipelineError: a bad range, a source the tables do not belong to, or a chunk refused
            (e.g. committed before under another event contract).

    """
    from pipelines.io.binding import check_source

    size = _chunk_size(cfg, chunk_records)
    ranges = resolve_kafka_range(spark, cfg, start=start, end=end, offsets=offsets)
    chunks = plan_chunks(ranges, size)
    source = check_source(spark, cfg, cfg.table_path("bronze"))
    run_id = run_id_of(ranges, size, {"cluster_id": source.cluster_id, "topics": source.topics})
    summary = BackfillSummary(run_id, "kafka", ranges=json.loads(Chunk(-1, ranges).as_json()))
    by_index = {c.index: c for c in chunks}

    def prepare(job: IngestJob) -> None:
        job.topic_ids = source.topics

    return _execute(spark, cfg, summary, [Work(c.index, c.as_json(), c.records) for c in chunks],
                    lambda w: read_chunk(spark, cfg, by_index[w.index]), job=job, out=out, on_chunk=on_chunk,
                    prepare=prepare)


def status_table(rows: list[Any], limit: int = 50) -> str:
    """The ledger as a table for people: one line per run (chunks done / failed, counts)."""
    from pipelines.tools.console import render, table

    runs: dict[str, dict[str, Any]] = {}
    for r in rows:
        run = runs.setdefault(r["run_id"], {"run": r["run_id"], "chunks done": 0, "failed": 0, "read": 0,
                                            "silver +": 0, "quarantined +": 0, "bronze +": 0, "started": None,
                                            "finished": None, "last error": ""})
        if r["status"] == DONE:
            run["chunks done"] += 1
            run["read"] += r["rows_read"] or 0
            run["silver +"] += r["silver_inserted"] or 0
            run["quarantined +"] += r["quarantined"] or 0
            run["bronze +"] += r["bronze_inserted"] or 0
        else:
            run["failed"] += 1
            run["last error"] = (r["error"] or "")[:60]
        for k, col, pick in (("started", "started_at", min), ("finished", "finished_at", max)):
            if r[col] is not None:
                run[k] = r[col] if run[k] is None else pick(run[k], r[col])
    runs_shown = list(runs.values())[:limit]
    return render(table(runs_shown, title="backfill runs")) if runs_shown else "no backfills recorded yet"


def main(argv: list[str] | None = None) -> int:
    """Entry point for ``spark-submit pipelines/jobs/backfill.py --conf conf/local.yaml --from ... --to ...``."""
    p = argparse.ArgumentParser(prog="backfill", description="Backfill a Kafka range, archived files or bronze, "
                                "exactly once, into the tables the stream writes (see `python -m pipelines "
                                "backfill --help`).")
    p.add_argument("--conf", default="conf/local.yaml", help="environment config file (default: %(default)s)")
    add_range_arguments(p)
    args = p.parse_args(argv)
    from pipelines.session import build_session

    cfg = load_config(args.conf)
    check_range_arguments(args)
    spark = build_session(cfg)
    summary = run_from_arguments(spark, cfg, args)
    print(json.dumps(summary.as_dict(), default=str))
    return 0


def add_range_arguments(p: argparse.ArgumentParser) -> None:
    """The source and range options, shared by the CLI and the job file."""
    p.add_argument("--from", dest="start", metavar="TIME", help="first record timestamp (ISO-8601, UTC unless a "
                   "zone is given; default: the earliest record); with --bronze: first ingest time")
    p.add_argument("--to", dest="end", metavar="TIME", help="records before this timestamp (excluded; default: "
                   "the latest stable offset now); with --bronze: ingested before this time (default: now)")
    p.add_argument("--offsets", metavar="JSON", help='explicit ranges instead: {"topic": {"partition": '
                   '[first, end)}}, end excluded')
    p.add_argument("--files", metavar="PATH", help="read archived files instead of Kafka: a file, a folder "
                   "(recursive) or a glob, on any Hadoop filesystem (file:, hdfs://, s3a://, abfss://, gs://)")
    p.add_argument("--format", choices=["json", "parquet"], help="with --files: JSON lines (one "
                   "message value per line) or Parquet (a `value` column; Kafka's topic/partition/offset/timestamp/"
                   "key kept when present) (default: json)")
    p.add_argument("--bronze", action="store_true", help="re-derive silver and quarantine from the raw records "
                   "bronze stores (e.g. after a parser fix); --from/--to select by ingest time")
    p.add_argument("--chunk-records", type=int, metavar="N", help="records per chunk (default: "
                   "backfill.chunk_records)")
    p.add_argument("--chunk-mb", type=float, metavar="MB", help="with --files: MiB of whole files per chunk "
                   "(default: backfill.file_chunk_mb)")
    p.add_argument("--max-rate", type=float, metavar="RECORDS_PER_S", help="hold the average rate to this "
                   "(a pause after each chunk), leaving the live stream its share of the cores (default: "
                   "backfill.max_records_per_second; none: no limit)")


def check_range_arguments(args: argparse.Namespace) -> None:
    """Refuse option combinations that mean nothing (before Spark starts)."""
    sources = [name for name, given in (("--offsets", args.offsets), ("--files", args.files),
                                        ("--bronze", args.bronze)) if given]
    if len(sources) > 1:
        raise PipelineError(f"give one source: {' and '.join(sources)} together mean nothing")
    if args.files and (args.start or args.end):
        raise PipelineError("--from/--to select Kafka records or bronze rows, not files",
                            hint="give the files to read with --files (a folder or a glob)")
    if args.chunk_mb is not None and not args.files:
        raise PipelineError("--chunk-mb is for --files; Kafka and bronze chunks are sized with --chunk-records")
    if args.files and args.chunk_records is not None:
        raise PipelineError("--chunk-records is for Kafka and bronze; file chunks are whole files, sized with "
                            "--chunk-mb")
    if args.format and not args.files:
        raise PipelineError("--format is for --files (the format of the archived files)")
    range_arguments(args)  # the times and offsets parse


def run_from_arguments(spark: SparkSession, cfg: Config, args: argparse.Namespace) -> BackfillSummary:
    """Run the backfill the parsed options describe."""
    if args.max_rate is not None:
        cfg = cfg.with_overrides(backfill={"max_records_per_second": args.max_rate})
    if args.files:
        from pipelines.jobs.replay import run_file_backfill

        return run_file_backfill(spark, cfg, args.files, fmt=args.format or "json", chunk_mb=args.chunk_mb)
    kwargs = range_arguments(args)
    if args.bronze:
        from pipelines.jobs.replay import run_bronze_backfill

        del kwargs["offsets"]
        return run_bronze_backfill(spark, cfg, **kwargs)
    return run_backfill(spark, cfg, **kwargs)


def range_arguments(args: argparse.Namespace) -> dict[str, Any]:
    """``run_backfill`` keyword arguments from the parsed range options."""
    return {"start": parse_time(args.start) if args.start else None,
            "end": parse_time(args.end) if args.end else None,
            "offsets": parse_offsets(args.offsets) if args.offsets else None,
            "chunk_records": args.chunk_records}


if __name__ == "__main__":
    sys.exit(main())
