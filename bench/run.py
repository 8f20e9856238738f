"""Benchmarks, measured side by side in one run: `make bench` (full) or `python bench/run.py --quick`.

1. drain throughput: a preloaded topic drained by a raw consumer, an at-least-once Spark
   foreachBatch append, Spark's Delta streaming sink, and our exactly-once pipeline;
2. fixed versus marginal cost per micro-batch (maxOffsetsPerTrigger sweep, fit t = a + b*rows);
3. freshness: produce at 25/50/75 % of our max rate, p50/p99 Kafka timestamp -> visible in silver;
4. MERGE scaling: a 100k-row batch (5 % duplicates) into silver tables of growing size,
   key MERGE over the whole table versus the event-date scope (`silver_merge_scope: event_date`).

Writes ``<out>/results.md``, ``<out>/results.json`` and PNG plots, with machine and commit.
``--quick`` uses tiny sizes: it checks the harness end to end, not the numbers.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from pipelines.config import Config, load_config  # noqa: E402
from pipelines.local.kafka import LocalKafka, ensure_topic, free_port  # noqa: E402


# ---- measurement helpers -----------------------------------------------------------------------
def machine() -> dict[str, Any]:
    cpu = next((ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines()
                if ln.startswith("model name")), platform.processor())
    mem_kb = int(next(ln.split()[1] for ln in Path("/proc/meminfo").read_text().splitlines()
                      if ln.startswith("MemTotal")))
    java = subprocess.run(["java", "-version"], capture_output=True, text=True).stderr.splitlines()[0]
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                            cwd=REPO).stdout.strip()
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True,
                           text=True, cwd=REPO).stdout.strip()
    return {"date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"), "cpu": cpu, "cores": os.cpu_count(),
            "memory_gib": round(mem_kb / 2**20, 1), "java": java, "python": platform.python_version(),
            "commit": commit + ("+dirty" if dirty else "")}


class Cpu:
    """CPU seconds of this Python process plus the Spark driver JVM (local mode: all executors)."""

    def __init__(self, jvm_pid: int | None) -> None:
        self.jvm_pid = jvm_pid
        self.start = self.now()

    def now(self) -> float:
        ru = resource.getrusage(resource.RUSAGE_SELF)
        total = ru.ru_utime + ru.ru_stime
        if self.jvm_pid:
            fields = Path(f"/proc/{self.jvm_pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        return total

    def used(self) -> float:
        return self.now() - self.start


def jvm_pid(spark) -> int:  # noqa: ANN001
    return int(spark.sparkContext._jvm.java.lang.ProcessHandle.current().pid())


def preload(bootstrap: str, topic: str, n: int, seed: int = 1) -> dict:
    from pipelines.tools.producer import produce

    stats = produce(bootstrap, topic, n, partitions=3, seed=seed, duplicate_fraction=0.05,
                    malformed_fraction=0.01, id_prefix=f"{topic}-{seed}", progress=False)
    return stats.as_dict()


def topic_bytes(spark, cfg: Config, topic: str) -> int:  # noqa: ANN001
    from pyspark.sql import functions as F

    df = (spark.read.format("kafka").option("kafka.bootstrap.servers", cfg.kafka.bootstrap_servers)
          .option("subscribe", topic).option("startingOffsets", "earliest").option("endingOffsets", "latest").load())
    return int(df.agg(F.sum(F.length("value"))).first()[0] or 0)


# ---- 1. drain throughput ----------------------------------------------------------------------------
def drain_raw(bootstrap: str, topic: str, n: int) -> dict:
    from confluent_kafka import Consumer, TopicPartition

    c = Consumer({"bootstrap.servers": bootstrap, "group.id": f"bench-raw-{time.time()}",
                  "enable.auto.commit": False, "auto.offset.reset": "earliest"})
    md = c.list_topics(topic, timeout=10).topics[topic]
    c.assign([TopicPartition(topic, p, 0) for p in md.partitions])
    ru0 = resource.getrusage(resource.RUSAGE_SELF)
    t0, got, size, deadline = time.monotonic(), 0, 0, time.monotonic() + 600
    while got < n and time.monotonic() < deadline:
        for m in c.consume(10_000, timeout=1.0):
            if m.error():
                continue
            got += 1
            v = m.value()
            if v:
                size += len(v)
                try:
                    json.loads(v)
                except ValueError:
                    pass
    secs = time.monotonic() - t0
    ru1 = resource.getrusage(resource.RUSAGE_SELF)
    c.close()
    cpu = (ru1.ru_utime + ru1.ru_stime) - (ru0.ru_utime + ru0.ru_stime)
    return {"records": got, "seconds": secs, "cpu_s": cpu, "bytes": size}


def _stream(spark, cfg: Config, topic: str, max_offsets: int):  # noqa: ANN001
    return (spark.readStream.format("kafka").option("kafka.bootstrap.servers", cfg.kafka.bootstrap_servers)
            .option("subscribe", topic).option("startingOffsets", "earliest")
            .option("maxOffsetsPerTrigger", str(max_offsets)).load())


def drain_spark_append(spark, cfg: Config, topic: str, work: Path, max_offsets: int) -> dict:  # noqa: ANN001
    """At-least-once baseline: parse and blind-append each micro-batch (a replay would duplicate)."""
    from pyspark.sql import functions as F

    path, cp = str(work / "append_table"), str(work / "append_cp")
    schema = ("message_id string, event_type string, order_id string, customer_id string, "
              "amount decimal(18,2), currency string, event_time timestamp")

    def batch(df, batch_id):  # noqa: ANN001
        (df.select(F.from_json(F.col("value").cast("string"), schema).alias("e"), "topic", "partition", "offset",
                   "timestamp").select("e.*", "topic", "partition", "offset", "timestamp")
         .write.format("delta").mode("append").save(path))

    cpu = Cpu(jvm_pid(spark))
    t0 = time.monotonic()
    q = _stream(spark, cfg, topic, max_offsets).writeStream.option("checkpointLocation", cp) \
        .foreachBatch(batch).trigger(availableNow=True).start()
    q.awaitTermination()
    return {"records": spark.read.format("delta").load(path).count(), "seconds": time.monotonic() - t0,
            "cpu_s": cpu.used()}


def drain_delta_sink(spark, cfg: Config, topic: str, work: Path, max_offsets: int) -> dict:  # noqa: ANN001
    """Spark's built-in Delta streaming sink (append; exactly-once for the raw records via its own log)."""
    path, cp = str(work / "sink_table"), str(work / "sink_cp")
    cpu = Cpu(jvm_pid(spark))
    t0 = time.monotonic()
    q = _stream(spark, cfg, topic, max_offsets).writeStream.format("delta").option("checkpointLocation", cp) \
        .trigger(availableNow=True).start(path)
    q.awaitTermination()
    return {"records": spark.read.format("delta").load(path).count(), "seconds": time.monotonic() - t0,
            "cpu_s": cpu.used()}


def ours_cfg(cfg: Config, topic: str, work: Path, max_offsets: int, name: str) -> Config:
    return cfg.with_overrides(app={"data_dir": str(work / name)},
                              kafka={"topics": [topic], "max_offsets_per_trigger": max_offsets},
                              ingest={"progress": False, "trigger_interval": "1 second"})


def drain_ours(spark, cfg: Config, topic: str, work: Path, max_offsets: int, name: str = "ours") -> dict:  # noqa: ANN001
    from pipelines.jobs.ingest import IngestJob, start_ingest

    c = ours_cfg(cfg, topic, work, max_offsets, name)
    job = IngestJob.from_config(c, out=None)
    cpu = Cpu(jvm_pid(spark))
    t0 = time.monotonic()
    q = start_ingest(spark, c, available_now=True, job=job)
    q.awaitTermination()
    secs = time.monotonic() - t0
    progress = [p for p in q.recentProgress if p["numInputRows"]]
    return {"records": sum(r.rows_read for r in job.results), "seconds": secs, "cpu_s": cpu.used(),
            "batches": [{"rows": r.rows_read, "ms": r.duration_ms, "timings_ms": r.timings_ms} for r in job.results],
            "progress": [{"rows": p["numInputRows"], "durationMs": p["durationMs"]} for p in progress]}


# ---- 3. freshness ---------------------------------------------------------------------------------------
def freshness(spark, cfg: Config, work: Path, rate: float, seconds: float, tag: str,  # noqa: ANN001
              settle_s: float = 15.0) -> dict:
    import threading

    from pyspark.sql import functions as F

    from pipelines.jobs.ingest import run_ingest
    from pipelines.tools.producer import produce

    topic = f"fresh-{tag}"
    ensure_topic(cfg.kafka.bootstrap_servers, topic, 3)
    c = ours_cfg(cfg, topic, work, 100_000, f"fresh-{tag}")
    stop = threading.Event()
    runner = threading.Thread(target=lambda: run_ingest(spark, c, available_now=False, stop_event=stop))
    runner.start()
    time.sleep(settle_s)  # let the query start before the clock runs
    produce(cfg.kafka.bootstrap_servers, topic, int(rate * seconds), rate=rate, partitions=3, seed=7,
            duplicate_fraction=0.0, malformed_fraction=0.0, id_prefix=f"fresh-{tag}", progress=False)
    time.sleep(settle_s / 2)
    stop.set()
    runner.join(timeout=300)
    silver = spark.read.format("delta").load(c.table_path("silver"))
    audit = spark.read.format("delta").load(c.table_path("audit")).select("app_id", "batch_id", "finished_at")
    lat = silver.join(audit, ["app_id", "batch_id"]).select(
        (F.unix_micros("finished_at") - F.unix_micros("kafka_timestamp")).alias("us"))
    q = lat.agg(F.percentile_approx("us", [0.5, 0.99], 10000).alias("p"), F.count(F.lit(1)).alias("n")).first()
    return {"rate": rate, "rows": int(q["n"]), "p50_s": q["p"][0] / 1e6, "p99_s": q["p"][1] / 1e6}


# ---- 4. MERGE scaling ---------------------------------------------------------------------------------
def merge_scaling(spark, sizes: list[int], batch_rows: int, work: Path, slack_days: int = 1) -> list[dict]:  # noqa: ANN001
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

    def table_rows(lo: int, hi: int, size: int):  # noqa: ANN202
        return spark.range(lo, hi).select(
            F.concat(F.lit("m-"), F.col("id").cast("string")).alias("message_id"),
            F.concat(F.lit("o-"), (F.col("id") % 1000003).cast("string")).alias("order_id"),
            (F.col("id") % 100000 / 100).cast("decimal(18,2)").alias("amount"),
            F.lit("EUR").alias("currency"),
            F.date_sub(today, (F.lit(days - 1) - F.floor(F.col("id") * days / F.lit(size))).cast("int"))
            .alias("event_date"),
        )

    def spread_ids(size: int, dups: int):  # noqa: ANN202
        """``dups`` existing ids from 10 days spread over the year, the first among the oldest
        (positions off the file boundaries, which fall at multiples of 1/20 of the ids here)."""
        per = dups // 10
        parts = [table_rows(start, start + per, size)
                 for start in (int(size * (k + 0.3) / 10) for k in range(10))]
        out = parts[0]
        for part in parts[1:]:
            out = out.unionByName(part)
        return out

    out = []
    for size in sizes:
        path = str(work / f"merge_{size}")
        shutil.rmtree(path, ignore_errors=True)
        t0 = time.monotonic()
        table_rows(0, size, size).write.format("delta").option("maxRecordsPerFile", 500_000).save(path)
        load_s = time.monotonic() - t0
        dups = int(batch_rows * 0.05)
        for i, variant in enumerate(("table", "event_date", "event_date_spread")):
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
            m = DeltaTable.forPath(spark, path).history(1).first()["operationMetrics"]
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


# ---- reporting -------------------------------------------------------------------------------------------
def fit(points: list[tuple[int, float]]) -> tuple[float, float]:
    """Least squares t = a + b*rows."""
    n = len(points)
    if n < 2:
        return (points[0][1] if points else 0.0, 0.0)
    mx = sum(p[0] for p in points) / n
    my = sum(p[1] for p in points) / n
    sxx = sum((p[0] - mx) ** 2 for p in points) or 1.0
    b = sum((p[0] - mx) * (p[1] - my) for p in points) / sxx
    return my - b * mx, b


def plots(res: dict, out: Path) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    files = []
    if res.get("drain"):
        d = res["drain"]
        names = list(d)
        fig, ax = plt.subplots(figsize=(7, 3.5))
        ax.bar(names, [d[k]["records_per_s"] for k in names], color=["#999", "#c66", "#69c", "#3a3"][: len(names)])
        ax.set_ylabel("records / s")
        ax.set_title(f"Drain throughput ({res['sizes']['drain']} records, {res['machine']['cores']} cores)")
        fig.tight_layout()
        fig.savefig(out / "throughput.png", dpi=110)
        files.append("throughput.png")
        plt.close(fig)

    if res.get("sweep"):
        pts = res["sweep"]["points"]
        a, b = res["sweep"]["fit"]["a_s"], res["sweep"]["fit"]["b_s_per_row"]
        fig, ax = plt.subplots(figsize=(7, 3.5))
        ax.scatter([p[0] for p in pts], [p[1] for p in pts], s=12)
        xs = [0, max(p[0] for p in pts)]
        ax.plot(xs, [a + b * x for x in xs], "r-", label=f"t = {a:.2f} s + {b * 1e6:.1f} s/M rows")
        ax.set_xlabel("rows in batch")
        ax.set_ylabel("batch seconds")
        ax.legend()
        ax.set_title("Exactly-once batch time vs rows")
        fig.tight_layout()
        fig.savefig(out / "batch_time.png", dpi=110)
        files.append("batch_time.png")
        plt.close(fig)

    if res.get("merge"):
        fig, ax = plt.subplots(figsize=(7, 3.5))
        for variant in ("table", "event_date", "event_date_spread"):
            rows = [r for r in res["merge"] if r["variant"] == variant]
            ax.plot([r["table_rows"] for r in rows], [r["seconds"] for r in rows], "o-", label=variant)
        ax.set_xscale("log")
        ax.set_xlabel("silver rows before the MERGE")
        ax.set_ylabel("MERGE seconds")
        ax.legend()
        ax.set_title("MERGE time vs table size")
        fig.tight_layout()
        fig.savefig(out / "merge_scaling.png", dpi=110)
        files.append("merge_scaling.png")
        plt.close(fig)
    return files


def markdown(res: dict) -> str:
    m = res["machine"]
    lines = [f"# Benchmark results{' (quick mode: harness check, not numbers)' if res['quick'] else ''}", "",
             f"{m['date']}, commit `{m['commit']}`; {m['cpu']}, {m['cores']} cores, {m['memory_gib']} GiB; "
             f"{m['java']}; Python {m['python']}.", ""]
    if res.get("drain"):
        lines += ["## 1. Drain throughput", "",
                  f"{res['sizes']['drain']} records (~{res['sizes']['avg_value_bytes']:.0f}-byte JSON, 5 % duplicates, "
                  f"1 % malformed), maxOffsetsPerTrigger {res['sizes']['max_offsets']}.", "",
                  "| pipeline | records/s | MB/s | CPU-s per M records | vs at-least-once append |",
                  "|---|---:|---:|---:|---:|"]
        base = res["drain"]["spark_append"]["records_per_s"]
        for name, r in res["drain"].items():
            lines.append(f"| {name} | {r['records_per_s']:.0f} | {r['mb_per_s']:.2f} | {r['cpu_s_per_m']:.0f} | "
                         f"{r['records_per_s'] / base:.2f}x |")
    if res.get("sweep"):
        s = res["sweep"]
        lines += ["", "## 2. Fixed vs marginal cost per micro-batch (exactly-once pipeline)", "",
                  f"Fit over {len(s['points'])} batches: **t = {s['fit']['a_s']:.2f} s + "
                  f"{s['fit']['b_s_per_row'] * 1e6:.1f} s per million rows**.", "",
                  "| maxOffsetsPerTrigger | batches | mean rows | mean batch s | fixed part (durationMs, ms) |",
                  "|---:|---:|---:|---:|---|"]
        for row in s["settings"]:
            lines.append(f"| {row['max_offsets']} | {row['batches']} | {row['mean_rows']:.0f} | "
                         f"{row['mean_s']:.2f} | {row['duration_ms']} |")
    if res.get("freshness"):
        lines += ["", "## 3. Freshness (Kafka timestamp -> row visible in silver)", "",
                  "| load | rate (rec/s) | rows | p50 s | p99 s |", "|---|---:|---:|---:|---:|"]
        for f in res["freshness"]:
            lines.append(f"| {f['load']} | {f['rate']:.0f} | {f['rows']} | {f['p50_s']:.2f} | {f['p99_s']:.2f} |")
    if res.get("merge"):
        lines += ["", f"## 4. MERGE scaling ({res['sizes']['merge_batch']}-row batch, 5 % duplicates)", "",
                  "| silver rows | variant | MERGE s | files read (est.) / total | with one lower bound "
                  "| inserted (expected) |",
                  "|---:|---|---:|---|---:|---|"]
        for r in res["merge"]:
            single = r.get("files_single_lower_bound")
            lines.append(f"| {r['table_rows']:,} | {r['variant']} | {r['seconds']:.2f} | "
                         f"{r['files_read_estimate']} / {r['files_total']} | {'-' if single is None else single} | "
                         f"{r['inserted']} ({r['expected_inserted']}) |")
        growth = []
        for variant in sorted({r["variant"] for r in res["merge"]}):
            rows = sorted((r for r in res["merge"] if r["variant"] == variant), key=lambda r: r["table_rows"])
            if len(rows) > 1 and rows[0]["seconds"] > 0:
                growth.append(f"{variant} {rows[-1]['seconds'] / rows[0]['seconds']:.2f}x")
        if growth:
            lines += ["", f"MERGE time at the largest table / at the smallest: {', '.join(growth)}."]
    lines += ["", "Plots: " + ", ".join(f"`{p}`" for p in res.get("plots", [])), ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="tiny sizes: check the harness, not the numbers")
    p.add_argument("--out", default=str(REPO / "bench" / "results" / "latest"), help="output folder")
    p.add_argument("--records", type=int, help="drain size (default 300000; quick 3000)")
    p.add_argument("--merge-sizes", default="1000000,10000000,50000000")
    p.add_argument("--skip-merge", action="store_true")
    p.add_argument("--only-merge", action="store_true", help="only the MERGE scaling part (section 4)")
    args = p.parse_args(argv)
    quick = args.quick
    n = args.records or (3000 if quick else 300_000)
    max_offsets = 1000 if quick else 100_000
    sweep = [300, 1000] if quick else [1000, 10_000, 100_000, 1_000_000]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    work = out / "_work"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir()

    from pipelines.session import build_session

    base = load_config(REPO / "conf" / "local.yaml")
    broker = LocalKafka(work / "kafka", port=free_port(), controller_port=free_port(), jars_dir=base.jars_dir,
                        heap="512m")
    broker.start()
    res: dict[str, Any] = {"quick": quick, "machine": machine()}
    try:
        cfg = base.with_overrides(kafka={"bootstrap_servers": broker.bootstrap_servers},
                                  spark={"conf": {"spark.ui.enabled": "false", "spark.sql.shuffle.partitions": "4"}})
        spark = build_session(cfg)
        res["sizes"] = {}
        if not args.only_merge:
            run_pipelines(spark, cfg, broker, work, res, n=n, max_offsets=max_offsets, sweep=sweep, quick=quick)
        if not args.skip_merge:
            sizes = [20_000, 50_000] if quick else [int(x) for x in args.merge_sizes.split(",")]
            batch_rows = 2000 if quick else 100_000
            res["sizes"]["merge_batch"] = batch_rows
            print(f"[bench] MERGE scaling over {sizes} ...", flush=True)
            res["merge"] = merge_scaling(spark, sizes, batch_rows, work)
    finally:
        broker.stop()
    res["plots"] = plots(res, out)
    (out / "results.json").write_text(json.dumps(res, indent=2, default=str))
    (out / "results.md").write_text(markdown(res))
    shutil.rmtree(work, ignore_errors=True)
    print(markdown(res))
    return 0


def run_pipelines(spark, cfg: Config, broker: LocalKafka, work: Path, res: dict, *, n: int,  # noqa: ANN001
                  max_offsets: int, sweep: list[int], quick: bool) -> None:
    """Sections 1-3: drain throughput, batch-size sweep, freshness."""
    print(f"[bench] preloading {n} records ...", flush=True)
    preload(broker.bootstrap_servers, "drain", n)
    nbytes = topic_bytes(spark, cfg, "drain")
    res["sizes"] = {"drain": n, "avg_value_bytes": nbytes / n, "max_offsets": max_offsets}
    drain: dict[str, dict] = {}
    for name, fn in (
        ("raw_consumer", lambda: drain_raw(broker.bootstrap_servers, "drain", n)),
        ("spark_append", lambda: drain_spark_append(spark, cfg, "drain", work, max_offsets)),
        ("delta_sink", lambda: drain_delta_sink(spark, cfg, "drain", work, max_offsets)),
        ("exactly_once", lambda: drain_ours(spark, cfg, "drain", work, max_offsets)),
    ):
        print(f"[bench] drain: {name} ...", flush=True)
        r = fn()
        r.update({"records_per_s": r["records"] / r["seconds"], "mb_per_s": nbytes / r["seconds"] / 1e6,
                  "cpu_s_per_m": r["cpu_s"] / max(r["records"], 1) * 1e6})
        drain[name] = {k: v for k, v in r.items() if k not in ("batches", "progress")}
        print(f"[bench]   {r['records']} records in {r['seconds']:.1f}s = {r['records_per_s']:.0f}/s", flush=True)
    res["drain"] = drain

    points: list[tuple[int, float]] = []
    settings = []
    for m in sweep:
        size = min(n, m * (4 if m < n else 1))
        topic = f"sweep-{m}"
        preload(broker.bootstrap_servers, topic, size, seed=m)
        print(f"[bench] sweep: maxOffsetsPerTrigger={m} over {size} records ...", flush=True)
        r = drain_ours(spark, cfg, topic, work, m, name=f"sweep-{m}")
        batches = r["batches"][1:] if len(r["batches"]) > 1 else r["batches"]  # first batch warms up
        points += [(b["rows"], b["ms"] / 1000) for b in batches]
        dur = r["progress"][-1]["durationMs"] if r["progress"] else {}
        settings.append({"max_offsets": m, "batches": len(batches),
                         "mean_rows": sum(b["rows"] for b in batches) / len(batches),
                         "mean_s": sum(b["ms"] for b in batches) / len(batches) / 1000,
                         "duration_ms": {k: v for k, v in dur.items() if k != "triggerExecution"}})
    a, b = fit(points)
    res["sweep"] = {"points": points, "fit": {"a_s": a, "b_s_per_row": b}, "settings": settings}

    max_rate = drain["exactly_once"]["records_per_s"]
    fresh_s, settle_s = (8, 8.0) if quick else (60, 15.0)
    res["freshness"] = []
    for load in (0.25, 0.5, 0.75):
        print(f"[bench] freshness at {load:.0%} of {max_rate:.0f}/s ...", flush=True)
        f = freshness(spark, cfg, work, max_rate * load, fresh_s, tag=f"{int(load * 100)}", settle_s=settle_s)
        f["load"] = f"{load:.0%}"
        res["freshness"].append(f)


if __name__ == "__main__":
    sys.exit(main())
