"""The independent reference decoder (pipelines.tools.reference): pure Python, no Spark, no broker."""

from __future__ import annotations

import datetime as dt
import json
import random
import re
from decimal import Context, Decimal
from types import SimpleNamespace

import pytest

from pipelines.domain.schema import Reason
from pipelines.tools import reference as R
from pipelines.tools.reference import Decoded, Decoder, decode


def field(name, type="string", required=True, allowed=None):
    return SimpleNamespace(name=name, type=type, required=required, allowed=allowed)


FIELDS = (
    field("message_id"),
    field("event_type", allowed=("order_created", "order_paid")),
    field("amount", "decimal(18,2)"),
    field("quantity", "long", required=False),
    field("price", "double", required=False),
    field("is_test", "boolean", required=False),
    field("note", required=False),
    field("event_time", "timestamp"),
)
DATA_FIELDS = ("event_type", "amount", "quantity", "price", "is_test", "note", "event_time")


def make_spec(fields=FIELDS, id_source="field", id_name="message_id", event_time_field="event_time",
              id_max_length=256, id_whitespace="reject"):
    return SimpleNamespace(fields=tuple(fields), id_source=id_source, id_name=id_name,
                           event_time_field=event_time_field, id_max_length=id_max_length,
                           id_whitespace=id_whitespace)


SPEC = make_spec()
TRIM = make_spec(id_whitespace="trim")
# Members as raw JSON text, so number tokens are exactly what the test writes.
BASE = {"message_id": '"m-1"', "event_type": '"order_created"', "amount": "12.50",
        "event_time": '"2026-11-26T10:00:00+01:00"'}


def raw(**members):
    """A JSON object from raw member texts (BASE, overridden; ``...`` drops a member)."""
    m = {**BASE, **members}
    return ("{" + ", ".join(f"{json.dumps(k)}: {v}" for k, v in m.items() if v is not ...) + "}").encode()


def js(value):
    return json.dumps(value)


def run(value, spec=SPEC, key=None, headers=None) -> Decoded:
    return decode(value, key, headers, spec)


def codes(value, spec=SPEC, key=None, headers=None):
    return run(value, spec, key, headers).reason_codes


# ---- a valid record -------------------------------------------------------------------------------
def test_valid_record_has_no_codes_and_typed_values():
    d = run(raw(quantity="3", price="9.75", is_test="false", note='"hi"'))
    assert d == Decoded(
        message_id="m-1",
        values={"event_type": "order_created", "amount": Decimal("12.50"), "quantity": 3, "price": 9.75,
                "is_test": False, "note": "hi", "event_time": dt.datetime(2026, 11, 26, 9, 0)},
        event_date=dt.date(2026, 11, 26),
        reason_codes=(),
    )
    assert d.valid
    assert type(d.values["quantity"]) is int and type(d.values["price"]) is float


def test_values_hold_every_data_field_but_not_the_id_field():
    d = run(raw())
    assert set(d.values) == set(DATA_FIELDS)
    assert d.values["quantity"] is None and d.values["note"] is None


def test_reason_codes_are_new_constants():
    assert (R.ID_WHITESPACE, R.ID_TOO_LONG, R.OUT_OF_RANGE) == ("ID_WHITESPACE", "ID_TOO_LONG", "OUT_OF_RANGE")


# ---- the value ------------------------------------------------------------------------------------
def test_null_value():
    d = run(None)
    assert d.reason_codes == (Reason.NULL_VALUE,)
    assert d.message_id is None and d.event_date is None
    assert d.values == dict.fromkeys(DATA_FIELDS)


def test_invalid_utf8():
    assert codes(b'{"message_id": "m-\xff"}') == (Reason.INVALID_UTF8,)
    encoded_surrogate = raw(note='"x"').replace(b'"x"', b'"\xed\xa0\x80"')
    assert codes(encoded_surrogate) == (Reason.INVALID_UTF8,)
    assert codes(b"\xc3") == (Reason.INVALID_UTF8,)  # truncated sequence


@pytest.mark.parametrize("value", [b"", b"   ", b'{"message_id": "m-1"', b"{'a': 1}", b'{"a": 01}', b"\xef\xbb\xbf{}",
                                   b'{"a": "x\ny"}', b'{"a": 1} {"b": 2}', b"nope"])
def test_not_json(value):
    assert codes(value) == (Reason.NOT_JSON,)


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity"])
def test_nan_and_infinity_literals_are_not_json(literal):
    assert codes(raw(price=literal)) == (Reason.NOT_JSON,)
    assert codes(raw(note=f'{{"x": [{literal}]}}')) == (Reason.NOT_JSON,)


@pytest.mark.parametrize("value", [
    b'{"message_id": "m-1", "message_id": "m-1"}',
    raw(amount="1", note='"a"', quantity="2").replace(b'"note"', b'"amount"'),
    raw(note='{"a": 1, "a": 1}'),
    raw(note='[{"k": {"x": 1, "x": 2}}]'),
    raw(note='{"a": 1, "\\u0061": 2}'),  # the same key once unescaped
])
def test_duplicate_keys_at_any_level_are_not_json(value):
    assert codes(value) == (Reason.NOT_JSON,)


def test_same_key_in_sibling_or_nested_objects_is_fine():
    assert codes(raw(extra='[{"a": 1}, {"a": 2}]')) == ()
    assert codes(raw(extra='{"amount": {"amount": 1}}')) == ()


@pytest.mark.parametrize("value", [b"[1, 2]", b'"x"', b"1", b"null", b"true", b"  []  "])
def test_not_object_gates_field_and_id_checks(value):
    d = run(value)
    assert d.reason_codes == (Reason.NOT_OBJECT,)
    assert d.message_id is None
    assert d.values == dict.fromkeys(DATA_FIELDS)


# ---- message ID from a JSON member ----------------------------------------------------------------
@pytest.mark.parametrize("member", [..., "null"])
def test_missing_id(member):
    d = run(raw(message_id=member))
    assert d.reason_codes == (Reason.MISSING_ID,)
    assert d.message_id is None
    assert d.values["amount"] == Decimal("12.50")  # the rest still decoded


@pytest.mark.parametrize("member", ["123", "true", '["m-1"]', '{"id": "m-1"}', "1.5"])
def test_id_of_wrong_type(member):
    d = run(raw(message_id=member))
    assert d.reason_codes == ("WRONG_TYPE:message_id",)
    assert d.message_id is None


@pytest.mark.parametrize("spec", [SPEC, TRIM])
@pytest.mark.parametrize("id_", ["", "   ", " \t\n\r\f\v "])
def test_blank_id_is_empty_and_nothing_else(spec, id_):
    d = run(raw(message_id=js(id_)), spec)
    assert d.reason_codes == (Reason.EMPTY_ID,)
    assert d.message_id is None


@pytest.mark.parametrize("id_", [" a", "a ", "\ta", "a\n", " a "])
def test_surrounding_whitespace_rejected_or_trimmed(id_):
    rejected = run(raw(message_id=js(id_)), SPEC)
    assert rejected.reason_codes == (R.ID_WHITESPACE,)
    assert rejected.message_id is None
    trimmed = run(raw(message_id=js(id_)), TRIM)
    assert trimmed.reason_codes == ()
    assert trimmed.message_id == "a"


@pytest.mark.parametrize("spec", [SPEC, TRIM])
def test_only_ascii_whitespace_counts(spec):
    for id_ in ["\u00a0a", "a\u3000", "a b"]:
        d = run(raw(message_id=js(id_)), spec)
        assert (d.reason_codes, d.message_id) == ((), id_)
    assert run(raw(message_id=js("\u00a0")), spec).reason_codes == ()  # not blank: NBSP is not ASCII whitespace


def test_id_length_limit_in_code_points():
    assert run(raw(message_id=js("x" * 256))).message_id == "x" * 256
    d = run(raw(message_id=js("x" * 257)))
    assert (d.reason_codes, d.message_id) == ((R.ID_TOO_LONG,), None)
    assert run(raw(message_id=js("é" * 256))).reason_codes == ()  # 512 bytes, 256 code points
    assert run(raw(message_id=js("😀" * 257))).reason_codes == (R.ID_TOO_LONG,)
    assert run(raw(message_id=js("abcd")), make_spec(id_max_length=3)).reason_codes == (R.ID_TOO_LONG,)
    assert run(raw(message_id=js("abc")), make_spec(id_max_length=3)).reason_codes == ()


def test_id_length_counts_the_stripped_id():
    long_padded = " " + "x" * 256 + " "
    assert run(raw(message_id=js(long_padded)), TRIM).message_id == "x" * 256
    assert run(raw(message_id=js(long_padded)), SPEC).reason_codes == (R.ID_WHITESPACE,)
    assert run(raw(message_id=js(" " + "x" * 257)), SPEC).reason_codes == (R.ID_TOO_LONG, R.ID_WHITESPACE)
    assert run(raw(message_id=js(" " + "x" * 257)), TRIM).reason_codes == (R.ID_TOO_LONG,)


def test_id_is_returned_when_other_checks_fail():
    d = run(raw(amount="12.345", event_time='"yesterday"'))
    assert d.reason_codes == ("BAD_DECIMAL:amount", "BAD_TIMESTAMP:event_time")
    assert d.message_id == "m-1"
    assert run(raw(message_id=js(" m-1 "), amount=...), TRIM).message_id == "m-1"


# ---- message ID from the key or a header ----------------------------------------------------------
KEY_FIELDS = tuple(f for f in FIELDS if f.name != "message_id")
KEY_SPEC = make_spec(KEY_FIELDS, id_source="key", id_name="")
HEADER_SPEC = make_spec(KEY_FIELDS, id_source="header", id_name="event-id")
VALUE_NO_ID = raw(message_id=...)


def test_key_id():
    d = run(VALUE_NO_ID, KEY_SPEC, key=b"k-1")
    assert (d.reason_codes, d.message_id) == ((), "k-1")
    # the value's message_id member is just an unknown member now
    assert run(raw(message_id="42"), KEY_SPEC, key=b"k-1").reason_codes == ()


def test_missing_and_non_utf8_key():
    assert codes(VALUE_NO_ID, KEY_SPEC, key=None) == (Reason.MISSING_ID,)
    d = run(VALUE_NO_ID, KEY_SPEC, key=b"k-\xff")
    assert (d.reason_codes, d.message_id) == ((Reason.INVALID_UTF8,), None)


def test_key_id_rules():
    assert codes(VALUE_NO_ID, KEY_SPEC, key=b"") == (Reason.EMPTY_ID,)
    assert codes(VALUE_NO_ID, KEY_SPEC, key=b" \t") == (Reason.EMPTY_ID,)
    assert codes(VALUE_NO_ID, KEY_SPEC, key=b" k") == (R.ID_WHITESPACE,)
    assert run(VALUE_NO_ID, make_spec(KEY_FIELDS, id_source="key", id_name="", id_whitespace="trim"),
               key=b" k\n").message_id == "k"
    assert codes(VALUE_NO_ID, KEY_SPEC, key=b"k" * 257) == (R.ID_TOO_LONG,)
    assert run(VALUE_NO_ID, KEY_SPEC, key="é".encode() * 256).message_id == "é" * 256


def test_key_id_is_not_gated_on_the_value():
    d = run(None, KEY_SPEC, key=b"k-1")
    assert (d.reason_codes, d.message_id) == ((Reason.NULL_VALUE,), "k-1")
    assert codes(None, KEY_SPEC, key=None) == (Reason.MISSING_ID, Reason.NULL_VALUE)
    assert codes(b"[1]", KEY_SPEC, key=b" ") == (Reason.EMPTY_ID, Reason.NOT_OBJECT)
    assert codes(b"{", KEY_SPEC, key=b"\xff") == (Reason.INVALID_UTF8, Reason.NOT_JSON)
    assert codes(b"\xff", KEY_SPEC, key=b"\xff") == (Reason.INVALID_UTF8,)  # once: codes are a set


def test_header_id_first_header_of_that_name_wins():
    headers = [("other", b"o"), ("event-id", b"h-1"), ("event-id", b"h-2")]
    d = run(VALUE_NO_ID, HEADER_SPEC, headers=headers)
    assert (d.reason_codes, d.message_id) == ((), "h-1")


@pytest.mark.parametrize("headers", [None, [], [("other", b"h-1")], [("Event-Id", b"h-1")],
                                     [("event-id", None)], [("event-id", None), ("event-id", b"h-2")]])
def test_missing_header_id(headers):
    d = run(VALUE_NO_ID, HEADER_SPEC, headers=headers)
    assert (d.reason_codes, d.message_id) == ((Reason.MISSING_ID,), None)


def test_header_id_rules():
    assert codes(VALUE_NO_ID, HEADER_SPEC, headers=[("event-id", b"\xc3")]) == (Reason.INVALID_UTF8,)
    assert codes(VALUE_NO_ID, HEADER_SPEC, headers=[("event-id", b"")]) == (Reason.EMPTY_ID,)
    assert codes(VALUE_NO_ID, HEADER_SPEC, headers=[("event-id", b"h ")]) == (R.ID_WHITESPACE,)
    assert codes(b"\x00\xff", HEADER_SPEC, headers=[("event-id", b"h")]) == (Reason.INVALID_UTF8,)
    assert run(b"\x00\xff", HEADER_SPEC, headers=[("event-id", b"h")]).message_id == "h"


# ---- data fields: presence ------------------------------------------------------------------------
@pytest.mark.parametrize("member", [..., "null"])
def test_required_field_missing_or_null(member):
    d = run(raw(amount=member))
    assert d.reason_codes == ("MISSING_FIELD:amount",)
    assert d.values["amount"] is None
    assert d.message_id == "m-1" and d.event_date == dt.date(2026, 11, 26)


@pytest.mark.parametrize("name", ["quantity", "price", "is_test", "note"])
def test_optional_field_missing_or_null(name):
    d = run(raw(**{name: "null"}))
    assert d.reason_codes == ()
    assert d.values[name] is None


def test_every_code_that_applies_is_reported_sorted():
    d = run(raw(message_id=js(" m"), event_type='"nope"', amount=..., quantity='"3"', price="1e999",
                is_test="1", note="5", event_time='"2026-11-26T10:00:00"'))
    assert d.reason_codes == ("BAD_TIMESTAMP:event_time", "ID_WHITESPACE", "INVALID_VALUE:event_type",
                              "MISSING_FIELD:amount", "OUT_OF_RANGE:price", "WRONG_TYPE:is_test",
                              "WRONG_TYPE:note", "WRONG_TYPE:quantity")
    assert d.values == dict.fromkeys(DATA_FIELDS)
    assert d.event_date is None


def test_valid_fields_keep_their_value_when_others_fail():
    d = run(raw(quantity="7", amount='"x"'))
    assert d.reason_codes == ("BAD_DECIMAL:amount",)
    assert d.values["quantity"] == 7 and d.values["amount"] is None
    assert d.values["event_time"] == dt.datetime(2026, 11, 26, 9, 0)


# ---- string ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("member", ["1", "true", '["a"]', '{"a": "b"}'])
def test_string_wrong_type(member):
    assert codes(raw(note=member)) == ("WRONG_TYPE:note",)


def test_string_allowed_values():
    assert run(raw(event_type='"order_paid"')).values["event_type"] == "order_paid"
    for bad in ['"Order_Paid"', '"order_paid "', '""']:
        d = run(raw(event_type=bad))
        assert (d.reason_codes, d.values["event_type"]) == (("INVALID_VALUE:event_type",), None)
    assert codes(raw(event_type="1")) == ("WRONG_TYPE:event_type",)
    assert run(raw(note='""')).values["note"] == ""  # no allowed list: any string


# ---- long -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("token, expected", [("0", 0), ("-0", 0), ("42", 42), ("-17", -17),
                                             (str(2**63 - 1), 2**63 - 1), (str(-(2**63)), -(2**63))])
def test_long_accepted(token, expected):
    d = run(raw(quantity=token))
    assert d.reason_codes == ()
    assert d.values["quantity"] == expected and type(d.values["quantity"]) is int


@pytest.mark.parametrize("token", ["42.0", "4.2e1", "4e1", "1E2", '"42"', "true", "false", "[1]",
                                   str(2**63), str(-(2**63) - 1), "1" + "0" * 30, "9" * 5000])
def test_long_rejected(token):
    d = run(raw(quantity=token))
    assert (d.reason_codes, d.values["quantity"]) == (("WRONG_TYPE:quantity",), None)


# ---- double ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("token, expected", [("1.5", 1.5), ("3", 3.0), ("-2.5e-3", -0.0025), ("1E2", 100.0),
                                             ("0.1", 0.1), ("1e-400", 0.0),
                                             ("1.7976931348623157e308", 1.7976931348623157e308)])
def test_double_accepted(token, expected):
    d = run(raw(price=token))
    assert d.reason_codes == ()
    assert d.values["price"] == expected and type(d.values["price"]) is float


@pytest.mark.parametrize("token", ["1e400", "-1e400", "1" + "0" * 400, "1.8e308"])
def test_double_out_of_range(token):
    d = run(raw(price=token))
    assert (d.reason_codes, d.values["price"]) == (("OUT_OF_RANGE:price",), None)


@pytest.mark.parametrize("token", ['"1.5"', "true", "{}", '"NaN"'])
def test_double_wrong_type(token):
    assert codes(raw(price=token)) == ("WRONG_TYPE:price",)


# ---- boolean --------------------------------------------------------------------------------------
def test_boolean():
    assert run(raw(is_test="true")).values["is_test"] is True
    assert run(raw(is_test="false")).values["is_test"] is False
    for bad in ["1", "0", '"true"', "[true]"]:
        assert codes(raw(is_test=bad)) == ("WRONG_TYPE:is_test",)


# ---- timestamp ------------------------------------------------------------------------------------
@pytest.mark.parametrize("text, expected", [
    ("2026-11-26T10:00:00Z", dt.datetime(2026, 11, 26, 10, 0)),
    ("2026-11-26T10:00:00z", dt.datetime(2026, 11, 26, 10, 0)),
    ("2026-11-26T10:00:00+02:00", dt.datetime(2026, 11, 26, 8, 0)),
    ("2026-11-26T10:00:00-05:30", dt.datetime(2026, 11, 26, 15, 30)),
    ("2026-11-26T10:00:00+0130", dt.datetime(2026, 11, 26, 8, 30)),
    ("2026-11-26T10:00:00-05", dt.datetime(2026, 11, 26, 15, 0)),
    ("2026-11-26 10:00:00+00:00", dt.datetime(2026, 11, 26, 10, 0)),
    ("2026-11-26T10:00:00.123456Z", dt.datetime(2026, 11, 26, 10, 0, 0, 123456)),
    ("2026-11-26T10:00:00.5+01:00", dt.datetime(2026, 11, 26, 9, 0, 0, 500000)),
])
def test_timestamp_accepted_as_naive_utc(text, expected):
    d = run(raw(event_time=js(text)))
    assert d.reason_codes == ()
    assert d.values["event_time"] == expected and d.values["event_time"].tzinfo is None


@pytest.mark.parametrize("text", [
    "2026-11-26T10:00:00",  # no zone
    "2026-11-26 10:00",
    "2026-11-26T10:00Z",  # seconds are required
    "yesterday",
    "",
    "2026-11-26",
    "2026-11-26Z",
    "26/11/2026 10:00Z",
    "2026-11-26t10:00:00Z",
    "2026-13-01T00:00:00Z",
    "2026-11-26T24:00:00Z",
    "2026-11-26T10:00:00+24:00",
    "2026-11-26T10:00:00 UTC",
    "2026-11-26T10:00:00+01:00z",
    "2026-11-26T10:00:00+01:00:30",  # seconds in the offset: not a zone of the contract
    "2026-11-26T10:00:00Z\n",
    " 2026-11-26T10:00:00Z",
    "2026-11-26T10:00:00EST",
    "0001-01-01T00:30:00+01:00",  # before year 1 in UTC
    "9999-12-31T23:30:00-01:00",  # after year 9999 in UTC
])
def test_bad_timestamp(text):
    d = run(raw(event_time=js(text)))
    assert (d.reason_codes, d.values["event_time"], d.event_date) == (("BAD_TIMESTAMP:event_time",), None, None)


@pytest.mark.parametrize("token", ["1764151200", "true", '{"t": 1}'])
def test_timestamp_wrong_type(token):
    assert codes(raw(event_time=token)) == ("WRONG_TYPE:event_time",)


def test_event_date_is_the_utc_date():
    d = run(raw(event_time=js("2026-11-26T00:30:00+01:00")))
    assert d.values["event_time"] == dt.datetime(2026, 11, 25, 23, 30)
    assert d.event_date == dt.date(2026, 11, 25)
    assert run(raw(event_time=js("2026-11-26T23:30:00-01:00"))).event_date == dt.date(2026, 11, 27)


def test_event_date_of_a_valid_event_time_even_if_the_record_fails():
    d = run(raw(amount="12.345"))
    assert not d.valid and d.event_date == dt.date(2026, 11, 26)
    assert run(raw(event_time=...)).event_date is None
    assert run(None).event_date is None


# ---- decimal --------------------------------------------------------------------------------------
def amount(member, spec=SPEC):
    d = run(raw(amount=member), spec)
    return d.reason_codes, d.values["amount"]


BAD_AMOUNT = (("BAD_DECIMAL:amount",), None)


@pytest.mark.parametrize("member", ['"12.50"', "12.5", "12.50", '"12.5"', '" 12.5 "', '"0012.50"', "12.500",
                                    '"12.5000000000"', '"+12.5"'])
def test_decimal_fits_exactly(member):
    codes_, value = amount(member)
    assert codes_ == ()
    assert value == Decimal("12.50") and str(value) == "12.50"


@pytest.mark.parametrize("member", ["12.345", '"12.345"', "1.0000000000000000001", '"1.0000000000000000001"',
                                    "1.5e2", "15E1", "1.5E+2", '"1.5e2"', '"1e2"', "1" + "0" * 16,
                                    "9" * 17 + ".5", '"-12345678901234567.5"', '""', '"  "', '"abc"', '"."',
                                    '"1.2.3"', '"\\t12.5"', '"12.5\\n"', '"1,5"', '"NaN"', '"Infinity"', '"1_000"',
                                    '"\\uff11\\uff12"', '"- 1"', '"0x10"'])
def test_decimal_rejected(member):
    assert amount(member) == BAD_AMOUNT


@pytest.mark.parametrize("member", ["true", "false", "{}", '{"v": "1.5"}', '["1.5"]'])
def test_decimal_wrong_type(member):
    assert amount(member) == (("WRONG_TYPE:amount",), None)


@pytest.mark.parametrize("member", ['"-0.00"', "-0.00", '"-0"', "-0", "0", '"0.000"', '".0"', '"0."'])
def test_decimal_zero_forms(member):
    codes_, value = amount(member)
    assert codes_ == ()
    assert value == 0 and value.as_tuple().exponent == -2


@pytest.mark.parametrize("member, expected", [('".5"', "0.50"), ('"5."', "5.00"), ('"-12.3"', "-12.30"),
                                              ("-12.3", "-12.30"), (f'"{"9" * 16}.99"', f'{"9" * 16}.99'),
                                              (f"-{'9' * 16}.99", f"-{'9' * 16}.99")])
def test_decimal_values(member, expected):
    codes_, value = amount(member)
    assert codes_ == ()
    assert str(value) == expected


def test_decimal_number_token_over_38_digits_is_rejected_but_the_string_is_read():
    thirty_nine = "1." + "0" * 38  # 39 significant digits in the coefficient, value 1
    assert amount(thirty_nine) == BAD_AMOUNT
    assert amount(js(thirty_nine)) == ((), Decimal("1.00"))
    scale_39 = "0." + "0" * 39  # 1 digit, scale 39
    assert amount(scale_39) == BAD_AMOUNT
    assert amount(js(scale_39)) == ((), Decimal("0.00"))
    thirty_eight = "1." + "0" * 37
    assert amount(thirty_eight) == ((), Decimal("1.00"))
    # 39 significant digits that do not fit decimal(38, 0) either way
    d38_0 = make_spec([*FIELDS[:2], field("amount", "decimal(38,0)"), *FIELDS[3:]])
    assert amount("1" * 39, d38_0) == BAD_AMOUNT
    assert amount(js("1" * 39), d38_0) == BAD_AMOUNT


PS = [(38, 0), (38, 38), (38, 10), (38, 37), (18, 2), (1, 0), (1, 1), (10, 10), (10, 0), (5, 3)]


def decimal_spec(p, s):
    return make_spec([*FIELDS[:2], field("amount", f"decimal({p},{s})"), *FIELDS[3:]])


def digits_text(n_int, n_frac, digit="9"):
    return (digit * n_int or "0") + ("." + digit * n_frac if n_frac else "")


@pytest.mark.parametrize("p, s", PS)
def test_decimal_precision_boundaries(p, s):
    spec = decimal_spec(p, s)
    q = Decimal(1).scaleb(-s)
    fits = digits_text(p - s, s)
    for text in (fits, "-" + fits):
        for member in (js(text), text):  # as a string and as a number token
            codes_, value = amount(member, spec)
            assert codes_ == (), (p, s, member)
            assert value == Decimal(text) and value.as_tuple().exponent == -s
            assert value == Decimal(text).quantize(q, context=Context(prec=80))
    too_many_int = "1" + "0" * (p - s)  # p - s + 1 integer digits
    too_many_frac = digits_text(0, s + 1, "1")  # s + 1 fraction digits
    for text in (too_many_int, "-" + too_many_int, too_many_frac, "-" + too_many_frac):
        assert amount(js(text), spec) == BAD_AMOUNT, (p, s, text)
        assert amount(text, spec) == BAD_AMOUNT, (p, s, text)
    # trailing zeros in the fraction and leading zeros in the integer part do not count
    padded = "000" + fits + ("" if s else ".") + "000"
    assert amount(js(padded), spec)[0] == ()


def test_decimal_type_names_are_parsed():
    spec = make_spec([*FIELDS[:2], field("amount", " Decimal(10, 4) "), *FIELDS[3:]])
    assert amount('"123456.1234"', spec) == ((), Decimal("123456.1234"))
    assert amount('"1234567.1"', spec) == BAD_AMOUNT


@pytest.mark.parametrize("type_", ["decimal(39,0)", "decimal(0,0)", "decimal(5,6)", "decimal(5)", "int", "uuid"])
def test_bad_spec_types_raise(type_):
    with pytest.raises(ValueError, match="amount"):
        Decoder(make_spec([field("amount", type_), field("event_time", "timestamp")]))


@pytest.mark.parametrize("attr, bad", [("id_source", "body"), ("id_whitespace", "strip")])
def test_bad_spec_policies_raise(attr, bad):
    with pytest.raises(ValueError, match=bad):
        Decoder(make_spec(**{attr: bad}))


def test_decoder_reuse_matches_decode():
    decoder = Decoder(SPEC)
    for value in [raw(), raw(amount="1.234"), None, b"[]"]:
        assert decoder.decode(value, None, None) == decode(value, None, None, SPEC)


# ---- property: decimal(p, s) accepts exactly the texts whose digits fit -----------------------------
JSON_NUMBER = re.compile(r"-?(0|[1-9][0-9]*)(\.[0-9]+)?")


def random_text(rng: random.Random, p: int, s: int) -> tuple[str, bool]:
    """A random numeric text around the limits of decimal(p, s), and whether it is well formed."""
    if rng.random() < 0.05:  # malformed on purpose
        return rng.choice(["", ".", "+", "-", "+.", "1e5", "1.5e-3", "1..2", "--1", "1-", "١", "0x1", "1 2"]), False
    sign = rng.choice(["", "", "-", "+"])
    at_limit = rng.random() < 0.3  # the full width of the type, or one digit more
    n_int = p - s + rng.randint(0, 1) if at_limit else rng.randint(0, p - s + 2)
    int_part = "".join(rng.choice("0123456789") for _ in range(n_int))
    if at_limit and int_part:
        int_part = rng.choice("123456789") + int_part[1:]
    elif rng.random() < 0.2:
        int_part = "0" * rng.randint(1, 3) + int_part
    n_frac = s + rng.randint(0, 1) if at_limit else rng.randint(0, s + 2)
    frac = "".join(rng.choice("0123456789") for _ in range(n_frac))
    if rng.random() < 0.25:  # trailing zeros: free for the type, but they count for a number token
        frac += "0" * rng.randint(1, 12)
    dot = "." if frac or rng.random() < 0.3 else ""
    text = sign + int_part + dot + frac
    return text, bool(int_part or frac)


def oracle_fits(text: str, p: int, s: int) -> bool:
    """Fits decimal(p, s) exactly: no rounding at scale s and |value| < 10^(p-s) (arithmetic, not digit counting)."""
    ctx = Context(prec=200)
    d = Decimal(text)
    return d.quantize(Decimal(1).scaleb(-s), context=ctx) == d and abs(d) < Decimal(10) ** (p - s)


def engine_reads_token(text: str) -> bool:
    """A JSON number token is read exactly only with at most 38 significant digits and scale 38."""
    int_part, _, frac = text.lstrip("-").partition(".")
    significant = (int_part + frac).lstrip("0")
    return len(significant) <= 38 and len(frac) <= 38


def test_property_decimal_accepts_exactly_what_fits():
    rng = random.Random(20261126)
    seen = {"accepted": 0, "rejected": 0, "token_accepted": 0, "token_rejected": 0, "token_too_long": 0}
    for _ in range(5000):
        p = 38 if rng.random() < 0.25 else rng.randint(1, 38)
        s = rng.randint(0, p)
        spec = decimal_spec(p, s)
        text, well_formed = random_text(rng, p, s)
        expect = well_formed and oracle_fits(text, p, s)
        padded = " " * rng.randint(0, 2) + text + " " * rng.randint(0, 2)
        codes_, value = amount(js(padded), spec)
        if expect:
            seen["accepted"] += 1
            assert codes_ == (), (p, s, text)
            assert value == Decimal(text) and value.as_tuple().exponent == -s, (p, s, text)
        else:
            seen["rejected"] += 1
            assert (codes_, value) == BAD_AMOUNT, (p, s, text)
        if JSON_NUMBER.fullmatch(text):  # also as a number token
            token_expect = expect and engine_reads_token(text)
            if expect and not token_expect:
                seen["token_too_long"] += 1
            codes_, value = amount(text, spec)
            if token_expect:
                seen["token_accepted"] += 1
                assert codes_ == () and value == Decimal(text), (p, s, text)
            else:
                seen["token_rejected"] += 1
                assert (codes_, value) == BAD_AMOUNT, (p, s, text)
    # the generator must exercise both sides of every rule
    assert min(seen.values()) >= 30 and seen["accepted"] > 1000 and seen["rejected"] > 1000, seen
