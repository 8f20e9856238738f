"""Reading a streaming checkpoint's folder through Hadoop's FileSystem (local paths and URIs alike)."""

from __future__ import annotations

from typing import Any

from pyspark.sql import SparkSession


def hadoop_path(spark: SparkSession, path: str) -> tuple[Any, Any]:
    """The Hadoop ``FileSystem`` that holds ``path``, and the ``Path`` itself (JVM objects)."""
    jvm = spark.sparkContext._jvm
    assert jvm is not None
    p = jvm.org.apache.hadoop.fs.Path(path)
    return p.getFileSystem(spark.sparkContext._jsc.hadoopConfiguration()), p


def child(checkpoint: str, name: str) -> str:
    """``<checkpoint>/<name>``."""
    return checkpoint.rstrip("/") + "/" + name


def batch_ids(spark: SparkSession, checkpoint: str, sub: str) -> set[int]:
    """The batch ids Spark logged in ``<checkpoint>/<sub>`` (``offsets`` or ``commits``)."""
    fs, p = hadoop_path(spark, child(checkpoint, sub))
    if not fs.exists(p):
        return set()
    return {int(st.getPath().getName()) for st in fs.listStatus(p) if st.getPath().getName().isdigit()}


def pending_batch(spark: SparkSession, checkpoint: str) -> int | None:
    """The id of a batch the checkpoint planned (``offsets/``) but did not commit (``commits/``), if any."""
    planned = batch_ids(spark, checkpoint, "offsets")
    if not planned:
        return None
    last = max(planned)
    return None if last in batch_ids(spark, checkpoint, "commits") else last


def has_metadata(spark: SparkSession, checkpoint: str) -> bool:
    """True once Spark has started a query on this checkpoint (its ``metadata`` file holds the query id)."""
    fs, p = hadoop_path(spark, child(checkpoint, "metadata"))
    return bool(fs.exists(p))


def source_offsets(spark: SparkSession, checkpoint: str, batch_id: int) -> dict[str, Any]:
    """The end offsets Spark logged for ``batch_id``, all sources merged (empty if unreadable).

    ``offsets/<id>`` holds ``v1``, the batch's metadata, then one JSON line per source: Kafka's
    ``{"topic": {"partition": offset}}``, Delta's ``{"reservoirVersion": v, "index": i, ...}``.
    """
    import json

    out: dict[str, Any] = {}
    for line in (read_text(spark, child(checkpoint, f"offsets/{batch_id}")) or "").splitlines()[2:]:
        try:
            value = json.loads(line)
        except ValueError:
            continue
        if isinstance(value, dict):
            out.update(value)
    return out


def read_text(spark: SparkSession, path: str) -> str | None:
    """A small file's text through Hadoop's FileSystem (None if it does not exist)."""
    fs, p = hadoop_path(spark, path)
    if not fs.exists(p):
        return None
    stream = fs.open(p)
    try:
        jvm = spark.sparkContext._jvm
        assert jvm is not None
        return str(jvm.org.apache.commons.io.IOUtils.toString(stream, "UTF-8"))
    finally:
        stream.close()


def write_text(spark: SparkSession, path: str, text: str) -> None:
    """Write a small file through Hadoop's FileSystem (replacing it; parent folders created)."""
    fs, p = hadoop_path(spark, path)
    out = fs.create(p, True)
    try:
        out.write(text.encode())
    finally:
        out.close()
