"""Transactional producers: records of aborted transactions never land, committed ones land once.

Before ``read_committed`` became the default, Spark's Kafka source read aborted records like any
other: they reached bronze and silver, and ``verify`` (reading the same way) did not notice.
"""

from __future__ import annotations

import json

import pytest
from confluent_kafka import Producer

from pipelines.jobs.ingest import run_ingest
from pipelines.local.kafka import ensure_topic
from pipelines.tools.verify import read_topic, verify

pytestmark = pytest.mark.integration


def _event(mid: str) -> bytes:
    return json.dumps({"message_id": mid, "event_type": "order_created", "order_id": "o-1", "customer_id": "c-1",
                       "amount": "10.00", "currency": "EUR", "event_time": "2026-11-26T10:00:00Z"}).encode()


def test_only_committed_transactions_land(spark, make_cfg):
    cfg = make_cfg(kafka={"max_offsets_per_trigger": 70})  # small batches: boundaries fall on markers too
    topic, servers = cfg.producer.topic, cfg.kafka.bootstrap_servers
    ensure_topic(servers, topic, 3)
    tx = Producer({"bootstrap.servers": servers, "transactional.id": f"tx-{topic}", "enable.idempotence": True,
                   "linger.ms": 5})
    plain = Producer({"bootstrap.servers": servers, "enable.idempotence": True, "acks": "all"})
    tx.init_transactions(60)
    committed, aborted, plain_ids = set(), set(), set()
    for rnd in range(6):
        tx.begin_transaction()
        ids = {f"tx{rnd}-{i}" for i in range(40)}
        for i, mid in enumerate(sorted(ids)):
            tx.produce(topic, value=_event(mid), partition=i % 3)
            if i % 10 == 0:  # plain records interleaved with the open transaction
                pid = f"plain{rnd}-{i}"
                plain.produce(topic, value=_event(pid), partition=i % 3)
                plain_ids.add(pid)
        plain.flush(30)
        tx.flush(30)  # records delivered before ending (librdkafka#4849: an early abort can fail)
        if rnd % 2:
            tx.abort_transaction(60)
            aborted |= ids
        else:
            tx.commit_transaction(60)
            committed |= ids
    # A last aborted transaction: the topic ends on an abort marker.
    tx.begin_transaction()
    tx.produce(topic, value=_event("tail-aborted"), partition=0)
    tx.flush(30)
    tx.abort_transaction(60)
    aborted.add("tail-aborted")

    # The test can fail: read_uncommitted does see the aborted records.
    uncommitted = cfg.with_overrides(kafka={"isolation_level": "read_uncommitted"})
    assert read_topic(spark, uncommitted).count() == len(committed) + len(aborted) + len(plain_ids)

    summary = run_ingest(spark, cfg, available_now=True)
    assert summary.batches >= 3
    silver = {r.message_id for r in spark.read.format("delta").load(cfg.table_path("silver")).collect()}
    assert silver == committed | plain_ids
    assert not silver & aborted
    bronze = spark.read.format("delta").load(cfg.table_path("bronze")).count()
    assert bronze == len(committed) + len(plain_ids)
    report = verify(spark, cfg)
    assert report.ok, report.table()
    assert report.totals["topic_records"] == len(committed) + len(plain_ids)
