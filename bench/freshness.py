"""Section 3, freshness: how long a record takes from Kafka to being visible in silver, under steady load.

Each load runs in its own worker: the streaming job (``run_ingest``, processing-time trigger
``--trigger``) starts in a thread; once its query is running, records are produced at a fixed
rate (a fraction of our median drain rate) for ``--fresh-seconds``; once the job has read them
all, it is stopped.

Latency per row = the timestamp of the silver Delta commit that inserted it (the moment a
reader can see it) minus its Kafka timestamp. Each silver commit of the job carries the batch
identity in its ``userMetadata`` (``{"pipelines.batch": {"app_id": ..., "batch_id": ...}}``), and
every silver row its ``app_id`` and ``batch_id``: the join maps each row to its commit.
"""

from __future__ import annotations

import datetime as dt
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bench.common import log, run_isolated
from bench.drain import ours_cfg

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

    from bench.common import Settings
    from pipelines.config import Config
    from pipelines.jobs.ingest import IngestJob
    from pipelines.tools.producer import ProduceStats

FULL_LOADS = (0.25, 0.5, 0.75)
QUICK_LOADS = (0.5,)
FRESH_MAX_OFFSETS = 100_000
START_TIMEOUT_S = 300.0


# ---- worker side -------------------------------------------------------------------------------------
def start_thread(name: str, target: Callable[[], Any]) -> tuple[threading.Thread, list[BaseException]]:
    """Run ``target`` in a daemon thread; what it raises lands in the returned list."""
    errors: list[BaseException] = []

    def run() -> None:
        try:
            target()
        except BaseException as e:  # reported by the main thread
            errors.append(e)

    t = threading.Thread(target=run, name=name, daemon=True)
    t.start()
    return t, errors


def wait_running(spark: SparkSession, name: str, runner: threading.Thread, errors: list[BaseException], *,
                 idle: bool = True) -> None:
    """Wait until the query ``name`` is active (and, if ``idle``, waiting for data: its sources and
    tables are ready)."""
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if errors or not runner.is_alive():
            raise RuntimeError(f"{name} stopped before its query ran: {errors[0] if errors else '?'}")
        for q in spark.streams.active:
            if q.name == name and (not idle or str(q.status.get("message", "")).startswith("Waiting")):
                return
        time.sleep(0.2)
    raise TimeoutError(f"the query {name} was not running after {START_TIMEOUT_S:.0f}s")


@dataclass
class Load:
    """What ``produce_load`` sent: warm-up records, when the measured window began, its stats."""

    warm: int
    since: dt.datetime
    stats: ProduceStats
    deadline: float
    #: Distinct valid message IDs among the warm-up records.
    warm_unique: int = 0


def produce_load(c: Config, topic: str, job: IngestJob, runner: threading.Thread, errors: list[BaseException], *,
                 rate: float, seconds: float, warmup_s: float, duplicate_fraction: float, prefix: str,
                 min_wait_s: float, on_measure: Callable[[], None] | None = None) -> Load:
    """Produce ``rate`` records/s to ``topic`` (an unmeasured warm-up first: a fresh JVM compiles
    for its first minute, then ``seconds`` measured) and wait until the ingest ``job`` has read them
    all (or its thread died, or ``max(min_wait_s, 2 * seconds)`` passed)."""
    from pipelines.tools.producer import produce

    time.sleep(1.0)
    warm = warm_unique = 0
    if warmup_s > 0:
        ws = produce(c.kafka.bootstrap_servers, topic, int(rate * warmup_s), rate=rate, partitions=3, seed=8,
                     duplicate_fraction=duplicate_fraction, malformed_fraction=0.0, id_prefix=f"warm-{topic}",
                     progress=False)
        warm, warm_unique = ws.sent, ws.unique_valid
    since = dt.datetime.now(dt.UTC).replace(tzinfo=None)
    if on_measure:
        on_measure()
    stats = produce(c.kafka.bootstrap_servers, topic, int(rate * seconds), rate=rate, partitions=3, seed=7,
                    duplicate_fraction=duplicate_fraction, malformed_fraction=0.0, id_prefix=f"{prefix}-{topic}",
                    progress=False)
    deadline = time.monotonic() + max(min_wait_s, 2 * seconds)
    while (sum(r.rows_read for r in job.results) < stats.sent + warm and time.monotonic() < deadline
           and runner.is_alive() and not errors):
        time.sleep(0.5)
    return Load(warm, since, stats, deadline, warm_unique)


def commit_times(spark: SparkSession, table: str) -> DataFrame:
    """``(app_id, batch_id, visible_at)``: the timestamp of each batch's commit to the Delta table ``table``."""
    from delta.tables import DeltaTable
    from pyspark.sql import functions as F
    from pyspark.sql import types as T

    from pipelines.domain import schema as S

    meta = T.StructType([T.StructField("pipelines.batch", T.StructType([
        T.StructField("app_id", T.StringType()), T.StructField("batch_id", T.LongType())]))])
    batch = F.from_json("userMetadata", meta).getField("pipelines.batch")
    return (DeltaTable.forPath(spark, table).history().filter(F.col("userMetadata").isNotNull())
            .select(batch.getField("app_id").alias(S.APP_ID), batch.getField("batch_id").alias(S.BATCH_ID),
                    F.col("timestamp").alias("visible_at"))
            .filter(F.col(S.APP_ID).isNotNull() & F.col(S.BATCH_ID).isNotNull())
            .groupBy(S.APP_ID, S.BATCH_ID).agg(F.min("visible_at").alias("visible_at")))


def latencies(spark: SparkSession, silver: str, since: dt.datetime | None = None,
              until: dt.datetime | None = None) -> dict[str, Any]:
    """p50/p99/max of (silver commit time - Kafka timestamp) over the rows of the silver table at
    ``silver`` (only those with a Kafka timestamp in [``since``, ``until``), UTC, when given)."""
    from pyspark.sql import functions as F

    from pipelines.domain import schema as S

    rows = spark.read.format("delta").load(silver).select(S.APP_ID, S.BATCH_ID, S.KAFKA_TIMESTAMP)
    if since is not None:
        rows = rows.filter(F.col(S.KAFKA_TIMESTAMP) >= F.lit(since))
    if until is not None:
        rows = rows.filter(F.col(S.KAFKA_TIMESTAMP) < F.lit(until))
    joined = rows.join(commit_times(spark, silver), [S.APP_ID, S.BATCH_ID], "left")
    us = F.unix_micros("visible_at") - F.unix_micros(S.KAFKA_TIMESTAMP)
    q = joined.agg(F.count(F.lit(1)).alias("rows"), F.count("visible_at").alias("matched"),
                   F.percentile_approx(us, [0.5, 0.99], 10000).alias("p"), F.max(us).alias("max"),
                   F.countDistinct(S.BATCH_ID).alias("batches")).first()
    assert q is not None
    p = q["p"] or [0, 0]
    return {"rows": int(q["rows"]), "unmatched_rows": int(q["rows"]) - int(q["matched"]),
            "batches": int(q["batches"]), "p50_s": (p[0] or 0) / 1e6, "p99_s": (p[1] or 0) / 1e6,
            "max_s": (q["max"] or 0) / 1e6}


def start_stream(spark: SparkSession, c: Config) -> tuple[IngestJob, threading.Event, threading.Thread,
                                                          list[BaseException]]:
    """Start the streaming ingest job of ``c`` in a thread; return once its query waits for data."""
    from pipelines.jobs.ingest import IngestJob, run_ingest

    job = IngestJob.from_config(c, out=None)
    stop = threading.Event()
    runner, errors = start_thread("ingest", lambda: run_ingest(spark, c, available_now=False, stop_event=stop,
                                                               job=job))
    wait_running(spark, c.ingest.query_name, runner, errors)
    return job, stop, runner, errors


def measure(spark: SparkSession, cfg: Config, topic: str, work: Path, *, rate: float, seconds: float,
            trigger: str, max_offsets: int = FRESH_MAX_OFFSETS, warmup_s: float = 0.0) -> dict[str, Any]:
    """Run the streaming job, produce ``rate`` records/s for ``warmup_s`` (not measured) and then
    ``seconds``, stop; latency to silver visibility of the measured records."""
    c = ours_cfg(cfg, topic, work, max_offsets, name="fresh").with_overrides(ingest={"trigger_interval": trigger})
    job, stop, runner, errors = start_stream(spark, c)
    load = produce_load(c, topic, job, runner, errors, rate=rate, seconds=seconds, warmup_s=warmup_s,
                        duplicate_fraction=0.0, prefix="fresh", min_wait_s=120.0)
    warm, since, stats = load.warm, load.since, load.stats
    read = sum(r.rows_read for r in job.results)
    stop.set()
    runner.join(timeout=300)
    if runner.is_alive():
        raise TimeoutError("the ingest job did not stop within 300 s of the stop request")
    if errors:
        raise errors[0]
    out = latencies(spark, c.table_path("silver"), since=since)
    out.update(rate=rate, seconds=seconds, trigger=trigger, produced=stats.sent, read=read - warm,
               caught_up=read >= stats.sent + warm, produce_s=stats.seconds, warmup_s=warmup_s)
    return out


# ---- orchestrator side -----------------------------------------------------------------------------------
def run(st: Settings, max_rate: float) -> list[dict[str, Any]]:
    """Section 3: one worker per load (a fraction of ``max_rate``, our median drain rate)."""
    from pipelines.local.kafka import ensure_topic

    assert st.bootstrap is not None
    out = []
    for load in st.fresh_loads:
        tag = f"{int(round(load * 100))}"
        topic = f"fresh-{tag}"
        ensure_topic(st.bootstrap, topic, 3)
        rate = max_rate * load
        log(f"freshness at {load:.0%} of {max_rate:.0f}/s = {rate:.0f}/s for {st.fresh_warmup_s:.0f}s warm-up "
            f"+ {st.fresh_seconds:.0f}s, "
            f"trigger {st.trigger!r} ...")
        r = run_isolated("freshness", work=st.work / "freshness" / tag, code=st.after, label=f"freshness {tag}%",
                         timeout_s=st.fresh_seconds + st.timeout_s,
                         args={"bootstrap": st.bootstrap, "topic": topic, "rate": rate,
                               "seconds": st.fresh_seconds, "trigger": st.trigger,
                               "warmup-seconds": st.fresh_warmup_s,
                               "max-offsets": FRESH_MAX_OFFSETS})
        r["load"] = f"{load:.0%}"
        log(f"  {r['rows']} rows: p50 {r['p50_s']:.2f}s, p99 {r['p99_s']:.2f}s")
        out.append(r)
    return out
