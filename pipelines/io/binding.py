"""Which Kafka cluster and which topic incarnations a checkpoint and the tables belong to.

A checkpoint's offsets only mean something on the cluster and the topic they were read from.
Pointed at another cluster with a topic of the same name, Spark would silently continue from
those offsets; after a topic is deleted and recreated (offsets restart at 0) it would skip or
misread records. So the job records, when it first runs, the Kafka **cluster id** and each
topic's **topic id** (a UUID Kafka assigns at creation), in the checkpoint
(``<checkpoint>/pipelines-source.json``) and as bronze table properties, and refuses to start
when the broker it reaches now reports other ids. ``python -m pipelines rebind`` accepts the
new source deliberately (see :func:`rebind`).

The ids come from Kafka's Java admin client in the driver JVM, configured with the same
``kafka.*`` options as Spark's source (security settings included).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any

from pyspark.sql import SparkSession

from pipelines import logs
from pipelines.config import Config
from pipelines.domain import schema as S
from pipelines.errors import BrokerError, PipelineError
from pipelines.io.checkpoint import batch_ids, child, hadoop_path, read_text, write_text
from pipelines.io.kafka_source import source_options

_log = logs.get("ingest")

BINDING_FILE = "pipelines-source.json"
PROP_CLUSTER = "pipelines.source.clusterId"
PROP_TOPIC = "pipelines.source.topicId."
REBIND_COMMAND = "python -m pipelines rebind"


class SourceMismatchError(PipelineError):
    """The checkpoint or the tables were built from another Kafka cluster or topic incarnation."""


@dataclass(frozen=True)
class SourceIdentity:
    """A Kafka cluster id and the ids of the topics read from it (topic name -> topic id)."""

    cluster_id: str | None
    topics: dict[str, str] = field(default_factory=dict)

    def as_json(self) -> str:
        """The checkpoint file's content."""
        return json.dumps({"cluster_id": self.cluster_id, "topics": self.topics}, sort_keys=True)


def describe_source(spark: SparkSession, cfg: Config, timeout_s: float = 30.0) -> SourceIdentity:
    """Ask the brokers of ``cfg`` for their cluster id and the configured topics' ids.

    Raises:
        BrokerError: the brokers do not answer, or a configured topic does not exist.

    """
    jvm, admin, unit = _admin(spark, cfg, timeout_s)
    try:
        try:
            cluster = str(admin.describeCluster().clusterId().get(int(timeout_s * 1000), unit))
        except Exception as e:
            raise BrokerError(f"cannot reach Kafka at {cfg.kafka.bootstrap_servers} to read its cluster id: "
                              f"{_first_line(e)}", hint="is the broker up and kafka.bootstrap_servers right?") from e
        names = jvm.java.util.ArrayList()
        for t in cfg.kafka.topics:
            names.add(t)
        try:
            described = admin.describeTopics(names).allTopicNames().get(int(timeout_s * 1000), unit)
        except Exception as e:
            raise BrokerError(f"topic(s) {', '.join(cfg.kafka.topics)} not readable on {cfg.kafka.bootstrap_servers}: "
                              f"{_first_line(e)}",
                              hint="create the topic first (the job binds to the topic it reads)") from e
        topics = {t: str(described.get(t).topicId().toString()) for t in cfg.kafka.topics}
    finally:
        admin.close()
    return SourceIdentity(cluster, topics)


def _admin(spark: SparkSession, cfg: Config, timeout_s: float) -> tuple[Any, Any, Any]:
    """(the JVM, a Kafka ``AdminClient`` with the job's connection options, milliseconds)."""
    jvm = spark.sparkContext._jvm
    assert jvm is not None
    props = jvm.java.util.Properties()
    for key, value in source_options(cfg, streaming=False).items():
        if key.startswith("kafka.") and key != "kafka.isolation.level":
            props.setProperty(key[len("kafka."):], value)
    props.setProperty("request.timeout.ms", str(int(timeout_s * 1000)))
    props.setProperty("default.api.timeout.ms", str(int(timeout_s * 1000)))
    return jvm, jvm.org.apache.kafka.clients.admin.AdminClient.create(props), \
        jvm.java.util.concurrent.TimeUnit.MILLISECONDS


def list_offsets(spark: SparkSession, cfg: Config, at: str | int,
                 timeout_s: float = 30.0) -> dict[str, dict[int, int]]:
    """Per topic of ``cfg`` and partition: the offset ``at`` (earliest, latest, or a time).

    For a timestamp (epoch milliseconds): the first offset whose record timestamp is at or after it
    (the latest offset if there is none), asked with the job's isolation level (read_committed:
    the latest offset is the last stable one, so no open transaction is waited for).

    Raises:
        BrokerError: the brokers do not answer, or a topic does not exist.

    """
    jvm, admin, unit = _admin(spark, cfg, timeout_s)
    ms = int(timeout_s * 1000)
    kafka = jvm.org.apache.kafka
    try:
        names = jvm.java.util.ArrayList()
        for t in cfg.kafka.topics:
            names.add(t)
        try:
            described = admin.describeTopics(names).allTopicNames().get(ms, unit)
        except Exception as e:
            raise BrokerError(f"topic(s) {', '.join(cfg.kafka.topics)} not readable on {cfg.kafka.bootstrap_servers}: "
                              f"{_first_line(e)}", hint="is the broker up and kafka.topics right?") from e
        level = (kafka.common.IsolationLevel.READ_COMMITTED if cfg.kafka.isolation_level == "read_committed"
                 else kafka.common.IsolationLevel.READ_UNCOMMITTED)
        options = kafka.clients.admin.ListOffsetsOptions(level)

        def ask(spec: Any) -> dict[tuple[str, int], int]:
            wanted = jvm.java.util.HashMap()
            parts = []
            for t in cfg.kafka.topics:
                for info in described.get(t).partitions():
                    tp = kafka.common.TopicPartition(t, int(info.partition()))
                    wanted.put(tp, spec)
                    parts.append((t, int(info.partition()), tp))
            try:
                got = admin.listOffsets(wanted, options).all().get(ms, unit)
            except Exception as e:
                raise BrokerError(f"cannot list offsets on {cfg.kafka.bootstrap_servers}: {_first_line(e)}",
                                  hint="is the broker up?") from e
            return {(t, p): int(got.get(tp).offset()) for t, p, tp in parts}

        specs = kafka.clients.admin.OffsetSpec
        latest = ask(specs.latest())
        found = (ask(specs.earliest()) if at == "earliest" else latest if at == "latest"
                 else ask(specs.forTimestamp(int(at))))
        out: dict[str, dict[int, int]] = {}
        for (t, p), offset in found.items():
            out.setdefault(t, {})[p] = latest[(t, p)] if offset < 0 else offset  # -1: no record that late
        return out
    finally:
        admin.close()


def _first_line(e: BaseException) -> str:
    """The innermost Java exception and its message (e.g. ``UnknownTopicOrPartitionException: ...``)."""
    import re

    found = re.findall(r"(\w+(?:Exception|Error)): ([^\n]*)", str(e))
    return (f"{found[-1][0]}: {found[-1][1]}" if found else str(e).strip().split("\n")[0])[:300]


# ---- where the binding is kept ----------------------------------------------------------------


def read_checkpoint_binding(spark: SparkSession, checkpoint: str) -> SourceIdentity | None:
    """The identity recorded in the checkpoint, or None (new checkpoint, or one from before binding)."""
    text = read_text(spark, child(checkpoint, BINDING_FILE))
    if text is None:
        return None
    data = json.loads(text)
    return SourceIdentity(data.get("cluster_id"), dict(data.get("topics", {})))


def write_checkpoint_binding(spark: SparkSession, checkpoint: str, identity: SourceIdentity) -> None:
    """Record ``identity`` in the checkpoint folder (created if absent)."""
    write_text(spark, child(checkpoint, BINDING_FILE), identity.as_json())


def read_table_binding(spark: SparkSession, path: str) -> SourceIdentity:
    """The identity recorded as properties of the (bronze) table at ``path`` (empty if none)."""
    from delta.tables import DeltaTable

    if not DeltaTable.isDeltaTable(spark, path):
        return SourceIdentity(None)
    jvm = spark.sparkContext._jvm
    assert jvm is not None
    log = jvm.org.apache.spark.sql.delta.DeltaLog.forTable(spark._jsparkSession, path)
    conf = log.update(False, jvm.scala.Option.empty(), jvm.scala.Option.empty()).metadata().configuration()
    props: dict[str, str] = {}
    it = conf.iterator()
    while it.hasNext():
        kv = it.next()
        props[str(kv._1())] = str(kv._2())
    topics = {k[len(PROP_TOPIC):]: v for k, v in props.items() if k.startswith(PROP_TOPIC)}
    return SourceIdentity(props.get(PROP_CLUSTER), topics)


def _set_table_binding(spark: SparkSession, path: str, identity: SourceIdentity) -> None:
    props = {PROP_CLUSTER: identity.cluster_id or "", **{PROP_TOPIC + t: i for t, i in identity.topics.items()}}
    assignments = ", ".join(f"'{k}' = '{v}'" for k, v in sorted(props.items()))
    spark.sql(f"ALTER TABLE delta.`{path}` SET TBLPROPERTIES ({assignments})").collect()


def _fill_topic_ids(spark: SparkSession, paths: list[str], topics: dict[str, str]) -> None:
    """Rows written before topic ids existed carry NULL: they came from the topic bound now."""
    from pipelines.io.writers import table_version

    for path in paths:
        if table_version(spark, path) == 0:  # just created: no rows yet
            continue
        for topic, topic_id in topics.items():
            spark.sql(f"UPDATE delta.`{path}` SET {S.KAFKA_TOPIC_ID} = '{topic_id}' "
                      f"WHERE {S.KAFKA_TOPIC} = '{topic}' AND {S.KAFKA_TOPIC_ID} IS NULL").collect()


# ---- the check at start, and the deliberate rebind ---------------------------------------------


def _differences(label: str, recorded: SourceIdentity, now: SourceIdentity) -> list[str]:
    out = []
    if recorded.cluster_id and now.cluster_id and recorded.cluster_id != now.cluster_id:
        out.append(f"{label} was built from Kafka cluster {recorded.cluster_id}; the brokers reached now are "
                   f"cluster {now.cluster_id}")
    for topic, topic_id in now.topics.items():
        old = recorded.topics.get(topic)
        if old and old != topic_id:
            out.append(f"{label} was built from topic '{topic}' with id {old}; '{topic}' now has id {topic_id} "
                       "(deleted and recreated, or another cluster's topic of the same name)")
    return out


def check_source(spark: SparkSession, cfg: Config, tables_bronze: str) -> SourceIdentity:
    """Check the checkpoint and the tables against the Kafka source the brokers report now.

    Writes nothing (call :func:`record_source` once the tables exist).

    Returns:
        The source's identity (topic ids for the rows the job writes).

    Raises:
        SourceMismatchError: the checkpoint or the tables belong to another cluster or topic.
        BrokerError: the brokers do not answer, or a topic does not exist.

    """
    now = describe_source(spark, cfg)
    checkpoint = cfg.checkpoint_path
    in_ckpt = read_checkpoint_binding(spark, checkpoint)
    in_tables = read_table_binding(spark, tables_bronze)
    problems = _differences(f"the checkpoint {checkpoint}", in_ckpt or SourceIdentity(None), now)
    problems += _differences(f"the tables ({tables_bronze} ...)", in_tables, now)
    if problems:
        raise SourceMismatchError(
            "refusing to start: " + "; ".join(problems) + f" (kafka.bootstrap_servers: {cfg.kafka.bootstrap_servers}). "
            "Continuing would read the checkpoint's offsets on a source they do not belong to.",
            hint=f"if kafka.bootstrap_servers or kafka.topics is wrong, fix it. If the new source is intended, run "
                 f"`{REBIND_COMMAND}` (same --conf): it moves the checkpoint aside (the job then starts from "
                 "kafka.starting_offsets under a new app id) and records the new ids in the tables; rows "
                 "already written keep their old topic id, so nothing collides.",
        )
    return now


def record_source(spark: SparkSession, cfg: Config, now: SourceIdentity, tables_bronze: str,
                  table_paths: list[str]) -> None:
    """Record ``now`` (from :func:`check_source`) in the checkpoint and the tables where missing.

    Args:
        spark: The session.
        cfg: The configuration (the checkpoint).
        now: The identity :func:`check_source` accepted.
        tables_bronze: The bronze table, whose properties hold the tables' binding.
        table_paths: Every table with Kafka coordinates (bronze, quarantine, silver): rows written
            before topic ids existed get the id of the topic bound now.

    """
    checkpoint = cfg.checkpoint_path
    in_ckpt = read_checkpoint_binding(spark, checkpoint)
    in_tables = read_table_binding(spark, tables_bronze)
    if in_ckpt is None or any(t not in in_ckpt.topics for t in now.topics):
        if in_ckpt is None and batch_ids(spark, checkpoint, "offsets"):
            _log.warning(f"[ingest] note: the checkpoint {checkpoint} predates source binding; binding it to "
                         f"cluster {now.cluster_id} now")
        write_checkpoint_binding(spark, checkpoint, SourceIdentity(now.cluster_id, {
            **(in_ckpt.topics if in_ckpt else {}), **now.topics}))
    new_topics = {t: i for t, i in now.topics.items() if t not in in_tables.topics}
    if new_topics or not in_tables.cluster_id:
        _fill_topic_ids(spark, table_paths, new_topics)
        _set_table_binding(spark, tables_bronze, SourceIdentity(now.cluster_id, {**in_tables.topics, **now.topics}))


def rebind(spark: SparkSession, cfg: Config, tables_bronze: str) -> tuple[SourceIdentity, str | None]:
    """Accept the current Kafka source deliberately.

    Moves the checkpoint aside to ``<checkpoint>.replaced-<UTC time>`` (its offsets belong to
    the old source; the next start reads from ``kafka.starting_offsets`` under a new query id,
    hence a new transaction app id) and records the current ids in the tables' properties. Rows
    already in the tables keep their old topic id: the coordinates of the new source's records
    cannot collide with them, and silver's ``message_id`` key still deduplicates across both.

    Returns:
        The new identity and where the old checkpoint went (None if there was none).

    """
    now = describe_source(spark, cfg)
    checkpoint = cfg.checkpoint_path.rstrip("/")
    fs, p = hadoop_path(spark, checkpoint)
    moved = None
    if fs.exists(p):
        moved = f"{checkpoint}.replaced-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}"
        jvm = spark.sparkContext._jvm
        assert jvm is not None
        if not fs.rename(p, jvm.org.apache.hadoop.fs.Path(moved)):
            raise PipelineError(f"could not move the checkpoint {checkpoint} to {moved}")
    write_checkpoint_binding(spark, checkpoint, now)
    from delta.tables import DeltaTable

    if DeltaTable.isDeltaTable(spark, tables_bronze):
        _set_table_binding(spark, tables_bronze, now)
    return now, moved
