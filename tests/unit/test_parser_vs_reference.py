"""Property-style: the Spark parser and the independent reference decoder agree, record by record.

Thousands of seeded records around the contract's edges (decimals of every precision up to 38,
exponents, too many digits, huge numbers, IDs with whitespace or too long, timestamps, doubles
beyond range): the reason codes, the message ID and every typed value must be the same on both
sides. A disagreement is a bug in one of them; ``verify`` relies on the reference.
"""

from __future__ import annotations

import json
import random
from decimal import Decimal

import pytest

from pipelines.config import EventsConfig, FieldSpec
from pipelines.domain import transforms as X
from pipelines.domain.schema import EventSpec
from pipelines.tools.reference import Decoder

DECIMALS = {"d182": (18, 2), "d380": (38, 0), "d3838": (38, 38), "d3810": (38, 10), "d55": (5, 5)}
FIELDS = (
    FieldSpec("message_id"), FieldSpec("event_time", "timestamp"),
    *[FieldSpec(n, f"decimal({p},{s})", required=False) for n, (p, s) in DECIMALS.items()],
    FieldSpec("x", "double", required=False), FieldSpec("n", "long", required=False),
    FieldSpec("b", "boolean", required=False), FieldSpec("kind", "string", required=False, allowed=("a", "b")),
)
SCHEMA = ("key binary, value binary, topic string, partition int, offset long, timestamp timestamp, "
          "headers array<struct<key:string,value:binary>>")


def _digits(rng: random.Random, n: int) -> str:
    return "".join(rng.choice("0123456789") for _ in range(n))


def _number_text(rng: random.Random) -> str:
    """A plain decimal text near the interesting lengths, sometimes with zeros that do not count."""
    ip = _digits(rng, rng.choice([0, 1, 1, 2, 3, 16, 17, 18, 19, 20, 28, 29, 30, 36, 37, 38, 39, 40]))
    fp = _digits(rng, rng.choice([0, 0, 1, 2, 3, 4, 5, 6, 9, 10, 11, 19, 37, 38, 39]))
    if rng.random() < 0.2:
        fp += "0" * rng.randint(1, 5)
    if rng.random() < 0.1:
        ip = "0" * rng.randint(1, 3) + ip
    text = (ip or "0") + ("." + fp if fp else "")
    return rng.choice(["", "", "-", "+"]) + text if not text.startswith("+") else text


def _value(rng: random.Random) -> object:
    """A JSON value for a decimal field, raw (a token) or as a JSON string."""
    r = rng.random()
    if r < 0.45:
        t = _number_text(rng)
        return ("raw", t.lstrip("+"))  # JSON numbers have no '+'
    if r < 0.8:
        return _number_text(rng)
    return rng.choice([("raw", "1.5e2"), ("raw", "1E400"), ("raw", "-0.0"), "1e3", " 12.5 ", "12,5", "", ".5",
                       "1.5\n", "\n1.5", "1.5\u2028",
                       "5.", ("raw", "true"), ("raw", "[1]"), ("raw", "null"), "0x10", "١٢"])


def _record(rng: random.Random, i: int) -> bytes:
    mid = rng.choice([f"m-{i}", f"m-{i}", f" m-{i}", f"m-{i}\t", "   ", "", "x" * 256, "y" * 257, 7, None,
                      f"m-{i} \u2028", f" m-{i}\u0085", f"m-{i}\n", f"m-{i} \n"])
    parts = [f'"message_id": {json.dumps(mid)}']
    parts.append('"event_time": ' + json.dumps(rng.choice([
        "2026-11-26T10:00:00Z", "2026-11-26T10:00:00.123+02:00", "2026-11-26 23:30:00-05:00",
        "2026-11-26T10:00:00", "yesterday", "2026-11-26T10:00Z", "2026-11-26T10:00:00+0130",
        "2026-11-26T10:00:00-05", "2026-11-26T10:00:00.5+01:00", "2026-11-26T10:00:00+01:00z",
        "2026-11-26T10:00:00 UTC", "2026-11-26t10:00:00Z", "2026-13-01T00:00:00Z", "2026-11-26T10:00:00,5Z",
        "2026-11-26T10:00:00.123456789Z", "2026-11-26T10:00:00.1234567+01:00", "2026-02-30T10:00:00Z",
        "2026-11-26T10:00:00Z\n", "0001-01-01T00:30:00+01:00", "9999-12-31T23:30:00-01:00", "0001-01-01T00:30:00Z"])))
    for name in DECIMALS:
        if rng.random() < 0.7:
            v = _value(rng)
            parts.append(f'"{name}": ' + (v[1] if isinstance(v, tuple) else json.dumps(v)))
    if rng.random() < 0.5:
        parts.append('"x": ' + rng.choice(["1.5", "-2", "1e308", "1e400", "-1e400", '"1.5"', "12345678901234567890"]))
    if rng.random() < 0.5:
        parts.append('"n": ' + rng.choice(["1", "-9223372036854775808", "9223372036854775807",
                                           "9223372036854775808", "1.0", '"3"']))
    if rng.random() < 0.3:
        parts.append('"b": ' + rng.choice(["true", "false", '"true"', "1"]))
    if rng.random() < 0.3:
        parts.append('"kind": ' + rng.choice(['"a"', '"c"', "1"]))
    return ("{" + ", ".join(parts) + "}").encode()


@pytest.mark.parametrize("whitespace", ["reject", "trim"])
def test_spark_parser_agrees_with_the_reference(spark, whitespace):
    spec = EventSpec.from_config(EventsConfig(fields=FIELDS, id_whitespace=whitespace))
    rng = random.Random(20261128)
    values = [_record(rng, i) for i in range(3000)]
    values += [b'{"message_id": "dup", "message_id": "dup2", "event_time": "2026-11-26T10:00:00Z"}',
               b'{"message_id": "nan", "event_time": "2026-11-26T10:00:00Z", "x": NaN}', b"[1]", b"\xff", None]
    import datetime as dt

    ts = dt.datetime(2026, 11, 26)
    df = spark.createDataFrame([(None, v, "t", 0, i, ts, None) for i, v in enumerate(values)], SCHEMA)
    out = {r.kafka_offset: r for r in df.transform(X.parse_records(spec)).collect()}
    ref = Decoder(spec)
    data_fields = [f.name for f in spec.data_fields]
    mismatches = []
    for i, v in enumerate(values):
        want, got = ref.decode(v, None, None), out[i]
        diff = {k: (a, b) for k, a, b in [
            ("codes", sorted(set(got.reason_codes)), list(want.reason_codes)),
            ("message_id", got.message_id, want.message_id), ("event_date", got.event_date, want.event_date),
            *[(f, _norm(getattr(got, f)), _norm(want.values[f])) for f in data_fields]] if a != b}
        if diff:
            mismatches.append((v, diff))
    assert not mismatches, f"{len(mismatches)} disagreements, e.g. {mismatches[:5]}"
    # The generator reached both sides of every decimal bound.
    decided = [ref.decode(v, None, None) for v in values]
    for name in DECIMALS:
        assert any(d.values[name] is not None for d in decided), name
        assert any(f"BAD_DECIMAL:{name}" in d.reason_codes for d in decided), name


def _norm(v: object) -> object:
    return v.normalize() if isinstance(v, Decimal) else v
