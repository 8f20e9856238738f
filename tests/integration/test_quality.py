"""Data-quality contracts on the ingest path, against a real broker and real Delta tables."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest
from pyspark.sql import functions as F

from pipelines.domain.schema import EventSpec
from pipelines.io.tables import TablePaths, ensure_tables
from pipelines.io.writers import table_version
from pipelines.jobs.ingest import IngestJob, run_ingest
from pipelines.paths import REPO_ROOT
from pipelines.quality.batch import QualityFailedError
from pipelines.tools.producer import send_events as send_json
from pipelines.tools.verify import read_topic, verify

pytestmark = pytest.mark.integration

AMOUNT = "EXPECTATION:expect_column_values_to_be_between:amount"
CURRENCY = "EXPECTATION:expect_column_values_to_be_in_set:currency"
EVENT_TIME = "EXPECTATION:expect_column_values_to_be_between:event_time"
REFUND = "refund_amount_bound"


def event(mid: str, **over) -> dict:
    ev = {"message_id": mid, "event_type": "order_created", "order_id": "o-1", "customer_id": "c-1",
          "amount": "10.00", "currency": "EUR", "event_time": "2026-11-26T10:00:00Z"}
    ev.update(over)
    return ev


def send_events(cfg, events: list[dict]) -> None:
    send_json(cfg.kafka.bootstrap_servers, cfg.kafka.topics[0], events)


def table(spark, cfg, name):
    return spark.read.format("delta").load(cfg.table_path(name))


def mixed_events() -> list[dict]:
    good = [event(f"ok-{i}") for i in range(40)]
    return [
        *good,
        event("neg-amount", amount="-5.00"),
        event("bad-currency", currency="XXX"),
        event("both-bad", amount="2000000.00", currency="ABC"),
        event("future", event_time="2031-01-01T00:00:00Z"),
        event("ancient", event_time="1999-12-31T23:59:59Z"),
        event("big-refund", event_type="refund_issued", amount="96000.00"),  # warn only
        event("big-order", event_type="order_created", amount="96000.00"),  # the warn rule's condition: no
        event("empty-order", order_id=""),
        {"message_id": "not-contract", "amount": "1.00"},  # fails the event contract, not the suite
    ]


def test_quarantine_and_warn_rules_route_and_record_each_batch(spark, make_cfg):
    cfg = make_cfg(kafka={"max_offsets_per_trigger": 20})
    send_events(cfg, mixed_events())
    summary = run_ingest(spark, cfg, available_now=True)
    assert summary.batches >= 2

    silver = {r.message_id for r in table(spark, cfg, "silver").select("message_id").collect()}
    quarantine = {r.message_id: r for r in table(spark, cfg, "quarantine").collect()}
    routed = {"neg-amount", "bad-currency", "both-bad", "future", "ancient", "empty-order"}
    assert silver == {f"ok-{i}" for i in range(40)} | {"big-refund", "big-order"}
    assert set(quarantine) == routed | {"not-contract"}
    assert quarantine["neg-amount"].reason_codes == [AMOUNT]
    assert quarantine["neg-amount"].reason == "EXPECTATION"
    assert "amount -5.00 value is not between 0 and 1000000" in quarantine["neg-amount"].reason_message
    assert sorted(quarantine["both-bad"].reason_codes) == sorted([AMOUNT, CURRENCY])
    assert quarantine["future"].reason_codes == [EVENT_TIME]
    assert quarantine["ancient"].reason_codes == [EVENT_TIME]
    assert quarantine["empty-order"].reason_codes == [
        "EXPECTATION:expect_column_value_lengths_to_be_between:order_id"]
    assert quarantine["not-contract"].reason == "MISSING_FIELD"  # contract codes only

    # verify's independent (Python) reading of the same rules agrees with the Spark routing.
    report = verify(spark, cfg)
    assert report.ok, report.table()

    # The record: one row per batch and expectation; the warn rule counted the big refund only.
    q = table(spark, cfg, "quality")
    audit_batches = {r.batch_id for r in table(spark, cfg, "audit").select("batch_id").collect()}
    rules = 7
    assert q.count() == rules * len(audit_batches)
    assert q.groupBy("app_id", "batch_id", "suite", "expectation").count().filter("count > 1").count() == 0
    totals = {r.expectation: (r.n, r.bad) for r in q.groupBy("expectation").agg(
        F.sum("element_count").alias("n"), F.sum("unexpected_count").alias("bad")).collect()}
    assert totals[REFUND] == (1, 1)  # as GX counts: the rows its row_condition selects (one refund)
    assert totals["expect_column_values_to_be_between:amount"] == (48, 2)
    assert totals["expect_column_values_to_be_between:event_time"] == (48, 2)
    refund = q.filter(F.col("expectation") == REFUND).filter("unexpected_count > 0").first()
    assert refund.policy == "warn" and not refund.success and refund.severity == "warning"
    assert refund.unexpected_percent == 100.0


def test_fail_rule_stops_before_any_write_and_a_fixed_restart_resumes_exactly(spark, make_cfg, tmp_path):
    suites = tmp_path / "expectations"
    suites.mkdir()
    strict = (REPO_ROOT / "conf" / "expectations" / "silver.yaml").read_text().replace(
        "    kwargs: {column: amount, min_value: 0, max_value: 1000000}\n    policy: quarantine",
        "    kwargs: {column: amount, min_value: 0, max_value: 1000}\n    policy: fail")
    assert "policy: fail" in strict
    # An aggregate expectation (no row-level predicate: validated by GX on the batch), warn only.
    strict += """
  - type: expect_column_max_to_be_between
    kwargs: {column: amount, max_value: 100}
    policy: warn
"""
    (suites / "silver.yaml").write_text(strict)
    cfg = make_cfg(quality={"expectations_dir": str(suites)})
    events = [event(f"e-{i}", amount="10.00") for i in range(30)] + [event("too-big", amount="5000.00")]
    send_events(cfg, events)

    with pytest.raises(QualityFailedError) as err:
        run_ingest(spark, cfg, available_now=True)
    text = str(err.value)
    assert "expect_column_values_to_be_between:amount (policy fail): 1 of 31 rows failed" in text
    assert "too-big" in text and str(suites / "silver.yaml") in text
    for name in ("bronze", "silver", "quarantine", "audit", "quality"):
        assert table(spark, cfg, name).count() == 0, name  # nothing of the batch was written

    # The operator turns the rule into a quarantine rule and starts again: same checkpoint.
    (suites / "silver.yaml").write_text(strict.replace("policy: fail", "policy: quarantine", 1))
    run_ingest(spark, cfg, available_now=True)
    silver = [r.message_id for r in table(spark, cfg, "silver").select("message_id").collect()]
    assert sorted(silver) == sorted(f"e-{i}" for i in range(30))
    assert [r.message_id for r in table(spark, cfg, "quarantine").collect()] == ["too-big"]
    assert table(spark, cfg, "bronze").count() == 31
    agg = table(spark, cfg, "quality").filter(F.col("expectation_type") == "expect_column_max_to_be_between").collect()
    assert len(agg) == 1 and not agg[0].success and agg[0].policy == "warn"
    assert "5000" in agg[0].observed_value and agg[0].element_count == 31
    report = verify(spark, cfg)
    assert report.ok, report.table()


def test_replay_and_a_lost_record_give_exactly_one_record_per_batch(spark, make_cfg):
    cfg = make_cfg()
    send_events(cfg, mixed_events())
    spec, tables = EventSpec.from_config(cfg.events), TablePaths.from_config(cfg)
    ensure_tables(spark, tables, spec)
    batch = read_topic(spark, cfg).persist()
    job = IngestJob.from_config(cfg, app_id="run-1", out=None)
    assert job.quality is not None
    job.process_batch(batch, 0)
    q = table(spark, cfg, "quality")
    first = sorted(tuple(r) for r in q.drop("run_time").collect())
    version = table_version(spark, tables.quality)
    job.process_batch(batch, 0)  # Spark re-runs the batch: skipped, no second record
    assert sorted(tuple(r) for r in q.drop("run_time").collect()) == first
    assert table_version(spark, tables.quality) == version

    # A crash lost the batch's audit row and quality record (both written after the table
    # commits): the next start rebuilds them from the batch's commits, once.
    for name in ("audit", "quality"):
        shutil.rmtree(Path(tables.of(name)))
    ensure_tables(spark, tables, spec)
    fresh = IngestJob.from_config(cfg, app_id="run-1", out=None)
    recovered = fresh.record_abandoned_batches(spark, "run-1", committed=[0])
    assert [(r.app_id, r.batch_id) for r in recovered] == [("run-1", 0)]
    assert sorted(tuple(r) for r in q.drop("run_time").collect()) == first
    assert fresh.record_abandoned_batches(spark, "run-1", committed=[0]) == []
    assert sorted(tuple(r) for r in q.drop("run_time").collect()) == first
    # GX's store got the batch's record once, through the replay and the recovery.
    stored = list((Path(cfg.gx_dir) / "gx" / "uncommitted" / "validations").rglob("*.json"))
    assert [p.parent.parent.name for p in stored] == ["run-1.batch-0"], stored
    batch.unpersist()


def test_data_docs_show_the_suite_and_a_failing_expectation(spark, make_cfg):
    from pipelines.quality.project import build_docs

    cfg = make_cfg()
    send_events(cfg, mixed_events())
    run_ingest(spark, cfg, available_now=True)
    batches = table(spark, cfg, "audit").count()
    # The stream stored each batch's record in GX's validation store already, once.
    store = Path(cfg.gx_dir) / "gx" / "uncommitted" / "validations" / "silver_events"
    assert len(list(store.rglob("*.json"))) == batches
    index, added = build_docs(spark, cfg)
    assert added == 0 and index.is_file()
    html = index.read_text()
    assert "silver_events" in html and "Failed" in html  # the batch with unexpected rows
    pages = list((index.parent / "validations" / "silver_events").rglob("*.html"))
    assert len(pages) == batches
    failing = [p.read_text() for p in pages if "95000" in p.read_text()]
    assert failing, "no validation page shows the refund rule"
    # Records missing from GX's store (a crash between the two writes) are copied from the table.
    shutil.rmtree(store)
    assert build_docs(spark, cfg)[1] == batches
    assert build_docs(spark, cfg)[1] == 0  # nothing stored twice


def test_quality_check_fails_on_a_duplicated_message_id_in_silver(spark, make_cfg, capsys, monkeypatch):
    from pipelines.cli import main

    cfg = make_cfg()
    send_events(cfg, [event(f"c-{i}") for i in range(20)]
                + [event("c-refund", event_type="refund_issued", amount="96000.00")])
    run_ingest(spark, cfg, available_now=True)
    monkeypatch.setenv("PIPELINES__APP__DATA_DIR", cfg.app.data_dir)
    args = ["quality", "check", "--table", "silver"]
    assert main(args) == 0, capsys.readouterr().out
    out = capsys.readouterr().out
    # A failed warn rule is reported, and does not fail the check.
    assert "passed" in out and re.search(r"warn\s+refund_amount_bound\s+warn\s+1 of 1 unexpected", out), out

    # A second copy of one message in silver (what exactly-once must never produce).
    silver = table(spark, cfg, "silver")
    silver.filter(F.col("message_id") == "c-3").write.format("delta").mode("append").save(cfg.table_path("silver"))
    assert main(args) == 1
    out = capsys.readouterr().out
    assert "FAILED" in out
    assert re.search(r"FAIL\s+message_id_unique\s+fail\s+2 of 22 unexpected\s+e.g. c-3", out), out
    # The rule whose bound is relative to each record's Kafka timestamp is not run by GX: said so.
    assert re.search(r"ok\s+expect_column_values_to_be_between:event_time\s+quarantine\s+skipped", out), out
    assert "c-3" in out


def test_a_fail_rule_added_after_a_crash_does_not_stop_the_batch_the_tables_have_started(spark, make_cfg, tmp_path):
    """The batch committed bronze and quarantine, then crashed before silver; the operator adds a
    `fail` rule that this batch breaks. The re-run must finish the batch (stopping it could only
    leave it half written), and the next batch is checked as usual."""
    from pipelines.quality.batch import BatchQuality
    from pipelines.quality.suites import load_suite

    cfg = make_cfg()
    send_events(cfg, [event(f"f-{i}", amount="500.00") for i in range(10)])
    spec, tables = EventSpec.from_config(cfg.events), TablePaths.from_config(cfg)
    ensure_tables(spark, tables, spec)
    batch = read_topic(spark, cfg).persist()
    default = BatchQuality(load_suite(REPO_ROOT / "conf" / "expectations" / "silver.yaml"), spec)

    def crash(*_args, **_kwargs):
        raise RuntimeError("killed before the silver commit")

    with pytest.raises(RuntimeError):
        IngestJob(spec, tables, app_id="run-1", out=None, quality=default, silver_writer=crash).process_batch(batch, 0)
    assert table(spark, cfg, "silver").count() == 0 and table(spark, cfg, "bronze").count() == 10

    path = tmp_path / "silver.yaml"
    path.write_text((REPO_ROOT / "conf" / "expectations" / "silver.yaml").read_text() + """
  - type: expect_column_max_to_be_between
    kwargs: {column: amount, max_value: 100}
    policy: fail
""")
    strict = BatchQuality(load_suite(path), spec)
    job = IngestJob(spec, tables, app_id="run-1", out=None, quality=strict)
    res = job.process_batch(batch, 0)  # the re-run: finished, not stopped
    assert res.silver_inserted == 10 and table(spark, cfg, "silver").count() == 10
    assert any(r.expectation.startswith("expect_column_max_to_be_between") and not r.success for r in res.quality)
    with pytest.raises(QualityFailedError, match="expect_column_max_to_be_between"):
        job.process_batch(batch, 1)  # a new batch (same records) is checked and stopped
    batch.unpersist()
