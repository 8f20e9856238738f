"""Section ``gold``: gold freshness and the cost of a gold batch, with ingest and gold both streaming.

One worker (one JVM) runs the ingest job and the gold job as two streaming queries, each in its
own thread, while records are produced at a fixed rate (a fraction of our median drain rate, 50 %
by default) for ``--fresh-seconds`` after an unmeasured warm-up. Then it waits until gold
reflects the newest silver version, and stops both.

- Gold freshness, per silver commit of the measured window: the time from that silver commit
  to the first moment every gold table reflects it (the timestamp of the first gold commit, per
  table, whose recorded ``silver_version`` is at least the silver commit's version; the latest
  over the tables). p50 / p99 / max.
- Cost of a gold batch vs the rows it touches: each gold batch's changed silver rows, groups
  recomputed and duration, and a least-squares fit ``ms = a + b * changed rows`` (numpy).
"""

from __future__ import annotations

import datetime as dt
import json
import threading
import time
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bench.common import log, median, run_isolated
from bench.drain import ours_cfg
from bench.freshness import FRESH_MAX_OFFSETS, produce_load, start_thread, wait_running

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

    from bench.common import Settings
    from pipelines.config import Config

LOAD = 0.5


# ---- worker side -------------------------------------------------------------------------------------
def _commits(spark: SparkSession, path: str) -> list[tuple[int, dt.datetime, str]]:
    from delta.tables import DeltaTable

    return [(int(r[0]), r[1], r[2] or "") for r in
            DeltaTable.forPath(spark, path).history().select("version", "timestamp", "userMetadata").collect()]


def freshness(spark: SparkSession, silver: str, gold_tables: list[str], since: dt.datetime) -> dict[str, Any]:
    """Silver commit -> every gold table reflects it, for the silver batch commits at or after ``since``."""
    from pipelines.jobs.gold import METADATA_TAG

    silver_commits = [(v, ts) for v, ts, meta in _commits(spark, silver) if "pipelines.batch" in meta and ts >= since]
    reflected: list[list[tuple[int, dt.datetime]]] = []
    for path in gold_tables:
        marks = []
        for _, ts, meta in _commits(spark, path):
            m = json.loads(meta).get(METADATA_TAG) if meta.startswith("{") else None
            if isinstance(m, dict) and m.get("silver_version") is not None:
                marks.append((int(m["silver_version"]), ts))
        reflected.append(sorted(marks, key=lambda x: x[1]))
    lags = []
    for v, ts in silver_commits:
        seen = [next((t for sv, t in marks if sv >= v), None) for marks in reflected]
        if all(s is not None for s in seen):
            lags.append((max(s for s in seen if s is not None) - ts).total_seconds())
    import numpy as np

    arr = np.array(lags) if lags else np.array([0.0])
    return {"silver_commits": len(silver_commits), "reflected": len(lags), "p50_s": float(np.percentile(arr, 50)),
            "p99_s": float(np.percentile(arr, 99)), "max_s": float(arr.max())}


def measure(spark: SparkSession, cfg: Config, topic: str, work: Path, *, rate: float, seconds: float,
            trigger: str, warmup_s: float = 0.0) -> dict[str, Any]:
    """Ingest and gold streaming side by side under ``rate`` records/s; see the module docstring."""
    import numpy as np

    from pipelines.io.writers import table_version
    from pipelines.jobs.gold import GoldJob, run_gold
    from pipelines.jobs.ingest import IngestJob, run_ingest
    c = ours_cfg(cfg, topic, work, FRESH_MAX_OFFSETS, name="gold").with_overrides(
        ingest={"trigger_interval": trigger}, gold={"progress": False, "trigger_interval": trigger})
    ingest_job = IngestJob.from_config(c, out=None)
    stop_ingest, stop_gold = threading.Event(), threading.Event()
    ingest, ingest_errors = start_thread("ingest", lambda: run_ingest(spark, c, available_now=False,
                                                                      stop_event=stop_ingest, job=ingest_job))
    wait_running(spark, c.ingest.query_name, ingest, ingest_errors, idle=False)
    gold_job = GoldJob.from_config(spark, c, out=None)
    gold, gold_errors = start_thread("gold", lambda: run_gold(spark, c, available_now=False, stop_event=stop_gold,
                                                             job=gold_job))
    wait_running(spark, c.gold.query_name, gold, gold_errors, idle=False)
    first_measured = 0

    def measured() -> None:
        nonlocal first_measured
        first_measured = gold_job.summary.batches

    load = produce_load(c, topic, ingest_job, ingest, ingest_errors, rate=rate, seconds=seconds, warmup_s=warmup_s,
                        duplicate_fraction=0.05, prefix="gold", min_wait_s=180.0, on_measure=measured)
    since, stats, deadline = load.since, load.stats, load.deadline + seconds
    stop_ingest.set()
    ingest.join(timeout=300)
    silver = c.table_path("silver")
    paths = [c.gold_table_path(t) for t in c.gold.tables]
    last = table_version(spark, silver)
    while (time.monotonic() < deadline and gold.is_alive() and not gold_errors
           and not all(_reflects(spark, p, last) for p in paths)):
        time.sleep(0.5)
    caught_up = all(_reflects(spark, p, last) for p in paths)
    stop_gold.set()
    gold.join(timeout=300)
    for errs in (ingest_errors, gold_errors):
        if errs:
            raise errs[0]
    out = freshness(spark, silver, paths, since)
    batches = [{"changes": r.changes, "groups": sum(t.groups for t in r.tables.values()), "ms": r.duration_ms}
               for r in _last(gold_job.results, gold_job.summary.batches - first_measured)
               if r.changes and any(t.already is None for t in r.tables.values())]  # not a batch that had nothing to do
    fit: dict[str, float] = {}
    if len(batches) >= 2 and len({b["changes"] for b in batches}) >= 2:
        b, a = np.polyfit([x["changes"] for x in batches], [x["ms"] for x in batches], 1)
        fit = {"a_ms": float(a), "b_ms_per_k_rows": float(b) * 1000}
    out.update(rate=rate, seconds=seconds, trigger=trigger, produced=stats.sent, caught_up=caught_up,
               gold_batches=batches, fit=fit, median_batch_ms=median([x["ms"] for x in batches]) if batches else None,
               silver_rows=spark.read.format("delta").load(silver).count())
    return out


def _last(items: Iterable[Any], n: int) -> list[Any]:
    """The last ``n`` of ``items`` (none for n <= 0)."""
    return list(items)[-n:] if n > 0 else []


def _reflects(spark: SparkSession, path: str, version: int) -> bool:
    from pipelines.jobs.gold import silver_version_of

    reflected = silver_version_of(spark, path)[0]
    return reflected is not None and reflected >= version


# ---- orchestrator side -----------------------------------------------------------------------------------
def run(st: Settings, max_rate: float) -> dict[str, Any]:
    """The section: one worker at ``LOAD`` x ``max_rate`` (our median drain rate)."""
    from pipelines.local.kafka import ensure_topic

    assert st.bootstrap is not None
    topic = "gold-50"
    ensure_topic(st.bootstrap, topic, 3)
    rate = max_rate * LOAD
    log(f"gold: ingest + gold streaming at {LOAD:.0%} of {max_rate:.0f}/s = {rate:.0f}/s for {st.fresh_warmup_s:.0f}s "
        f"warm-up + {st.fresh_seconds:.0f}s, trigger {st.trigger!r} ...")
    r = run_isolated("gold", work=st.work / "gold", code=st.after, label="gold freshness",
                     timeout_s=st.fresh_seconds + st.timeout_s,
                     args={"bootstrap": st.bootstrap, "topic": topic, "rate": rate, "seconds": st.fresh_seconds,
                           "trigger": st.trigger, "warmup-seconds": st.fresh_warmup_s})
    r["load"] = f"{LOAD:.0%}"
    log(f"  {r['reflected']} silver commits: silver -> gold p50 {r['p50_s']:.2f}s, p99 {r['p99_s']:.2f}s")
    return r


def lines(res: dict[str, Any]) -> list[str]:
    """The section in ``results.md``."""
    g = res["gold"]
    out = ["## 6. Gold: freshness and the cost of a gold batch (ingest and gold streaming in one JVM)", "",
           f"{g['produced']:,} records at {g['rate']:,.0f}/s ({g['load']} of our drain rate) for {g['seconds']:.0f}s "
           f"after a warm-up, trigger `{g['trigger']}` for both queries; silver holds {g['silver_rows']:,} rows at "
           f"the end. Caught up: {g['caught_up']}.", "",
           "| silver commits measured | silver commit -> all gold tables reflect it: p50 | p99 | max |",
           "|---:|---:|---:|---:|",
           f"| {g['reflected']} of {g['silver_commits']} | {g['p50_s']:.2f} s | {g['p99_s']:.2f} s | "
           f"{g['max_s']:.2f} s |", ""]
    fit = g.get("fit") or {}
    if fit:
        out.append(f"Gold batch time fit: {fit['a_ms']:,.0f} ms + {fit['b_ms_per_k_rows']:,.1f} ms per 1,000 changed "
                   f"silver rows (median batch {g['median_batch_ms']:,.0f} ms, {len(g['gold_batches'])} batches).")
        out.append("")
    out += ["| gold batch | changed silver rows | groups recomputed (all tables) | ms |", "|---:|---:|---:|---:|"]
    for i, b in enumerate(g["gold_batches"][:20]):
        out.append(f"| {i} | {b['changes']:,} | {b['groups']:,} | {b['ms']:,} |")
    return out
