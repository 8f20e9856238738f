"""Pure DataFrame -> DataFrame transforms of the ingest path: no reads, writes or sessions.

Parameterised transforms return a function for ``df.transform``::

    parsed = kafka_df.transform(parse_records(spec))
    good, bad = parsed.transform(valid_rows), parsed.transform(invalid_rows)
    kept = good.transform(annotate_duplicates).transform(first_copies)

Parsing uses Spark's VARIANT (``try_parse_json``), which keeps the JSON type of every value,
so "amount is an object" and "message_id is a number" are told apart from "missing".
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping

from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F
from pyspark.sql import types as T

from pipelines.config import FieldSpec
from pipelines.domain import schema as S
from pipelines.domain.schema import EventSpec, Reason, spark_type

Transform = Callable[[DataFrame], DataFrame]

_TEXT = "_p_text"
_JSON = "_p_json"
_UTF8 = "_p_utf8"
_IS_OBJECT = "_p_is_object"
_CODES = "_p_codes"
# Joins the failed check codes into one string before splitting them into an array: built-in
# string functions keep the whole projection in generated code (higher-order functions do not).
_SEP = "\u0001"
_DUP_RANK = "_p_dup_rank"
_CONFLICT = "_p_conflict"

_INT_TYPES = ("TINYINT", "SMALLINT", "INT", "BIGINT")
# An ISO-8601 timestamp must carry its zone: Z or ±hh[:mm].
# The whole text: date, T or space, hh:mm:ss, an optional fraction (up to 9 digits), a zone.
_ISO_DATETIME = r"^\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}:\d{2}(\.\d{1,9})?(?i:z|[+-]\d{2}(:?\d{2})?)\z"
_PLAIN_DECIMAL = r"^[+-]?(\d+\.?\d*|\.\d+)\z"
_TS_MIN, _TS_END = "0001-01-02 00:00:00", "9999-12-31 00:00:00"  # UTC event times accepted: [min, end)
# Message IDs: leading/trailing ASCII whitespace (space, tab, LF, CR, FF, VT). Every pattern ends
# in \z, not $: Java's $ also matches before a final line terminator ("1.5\n" would pass).
_ID_EDGE_SPACE = "^[ \\t\\n\\r\\f\\x0B]+|[ \\t\\n\\r\\f\\x0B]+\\z"


_KAFKA_RENAMES = (
    (S.SRC_TOPIC, S.KAFKA_TOPIC), (S.SRC_PARTITION, S.KAFKA_PARTITION), (S.SRC_OFFSET, S.KAFKA_OFFSET),
    (S.SRC_TIMESTAMP, S.KAFKA_TIMESTAMP), (S.SRC_KEY, S.KAFKA_KEY), (S.SRC_VALUE, S.KAFKA_VALUE),
)


def kafka_columns() -> list[Column]:
    """Spark's Kafka source columns under our names (``topic`` -> ``kafka_topic``, ...)."""
    return [F.col(src).alias(dst) for src, dst in _KAFKA_RENAMES]


def _path(name: str) -> str:
    return "$['" + name.replace("'", "\\'") + "']"


Check = tuple[Column, str, Column]
"""One check: (fails when true, reason code, message)."""


def _check(cond: Column, code: str, message: Column) -> Check:
    return cond, code, message


def _extract(name: str, js: Column) -> dict[str, Column]:
    """Columns computed once per field: its JSON type (NULL if absent) and its text."""
    raw = F.try_variant_get(js, _path(name), "variant")
    return {
        _ftype(name): F.schema_of_variant(raw),
        _ftext(name): F.try_variant_get(js, _path(name), "string"),
    }


def _ftype(name: str) -> str:
    return f"_p_type_{name}"


def _ftext(name: str) -> str:
    return f"_p_text_{name}"


def _field_column(f: FieldSpec, js: Column) -> tuple[Column, list[Check]]:
    """The typed value of field ``f`` and the checks it may fail.

    Expects the columns of :func:`_extract` for ``f``.
    """
    vtype = F.col(_ftype(f.name))
    present = vtype.isNotNull() & (vtype != F.lit("VOID"))  # JSON null counts as missing
    text = F.col(_ftext(f.name))
    stype = spark_type(f.type)
    shown = F.coalesce(F.substring(text, 1, 60), F.lit("?"))
    checks: list[Check] = []
    if f.required:
        checks.append(_check(~present, f"{Reason.MISSING_FIELD}:{f.name}", F.lit(f"{f.name} is missing or null")))

    def wrong(ok: Column, expected: str) -> Check:
        return _check(present & ~ok, f"{Reason.WRONG_TYPE}:{f.name}",
                      F.concat(F.lit(f"{f.name} must be {expected}, got "), F.coalesce(vtype, F.lit("?"))))

    if isinstance(stype, T.DecimalType):
        # Exact or rejected, never rounded. A JSON number arrives as the parser's exact decimal
        # (or integer); one it could only hold as a double (exponent notation, more than 38
        # digits) has lost its digits already, so it is rejected. A JSON string is read as text.
        exact = vtype.startswith("DECIMAL") | vtype.isin(*_INT_TYPES)
        ok_type = exact | vtype.isin("DOUBLE", "FLOAT", "STRING")
        num = F.when(vtype == F.lit("STRING"), F.trim(text)).when(exact, text)
        int_digits = F.regexp_extract(num, r"^[+-]?0*(\d*)", 1)
        frac_digits = F.regexp_extract(num, r"\.(\d*?)0*\z", 1)
        in_range = F.coalesce(
            num.rlike(_PLAIN_DECIMAL)
            & (F.length(int_digits) <= F.lit(stype.precision - stype.scale))
            & (F.length(frac_digits) <= F.lit(stype.scale)),
            F.lit(False),
        )
        checks.append(wrong(ok_type, "a decimal number (JSON number or numeric string)"))
        checks.append(_check(present & ok_type & ~in_range, f"{Reason.BAD_DECIMAL}:{f.name}",
                             F.concat(F.lit(f"{f.name} "), shown,
                                      F.lit(f" is not a decimal with at most {stype.precision - stype.scale}"
                                            f" integer and {stype.scale} fractional digits, written out"
                                            " (a JSON number in exponent form or with more than 38 digits"
                                            " cannot be read exactly: send it as a string)"))))
        value = F.when(present & ok_type & in_range, num.try_cast(stype))
    elif isinstance(stype, T.TimestampType):
        ok_type = vtype == F.lit("STRING")
        ts = F.try_to_timestamp(text)
        # From 0001-01-02 to 9999-12-30 in UTC: dates every reader can hold, with a day of margin
        # (Python cannot even convert a timestamp within hours of 0001-01-01).
        in_range = (ts >= F.lit(_TS_MIN).cast("timestamp")) & (ts < F.lit(_TS_END).cast("timestamp"))
        good = ts.isNotNull() & text.rlike(_ISO_DATETIME) & in_range
        checks.append(wrong(ok_type, "an ISO-8601 timestamp string"))
        checks.append(_check(present & ok_type & ~good, f"{Reason.BAD_TIMESTAMP}:{f.name}",
                             F.concat(F.lit(f"{f.name} "), shown,
                                      F.lit(" is not an ISO-8601 timestamp with a zone"))))
        value = F.when(present & ok_type & good, ts)
    elif isinstance(stype, T.LongType):
        ok_type = vtype.isin(*_INT_TYPES)
        checks.append(wrong(ok_type, "an integer"))
        value = F.when(present & ok_type, F.try_variant_get(js, _path(f.name), "bigint"))
    elif isinstance(stype, T.DoubleType):
        ok_type = vtype.isin(*_INT_TYPES, "DOUBLE", "FLOAT") | vtype.startswith("DECIMAL")
        dbl = F.try_variant_get(js, _path(f.name), "double")
        finite = ~F.isnan(dbl) & (F.abs(dbl) != F.lit(float("inf")))
        checks.append(wrong(ok_type, "a number"))
        checks.append(_check(present & ok_type & ~F.coalesce(finite, F.lit(False)), f"{Reason.OUT_OF_RANGE}:{f.name}",
                             F.concat(F.lit(f"{f.name} "), shown, F.lit(" is beyond the range of a double"))))
        value = F.when(present & ok_type & finite, dbl)
    elif isinstance(stype, T.BooleanType):
        ok_type = vtype == F.lit("BOOLEAN")
        checks.append(wrong(ok_type, "true or false"))
        value = F.when(present & ok_type, F.try_variant_get(js, _path(f.name), "boolean"))
    else:  # string
        ok_type = vtype == F.lit("STRING")
        checks.append(wrong(ok_type, "a string"))
        value = F.when(present & ok_type, text)
        if f.allowed is not None:
            allowed = text.isin(*f.allowed)
            checks.append(_check(present & ok_type & ~allowed, f"{Reason.INVALID_VALUE}:{f.name}",
                                 F.concat(F.lit(f"{f.name} "), shown,
                                          F.lit(f" is not one of {', '.join(f.allowed)}"))))
            value = F.when(present & ok_type & allowed, text)
    return value.cast(stype), checks


def _id_checks(spec: EventSpec, text: Column, gate: Column, where: str) -> tuple[Column, list[Check]]:
    """The ID string rules: not blank, whitespace policy, length bound; returns (ID or NULL, checks)."""
    stripped = F.regexp_replace(text, _ID_EDGE_SPACE, "")
    blank = stripped == F.lit("")
    padded = ~blank & (stripped != text)
    too_long = ~blank & (F.length(stripped) > F.lit(spec.id_max_length))
    checks = [_check(gate & blank, Reason.EMPTY_ID, F.lit(f"{where} is empty"))]
    if spec.id_whitespace == "reject":
        checks.append(_check(gate & padded, Reason.ID_WHITESPACE,
                             F.lit(f"{where} has leading or trailing whitespace (events.id_whitespace: reject)")))
        bad = blank | padded | too_long
    else:
        bad = blank | too_long
    checks.append(_check(gate & too_long, Reason.ID_TOO_LONG,
                         F.concat(F.lit(f"{where} is longer than {spec.id_max_length} characters ("),
                                  F.length(stripped).cast("string"), F.lit(")"))))
    kept = stripped if spec.id_whitespace == "trim" else text
    return F.when(gate & ~bad, kept), checks


def _message_id(spec: EventSpec, js: Column, is_object: Column) -> tuple[Column, list[Check]]:
    """The message ID and its checks, from the JSON field, the record key or a header."""
    if spec.id_source == "field":
        vtype = F.col(_ftype(spec.id_name))
        present = vtype.isNotNull() & (vtype != F.lit("VOID"))
        text = F.col(_ftext(spec.id_name))
        is_string = vtype == F.lit("STRING")
        mid, id_checks = _id_checks(spec, text, is_object & is_string, spec.id_name)
        checks = [
            _check(is_object & ~present, Reason.MISSING_ID, F.lit(f"{spec.id_name} is missing or null")),
            _check(is_object & present & ~is_string, f"{Reason.WRONG_TYPE}:{spec.id_name}",
                   F.concat(F.lit(f"{spec.id_name} must be a string, got "), vtype)),
            *id_checks,
        ]
        return mid, checks
    if spec.id_source == "key":
        raw_bytes = F.col(S.KAFKA_KEY)
        where = "the record key"
    else:
        match = F.filter(F.col(S.SRC_HEADERS), lambda h: h["key"] == F.lit(spec.id_name))
        raw_bytes = F.when(F.size(match) > 0, match[0]["value"])
        where = f"header {spec.id_name}"
    text = raw_bytes.cast("string")
    utf8 = raw_bytes.isNotNull() & F.is_valid_utf8(text)
    mid, id_checks = _id_checks(spec, text, utf8, where)
    checks = [
        _check(raw_bytes.isNull(), Reason.MISSING_ID, F.lit(f"{where} is missing")),
        _check(raw_bytes.isNotNull() & ~F.is_valid_utf8(text), Reason.INVALID_UTF8,
               F.lit(f"{where} is not valid UTF-8")),
        *id_checks,
    ]
    return mid, checks


@functools.lru_cache(maxsize=16)
def parse_records(spec: EventSpec) -> Transform:
    """Decode and check Kafka records against the event contract.

    Input: a DataFrame with Spark's Kafka source columns (``key``, ``value``, ``topic``,
    ``partition``, ``offset``, ``timestamp``; ``headers`` when ``id_source`` is ``header``).
    Output: the Kafka coordinates, key/value bytes, ``message_id``, one typed column per
    data field, ``event_date``, ``payload`` (the JSON text), ``value_sha256``, and
    ``reason``/``reason_codes``/``reason_message`` (empty codes = valid).
    """
    # The column expressions are built once per SparkContext (and headers or not), not per
    # batch: building them is hundreds of Py4J calls, which cost more than parsing a small batch.
    built: dict[tuple[int, bool, bool], list[list[Column]]] = {}

    def transform(df: DataFrame) -> DataFrame:
        key = (id(df.sparkSession.sparkContext), S.SRC_HEADERS in df.columns, S.KAFKA_TOPIC_ID in df.columns)
        stages = built.get(key)
        if stages is None:
            stages = built[key] = _parse_stages(spec, has_headers=key[1], has_topic_id=key[2])
        for columns in stages:
            df = df.select(*columns)
        return df

    return transform


def _parse_stages(spec: EventSpec, *, has_headers: bool, has_topic_id: bool = False) -> list[list[Column]]:
    """The projections of :func:`parse_records`, in order (each computed once per row).

    ``has_topic_id``: the input carries ``kafka_topic_id`` (records re-read from bronze keep the
    id of the topic incarnation they came from); it is passed through.
    """
    value = F.col(S.KAFKA_VALUE)
    text = F.col(_TEXT)
    js = F.col(_JSON)
    has_value = value.isNotNull()
    utf8 = F.col(_UTF8)
    parsed = utf8 & js.isNotNull()
    is_object = F.col(_IS_OBJECT)

    checks: list[Check] = [
        _check(~has_value, Reason.NULL_VALUE, F.lit("the record value is null (tombstone)")),
        _check(has_value & ~utf8, Reason.INVALID_UTF8, F.lit("the value is not valid UTF-8")),
        _check(utf8 & js.isNull(), Reason.NOT_JSON,
               F.concat(F.lit("the value is not valid JSON: "), F.substring(text, 1, 60))),
        _check(parsed & ~is_object, Reason.NOT_OBJECT,
               F.concat(F.lit("the value is JSON "), F.schema_of_variant(js), F.lit(", not an object"))),
    ]
    mid, id_checks = _message_id(spec, js, is_object)
    checks += id_checks
    typed: dict[str, Column] = {}
    for f in spec.data_fields:
        col, fchecks = _field_column(f, js)
        typed[f.name] = col
        checks += [(is_object & cond, code, msg) for cond, code, msg in fchecks]
    extracted: dict[str, Column] = {}
    for name in ([spec.id_name] if spec.id_source == "field" else []) + [f.name for f in spec.data_fields]:
        extracted.update(_extract(name, js))
    topic_id = [S.KAFKA_TOPIC_ID] if has_topic_id else []
    kafka = [dst for _, dst in _KAFKA_RENAMES] + topic_id
    headers = [F.col(S.SRC_HEADERS)] if has_headers else []
    passed = [*[F.col(c) for c in kafka], *headers]
    # Each intermediate column is its own projection, computed once per row: the flags
    # (valid UTF-8, parsed, is an object) feed every check below.
    stages: list[list[Column]] = [
        [*kafka_columns(), *map(F.col, topic_id), *headers, F.col(S.SRC_VALUE).cast("string").alias(_TEXT)],
        [*passed, text, (has_value & F.is_valid_utf8(text)).alias(_UTF8)],
        [*passed, text, utf8, F.when(utf8, F.try_parse_json(text)).alias(_JSON)],
        [*passed, text, utf8, js,
         F.coalesce(F.schema_of_variant(js).startswith("OBJECT"), F.lit(False)).alias(_IS_OBJECT)],
        [*passed, text, utf8, js, is_object, *[c.alias(n) for n, c in extracted.items()]],
    ]
    codes = F.concat_ws(_SEP, *[F.when(cond, F.lit(code)) for cond, code, _ in checks])
    stages.append([
        *[F.col(c) for c in kafka],
        mid.alias(S.MESSAGE_ID),
        *[c.alias(name) for name, c in typed.items()],
        F.when(utf8, text).alias(S.PAYLOAD),
        F.sha2(F.coalesce(F.col(S.KAFKA_VALUE), F.lit(b"")), 256).alias(S.VALUE_SHA256),
        codes.alias(_CODES),
        F.concat_ws("; ", *[F.when(cond, msg) for cond, _, msg in checks]).alias(S.REASON_MESSAGE),
    ])
    et = spec.event_time_field
    event_date = F.to_date(F.col(et)) if et in typed else F.lit(None).cast("date")
    failed = F.col(_CODES) != F.lit("")
    kept = [*kafka, S.MESSAGE_ID, *typed, S.PAYLOAD, S.VALUE_SHA256]
    stages.append([
        *[F.col(c) for c in kept],
        event_date.alias(S.EVENT_DATE),
        F.when(failed, F.split(F.col(_CODES), _SEP)).otherwise(F.array().cast("array<string>"))
        .alias(S.REASON_CODES),
        F.when(failed, F.split(F.split(F.col(_CODES), _SEP)[0], ":")[0]).alias(S.REASON),
        F.when(failed, F.col(S.REASON_MESSAGE)).alias(S.REASON_MESSAGE),
    ])
    return stages


def valid_rows(df: DataFrame) -> DataFrame:
    """Rows of :func:`parse_records` that passed every check."""
    return df.filter(F.size(S.REASON_CODES) == 0)


def invalid_rows(df: DataFrame) -> DataFrame:
    """Rows of :func:`parse_records` that failed at least one check (bound for quarantine)."""
    return df.filter(F.size(S.REASON_CODES) > 0)


def annotate_duplicates(df: DataFrame) -> DataFrame:
    """Mark copies of the same ``message_id`` within one batch, deterministically.

    The copy with the lowest (topic, partition, offset) is kept (rank 1). A dropped copy whose
    value bytes differ from the kept one is a *conflict* (same ID, different payload). Valid
    and invalid rows are ranked apart (an invalid record never displaces a valid copy), so it
    can run on all of :func:`parse_records`' output. Adds ``_p_dup_rank`` and ``_p_conflict``;
    use :func:`first_copies` (after :func:`valid_rows`) and :func:`duplicate_sums` on the result.
    """
    valid = F.size(S.REASON_CODES) == 0 if S.REASON_CODES in df.columns else F.lit(True)
    w = Window.partitionBy(valid, F.col(S.MESSAGE_ID)).orderBy(S.KAFKA_TOPIC, S.KAFKA_PARTITION, S.KAFKA_OFFSET)
    kept_hash = F.first(S.VALUE_SHA256).over(w)
    return df.withColumn(_DUP_RANK, F.row_number().over(w)).withColumn(
        _CONFLICT, (F.col(_DUP_RANK) > 1) & (F.col(S.VALUE_SHA256) != kept_hash)
    )


def first_copies(df: DataFrame) -> DataFrame:
    """One row per ``message_id``: the kept copy of :func:`annotate_duplicates`."""
    return df.filter(F.col(_DUP_RANK) == 1).drop(_DUP_RANK, _CONFLICT)


def duplicate_sums() -> list[Column]:
    """Aggregates over :func:`annotate_duplicates`' output.

    ``duplicates``: dropped copies of valid rows; ``conflicting``: those whose payload differs
    from the kept copy.
    """
    valid = F.size(S.REASON_CODES) == 0
    return [
        F.coalesce(F.sum((valid & (F.col(_DUP_RANK) > 1)).cast("long")), F.lit(0)).alias("duplicates"),
        F.coalesce(F.sum((valid & F.col(_CONFLICT)).cast("long")), F.lit(0)).alias("conflicting"),
    ]


def with_lineage(batch_id: int, app_id: str, ingested_at: Column,
                 topic_ids: Mapping[str, str] | None = None) -> Transform:
    """Add ``batch_id``, ``app_id``, ``ingested_at`` and ``kafka_topic_id``.

    ``topic_ids`` maps topic name -> Kafka topic id; a topic it does not name gets NULL. Rows that
    carry a ``kafka_topic_id`` already (re-read from bronze) keep it.
    """
    pairs = [F.lit(x) for kv in sorted((topic_ids or {}).items()) for x in kv]

    def transform(df: DataFrame) -> DataFrame:
        topic = F.col(S.KAFKA_TOPIC if S.KAFKA_TOPIC in df.columns else S.SRC_TOPIC)
        topic_id = F.element_at(F.create_map(*pairs), topic) if pairs else F.lit(None).cast("string")
        if S.KAFKA_TOPIC_ID in df.columns:
            topic_id = F.coalesce(F.col(S.KAFKA_TOPIC_ID), topic_id)
        return df.withColumns({
            S.KAFKA_TOPIC_ID: topic_id,
            S.BATCH_ID: F.lit(batch_id).cast("long"),
            S.APP_ID: F.lit(app_id),
            S.INGESTED_AT: ingested_at,
        })

    return transform


def to_bronze(df: DataFrame) -> DataFrame:
    """Kafka source rows (with lineage) -> bronze columns."""
    headers = F.col(S.SRC_HEADERS) if S.SRC_HEADERS in df.columns else F.lit(None).cast(S.HEADERS_TYPE)
    return df.select(
        *kafka_columns(),
        headers.cast(S.HEADERS_TYPE).alias(S.KAFKA_HEADERS),
        S.KAFKA_TOPIC_ID, S.BATCH_ID, S.APP_ID, S.INGESTED_AT,
    )


def to_quarantine(df: DataFrame) -> DataFrame:
    """Invalid parsed rows (with lineage) -> quarantine columns (not replayed: the replay columns NULL)."""
    return df.select(*[F.col(f.name) if f.name in df.columns else F.lit(None).cast(f.dataType).alias(f.name)
                       for f in S.QUARANTINE_SCHEMA.fields])


def to_silver(spec: EventSpec) -> Transform:
    """Valid, deduplicated parsed rows (with lineage) -> silver columns."""
    names = [f.name for f in S.silver_schema(spec).fields]

    def transform(df: DataFrame) -> DataFrame:
        return df.select(*names)

    return transform
