"""Section ``backfill``: the stream's freshness alone, then beside a concurrent backfill.

One worker (one JVM, like a notebook that runs both; a spark-submit backfill would be a second
JVM on the same cores) first produces a history of records to the topic, then starts the
streaming ingest job from the latest offsets (the history is not its to read). Records are
produced at a fixed rate (a fraction of our median drain rate) for an unmeasured warm-up and
two measured windows of ``--fresh-seconds`` each:

1. **alone**: only the stream writes;
2. **beside a backfill**: a backfill of the whole history (``run_backfill`` in chunks of
   ``BACKFILL_CHUNK_RECORDS``, in its own thread, its rate held to ``BACKFILL_LOAD`` x our drain
   rate by ``backfill.max_records_per_second``) writes into the same bronze, quarantine, silver
   and audit tables at the same time; the two sides' conflicting commits are retried.

Freshness per record as in section 3: the silver commit that made it visible minus its Kafka
timestamp, p50/p99 per window. The target (issue #13) is the stream's latency within 2x of
its latency alone while a backfill runs.
"""

from __future__ import annotations

import datetime as dt
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bench.common import log, run_isolated
from bench.drain import ours_cfg
from bench.freshness import FRESH_MAX_OFFSETS, latencies, produce_load, start_stream, start_thread

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

    from bench.common import Settings
    from pipelines.config import Config

LOAD = 0.25
#: The backfill's rate limit (``backfill.max_records_per_second``), as a fraction of our drain rate:
#: stream and backfill together then ask for half of what the machine drains.
BACKFILL_LOAD = 0.25
#: The backfill's chunks: smaller than the default 100,000, so the stream's batches meet a steady
#: share of the backfill's work instead of a whole 100,000-record chunk at a time (the p99).
BACKFILL_CHUNK_RECORDS = 20_000
#: Records in the topic before the stream starts: what the backfill reads (quick: a few thousand).
HISTORY = 400_000
QUICK_HISTORY = 4_000


# ---- worker side -------------------------------------------------------------------------------------
def measure(spark: SparkSession, cfg: Config, topic: str, work: Path, *, rate: float, seconds: float,
            trigger: str, history: int, warmup_s: float = 0.0,
            backfill_rate: float | None = None) -> dict[str, Any]:
    """See the module docstring."""
    from pipelines.io import writers
    from pipelines.jobs.backfill import run_backfill
    from pipelines.tools.producer import produce

    c = ours_cfg(cfg, topic, work, FRESH_MAX_OFFSETS, name="bf").with_overrides(
        ingest={"trigger_interval": trigger}, kafka={"starting_offsets": "latest"},
        backfill={"progress": False, "max_records_per_second": backfill_rate,
                  "chunk_records": BACKFILL_CHUNK_RECORDS})
    hist = produce(c.kafka.bootstrap_servers, topic, history, rate=0.0, partitions=3, seed=9,
                   duplicate_fraction=0.05, malformed_fraction=0.01, id_prefix=f"hist-{topic}", progress=False)
    history_end = {topic: {p: (0, n) for p, n in _ends(c, topic).items()}}
    job, stop, runner, errors = start_stream(spark, c)
    alone = produce_load(c, topic, job, runner, errors, rate=rate, seconds=seconds, warmup_s=warmup_s,
                         duplicate_fraction=0.05, prefix="alone", min_wait_s=120.0)

    backfill: dict[str, Any] = {}
    retries_before = writers.conflict_retries_total

    def run() -> None:
        t0 = time.monotonic()
        s = run_backfill(spark.newSession(), c, offsets=history_end, out=None)
        backfill.update(records=s.rows_read, silver_inserted=s.silver_inserted, chunks=s.chunks,
                        seconds=time.monotonic() - t0, paused_s=s.paused_s,
                        ended=dt.datetime.now(dt.UTC).replace(tzinfo=None))

    bf, bf_errors = start_thread("backfill", run)
    time.sleep(2.0)  # the backfill's first chunk is under way
    beside = produce_load(c, topic, job, runner, errors, rate=rate, seconds=seconds, warmup_s=0.0,
                          duplicate_fraction=0.05, prefix="beside", min_wait_s=180.0)
    beside_end = dt.datetime.now(dt.UTC).replace(tzinfo=None)
    bf.join(timeout=1800)
    stop.set()
    runner.join(timeout=300)
    for errs in (errors, bf_errors):
        if errs:
            raise errs[0]
    silver = c.table_path("silver")
    out: dict[str, Any] = {
        "rate": rate, "seconds": seconds, "trigger": trigger, "history": hist.sent,
        "chunk_records": c.backfill.chunk_records, "backfill_rate": backfill_rate,
        "alone": latencies(spark, silver, since=alone.since, until=beside.since),
        "beside": latencies(spark, silver, since=beside.since),
        "backfill": backfill,
        # The backfill was running for the whole measured window (else the window measured less).
        "overlapped": bool(backfill) and backfill["ended"] >= beside_end,
        "conflict_retries": writers.conflict_retries_total - retries_before,
        "silver_rows": spark.read.format("delta").load(silver).count(),
        "expected_silver_rows": (hist.unique_valid + alone.warm_unique + alone.stats.unique_valid
                                 + beside.stats.unique_valid),
    }
    for key in ("p50_s", "p99_s"):
        base = out["alone"][key] or 1e-9
        out[f"ratio_{key[:3]}"] = out["beside"][key] / base
    return out


def _ends(c: Config, topic: str) -> dict[int, int]:
    """Per partition, the end offset now (the history, before the stream starts)."""
    from confluent_kafka import Consumer, TopicPartition

    consumer = Consumer({"bootstrap.servers": c.kafka.bootstrap_servers, "group.id": "bench-backfill",
                         "enable.auto.commit": False})
    try:
        return {p: int(consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=30)[1]) for p in range(3)}
    finally:
        consumer.close()


# ---- orchestrator side -----------------------------------------------------------------------------------
def run(st: Settings, max_rate: float) -> dict[str, Any]:
    """The section: one worker at ``LOAD`` x ``max_rate`` (our median drain rate)."""
    from pipelines.local.kafka import ensure_topic

    assert st.bootstrap is not None
    topic = "backfill-25"
    ensure_topic(st.bootstrap, topic, 3)
    rate = max_rate * LOAD
    backfill_rate = max_rate * BACKFILL_LOAD
    history = QUICK_HISTORY if st.quick else HISTORY
    log(f"backfill: the stream at {LOAD:.0%} of {max_rate:.0f}/s = {rate:.0f}/s, {st.fresh_seconds:.0f}s alone, then "
        f"{st.fresh_seconds:.0f}s beside a backfill of {history:,} records (at most {backfill_rate:.0f}/s) ...")
    r = run_isolated("backfill", work=st.work / "backfill", code=st.after, label="freshness beside a backfill",
                     timeout_s=2 * st.fresh_seconds + st.timeout_s,
                     args={"bootstrap": st.bootstrap, "topic": topic, "rate": rate, "seconds": st.fresh_seconds,
                           "trigger": st.trigger, "warmup-seconds": st.fresh_warmup_s, "records": history,
                           "backfill-rate": backfill_rate})
    r["load"] = f"{LOAD:.0%}"
    log(f"  alone p50 {r['alone']['p50_s']:.2f}s p99 {r['alone']['p99_s']:.2f}s; beside a backfill p50 "
        f"{r['beside']['p50_s']:.2f}s p99 {r['beside']['p99_s']:.2f}s ({r['ratio_p50']:.1f}x, {r['ratio_p99']:.1f}x)")
    return r


def lines(res: dict[str, Any]) -> list[str]:
    """The section in ``results.md``."""
    b = res["backfill"]
    bf = b.get("backfill") or {}
    target = "met" if b["ratio_p50"] <= 2 and b["ratio_p99"] <= 2 else "missed"
    out = ["## 7. The stream's freshness beside a concurrent backfill (one JVM)", "",
           f"The stream at {b['rate']:,.0f} records/s ({b['load']} of our drain rate), trigger `{b['trigger']}`: "
           f"{b['seconds']:.0f} s alone, then {b['seconds']:.0f} s while a backfill of {b['history']:,} older records "
           f"(chunks of {b['chunk_records']:,}) writes into the same tables"
           + (f", its rate held to {b['backfill_rate']:,.0f} records/s by `backfill.max_records_per_second`"
              if b.get("backfill_rate") else ", as fast as it goes") + ". The backfill read "
           f"{bf.get('records', 0):,} records in {bf.get('seconds', 0):.0f} s ({bf.get('chunks', 0)} chunks, "
           f"{bf.get('paused_s', 0):.0f} s of it paused between chunks); it "
           f"was running for the whole second window: {b['overlapped']}. Conflicting commits retried (both "
           f"sides): {b['conflict_retries']}. "
           f"Silver rows at the end: {b['silver_rows']:,} (expected {b['expected_silver_rows']:,}).", "",
           "| window | rows | p50 | p99 | max |", "|---|---:|---:|---:|---:|"]
    for key, name in (("alone", "stream alone"), ("beside", "beside a backfill")):
        w = b[key]
        out.append(f"| {name} | {w['rows']:,} | {w['p50_s']:.2f} s | {w['p99_s']:.2f} s | {w['max_s']:.2f} s |")
    out += ["", f"Ratio beside / alone: p50 {b['ratio_p50']:.2f}x, p99 {b['ratio_p99']:.2f}x (target <= 2x: "
            f"{target})."]
    return out
