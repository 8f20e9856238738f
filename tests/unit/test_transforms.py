"""Pure transforms on a real (session-scoped) SparkSession: parse, validate, dedupe."""

from __future__ import annotations

import datetime as dt
import json
from decimal import Decimal

import pytest
from pyspark.sql import Row
from pyspark.sql import functions as F
from pyspark.testing import assertDataFrameEqual

from pipelines.config import EventsConfig, FieldSpec
from pipelines.domain import schema as S
from pipelines.domain import transforms as X
from pipelines.domain.schema import EventSpec

KAFKA_SCHEMA = ("key binary, value binary, topic string, partition int, offset long, timestamp timestamp, "
                "headers array<struct<key:string,value:binary>>")
TS = dt.datetime(2026, 11, 26, 12, 0, 0)


@pytest.fixture(scope="module")
def spec(base_config):
    return EventSpec.from_config(base_config.events)


def event(**overrides):
    ev = {"message_id": "m-1", "event_type": "order_created", "order_id": "o-1", "customer_id": "c-1",
          "amount": 12.5, "currency": "EUR", "event_time": "2026-11-26T10:00:00+01:00"}
    ev.update(overrides)
    return {k: v for k, v in ev.items() if v is not ...}


def kafka_rows(spark, values, partition=0, start=0, keys=None, headers=None):
    rows = []
    for i, v in enumerate(values):
        value = v if (v is None or isinstance(v, bytes)) else json.dumps(v).encode()
        key = keys[i] if keys else None
        rows.append((key, value, "t", partition, start + i, TS, headers[i] if headers else None))
    return spark.createDataFrame(rows, KAFKA_SCHEMA)


def test_valid_event_is_typed(spark, spec):
    out = kafka_rows(spark, [event(channel="web")]).transform(X.parse_records(spec)).collect()[0]
    assert out.reason_codes == [] and out.reason is None and out.reason_message is None
    assert out.message_id == "m-1"
    assert out.amount == Decimal("12.50")
    assert out.event_time == dt.datetime(2026, 11, 26, 9, 0, 0)  # +01:00 -> UTC
    assert out.event_date == dt.date(2026, 11, 26)
    assert json.loads(out.payload)["channel"] == "web"  # unknown fields kept in the payload
    assert (out.kafka_topic, out.kafka_partition, out.kafka_offset) == ("t", 0, 0)


def test_amount_as_numeric_string_and_integer_are_accepted(spark, spec):
    rows = kafka_rows(spark, [event(amount="7.05"), event(message_id="m-2", amount=3)]) \
        .transform(X.parse_records(spec)).orderBy("kafka_offset").collect()
    assert [r.amount for r in rows] == [Decimal("7.05"), Decimal("3.00")]
    assert all(r.reason_codes == [] for r in rows)


CASES = [
    (None, ["NULL_VALUE"]),
    (b"\xff\xfe{}", ["INVALID_UTF8"]),
    (b"{not json", ["NOT_JSON"]),
    (b"[1, 2]", ["NOT_OBJECT"]),
    (b'"text"', ["NOT_OBJECT"]),
    (event(message_id=...), ["MISSING_ID"]),
    (event(message_id=None), ["MISSING_ID"]),
    (event(message_id="  "), ["EMPTY_ID"]),
    (event(message_id=42), ["WRONG_TYPE:message_id"]),
    (event(amount={"v": 1}), ["WRONG_TYPE:amount"]),
    (event(amount="12,50"), ["BAD_DECIMAL:amount"]),
    (event(amount="12.345"), ["BAD_DECIMAL:amount"]),
    (event(amount="12345678901234567.00"), ["BAD_DECIMAL:amount"]),
    (event(event_time="yesterday"), ["BAD_TIMESTAMP:event_time"]),
    (event(event_time="2026-11-26T10:00:00"), ["BAD_TIMESTAMP:event_time"]),
    (event(event_time="2026-11-26"), ["BAD_TIMESTAMP:event_time"]),
    (event(event_time=1764150000), ["WRONG_TYPE:event_time"]),
    (event(currency=...), ["MISSING_FIELD:currency"]),
    (event(event_type="teleported"), ["INVALID_VALUE:event_type"]),
    (event(amount="x", currency=None), ["BAD_DECIMAL:amount", "MISSING_FIELD:currency"]),
    (event(message_id=" m-1"), ["ID_WHITESPACE"]),
    (event(message_id="m" * 257), ["ID_TOO_LONG"]),
    # JSON numbers are never rounded: too many digits after the point, or a form only a double holds.
    (json.dumps(event(amount=0)).replace('"amount": 0', '"amount": 1.0000000000000000001').encode(),
     ["BAD_DECIMAL:amount"]),
    (json.dumps(event(amount=0)).replace('"amount": 0', '"amount": 1.5e2').encode(), ["BAD_DECIMAL:amount"]),
]


def test_each_malformed_kind_gets_its_reason(spark, spec):
    values = [c[0] for c in CASES]
    out = kafka_rows(spark, values).transform(X.parse_records(spec)).orderBy("kafka_offset").collect()
    got = [(r.kafka_offset, r.reason_codes) for r in out]
    assert got == [(i, c[1]) for i, c in enumerate(CASES)]
    for r in out:
        assert r.reason == r.reason_codes[0].split(":")[0]
        assert r.reason_message  # a human sentence for every failure
        if any(c.split(":")[0] in ("WRONG_TYPE", "BAD_DECIMAL") and c.endswith("amount") for c in r.reason_codes):
            assert r.amount is None  # a value that failed its check is never half-typed
    assert "12.345" in out[11].reason_message


def test_message_id_from_key_and_header(spark, base_config):
    fields = tuple(f for f in base_config.events.fields if f.name != "message_id")
    key_spec = EventSpec.from_config(EventsConfig(id_source="key", fields=fields))
    body = event(message_id=...)
    rows = kafka_rows(spark, [body, body, body], keys=[b"k-1", None, b""]) \
        .transform(X.parse_records(key_spec)).orderBy("kafka_offset").collect()
    assert [(r.message_id, r.reason_codes) for r in rows] == [
        ("k-1", []), (None, ["MISSING_ID"]), (None, ["EMPTY_ID"])]

    hdr_spec = EventSpec.from_config(EventsConfig(id_source="header", id_name="msg-id", fields=fields))
    rows = kafka_rows(spark, [body, body], headers=[[("msg-id", b"h-1")], [("other", b"x")]]) \
        .transform(X.parse_records(hdr_spec)).orderBy("kafka_offset").collect()
    assert [(r.message_id, r.reason_codes) for r in rows] == [("h-1", []), (None, ["MISSING_ID"])]


def test_dedupe_keeps_lowest_coordinates_and_counts_conflicts(spark, spec):
    a = event(message_id="a")
    a_conflict = event(message_id="a", amount=99)
    b = event(message_id="b")
    a_invalid = event(message_id="a", amount="not a number")
    p0 = kafka_rows(spark, [a_invalid, a, b, a], partition=0, start=9)  # a@0:9 invalid, a@0:10, b@0:11, a@0:12
    p1 = kafka_rows(spark, [a_conflict, b], partition=1, start=0)  # a@1:0 conflicting, b@1:1 same
    # All rows, invalid ones included (as the job does): the invalid copy at the lowest
    # coordinates must neither displace the valid one nor count as a duplicate.
    annotated = p0.unionByName(p1).transform(X.parse_records(spec)).transform(X.annotate_duplicates)
    kept = (annotated.transform(X.valid_rows).transform(X.first_copies)
            .select(S.MESSAGE_ID, S.KAFKA_PARTITION, S.KAFKA_OFFSET, "amount"))
    assertDataFrameEqual(kept, [Row(message_id="a", kafka_partition=0, kafka_offset=10, amount=Decimal("12.50")),
                                Row(message_id="b", kafka_partition=0, kafka_offset=11, amount=Decimal("12.50"))])
    counts = annotated.agg(F.count(F.lit(1)).alias("rows"), *X.duplicate_sums()).collect()[0]
    assert (counts.rows, counts.duplicates, counts.conflicting) == (6, 3, 1)


def test_spec_rejects_bad_contracts():
    from pipelines.errors import ConfigError

    with pytest.raises(ConfigError, match="unknown field type"):
        EventSpec.from_config(EventsConfig(fields=(FieldSpec("event_time", "timestamp"), FieldSpec("x", "money"))))
    with pytest.raises(ConfigError, match="event_time_field"):
        EventSpec.from_config(EventsConfig(fields=(FieldSpec("event_time", "string"),)))
    with pytest.raises(ConfigError, match="reserved"):
        EventSpec.from_config(EventsConfig(fields=(FieldSpec("event_time", "timestamp"), FieldSpec("payload"))))


def test_parse_is_built_once_per_contract_and_reused_across_batches(spark, spec):
    # The column expressions are built once (hundreds of Py4J calls) and serve every batch.
    parse = X.parse_records(spec)
    assert X.parse_records(spec) is parse
    first = kafka_rows(spark, [event(message_id="a-1")]).transform(parse).collect()
    second = kafka_rows(spark, [event(message_id="b-2", amount="x")], start=7).transform(parse).collect()
    assert [(r.message_id, r.kafka_offset, r.reason) for r in first] == [("a-1", 0, None)]
    assert [(r.message_id, r.kafka_offset, r.reason) for r in second] == [("b-2", 7, "BAD_DECIMAL")]
