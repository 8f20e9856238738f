"""``status``: one screen on the pipeline's state, read from its checkpoints, tables and Kafka.

Read-only and safe while the jobs run: Spark's checkpoint files (the last committed batch and
its end offsets), Kafka's latest offsets (the last stable offset under ``read_committed``), the
Delta logs of every table, the newest audit and quality rows. It works with the jobs stopped
(that is when one most needs it) and with the broker down (lag is then unknown, and says why).
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import asdict, dataclass, field
from typing import Any

from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from pipelines.config import Config
from pipelines.io.checkpoint import batch_ids, child, hadoop_path, source_offsets
from pipelines.io.health import TableHealth, table_health, table_inventory


@dataclass
class PartitionLag:
    """One Kafka partition: the ingest query's committed position against the latest offset."""

    topic: str
    partition: int
    committed: int | None
    latest: int | None
    lag: int | None


@dataclass
class QueryStatus:
    """A streaming query's checkpoint: last committed batch, a planned one not committed yet."""

    name: str
    checkpoint: str
    started: bool = False
    last_batch: int | None = None
    last_commit: dt.datetime | None = None
    pending_batch: int | None = None
    #: The source offsets the last committed batch ended at (Kafka: topic -> partition -> offset;
    #: Delta: the source table's version and index).
    offsets: dict[str, Any] = field(default_factory=dict)


@dataclass
class StatusReport:
    """What ``status`` shows (``--json``: this, as JSON)."""

    ingest: QueryStatus
    gold: QueryStatus
    lag: list[PartitionLag] = field(default_factory=list)
    lag_error: str | None = None
    #: Silver commits the gold query has not read yet (None: unknown).
    gold_silver_versions_behind: int | None = None
    tables: list[TableHealth] = field(default_factory=list)
    last_batch: dict[str, Any] | None = None
    last_quality: dict[str, Any] | None = None

    @property
    def total_lag(self) -> int | None:
        """Records behind, all partitions (None if any is unknown)."""
        if not self.lag or any(p.lag is None for p in self.lag):
            return None
        return sum(p.lag or 0 for p in self.lag)

    def as_dict(self) -> dict[str, Any]:
        """Plain values (for ``--json``)."""
        d = asdict(self)
        d["tables"] = [t.as_dict() for t in self.tables]
        d["total_lag"] = self.total_lag
        return json.loads(json.dumps(d, default=_plain))


def _plain(value: Any) -> Any:
    if isinstance(value, dt.datetime):
        return value.isoformat() + ("Z" if value.tzinfo is None else "")
    if isinstance(value, dt.date):
        return value.isoformat()
    return str(value)


def query_status(spark: SparkSession, name: str, checkpoint: str) -> QueryStatus:
    """Read a query's checkpoint (Spark's ``offsets/``, ``commits/`` files) without starting it."""
    q = QueryStatus(name, checkpoint)
    fs, p = hadoop_path(spark, child(checkpoint, "metadata"))
    q.started = bool(fs.exists(p))
    committed = batch_ids(spark, checkpoint, "commits")
    planned = batch_ids(spark, checkpoint, "offsets")
    if planned and max(planned) not in committed:
        q.pending_batch = max(planned)
    if not committed:
        return q
    q.last_batch = max(committed)
    fs, p = hadoop_path(spark, child(checkpoint, f"commits/{q.last_batch}"))
    q.last_commit = dt.datetime.fromtimestamp(fs.getFileStatus(p).getModificationTime() / 1000, dt.UTC).replace(
        tzinfo=None)
    q.offsets = source_offsets(spark, checkpoint, q.last_batch)
    return q


#: Delta's streaming source offset index for "this version read completely" (DeltaSourceOffset.END_INDEX).
DELTA_END_INDEX = 9223372036854775707


def delta_next_version(offsets: dict[str, Any]) -> int | None:
    """The oldest version a Delta streaming source still has to read, from its offset (None: not Delta).

    The offset is ``reservoirVersion`` and an ``index`` in it: negative (before the version's
    first file), a file index (part of it read), or Delta's end index (all of it read).
    """
    version, index = offsets.get("reservoirVersion"), offsets.get("index", -1)
    if not isinstance(version, int) or not isinstance(index, int):
        return None
    return version + 1 if index >= DELTA_END_INDEX else version


def kafka_lag(spark: SparkSession, cfg: Config, q: QueryStatus) -> list[PartitionLag]:
    """Per partition of the configured topics: committed end offset, latest offset, records between."""
    from pipelines.io.binding import list_offsets

    latest = list_offsets(spark, cfg, "latest", timeout_s=15.0)
    out = []
    for topic in cfg.kafka.topics:
        value = q.offsets.get(topic)
        committed: dict[str, Any] = value if isinstance(value, dict) else {}
        for part, last in sorted(latest.get(topic, {}).items()):
            done = committed.get(str(part))
            # Not in the checkpoint yet: the query starts from kafka.starting_offsets (earliest: all of it).
            lag = last - done if isinstance(done, int) else None
            out.append(PartitionLag(topic, part, done if isinstance(done, int) else None, last,
                                    max(0, lag) if lag is not None else None))
    return out


def last_audit_row(spark: SparkSession, path: str, query_name: str) -> dict[str, Any] | None:
    """The newest audit row of the ingest query (its last batch with a written audit row)."""
    from delta.tables import DeltaTable

    if not DeltaTable.isDeltaTable(spark, path):
        return None
    row = (spark.read.format("delta").load(path).where(F.col("query_name") == query_name)
           .orderBy(F.col("finished_at").desc()).limit(1)
           .select("app_id", "batch_id", "finished_at", "duration_ms", "rows_read", "silver_inserted",
                   "quarantined", "duplicates_in_batch", "duplicates_in_table", "max_kafka_timestamp").first())
    return row.asDict() if row is not None else None


def last_quality(spark: SparkSession, path: str) -> dict[str, Any] | None:
    """The newest batch's quality record: suite, rules run, which failed."""
    from delta.tables import DeltaTable

    if not DeltaTable.isDeltaTable(spark, path):
        return None
    df = spark.read.format("delta").load(path)
    newest = df.orderBy(F.col("run_time").desc()).select("app_id", "batch_id", "run_time").limit(1).first()
    if newest is None:
        return None
    rows = df.where((F.col("app_id") == newest["app_id"]) & (F.col("batch_id") == newest["batch_id"])).select(
        "suite", "expectation", "success", "unexpected_count").collect()
    failed = sorted(r["expectation"] for r in rows if not r["success"])
    return {"app_id": newest["app_id"], "batch_id": newest["batch_id"], "run_time": newest["run_time"],
            "suite": rows[0]["suite"] if rows else None, "rules": len(rows), "failed": failed}


def collect_status(spark: SparkSession, cfg: Config) -> StatusReport:
    """Everything ``status`` shows."""
    small = cfg.maintenance.small_file_mb * 1024 * 1024
    report = StatusReport(query_status(spark, cfg.ingest.query_name, cfg.checkpoint_path),
                          query_status(spark, cfg.gold.query_name, cfg.gold_checkpoint_path))
    try:
        report.lag = kafka_lag(spark, cfg, report.ingest)
    except Exception as e:  # BrokerError: say so, show the rest
        report.lag_error = str(e).splitlines()[0]
    report.tables = [table_health(spark, name, path, small) for name, path in table_inventory(cfg).items()]
    silver = next(t for t in report.tables if t.name == "silver")
    needed = delta_next_version(report.gold.offsets)
    if silver.version is not None and needed is not None:
        report.gold_silver_versions_behind = max(0, silver.version - needed + 1)
    report.last_batch = last_audit_row(spark, cfg.table_path("audit"), cfg.ingest.query_name)
    report.last_quality = last_quality(spark, cfg.table_path("quality"))
    return report


def _mb(n: int) -> str:
    return f"{n / 1024 / 1024:,.1f}"


def _when(t: dt.datetime | None) -> str:
    return t.strftime("%Y-%m-%d %H:%M:%S") + " UTC" if t else "-"


def render_status(report: StatusReport) -> list[Any]:
    """The report as rich renderables (tables), for the terminal."""
    from pipelines.tools.console import table

    out: list[Any] = []
    queries = []
    for q in (report.ingest, report.gold):
        queries.append({"query": q.name, "started": "yes" if q.started else "no",
                        "last batch": q.last_batch, "committed at": _when(q.last_commit),
                        "planned, not committed": q.pending_batch, "checkpoint": q.checkpoint})
    out.append(table(queries, title="queries"))
    if report.lag:
        out.append(table([{"topic": p.topic, "partition": p.partition, "committed offset": p.committed,
                           "latest offset": p.latest, "lag": p.lag if p.lag is not None else "not started"}
                          for p in report.lag], title=f"ingest lag (records): total {report.total_lag}"))
    else:
        out.append(f"ingest lag: unknown ({report.lag_error or 'no partitions'})")
    if report.gold_silver_versions_behind is not None:
        out.append(f"gold: {report.gold_silver_versions_behind} silver commit(s) not read yet")
    if report.last_batch:
        b = report.last_batch
        out.append(f"last ingest batch: {b['batch_id']} at {_when(b['finished_at'])}, {b['rows_read']:,} read, "
                   f"silver +{b['silver_inserted'] or 0:,}, quarantined {b['quarantined'] or 0:,}, "
                   f"{b['duration_ms'] / 1000:.2f}s")
    out.append(table([{"table": t.name, "version": t.version, "last commit": _when(t.last_commit),
                       "operation": t.last_operation or ("not created" if not t.exists else ""),
                       "files": t.files, "small files": t.small_files, "MB": _mb(t.bytes)}
                      for t in report.tables], title="tables"))
    qres = report.last_quality
    if qres:
        verdict = "all passed" if not qres["failed"] else f"failed: {', '.join(qres['failed'])}"
        out.append(f"last quality result: suite {qres['suite']}, batch {qres['batch_id']} ({qres['app_id']}), "
                   f"{qres['rules']} rules, {verdict}")
    else:
        out.append("last quality result: none recorded")
    return out
