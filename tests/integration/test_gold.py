"""Gold aggregates against a real broker and real Delta tables: equal to silver, whatever happens."""

from __future__ import annotations

import dataclasses
import datetime as dt
import os
import shutil
import subprocess
import sys
from collections import defaultdict
from decimal import Decimal

import pytest

from pipelines.errors import PipelineError
from pipelines.io.writers import table_version
from pipelines.jobs.gold import (
    GoldJob,
    TableChange,
    compare,
    rebuild,
    run_gold,
    select_specs,
    silver_version_of,
    start_gold,
)
from pipelines.jobs.ingest import run_ingest
from pipelines.paths import REPO_ROOT
from pipelines.tools.producer import produce, send_events
from pipelines.tools.verify import gold_checks, verify

pytestmark = pytest.mark.integration
ZERO = Decimal("0.00")


def expected_gold(spark, cfg) -> dict[str, dict]:
    """The two default gold tables computed in plain Python from silver's rows (independent of Spark's)."""
    minute: dict = defaultdict(lambda: [ZERO, ZERO, 0])
    customer: dict = defaultdict(lambda: [0, ZERO, ZERO, None, None])
    for r in spark.read.format("delta").load(cfg.table_path("silver")).select(
            "event_type", "amount", "currency", "customer_id", "event_time").collect():
        start = r.event_time.replace(second=0, microsecond=0)
        m, c = minute[(start, start + dt.timedelta(minutes=1), r.currency)], customer[r.customer_id]
        m[2] += 1
        if r.event_type == "payment_captured":
            m[0] += r.amount
            c[1] += r.amount
        elif r.event_type == "refund_issued":
            m[1] += r.amount
            c[2] += r.amount
        elif r.event_type == "order_created":
            c[0] += 1
        c[3] = r.event_time if c[3] is None else min(c[3], r.event_time)
        c[4] = r.event_time if c[4] is None else max(c[4], r.event_time)
    return {
        "revenue_per_minute": {k: (v[0], v[1], v[0] - v[1], v[2]) for k, v in minute.items()},
        "customer_totals": {(k,): tuple(v) for k, v in customer.items()},
    }


def gold_rows(spark, cfg, name: str) -> dict:
    spec = {s.name: s for s in select_specs(spark, cfg)}[name]
    rows = spark.read.format("delta").load(spec.path).collect()
    out = {tuple(r[k] for k in spec.keys): tuple(r[v] for v in spec.values) for r in rows}
    assert len(out) == len(rows), "a gold key appears twice"
    return out


def assert_gold_exact(spark, cfg) -> dict[str, dict]:
    want = expected_gold(spark, cfg)
    got = {name: gold_rows(spark, cfg, name) for name in want}
    for name in want:
        assert got[name] == want[name], name
    for spec in select_specs(spark, cfg):  # and the job's own recomputation agrees
        cmp = compare(spark, spec, cfg.table_path("silver"))
        assert cmp.differing == 0 and cmp.groups == len(want[spec.name]), cmp
    return got


def produce_events(cfg, n: int, seed: int) -> None:
    produce(cfg.kafka.bootstrap_servers, cfg.kafka.topics[0], n, partitions=3, seed=seed, duplicate_fraction=0.05,
            malformed_fraction=0.01, late_fraction=0.1, id_prefix=f"g{seed}", progress=False)


class CheckedGoldJob(GoldJob):
    """The gold job, comparing every table with its recomputation from silver after each batch."""

    def process_batch(self, changes, batch_id):
        res = super().process_batch(changes, batch_id)
        spark = changes.sparkSession
        for spec in self.specs:
            cmp = compare(spark, spec, self.silver)
            assert cmp.differing == 0 and cmp.silver_version == res.silver_versions[1], (batch_id, cmp)
        return res


def silver_count(spark, cfg) -> int:
    return spark.read.format("delta").load(cfg.table_path("silver")).count()


def test_gold_is_incremental_idempotent_and_corrects_late_windows(spark, make_cfg):
    cfg = make_cfg(gold={"progress": False, "max_files_per_trigger": 1})
    produce_events(cfg, 1000, seed=21)
    run_ingest(spark, cfg, available_now=True)
    built = GoldJob.from_config(spark, cfg, out=None)
    run_gold(spark, cfg, available_now=True, job=built)  # a new checkpoint: all built from silver's latest version
    assert built.summary.tables_built == len(built.specs)
    # Its stream starts at that version: its batches find every table already reflecting it.
    latest = table_version(spark, cfg.table_path("silver"))
    assert built.results and all(list(r.tables.values()) == [TableChange(already=latest)] * len(built.specs)
                                 for r in built.results), built.results
    assert_gold_exact(spark, cfg)

    # Incremental: several silver commits, one silver file per gold batch (a commit's files split
    # across batches); after every batch each table equals the recomputation from silver.
    rows_before = silver_count(spark, cfg)
    produce_events(cfg, 2000, seed=22)
    run_ingest(spark, cfg, available_now=True)
    first = run_gold(spark, cfg, available_now=True, job=CheckedGoldJob.from_config(spark, cfg, out=None))
    assert first.batches >= 3 and first.changes == silver_count(spark, cfg) - rows_before
    before = assert_gold_exact(spark, cfg)

    # A replayed batch (the whole change feed again, under an old batch id) changes nothing.
    job = GoldJob.from_config(spark, cfg, out=None)
    versions = {s.name: table_version(spark, s.path) for s in job.specs}
    feed = (spark.read.format("delta").option("readChangeFeed", "true").option("startingVersion", 0)
            .load(cfg.table_path("silver")))
    res = job.process_batch(feed, 0)
    assert all((c.inserted, c.updated, c.deleted) == (0, 0, 0) for c in res.tables.values()), res
    assert res.tables["customer_totals"].groups == len(before["customer_totals"])
    assert {name: gold_rows(spark, cfg, name) for name in before} == before
    assert {s.name: table_version(spark, s.path) for s in job.specs} != versions  # it did run the MERGEs

    # A late event (two days back) corrects its long-closed window, and only that group.
    window, cur = min(k for k in before["revenue_per_minute"] if k[2] == "EUR")[:2], "EUR"
    late = {"message_id": "late-1", "event_type": "payment_captured", "order_id": "o-late", "customer_id": "c-late",
            "amount": "123.45", "currency": cur, "event_time": (window[0] + dt.timedelta(seconds=30)).strftime(
                "%Y-%m-%dT%H:%M:%SZ")}
    send_events(cfg.kafka.bootstrap_servers, cfg.kafka.topics[0], [late, late])  # and a duplicate of it: counted once
    run_ingest(spark, cfg, available_now=True)
    second = run_gold(spark, cfg, available_now=True)
    assert second.changes == 1
    after = assert_gold_exact(spark, cfg)
    key = (*window, cur)
    old = before["revenue_per_minute"][key]
    assert after["revenue_per_minute"][key] == (old[0] + Decimal("123.45"), old[1], old[2] + Decimal("123.45"),
                                                old[3] + 1)
    changed = {k for k, v in after["revenue_per_minute"].items() if before["revenue_per_minute"].get(k) != v}
    assert changed == {key}
    assert after["customer_totals"][("c-late",)][:3] == (0, Decimal("123.45"), ZERO)

    # A deleted gold checkpoint: the new query rebuilds every table from silver, nothing counted twice.
    shutil.rmtree(cfg.gold_checkpoint_path)
    third = run_gold(spark, cfg, available_now=True)
    assert third.inserted == third.updated == third.deleted == 0
    assert assert_gold_exact(spark, cfg) == after

    # A deleted gold table is built again on the next start (the checkpoint resumes).
    shutil.rmtree(cfg.gold_table_path(cfg.gold.tables[1]))
    assert run_gold(spark, cfg, available_now=True).batches == 0
    assert assert_gold_exact(spark, cfg) == after

    # verify reconciles gold too, and sees a corrupted group.
    report = verify(spark, cfg)
    assert report.ok, report.table()
    assert report.totals["gold_groups"] == len(after["revenue_per_minute"]) + len(after["customer_totals"])
    spark.sql(f"UPDATE delta.`{cfg.gold_table_path(cfg.gold.tables[0])}` SET event_count = event_count + 1 "
              f"WHERE currency = '{cur}' AND window_start = '{window[0].isoformat(sep=' ')}'").collect()
    broken = type(report)()
    gold_checks(spark, cfg, broken)
    check = next(c for c in broken.checks if c.name.startswith("gold revenue_per_minute: groups that differ"))
    assert check.count == 1 and "event_count=" in check.samples[0] and cur in check.samples[0]

    # A changed definition is refused until the table is rebuilt, atomically, from silver.
    tables = [dataclasses.asdict(t) for t in cfg.gold.tables]
    tables[0]["aggregates"] = [*tables[0]["aggregates"], {"name": "max_amount", "fn": "max", "column": "amount"}]
    changed_cfg = cfg.with_overrides(gold={"tables": tables})
    with pytest.raises(PipelineError, match="gold rebuild --table revenue_per_minute"):
        start_gold(spark, changed_cfg)
    gold_path = cfg.gold_table_path(cfg.gold.tables[0])
    old_version = table_version(spark, gold_path)
    [result] = rebuild(spark, changed_cfg, ["revenue_per_minute"])
    assert result.rows == len(after["revenue_per_minute"])
    assert table_version(spark, gold_path) == old_version + 1  # rows, columns and definition: one commit
    rebuilt = spark.read.format("delta").load(gold_path)
    assert "max_amount" in rebuilt.columns
    spec = select_specs(spark, changed_cfg, ["revenue_per_minute"])[0]
    assert compare(spark, spec, cfg.table_path("silver")).differing == 0  # the corrupted group is repaired
    assert run_gold(spark, changed_cfg, available_now=True).batches == 0


def test_killed_gold_job_resumes_exactly(spark, make_cfg):
    cfg = make_cfg(gold={"progress": False})
    produce_events(cfg, 1000, seed=23)
    run_ingest(spark, cfg, available_now=True)
    run_gold(spark, cfg, available_now=True)
    produce_events(cfg, 1000, seed=24)
    run_ingest(spark, cfg, available_now=True)
    env = {**os.environ, "PIPELINES__APP__DATA_DIR": cfg.data_dir, "PIPELINES__APP__JARS_DIR": str(cfg.jars_dir),
           "PIPELINES_FAULT_POINT": "after_gold_merge"}
    res = subprocess.run([sys.executable, "-m", "pipelines", "--conf", str(REPO_ROOT / "conf" / "local.yaml"), "gold",
                          "--available-now"], env=env, cwd=REPO_ROOT, capture_output=True, text=True, timeout=600)
    assert res.returncode == -9, res.stdout[-2000:] + res.stderr[-2000:]
    assert "[fault] injected crash at after_gold_merge" in res.stderr
    # Killed between the two tables: the first reflects the newer silver version, the second not yet.
    specs = select_specs(spark, cfg)
    reflected = [silver_version_of(spark, s.path)[0] for s in specs]
    assert reflected[0] == table_version(spark, cfg.table_path("silver")) and reflected[1] < reflected[0]
    job = GoldJob.from_config(spark, cfg, out=None)
    summary = run_gold(spark, cfg, available_now=True, job=job)
    assert summary.batches == 1
    redone = job.results[0].tables
    # The re-run batch: the first table already had it (nothing to change), the second catches up.
    assert redone[specs[0].name] == TableChange(already=reflected[0])
    assert redone[specs[1].name].inserted + redone[specs[1].name].updated > 0
    assert_gold_exact(spark, cfg)
