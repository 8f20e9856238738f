"""Foundation smoke test: real broker -> Spark's Kafka source -> Delta -> back."""

from __future__ import annotations

import json

import pytest
from confluent_kafka import Producer

from pipelines.local.kafka import ensure_topic

pytestmark = pytest.mark.integration


def test_kafka_to_delta_round_trip(spark, kafka, tmp_path):
    topic = "smoke"
    ensure_topic(kafka.bootstrap_servers, topic, 3)
    producer = Producer({"bootstrap.servers": kafka.bootstrap_servers, "enable.idempotence": True, "acks": "all"})
    sent = {f"id-{i:04d}": {"id": f"id-{i:04d}", "n": i, "tag": "even" if i % 2 == 0 else "odd"}
            for i in range(1000)}
    for key, rec in sent.items():
        producer.produce(topic, key=key.encode(), value=json.dumps(rec).encode())
    assert producer.flush(30) == 0

    df = (spark.read.format("kafka").option("kafka.bootstrap.servers", kafka.bootstrap_servers)
          .option("subscribe", topic).option("startingOffsets", "earliest").option("endingOffsets", "latest")
          .load())
    parsed = df.selectExpr("CAST(key AS STRING) AS key", "partition",
                           "from_json(CAST(value AS STRING), 'id STRING, n INT, tag STRING') AS v") \
        .select("key", "partition", "v.*")
    path = str(tmp_path / "smoke_delta")
    parsed.write.format("delta").save(path)

    back = spark.read.format("delta").load(path)
    rows = back.collect()
    assert len(rows) == 1000
    got = {r.id: {"id": r.id, "n": r.n, "tag": r.tag} for r in rows}
    assert got == sent
    assert all(r.key == r.id for r in rows)
    assert {r.partition for r in rows} == {0, 1, 2}
    assert spark.sql(f"DESCRIBE HISTORY delta.`{path}`").collect()[0]["operation"] == "WRITE"
