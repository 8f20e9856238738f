"""Spark Kafka source options, from config (pure: no session)."""

from __future__ import annotations

from pipelines.config import Config
from pipelines.errors import ConfigError

# Source options the exactly-once argument relies on: each is set from its own typed config key,
# and ``kafka.options`` may not override it (option names are case-insensitive in Spark).
MANAGED_OPTIONS: dict[str, str] = {
    "kafka.bootstrap.servers": "kafka.bootstrap_servers",
    "subscribe": "kafka.topics",
    "subscribepattern": "kafka.topics",
    "assign": "kafka.topics",
    "failondataloss": "kafka.fail_on_data_loss",
    "kafka.isolation.level": "kafka.isolation_level",
    "includeheaders": "(always true: headers go to bronze)",
    "startingoffsets": "kafka.starting_offsets",
    "startingoffsetsbytimestamp": "kafka.starting_offsets",
    "startingtimestamp": "kafka.starting_offsets",
    "startingoffsetsbytimestampstrategy": "kafka.starting_offsets",
    "endingoffsets": "(set per read: verify reads to the latest offsets)",
    "endingoffsetsbytimestamp": "(set per read)",
    "endingtimestamp": "(set per read)",
    "maxoffsetspertrigger": "kafka.max_offsets_per_trigger",
}


def check_options(cfg: Config) -> None:
    """Refuse ``kafka.options`` entries that would override an option the job manages.

    Raises:
        ConfigError: naming the option, the file(s) it came from and the key to use instead.

    """
    for key in cfg.kafka.options:
        instead = MANAGED_OPTIONS.get(key.strip().lower())
        if instead is not None:
            where = ", ".join(cfg.sources) or "the config"
            raise ConfigError(
                f"{where}: kafka.options.{key} would override an option the exactly-once job relies on",
                hint=f"remove it from kafka.options; use {instead} instead" if not instead.startswith("(")
                else f"remove it from kafka.options {instead}",
            )


def source_options(cfg: Config, *, streaming: bool = True) -> dict[str, str]:
    """Options for ``spark.readStream.format("kafka")`` (or a batch read when ``streaming`` is false).

    A batch read covers every record from earliest to latest (used by ``verify``). Both read
    with ``kafka.isolation_level`` (default ``read_committed``: records of aborted producer
    transactions are never seen; the offsets their markers take leave gaps, which Spark's
    source skips without reporting data loss).

    Raises:
        ConfigError: ``kafka.options`` tries to override a managed option (see :data:`MANAGED_OPTIONS`).

    """
    check_options(cfg)
    k = cfg.kafka
    opts = dict(cfg.kafka_options())
    opts.update({
        "kafka.bootstrap.servers": k.bootstrap_servers,
        "subscribe": ",".join(k.topics),
        "failOnDataLoss": str(k.fail_on_data_loss).lower(),
        "kafka.isolation.level": k.isolation_level,
        "includeHeaders": "true",
    })
    if streaming:
        opts["startingOffsets"] = k.starting_offsets
        if k.max_offsets_per_trigger:
            opts["maxOffsetsPerTrigger"] = str(k.max_offsets_per_trigger)
    else:
        opts["startingOffsets"] = "earliest"
        opts["endingOffsets"] = "latest"
    return opts
