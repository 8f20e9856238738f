"""Column names, reason codes and table schemas: names are constants."""

from __future__ import annotations

import re
from dataclasses import dataclass

from pyspark.sql import types as T

from pipelines.config import EventsConfig, FieldSpec
from pipelines.errors import ConfigError

# ---- Kafka source columns (as Spark's Kafka source names them) ------------------------------
SRC_KEY, SRC_VALUE, SRC_TOPIC, SRC_PARTITION, SRC_OFFSET, SRC_TIMESTAMP, SRC_HEADERS = (
    "key", "value", "topic", "partition", "offset", "timestamp", "headers",
)

# ---- our columns -----------------------------------------------------------------------------
MESSAGE_ID = "message_id"
KAFKA_TOPIC = "kafka_topic"
# The topic's id (a UUID Kafka gives each topic when it is created): a deleted and recreated
# topic restarts its offsets under a new id, so coordinates stay unique across incarnations.
KAFKA_TOPIC_ID = "kafka_topic_id"
KAFKA_PARTITION = "kafka_partition"
KAFKA_OFFSET = "kafka_offset"
KAFKA_TIMESTAMP = "kafka_timestamp"
KAFKA_KEY = "kafka_key"
KAFKA_VALUE = "kafka_value"
KAFKA_HEADERS = "kafka_headers"
PAYLOAD = "payload"  # the value as UTF-8 JSON text, with every field, known or not
EVENT_DATE = "event_date"
BATCH_ID = "batch_id"
APP_ID = "app_id"  # Delta transaction app id of the run that wrote the row
INGESTED_AT = "ingested_at"
REASON = "reason"  # primary reason code
REASON_CODES = "reason_codes"  # every failed check, e.g. ["MISSING_FIELD:amount"]
REASON_MESSAGE = "reason_message"  # for humans
VALUE_SHA256 = "value_sha256"
# Quarantine rows a replay moved into silver (after a parser or rule fix) keep their place as
# history, marked: when, and by which run (``quarantine replay`` / a bronze re-derivation).
REPLAYED_AT = "replayed_at"
REPLAYED_BY = "replayed_by"

COORDINATES = (KAFKA_TOPIC, KAFKA_TOPIC_ID, KAFKA_PARTITION, KAFKA_OFFSET)

# Internal helper columns of the transforms (never written).
_INTERNAL_PREFIX = "_p_"


class Reason:
    """Machine-readable quarantine reason codes (a field-level code is ``CODE:field``)."""

    NULL_VALUE = "NULL_VALUE"
    INVALID_UTF8 = "INVALID_UTF8"
    NOT_JSON = "NOT_JSON"
    NOT_OBJECT = "NOT_OBJECT"
    MISSING_ID = "MISSING_ID"
    EMPTY_ID = "EMPTY_ID"
    MISSING_FIELD = "MISSING_FIELD"
    WRONG_TYPE = "WRONG_TYPE"
    BAD_DECIMAL = "BAD_DECIMAL"
    BAD_TIMESTAMP = "BAD_TIMESTAMP"
    INVALID_VALUE = "INVALID_VALUE"
    ID_WHITESPACE = "ID_WHITESPACE"  # leading/trailing whitespace, with events.id_whitespace: reject
    ID_TOO_LONG = "ID_TOO_LONG"  # longer than events.id_max_length
    OUT_OF_RANGE = "OUT_OF_RANGE"  # a JSON number beyond the range of a double
    # Not a contract check: a row that failed a `quarantine` rule of the silver expectation suite
    # (the code is EXPECTATION:<rule>, see pipelines.quality).
    EXPECTATION = "EXPECTATION"

    ALL = (NULL_VALUE, INVALID_UTF8, NOT_JSON, NOT_OBJECT, MISSING_ID, EMPTY_ID, ID_WHITESPACE, ID_TOO_LONG,
           MISSING_FIELD, WRONG_TYPE, BAD_DECIMAL, BAD_TIMESTAMP, INVALID_VALUE, OUT_OF_RANGE)


_DECIMAL = re.compile(r"^decimal\((\d+),\s*(\d+)\)$")
SIMPLE_TYPES: dict[str, T.DataType] = {
    "string": T.StringType(),
    "long": T.LongType(),
    "double": T.DoubleType(),
    "boolean": T.BooleanType(),
    "timestamp": T.TimestampType(),
}


def spark_type(type_name: str) -> T.DataType:
    """The Spark type of a field type name.

    Names: ``string``, ``long``, ``double``, ``boolean``, ``timestamp`` or ``decimal(p,s)``.
    """
    name = type_name.strip().lower()
    if name in SIMPLE_TYPES:
        return SIMPLE_TYPES[name]
    m = _DECIMAL.match(name)
    if m:
        p, s = int(m.group(1)), int(m.group(2))
        if not (1 <= p <= 38 and 0 <= s <= p):
            raise ValueError(f"decimal precision/scale out of range: {type_name}")
        return T.DecimalType(p, s)
    raise ValueError(f"unknown field type {type_name!r}")


@dataclass(frozen=True)
class EventSpec:
    """The validated event contract derived from ``events`` in the config."""

    id_source: str
    id_name: str
    event_time_field: str
    fields: tuple[FieldSpec, ...]
    id_max_length: int = 256
    id_whitespace: str = "reject"

    @classmethod
    def from_config(cls, events: EventsConfig) -> EventSpec:
        """Validate ``events`` and build the spec; errors name the offending key."""
        if not events.fields:
            raise ConfigError("events.fields is empty: declare at least the event-time field")
        names = [f.name for f in events.fields]
        dupes = {n for n in names if names.count(n) > 1}
        if dupes:
            raise ConfigError(f"events.fields declares {sorted(dupes)} more than once")
        for f in events.fields:
            try:
                spark_type(f.type)
            except ValueError as e:
                raise ConfigError(f"events.fields[{f.name}].type: {e}",
                                  hint="use string, long, double, boolean, timestamp or decimal(p,s)") from e
            if f.allowed is not None and spark_type(f.type) != T.StringType():
                raise ConfigError(f"events.fields[{f.name}].allowed is only supported for string fields")
            reserved = {MESSAGE_ID, EVENT_DATE, PAYLOAD, BATCH_ID, APP_ID, INGESTED_AT, *COORDINATES, KAFKA_TIMESTAMP}
            if f.name in reserved and not (f.name == MESSAGE_ID and events.id_source == "field"
                                           and events.id_name == MESSAGE_ID):
                raise ConfigError(f"events.fields[{f.name}]: the name {f.name!r} is reserved for a pipeline column")
        by_name = {f.name: f for f in events.fields}
        et = by_name.get(events.event_time_field)
        if et is None or spark_type(et.type) != T.TimestampType() or not et.required:
            raise ConfigError(
                f"events.event_time_field {events.event_time_field!r} must name a required timestamp field"
            )
        if events.id_source == "field":
            idf = by_name.get(events.id_name)
            if idf is not None and (spark_type(idf.type) != T.StringType() or not idf.required):
                raise ConfigError(f"events.fields[{events.id_name}] is the message ID: it must be a required string")
        if events.id_max_length < 1:
            raise ConfigError(f"events.id_max_length must be >= 1, got {events.id_max_length}")
        return cls(events.id_source, events.id_name, events.event_time_field, tuple(events.fields),
                   events.id_max_length, events.id_whitespace)

    @property
    def data_fields(self) -> tuple[FieldSpec, ...]:
        """Typed fields other than the message ID (which is always the ``message_id`` column)."""
        if self.id_source == "field":
            return tuple(f for f in self.fields if f.name != self.id_name)
        return self.fields


# ---- table schemas ---------------------------------------------------------------------------
HEADERS_TYPE = T.ArrayType(T.StructType([T.StructField("key", T.StringType()),
                                         T.StructField("value", T.BinaryType())]))

COORD_FIELDS = [
    T.StructField(KAFKA_TOPIC, T.StringType(), False),
    # Nullable so that tables written before it existed can add it (`migrate`); the job
    # always writes it, and fills it for older rows when it first binds the tables.
    T.StructField(KAFKA_TOPIC_ID, T.StringType(), True),
    T.StructField(KAFKA_PARTITION, T.IntegerType(), False),
    T.StructField(KAFKA_OFFSET, T.LongType(), False),
    T.StructField(KAFKA_TIMESTAMP, T.TimestampType(), True),
]
LINEAGE_FIELDS = [
    T.StructField(BATCH_ID, T.LongType(), False),
    T.StructField(APP_ID, T.StringType(), False),
    T.StructField(INGESTED_AT, T.TimestampType(), False),
]

BRONZE_SCHEMA = T.StructType([
    *COORD_FIELDS,
    T.StructField(KAFKA_KEY, T.BinaryType(), True),
    T.StructField(KAFKA_VALUE, T.BinaryType(), True),
    T.StructField(KAFKA_HEADERS, HEADERS_TYPE, True),
    *LINEAGE_FIELDS,
])

QUARANTINE_SCHEMA = T.StructType([
    *COORD_FIELDS,
    T.StructField(KAFKA_KEY, T.BinaryType(), True),
    T.StructField(KAFKA_VALUE, T.BinaryType(), True),
    T.StructField(MESSAGE_ID, T.StringType(), True),
    T.StructField(REASON, T.StringType(), False),
    T.StructField(REASON_CODES, T.ArrayType(T.StringType(), True), False),
    T.StructField(REASON_MESSAGE, T.StringType(), False),
    *LINEAGE_FIELDS,
    T.StructField(REPLAYED_AT, T.TimestampType(), True),
    T.StructField(REPLAYED_BY, T.StringType(), True),
])

AUDIT_SCHEMA = T.StructType([
    T.StructField(APP_ID, T.StringType(), False),
    T.StructField("query_name", T.StringType(), False),
    T.StructField(BATCH_ID, T.LongType(), False),
    T.StructField("started_at", T.TimestampType(), False),
    T.StructField("finished_at", T.TimestampType(), False),
    T.StructField("duration_ms", T.LongType(), False),
    T.StructField("offsets", T.StringType(), False),  # JSON {"topic": {"partition": [first, last]}}
    T.StructField("rows_read", T.LongType(), False),
    T.StructField("bronze_inserted", T.LongType(), True),
    T.StructField("quarantined", T.LongType(), True),
    T.StructField("valid_rows", T.LongType(), False),
    T.StructField("duplicates_in_batch", T.LongType(), False),
    T.StructField("conflicting_in_batch", T.LongType(), False),
    T.StructField("duplicates_in_table", T.LongType(), True),
    T.StructField("silver_inserted", T.LongType(), True),
    T.StructField("max_kafka_timestamp", T.TimestampType(), True),
    T.StructField("table_versions", T.MapType(T.StringType(), T.LongType()), False),
    T.StructField("timings_ms", T.MapType(T.StringType(), T.LongType()), False),
])


# One row per batch, suite and expectation: the batch's validation record (see pipelines.quality).
QUALITY_SCHEMA = T.StructType([
    T.StructField(APP_ID, T.StringType(), False),
    T.StructField(BATCH_ID, T.LongType(), False),
    T.StructField("suite", T.StringType(), False),
    T.StructField("expectation", T.StringType(), False),  # the rule's name: <type>:<column>
    T.StructField("expectation_type", T.StringType(), False),
    T.StructField("kwargs", T.StringType(), False),  # JSON
    T.StructField("policy", T.StringType(), False),
    T.StructField("severity", T.StringType(), True),
    T.StructField("success", T.BooleanType(), False),
    T.StructField("element_count", T.LongType(), False),
    T.StructField("unexpected_count", T.LongType(), True),
    T.StructField("unexpected_percent", T.DoubleType(), True),
    T.StructField("observed_value", T.StringType(), True),  # JSON, aggregate expectations
    T.StructField("run_time", T.TimestampType(), False),
])


def silver_schema(spec: EventSpec) -> T.StructType:
    """Silver: one row per message_id, typed fields, the raw payload and the kept copy's coordinates."""
    return T.StructType([
        T.StructField(MESSAGE_ID, T.StringType(), False),
        *[T.StructField(f.name, spark_type(f.type), not f.required) for f in spec.data_fields],
        T.StructField(EVENT_DATE, T.DateType(), False),
        T.StructField(PAYLOAD, T.StringType(), False),
        *COORD_FIELDS,
        *LINEAGE_FIELDS,
    ])
