"""Spark Kafka source options, from config (pure: no session)."""

from __future__ import annotations

from pipelines.config import Config


def source_options(cfg: Config, *, streaming: bool = True) -> dict[str, str]:
    """Options for ``spark.readStream.format("kafka")`` (or a batch read when ``streaming`` is false).

    A batch read covers every record from earliest to latest (used by ``verify``).
    """
    k = cfg.kafka
    opts = {
        "kafka.bootstrap.servers": k.bootstrap_servers,
        "subscribe": ",".join(k.topics),
        "failOnDataLoss": str(k.fail_on_data_loss).lower(),
        "includeHeaders": "true",
    }
    if streaming:
        opts["startingOffsets"] = k.starting_offsets
        if k.max_offsets_per_trigger:
            opts["maxOffsetsPerTrigger"] = str(k.max_offsets_per_trigger)
    else:
        opts["startingOffsets"] = "earliest"
        opts["endingOffsets"] = "latest"
    opts.update(cfg.kafka_options())
    return opts
