"""A checkpoint and the tables belong to one Kafka cluster and one incarnation of each topic.

Before the binding, a topic deleted and recreated (offsets restart at 0) had its new records
silently dropped from bronze (their coordinates collided with old rows), and a job pointed at
another cluster with a topic of the same name continued from the old checkpoint's offsets.
"""

from __future__ import annotations

import time

import pytest
from confluent_kafka.admin import AdminClient, NewTopic

from pipelines.io.binding import SourceMismatchError, rebind
from pipelines.jobs.ingest import run_ingest
from pipelines.local.kafka import LocalKafka, free_port
from pipelines.tools.producer import produce
from pipelines.tools.verify import verify

pytestmark = pytest.mark.integration


def send(cfg, n, seed, servers=None):
    return produce(servers or cfg.kafka.bootstrap_servers, cfg.producer.topic, n, partitions=3, seed=seed,
                   duplicate_fraction=0.0, conflicting_fraction=0.0, cross_partition_fraction=0.0,
                   malformed_fraction=0.0, late_fraction=0.0, id_prefix=f"b{seed}", progress=False)


def recreate_topic(servers: str, topic: str) -> None:
    admin = AdminClient({"bootstrap.servers": servers})
    admin.delete_topics([topic])[topic].result(30)
    deadline = time.monotonic() + 60
    while True:  # deletion completes asynchronously; creating too early fails with TOPIC_ALREADY_EXISTS
        try:
            admin.create_topics([NewTopic(topic, 3, 1)])[topic].result(30)
            return
        except Exception:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


def bronze_count(spark, cfg) -> int:
    return spark.read.format("delta").load(cfg.table_path("bronze")).count()


def test_recreated_topic_is_refused_then_rebound(spark, make_cfg):
    cfg = make_cfg()
    send(cfg, 300, seed=41)
    run_ingest(spark, cfg, available_now=True)
    assert bronze_count(spark, cfg) == 300
    recreate_topic(cfg.kafka.bootstrap_servers, cfg.producer.topic)
    send(cfg, 200, seed=42)  # offsets 0.. again: the same coordinates as old rows

    with pytest.raises(SourceMismatchError) as e:
        run_ingest(spark, cfg, available_now=True)
    assert f"topic '{cfg.producer.topic}'" in str(e.value) and "recreated" in str(e.value)
    assert "python -m pipelines rebind" in str(e.value)
    assert bronze_count(spark, cfg) == 300  # nothing read

    _, moved = rebind(spark, cfg, cfg.table_path("bronze"))
    assert moved and moved.startswith(cfg.checkpoint_path + ".replaced-")
    run_ingest(spark, cfg, available_now=True)
    assert bronze_count(spark, cfg) == 500  # the new incarnation's records, none dropped as "seen"
    report = verify(spark, cfg)
    assert report.ok, report.table()
    assert report.totals["topic_records"] == 200
    assert report.get("info: rows of earlier topic incarnations (not in Kafka now)").count == 600  # 300 x 2 tables
    silver_ids = {r.message_id for r in spark.read.format("delta").load(cfg.table_path("silver")).collect()}
    assert len(silver_ids) == 500


def test_other_cluster_with_the_same_topic_is_refused(spark, make_cfg, tmp_path, base_config):
    cfg = make_cfg()
    send(cfg, 300, seed=43)
    run_ingest(spark, cfg, available_now=True)
    other = LocalKafka(tmp_path / "other-kafka", port=free_port(), controller_port=free_port(),
                       jars_dir=base_config.jars_dir, heap="256m", default_partitions=3)
    other.start()
    try:
        moved_cfg = cfg.with_overrides(kafka={"bootstrap_servers": other.bootstrap_servers})
        send(moved_cfg, 400, seed=44)  # a topic of the same name, with more offsets than the checkpoint's
        with pytest.raises(SourceMismatchError) as e:
            run_ingest(spark, moved_cfg, available_now=True)
        assert "was built from Kafka cluster" in str(e.value) and other.bootstrap_servers in str(e.value)
        assert bronze_count(spark, cfg) == 300

        rebind(spark, moved_cfg, moved_cfg.table_path("bronze"))
        run_ingest(spark, moved_cfg, available_now=True)
        report = verify(spark, moved_cfg)
        assert report.ok, report.table()
        assert bronze_count(spark, cfg) == 700
    finally:
        other.stop()
