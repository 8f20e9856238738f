"""Section 4, MERGE scaling: a 100k-row batch (5 % duplicates) merged into silver tables of growing size.

Variants: ``table`` (the key MERGE over every row), ``event_date`` (the pipeline's
``silver_merge_scope: event_date``) and ``event_date_spread`` (the same scope, duplicates drawn
from 10 days spread over the year). Each table size runs in its own worker process. Slow at the
default sizes (up to 50M rows): not in the default sections; its results live in
``bench/results/merge-scope`` (``make bench-merge``).
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bench.common import log, run_isolated

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

    from bench.common import Settings

VARIANTS = ("table", "event_date", "event_date_spread")
MERGE_TIMEOUT_S = 2 * 3600.0  # per table size (50M rows: load + three MERGEs)


# ---- worker side -------------------------------------------------------------------------------------
def merge_scaling(spark: SparkSession, sizes: list[int], batch_rows: int, work: Path,
                  slack_days: int = 1) -> list[dict[str, Any]]:
    """A batch of ``batch_rows`` (5 % duplicates) merged into silver-like tables.

    The target's event dates spread over a year, written in date order (as a stream writes
    them), so file statistics on ``event_date`` can prune. Variants: ``table`` (the key MERGE
    over every row), ``event_date`` (the pipeline's ``silver_merge_scope: event_date``, duplicates
    of the newest rows) and ``event_date_spread`` (the same scope, duplicates drawn from 10 days
    spread over the year, one of them among the oldest: stragglers). For the spread batch the report
    also counts the files a single lower bound (earliest date minus the slack) would have read.
    """
    from delta.tables import DeltaTable
    from pyspark.sql import functions as F

    from pipelines.io.writers import merge_insert_if_absent
    from pipelines.jobs.ingest import event_date_scope

    days = 365
    today = F.current_date()

    def table_rows(lo: int, hi: int, size: int) -> DataFrame:
        return spark.range(lo, hi).select(
            F.concat(F.lit("m-"), F.col("id").cast("string")).alias("message_id"),
            F.concat(F.lit("o-"), (F.col("id") % 1000003).cast("string")).alias("order_id"),
            (F.col("id") % 100000 / 100).cast("decimal(18,2)").alias("amount"),
            F.lit("EUR").alias("currency"),
            F.date_sub(today, (F.lit(days - 1) - F.floor(F.col("id") * days / F.lit(size))).cast("int"))
            .alias("event_date"),
        )

    def spread_ids(size: int, dups: int) -> DataFrame:
        """``dups`` existing ids from 10 days spread over the year, the first among the oldest.

        Positions are off the file boundaries, which fall at multiples of 1/20 of the ids here.
        """
        per = dups // 10
        parts = [table_rows(start, start + per, size)
                 for start in (int(size * (k + 0.3) / 10) for k in range(10))]
        out = parts[0]
        for part in parts[1:]:
            out = out.unionByName(part)
        return out

    out: list[dict[str, Any]] = []
    for size in sizes:
        path = str(work / f"merge_{size}")
        shutil.rmtree(path, ignore_errors=True)
        t0 = time.monotonic()
        table_rows(0, size, size).write.format("delta").option("maxRecordsPerFile", 500_000).save(path)
        load_s = time.monotonic() - t0
        dups = int(batch_rows * 0.05)
        for i, variant in enumerate(VARIANTS):
            new_lo = size * 10 + i * batch_rows
            old = spread_ids(size, dups) if variant == "event_date_spread" else table_rows(size - dups, size, size)
            n_dups = old.count()
            batch = (table_rows(new_lo, new_lo + batch_rows - n_dups, size).withColumn("event_date", today)
                     .unionByName(old)).persist()
            batch.count()
            dates = [r[0] for r in batch.select("event_date").distinct().collect()]
            pred = event_date_scope(dates, slack_days) if variant != "table" else None
            t0 = time.monotonic()
            inserted = merge_insert_if_absent(batch, path, ["message_id"], app_id=f"bench-{variant}",
                                              version=1, target_predicate=pred)
            secs = time.monotonic() - t0
            batch.unpersist()
            last = DeltaTable.forPath(spark, path).history(1).first()
            assert last is not None
            m = last["operationMetrics"]
            target = spark.read.format("delta").load(path)
            in_scope = target.filter(pred.replace("t.", "")) if pred else target
            single = target.filter(F.col("event_date") >= F.date_sub(F.lit(min(dates)), slack_days))
            out.append({"table_rows": size, "variant": variant, "seconds": round(secs, 2), "inserted": inserted,
                        "expected_inserted": batch_rows - n_dups,
                        "scan_ms": int(m.get("scanTimeMs", -1)),
                        "files_total": len(target.inputFiles()),
                        "files_read_estimate": len(in_scope.inputFiles()),
                        "files_single_lower_bound": len(single.inputFiles()) if pred else None,
                        "load_s": round(load_s, 1)})
        shutil.rmtree(path, ignore_errors=True)
    return out


# ---- orchestrator side -----------------------------------------------------------------------------------
def run(st: Settings) -> list[dict[str, Any]]:
    """Section 4: one worker per table size (no Kafka)."""
    out: list[dict[str, Any]] = []
    for size in st.merge_sizes:
        log(f"MERGE scaling: {size:,} silver rows, a {st.merge_batch_rows}-row batch ...")
        work = st.work / "merge" / str(size)
        r = run_isolated("merge", work=work, code=st.after, label=f"merge {size}",
                         timeout_s=max(st.timeout_s, MERGE_TIMEOUT_S),
                         args={"merge-size": size, "merge-batch-rows": st.merge_batch_rows})
        out += r["rows"]
        shutil.rmtree(work, ignore_errors=True)
    return out
