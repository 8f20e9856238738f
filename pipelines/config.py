"""Typed configuration: ``conf/base.yaml`` + an environment file + environment variables.

Loading order (later wins):

1. ``base.yaml`` in the same folder as the environment file (skipped if absent);
2. the environment file itself (e.g. ``conf/local.yaml``);
3. environment variables ``PIPELINES__<SECTION>__<KEY>=<yaml value>``, for example
   ``PIPELINES__KAFKA__BOOTSTRAP_SERVERS=broker:9092`` or ``PIPELINES__KAFKA__MAX_OFFSETS_PER_TRIGGER=5000``.

Unknown keys and wrongly typed values are errors that name the key and the file (or the
environment variable) they came from. Relative paths are resolved against ``app.root``,
which defaults to the parent of the folder holding the config files (the project root when
they live in ``conf/``). Secrets never live in files: a value ``${env:NAME}`` in
``kafka.options`` is read from the environment variable ``NAME`` when the job starts.

Example:
    >>> cfg = load_config("conf/local.yaml")  # doctest: +SKIP
    >>> cfg.kafka.bootstrap_servers  # doctest: +SKIP
    '127.0.0.1:9092'

"""

from __future__ import annotations

import dataclasses
import os
import re
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from pipelines import paths
from pipelines.errors import ConfigError

ENV_PREFIX = "PIPELINES__"
_ENV_REF = re.compile(r"\$\{env:([A-Za-z_][A-Za-z0-9_]*)\}")


@dataclass(frozen=True)
class AppConfig:
    """Where things live on disk."""

    #: Project root that relative paths are resolved against (default: parent of the conf folder).
    root: str = ""
    #: Delta tables, checkpoints and producer ledgers go below this folder.
    data_dir: str = ".local/data"
    #: Jars resolved from Maven Central by ``make setup``.
    jars_dir: str = ".local/jars"


@dataclass(frozen=True)
class SparkConfig:
    """How the SparkSession is built (see :mod:`pipelines.session`)."""

    master: str = "local[*]"
    app_name: str = "lakehouse"
    #: A Spark properties file (``key value`` per line) applied before ``conf``.
    defaults_file: str = "conf/spark-defaults.conf"
    #: log4j2 configuration for the driver JVM.
    log4j_file: str = "conf/log4j2.properties"
    #: Use the jars provisioned under ``app.jars_dir`` (false on a cluster that uses --packages).
    use_local_jars: bool = True
    #: Any Spark property; wins over ``defaults_file``.
    conf: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class KafkaConfig:
    """The Kafka source of the ingest job (Spark's Kafka connector options)."""

    bootstrap_servers: str = "127.0.0.1:9092"
    topics: tuple[str, ...] = ("events",)
    #: Only used by a new checkpoint: "earliest", "latest" or Spark's per-partition JSON.
    starting_offsets: str = "earliest"
    #: Upper bound of records per micro-batch (null: no bound).
    max_offsets_per_trigger: int | None = 100_000
    #: Keep true: expired offsets then fail the query loudly instead of skipping data silently.
    fail_on_data_loss: bool = True
    #: Consumer isolation of the stream, batch reads and ``verify``. ``read_committed`` (the
    #: default) never shows records of aborted or still-open producer transactions;
    #: ``read_uncommitted`` shows them, and an aborted transaction's records then land in the tables.
    isolation_level: Literal["read_committed", "read_uncommitted"] = "read_committed"
    #: Extra source options passed through as-is, e.g. ``kafka.security.protocol: SASL_SSL``,
    #: ``kafka.sasl.jaas.config: ${env:KAFKA_JAAS}`` (values with ``${env:NAME}`` come from the environment).
    options: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class LocalKafkaConfig:
    """The embedded single-node KRaft broker used for local runs and tests (127.0.0.1 only)."""

    port: int = 9092
    controller_port: int = 9093
    #: Broker data, its log and pid file live here.
    home: str = ".local/kafka"
    heap: str = "512m"
    start_timeout_s: float = 90.0
    #: Partitions of topics the tools create.
    default_partitions: int = 3


FieldType = str  # "string" | "long" | "double" | "boolean" | "timestamp" | "decimal(p,s)"


@dataclass(frozen=True)
class FieldSpec:
    """One field of the JSON event contract."""

    name: str
    type: FieldType = "string"
    required: bool = True
    #: If set, the value must be one of these (strings only).
    allowed: tuple[str, ...] | None = None


@dataclass(frozen=True)
class EventsConfig:
    """The event contract: where the message ID comes from and which fields are typed."""

    #: "field" (a JSON field of the value), "key" (the Kafka record key) or "header".
    id_source: Literal["field", "key", "header"] = "field"
    #: The JSON field or header name that holds the message ID.
    id_name: str = "message_id"
    #: The field that holds the event time (must be a timestamp field).
    event_time_field: str = "event_time"
    fields: tuple[FieldSpec, ...] = ()
    #: Longest message ID accepted (characters, after trimming); longer IDs go to quarantine (ID_TOO_LONG).
    id_max_length: int = 256
    #: Leading/trailing whitespace around a message ID: "reject" (quarantine, ID_WHITESPACE) or
    #: "trim" (the ID is the trimmed text, so " a" and "a" are the same message).
    id_whitespace: Literal["reject", "trim"] = "reject"


@dataclass(frozen=True)
class TablesConfig:
    """Delta table locations, relative to ``<data_dir>/tables`` unless absolute or a URI."""

    bronze: str = "bronze"
    silver: str = "silver"
    quarantine: str = "quarantine"
    audit: str = "audit"
    #: Per-batch data-quality results: one row per batch, suite and expectation.
    quality: str = "quality"
    #: The backfill ledger: one row per backfill run and chunk.
    backfills: str = "backfills"


@dataclass(frozen=True)
class IngestConfig:
    """The streaming ingest job."""

    #: Also the stem of the Delta transaction app id; change it only with a new checkpoint.
    query_name: str = "ingest"
    #: Relative to ``<data_dir>/checkpoints`` unless absolute or a URI.
    checkpoint: str = "ingest"
    trigger: Literal["processingTime", "availableNow"] = "processingTime"
    trigger_interval: str = "5 seconds"
    #: Print one progress line per micro-batch.
    progress: bool = True
    #: Which silver rows the insert-if-absent MERGE compares a batch against. "table": every
    #: row (exact, unconditionally; cost grows with the table). "event_date": only rows dated
    #: within ``silver_merge_slack_days`` of one of the batch's event dates (cost follows the
    #: batch's dates; exact when every copy of a message is dated within that many days of its
    #: first copy; see README, Guarantees).
    silver_merge_scope: Literal["table", "event_date"] = "table"
    silver_merge_slack_days: int = 1


@dataclass(frozen=True)
class QualityConfig:
    """Data-quality contracts (Great Expectations suites) checked on every batch."""

    #: One suite per table, ``<table>.yaml``; ``silver.yaml`` is checked on every ingest batch.
    #: A missing folder or file means no expectations for that table.
    expectations_dir: str = "conf/expectations"
    #: The Great Expectations project (stores and Data Docs), below ``app.data_dir`` unless absolute.
    gx_dir: str = "gx"


@dataclass(frozen=True)
class GoldAggregate:
    """One column of a gold table: an aggregate over silver rows, or an expression over earlier ones."""

    name: str
    #: sum | count | min | max over silver rows (``where`` selects them), or expr (``expr`` over
    #: the table's other aggregates and the exprs declared before it, e.g. ``captured - refunded``).
    fn: Literal["sum", "count", "min", "max", "expr"]
    #: The silver column (sum, min, max; count counts rows).
    column: str = ""
    #: A Spark SQL condition on silver columns: only these rows count (default: all).
    where: str = ""
    #: Spark SQL over this table's aggregates (fn: expr).
    expr: str = ""
    #: Result type, e.g. decimal(22,2) or long (default: sum decimal(38,s), count long, min/max the
    #: column's type). Never float or double: gold must add up exactly.
    type: str = ""


@dataclass(frozen=True)
class GoldWindow:
    """A tumbling event-time window: rows are grouped by the window their ``column`` falls in."""

    column: str
    #: A Spark interval, e.g. "1 minute", "1 hour", "1 day".
    size: str


@dataclass(frozen=True)
class GoldTable:
    """One gold table: silver rows grouped by ``group_by`` (and an event-time window), aggregated."""

    name: str
    group_by: tuple[str, ...] = ()
    window: GoldWindow | None = None
    aggregates: tuple[GoldAggregate, ...] = ()
    #: Relative to ``<data_dir>/tables`` unless absolute or a URI (default: gold/<name>).
    path: str = ""


@dataclass(frozen=True)
class GoldConfig:
    """The gold job: aggregates kept equal to a recomputation from silver (silver's change feed)."""

    #: Name of the streaming query; its checkpoint is ``checkpoint``.
    query_name: str = "gold"
    #: Relative to ``<data_dir>/checkpoints`` unless absolute or a URI.
    checkpoint: str = "gold"
    trigger: Literal["processingTime", "availableNow"] = "processingTime"
    trigger_interval: str = "5 seconds"
    #: Silver files per gold batch (Delta's ``maxFilesPerTrigger``; bounds the first batch of a new
    #: checkpoint, which reads all of silver).
    max_files_per_trigger: int = 1000
    progress: bool = True
    tables: tuple[GoldTable, ...] = ()


@dataclass(frozen=True)
class BackfillConfig:
    """Bounded batch backfills through the stream's batch path (``backfill``)."""

    #: Records per chunk: one transaction per table per chunk, the unit a killed run redoes.
    chunk_records: int = 100_000
    #: File backfills: whole files per chunk, about this many MiB of them (a larger file alone).
    file_chunk_mb: int = 128
    #: At most this many records per second, on average over the chunks (a pause after each chunk);
    #: leaves the live stream its share of a shared machine. None: as fast as it goes.
    max_records_per_second: float | None = None
    #: Print a progress bar (rows, rate, ETA).
    progress: bool = True


@dataclass(frozen=True)
class ProducerConfig:
    """Defaults of ``produce``, the seeded demo/load generator."""

    topic: str = "events"
    events: int = 100_000
    #: Target events per second (0: as fast as possible).
    rate: float = 0.0
    partitions: int = 3
    duplicate_fraction: float = 0.05
    #: Share of duplicates re-sent with a different payload (same message_id).
    conflicting_fraction: float = 0.1
    #: Share of duplicates re-sent to another partition.
    cross_partition_fraction: float = 0.3
    malformed_fraction: float = 0.01
    late_fraction: float = 0.02
    seed: int = 42


@dataclass(frozen=True)
class Config:
    """The whole, validated configuration. Load it with :func:`load_config`."""

    app: AppConfig = field(default_factory=AppConfig)
    spark: SparkConfig = field(default_factory=SparkConfig)
    kafka: KafkaConfig = field(default_factory=KafkaConfig)
    local_kafka: LocalKafkaConfig = field(default_factory=LocalKafkaConfig)
    events: EventsConfig = field(default_factory=EventsConfig)
    tables: TablesConfig = field(default_factory=TablesConfig)
    ingest: IngestConfig = field(default_factory=IngestConfig)
    quality: QualityConfig = field(default_factory=QualityConfig)
    gold: GoldConfig = field(default_factory=GoldConfig)
    backfill: BackfillConfig = field(default_factory=BackfillConfig)
    producer: ProducerConfig = field(default_factory=ProducerConfig)
    #: The files this config was read from, for messages.
    sources: tuple[str, ...] = ()

    # ---- resolved locations -------------------------------------------------------------
    def path(self, value: str) -> str:
        """Resolve a configured path against ``app.root``; URIs (``s3a://``…) pass unchanged."""
        if "://" in value or value.startswith("/"):
            return value
        return str(Path(self.app.root) / value)

    @property
    def data_dir(self) -> str:
        """Absolute data folder."""
        return self.path(self.app.data_dir)

    @property
    def jars_dir(self) -> Path:
        """Absolute folder of provisioned jars."""
        return Path(self.path(self.app.jars_dir))

    def under_data_dir(self, *parts: str) -> str:
        """``<data_dir>/<parts...>``, for local folders and URIs (``s3a://bucket/x``) alike."""
        last = parts[-1]
        if "://" in last or last.startswith("/"):
            return last
        return "/".join([self.data_dir.rstrip("/"), *parts])

    def table_path(self, name: str) -> str:
        """Location of the Delta table ``name`` (one of bronze, silver, quarantine, audit, quality)."""
        return self.under_data_dir(paths.TABLES_SUBDIR, str(getattr(self.tables, name)))

    @property
    def expectations_dir(self) -> Path:
        """The folder of the expectation suites."""
        return Path(self.path(self.quality.expectations_dir))

    @property
    def gx_dir(self) -> str:
        """The Great Expectations project folder."""
        return self.under_data_dir(self.quality.gx_dir)

    @property
    def checkpoint_path(self) -> str:
        """The ingest query's checkpoint location."""
        return self.under_data_dir(paths.CHECKPOINTS_SUBDIR, self.ingest.checkpoint)

    @property
    def gold_checkpoint_path(self) -> str:
        """The gold query's checkpoint location."""
        return self.under_data_dir(paths.CHECKPOINTS_SUBDIR, self.gold.checkpoint)

    def gold_table_path(self, table: GoldTable) -> str:
        """Location of a gold table."""
        return self.under_data_dir(paths.TABLES_SUBDIR, table.path or f"gold/{table.name}")

    def kafka_options(self, environ: Mapping[str, str] | None = None) -> dict[str, str]:
        """``kafka.options`` with ``${env:NAME}`` references replaced from the environment."""
        env = os.environ if environ is None else environ
        out: dict[str, str] = {}
        for key, value in self.kafka.options.items():

            def repl(m: re.Match[str], key: str = key) -> str:
                name = m.group(1)
                if name not in env:
                    raise ConfigError(
                        f"kafka.options.{key} refers to environment variable {name}, which is not set",
                        hint=f"export {name}=... before starting the job",
                    )
                return env[name]

            out[key] = _ENV_REF.sub(repl, str(value))
        return out

    def with_overrides(self, **sections: Mapping[str, Any]) -> Config:
        """A copy with some keys replaced, e.g. ``cfg.with_overrides(kafka={"topics": ["t"]})``."""
        raw = _to_raw(self)
        origins: dict[tuple[str, ...], str] = {}
        for name, values in sections.items():
            _merge(raw, {name: dict(values)}, origins, "override", ())
        return _build(Config, raw, origins, ())


def _to_raw(obj: Any) -> Any:
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: _to_raw(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, tuple | list):
        return [_to_raw(v) for v in obj]
    if isinstance(obj, dict):
        return {k: _to_raw(v) for k, v in obj.items()}
    return obj


# ---- loading ------------------------------------------------------------------------------


def read_yaml_mapping(path: Path, expected: str) -> dict[str, Any]:
    """The YAML file at ``path``, whose top level must be a mapping (an empty file is ``{}``).

    Raises:
        ConfigError: invalid YAML or another top level; the message names the file.

    """
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: invalid YAML: {e}") from e
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be {expected}, got {type(data).__name__}")
    return data


def load_config(
    env_file: str | Path | None = None,
    *,
    environ: Mapping[str, str] | None = None,
    root: str | Path | None = None,
) -> Config:
    """Load and validate the configuration.

    Args:
        env_file: The environment file, e.g. ``conf/local.yaml``. ``base.yaml`` next to it is
            read first. ``None`` reads only the repository's ``conf/base.yaml`` (if any).
        environ: Environment for ``PIPELINES__`` overrides (default: ``os.environ``).
        root: Override ``app.root`` (the folder relative paths are resolved against).

    Returns:
        A frozen :class:`Config`.

    Raises:
        ConfigError: On a missing file, invalid YAML, an unknown key or a wrongly typed value;
            the message names the key and where it came from.

    """
    env = os.environ if environ is None else environ
    files: list[Path] = []
    if env_file is None:
        base = paths.REPO_ROOT / "conf" / "base.yaml"
        if base.exists():
            files.append(base)
        conf_dir = base.parent
    else:
        env_path = Path(env_file).resolve()
        if not env_path.exists():
            raise ConfigError(f"config file {env_file} does not exist", hint="pass --conf conf/local.yaml")
        conf_dir = env_path.parent
        base = conf_dir / "base.yaml"
        if base.exists() and base != env_path:
            files.append(base)
        files.append(env_path)

    raw: dict[str, Any] = {}
    origins: dict[tuple[str, ...], str] = {}
    for f in files:
        _merge(raw, read_yaml_mapping(f, "a mapping of sections"), origins, str(f), ())

    for key, value in env.items():
        if not key.startswith(ENV_PREFIX):
            continue
        parts = tuple(p.lower() for p in key[len(ENV_PREFIX) :].split("__"))
        if len(parts) < 2 or not all(parts):
            raise ConfigError(
                f"environment variable {key}: expected {ENV_PREFIX}<SECTION>__<KEY>",
                hint=f"for example {ENV_PREFIX}KAFKA__BOOTSTRAP_SERVERS=host:9092",
            )
        try:
            value_parsed = yaml.safe_load(value) if value != "" else ""
        except yaml.YAMLError:
            value_parsed = value
        nested: Any = value_parsed
        for p in reversed(parts):
            nested = {p: nested}
        _merge(raw, nested, origins, f"environment variable {key}", ())

    app = raw.setdefault("app", {})
    if root is not None:
        app["root"] = str(root)
    elif not app.get("root"):
        app["root"] = str(conf_dir.parent)
    else:
        app["root"] = str((conf_dir / str(app["root"])).resolve())
    raw["sources"] = [str(f) for f in files]
    return _build(Config, raw, origins, ())


def _merge(
    dst: dict[str, Any], src: Mapping[str, Any], origins: dict[tuple[str, ...], str], origin: str, prefix: tuple
) -> None:
    for key, value in src.items():
        key = str(key)
        path = (*prefix, key)
        if isinstance(value, Mapping) and isinstance(dst.get(key), dict):
            _merge(dst[key], value, origins, origin, path)
        else:
            dst[key] = dict(value) if isinstance(value, Mapping) else value
            origins[path] = origin
            if isinstance(value, Mapping):
                for sub in value:
                    origins[(*path, str(sub))] = origin


def _where(origins: Mapping[tuple[str, ...], str], path: tuple[str, ...]) -> str:
    for n in range(len(path), 0, -1):
        if path[:n] in origins:
            return origins[path[:n]]
    return "defaults"


def _build(cls: type, raw: Any, origins: Mapping[tuple[str, ...], str], path: tuple[str, ...]) -> Any:
    dotted = ".".join(path) or "<top level>"
    if not isinstance(raw, Mapping):
        raise ConfigError(
            f"{_where(origins, path)}: {dotted} must be a mapping, got {type(raw).__name__} {raw!r}"
        )
    hints = typing.get_type_hints(cls)
    known = {f.name: f for f in dataclasses.fields(cls)}
    kwargs: dict[str, Any] = {}
    for key, value in raw.items():
        if key not in known:
            sub = (*path, key)
            raise ConfigError(
                f"{_where(origins, sub)}: unknown key '{'.'.join(sub)}'",
                hint=f"known keys in {dotted}: {', '.join(sorted(known))}",
            )
        kwargs[key] = _coerce(hints[key], value, origins, (*path, key))
    try:
        return cls(**kwargs)
    except TypeError as e:  # a required field without a default is missing
        raise ConfigError(f"{_where(origins, path)}: {dotted}: {e}") from e


def _coerce(tp: Any, value: Any, origins: Mapping[tuple[str, ...], str], path: tuple[str, ...]) -> Any:
    dotted = ".".join(path)

    def bad(expected: str) -> ConfigError:
        return ConfigError(f"{_where(origins, path)}: {dotted} must be {expected}, got {value!r}")

    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        non_none = [a for a in args if a is not type(None)]
        return _coerce(non_none[0], value, origins, path)
    if origin is Literal:
        if value not in args:
            raise bad("one of " + ", ".join(repr(a) for a in args))
        return value
    if dataclasses.is_dataclass(tp):
        return _build(typing.cast(type, tp), value, origins, path)
    if origin is tuple:
        if isinstance(value, str) and args[0] is str:
            value = [value]
        if not isinstance(value, list | tuple):
            raise bad("a list")
        return tuple(_coerce(args[0], v, origins, (*path, str(i))) for i, v in enumerate(value))
    if origin is dict:
        if not isinstance(value, Mapping):
            raise bad("a mapping")
        out = {}
        for k, v in value.items():
            if isinstance(v, Mapping | list):
                raise ConfigError(f"{_where(origins, (*path, str(k)))}: {dotted}.{k} must be a scalar")
            out[str(k)] = str(v).lower() if isinstance(v, bool) else str(v)
        return out
    if tp is bool:
        if not isinstance(value, bool):
            raise bad("true or false")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise bad("an integer")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise bad("a number")
        return float(value)
    if tp is str:
        if isinstance(value, Mapping | list) or value is None:
            raise bad("a string")
        return str(value)
    raise bad(str(tp))  # pragma: no cover - a programming error in the dataclasses above
