"""Exactly-once ingestion: Kafka -> bronze / quarantine / silver / audit, one micro-batch at a time.

Run it as::

    python -m pipelines ingest --conf conf/local.yaml [--available-now]
    spark-submit $(python -m pipelines spark-args) pipelines/jobs/ingest.py --conf conf/local.yaml

or from Python / a notebook::

    job = IngestJob.from_config(cfg)
    query = start_ingest(spark, cfg)            # a StreamingQuery
    summary = run_ingest(spark, cfg, available_now=True)   # catch up and return

Why a replayed batch cannot double anything: every table write carries the Delta transaction
identity (app id = ``<query_name>-<checkpoint's query id>``, version = ``batch_id``), so a
batch Spark re-runs after a crash is skipped table by table; and bronze/quarantine are
insert-if-absent MERGEs on (topic, partition, offset), silver on ``message_id``, so even a
replay under a new checkpoint (new app id) inserts nothing twice.
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.streaming import StreamingQuery

from pipelines import faults, logs, metrics
from pipelines.config import Config, load_config
from pipelines.domain import schema as S
from pipelines.domain import transforms as X
from pipelines.domain.schema import EventSpec
from pipelines.errors import CheckpointRewindError, ConfigError, ContractChangedError, PipelineError
from pipelines.io import writers
from pipelines.io.binding import check_source, record_source
from pipelines.io.checkpoint import batch_ids, has_metadata, pending_batch
from pipelines.io.kafka_source import source_options
from pipelines.io.tables import AUDIT, BRONZE, QUARANTINE, SILVER, TablePaths, ensure_tables
from pipelines.jobs.backfill import APP_PREFIX as BACKFILL_APP_PREFIX
from pipelines.metrics import PipelineMetrics
from pipelines.quality.batch import BatchQuality, RuleResult, batch_quality, quality_rows

_log = logs.get("ingest")

# Session confs of the writes to bronze, quarantine and the audit table. Their per-row work is
# light (a projection, and an anti-join on coordinates pruned to the batch's offset range); most
# of their work is Delta's own (snapshot state, data skipping, file statistics), which Spark runs
# as small tasks that each generate Java source for projections over Delta's wide nested
# schemas: measured with Java Flight Recorder, that was about a third of the JVM's CPU per batch.
# Interpreted evaluation (an internal Spark conf, which Spark's own tests use to run every
# expression both ways) skips it, and the per-batch compilations of plans that hold the batch's
# literals. Measured: these writes no slower at 50k-row batches; the batch ~0.8 s faster at 1k
# rows. Silver keeps code generation: its MERGE reads the whole message_id column of silver.
WRITE_SESSION_CONF: dict[str, dict[str, str]] = {
    name: {"spark.sql.codegen.factoryMode": "NO_CODEGEN"} for name in (BRONZE, QUARANTINE, AUDIT)
}


@dataclass
class BatchResult:
    """What one micro-batch did (also the audit row)."""

    batch_id: int
    app_id: str
    rows_read: int = 0
    bronze_inserted: int | None = 0
    quarantined: int | None = 0
    valid_rows: int = 0
    duplicates_in_batch: int = 0
    conflicting_in_batch: int = 0
    duplicates_in_table: int | None = 0
    silver_inserted: int | None = 0
    offsets: dict[str, dict[str, list[int]]] = field(default_factory=dict)
    max_kafka_timestamp: dt.datetime | None = None
    duration_ms: int = 0
    lag_s: float | None = None
    replayed: bool = False
    timings_ms: dict[str, int] = field(default_factory=dict)
    #: The silver suite's results on this batch (empty without a suite).
    quality: list[RuleResult] = field(default_factory=list)
    #: Table -> the version of this batch's own commit (a replayed batch: its earlier commit);
    #: tables the batch did not write are absent.
    table_versions: dict[str, int] = field(default_factory=dict)

    def progress_line(self) -> str:
        """The per-batch progress line."""
        lag = f"{self.lag_s:.1f}s" if self.lag_s is not None else "-"
        replay = " (replay: already committed, skipped)" if self.replayed else ""

        def n(v: int | None) -> str:
            return "skip" if v is None else str(v)

        return (
            f"[ingest] batch {self.batch_id}: read {self.rows_read} | bronze +{n(self.bronze_inserted)} | "
            f"quarantined {n(self.quarantined)} | dups in batch {self.duplicates_in_batch} "
            f"(conflicting {self.conflicting_in_batch}) | dups vs table {n(self.duplicates_in_table)} | "
            f"silver +{n(self.silver_inserted)} | {self.duration_ms / 1000:.2f}s | lag {lag}{replay}"
        )


def read_checkpoint_query_id(spark: SparkSession, checkpoint: str) -> str:
    """The stream's persistent query id, from ``<checkpoint>/metadata`` (written by Spark at start)."""
    meta = checkpoint.rstrip("/") + "/metadata"
    if "://" not in checkpoint or checkpoint.startswith("file:"):
        text = Path(meta.removeprefix("file:")).read_text()
    else:
        text = "\n".join(r[0] for r in spark.read.text(meta).collect())
    return str(json.loads(text.splitlines()[0])["id"])


AUDIT_INTERVAL_S = 5.0
"""Seconds between two background audit commits of a streaming query (rows queue meanwhile)."""


def contract_id_of(spec: EventSpec, quality: BatchQuality | None) -> str:
    """A fingerprint of the event contract and the silver suite's quarantine rules (how records are routed)."""
    rules = quality.fingerprint if quality is not None else "[]"
    routing = repr(spec) + (rules if rules != "[]" else "")  # no quarantine rules: the contract's id as before
    return hashlib.sha256(routing.encode()).hexdigest()[:16]


class IngestJob:
    """The ``foreachBatch`` body with its collaborators passed in.

    Args:
        spec: The event contract.
        tables: Table locations.
        query_name: Stem of the transaction app id.
        checkpoint: Checkpoint location (its query id completes the app id).
        app_id: Fixed app id (tests and backfills); otherwise derived from the checkpoint.
        out: Where progress lines go (None: silent).
        silver_merge_scope: "table" (compare against every silver row) or "event_date"
            (only rows dated within ``slack_days`` of one of the batch's event dates).
        slack_days: See ``silver_merge_scope``.
        silver_writer: Writes the deduplicated silver rows (default :func:`merge_silver`);
            a seam for tests that need a deliberately broken writer.
        prewarm_snapshots: After each batch, build the tables' next snapshot state in the
            background (see :func:`writers.prewarm`); off only to measure what it saves.
        audit_interval_s: In a streaming query, the audit rows are written in the background,
            several batches per commit, at most this often (see :meth:`flush`).
        quality: The silver expectation suite prepared for the batch path (None: no suite).
        gx_dir: The GX project each batch's quality record is also stored in, in the background
            (None: only the quality table; ``quality docs`` copies records into GX later).

    """

    def __init__(
        self,
        spec: EventSpec,
        tables: TablePaths,
        *,
        query_name: str = "ingest",
        checkpoint: str | None = None,
        app_id: str | None = None,
        out: Callable[[str], None] | None = _log.info,
        silver_merge_scope: str = "table",
        slack_days: int = 1,
        silver_writer: SilverWriter | None = None,
        prewarm_snapshots: bool = True,
        audit_interval_s: float = AUDIT_INTERVAL_S,
        quality: BatchQuality | None = None,
        gx_dir: str | None = None,
    ) -> None:
        if app_id is None and checkpoint is None:
            raise ValueError("IngestJob needs an app_id or a checkpoint to derive it from")
        if silver_merge_scope not in ("table", "event_date"):
            raise ValueError(f"silver_merge_scope must be 'table' or 'event_date', got {silver_merge_scope!r}")
        if slack_days < 0:
            raise ValueError(f"slack_days must be >= 0, got {slack_days}")
        self.silver_merge_scope = silver_merge_scope
        self.slack_days = slack_days
        self.spec = spec
        self.tables = tables
        self.query_name = query_name
        self.checkpoint = checkpoint
        self._app_id = app_id
        self.out = out
        self.results: list[BatchResult] = []
        self.silver_writer = silver_writer or merge_silver
        self.quality = quality
        self.gx_dir = gx_dir
        self._gx_store: Any = None  # pipelines.quality.project.RecordStore, built on first use
        self._gx_lock = threading.Lock()  # GX is not thread-safe: one user of the store at a time
        #: A fingerprint of the event contract and the quarantine rules of the silver suite,
        #: recorded with every commit: a batch re-run under another contract is refused (it could
        #: route a record differently the second time).
        self.contract_id = contract_id_of(spec, quality)
        #: The replay check of a job's first batch reads only the tables' newest commits (where a
        #: batch Spark re-runs is); a backfill resuming a chunk reads the whole history.
        self.replay_lookup_recent_only = True
        #: Attempts of a table write that loses a race with a concurrent commit.
        self.conflict_retries = writers.CONFLICT_RETRIES
        #: False: records re-read from bronze itself (a re-derivation): bronze is not written.
        self.write_bronze = True
        #: Called with the batch's parsed rows (routed, annotated) once every table committed it
        #: (after its audit row, unless that is deferred): e.g. to mark replayed quarantine rows.
        self.after_writes: Callable[[DataFrame, int], None] | None = None
        #: Kafka topic name -> topic id, recorded on every row (set by :func:`start_ingest`).
        self.topic_ids: dict[str, str] = {}
        #: A PipelineError raised inside a batch, kept so that run_ingest can show it as it is.
        self.fatal: PipelineError | None = None
        self._jvm_pid: int | None = None
        self.prewarm_snapshots = prewarm_snapshots
        self._sessions: dict[str, SparkSession] = {}
        self._last_batch: dict[str, int] = {}  # app id -> newest batch id this job wrote
        self._pools: dict[str, ThreadPoolExecutor] = {}
        self._prewarming: dict[str, Future[None]] = {}
        self._audit_args: tuple[SparkSession, SparkSession] | None = None
        self.audit_interval_s = audit_interval_s
        self._audit_future: Future[None] | None = None
        self._audit_queue: list[tuple[Any, ...]] = []
        #: (app id, batch id) -> the batch's quality rows, written just before its audit row.
        self._quality_rows: dict[tuple[str, int], list[tuple[Any, ...]]] = {}
        self._audit_lock = threading.Lock()
        self._audit_wake = threading.Event()
        self._audit_last = time.monotonic()
        #: The job's counters in Spark's metrics system (set by :func:`run_ingest` and backfills).
        self.metrics: PipelineMetrics | None = None
        #: The prefix of its counters' names (a backfill: ``backfill``).
        self.metrics_name = query_name

    @classmethod
    def from_config(cls, cfg: Config, *, app_id: str | None = None,
                    out: Callable[[str], None] | None = _log.info,
                    silver_writer: SilverWriter | None = None) -> IngestJob:
        """Build the job for ``cfg``."""
        if cfg.ingest.silver_merge_slack_days < 0:
            raise ConfigError(f"{', '.join(cfg.sources) or 'config'}: ingest.silver_merge_slack_days must be "
                              f">= 0, got {cfg.ingest.silver_merge_slack_days}")
        spec = EventSpec.from_config(cfg.events)
        return cls(spec, TablePaths.from_config(cfg),
                   query_name=cfg.ingest.query_name, checkpoint=cfg.checkpoint_path, app_id=app_id,
                   out=out if cfg.ingest.progress else None, silver_merge_scope=cfg.ingest.silver_merge_scope,
                   slack_days=cfg.ingest.silver_merge_slack_days, silver_writer=silver_writer,
                   quality=(quality := batch_quality(cfg, spec)),
                   gx_dir=cfg.gx_dir if quality is not None and "://" not in cfg.gx_dir else None)

    def app_id(self, spark: SparkSession) -> str:
        """``<query_name>-<query id>``: changes when the checkpoint is reset, as batch ids restart at 0."""
        if self._app_id is None:
            assert self.checkpoint is not None
            self._app_id = f"{self.query_name}-{read_checkpoint_query_id(spark, self.checkpoint)}"
        return self._app_id

    def _fault(self, spark: SparkSession, point: str, batch_id: int, *, timer: bool = False) -> None:
        if faults.POINT_ENV not in os.environ:
            return
        if self._jvm_pid is None:
            self._jvm_pid = int(spark.sparkContext._jvm.java.lang.ProcessHandle.current().pid())  # type: ignore
        if timer:
            faults.arm(point, batch_id, self._jvm_pid, table=self.tables.silver)
        else:
            faults.inject(point, batch_id, self._jvm_pid)

    def foreach_batch(self, batch_df: DataFrame, batch_id: int) -> None:
        """The function handed to ``writeStream.foreachBatch`` (the audit row is deferred: see :meth:`flush`)."""
        try:
            self.process_batch(batch_df, batch_id, defer_audit=True)
        except PipelineError as e:
            self.fatal = e
            raise

    def process_batch(self, batch_df: DataFrame, batch_id: int, *, defer_audit: bool = False) -> BatchResult:
        """Parse, validate, dedupe and write one micro-batch; idempotent per ``batch_id``.

        One pass parses the records, marks in-batch duplicates and collects the batch's stats;
        then bronze, quarantine and silver are written concurrently, each by an insert-if-absent
        MERGE with the batch's transaction identity on its own session (the identity is session
        state). The function returns only after all of them committed, and raises if any failed,
        so Spark commits the batch to its checkpoint only when every table has it. The audit row
        comes last; with ``defer_audit`` it is written in the background while the next batch
        runs (see :meth:`flush`), and a crash that loses it is repaired from the batch's commits
        at the next start (:meth:`record_abandoned_batches`).
        """
        t0 = time.monotonic()
        spark = batch_df.sparkSession
        app_id = self.app_id(spark)
        now = dt.datetime.now(dt.UTC).replace(tzinfo=None)
        res = BatchResult(batch_id=batch_id, app_id=app_id)
        timings: dict[str, int] = {}
        if defer_audit:
            self._raise_background_error()

        raw = batch_df.persist()
        quality = self.quality
        parsed = raw.transform(X.parse_records(self.spec))
        if quality is not None:
            parsed = parsed.transform(quality.route)
        parsed = parsed.transform(X.annotate_duplicates).persist()
        try:
            valid = F.size(S.REASON_CODES) == 0
            stats = parsed.groupBy(S.KAFKA_TOPIC, S.KAFKA_PARTITION).agg(
                F.min(S.KAFKA_OFFSET).alias("first"),
                F.max(S.KAFKA_OFFSET).alias("last"),
                F.count(F.lit(1)).alias("rows"),
                F.sum(valid.cast("long")).alias("valid"),
                *X.duplicate_sums(),
                F.max(S.KAFKA_TIMESTAMP).alias("max_ts"),
                F.collect_set(F.when(valid, F.col(S.EVENT_DATE))).alias("dates"),
                *(quality.sums() if quality is not None else []),
            ).collect()
            timings["stats"] = _ms(t0)
            res.rows_read = sum(int(r["rows"]) for r in stats)
            res.valid_rows = sum(int(r["valid"]) for r in stats)
            res.duplicates_in_batch = sum(int(r["duplicates"]) for r in stats)
            res.conflicting_in_batch = sum(int(r["conflicting"]) for r in stats)
            for r in stats:
                res.offsets.setdefault(r[S.KAFKA_TOPIC], {})[str(r[S.KAFKA_PARTITION])] = [int(r["first"]),
                                                                                         int(r["last"])]
            stamps = [r["max_ts"] for r in stats if r["max_ts"] is not None]
            res.max_kafka_timestamp = max(stamps) if stamps else None
            dates = sorted({d for r in stats for d in (r["dates"] or [])})
            if res.rows_read == 0:
                res.bronze_inserted = res.quarantined = res.silver_inserted = res.duplicates_in_table = 0
                return res
            facts: dict[str, Any] = {}
            if quality is not None:
                t = time.monotonic()
                res.quality = quality.results(stats, parsed)
                facts["quality"] = [quality.suite.name, [r.as_list() for r in res.quality]]
                timings["quality"] = _ms(t)
            lineage = X.with_lineage(batch_id, app_id, F.lit(now).cast("timestamp"), self.topic_ids)
            coords = offset_range_predicate(res.offsets)
            meta = writers.batch_metadata(app_id, batch_id, res.offsets, contract=self.contract_id,
                                          rows_read=res.rows_read, valid_rows=res.valid_rows,
                                          duplicates_in_batch=res.duplicates_in_batch,
                                          conflicting_in_batch=res.conflicting_in_batch, **facts)
            scope = (event_date_scope(dates, self.slack_days)
                     if self.silver_merge_scope == "event_date" and dates else None)

            def bronze(session: SparkSession) -> int | None:
                # Every record once, keyed on its Kafka coordinates.
                return writers.merge_insert_if_absent(
                    raw.transform(lineage).transform(X.to_bronze), self.tables.bronze, S.COORDINATES,
                    app_id=app_id, version=batch_id, target_predicate=coords, metadata=meta, session=session)

            def quarantine(session: SparkSession) -> int | None:
                # Records that cannot become silver rows, with reasons.
                return writers.merge_insert_if_absent(
                    parsed.transform(X.invalid_rows).transform(lineage).transform(X.to_quarantine),
                    self.tables.quarantine, S.COORDINATES, app_id=app_id, version=batch_id,
                    target_predicate=coords, metadata=meta, session=session)

            def silver(session: SparkSession) -> int | None:
                # The first copy of each message (lowest coordinates), insert-if-absent on message_id.
                self._fault(spark, faults.DURING_SILVER, batch_id, timer=True)
                rows = (parsed.transform(X.valid_rows).transform(X.first_copies).transform(lineage)
                        .transform(X.to_silver(self.spec)))
                return self.silver_writer(rows, self.tables.silver, app_id=app_id, version=batch_id,
                                          target_predicate=scope, metadata=meta, session=session)

            writes: dict[str, Callable[[SparkSession], int | None]] = {SILVER: silver}
            if self.write_bronze:
                writes[BRONZE] = bronze
            # No quarantine write when nothing is invalid: skipping a transaction version is fine,
            # later ones are higher.
            if res.valid_rows < res.rows_read:
                writes[QUARANTINE] = quarantine
            t = time.monotonic()
            confirmed: dict[str, writers.BatchCommit] = {}
            last = self._last_batch.get(app_id)
            if last is None or batch_id <= last:
                # Possibly a re-run (the first batch after a start): before anything is written,
                # prove any commit of it is this same batch (offsets, contract). The writes run
                # concurrently, so a table that lacks the batch could otherwise take it under a
                # new contract while another table's check fails.
                for name in (BRONZE, QUARANTINE, SILVER):
                    found = writers.find_batch_commit(spark, self.tables.of(name), app_id, batch_id,
                                                      recent_only=self.replay_lookup_recent_only)
                    if found is not None:
                        confirmed[name] = self._confirm_replay(spark, name, app_id, batch_id, res.offsets, found)
                timings["replay_check"] = _ms(t)
            if quality is not None and not confirmed:
                # A `fail` rule stops the batch before any write. Not a batch that some table has
                # committed already (a crash, then a re-run): it was accepted under the suite it
                # ran with, and stopping now could only leave it half written.
                quality.check_failures(res.quality, parsed)
            done = self._write_tables(spark, batch_id, writes, timings)
            self._last_batch[app_id] = max(batch_id, self._last_batch.get(app_id, -1))
            timings["writes"] = _ms(t)

            versions: dict[str, int] = {}
            inserted_by: dict[str, int] = {}
            for name, (inserted, version) in done.items():
                if inserted is None:  # Delta skipped it: this batch committed it before (a replay)
                    res.replayed = res.replayed or name == SILVER
                    commit = (confirmed.get(name)
                              or self._confirm_replay(spark, name, app_id, batch_id, res.offsets))
                    inserted, version = commit.inserted(), commit.version
                inserted_by[name], versions[name] = inserted, version
            res.table_versions = versions
            res.bronze_inserted = inserted_by.get(BRONZE, 0)  # not written: records re-read from bronze
            res.quarantined = inserted_by.get(QUARANTINE, 0)
            res.silver_inserted = inserted_by[SILVER]
            res.duplicates_in_table = res.valid_rows - res.duplicates_in_batch - res.silver_inserted
            res.duration_ms = _ms(t0)
            res.timings_ms = timings
            self._prewarm(list(done))

            # The audit row: one per (app id, batch id), keyed, so a re-run never adds a second one;
            # the quality rows (keyed too) are written just before it.
            if quality is not None:
                self._quality_rows[(app_id, batch_id)] = quality_rows(app_id, batch_id, quality.suite.name,
                                                                      res.quality, now)
            if defer_audit:
                self._defer_audit(spark, res, now, versions)
            else:
                self._write_audit(spark, res, now, versions=versions)
                self._fault(spark, faults.AFTER_AUDIT, batch_id)
            if self.after_writes is not None:  # every table has the batch, and its audit row
                self.after_writes(parsed, batch_id)
        finally:
            parsed.unpersist()
            raw.unpersist()
        res.duration_ms = _ms(t0)
        if res.max_kafka_timestamp is not None:
            res.lag_s = max(0.0, (dt.datetime.now(dt.UTC).replace(tzinfo=None) - res.max_kafka_timestamp)
                            .total_seconds())
        self.results.append(res)
        if self.metrics is not None:
            try:  # the batch committed: a metrics problem must not fail it
                self.metrics.record_batch(self.metrics_name, res)
            except Exception as e:
                _log.warning(f"[{self.query_name}] batch {batch_id}: its counters were not recorded: {e}")
        if self.out is not None:
            self.out(res.progress_line())
            if quality is not None and res.quality:
                self.out(f"[quality] batch {batch_id}: {quality.summary(res.quality)}")
        return res

    # ---- concurrency: the table writes, the deferred audit row, snapshot pre-warming ---------

    def _session(self, spark: SparkSession, name: str) -> SparkSession:
        """A session of its own for the writes to table ``name`` (transaction confs are session state)."""
        session = self._sessions.get(name)
        if session is None or session.sparkContext is not spark.sparkContext:
            session = self._sessions[name] = spark.newSession()
            for key, value in WRITE_SESSION_CONF.get(name, {}).items():
                session.conf.set(key, value)
        return session

    def _write_tables(self, spark: SparkSession, batch_id: int,
                      writes: dict[str, Callable[[SparkSession], int | None]],
                      timings: dict[str, int]) -> dict[str, tuple[int | None, int]]:
        """Run the table writes concurrently; wait for all; re-raise the first failure.

        Returns:
            name -> (rows inserted or None if Delta skipped the write, table version after it).

        """
        from pyspark.util import inheritable_thread_target

        fault_after = {BRONZE: faults.AFTER_BRONZE, QUARANTINE: faults.AFTER_QUARANTINE, SILVER: faults.AFTER_SILVER}

        def task(name: str, write: Callable[[SparkSession], int | None]) -> tuple[int | None, int]:
            t = time.monotonic()
            session = self._session(spark, name)

            def retrying(attempt: int, error: BaseException) -> None:
                _log.warning(f"[{self.query_name}] batch {batch_id}: the {name} commit lost a race with a "
                             f"concurrent writer (attempt {attempt}); trying again")

            # Another writer (a backfill, a quarantine replay) may commit to the same table at the
            # same time: Delta then refuses this commit, which wrote nothing; it is tried again.
            inserted = writers.retry_on_conflict(lambda: write(session), retries=self.conflict_retries,
                                                 on_retry=retrying)
            version = writers.table_version(session, self.tables.of(name))
            timings[name] = _ms(t)
            self._fault(spark, fault_after[name], batch_id)
            return inserted, version

        pool = self._pool("writes", 3)
        target = inheritable_thread_target(spark)(task)
        futures = {name: pool.submit(target, name, write) for name, write in writes.items()}
        wait(futures.values())
        errors = [e for e in (f.exception() for f in futures.values()) if e is not None]
        if errors:  # a PipelineError (our own refusal) says more than what it may have caused elsewhere
            raise next((e for e in errors if isinstance(e, PipelineError)), errors[0])
        return {name: f.result() for name, f in futures.items()}

    def _pool(self, name: str, workers: int = 1) -> ThreadPoolExecutor:
        pool = self._pools.get(name)
        if pool is None:
            pool = self._pools[name] = ThreadPoolExecutor(max_workers=workers, thread_name_prefix=f"ingest-{name}")
        return pool

    def _prewarm(self, names: list[str]) -> None:
        """Build the next snapshot state of the tables just written, in the background.

        One at a time per table: a table whose previous pre-warm still runs is skipped (its next
        write builds the state itself), so the work cannot pile up behind fast batches.
        """
        if not self.prewarm_snapshots:
            return
        for name in names:
            previous = self._prewarming.get(name)
            if previous is not None and not previous.done():
                continue
            # A plain thread (see _defer_audit): a stop of the query must not cancel it.
            self._prewarming[name] = self._pool("prewarm").submit(
                self._prewarm_quietly, self._sessions[name], self.tables.of(name))

    @staticmethod
    def _prewarm_quietly(session: SparkSession, path: str) -> None:
        try:
            writers.prewarm(session, path)
        except Exception:  # only an optimisation: the next write builds the state itself
            pass

    def _defer_audit(self, spark: SparkSession, res: BatchResult, started: dt.datetime,
                     versions: dict[str, int]) -> None:
        """Queue the batch's audit row; a background writer inserts the queued rows in one MERGE.

        The writer runs at most once per ``audit_interval_s`` (one audit commit for several
        batches instead of one per batch) and is flushed by :meth:`flush`. A failed write puts
        its rows back in the queue and surfaces here, failing this batch (which is then re-run,
        idempotently); rows lost to a crash are recorded from the batches' commits at the next
        start.
        """
        row = self._audit_row(spark, res, started, versions=versions)
        with self._audit_lock:
            self._audit_queue.append(row)
            # Not an inheritable thread: the query's job tags would let a stop of the query
            # cancel this write, which belongs to batches Spark has already committed.
            self._audit_args = (spark, self._session(spark, AUDIT))
            self._start_audit_writer()

    def _start_audit_writer(self) -> Future[None] | None:
        """With ``_audit_lock`` held: the running writer, or a new one if rows are queued.

        Raises:
            Exception: the previous writer failed (its rows are back in the queue).

        """
        future = self._audit_future
        if future is not None:
            if not future.done():
                return future
            self._audit_future = None
            future.result()
        if self._audit_queue and self._audit_args is not None:
            self._audit_future = self._pool("audit").submit(self._audit_writer, *self._audit_args)
        return self._audit_future

    def _audit_writer(self, spark: SparkSession, session: SparkSession) -> None:
        while True:
            self._audit_wake.wait(max(0.0, self._audit_last + self.audit_interval_s - time.monotonic()))
            with self._audit_lock:
                rows, self._audit_queue = self._audit_queue, []
                if not rows:
                    self._audit_future = None
                    return
            try:
                self._write_audit_rows(session, rows)
            except BaseException:
                with self._audit_lock:
                    self._audit_queue[:0] = rows  # written by the next writer (or the next start)
                raise
            self._audit_last = time.monotonic()
            self._fault(spark, faults.AFTER_AUDIT, max(r[2] for r in rows))
            if self.prewarm_snapshots:
                self._prewarm_quietly(session, self.tables.audit)

    def _raise_background_error(self) -> None:
        with self._audit_lock:
            self._start_audit_writer()

    def flush(self) -> None:
        """Write the queued audit rows now and wait for the background work (pre-warming).

        :func:`run_ingest` calls it when the query ends (and :func:`start_ingest` before a
        query starts); call it yourself after a query started with :func:`start_ingest` stops,
        before reading the audit table.

        Raises:
            Exception: the deferred audit write failed; its rows stay queued (and the next
                start records rows of committed batches from their commits).

        """
        wait(list(self._prewarming.values()))
        self._audit_wake.set()
        try:
            while True:
                with self._audit_lock:
                    future = self._start_audit_writer()
                if future is None:
                    break
                try:
                    future.result()
                except BaseException:
                    with self._audit_lock:  # surfaced here, once; the rows stay queued
                        if self._audit_future is future:
                            self._audit_future = None
                    raise
        finally:
            self._audit_wake.clear()

    def _confirm_replay(self, spark: SparkSession, name: str, app_id: str, batch_id: int,
                        offsets: dict[str, dict[str, list[int]]],
                        found: writers.BatchCommit | None = None) -> writers.BatchCommit:
        """Delta skipped a write of this (app id, batch id): prove it is the same batch again.

        Spark re-runs an uncommitted batch with the same id *and the same offsets*; then the
        table's commit of that batch carries those offsets, and skipping is right. If the
        checkpoint was rewound (``offsets/`` and ``commits/`` deleted, or an older copy
        restored) the query id, hence the app id, stays, batch ids restart, and Delta would
        silently skip batches it never saw: refuse instead.

        Returns:
            That table's commit of this batch.

        Raises:
            CheckpointRewindError: no commit of this batch, or one for other offsets.

        ``found``: the commit, if the caller already read it from the history.

        """
        path = self.tables.of(name)
        commit = found or writers.find_batch_commit(spark, path, app_id, batch_id)
        if commit is not None and commit.offsets == offsets:
            if commit.meta.get("contract", self.contract_id) != self.contract_id:
                raise ContractChangedError(
                    f"batch {batch_id} of app id {app_id} was started under another event contract or other "
                    f"quarantine rules: its {name} commit (table version {path} v{commit.version}) was written "
                    f"with contract {commit.meta.get('contract')}, this run has {self.contract_id}. Finishing it "
                    "under the new rules could put a record in quarantine (first run) and in silver (this run).",
                    hint="start once more with the previous events: config and quarantine rules of the silver "
                         "expectation suite (quality.expectations_dir) to finish the batch, stop, then change them "
                         "(and run migrate if the contract changed)",
                )
            return commit
        if commit is None and not writers.batch_commits(spark, path, f'"app_id":{json.dumps(app_id)},'):
            raise CheckpointRewindError(
                f"batch {batch_id} of app id {app_id} was already committed to the {name} table at {path} by a "
                "version of this pipeline that did not record batch offsets, so this re-run cannot be checked "
                "against it.",
                hint="finish pending batches with the previous version (ingest --available-now, then stop) "
                     f"before upgrading, or give the job a new app id (ingest.query_name: {self.query_name}-2; "
                     "keep kafka.starting_offsets: earliest so nothing is skipped)",
            )
        seen = (f"its commit (table version {commit.version}) covered offsets {_short(commit.offsets)}"
                if commit is not None else "the table has no commit of that batch")
        raise CheckpointRewindError(
            f"batch {batch_id} of app id {app_id} reads offsets {_short(offsets)}, but the {name} table at "
            f"{path} already recorded a later or equal batch of this app id and {seen}. The checkpoint at "
            f"{self.checkpoint or '(none)'} was rewound (offsets/ and commits/ deleted, or an older copy "
            "restored) while its metadata kept the query id: Delta would silently skip this batch's "
            f"records. The job stopped before Spark committed this batch; no table was given a second copy of "
            "any record (the tables written concurrently with this one are keyed).",
            hint="give the job a new transaction app id: set ingest.query_name to a new value (e.g. "
                 f"{self.query_name}-2), or delete the whole checkpoint folder (a new query id). With a new "
                 "checkpoint, reading starts at kafka.starting_offsets: keep it `earliest` (the default) so no "
                 "record is skipped; bronze, quarantine and silver are keyed, so records already written are "
                 "not written twice.",
        )

    def record_abandoned_batches(self, spark: SparkSession, current_app_id: str | None,
                                 committed: Iterable[int] = ()) -> list[BatchResult]:
        """Give an audit row to every batch that committed table writes but has no audit row.

        Two ways to get there: a run crashed in the middle of a batch and its checkpoint was then
        reset (or rebound, or ``ingest.query_name`` changed), so the new app id replays those
        offsets, finds the records already written and inserts nothing (an earlier app id's
        batch, ``(abandoned batch, recovered)``); or the process died while the deferred audit
        row of a batch Spark had already committed was being written (a batch of
        ``current_app_id`` listed in ``committed``, the checkpoint's committed batch ids:
        ``(audit row recovered from commits)``). Either way the row is rebuilt from the batch's
        own commits: inserted counts from their metrics, rows read, valid rows and the in-batch
        duplicate counts from their metadata (0 if an older version wrote them). Batches of the
        current app id that Spark has not committed are left alone: Spark re-runs them, audit row
        included.
        """
        # Such a batch is among a table's newest commits: nothing but a restart came after it.
        commits = {name: writers.batch_commits(spark, self.tables.of(name), limit=writers.RECENT_COMMITS)
                   for name in (BRONZE, QUARANTINE, SILVER)}
        keys = set().union(*commits.values())
        if not keys:
            return []
        audited = {(r[S.APP_ID], r[S.BATCH_ID]) for r in
                   spark.read.format("delta").load(self.tables.audit).select(S.APP_ID, S.BATCH_ID).collect()}
        done = set(committed)
        recovered = []
        now = dt.datetime.now(dt.UTC).replace(tzinfo=None)
        # Not a backfill's chunks: a backfill writes its chunks' audit rows itself, also when it
        # resumes after a crash, and one may be writing the chunk right now.
        pending = (k for k in keys - audited if not k[0].startswith(BACKFILL_APP_PREFIX))
        for app_id, batch_id in sorted(k for k in pending if k[0] != current_app_id or k[1] in done):
            got = {name: c[(app_id, batch_id)] for name, c in commits.items() if (app_id, batch_id) in c}
            first = next(iter(got.values()))
            meta = first.meta
            # The quality record from the newest of these commits (the run that finished the batch).
            quality_meta = next((c.meta["quality"] for c in sorted(got.values(), key=lambda c: -c.version)
                                 if "quality" in c.meta), None)
            silver = got[SILVER].inserted() if SILVER in got else 0
            dups = int(meta.get("duplicates_in_batch", 0))
            res = BatchResult(batch_id=batch_id, app_id=app_id, offsets=first.offsets,
                              rows_read=int(meta.get("rows_read", 0)), valid_rows=int(meta.get("valid_rows", 0)),
                              bronze_inserted=got[BRONZE].inserted() if BRONZE in got else 0,
                              quarantined=got[QUARANTINE].inserted() if QUARANTINE in got else 0,
                              silver_inserted=silver, duplicates_in_batch=dups,
                              conflicting_in_batch=int(meta.get("conflicting_in_batch", 0)),
                              duplicates_in_table=(int(meta.get("valid_rows", 0)) - dups - silver
                                                   if SILVER in got and "duplicates_in_batch" in meta else 0),
                              timings_ms={})
            label = "audit row recovered from commits" if app_id == current_app_id else "abandoned batch, recovered"
            if quality_meta is not None:  # the batch's quality record, rebuilt from the same commits
                suite, results = quality_meta
                res.quality = [RuleResult.from_list(r) for r in results]
                self._quality_rows[(app_id, batch_id)] = quality_rows(app_id, batch_id, suite, res.quality, now)
            self._write_audit(spark, res, now, query_name=f"{self.query_name} ({label})",
                              versions={name: c.version for name, c in got.items()})
            recovered.append(res)
        return recovered

    def _audit_row(self, spark: SparkSession, res: BatchResult, started: dt.datetime,
                   query_name: str | None = None, versions: dict[str, int] | None = None) -> tuple[Any, ...]:
        """The audit row of ``res``.

        ``versions``: the table versions of the batch's commits (a table it did not write: its
        current version).
        """
        finished = dt.datetime.now(dt.UTC).replace(tzinfo=None)
        known = versions or {}
        all_versions = {name: known[name] if name in known else writers.table_version(spark, self.tables.of(name))
                        for name in (BRONZE, QUARANTINE, SILVER)}
        return (
            res.app_id, query_name or self.query_name, res.batch_id, started, finished, res.duration_ms,
            json.dumps(res.offsets, sort_keys=True), res.rows_read, res.bronze_inserted, res.quarantined,
            res.valid_rows, res.duplicates_in_batch, res.conflicting_in_batch, res.duplicates_in_table,
            res.silver_inserted, res.max_kafka_timestamp, all_versions, res.timings_ms,
        )

    def _write_audit_rows(self, spark: SparkSession, rows: list[tuple[Any, ...]]) -> None:
        """Insert audit rows, keyed on (app id, batch id): a row already there is left as it is.

        No transaction identity is needed: the key makes it idempotent, and a re-run batch's
        tables (written before its audit row) already proved it is the same batch.
        """
        keys = [(str(r[0]), int(r[2])) for r in rows]
        pending = [q for k in keys for q in self._quality_rows.get(k, [])]
        if pending:  # the batches' quality records first: a crash in between leaves no audit row
            # Keyed on (app id, batch id, suite): a batch's record goes in whole or not at all, so
            # a re-run under an edited suite cannot add rules to the first run's record.
            _insert_keyed(spark, pending, S.QUALITY_SCHEMA, self.tables.quality, (S.APP_ID, S.BATCH_ID, "suite"),
                          unique=(S.APP_ID, S.BATCH_ID, "suite", "expectation"))
            self._store_in_gx(pending)
        _insert_keyed(spark, rows, S.AUDIT_SCHEMA, self.tables.audit, (S.APP_ID, S.BATCH_ID))
        for k in keys:
            self._quality_rows.pop(k, None)

    def _store_in_gx(self, rows: list[tuple[Any, ...]]) -> None:
        """Store the batches' quality records in the GX project too (once per batch and suite).

        Best effort: the quality table holds the record already, and ``quality docs`` copies any
        record missing from GX's store; a failure here is reported, not raised.
        """
        if self.gx_dir is None:
            return
        try:
            with self._gx_lock:
                if self._gx_store is None:
                    from pipelines.quality.project import RecordStore

                    self._gx_store = RecordStore(self.gx_dir)
                names = S.QUALITY_SCHEMA.fieldNames()
                self._gx_store.add([dict(zip(names, r, strict=True)) for r in rows])
        except Exception as e:  # noqa: BLE001 - reported; `quality docs` repairs it
            _log.warning(f"[quality] the batch records could not be stored in the GX project at {self.gx_dir} "
                         f"({type(e).__name__}: {e}); `python -m pipelines quality docs` stores them later")

    def _write_audit(self, spark: SparkSession, res: BatchResult, started: dt.datetime,
                     query_name: str | None = None, versions: dict[str, int] | None = None) -> None:
        """Insert the batch's audit row now (see :meth:`_write_audit_rows`)."""
        self._write_audit_rows(spark, [self._audit_row(spark, res, started, query_name, versions)])


SilverWriter = Callable[..., "int | None"]
"""Writes a batch's deduplicated silver rows: ``(rows, path, *, app_id, version,
target_predicate, metadata, session) -> rows inserted, or None if Delta skipped it as a
replay``; ``session`` is the write's own session (it runs concurrently with the others)."""


def _insert_keyed(spark: SparkSession, rows: list[tuple[Any, ...]], schema: Any, path: str,
                  key: tuple[str, ...], unique: tuple[str, ...] | None = None) -> None:
    """Insert ``rows`` (tuples in ``schema`` order) into the table at ``path``, keyed on ``key``.

    Rows whose key is already in the table are left out, all of them; of rows equal on
    ``unique`` (default: ``key``) the first is kept. The key starts with app id and batch id,
    which also restrict the target files read.
    """
    names = schema.fieldNames()
    app, batch = names.index(S.APP_ID), names.index(S.BATCH_ID)
    first: dict[tuple[Any, ...], tuple[Any, ...]] = {}
    for r in rows:  # an insert-only MERGE inserts every source row of a new key
        first.setdefault(tuple(r[names.index(k)] for k in unique or key), r)
    apps = ", ".join(sorted({_sql_str(r[app]) for r in rows}))
    ids = [int(r[batch]) for r in rows]
    source = spark.createDataFrame(list(first.values()), schema)
    # A backfill's audit rows may race the stream's: a refused commit is tried again.
    writers.retry_on_conflict(lambda: writers.merge_insert_if_absent(
        source, path, list(key),
        target_predicate=f"t.{S.APP_ID} IN ({apps}) AND t.{S.BATCH_ID} BETWEEN {min(ids)} AND {max(ids)}",
        session=spark))


def merge_silver(rows: DataFrame, path: str, *, app_id: str, version: int, target_predicate: str | None,
                 metadata: str, session: SparkSession | None = None) -> int | None:
    """The silver write: insert-if-absent on ``message_id`` (see :func:`writers.merge_insert_if_absent`)."""
    return writers.merge_insert_if_absent(rows, path, [S.MESSAGE_ID], app_id=app_id, version=version,
                                          target_predicate=target_predicate, metadata=metadata, session=session)


def _short(offsets: dict[str, dict[str, list[int]]]) -> str:
    text = json.dumps(offsets, sort_keys=True, separators=(",", ":"))
    return text if len(text) <= 300 else text[:300] + "..."


MAX_SCOPE_RANGES = 64


def event_date_scope(dates: Iterable[dt.date], slack_days: int) -> str:
    """The silver MERGE's target restriction for ``silver_merge_scope: event_date``.

    A copy of a message dated D is matched against target rows dated within ``slack_days`` of
    D, for each distinct valid date D of the batch: the first copy is found whenever it is
    dated at most ``slack_days`` away from the copy, in particular when the copies are identical
    (retries, redeliveries, replays), whatever their age. One straggler dated far back adds its
    own small range, not every day since. Overlapping ranges are merged; past
    ``MAX_SCOPE_RANGES`` the closest ones are joined (a wider, still correct, restriction).
    """
    ranges: list[list[dt.date]] = []
    for d in sorted(set(dates)):
        lo, hi = _add_days(d, -slack_days), _add_days(d, slack_days)
        if ranges and lo <= ranges[-1][1] + dt.timedelta(days=1):
            ranges[-1][1] = max(ranges[-1][1], hi)
        else:
            ranges.append([lo, hi])
    if not ranges:
        return "false"
    while len(ranges) > MAX_SCOPE_RANGES:  # join across the smallest gap
        i = min(range(len(ranges) - 1), key=lambda j: ranges[j + 1][0] - ranges[j][1])
        ranges[i:i + 2] = [[ranges[i][0], ranges[i + 1][1]]]
    col = f"t.{S.EVENT_DATE}"
    return " OR ".join(
        f"({col} = DATE'{lo.isoformat()}')" if lo == hi
        else f"({col} BETWEEN DATE'{lo.isoformat()}' AND DATE'{hi.isoformat()}')"
        for lo, hi in ranges)


def _ms(since: float) -> int:
    return int((time.monotonic() - since) * 1000)


def _add_days(d: dt.date, days: int) -> dt.date:
    """``d + days``, held within the dates Python can represent."""
    try:
        return d + dt.timedelta(days=days)
    except OverflowError:
        return dt.date.max if days > 0 else dt.date.min


def _sql_str(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def offset_range_predicate(offsets: dict[str, dict[str, list[int]]]) -> str:
    """A target-only predicate covering the batch's offset ranges, so the MERGE reads few files."""
    parts = [
        f"(t.{S.KAFKA_TOPIC} = {_sql_str(topic)} AND t.{S.KAFKA_PARTITION} = {int(p)} "
        f"AND t.{S.KAFKA_OFFSET} BETWEEN {lo} AND {hi})"
        for topic, parts_ in sorted(offsets.items())
        for p, (lo, hi) in sorted(parts_.items(), key=lambda kv: int(kv[0]))
    ]
    return " OR ".join(parts) if parts else "false"


# ---- the streaming query ---------------------------------------------------------------------


def kafka_stream(spark: SparkSession, cfg: Config) -> DataFrame:
    """The Kafka source as a streaming DataFrame."""
    reader = spark.readStream.format("kafka")
    for key, value in source_options(cfg, streaming=True).items():
        reader = reader.option(key, value)
    return reader.load()


def start_ingest(spark: SparkSession, cfg: Config, *, available_now: bool | None = None,
                 job: IngestJob | None = None, once: bool = False) -> StreamingQuery:
    """Create the tables if needed, check the Kafka source, and start the ingest query.

    The checkpoint and the tables must belong to the Kafka cluster and topic incarnation the
    brokers report now (:mod:`pipelines.io.binding`); otherwise it refuses with
    :class:`~pipelines.io.binding.SourceMismatchError`.

    The batches' audit rows are written in the background: after the query stops, call
    ``job.flush()`` (pass your own ``job``) before reading the audit table; :func:`run_ingest`
    does this itself.

    Args:
        spark: The session (from :func:`pipelines.session.build_session`).
        cfg: The configuration.
        available_now: Catch up with what is in Kafka now, then stop (default: ``ingest.trigger``).
        job: The batch function's owner (default: :meth:`IngestJob.from_config`).
        once: Run a single batch (used to finish a batch a stop interrupted: on a restart Spark
            first re-runs the planned, uncommitted batch).

    """
    job = job or IngestJob.from_config(cfg)
    try:  # a reused job's queued audit rows first: the recovery below must not race them
        job.flush()
    except Exception as e:
        raise PipelineError(
            f"the audit rows queued by the previous query could not be written: {explain_stream_error(str(e))}",
            hint="start again with a new job object: the start records them from the batches' commits",
        ) from e
    t = job.tables
    source = check_source(spark, cfg, t.bronze)  # before anything is created
    ensure_tables(spark, t, job.spec)
    record_source(spark, cfg, source, t.bronze, [t.bronze, t.quarantine, t.silver])
    job.topic_ids = source.topics
    current = job.app_id(spark) if has_metadata(spark, cfg.checkpoint_path) else None
    committed = batch_ids(spark, cfg.checkpoint_path, "commits") if current else set()
    for r in job.record_abandoned_batches(spark, current, committed):
        why = ("its deferred audit row was lost in a crash" if r.app_id == current
               else "it was abandoned after writing (a crash, then a checkpoint reset)")
        _log.warning(f"[ingest] batch {r.batch_id} of app id {r.app_id}: {why}; recorded its audit row from its "
                     "commits")
    if available_now is None:
        available_now = cfg.ingest.trigger == "availableNow"
    writer = (
        kafka_stream(spark, cfg).writeStream.queryName(cfg.ingest.query_name)
        .option("checkpointLocation", cfg.checkpoint_path)
        .foreachBatch(job.foreach_batch)
    )
    if once:
        writer = writer.trigger(once=True)
    elif available_now:
        writer = writer.trigger(availableNow=True)
    else:
        writer = writer.trigger(processingTime=cfg.ingest.trigger_interval)
    return writer.start()


@dataclass
class IngestSummary:
    """Totals of one ``run_ingest`` call."""

    batches: int = 0
    replayed_batches: int = 0
    rows_read: int = 0
    silver_inserted: int = 0
    quarantined: int = 0
    duplicates_in_batch: int = 0
    duplicates_in_table: int = 0
    stopped_by_signal: bool = False
    seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        """Plain dict (for JSON)."""
        return asdict(self)


def run_ingest(spark: SparkSession, cfg: Config, *, available_now: bool | None = None,
               stop_event: threading.Event | None = None, install_signal_handlers: bool = False,
               grace_s: float = 120.0, job: IngestJob | None = None) -> IngestSummary:
    """Run the ingest query until it finishes (availableNow) or is asked to stop.

    On SIGINT/SIGTERM (when ``install_signal_handlers``) or ``stop_event``, the current batch is
    allowed to finish (up to ``grace_s``) and the query is stopped; a batch cut short is not
    committed to the checkpoint and is replayed, idempotently, on the next start. ``job`` is
    the batch function's owner (default: :meth:`IngestJob.from_config`).

    Raises:
        PipelineError: the query failed; :class:`CheckpointRewindError` when a batch refused to run.
    """
    t0 = time.monotonic()
    stop_event = stop_event or threading.Event()
    job = job or IngestJob.from_config(cfg)
    summary = IngestSummary()
    previous: dict[signal.Signals, Any] = {}
    if install_signal_handlers:
        def handler(signum: int, _frame: Any) -> None:
            stop_event.set()  # first: a log write interrupted by the signal must not keep the job going
            _log.info(f"[ingest] got {signal.Signals(signum).name}: finishing the current batch, then stopping")
        for sig in (signal.SIGINT, signal.SIGTERM):
            previous[sig] = signal.signal(sig, handler)
    listening = metrics.Listening(spark, cfg.ingest.query_name, counters=True)
    job.metrics = listening.metrics
    try:
        restarts = 0
        once = False
        while True:
            query = start_ingest(spark, cfg, available_now=available_now, job=job, once=once)
            error = await_query(query, stop_event if not once else threading.Event(), grace_s, summary)
            try:
                job.flush()  # the last batch's deferred audit row
            except Exception as e:
                if error is None:
                    raise PipelineError(
                        f"the audit row of the last batch could not be written: {explain_stream_error(str(e))}",
                        hint="start again: the next start records it from the batch's commits",
                    ) from e
            if error is not None:
                if job.fatal is not None:  # our own refusal inside a batch: show it as it is
                    raise job.fatal
                if not (is_spark_55271(error) and restarts < MAX_BUG_RESTARTS):
                    raise PipelineError(
                        f"the ingest query failed: {explain_stream_error(str(error))}",
                        hint="fix the cause and start again: the checkpoint resumes where it stopped, "
                             "and the replayed batch is skipped or merged idempotently",
                    )
                # Spark 4.1.1 bug (SPARK-55271): after re-running a batch that a crash left
                # uncommitted, the Kafka source's progress metrics throw an NPE *after* the batch
                # was committed. Starting again resumes from that commit.
                restarts += 1
                _log.warning("[ingest] the re-run of an uncommitted batch hit Spark bug SPARK-55271 after it "
                             "committed; restarting the query")
                if not (once and pending_batch(spark, cfg.checkpoint_path) is None):
                    continue
            elif summary.stopped_by_signal and not once and pending_batch(spark, cfg.checkpoint_path) is not None:
                # The stop landed as Spark had just planned the next batch (offsets logged, no
                # commit): finish exactly that batch, so a graceful stop leaves nothing pending.
                _log.info("[ingest] finishing the batch the stop interrupted")
                once = True
                continue
            break
    finally:
        listening.stop()
        for sig, h in previous.items():
            signal.signal(sig, h)
    for r in job.results:
        if r.replayed:  # its rows were counted by the run that committed it
            summary.replayed_batches += 1
            continue
        summary.batches += 1
        summary.rows_read += r.rows_read
        summary.silver_inserted += r.silver_inserted or 0
        summary.quarantined += r.quarantined or 0
        summary.duplicates_in_batch += r.duplicates_in_batch
        summary.duplicates_in_table += r.duplicates_in_table or 0
    summary.seconds = time.monotonic() - t0
    return summary


MAX_BUG_RESTARTS = 3
_SPARK_55271 = 'because the return value of "scala.Option.get()" is null'


def is_spark_55271(error: BaseException) -> bool:
    """True for the Kafka source's progress-metrics NPE of Spark 4.1.1 (harmless, after the commit)."""
    trace = str(getattr(error, "_stackTrace", "") or "")
    return _SPARK_55271 in str(error) and ("KafkaMicroBatchStream" in trace or not trace)


def await_query(query: StreamingQuery, stop_event: threading.Event, grace_s: float,
           summary: IngestSummary | Any) -> BaseException | None:
    """Wait for ``query`` to end (or stop it when ``stop_event`` is set); return its error, if any."""
    try:
        while query.isActive:
            if stop_event.is_set():
                summary.stopped_by_signal = True
                _stop_after_current_batch(query, grace_s)
                break
            query.awaitTermination(1)
        return query.exception()
    except Exception as e:  # StreamingQueryException from awaitTermination
        return e


def _last_batch_id(query: StreamingQuery) -> int:
    progress = query.lastProgress
    return int(progress["batchId"]) if progress else -1


def _stop_after_current_batch(query: StreamingQuery, grace_s: float) -> None:
    """Let the batch in flight commit (its progress is reported after the commit), then stop.

    A batch that starts in the instant between that commit and ``stop()`` is interrupted before
    its checkpoint commit: the next start re-runs it, idempotently.
    """
    done = _last_batch_id(query)
    deadline = time.monotonic() + grace_s
    while query.isActive and query.status.get("isTriggerActive") and time.monotonic() < deadline:
        if _last_batch_id(query) > done:
            break
        time.sleep(0.1)
    query.stop()


def explain_stream_error(text: str) -> str:
    """The useful part of a StreamingQueryException: the root error, not pages of Java frames."""
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    causes = [ln for ln in lines if ln.startswith(("pyspark.errors", "py4j.protocol.Py4JJavaError"))
              or (": " in ln and ln.split(": ", 1)[0].endswith(("Error", "Exception")) and not ln.startswith("at "))]
    root = causes[-1] if causes else (lines[0] if lines else "unknown error")
    if "OffsetOutOfRange" in text or "Some data may have been lost" in text:
        return (f"{root[:600]}\nKafka no longer has offsets the checkpoint needs (retention expired or the "
                "topic was recreated); failOnDataLoss=true stopped the query instead of skipping data")
    return root[:1200]


def main(argv: list[str] | None = None, *, silver_writer: SilverWriter | None = None) -> int:
    """Entry point for ``spark-submit pipelines/jobs/ingest.py --conf conf/local.yaml``.

    ``silver_writer`` replaces the silver write (a seam for tests; see :class:`IngestJob`).
    """
    p = argparse.ArgumentParser(prog="ingest", description="Exactly-once Kafka -> Delta ingestion.")
    p.add_argument("--conf", default="conf/local.yaml", help="environment config file (default: %(default)s)")
    p.add_argument("--available-now", action="store_true", help="catch up with Kafka, then exit")
    args = p.parse_args(argv)
    from pipelines.session import build_session

    cfg = load_config(args.conf)
    spark = build_session(cfg)
    job = IngestJob.from_config(cfg, silver_writer=silver_writer)
    summary = run_ingest(spark, cfg, available_now=args.available_now or None, install_signal_handlers=True,
                         job=job)
    print(json.dumps(summary.as_dict()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
