"""Typed configuration: ``conf/base.yaml`` + an environment file + environment variables.

Loading order (later wins):

1. ``base.yaml`` in the same folder as the environment file (skipped if absent);
2. the environment file itself (e.g. ``conf/local.yaml``);
3. environment variables ``PIPELINES__<SECTION>__<KEY>=<yaml value>``, for example
   ``PIPELINES__KAFKA__BOOTSTRAP_SERVERS=broker:9092`` or ``PIPELINES__KAFKA__MAX_OFFSETS_PER_TRIGGER=5000``.

Each section is a pydantic dataclass: unknown keys and wrongly typed values are errors that
name the key and the file (or the environment variable) they came from (pydantic's first error,
rephrased with the key's origin). Relative paths are resolved against ``app.root``,
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
from dataclasses import field
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BeforeValidator, ConfigDict, Strict, TypeAdapter, ValidationError
from pydantic.dataclasses import dataclass
from pydantic_core import PydanticCustomError

from pipelines import paths
from pipelines.errors import ConfigError

ENV_PREFIX = "PIPELINES__"
_ENV_REF = re.compile(r"\$\{env:([A-Za-z_][A-Za-z0-9_]*)\}")

# ---- validation types (pydantic) ----------------------------------------------------------
#: Every section: unknown keys are errors; numbers where text is expected become text.
_SECTION = ConfigDict(extra="forbid", coerce_numbers_to_str=True)


def _one_or_many(value: Any) -> Any:
    """A list of strings may be written as one string: ``topics: events``."""
    return [value] if isinstance(value, str) else value


def _scalars(value: Any) -> Any:
    """Spark and Kafka properties: scalar values as text (``true``/``false`` lower-case)."""
    if not isinstance(value, Mapping):
        return value
    out = {}
    for k, v in value.items():
        if isinstance(v, Mapping | list | tuple):
            raise PydanticCustomError("scalar", "{key} must be a scalar", {"key": str(k)})
        out[str(k)] = str(v).lower() if isinstance(v, bool) else str(v)
    return out


# Exact types where YAML gives them exactly: no `true` for 1, no "5" for 5, no 1 for true.
Int = Annotated[int, Strict()]
Float = Annotated[float, Strict()]
Bool = Annotated[bool, Strict()]
StrTuple = Annotated[tuple[str, ...], BeforeValidator(_one_or_many)]
StrMap = Annotated[dict[str, str], BeforeValidator(_scalars)]


@dataclass(frozen=True, config=_SECTION)
class AppConfig:
    """Where things live on disk."""

    #: Project root that relative paths are resolved against (default: parent of the conf folder).
    root: str = ""
    #: Delta tables, checkpoints and producer ledgers go below this folder.
    data_dir: str = ".local/data"
    #: Jars resolved from Maven Central by ``make setup``.
    jars_dir: str = ".local/jars"


@dataclass(frozen=True, config=_SECTION)
class SparkConfig:
    """How the SparkSession is built (see :mod:`pipelines.session`)."""

    master: str = "local[*]"
    app_name: str = "lakehouse"
    #: A Spark properties file (``key value`` per line) applied before ``conf``.
    defaults_file: str = "conf/spark-defaults.conf"
    #: log4j2 configuration for the driver JVM.
    log4j_file: str = "conf/log4j2.properties"
    #: Use the jars provisioned under ``app.jars_dir`` (false on a cluster that uses --packages).
    use_local_jars: Bool = True
    #: Any Spark property; wins over ``defaults_file``.
    conf: StrMap = field(default_factory=dict)


@dataclass(frozen=True, config=_SECTION)
class KafkaConfig:
    """The Kafka source of the ingest job (Spark's Kafka connector options)."""

    bootstrap_servers: str = "127.0.0.1:9092"
    topics: StrTuple = ("events",)
    #: Only used by a new checkpoint: "earliest", "latest" or Spark's per-partition JSON.
    starting_offsets: str = "earliest"
    #: Upper bound of records per micro-batch (null: no bound).
    max_offsets_per_trigger: Int | None = 100_000
    #: Keep true: expired offsets then fail the query loudly instead of skipping data silently.
    fail_on_data_loss: Bool = True
    #: Consumer isolation of the stream, batch reads and ``verify``. ``read_committed`` (the
    #: default) never shows records of aborted or still-open producer transactions;
    #: ``read_uncommitted`` shows them, and an aborted transaction's records then land in the tables.
    isolation_level: Literal["read_committed", "read_uncommitted"] = "read_committed"
    #: Extra source options passed through as-is, e.g. ``kafka.security.protocol: SASL_SSL``,
    #: ``kafka.sasl.jaas.config: ${env:KAFKA_JAAS}`` (values with ``${env:NAME}`` come from the environment).
    options: StrMap = field(default_factory=dict)


@dataclass(frozen=True, config=_SECTION)
class LocalKafkaConfig:
    """The embedded single-node KRaft broker used for local runs and tests (127.0.0.1 only)."""

    port: Int = 9092
    controller_port: Int = 9093
    #: Broker data, its log and pid file live here.
    home: str = ".local/kafka"
    heap: str = "512m"
    start_timeout_s: Float = 90.0
    #: Partitions of topics the tools create.
    default_partitions: Int = 3


FieldType = str  # "string" | "long" | "double" | "boolean" | "timestamp" | "decimal(p,s)"


@dataclass(frozen=True, config=_SECTION)
class FieldSpec:
    """One field of the JSON event contract."""

    name: str
    type: FieldType = "string"
    required: Bool = True
    #: If set, the value must be one of these (strings only).
    allowed: StrTuple | None = None


@dataclass(frozen=True, config=_SECTION)
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
    id_max_length: Int = 256
    #: Leading/trailing whitespace around a message ID: "reject" (quarantine, ID_WHITESPACE) or
    #: "trim" (the ID is the trimmed text, so " a" and "a" are the same message).
    id_whitespace: Literal["reject", "trim"] = "reject"


@dataclass(frozen=True, config=_SECTION)
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


@dataclass(frozen=True, config=_SECTION)
class IngestConfig:
    """The streaming ingest job."""

    #: Also the stem of the Delta transaction app id; change it only with a new checkpoint.
    query_name: str = "ingest"
    #: Relative to ``<data_dir>/checkpoints`` unless absolute or a URI.
    checkpoint: str = "ingest"
    trigger: Literal["processingTime", "availableNow"] = "processingTime"
    trigger_interval: str = "5 seconds"
    #: Print one progress line per micro-batch.
    progress: Bool = True
    #: Which silver rows the insert-if-absent MERGE compares a batch against. "table": every
    #: row (exact, unconditionally; cost grows with the table). "event_date": only rows dated
    #: within ``silver_merge_slack_days`` of one of the batch's event dates (cost follows the
    #: batch's dates; exact when every copy of a message is dated within that many days of its
    #: first copy; see README, Guarantees).
    silver_merge_scope: Literal["table", "event_date"] = "table"
    silver_merge_slack_days: Int = 1


@dataclass(frozen=True, config=_SECTION)
class QualityConfig:
    """Data-quality contracts (Great Expectations suites) checked on every batch."""

    #: One suite per table, ``<table>.yaml``; ``silver.yaml`` is checked on every ingest batch.
    #: A missing folder or file means no expectations for that table.
    expectations_dir: str = "conf/expectations"
    #: The Great Expectations project (stores and Data Docs), below ``app.data_dir`` unless absolute.
    gx_dir: str = "gx"


@dataclass(frozen=True, config=_SECTION)
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


@dataclass(frozen=True, config=_SECTION)
class GoldWindow:
    """A tumbling event-time window: rows are grouped by the window their ``column`` falls in."""

    column: str
    #: A Spark interval, e.g. "1 minute", "1 hour", "1 day".
    size: str


@dataclass(frozen=True, config=_SECTION)
class GoldTable:
    """One gold table: silver rows grouped by ``group_by`` (and an event-time window), aggregated."""

    name: str
    group_by: StrTuple = ()
    window: GoldWindow | None = None
    aggregates: tuple[GoldAggregate, ...] = ()
    #: Relative to ``<data_dir>/tables`` unless absolute or a URI (default: gold/<name>).
    path: str = ""


@dataclass(frozen=True, config=_SECTION)
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
    max_files_per_trigger: Int = 1000
    progress: Bool = True
    tables: tuple[GoldTable, ...] = ()


@dataclass(frozen=True, config=_SECTION)
class BackfillConfig:
    """Bounded batch backfills through the stream's batch path (``backfill``)."""

    #: Records per chunk: one transaction per table per chunk, the unit a killed run redoes.
    chunk_records: Int = 100_000
    #: File backfills: whole files per chunk, about this many MiB of them (a larger file alone).
    file_chunk_mb: Int = 128
    #: At most this many records per second, on average over the chunks (a pause after each chunk);
    #: leaves the live stream its share of a shared machine. None: as fast as it goes.
    max_records_per_second: Float | None = None
    #: Print a progress bar (rows, rate, ETA).
    progress: Bool = True


@dataclass(frozen=True, config=_SECTION)
class MaintenanceConfig:
    """Table upkeep (``maintain``) and what ``status`` calls a small file."""

    #: Files smaller than this count as small (``status``); ``maintain`` compacts a table (Delta
    #: OPTIMIZE, bin-packing to ``spark.databricks.delta.optimize.maxFileSize``) once it has at
    #: least ``compact_min_small_files`` of them.
    small_file_mb: Int = 16
    compact_min_small_files: Int = 20
    #: VACUUM keeps removed files this long: longer than any reader's query (Delta refuses less
    #: than 168 hours); more than the tables' delta.deletedFileRetentionDuration (168 hours) is
    #: refused too (it would protect nothing more). Silver waits for a gold reader older than this.
    vacuum_retention_hours: Int = 168
    #: Attempts of an OPTIMIZE that loses a race with the stream's commits.
    conflict_retries: Int = 10


@dataclass(frozen=True, config=_SECTION)
class ProducerConfig:
    """Defaults of ``produce``, the seeded demo/load generator."""

    topic: str = "events"
    events: Int = 100_000
    #: Target events per second (0: as fast as possible).
    rate: Float = 0.0
    partitions: Int = 3
    duplicate_fraction: Float = 0.05
    #: Share of duplicates re-sent with a different payload (same message_id).
    conflicting_fraction: Float = 0.1
    #: Share of duplicates re-sent to another partition.
    cross_partition_fraction: Float = 0.3
    malformed_fraction: Float = 0.01
    late_fraction: Float = 0.02
    seed: Int = 42


@dataclass(frozen=True, config=_SECTION)
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
    maintenance: MaintenanceConfig = field(default_factory=MaintenanceConfig)
    producer: ProducerConfig = field(default_factory=ProducerConfig)
    #: The files this config was read from, for messages.
    sources: StrTuple = ()

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
    """``raw`` validated into ``cls`` (pydantic); the first problem as a :class:`ConfigError` naming key and origin."""
    try:
        return _adapter(cls).validate_python(raw)
    except ValidationError as e:
        raise _config_error(e.errors()[0], cls, origins, path) from None


_ADAPTERS: dict[type, TypeAdapter[Any]] = {}


def _adapter(cls: type) -> TypeAdapter[Any]:
    if cls not in _ADAPTERS:
        _ADAPTERS[cls] = TypeAdapter(cls)
    return _ADAPTERS[cls]


#: What a value of each kind must be, by pydantic error type.
_EXPECTED = {"bool_type": "true or false", "bool_parsing": "true or false", "int_type": "an integer",
             "int_parsing": "an integer", "int_from_float": "an integer", "float_type": "a number",
             "float_parsing": "a number", "string_type": "a string", "tuple_type": "a list", "list_type": "a list",
             "dict_type": "a mapping"}


def _config_error(err: Any, cls: type, origins: Mapping[tuple[str, ...], str], path: tuple[str, ...]) -> ConfigError:
    loc = (*path, *(str(p) for p in err["loc"]))
    dotted = ".".join(loc) or "<top level>"
    parent = ".".join(loc[:-1]) or "<top level>"
    kind, value = err["type"], err.get("input")
    if kind in ("unexpected_keyword_argument", "extra_forbidden"):
        return ConfigError(f"{_where(origins, loc)}: unknown key '{dotted}'",
                           hint=f"known keys in {parent}: {', '.join(_known_keys(cls, err['loc'][:-1]))}")
    if kind == "missing":
        return ConfigError(f"{_where(origins, loc[:-1])}: {parent}: missing required key '{loc[-1]}'")
    if kind == "literal_error":
        options = ", ".join(re.findall(r"'[^']*'", err["ctx"]["expected"]))
        return ConfigError(f"{_where(origins, loc)}: {dotted} must be one of {options}, got {value!r}")
    if kind == "scalar":
        key = (*loc, err["ctx"]["key"])
        return ConfigError(f"{_where(origins, key)}: {'.'.join(key)} must be a scalar")
    if kind in ("dataclass_type", "dataclass_exact_type", "model_type"):
        return ConfigError(f"{_where(origins, loc)}: {dotted} must be a mapping, got {type(value).__name__} {value!r}")
    if kind in _EXPECTED:
        return ConfigError(f"{_where(origins, loc)}: {dotted} must be {_EXPECTED[kind]}, got {value!r}")
    return ConfigError(f"{_where(origins, loc)}: {dotted}: {err['msg']}")


def _known_keys(cls: type, loc: tuple[Any, ...]) -> list[str]:
    """The keys of the section at ``loc`` (field names of its dataclass)."""
    tp: Any = cls
    for part in loc:
        tp = _unwrap(tp)
        tp = typing.get_args(tp)[0] if isinstance(part, int) else typing.get_type_hints(tp).get(part)
    tp = _unwrap(tp)
    return sorted(f.name for f in dataclasses.fields(tp)) if dataclasses.is_dataclass(tp) else []


def _unwrap(tp: Any) -> Any:
    """``X | None`` -> ``X``."""
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        return next(a for a in typing.get_args(tp) if a is not type(None))
    return tp
