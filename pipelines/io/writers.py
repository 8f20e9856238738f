"""Idempotent Delta writers: every write carries a transaction identity (app id, batch id).

Delta records, per table, the highest ``txnVersion`` committed for each ``txnAppId``; a
write whose version is not higher is skipped silently. Plain writes take the identity as
writer options; MERGE reads it from the session confs, which must be set on the session
the target ``DeltaTable`` is built on and unset afterwards (GUIDE §1).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Sequence

from pyspark.sql import DataFrame, SparkSession

TXN_APP_ID = "spark.databricks.delta.write.txnAppId"
TXN_VERSION = "spark.databricks.delta.write.txnVersion"
# Test-only switches that break exactly-once on purpose, to prove the chaos harness catches
# duplicates. Never set them in production.
UNSAFE_NO_TXN_ENV = "PIPELINES_UNSAFE_DISABLE_TXN"
UNSAFE_SILVER_APPEND_ENV = "PIPELINES_UNSAFE_SILVER_APPEND"


def txn_enabled() -> bool:
    """False only when the test-only kill switch is set."""
    return os.environ.get(UNSAFE_NO_TXN_ENV) != "1"


@contextlib.contextmanager
def delta_txn(spark: SparkSession, app_id: str, version: int) -> Iterator[None]:
    """Set the Delta transaction identity on ``spark`` for the duration of the block."""
    if not txn_enabled():
        yield
        return
    spark.conf.set(TXN_APP_ID, app_id)
    spark.conf.set(TXN_VERSION, str(version))
    try:
        yield
    finally:
        spark.conf.unset(TXN_APP_ID)
        spark.conf.unset(TXN_VERSION)


def merge_insert_if_absent(
    source: DataFrame,
    path: str,
    keys: Sequence[str],
    *,
    app_id: str,
    version: int,
    target_predicate: str | None = None,
) -> int | None:
    """Insert the ``source`` rows whose ``keys`` are not yet in the Delta table at ``path``.

    Args:
        source: Rows to insert; must hold at most one row per key (dedupe first: an
            insert-only MERGE inserts every copy of a key that the target lacks).
        path: Target Delta table.
        keys: Key columns, equal in source and target.
        app_id: Transaction app id (stable per query and checkpoint).
        version: Transaction version (the micro-batch id).
        target_predicate: Extra condition on ``t.`` columns only, to prune target files.

    Returns:
        Rows inserted, or None if Delta skipped the write because this (app id, version)
        was already committed to the table.

    """
    from delta.tables import DeltaTable

    spark = source.sparkSession
    cond = " AND ".join(f"t.`{k}` = s.`{k}`" for k in keys)
    if target_predicate:
        cond = f"({target_predicate}) AND {cond}"
    with delta_txn(spark, app_id, version):
        target = DeltaTable.forPath(spark, path)
        result = target.alias("t").merge(source.alias("s"), cond).whenNotMatchedInsertAll().execute()
        rows = result.collect() if result is not None else []
    if not rows:
        return None
    return int(rows[0]["num_inserted_rows"])


def append_once(df: DataFrame, path: str, *, app_id: str, version: int) -> None:
    """Append ``df`` to the Delta table at ``path`` unless (app id, version) was already committed."""
    writer = df.write.format("delta").mode("append")
    if txn_enabled():
        writer = writer.option("txnAppId", app_id).option("txnVersion", version)
    writer.save(path)


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
