"""Gold: aggregates that stay exactly equal to a recomputation from silver.

Run it as::

    python -m pipelines gold [--available-now]          # the streaming job
    python -m pipelines gold rebuild [--table T]        # recompute a table from silver, atomically
    spark-submit $(python -m pipelines spark-args) pipelines/jobs/gold.py --conf conf/local.yaml

or from Python / a notebook::

    summary = run_gold(spark, cfg, available_now=True)
    rebuild(spark, cfg, ["revenue_per_minute"])

How it stays exact: a streaming query reads silver's change data feed with its own checkpoint.
Each batch finds the keys (groups and event-time windows) its changed rows fall in, recomputes
exactly those groups from silver *as of the newest silver version in the batch*, and MERGEs the
result: a group whose values differ is updated, a new one inserted, one that no longer has silver
rows deleted. The write depends only on silver, never on what gold held before, so a replayed
batch, a crash between two tables, or a late event (its window is recomputed) all leave every
group equal to the recomputation. A new or deleted checkpoint builds every table from silver's
latest version ``V`` in one commit each, then streams the changes from ``V`` on; a deleted or
never-filled table is built the same way. After each batch every gold table equals
:func:`pipelines.domain.gold.aggregate` of silver at the version its commit records
(``userMetadata``), and ``verify`` checks exactly that.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import json
import signal
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T
from pyspark.sql.streaming import StreamingQuery

from pipelines import faults, logs, metrics
from pipelines.config import Config, load_config
from pipelines.domain import gold as G
from pipelines.domain import schema as S
from pipelines.domain.gold import GoldSpec
from pipelines.domain.schema import EventSpec
from pipelines.errors import PipelineError
from pipelines.io import writers
from pipelines.io.tables import COMMON_PROPERTIES

_log = logs.get("gold")

#: Table property holding :attr:`GoldSpec.definition` of what the table was built with.
DEFINITION_PROPERTY = "pipelines.gold.definition"
#: Key of the commit ``userMetadata`` of every gold write.
METADATA_TAG = "pipelines.gold"
_PRESENT = G.RESERVED_PREFIX + "present"
_KEY = G.RESERVED_PREFIX + "k_"
#: Newest gold commits read first when looking for the silver version a table reflects.
HISTORY_PEEK = 20
#: How many batch results a GoldJob keeps (its summary counts all of them).
RESULTS_KEPT = 10_000


@dataclass
class TableChange:
    """What one batch did to one gold table."""

    groups: int = 0
    inserted: int = 0
    updated: int = 0
    deleted: int = 0
    #: Set when the table already reflected this silver version (or a newer one) and was skipped.
    already: int | None = None


@dataclass
class GoldBatchResult:
    """What one gold batch did."""

    batch_id: int
    changes: int = 0
    silver_versions: tuple[int, int] | None = None
    tables: dict[str, TableChange] = field(default_factory=dict)
    duration_ms: int = 0

    def progress_line(self) -> str:
        """The per-batch progress line."""
        if self.silver_versions is None:
            return f"[gold] batch {self.batch_id}: no silver changes | {self.duration_ms / 1000:.2f}s"
        lo, hi = self.silver_versions
        parts = " | ".join(f"{name}: reflects v{c.already} already" if c.already is not None else
                           f"{name}: {c.groups} groups recomputed, +{c.inserted} ~{c.updated} -{c.deleted}"
                           for name, c in self.tables.items())
        return (f"[gold] batch {self.batch_id}: silver v{lo}..v{hi}, {self.changes} changed rows | {parts} | "
                f"{self.duration_ms / 1000:.2f}s")


def gold_metadata(query: str, batch_id: int | None, silver_version: int, **facts: Any) -> str:
    """The ``userMetadata`` of a gold commit: which silver version the table now reflects."""
    return json.dumps({METADATA_TAG: {"query": query, "batch_id": batch_id, "silver_version": silver_version,
                                      **facts}}, sort_keys=True, separators=(",", ":"))


def silver_version_of(spark: SparkSession, path: str, as_of: int | None = None) -> tuple[int | None, int | None]:
    """The silver version the gold table at ``path`` reflects, from its newest gold commit.

    Returns ``(silver_version, gold_version)``: what the newest commit at or before gold version
    ``as_of`` (default: the latest) that the gold job or a rebuild wrote recorded, and that commit's
    version; ``(None, None)`` if no such commit exists (a table created but never filled).
    """
    from delta.tables import DeltaTable

    table = DeltaTable.forPath(spark, path)

    def newest(rows: list[Any]) -> tuple[int | None, int | None]:
        for version, text in sorted(rows, key=lambda r: -r[0]):
            if (as_of is not None and version > as_of) or METADATA_TAG not in (text or ""):
                continue
            try:
                meta = json.loads(text).get(METADATA_TAG)
            except json.JSONDecodeError:
                continue
            if isinstance(meta, dict) and "silver_version" in meta:
                return int(meta["silver_version"]), int(version)
        return None, None

    # Nearly every gold commit is the job's own: the newest few are enough; all of the history
    # only if they hold none (e.g. after many maintenance commits, or with an old ``as_of``).
    peek = [(int(r[0]), r[1]) for r in table.history(HISTORY_PEEK).select("version", "userMetadata").collect()]
    found = newest(peek)
    if found[0] is not None or len(peek) < HISTORY_PEEK:
        return found
    return newest([(int(r[0]), r[1]) for r in table.history().select("version", "userMetadata")
                   .filter(F.col("userMetadata").contains(METADATA_TAG)).collect()])


def refresh(spark: SparkSession, spec: GoldSpec, keys: DataFrame, silver: DataFrame, metadata: str) -> TableChange:
    """Recompute the groups ``keys`` of ``spec`` from ``silver`` and MERGE them into the gold table.

    ``keys`` holds ``spec.keys`` (see :func:`pipelines.domain.gold.touched_keys`). A group with
    silver rows is inserted, or updated where a value differs; a group without silver rows is
    deleted. Idempotent: running it again with the same silver changes nothing. A concurrent
    commit to the gold table (a maintenance job) makes Delta refuse the MERGE; it is retried
    (the recompute does not depend on gold, so a retry is always safe).
    """
    from delta.tables import DeltaTable

    keys = keys.persist()
    try:
        wanted = keys.select(*[F.col(k).alias(_KEY + k) for k in spec.keys])
        rows = silver.transform(G.with_keys(spec))
        if spec.prunes_by_event_date:
            rows = rows.filter(F.col(S.EVENT_DATE).isin(_dates(keys)))
        rows = rows.join(wanted, G.keys_match(rows, wanted, spec.keys, _KEY), "left_semi")
        fresh = rows.transform(G.aggregate_keyed(spec)).withColumn(_PRESENT, F.lit(True))
        source = wanted.join(fresh, G.keys_match(fresh, wanted, spec.keys, _KEY), "left").select(
            *[F.col(_KEY + k).alias(k) for k in spec.keys], *spec.values, _PRESENT)
        on = " AND ".join(f"t.`{k}` <=> s.`{k}`" for k in spec.keys)
        same = " AND ".join(f"t.`{v}` <=> s.`{v}`" for v in spec.values)
        groups = keys.count()
        def merge() -> Any:
            spark.conf.set(writers.USER_METADATA, metadata)
            try:
                return (DeltaTable.forPath(spark, spec.path).alias("t").merge(source.alias("s"), on)
                        .whenMatchedDelete(condition=f"s.{_PRESENT} IS NULL")
                        .whenMatchedUpdate(condition=f"NOT ({same})", set={v: f"s.`{v}`" for v in spec.values})
                        .whenNotMatchedInsert(condition=f"s.{_PRESENT}",
                                              values={c: f"s.`{c}`" for c in (*spec.keys, *spec.values)})
                        .execute().first())
            finally:
                spark.conf.unset(writers.USER_METADATA)

        out = writers.retry_on_conflict(merge)
        metrics = out.asDict() if out is not None else {}
        return TableChange(groups, int(metrics.get("num_inserted_rows", 0)), int(metrics.get("num_updated_rows", 0)),
                           int(metrics.get("num_deleted_rows", 0)))
    finally:
        keys.unpersist()


def _dates(keys: DataFrame) -> list[dt.date]:
    """The event dates (silver's ``event_date``, in Spark's session time zone) the windows in ``keys`` cover.

    A window may span midnight: every date from its start to its last instant counts.
    """
    days = keys.select(F.explode(F.sequence(
        F.to_date(G.WINDOW_START), F.to_date(F.col(G.WINDOW_END) - F.expr("INTERVAL 1 MICROSECOND")))).alias("d")
    ).filter(F.col("d").isNotNull()).distinct()
    return sorted(r[0] for r in days.collect())


def gold_schema(spark: SparkSession, spec: GoldSpec, silver: T.StructType) -> T.StructType:
    """The columns of the gold table ``spec`` (all nullable)."""
    return T.StructType([T.StructField(f.name, f.dataType, True) for f in
                         spark.createDataFrame([], silver).transform(G.aggregate(spec)).schema.fields])


def _built_as(spark: SparkSession, spec: GoldSpec, schema: T.StructType) -> bool:
    """True if the existing gold table records ``spec``'s definition and has ``schema``'s columns and types."""
    from delta.tables import DeltaTable

    table = DeltaTable.forPath(spark, spec.path)
    props = table.detail().select("properties").first()
    have = dict(props[0] or {}).get(DEFINITION_PROPERTY) if props else None
    return have == spec.definition and [(f.name, f.dataType) for f in table.toDF().schema.fields] == [
        (f.name, f.dataType) for f in schema.fields]


def check_gold_tables(spark: SparkSession, specs: Sequence[GoldSpec], silver: T.StructType) -> list[GoldSpec]:
    """Check that each existing gold table was built with the declared definition and columns.

    Returns:
        The specs whose table must be built: it does not exist, or no build or batch ever filled it.

    Raises:
        PipelineError: a table's definition or columns differ from the config (the hint names the
            ``gold rebuild`` command that recomputes it).

    """
    from delta.tables import DeltaTable

    missing = []
    for spec in specs:
        if not DeltaTable.isDeltaTable(spark, spec.path):
            missing.append(spec)
            continue
        if not _built_as(spark, spec, gold_schema(spark, spec, silver)):
            raise PipelineError(
                f"gold table {spec.name} ({spec.path}) was built with another definition than gold.tables "
                "declares now: its rows would mix the two",
                hint=f"recompute it from silver: python -m pipelines gold rebuild --table {spec.name}",
            )
        if silver_version_of(spark, spec.path)[0] is None:
            missing.append(spec)
    return missing


def build_table(spark: SparkSession, spec: GoldSpec, silver_path: str, version: int, metadata: str) -> None:
    """Replace the gold table ``spec`` by its recomputation from silver at ``version``, in one commit.

    ``CREATE OR REPLACE TABLE ... AS SELECT`` writes the rows, the columns and the definition
    property in a single Delta commit: readers see the old table or the new one, never a
    half-built one, and time travel still reaches the old rows. A table that already has this
    definition and these columns is overwritten instead (also one commit), which keeps its
    identity.
    """
    from delta.tables import DeltaTable

    view = f"{G.RESERVED_PREFIX}build_{spec.name}"
    rows = spark.read.format("delta").option("versionAsOf", version).load(silver_path).transform(G.aggregate(spec))
    same = DeltaTable.isDeltaTable(spark, spec.path) and _built_as(spark, spec, rows.schema)
    spark.conf.set(writers.USER_METADATA, metadata)
    try:
        if same:  # a plain overwrite keeps the table's identity (streaming readers of gold go on)
            # A concurrent `maintain` compaction can win the race: the recomputation from the
            # same silver version is simply written again.
            writers.retry_on_conflict(lambda: rows.write.format("delta").mode("overwrite").save(spec.path))
        else:
            rows.createOrReplaceTempView(view)
            props = ", ".join(f"'{k}' = '{v}'" for k, v in {**COMMON_PROPERTIES,
                                                             DEFINITION_PROPERTY: spec.definition}.items())
            spark.sql(f"CREATE OR REPLACE TABLE delta.`{spec.path}` USING delta TBLPROPERTIES ({props}) "
                      f"AS SELECT * FROM {view}").collect()
    finally:
        spark.conf.unset(writers.USER_METADATA)
        spark.catalog.dropTempView(view)


@dataclass
class GoldSummary:
    """Totals of one ``run_gold`` call."""

    #: Tables built whole from silver at the start (a new checkpoint, or a missing table).
    tables_built: int = 0
    batches: int = 0
    changes: int = 0
    groups_recomputed: int = 0
    inserted: int = 0
    updated: int = 0
    deleted: int = 0
    stopped_by_signal: bool = False
    seconds: float = 0.0

    def add(self, r: GoldBatchResult) -> None:
        """Count one batch."""
        self.batches += 1
        self.changes += r.changes
        for c in r.tables.values():
            self.groups_recomputed += c.groups
            self.inserted += c.inserted
            self.updated += c.updated
            self.deleted += c.deleted

    def as_dict(self) -> dict[str, Any]:
        """Plain dict (for JSON)."""
        return asdict(self)


class GoldJob:
    """The gold ``foreachBatch`` body, with its collaborators passed in.

    Args:
        specs: The gold tables.
        silver: Silver's location.
        query_name: Recorded in each commit's metadata.
        out: Where progress lines go (None: silent).

    """

    def __init__(self, specs: Sequence[GoldSpec], silver: str, *, query_name: str = "gold",
                 out: Callable[[str], None] | None = _log.info) -> None:
        if not specs:
            raise PipelineError("no gold tables are declared", hint="declare them under gold.tables in the config")
        self.specs = list(specs)
        self.silver = silver
        self.query_name = query_name
        self.out = out
        #: Totals of the batches this job ran, and the last RESULTS_KEPT batches.
        self.summary = GoldSummary()
        self.results: deque[GoldBatchResult] = deque(maxlen=RESULTS_KEPT)
        #: Per table, the silver version it reflects (set by :func:`start_gold`, then by each batch).
        self.versions: dict[str, int] = {}
        self._jvm_pid: int | None = None

    @classmethod
    def from_config(cls, spark: SparkSession, cfg: Config, *, out: Callable[[str], None] | None = _log.info,
                    tables: Sequence[str] | None = None) -> GoldJob:
        """Validate ``gold.tables`` (Spark analyses each SQL snippet) and build the job."""
        specs = select_specs(spark, cfg, tables)
        return cls(specs, cfg.table_path("silver"), query_name=cfg.gold.query_name,
                   out=out if cfg.gold.progress else None)

    def _fault(self, spark: SparkSession, point: str, batch_id: int, table: str | None = None) -> None:
        import os

        if faults.POINT_ENV not in os.environ:
            return
        if self._jvm_pid is None:
            self._jvm_pid = int(spark.sparkContext._jvm.java.lang.ProcessHandle.current().pid())  # type: ignore
        if table is not None:
            faults.arm(point, batch_id, self._jvm_pid, table=table)
        else:
            faults.inject(point, batch_id, self._jvm_pid)

    def foreach_batch(self, changes: DataFrame, batch_id: int) -> None:
        """The function handed to ``writeStream.foreachBatch``."""
        self.process_batch(changes, batch_id)

    def _columns(self) -> list[str]:
        return sorted({c for spec in self.specs for c in (*spec.group_by, *([spec.window.column]
                                                                          if spec.window else []))})

    def process_batch(self, changes: DataFrame, batch_id: int) -> GoldBatchResult:
        """Recompute the groups a batch of silver's change feed touches; idempotent for any replay."""
        t0 = time.monotonic()
        spark = changes.sparkSession
        res = GoldBatchResult(batch_id)
        # The keys come from every change row (an update's pre-image too: its old group changes).
        needed = self._columns()
        rows = changes.select(*needed, "_commit_version").persist()
        try:
            stats = rows.agg(F.count(F.lit(1)), F.min("_commit_version"), F.max("_commit_version")).first()
            assert stats is not None
            res.changes = int(stats[0])
            if res.changes:
                lo, hi = int(stats[1]), int(stats[2])
                res.silver_versions = (lo, hi)
                # A table that already reflects silver at `hi` or newer (built from it, or this batch
                # is re-run after a crash between tables) equals the recomputation from that version:
                # nothing in this batch can change it.
                todo = [s for s in self.specs if self.versions.get(s.name, -1) < hi]
                for spec in self.specs:
                    if spec not in todo:
                        res.tables[spec.name] = TableChange(already=self.versions[spec.name])
                if todo:
                    # A silver commit larger than maxFilesPerTrigger is split across batches: take
                    # the keys of all of version `hi` now, so that after this batch every group
                    # reflects silver at `hi` (what the commit records), not only those this part
                    # touched.
                    whole = (spark.read.format("delta").options(readChangeFeed="true", startingVersion=hi,
                                                                endingVersion=hi).load(self.silver)
                             .select(*needed, "_commit_version"))
                    touched = rows.unionByName(whole)
                for i, spec in enumerate(todo):
                    # Every group is recomputed from silver as of the batch's newest version (or the
                    # version a build already brought the table to, if newer), so after this batch
                    # the table equals the recomputation from that version exactly.
                    version = max(hi, self.versions.get(spec.name, hi))
                    silver = spark.read.format("delta").option("versionAsOf", version).load(self.silver)
                    meta = gold_metadata(self.query_name, batch_id, version, first_silver_version=lo)
                    if i == 0:
                        self._fault(spark, faults.DURING_GOLD, batch_id, table=spec.path)
                    res.tables[spec.name] = refresh(spark, spec, touched.transform(G.touched_keys(spec)), silver,
                                                    meta)
                    self.versions[spec.name] = version
                    if i == 0:
                        self._fault(spark, faults.AFTER_GOLD, batch_id)
                res.tables = {s.name: res.tables[s.name] for s in self.specs}
        finally:
            rows.unpersist()
        res.duration_ms = int((time.monotonic() - t0) * 1000)
        self.summary.add(res)
        self.results.append(res)
        if self.out:
            self.out(res.progress_line())
        return res


def select_specs(spark: SparkSession, cfg: Config, tables: Sequence[str] | None = None) -> list[GoldSpec]:
    """The validated gold tables of ``cfg`` (all, or those named in ``tables``)."""
    silver = S.silver_schema(EventSpec.from_config(cfg.events))
    specs = G.gold_specs(cfg, silver)
    G.check_sql(spark, specs, silver, cfg.sources)
    if tables:
        known = {s.name for s in specs}
        unknown = [t for t in tables if t not in known]
        if unknown:
            raise PipelineError(f"no gold table named {', '.join(unknown)}",
                                hint=f"declared in gold.tables: {', '.join(sorted(known)) or 'none'}")
        specs = [s for s in specs if s.name in tables]
    return specs


def silver_changes(spark: SparkSession, cfg: Config, starting_version: int) -> DataFrame:
    """Silver's change data feed as a stream; a new checkpoint starts at ``starting_version``."""
    return (spark.readStream.format("delta").option("readChangeFeed", "true")
            .option("startingVersion", str(starting_version))
            .option("maxFilesPerTrigger", str(cfg.gold.max_files_per_trigger))
            .load(cfg.table_path("silver")))


#: In the gold checkpoint: the silver version its stream started from.
START_FILE = "pipelines-gold-start.json"


def stream_start(spark: SparkSession, checkpoint: str, new_start: int | None,
                 recorded: Callable[[], Sequence[int]] = tuple) -> int:
    """The ``startingVersion`` of the gold stream: the same for a checkpoint's whole life.

    Spark asks the source again for a checkpoint's first batch on a restart (and re-runs it if it
    was not committed); Delta computes that batch's start from ``startingVersion``. Passing
    silver's latest version then made the restart fail once silver moved on (``DELTA_INVALID_CDC_RANGE``,
    start after end) or, for an uncommitted first batch, skip changes. So the version is recorded
    when a checkpoint starts (``new_start``) and read back after. ``recorded``: the silver
    versions the existing gold tables reflect (asked only for a checkpoint from before the file).
    """
    from pipelines.io.checkpoint import child, read_text, source_offsets, write_text

    path = child(checkpoint, START_FILE)
    if new_start is not None:
        write_text(spark, path, json.dumps({"starting_version": new_start}))
        return new_start
    text = read_text(spark, path)
    if text is not None:
        return int(json.loads(text)["starting_version"])
    # A checkpoint from before this file: no later than where its first batch ended, nor than what
    # the tables reflect (an uncommitted first batch then re-reads what they may miss: gold
    # recomputes groups from silver, so reading more changes is safe, reading fewer is not).
    end = source_offsets(spark, checkpoint, 0).get("reservoirVersion")
    candidates = [*([end] if isinstance(end, int) else []), *recorded()]
    return min(candidates) if candidates else 0


def start_gold(spark: SparkSession, cfg: Config, *, available_now: bool | None = None,
               job: GoldJob | None = None) -> StreamingQuery:
    """Build what needs building, then start the gold query (see the module docstring).

    A new checkpoint (never started, or deleted) builds every gold table from silver's latest
    version ``V`` and streams silver's changes from ``V`` on; an existing checkpoint resumes, and a
    gold table that is missing (deleted, or created but never filled) is built first.

    Raises:
        PipelineError: silver does not exist yet, or a gold table was built with another definition.
    """
    from delta.tables import DeltaTable

    from pipelines.io.checkpoint import batch_ids

    job = job or GoldJob.from_config(spark, cfg)
    if not DeltaTable.isDeltaTable(spark, job.silver):
        raise PipelineError(f"silver does not exist yet ({job.silver})",
                            hint="start the ingest job first: it creates silver (run_gold waits for it)")
    missing = check_gold_tables(spark, job.specs, S.silver_schema(EventSpec.from_config(cfg.events)))
    new_checkpoint = not batch_ids(spark, cfg.gold_checkpoint_path, "offsets")
    latest = writers.table_version(spark, job.silver)

    def recorded() -> list[int]:
        return [v for v in (silver_version_of(spark, s.path)[0] for s in job.specs if s not in missing)
                if v is not None]

    starting = stream_start(spark, cfg.gold_checkpoint_path, latest if new_checkpoint else None, recorded)
    for spec in job.specs if new_checkpoint else missing:
        t0 = time.monotonic()
        build_table(spark, spec, job.silver, latest, gold_metadata(job.query_name, None, latest, build=True))
        job.summary.tables_built += 1
        if job.out:
            job.out(f"[gold] built {spec.name} from silver v{latest} in {time.monotonic() - t0:.2f}s")
    for spec in job.specs:
        reflected = silver_version_of(spark, spec.path)[0]
        job.versions[spec.name] = latest if reflected is None else reflected
    if available_now is None:
        available_now = cfg.gold.trigger == "availableNow"
    writer = (silver_changes(spark, cfg, starting_version=starting).writeStream.queryName(cfg.gold.query_name)
              .option("checkpointLocation", cfg.gold_checkpoint_path)
              .foreachBatch(job.foreach_batch))
    writer = writer.trigger(availableNow=True) if available_now else writer.trigger(
        processingTime=cfg.gold.trigger_interval)
    return writer.start()


def run_gold(spark: SparkSession, cfg: Config, *, available_now: bool | None = None,
             stop_event: threading.Event | None = None, install_signal_handlers: bool = False,
             grace_s: float = 120.0, job: GoldJob | None = None) -> GoldSummary:
    """Run the gold query until it is caught up (availableNow) or asked to stop.

    A stop (SIGINT/SIGTERM with ``install_signal_handlers``, or ``stop_event``) lets the current
    batch finish; a batch cut short is simply recomputed on the next start.

    Raises:
        PipelineError: the query failed (the message is the root cause, not a Java trace).
    """
    from pipelines.jobs.ingest import await_query, explain_stream_error

    t0 = time.monotonic()
    stop_event = stop_event or threading.Event()
    job = job or GoldJob.from_config(spark, cfg)
    summary = GoldSummary()
    previous: dict[signal.Signals, Any] = {}
    if install_signal_handlers:
        def handler(signum: int, _frame: Any) -> None:
            stop_event.set()  # first: a log write interrupted by the signal must not keep the job going
            _log.info(f"[gold] got {signal.Signals(signum).name}: finishing the current batch, then stopping")
        for sig in (signal.SIGINT, signal.SIGTERM):
            previous[sig] = signal.signal(sig, handler)
    listening = metrics.Listening(spark, cfg.gold.query_name)
    try:
        if not _wait_for_silver(spark, job.silver, stop_event, wait=not (
                available_now if available_now is not None else cfg.gold.trigger == "availableNow")):
            summary.seconds = time.monotonic() - t0
            return summary
        query = start_gold(spark, cfg, available_now=available_now, job=job)
        error = await_query(query, stop_event, grace_s, summary)
    finally:
        listening.stop()
        for sig, h in previous.items():
            signal.signal(sig, h)
    if error is not None:
        raise PipelineError(f"the gold query failed: {explain_stream_error(str(error))}",
                            hint="fix the cause and start again: the checkpoint resumes, and a replayed batch "
                                 "recomputes the same groups from silver")
    summary = dataclasses.replace(job.summary, stopped_by_signal=summary.stopped_by_signal)
    summary.seconds = time.monotonic() - t0
    return summary


def _wait_for_silver(spark: SparkSession, silver: str, stop_event: threading.Event, wait: bool) -> bool:
    """True once silver exists; a streaming gold job started before ingest waits for it."""
    from delta.tables import DeltaTable

    said = False
    while not DeltaTable.isDeltaTable(spark, silver):
        if not wait:
            _log.info(f"[gold] silver does not exist yet ({silver}): nothing to do")
            return False
        if not said:
            _log.info(f"[gold] waiting for the ingest job to create silver ({silver})")
            said = True
        if stop_event.wait(2.0):
            return False
    return True


@dataclass
class RebuildResult:
    """One rebuilt gold table."""

    table: str
    rows: int
    silver_version: int


def rebuild(spark: SparkSession, cfg: Config, tables: Sequence[str] | None = None) -> list[RebuildResult]:
    """Recompute gold tables from silver and replace each table's rows in one commit.

    Each table is computed from one silver version (the newest when it starts) and written by
    :func:`build_table`: rows, columns and definition in one commit, so a reader sees the old
    table or the new one, never a half-built one, and time travel still reaches the old content.
    Also the way to apply a changed table definition. Stop the gold job first: a batch it commits
    while the rebuild runs may recompute some groups at an older silver version (``verify``
    reports them; rebuilding again, or restarting the job, repairs them).
    """
    from delta.tables import DeltaTable

    specs = select_specs(spark, cfg, tables)
    silver_path = cfg.table_path("silver")
    if not DeltaTable.isDeltaTable(spark, silver_path):
        raise PipelineError(f"silver does not exist yet ({silver_path})", hint="run the ingest job first")
    out: list[RebuildResult] = []
    for spec in specs:
        version = writers.table_version(spark, silver_path)
        build_table(spark, spec, silver_path, version, gold_metadata(cfg.gold.query_name, None, version,
                                                                     rebuild=True))
        rows = spark.read.format("delta").load(spec.path).count()
        out.append(RebuildResult(spec.name, rows, version))
    return out


@dataclass
class GoldComparison:
    """A gold table against the recomputation from the silver version it says it reflects."""

    table: str
    built: bool
    silver_version: int | None = None
    latest_silver_version: int | None = None
    groups: int = 0
    differing: int = 0
    samples: list[str] = field(default_factory=list)


def compare(spark: SparkSession, spec: GoldSpec, silver_path: str, samples: int = 5) -> GoldComparison:
    """Recompute ``spec`` from silver in batch and compare it with the gold table, group by group.

    The recomputation reads silver as of the version the table's newest gold commit recorded
    (a gold job that is behind silver is not a difference); every key that is missing, unexpected
    or holds another value counts, with samples showing both sides.
    """
    from delta.tables import DeltaTable

    if not DeltaTable.isDeltaTable(spark, spec.path):
        return GoldComparison(spec.name, built=False)
    latest = writers.table_version(spark, silver_path)
    # Pin the gold version first: a gold job committing meanwhile changes neither side.
    gold_version = writers.table_version(spark, spec.path)
    version = silver_version_of(spark, spec.path, as_of=gold_version)[0]
    silver = spark.read.format("delta").option("versionAsOf", latest if version is None else version).load(
        silver_path)
    want = silver.transform(G.aggregate(spec)).select(
        *[F.col(c).alias(_KEY + c) for c in (*spec.keys, *spec.values)]).withColumn("_want", F.lit(True))
    have = (spark.read.format("delta").option("versionAsOf", gold_version).load(spec.path)
            .withColumn("_have", F.lit(True)))
    both = have.join(want, G.keys_match(have, want, spec.keys, _KEY), "full_outer")
    differs = F.col("_have").isNull() | F.col("_want").isNull()
    for v in spec.values:
        differs = differs | ~F.col(v).eqNullSafe(F.col(_KEY + v))
    bad = both.filter(differs).persist()
    try:
        rows = bad.limit(samples).collect()
        count = bad.count() if rows else 0
    finally:
        bad.unpersist()

    def show(r: Any) -> str:
        keys = ", ".join(f"{k}={r[k] if r['_have'] else r[_KEY + k]}" for k in spec.keys)
        gold = "absent" if not r["_have"] else ", ".join(f"{v}={r[v]}" for v in spec.values)
        expected = "absent" if not r["_want"] else ", ".join(f"{v}={r[_KEY + v]}" for v in spec.values)
        return f"{keys}: gold {gold}; recomputed {expected}"

    return GoldComparison(spec.name, True, version, latest, want.count(), count, [show(r) for r in rows])


def main(argv: list[str] | None = None) -> int:
    """Entry point for ``spark-submit pipelines/jobs/gold.py --conf conf/local.yaml [--available-now]``."""
    p = argparse.ArgumentParser(prog="gold", description="Exactly-once gold aggregates from silver's change feed.")
    p.add_argument("--conf", default="conf/local.yaml", help="environment config file (default: %(default)s)")
    p.add_argument("--available-now", action="store_true", help="catch up with silver, then exit")
    p.add_argument("--rebuild", action="store_true", help="recompute the gold tables from silver instead")
    p.add_argument("--table", action="append", help="with --rebuild: only this table (repeatable)")
    args = p.parse_args(argv)
    from pipelines.session import build_session

    cfg = load_config(args.conf)
    spark = build_session(cfg)
    if args.rebuild:
        print(json.dumps([asdict(r) for r in rebuild(spark, cfg, args.table)]))
        return 0
    summary = run_gold(spark, cfg, available_now=args.available_now or None, install_signal_handlers=True)
    print(json.dumps(summary.as_dict()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
