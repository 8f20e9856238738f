"""Idempotent Delta writers: every write carries a transaction identity (app id, batch id).

Delta records, per table, the highest ``txnVersion`` committed for each ``txnAppId``; a
write whose version is not higher is skipped silently. Plain writes take the identity as
writer options; MERGE reads it from the session confs, which must be set on the session
the target ``DeltaTable`` is built on and unset afterwards.

A skip is only right when the write Delta remembers is the *same* batch (same offsets): a
checkpoint rewound under the same app id re-uses batch ids for other offsets. So every commit
also carries, as Delta ``userMetadata``, the batch identity and its offsets
(:func:`batch_metadata`), and :func:`find_batch_commit` finds that commit again to compare.
"""

from __future__ import annotations

import contextlib
import json
import random
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from pyspark.sql import DataFrame, SparkSession

TXN_APP_ID = "spark.databricks.delta.write.txnAppId"
TXN_VERSION = "spark.databricks.delta.write.txnVersion"
USER_METADATA = "spark.databricks.delta.commitInfo.userMetadata"
_METADATA_TAG = "pipelines.batch"
#: How often a write that lost a race with a concurrent commit is tried again (see :func:`retry_on_conflict`).
CONFLICT_RETRIES = 12
#: Its waits grow from this (seconds, jittered) ...
CONFLICT_BASE_S = 0.2
#: ... up to this.
CONFLICT_MAX_S = 5.0
_T = TypeVar("_T")
#: Retries made by :func:`retry_on_conflict` in this process, by nobody's reset (for metrics and tests).
conflict_retries_total = 0


def batch_metadata(app_id: str, batch_id: int, offsets: dict[str, Any], **facts: Any) -> str:
    """The ``userMetadata`` of every commit of a batch.

    It holds the batch's identity, its offsets and ``facts`` (the contract it was parsed with,
    rows read, ...).
    """
    return json.dumps({_METADATA_TAG: {"app_id": app_id, "batch_id": batch_id, "offsets": offsets, **facts}},
                      sort_keys=True, separators=(",", ":"))


@contextlib.contextmanager
def delta_txn(spark: SparkSession, app_id: str, version: int, metadata: str | None = None) -> Iterator[None]:
    """Set the Delta transaction identity (and commit metadata) on ``spark`` for the block."""
    spark.conf.set(TXN_APP_ID, app_id)
    spark.conf.set(TXN_VERSION, str(version))
    if metadata is not None:
        spark.conf.set(USER_METADATA, metadata)
    try:
        yield
    finally:
        spark.conf.unset(TXN_APP_ID)
        spark.conf.unset(TXN_VERSION)
        spark.conf.unset(USER_METADATA)


@dataclass(frozen=True)
class BatchCommit:
    """The commit a batch made to one table, found again by its metadata."""

    version: int
    meta: dict[str, Any]
    metrics: dict[str, str]

    @property
    def offsets(self) -> dict[str, Any]:
        """The batch's offsets: {topic: {partition: [first, last]}}."""
        return dict(self.meta.get("offsets", {}))

    def inserted(self) -> int:
        """Rows the commit inserted (a MERGE's ``numTargetRowsInserted``, an append's ``numOutputRows``)."""
        m = self.metrics
        return int(m.get("numTargetRowsInserted", m.get("numOutputRows", 0)))


RECENT_COMMITS = 200


def batch_commits(spark: SparkSession, path: str, needle: str = _METADATA_TAG,
                  limit: int | None = None) -> dict[tuple[str, int], BatchCommit]:
    """The batch commits in the history of the table at ``path``: (app id, batch id) -> commit.

    ``needle`` narrows the history to commits whose metadata contains it; ``limit`` reads only
    the newest commits (the whole history, up to Delta's log retention, can be long).
    """
    from delta.tables import DeltaTable
    from pyspark.sql import functions as F

    table = DeltaTable.forPath(spark, path)
    rows = ((table.history(limit) if limit else table.history())
            .filter(F.col("userMetadata").contains(needle))
            .select("version", "userMetadata", "operationMetrics").collect())
    out: dict[tuple[str, int], BatchCommit] = {}
    for r in rows:
        meta = json.loads(r["userMetadata"]).get(_METADATA_TAG)
        if isinstance(meta, dict) and "app_id" in meta and "batch_id" in meta:
            out.setdefault((str(meta["app_id"]), int(meta["batch_id"])),
                           BatchCommit(int(r["version"]), meta, dict(r["operationMetrics"] or {})))
    return out


def find_batch_commit(spark: SparkSession, path: str, app_id: str, batch_id: int,
                      recent_only: bool = False) -> BatchCommit | None:
    """The commit of (``app_id``, ``batch_id``) in the table at ``path``, or None.

    Reads the table history: the newest ``RECENT_COMMITS`` commits (where a re-run batch's
    commit is), then, unless ``recent_only``, the rest.
    """
    needle = f'"app_id":{json.dumps(app_id)},"batch_id":{int(batch_id)},'
    recent = batch_commits(spark, path, needle, RECENT_COMMITS).get((app_id, batch_id))  # a replay: recent
    if recent is not None or recent_only:
        return recent
    return batch_commits(spark, path, needle).get((app_id, batch_id))


def merge_insert_if_absent(
    source: DataFrame,
    path: str,
    keys: Sequence[str],
    *,
    app_id: str | None = None,
    version: int | None = None,
    target_predicate: str | None = None,
    metadata: str | None = None,
    session: SparkSession | None = None,
) -> int | None:
    """Insert the ``source`` rows whose ``keys`` are not yet in the Delta table at ``path``.

    Args:
        source: Rows to insert; must hold at most one row per key (dedupe first: an
            insert-only MERGE inserts every copy of a key that the target lacks).
        path: Target Delta table.
        keys: Key columns, equal in source and target.
        app_id: Transaction app id (stable per query and checkpoint); None: a write without
            transaction identity (idempotent through ``keys`` alone, never skipped).
        version: Transaction version (the micro-batch id); given with ``app_id``.
        target_predicate: Extra condition on ``t.`` columns only, to prune target files.
        metadata: Commit ``userMetadata`` (see :func:`batch_metadata`).
        session: The session that runs the MERGE and holds its transaction confs (default:
            ``source``'s). Concurrent writes need one session each: the confs are session
            state, so two MERGEs on one session from two threads could swap identities.

    Returns:
        Rows inserted, or None if Delta skipped the write because this (app id, version)
        was already committed to the table.

    """
    from delta.tables import DeltaTable

    spark = session or source.sparkSession
    cond = " AND ".join(f"t.`{k}` <=> s.`{k}`" for k in keys)  # null-safe: a NULL key is a value too
    if target_predicate:
        cond = f"({target_predicate}) AND {cond}"
    if (app_id is None) != (version is None):
        raise ValueError("merge_insert_if_absent needs both app_id and version, or neither")
    txn = (delta_txn(spark, app_id, version, metadata) if app_id is not None and version is not None
           else contextlib.nullcontext())
    with txn:
        target = DeltaTable.forPath(spark, path)
        result = target.alias("t").merge(source.alias("s"), cond).whenNotMatchedInsertAll().execute()
        rows = result.collect() if result is not None else []
    if not rows:
        return None
    return int(rows[0]["num_inserted_rows"])


def prewarm(spark: SparkSession, path: str) -> None:
    """Build the cached state of the table's newest snapshot now, so the next write finds it ready.

    Every Delta write (a MERGE's file pruning and metrics, a transaction-id lookup) needs the
    state of the snapshot it starts from: a Spark job replaying the log, ~0.45 s here, once per
    table version. Delta reuses the snapshot object while no newer commit exists, so building it
    right after our own commit (off the batch's critical path) moves that cost out of the next
    batch's write; a write that arrives first waits for the same computation instead of redoing it.
    """
    from delta.tables import DeltaTable

    DeltaTable.forPath(spark, path).detail().collect()


def table_version(spark: SparkSession, path: str) -> int:
    """The latest commit version of the Delta table at ``path``.

    Asks the JVM's cached DeltaLog (milliseconds after our own write); falls back to the
    public but slower ``DESCRIBE HISTORY`` if that internal API moves.
    """
    try:
        jvm = spark.sparkContext._jvm
        assert jvm is not None
        log = jvm.org.apache.spark.sql.delta.DeltaLog.forTable(spark._jsparkSession, path)
        return int(log.update(False, jvm.scala.Option.empty(), jvm.scala.Option.empty()).version())
    except Exception:
        from delta.tables import DeltaTable

        return int(DeltaTable.forPath(spark, path).history(1).collect()[0]["version"])


def is_conflict(e: BaseException) -> bool:
    """Delta refused a commit because another commit (a concurrent writer) came first."""
    from delta.exceptions import (
        ConcurrentAppendException,
        ConcurrentDeleteDeleteException,
        ConcurrentDeleteReadException,
        ConcurrentTransactionException,
        ConcurrentWriteException,
    )

    if isinstance(e, ConcurrentAppendException | ConcurrentDeleteReadException | ConcurrentDeleteDeleteException
                  | ConcurrentTransactionException | ConcurrentWriteException) or "Concurrent" in type(e).__name__:
        return True
    text = str(e)
    return "io.delta.exceptions.Concurrent" in text or "DELTA_CONCURRENT_" in text


def retry_on_conflict(write: Callable[[], _T], *, retries: int = CONFLICT_RETRIES,
                      on_retry: Callable[[int, BaseException], None] | None = None) -> _T:
    """Run ``write``; when Delta refuses its commit for a concurrent one, run it again.

    Safe for the writes of this package: a refused commit wrote nothing, and each write is
    idempotent (keyed, with its transaction identity), so running it again either does the work
    or finds it done. Waits grow exponentially from ``CONFLICT_BASE_S`` to ``CONFLICT_MAX_S``,
    jittered (so two writers racing each other do not retry in lockstep); the last refusal is
    raised after ``retries`` attempts. ``on_retry(attempt, error)`` is told of each retry.
    """
    for attempt in range(1, retries + 1):
        try:
            return write()
        except Exception as e:
            if attempt == retries or not is_conflict(e):
                raise
            global conflict_retries_total
            conflict_retries_total += 1
            if on_retry is not None:
                on_retry(attempt, e)
            time.sleep(random.uniform(0.5, 1.0) * min(CONFLICT_MAX_S, CONFLICT_BASE_S * 2 ** (attempt - 1)))
    raise AssertionError("unreachable")
