"""What the tables look like from outside: versions, sizes, small files (``status``, ``maintain``)."""

from __future__ import annotations

import datetime as dt
from dataclasses import asdict, dataclass
from typing import Any

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from pipelines.config import Config
from pipelines.io.tables import ALL_TABLES

#: The backfill ledger's table name (``tables.backfills``).
BACKFILLS = "backfills"


def table_inventory(cfg: Config) -> dict[str, str]:
    """Every Delta table the pipeline writes: name -> path (gold tables as ``gold.<name>``)."""
    out = {name: cfg.table_path(name) for name in (*ALL_TABLES, BACKFILLS)}
    for t in cfg.gold.tables:
        out[f"gold.{t.name}"] = cfg.gold_table_path(t)
    return out


@dataclass
class TableHealth:
    """One table's state at its newest version (``exists`` False: not created yet)."""

    name: str
    path: str
    exists: bool = False
    version: int | None = None
    last_commit: dt.datetime | None = None
    last_operation: str | None = None
    files: int = 0
    bytes: int = 0
    small_files: int = 0

    def as_dict(self) -> dict[str, Any]:
        """Plain values (for JSON)."""
        d = asdict(self)
        d["last_commit"] = self.last_commit.isoformat() + "Z" if self.last_commit else None
        return d


def live_files(spark: SparkSession, path: str) -> tuple[int, DataFrame]:
    """The table's newest version and its live data files (``path``, ``size`` in bytes), from Delta's log.

    Delta's Python API has no file listing; this is its ``Snapshot.allFiles`` (what OPTIMIZE
    and VACUUM themselves read), without reading any data file.
    """
    jvm = spark.sparkContext._jvm
    assert jvm is not None
    log = jvm.org.apache.spark.sql.delta.DeltaLog.forTable(spark._jsparkSession, path)
    none = jvm.scala.Option.empty()
    snapshot = log.update(False, none, none)
    files = DataFrame(snapshot.allFiles().toDF(), spark).select("path", "size")
    return int(snapshot.version()), files


def table_health(spark: SparkSession, name: str, path: str, small_bytes: int) -> TableHealth:
    """Version, newest commit, live files and bytes, files below ``small_bytes``."""
    from delta.tables import DeltaTable

    h = TableHealth(name, path)
    if not DeltaTable.isDeltaTable(spark, path):
        return h
    h.exists = True
    version, files = live_files(spark, path)
    h.version = version
    row = files.agg(F.count(F.lit(1)).alias("n"), F.coalesce(F.sum("size"), F.lit(0)).alias("b"),
                    F.count(F.when(F.col("size") < small_bytes, 1)).alias("small")).first()
    assert row is not None
    h.files, h.bytes, h.small_files = int(row["n"]), int(row["b"]), int(row["small"])
    last = DeltaTable.forPath(spark, path).history(1).select("timestamp", "operation").first()
    if last is not None:
        h.last_commit, h.last_operation = last["timestamp"], last["operation"]
    return h
