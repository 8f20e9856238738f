"""Changing the event contract: safe changes are refused at start, then applied by `migrate`;
unsafe ones are refused by both, naming the column.

Before this check, relaxing ``required`` passed the start-up check (nullability was ignored)
and the first record without that field then failed the same batch forever.
"""

from __future__ import annotations

import datetime as dt
import json

import pytest

from pipelines.domain.schema import EventSpec
from pipelines.errors import PipelineError
from pipelines.io.tables import ensure_tables, migrate_tables, table_schema
from pipelines.jobs.ingest import IngestJob

pytestmark = pytest.mark.integration


def _batch(spark, events):
    rows = [(None, json.dumps(e).encode(), "contract", 0, i, dt.datetime(2026, 11, 26)) for i, e in enumerate(events)]
    return spark.createDataFrame(rows, "key binary, value binary, topic string, partition int, offset long, "
                                       "timestamp timestamp")


def _ev(mid: str, **extra) -> dict:
    ev = {"message_id": mid, "event_type": "order_created", "order_id": "o-1", "customer_id": "c-1",
          "amount": "1.00", "currency": "EUR", "event_time": "2026-11-26T10:00:00Z"}
    ev.update(extra)
    return {k: v for k, v in ev.items() if v is not None}


def _with_fields(cfg, change):
    fields = [dict(name=f.name, type=f.type, required=f.required, allowed=list(f.allowed) if f.allowed else None)
              for f in cfg.events.fields]
    fields = change(fields)
    return cfg.with_overrides(events={"fields": [{k: v for k, v in f.items() if v is not None} for f in fields]})


def _start(spark, cfg, app_id):
    job = IngestJob.from_config(cfg, app_id=app_id, out=None)
    ensure_tables(spark, job.tables, job.spec)
    return job


def test_safe_changes_refused_at_start_then_migrated(spark, make_cfg, tmp_path):
    # About the event contract alone: without the expectation suite, whose amount bound (1,000,000)
    # would quarantine the widened decimal's 18-digit amount below.
    cfg = make_cfg(quality={"expectations_dir": str(tmp_path / "no-expectations")})
    job = _start(spark, cfg, "contract-1")
    job.process_batch(_batch(spark, [_ev("a")]), 0)

    def relax_and_add(fields):
        for f in fields:
            if f["name"] == "currency":
                f["required"] = False  # a field made optional
            if f["name"] == "amount":
                f["type"] = "decimal(22,4)"  # a type widened
        return [*fields, dict(name="channel", type="string", required=False)]  # a new optional field

    changed = _with_fields(cfg, relax_and_add)
    with pytest.raises(PipelineError) as e:
        _start(spark, changed, "contract-2")
    msg = str(e.value)
    assert "silver.currency is NOT NULL in the table, optional in the contract" in msg
    assert "silver.channel (string) is declared but not in the table" in msg
    assert "silver.amount is decimal(18,2) in the table, decimal(22,4) declared" in msg
    assert "python -m pipelines migrate" in msg

    applied = migrate_tables(spark, job.tables, IngestJob.from_config(changed, app_id="x", out=None).spec)
    assert sorted(c.column for c in applied) == ["amount", "channel", "currency"]
    schema = table_schema(spark, job.tables.silver)
    assert schema["currency"].nullable and schema["channel"].dataType.simpleString() == "string"
    assert schema["amount"].dataType.simpleString() == "decimal(22,4)"
    job2 = _start(spark, changed, "contract-2")  # no refusal now
    res = job2.process_batch(_batch(spark, [_ev("b", currency=None, channel="web", amount="123456789012345678.1234")]),
                             0)
    assert res.silver_inserted == 1 and res.quarantined == 0
    row = spark.read.format("delta").load(job.tables.silver).filter("message_id = 'b'").first()
    assert row.currency is None and row.channel == "web" and str(row.amount) == "123456789012345678.1234"
    assert migrate_tables(spark, job.tables, job2.spec) == []  # nothing left to do


@pytest.mark.parametrize("change, expected", [
    (lambda fs: [*fs, dict(name="region", type="string", required=True)],
     "silver.region (string) is declared required but not in the table"),
    (lambda fs: [dict(f, type="long") if f["name"] == "order_id" else f for f in fs],
     "silver.order_id is string in the table, bigint declared: not a safe widening"),
    (lambda fs: [dict(f, type="decimal(18,1)") if f["name"] == "amount" else f for f in fs],
     "silver.amount is decimal(18,2) in the table, decimal(18,1) declared: not a safe widening"),
    (lambda fs: [f for f in fs if f["name"] != "customer_id"],
     "silver.customer_id is in the table but no longer declared"),
])
def test_unsafe_changes_are_refused_by_start_and_migrate(spark, make_cfg, change, expected):
    cfg = make_cfg()
    job = _start(spark, cfg, "contract-3")
    before = table_schema(spark, job.tables.silver)
    changed = _with_fields(cfg, change)
    # The contract alone (a removed field would also fail the expectation suite that names it).
    spec = EventSpec.from_config(changed.events)
    with pytest.raises(PipelineError, match="no safe in-place change") as e:
        ensure_tables(spark, job.tables, spec)
    assert expected in str(e.value)
    with pytest.raises(PipelineError, match="no table was changed") as e:
        migrate_tables(spark, job.tables, spec)
    assert expected in str(e.value)
    assert table_schema(spark, job.tables.silver) == before  # nothing was applied


def test_a_batch_started_under_another_contract_is_not_finished_under_the_new_one(spark, make_cfg):
    """Crash after the bronze and quarantine commits, change the contract, restart: the re-run
    would route the record differently (it is in quarantine already and would now go to silver)."""
    from pipelines.errors import ContractChangedError

    cfg = make_cfg()
    job = _start(spark, cfg, "contract-4")
    batch = _batch(spark, [_ev("a"), _ev("b", currency=None)])  # b is quarantined: currency is required

    def crash(*_args, **_kwargs):
        raise RuntimeError("killed after the bronze and quarantine commits")

    first = IngestJob.from_config(cfg, app_id="contract-4", out=None, silver_writer=crash)
    with pytest.raises(RuntimeError):
        first.process_batch(batch, 0)
    relaxed = _with_fields(cfg, lambda fs: [dict(f, required=False) if f["name"] == "currency" else f for f in fs])
    with pytest.raises(ContractChangedError, match="started under another event contract"):
        IngestJob.from_config(relaxed, app_id="contract-4", out=None).process_batch(batch, 0)
    assert spark.read.format("delta").load(job.tables.silver).count() == 0
    # Under its own contract the batch finishes as it began: a in silver, b in quarantine only.
    done = IngestJob.from_config(cfg, app_id="contract-4", out=None).process_batch(batch, 0)
    assert (done.silver_inserted, done.quarantined) == (1, 1)
