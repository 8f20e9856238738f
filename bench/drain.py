"""Section 1, drain throughput: one preloaded topic drained by each pipeline, each in a fresh process.

Pipelines (rows of the table):

1. ``raw_consumer``: confluent-kafka consumer + ``json.loads`` (no JVM): the client's ceiling.
2. ``spark_ceiling``: the machine's Spark ceiling without Kafka: the topic is first read once
   with a batch Kafka read into memory (persist + count, untimed); then the same parse,
   in-batch dedupe and shaping as our job, written as Parquet (bronze, quarantine, silver),
   is timed over those in-memory records, in chunks of ``max_offsets`` offsets (like micro-batches).
3. ``delta_sink``: Spark's built-in Delta streaming sink appending the raw records.
4. ``single_append``: parse with ``from_json`` and blind-append each micro-batch to one table.
5. ``at_least_once``: the fair baseline: the same source options, parse, in-batch dedupe and
   shaping as our job, then plain ``mode("append")`` Delta writes to bronze, quarantine and
   silver (tables created with the same schemas and properties); no keys, no MERGE, no
   transaction identity, no audit table.
6. ``exactly_once``: our job (``IngestJob`` + ``start_ingest``, availableNow).
7. ``exactly_once_before``: the same, importing an older checkout's ``pipelines`` (``--before-src``).

The worker-side functions take ``(spark, cfg, topic, work, max_offsets)`` and return at least
``records``, ``seconds`` and ``cpu_s`` (Python + JVM process CPU over the timed part).
"""

from __future__ import annotations

import datetime as dt
import functools
import math
import operator
import shutil
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bench.common import BenchError, Cpu, consume_all, jvm_pid, log, rotate, run_isolated, spread

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession
    from pyspark.sql.streaming import StreamingQuery

    from bench.common import Settings
    from pipelines.config import Config
    from pipelines.domain.schema import EventSpec

PIPELINES = ("raw_consumer", "spark_ceiling", "delta_sink", "single_append", "at_least_once", "exactly_once")
BEFORE = "exactly_once_before"
OURS = "exactly_once"
#: Ratios reported: ours versus each of these (the first is the fair one, with a target).
RATIO_BASES = ("at_least_once", "single_append", "delta_sink", "spark_ceiling", BEFORE)
TARGET_VS_AT_LEAST_ONCE = 0.75
SINGLE_APPEND_SCHEMA = ("message_id string, event_type string, order_id string, customer_id string, "
                        "amount decimal(18,2), currency string, event_time timestamp")


# ---- worker side -----------------------------------------------------------------------------------
def raw_consumer(bootstrap: str, topic: str) -> dict[str, Any]:
    """confluent-kafka consumer + ``json.loads`` of every value, to the topic's end (no JVM)."""
    r = consume_all(bootstrap, topic, parse=True)
    if not r["complete"]:
        raise RuntimeError(f"the raw consumer did not reach the end of {topic} within its deadline "
                           f"({r['records']} records in {r['seconds']:.0f}s)")
    return r


def ours_cfg(cfg: Config, topic: str, work: Path, max_offsets: int, name: str = "ours") -> Config:
    """Our job's config for a benchmark run: its own data folder (tables, checkpoint) and topic."""
    return cfg.with_overrides(app={"data_dir": str(work / name)},
                              kafka={"topics": [topic], "max_offsets_per_trigger": max_offsets},
                              ingest={"progress": False, "trigger_interval": "1 second"})


def _raw_stream(spark: SparkSession, cfg: Config, topic: str, max_offsets: int) -> DataFrame:
    """The plain Kafka stream of the simple baselines (as the previous benchmark read it)."""
    return (spark.readStream.format("kafka").option("kafka.bootstrap.servers", cfg.kafka.bootstrap_servers)
            .option("subscribe", topic).option("startingOffsets", "earliest")
            .option("maxOffsetsPerTrigger", str(max_offsets)).load())


def _our_source(spark: SparkSession, c: Config, *, streaming: bool) -> DataFrame:
    """The Kafka source with our job's options (``source_options``: headers, isolation level, ...)."""
    from pipelines.io.kafka_source import source_options

    reader = spark.readStream.format("kafka") if streaming else spark.read.format("kafka")
    for key, value in source_options(c, streaming=streaming).items():
        reader = reader.option(key, value)
    return reader.load()


def _input_rows(q: StreamingQuery) -> int:
    """Rows the query read, from its progress updates."""
    return sum(int(p["numInputRows"] or 0) for p in q.recentProgress)


def _finish(q: StreamingQuery) -> None:
    q.awaitTermination()
    if q.exception() is not None:
        raise RuntimeError(f"query failed: {q.exception()}")


def parse_and_mark(raw: DataFrame, spec: EventSpec) -> DataFrame:
    """Our parse of a batch, with in-batch copies marked: ``parse_records`` then ``annotate_duplicates``.

    This is the DataFrame ``IngestJob.process_batch`` persists and builds quarantine and silver
    from (the duplicate ranking keeps valid and invalid rows apart; here no invalid record shares a
    ``message_id`` with a valid one either way).
    """
    from pipelines.domain import transforms as X

    return raw.transform(X.parse_records(spec)).transform(X.annotate_duplicates)


def shaped_outputs(raw: DataFrame, parsed: DataFrame, spec: EventSpec, batch_id: int,
                   app_id: str) -> dict[str, DataFrame]:
    """Bronze, quarantine and silver rows of one batch, built as ``IngestJob.process_batch`` builds them.

    ``parsed`` is :func:`parse_and_mark` of ``raw``. Silver keeps the first copy of each
    ``message_id`` in the batch (``valid_rows`` then ``first_copies``). The topic id is left
    NULL (our job looks it up from the broker; a literal either way).
    """
    from pyspark.sql import functions as F

    from pipelines.domain import transforms as X

    now = dt.datetime.now(dt.UTC).replace(tzinfo=None)
    lineage = X.with_lineage(batch_id, app_id, F.lit(now).cast("timestamp"), {})
    return {
        "bronze": raw.transform(lineage).transform(X.to_bronze),
        "quarantine": parsed.transform(X.invalid_rows).transform(lineage).transform(X.to_quarantine),
        "silver": (parsed.transform(X.valid_rows).transform(X.first_copies).transform(lineage)
                   .transform(X.to_silver(spec))),
    }


def spark_ceiling(spark: SparkSession, cfg: Config, topic: str, work: Path, max_offsets: int) -> dict[str, Any]:
    """Parse + dedupe + Parquet writes over records already in memory, in chunks of ``max_offsets`` offsets."""
    from pyspark.sql import functions as F

    from pipelines.domain.schema import EventSpec

    c = ours_cfg(cfg, topic, work, max_offsets)
    spec = EventSpec.from_config(c.events)
    everything = _our_source(spark, c, streaming=False).persist()
    total = everything.count()  # untimed: the read from Kafka into memory
    bounds = {int(r["partition"]): (int(r["lo"]), int(r["hi"])) for r in everything.groupBy("partition").agg(
        F.min("offset").alias("lo"), F.max("offset").alias("hi")).collect()}
    per = max(1, math.ceil(max_offsets / max(1, len(bounds))))
    chunks = max((math.ceil((hi - lo + 1) / per) for lo, hi in bounds.values()), default=0)
    out = {name: str(work / "parquet" / name) for name in ("bronze", "quarantine", "silver")}
    cpu = Cpu(jvm_pid(spark))
    t0 = time.monotonic()
    for k in range(chunks):
        conds = [(F.col("partition") == p) & (F.col("offset") >= lo + k * per) & (F.col("offset") < lo + (k + 1) * per)
                 for p, (lo, _hi) in sorted(bounds.items())]
        raw = everything.filter(functools.reduce(operator.or_, conds))
        parsed = parse_and_mark(raw, spec).persist()
        try:
            for name, df in shaped_outputs(raw, parsed, spec, k, "bench-spark-ceiling").items():
                df.write.mode("append").parquet(out[name])
        finally:
            parsed.unpersist()
    secs = time.monotonic() - t0
    cpu_s = cpu.used()
    everything.unpersist()
    rows = {name: spark.read.parquet(path).count() if Path(path).exists() else 0 for name, path in out.items()}
    return {"records": rows["bronze"], "records_in_memory": total, "seconds": secs, "cpu_s": cpu_s,
            "tables": rows, "processing": f"{chunks} chunks of up to {per * len(bounds)} offsets "
                                          f"({per} per partition), like micro-batches of maxOffsetsPerTrigger"}


def delta_sink(spark: SparkSession, cfg: Config, topic: str, work: Path, max_offsets: int) -> dict[str, Any]:
    """Spark's built-in Delta streaming sink (append; exactly-once for the raw records via its own log)."""
    path, cp = str(work / "sink_table"), str(work / "sink_cp")
    cpu = Cpu(jvm_pid(spark))
    t0 = time.monotonic()
    q = (_raw_stream(spark, cfg, topic, max_offsets).writeStream.format("delta").option("checkpointLocation", cp)
         .trigger(availableNow=True).start(path))
    _finish(q)
    secs, cpu_s = time.monotonic() - t0, cpu.used()
    return {"records": _input_rows(q), "seconds": secs, "cpu_s": cpu_s,
            "tables": {"sink": spark.read.format("delta").load(path).count()}}


def single_append(spark: SparkSession, cfg: Config, topic: str, work: Path, max_offsets: int) -> dict[str, Any]:
    """Parse with ``from_json`` and blind-append each micro-batch to one table (a replay would duplicate)."""
    from pyspark.sql import functions as F

    path, cp = str(work / "append_table"), str(work / "append_cp")

    def batch(df: DataFrame, batch_id: int) -> None:
        (df.select(F.from_json(F.col("value").cast("string"), SINGLE_APPEND_SCHEMA).alias("e"), "topic",
                   "partition", "offset", "timestamp").select("e.*", "topic", "partition", "offset", "timestamp")
         .write.format("delta").mode("append").save(path))

    cpu = Cpu(jvm_pid(spark))
    t0 = time.monotonic()
    q = (_raw_stream(spark, cfg, topic, max_offsets).writeStream.option("checkpointLocation", cp)
         .foreachBatch(batch).trigger(availableNow=True).start())
    _finish(q)
    secs, cpu_s = time.monotonic() - t0, cpu.used()
    return {"records": _input_rows(q), "seconds": secs, "cpu_s": cpu_s,
            "tables": {"append": spark.read.format("delta").load(path).count()}}


def at_least_once(spark: SparkSession, cfg: Config, topic: str, work: Path, max_offsets: int) -> dict[str, Any]:
    """The fair baseline: our parse, dedupe and shaping, then plain Delta appends to three tables per batch."""
    from pipelines.domain.schema import EventSpec
    from pipelines.io.tables import TablePaths, ensure_tables

    c = ours_cfg(cfg, topic, work, max_offsets)
    spec = EventSpec.from_config(c.events)
    tables = TablePaths.from_config(c)
    app_id = "bench-at-least-once"

    def batch(df: DataFrame, batch_id: int) -> None:
        raw = df.persist()
        parsed = parse_and_mark(raw, spec).persist()
        try:
            for name, out in shaped_outputs(raw, parsed, spec, batch_id, app_id).items():
                out.write.format("delta").mode("append").save(tables.of(name))
        finally:
            parsed.unpersist()
            raw.unpersist()

    cpu = Cpu(jvm_pid(spark))
    t0 = time.monotonic()
    ensure_tables(spark, tables, spec)  # same schemas and table properties as ours (audit stays empty)
    q = (_our_source(spark, c, streaming=True).writeStream.option("checkpointLocation", c.checkpoint_path)
         .foreachBatch(batch).trigger(availableNow=True).start())
    _finish(q)
    secs, cpu_s = time.monotonic() - t0, cpu.used()
    rows = {name: spark.read.format("delta").load(tables.of(name)).count()
            for name in ("bronze", "quarantine", "silver")}
    return {"records": _input_rows(q), "seconds": secs, "cpu_s": cpu_s, "tables": rows}


def exactly_once(spark: SparkSession, cfg: Config, topic: str, work: Path, max_offsets: int) -> dict[str, Any]:
    """Our job, availableNow: ``IngestJob.from_config`` + ``start_ingest``; per-batch timings and progress."""
    from pipelines.jobs.ingest import IngestJob, start_ingest

    c = ours_cfg(cfg, topic, work, max_offsets)
    job = IngestJob.from_config(c, out=None)
    cpu = Cpu(jvm_pid(spark))
    t0 = time.monotonic()
    q = start_ingest(spark, c, available_now=True, job=job)
    _finish(q)
    flush = getattr(job, "flush", None)  # newer code writes the last audit row in the background
    if flush is not None:
        flush()
    secs, cpu_s = time.monotonic() - t0, cpu.used()
    batches = [{"rows": int(r.rows_read), "ms": int(r.duration_ms), "timings_ms": dict(r.timings_ms)}
               for r in job.results]
    progress = [p for p in q.recentProgress if p["numInputRows"]]
    matched = attach_progress(batches, [dict(p["durationMs"]) for p in progress],
                              [int(p["numInputRows"]) for p in progress])
    rows = {name: spark.read.format("delta").load(c.table_path(name)).count()
            for name in ("bronze", "quarantine", "silver")}
    return {"records": sum(b["rows"] for b in batches), "seconds": secs, "cpu_s": cpu_s, "batches": batches,
            "progress_matched": matched, "tables": rows}


def exactly_once_no_quality(spark: SparkSession, cfg: Config, topic: str, work: Path,
                            max_offsets: int) -> dict[str, Any]:
    """:func:`exactly_once` without the silver expectation suite (an empty expectations folder)."""
    empty = work / "no-expectations"
    empty.mkdir(parents=True, exist_ok=True)
    return exactly_once(spark, cfg.with_overrides(quality={"expectations_dir": str(empty)}), topic, work, max_offsets)


def attach_progress(batches: list[dict[str, Any]], durations: list[dict[str, int]], rows: list[int]) -> bool:
    """Give each of our batches the ``durationMs`` of its query progress, matched by order of non-empty batches.

    If the two lists differ in length (progress updates are capped), they are aligned at the
    end. Returns True when both lists had the same length and the row counts agree.
    """
    k = min(len(batches), len(durations))
    ok = len(batches) == len(durations)
    for b, d, n in zip(batches[len(batches) - k:], durations[len(durations) - k:], rows[len(rows) - k:],
                       strict=True):
        b["durationMs"] = d
        ok = ok and b["rows"] == n
    return ok


# ---- orchestrator side -----------------------------------------------------------------------------------
def run_one(st: Settings, name: str, topic: str, work: Path) -> dict[str, Any]:
    """One drain measurement of pipeline ``name`` in its own worker process."""
    code = st.before if name == BEFORE else st.after
    pipeline = OURS if name == BEFORE else name
    assert code is not None
    return run_isolated(pipeline, work=work, code=code, label=f"drain {name}", timeout_s=st.timeout_s,
                        args={"bootstrap": st.bootstrap, "topic": topic, "max-offsets": st.max_offsets,
                              "records": st.records})


def run(st: Settings, topic: str, topic_bytes: int) -> dict[str, Any]:
    """Section 1: every pipeline ``st.repeats`` times, order rotated each repeat; medians and spreads."""
    unknown = set(st.pipelines) - set(PIPELINES)
    if unknown:
        raise BenchError(f"unknown drain pipeline(s) {sorted(unknown)}; choose from {', '.join(PIPELINES)}")
    chosen = [n for n in PIPELINES if not st.pipelines or n in st.pipelines or n == "exactly_once"]
    names = [*chosen, *([BEFORE] if st.before else [])]
    runs: dict[str, list[dict[str, Any]]] = {n: [] for n in names}
    orders = []
    for rep in range(st.repeats):
        order = rotate(names, rep)
        orders.append(order)
        for pos, name in enumerate(order):
            log(f"drain {rep + 1}/{st.repeats}: {name} ({st.records} records) ...")
            work = st.work / "drain" / f"r{rep}-{name}"
            r = run_one(st, name, topic, work)
            r.update(repeat=rep, position=pos)
            runs[name].append(r)
            log(f"  {r['records']} records in {r['seconds']:.1f}s = {r['records'] / r['seconds']:.0f}/s, "
                f"CPU {r['cpu_s']:.1f}s")
            shutil.rmtree(work, ignore_errors=True)
    pipelines = {name: summarize(rs, st.records, topic_bytes) for name, rs in runs.items()}
    ceiling = runs["spark_ceiling"][0].get("processing") if runs.get("spark_ceiling") else None
    return {"topic": topic, "orders": orders, "pipelines": pipelines, "ratios": ratios(pipelines),
            "ceiling_processing": ceiling, "runs": runs}


def summarize(runs: list[dict[str, Any]], n_records: int, topic_bytes: int) -> dict[str, Any]:
    """Median records/s with its spread, CPU-s per million records and MB/s over the repeats of one pipeline."""
    rps = [r["records"] / r["seconds"] for r in runs if r["seconds"] > 0]
    s = spread(rps)
    cpu_per_m = [r["cpu_s"] / max(r["records"], 1) * 1e6 for r in runs]
    mbps = [topic_bytes * (r["records"] / max(n_records, 1)) / r["seconds"] / 1e6 for r in runs if r["seconds"] > 0]
    out: dict[str, Any] = {
        "runs": len(runs), "records": min(r["records"] for r in runs),
        "records_per_s": s["median"], "records_per_s_min": s["min"], "records_per_s_max": s["max"],
        "seconds": spread([r["seconds"] for r in runs])["median"],
        "cpu_s": spread([r["cpu_s"] for r in runs])["median"],
        "cpu_s_per_m": spread(cpu_per_m)["median"], "mb_per_s": spread(mbps)["median"],
    }
    if runs and "tables" in runs[-1]:
        out["tables"] = runs[-1]["tables"]
    code = runs[-1].get("code") if runs else None
    if code:
        out["commit"] = code.get("commit")
    return out


def ratios(pipelines: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Our median records/s over each baseline's (``exactly_once`` vs ``at_least_once`` has a target)."""
    ours = pipelines.get(OURS, {}).get("records_per_s", 0.0)
    out: dict[str, Any] = {}
    for base in RATIO_BASES:
        b = pipelines.get(base, {}).get("records_per_s", 0.0)
        if b > 0 and ours > 0:
            out[base] = ours / b
    if "at_least_once" in out:
        out["target"] = {"vs": "at_least_once", "min": TARGET_VS_AT_LEAST_ONCE,
                         "met": out["at_least_once"] >= TARGET_VS_AT_LEAST_ONCE}
    return out
